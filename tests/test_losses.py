"""hf_reid's losses equal public reference implementations.

The expected values and gradients in fixtures/losses/reference_losses.npz were computed by
torchreid's CrossEntropyLoss / TripletLoss and CLIP-ReID's TripletLoss / SupConLoss on random
inputs (fixtures/losses/regenerate_loss_fixtures.py says how to recompute them).
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from hf_reid.models.losses import (
    batch_hard_triplet,
    cross_entropy_label_smooth,
    image_text_supcon,
    image_to_text_ce,
    supcon_loss,
)

FIXTURES = np.load(Path(__file__).parent / "fixtures" / "losses" / "reference_losses.npz")


def leaf(name: str) -> torch.Tensor:
    return torch.tensor(FIXTURES[name], dtype=torch.float64, requires_grad=True)


def labels(name: str) -> torch.Tensor:
    return torch.from_numpy(FIXTURES[name])


def assert_matches(value: torch.Tensor, expected_name: str, grads: dict[str, torch.Tensor]) -> None:
    value.backward()
    np.testing.assert_allclose(value.item(), FIXTURES[expected_name], rtol=1e-7, atol=1e-9)
    for name, tensor in grads.items():
        np.testing.assert_allclose(tensor.grad.numpy(), FIXTURES[name], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("case", ["ce_small", "ce_large"])
def test_label_smoothed_ce_equals_torchreid(case):
    logits = leaf(f"{case}_logits")
    loss = cross_entropy_label_smooth(logits, labels(f"{case}_labels"), epsilon=0.1)
    assert_matches(loss, f"{case}_loss", {f"{case}_grad": logits})


@pytest.mark.parametrize("case", ["tri_pk", "tri_uneven"])
def test_batch_hard_triplet_equals_torchreid(case):
    features = leaf(f"{case}_features")
    loss = batch_hard_triplet(features, labels(f"{case}_labels"), margin=0.3)
    assert_matches(loss, f"{case}_loss", {f"{case}_grad": features})


@pytest.mark.parametrize(("case", "margin"), [("tri_soft", None), ("tri_margin", 0.3)])
def test_batch_hard_triplet_equals_clip_reid(case, margin):
    features = leaf("tri_clipreid_features")
    loss = batch_hard_triplet(features, labels("tri_clipreid_labels"), margin=margin)
    assert_matches(loss, f"{case}_loss", {f"{case}_grad": features})


def test_supcon_equals_clip_reid():
    anchors, candidates = leaf("supcon_anchors"), leaf("supcon_candidates")
    loss = supcon_loss(anchors, labels("supcon_anchor_labels"), candidates, labels("supcon_candidate_labels"))
    grads = {"supcon_grad_anchors": anchors, "supcon_grad_candidates": candidates}
    assert_matches(loss, "supcon_loss", grads)


def test_image_to_text_ce_equals_torchreid_ce_on_raw_dot_products():
    image, text = leaf("i2t_image"), leaf("i2t_text")
    loss = image_to_text_ce(image, text, labels("i2t_labels"), epsilon=0.1)
    assert_matches(loss, "i2t_loss", {"i2t_grad_image": image, "i2t_grad_text": text})


def naive_supcon(anchors, anchor_labels, candidates, candidate_labels):
    """Independent loop form of SupCon (METHODS.md §0.4) in plain Python floats."""
    a, b = anchors.tolist(), candidates.tolist()
    total = 0.0
    for i, ai in enumerate(a):
        logits = [sum(x * y for x, y in zip(ai, bj)) for bj in b]
        top = max(logits)
        log_norm = top + np.log(sum(np.exp(v - top) for v in logits))
        positives = [j for j in range(len(b)) if candidate_labels[j] == anchor_labels[i]]
        total += -sum(logits[j] - log_norm for j in positives) / len(positives)
    return total / len(a)


def test_stage1_supcon_pair_equals_naive_loop():
    generator = torch.Generator().manual_seed(3)
    image = torch.randn(10, 8, generator=generator, dtype=torch.float64)
    text = torch.randn(10, 8, generator=generator, dtype=torch.float64)
    ids = torch.tensor([0, 1, 1, 2, 3, 3, 3, 4, 5, 5])
    i2t, t2i = image_text_supcon(image, text, ids)
    assert i2t.item() == pytest.approx(naive_supcon(image, ids.tolist(), text, ids.tolist()), rel=1e-10)
    assert t2i.item() == pytest.approx(naive_supcon(text, ids.tolist(), image, ids.tolist()), rel=1e-10)
    assert i2t.item() != pytest.approx(t2i.item())


def test_supcon_leaves_out_anchors_without_positives():
    generator = torch.Generator().manual_seed(4)
    anchors = torch.randn(5, 6, generator=generator, dtype=torch.float64)
    candidates = torch.randn(7, 6, generator=generator, dtype=torch.float64)
    anchor_ids = torch.tensor([0, 1, 2, 9, 1])  # 9 has no candidate
    candidate_ids = torch.tensor([0, 1, 2, 2, 1, 0, 3])
    kept = [0, 1, 2, 4]
    expected = naive_supcon(anchors[kept], anchor_ids[kept].tolist(), candidates, candidate_ids.tolist())
    assert supcon_loss(anchors, anchor_ids, candidates, candidate_ids).item() == pytest.approx(
        expected, rel=1e-10
    )


@pytest.mark.parametrize("margin", [0.3, None])
def test_triplet_gather_mines_over_all_processes(margin):
    """With a gather, each process's loss is the mean over its anchors of the global-batch
    per-anchor losses, so the mean over processes equals the single-process loss."""
    generator = torch.Generator().manual_seed(5)
    features = torch.randn(16, 12, generator=generator, dtype=torch.float64)
    ids = torch.arange(4).repeat_interleave(4)[torch.randperm(16, generator=generator)]
    shards = [(features[:8], ids[:8]), (features[8:], ids[8:])]

    def gather(tensor):
        return torch.cat([features if tensor.is_floating_point() else ids])

    per_process = [batch_hard_triplet(f, y, margin=margin, gather=gather) for f, y in shards]
    whole = batch_hard_triplet(features, ids, margin=margin)
    assert torch.stack(per_process).mean().item() == pytest.approx(whole.item(), rel=1e-12)
    # Without gather a shard mines only locally, which is a different (easier) loss here.
    local = [batch_hard_triplet(f, y, margin=margin) for f, y in shards]
    assert torch.stack(local).mean().item() != pytest.approx(whole.item(), rel=1e-6)


def test_triplet_normalize_uses_unit_features():
    generator = torch.Generator().manual_seed(6)
    features = torch.randn(8, 5, generator=generator, dtype=torch.float64)
    ids = torch.arange(4).repeat_interleave(2)
    scaled = features * torch.linspace(0.5, 4.0, 8, dtype=torch.float64).unsqueeze(1)
    # Row scaling changes raw distances but not those of normalised features.
    assert batch_hard_triplet(scaled, ids, normalize=True).item() == pytest.approx(
        batch_hard_triplet(features, ids, normalize=True).item(), rel=1e-12
    )
    assert batch_hard_triplet(scaled, ids).item() != pytest.approx(batch_hard_triplet(features, ids).item())


def test_losses_reject_bad_shapes():
    with pytest.raises(ValueError, match=r"features \(B, D\) and labels \(B,\)"):
        batch_hard_triplet(torch.randn(4, 3), torch.arange(5))
    with pytest.raises(ValueError, match="text_features must be"):
        image_to_text_ce(torch.randn(4, 8), torch.randn(3, 7), torch.arange(4))
