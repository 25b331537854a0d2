"""Feature extraction (eval mode, no grad, metadata), the feature cache and FeatureDataset."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader
from training_toys import ToyEmbedder, reset_accelerate_state

from hf_reid.training import (
    FeatureDataset,
    create_accelerator,
    extract_features,
    fingerprint,
    load_or_extract,
)


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    reset_accelerate_state()
    yield
    reset_accelerate_state()


def reid_batches(n: int = 10) -> FeatureDataset:
    g = torch.Generator().manual_seed(0)
    return FeatureDataset(
        {
            "pixel_values": torch.randn(n, 32, generator=g),
            "pids": torch.arange(n) // 2,
            "camids": torch.arange(n) % 3,
            "paths": [f"img_{i}.jpg" for i in range(n)],
            "masks": torch.ones(n, 4),  # 2-D: not metadata
        }
    )


def test_extract_features_in_eval_mode_with_metadata(tmp_path):
    accelerator = create_accelerator(tmp_path, seed=0)
    model = ToyEmbedder(dropout=0.5)
    dataset = reid_batches()
    loader = accelerator.prepare(DataLoader(dataset, batch_size=4))  # 4 + 4 + 2
    model.train()

    out = extract_features(
        lambda b: model(b["pixel_values"]), loader, accelerator, model=model, progress_bar=False
    )
    assert model.training  # mode restored
    assert set(out) == {"features", "pids", "camids", "paths"}
    model.eval()
    with torch.no_grad():
        expected = model(dataset.columns["pixel_values"])
    torch.testing.assert_close(out["features"], expected)  # no dropout: eval mode was used
    assert not out["features"].requires_grad
    assert torch.equal(out["pids"], dataset.columns["pids"])
    assert out["paths"] == dataset.columns["paths"]

    only = extract_features(
        lambda b: model(b["pixel_values"]), loader, accelerator, metadata_keys=["camids"], feature_key="emb"
    )
    assert set(only) == {"emb", "camids"}
    with pytest.raises(KeyError, match="metadata key 'clothes_ids' is not in the batch"):
        extract_features(
            lambda b: model(b["pixel_values"]), loader, accelerator, metadata_keys=["clothes_ids"]
        )
    with pytest.raises(TypeError, match=r"must return a \(batch, dim\) tensor"):
        extract_features(lambda b: {"x": 1}, loader, accelerator)


def test_feature_cache_reuses_only_matching_key(tmp_path):
    accelerator = create_accelerator(tmp_path, seed=0)
    calls = []

    def extract():
        calls.append(1)
        return {"features": torch.randn(5, 3), "pids": torch.arange(5), "paths": list("abcde")}

    path = tmp_path / "cache" / "train_feats.pt"
    key = fingerprint("clip-vit-b16", (256, 128), 12936)
    first = load_or_extract(path, extract, accelerator, key=key)
    second = load_or_extract(path, extract, accelerator, key=key)
    assert len(calls) == 1
    assert torch.equal(first["features"], second["features"]) and second["paths"] == list("abcde")
    assert (
        fingerprint("clip-vit-b16", (256, 128), 12936)
        == key
        != fingerprint("clip-vit-b16", (224, 224), 12936)
    )

    third = load_or_extract(path, extract, accelerator, key=fingerprint("other"))
    assert len(calls) == 2 and not torch.equal(third["features"], first["features"])
    path.write_bytes(b"not a torch file")
    load_or_extract(path, extract, accelerator, key=key)
    assert len(calls) == 3
    assert not list(path.parent.glob(".tmp-*"))


def test_feature_dataset_batches_keep_the_last_partial_batch():
    data = FeatureDataset({"features": torch.randn(130, 8), "pids": torch.arange(130)})
    loader = DataLoader(data, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
    batches = list(loader)
    assert [len(b["pids"]) for b in batches] == [64, 64, 2]
    assert sorted(torch.cat([b["pids"] for b in batches]).tolist()) == list(range(130))
    with pytest.raises(ValueError, match="different lengths"):
        FeatureDataset({"a": torch.zeros(3), "b": torch.zeros(4)})
