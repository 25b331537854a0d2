"""ITKM's pieces on inputs whose answer is known: the cluster memory, the heterogeneous matching,
the dynamic text update, the model's scenario-restricted losses, and its save / load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_models import save_tiny_clip
from torch.nn import functional as F
from transformers import AutoModel

from hf_reid.models import ITKMConfig, ITKMModel
from hf_reid.tokenization import load_clip_tokenizer
from hf_reid.training.cluster_memory import ClusterMemory, cluster_centroids
from hf_reid.training.heterogeneous import match_clusters, match_instances, update_text_features


def unit(*rows) -> torch.Tensor:
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)


def test_memory_resets_to_centroids_moves_towards_features_and_round_trips():
    features = unit([1, 0, 0], [1, 0.2, 0], [0, 1, 0], [0, 0, 1])
    memory = ClusterMemory(momentum=0.5)
    memory.reset(features, torch.tensor([0, 0, 1, -1]), torch.tensor([0, 0, 1, 1]))
    torch.testing.assert_close(memory.features[1], torch.tensor([0.0, 1.0, 0.0]))
    assert memory.scenarios.tolist() == [0, 1] and memory.features.norm(dim=1).allclose(torch.ones(2))
    before = memory.features[1].clone()
    memory.update(unit([0, 0, 1]), torch.tensor([1]))
    after = memory.features[1]
    assert after @ torch.tensor([0.0, 0, 1]) > before @ torch.tensor([0.0, 0, 1]) and float(
        after.norm()
    ) == pytest.approx(1)
    copy = ClusterMemory()
    copy.load_state_dict(memory.state_dict())
    assert torch.equal(copy.features, memory.features) and copy.momentum == 0.5
    with pytest.raises(ValueError, match="cluster 0 has members of several scenarios"):
        memory.reset(features, torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 1]))
    with pytest.raises(ValueError, match="every sample is an outlier"):
        memory.reset(features, torch.full((4,), -1), torch.zeros(4, dtype=torch.long))


def test_cluster_matching_pairs_groups_by_centroid_similarity():
    """Scenario 0 clustered per group (visible 0, infrared 1): two visible and two infrared
    clusters of the same two people, swapped in order; a third infrared cluster matches nothing."""
    a, b, c = [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]
    features = unit(a, a, b, b, b, b, a, a, c, c)
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    scenarios = np.zeros(10, dtype=int)
    groups = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    merged_labels, merged = match_clusters(features, labels, scenarios, groups, threshold=0.9)
    assert merged == 2
    assert merged_labels[0] == merged_labels[6] and merged_labels[2] == merged_labels[4]
    assert len(set(merged_labels.tolist())) == 3  # person a, person b, the unmatched cluster
    _, none = match_clusters(features, labels, scenarios, groups, threshold=1.01)
    assert none == 0


def test_instance_matching_lets_outliers_join_their_mutual_neighbour_across_groups():
    features = unit([1, 0.05, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0.05], [0, 0, 1])
    labels = np.array([-1, 7, 3, -1, -1])
    groups = np.array([0, 1, 0, 1, 0])  # 0 and 1 are mutual neighbours across groups; so are 2 and 3
    joined_labels, joined = match_instances(features, labels, np.zeros(5, dtype=int), groups, threshold=0.9)
    assert joined == 2 and joined_labels.tolist() == [7, 7, 3, 3, -1]
    # neighbours in another scenario never match
    _, none = match_instances(features, labels, np.array([0, 1, 0, 1, 0]), groups, threshold=0.9)
    assert none == 0


def test_dynamic_text_update_follows_the_majority_and_moves_towards_the_new_centroid():
    old_text = unit([1, 0, 0], [0, 1, 0])
    old_labels = np.array([0, 0, 0, 1, 1])
    new_labels = np.array([1, 1, 0, 0, 0])  # new cluster 1 = old 0's members; new 0 mostly old 1
    features = unit([1, 0, 1], [1, 0, 1], [0, 1, 1], [0, 1, 1], [0, 1, 1])
    static, share = update_text_features(old_text, old_labels, new_labels, features, "static", 0.9)
    assert share == 1.0 and torch.allclose(static[1], old_text[0]) and torch.allclose(static[0], old_text[1])
    moved, _ = update_text_features(old_text, old_labels, new_labels, features, "ema", 0.5)
    centroids = cluster_centroids(features, torch.as_tensor(new_labels))
    assert moved[1] @ centroids[1] > static[1] @ centroids[1]
    assert torch.allclose(moved.norm(dim=1), torch.ones(2))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    save_tiny_clip(folder)
    return ITKMModel.from_clip_pretrained(
        folder, num_classes=3, image_size=(128, 64), tokenizer=load_clip_tokenizer(), num_cameras=2
    )


def test_memory_loss_competes_only_within_the_scenario(model):
    pixels = torch.randn(2, 3, 128, 64, generator=torch.Generator().manual_seed(0))
    memory = F.normalize(torch.randn(4, model.backbone.projection_dim), dim=1).requires_grad_(True)
    out = model(
        pixels,
        camids=torch.tensor([0, 1]),
        labels=torch.tensor([0, 2]),
        memory=memory,
        memory_scenarios=torch.tensor([0, 0, 1, 1]),
    )
    assert torch.isinf(out.memory_logits[0, 2:]).all() and torch.isinf(out.memory_logits[1, :2]).all()
    out.loss.backward()
    assert memory.grad.abs().sum(dim=1).gt(0).all()  # every entry is a positive or a same-scenario negative
    expected = F.cross_entropy(out.memory_logits, torch.tensor([0, 2]))
    assert out.memory_loss.item() == pytest.approx(expected.item())
    # Without the scenario embedding (no camids) the rule holds through ``scenarios``: the
    # ablation switches the embedding off, not the rule.
    plain = model(
        pixels,
        scenarios=torch.tensor([0, 1]),
        labels=torch.tensor([0, 2]),
        memory=memory.detach(),
        memory_scenarios=torch.tensor([0, 0, 1, 1]),
    )
    assert torch.isinf(plain.memory_logits[0, 2:]).all() and torch.isinf(plain.memory_logits[1, :2]).all()
    assert torch.isfinite(plain.memory_logits[0, :2]).all()


def test_separation_hinge_only_pairs_scenarios_and_respects_the_margin(model):
    text = unit([1, 0], [1, 0], [0, 1])
    assert model.separation_loss(text, torch.tensor([0, 0, 1])).item() == pytest.approx(
        0.0
    )  # orthogonal across
    close = unit([1, 0], [1, 0.1])
    margin = model.config.separation_margin
    assert model.separation_loss(close, torch.tensor([0, 1])).item() == pytest.approx(
        float(close[0] @ close[1]) - margin
    )
    assert model.separation_loss(close, torch.tensor([1, 1])).item() == 0.0


def test_resized_model_saves_loads_and_embeds_with_its_scenario(model, tmp_path):
    model.resize_identities(5)
    assert model.config.num_classes == 5 and model.prompt_learner.context.shape[0] == 5
    assert model.compute_text_features().shape == (5, model.backbone.projection_dim)
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, ITKMModel) and loaded.config.num_scenarios == 2
    pixels = torch.randn(2, 3, 128, 64, generator=torch.Generator().manual_seed(1))
    model.eval()
    with torch.no_grad():
        first = loaded.get_image_embeddings(pixels, torch.tensor([0, 0]))
        torch.testing.assert_close(first, model.get_image_embeddings(pixels, torch.tensor([0, 0])))
        assert not torch.allclose(first, loaded.get_image_embeddings(pixels, torch.tensor([1, 1])))
    with pytest.raises(ValueError, match="memory_momentum must be in"):
        ITKMConfig(memory_momentum=1.0)
