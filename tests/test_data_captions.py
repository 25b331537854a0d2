"""The captioned single-camera data ReText trains with: bad caption files, caption choice,
tokenisation and the statistics reported before training."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from helpers_data import write_image

from hf_reid.data import (
    CaptionCollator,
    ReidCollator,
    ReidDataError,
    ReidTestTransform,
    ReidTransformConfig,
    caption_statistics,
    load_reid_dataset,
)
from hf_reid.tokenization import load_clip_tokenizer


def write_caption_set(root: Path, entries: list[dict]) -> Path:
    for entry in entries:
        if not entry.get("missing"):
            write_image(root / "imgs" / entry["file_path"], shade=entry["id"] * 20)
    rows = [{k: v for k, v in e.items() if k != "missing"} for e in entries]
    (root / "reid_raw.json").write_text(json.dumps(rows))
    return root


@pytest.fixture
def tokenizer():
    return load_clip_tokenizer()


def test_missing_images_and_captionless_entries_are_named_or_skipped_with_a_count(tmp_path, caplog) -> None:
    root = write_caption_set(
        tmp_path / "caps",
        [
            {"id": 1, "file_path": "0001_c1_000001.jpg", "captions": ["a man in a red top", "  "]},
            {"id": 1, "file_path": "0001_c1_000002.jpg", "captions": ["a man in red"]},
            {"id": 2, "file_path": "0002_c2_000001.jpg", "captions": ["", " "]},
            {"id": 3, "file_path": "0003_c1_000001.jpg", "captions": ["gone"], "missing": True},
        ],
    )
    with pytest.raises(ReidDataError, match=r"0002_c2_000001.jpg: entry 2 has no non-empty caption"):
        load_reid_dataset("captions", root, cache_dir=tmp_path / "c")
    with caplog.at_level(logging.WARNING):
        data = load_reid_dataset("captions", root, cache_dir=tmp_path / "c2", on_bad_image="skip")["train"]
    assert sorted(data["path"]) == ["imgs/0001_c1_000001.jpg", "imgs/0001_c1_000002.jpg"]
    assert data["captions"][data["path"].index("imgs/0001_c1_000001.jpg")] == ["a man in a red top"]
    assert "dropped 3 empty caption(s)" in caplog.text
    assert "skipped 2 bad file(s)" in caplog.text and "0003_c1_000001.jpg" in caplog.text


def test_caption_statistics_count_truncation_and_single_image_identities(tokenizer, caplog) -> None:
    long_caption = " ".join(["a person wearing a very long red coat"] * 12)
    rows = {
        "pid": [1, 1, 2],
        "captions": [["a short one"], ["another short one", long_caption], [long_caption]],
    }
    from datasets import Dataset

    with caplog.at_level(logging.WARNING):
        stats = caption_statistics(Dataset.from_dict(rows), tokenizer, max_length=77)
    assert stats.num_captions == 4 and stats.num_images == 3 and stats.num_identities == 2
    assert stats.truncated_captions == 2 and stats.max_tokens > 77
    assert stats.single_image_identities == 1
    assert "2 of 4 captions are longer than the text encoder's 77 tokens" in caplog.text
    assert "1 of 2 identities have a single image" in caplog.text


def test_caption_collator_tokenises_one_reproducible_caption_per_image(tokenizer) -> None:
    transform = ReidTestTransform(ReidTransformConfig(height=32, width=16))
    collator = CaptionCollator(
        ReidCollator(transform, columns=["labels", "captions"], seed=0), tokenizer, max_length=8, seed=3
    )
    image = torch.zeros(3, 40, 20, dtype=torch.uint8).permute(1, 2, 0).numpy()
    captions = [f"caption number {i} of this person" for i in range(6)]
    rows = [{"image": image, "label": 0, "path": f"p{i}.jpg", "captions": captions} for i in range(16)]
    first = collator(rows)
    assert first["pixel_values"].shape == (16, 3, 32, 16)
    assert first["input_ids"].shape[1] <= 8 and first["attention_mask"].shape == first["input_ids"].shape
    assert "captions" not in first
    again = collator(rows)
    assert torch.equal(first["input_ids"], again["input_ids"])  # same epoch: same choice
    picked = {tokenizer.decode(ids, skip_special_tokens=True) for ids in first["input_ids"]}
    assert len(picked) > 1  # images choose independently among their captions
    collator.set_epoch(1)
    assert not torch.equal(collator(rows)["input_ids"], first["input_ids"])  # another epoch, other choices


def test_caption_collator_refuses_an_image_without_captions(tokenizer) -> None:
    transform = ReidTestTransform(ReidTransformConfig(height=32, width=16))
    collator = CaptionCollator(ReidCollator(transform, columns=["labels", "captions"]), tokenizer, 16)
    image = torch.zeros(40, 20, 3, dtype=torch.uint8).numpy()
    with pytest.raises(ValueError, match=r"x.jpg has no caption"):
        collator([{"image": image, "label": 0, "path": "x.jpg", "captions": []}])
