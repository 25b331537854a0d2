"""The real builders read every SynthPeds layout back with the generator's ground truth:
pids, cameras, clothes ids, modalities, domains and captions (compared with synthpeds_meta.json)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hf_reid.data import load_reid_dataset
from hf_reid.data.synthetic import generate_synthpeds, read_meta


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict, Path]:
    root = tmp_path_factory.mktemp("readback")
    out = root / "synthpeds"
    generate_synthpeds(out, "tiny", seed=3, num_workers=2)
    return out, read_meta(out), root / "cache"


def _truth(meta: dict, dataset: str) -> dict[str, dict]:
    prefix = f"{dataset}/"
    return {r["path"][len(prefix) :]: r for r in meta["images"] if r["dataset"] == dataset}


def _check(split, truth: dict[str, dict]) -> list[dict]:
    """Every row read agrees with the meta record of its file; returns those records."""
    records = []
    for row in split.select_columns(["path", "pid", "camid", "clothes_id", "modality", "domain", "captions"]):
        record = truth[row["path"]]
        assert row["pid"] == record["pid"], row["path"]
        assert row["camid"] == record["camid"], row["path"]
        assert row["clothes_id"] == record["clothes_id"], row["path"]
        assert split.features["modality"].int2str(row["modality"]) == record["modality"], row["path"]
        assert row["domain"] == record["domain"], row["path"]
        assert row["captions"] == record["captions"], row["path"]
        records.append(record)
    return records


def test_market_style_domains_read_back(tiny):
    out, meta, cache = tiny
    for domain in meta["domains"]:
        truth = _truth(meta, domain)
        ds = load_reid_dataset("synthpeds", out / domain, cache_dir=cache)
        for split in ("train", "query", "gallery"):
            records = _check(ds[split], truth)
            expected = [r for r in truth.values() if r["split"] == split and r["pid"] != -1]
            assert len(records) == len(expected), (domain, split)  # junk dropped, distractors kept


def test_ltcc_reads_back_with_clothes_ids(tiny):
    out, meta, cache = tiny
    truth = _truth(meta, "ltcc")
    ds = load_reid_dataset("ltcc", out / "ltcc", cache_dir=cache)
    for split in ("train", "query", "gallery"):
        assert len(_check(ds[split], truth)) == sum(r["split"] == split for r in truth.values())
    changing = load_reid_dataset("ltcc", out / "ltcc", cache_dir=cache, protocol="clothes_changing")
    assert 0 < len(changing["query"]) < len(ds["query"])


def test_sysu_mm01_reads_back_with_modalities(tiny):
    out, meta, cache = tiny
    truth = _truth(meta, "sysu_mm01")
    ds = load_reid_dataset("sysu_mm01", out / "sysu_mm01", cache_dir=cache, gallery_shot="all")
    train = _check(ds["train"], truth)
    assert {r["split"] for r in train} == {"train", "val"}
    assert len(train) == sum(r["split"] in ("train", "val") for r in truth.values())
    query, gallery = _check(ds["query"], truth), _check(ds["gallery"], truth)
    test_records = [r for r in truth.values() if r["split"] == "test"]
    assert len(query) == sum(r["modality"] == "infrared" for r in test_records)
    assert {r["modality"] for r in query} == {"infrared"} and {r["modality"] for r in gallery} == {"visible"}


def test_mlr_cuhk03_reads_back(tiny):
    out, meta, cache = tiny
    truth = _truth(meta, "mlr_cuhk03")
    ds = load_reid_dataset("mlr_cuhk03", out / "mlr_cuhk03", cache_dir=cache)
    query = _check(ds["query"], truth)
    assert query and all(r["lowres"] > 1 for r in query)
    assert all(ds["query"][i]["image"].size[1] < meta["image_size"][0] for i in range(len(query)))
    assert len(_check(ds["gallery"], truth)) == sum(r["split"] == "gallery" for r in truth.values())


@pytest.mark.parametrize("dataset", ["captions", "pretrain"])
def test_caption_sets_read_back_with_captions(tiny, dataset):
    out, meta, cache = tiny
    truth = _truth(meta, dataset)
    ds = load_reid_dataset("captions", out / dataset, cache_dir=cache)
    records = _check(ds["train"], truth)
    assert len(records) == len(truth) and all(r["captions"] for r in records)
