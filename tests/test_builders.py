"""Builders of the Market-style layouts, MSMT17, CUHK-SYSU and the load_reid_dataset entry point.

Every fixture is a handful of tiny images written into ``tmp_path`` under the real file-naming
scheme; the expected pids and cameras come from the fixture's own specification, not from the
code under test. The image writers live in ``tests/helpers_data.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from helpers_data import make_market, market_name, write_image

from hf_reid.data import (
    REID_FEATURES,
    load_reid_dataset,
    register_reid_layout,
    reid_layout_names,
    reid_layout_options,
)
from hf_reid.data.layouts import ImageRecord, ReidBuilder, SplitScan


def rows_by_path(dataset) -> dict[str, tuple[int, int]]:
    return {
        row["path"]: (row["pid"], row["camid"]) for row in dataset.select_columns(["path", "pid", "camid"])
    }


SMALL_MARKET = {
    "train": [(2, 1), (2, 3), (7, 2), (7, 6)],
    "query": [(5, 1), (9, 4)],
    "gallery": [(5, 2), (5, 1), (9, 5), (0, 3), (-1, 1), (-1, 2)],
}


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def test_market1501_reads_pids_cameras_and_drops_junk(tmp_path: Path, cache: Path, caplog) -> None:
    expected = make_market(tmp_path / "market", SMALL_MARKET)
    (tmp_path / "market" / "query" / "Thumbs.db").write_bytes(b"not an image")
    with caplog.at_level(logging.INFO, logger="hf_reid"):
        splits = load_reid_dataset("market1501", tmp_path / "market", cache_dir=cache)
    assert list(splits) == ["train", "query", "gallery"]
    for split in splits:
        assert splits[split].features == REID_FEATURES
        assert rows_by_path(splits[split]) == expected[split]
    gallery = splits["gallery"]
    assert 0 in gallery["pid"]  # the distractor stays as a negative
    assert "dropped 2 junk image(s)" in caplog.text
    assert set(gallery["domain"]) == {"market1501"}
    assert set(gallery["clothes_id"]) == {-1}
    assert set(gallery["modality"]) == {0}
    image = gallery[0]["image"]
    assert image.size == (16, 32)


def test_distractors_outside_the_gallery_are_dropped_with_a_warning(
    tmp_path: Path, cache: Path, caplog
) -> None:
    spec = {"train": [(3, 1), (0, 2)], "query": [(3, 2)], "gallery": [(3, 1)]}
    make_market(tmp_path / "m", spec)
    with caplog.at_level(logging.WARNING, logger="hf_reid"):
        splits = load_reid_dataset("market1501", tmp_path / "m", cache_dir=cache)
    assert list(splits["train"]["pid"]) == [3]
    assert "dropped 1 distractor" in caplog.text


def test_dukemtmc_names_and_eight_cameras(tmp_path: Path, cache: Path) -> None:
    spec = {"train": [(1, 8), (1, 2)], "query": [(4, 7)], "gallery": [(4, 1), (6, 5)]}
    expected = make_market(tmp_path / "duke", spec, name=lambda pid, cam, f: f"{pid:04d}_c{cam}_f{f:07d}.jpg")
    splits = load_reid_dataset("dukemtmc", tmp_path / "duke", cache_dir=cache)
    for split in splits:
        assert rows_by_path(splits[split]) == expected[split]


@pytest.mark.parametrize("labeled", [True, False])
def test_cuhk03_np_reads_the_chosen_box_set(tmp_path: Path, cache: Path, labeled: bool) -> None:
    root = tmp_path / "cuhk03-np"
    expected = {}
    for box_set, offset in (("labeled", 0), ("detected", 100)):
        spec = {
            "train": [(1 + offset, 1), (1 + offset, 2)],
            "query": [(3 + offset, 1)],
            "gallery": [(3 + offset, 2)],
        }
        written = make_market(root / box_set, spec, name=lambda pid, cam, f: f"{pid:04d}_c{cam}_{f + 1}.png")
        expected[box_set] = {s: {f"{box_set}/{k}": v for k, v in rows.items()} for s, rows in written.items()}
    splits = load_reid_dataset("cuhk03_np", root, cache_dir=cache, labeled=labeled)
    box_set = "labeled" if labeled else "detected"
    for split in splits:
        assert rows_by_path(splits[split]) == expected[box_set][split]


def test_cuhk03_np_has_no_silent_default(tmp_path: Path, cache: Path) -> None:
    make_market(
        tmp_path / "cuhk03-np" / "labeled", {"train": [(1, 1)], "query": [(2, 1)], "gallery": [(2, 2)]}
    )
    with pytest.raises(ValueError, match=r"labeled=True .* labeled=False"):
        load_reid_dataset("cuhk03_np", tmp_path / "cuhk03-np", cache_dir=cache)


def test_mlr_cuhk03_keeps_low_resolution_queries(tmp_path: Path, cache: Path) -> None:
    root = tmp_path / "mlr"
    spec = {"train": [(1, 1), (1, 2)], "query": [(2, 1)], "gallery": [(2, 2), (3, 1)]}
    expected = make_market(root, spec, name=lambda pid, cam, f: f"{pid:04d}_c{cam}_{f + 1}.png")
    for path in (root / "query").iterdir():  # downscale the query by 4 as MLR does
        write_image(path, size=(4, 8))
    splits = load_reid_dataset("mlr_cuhk03", root, cache_dir=cache)
    for split in splits:
        assert rows_by_path(splits[split]) == expected[split]
    assert splits["query"][0]["image"].size == (4, 8)
    assert splits["gallery"][0]["image"].size == (16, 32)


def test_synthpeds_domain_is_the_folder_name(tmp_path: Path, cache: Path) -> None:
    from hf_reid.data import load_synthpeds_domains
    from hf_reid.data.synthetic.manifest import build_manifest, write_manifest

    spec = {"train": [(1, 1), (1, 9)], "query": [(2, 1)], "gallery": [(2, 12)]}
    out = tmp_path / "out"
    expected = {d: make_market(out / d, spec) for d in ("synthpeds_d0", "synthpeds_d1")}
    files = [p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()]
    write_manifest(build_manifest(files, complete=True, settings={}), out)  # as a complete SynthPeds run
    domains = load_synthpeds_domains(out, cache_dir=cache)
    assert list(domains) == ["synthpeds_d0", "synthpeds_d1"]
    for domain, splits in domains.items():
        assert set(splits["train"]["domain"]) == {domain}
        assert rows_by_path(splits["gallery"]) == expected[domain]["gallery"]
    with pytest.raises(FileNotFoundError, match="synthpeds_d7"):
        load_synthpeds_domains(tmp_path / "out", domains=["synthpeds_d7"], cache_dir=cache)


def make_msmt17(root: Path, version: str) -> dict[str, dict[str, tuple[int, int]]]:
    """An MSMT17 release folder with list files; returns the expected rows per list."""
    train_dir, test_dir = ("train", "test") if version == "v1" else ("mask_train_v2", "mask_test_v2")
    lists = {
        "train": (train_dir, [(0, 1), (0, 15), (1, 3)]),
        "val": (train_dir, [(2, 4)]),
        "query": (test_dir, [(0, 2), (5, 7)]),
        "gallery": (test_dir, [(0, 9), (5, 11), (6, 1)]),
    }
    expected = {}
    for name, (folder, items) in lists.items():
        lines, expected[name] = [], {}
        for frame, (pid, cam) in enumerate(items):
            relative = f"{pid:04d}/{pid:04d}_{frame:03d}_{cam:02d}_0303morning_{frame:04d}_0.jpg"
            write_image(root / folder / relative, shade=pid + cam)
            lines.append(f"{relative} {pid}")
            expected[name][f"{folder}/{relative}"] = (pid, cam - 1)
        (root / f"list_{name}.txt").write_text("\n".join(lines) + "\n")
    return expected


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_msmt17_reads_list_files_and_merges_val_only_when_asked(
    tmp_path: Path, cache: Path, version: str
) -> None:
    release = tmp_path / f"MSMT17_{version.upper()}"
    expected = make_msmt17(release, version)
    prefix = release.name + "/"
    # data_dir may be the release folder's parent; paths stay relative to data_dir
    splits = load_reid_dataset("msmt17", tmp_path, cache_dir=cache)
    assert rows_by_path(splits["train"]) == {prefix + k: v for k, v in expected["train"].items()}
    assert rows_by_path(splits["query"]) == {prefix + k: v for k, v in expected["query"].items()}
    assert rows_by_path(splits["gallery"]) == {prefix + k: v for k, v in expected["gallery"].items()}
    merged = load_reid_dataset("msmt17", release, cache_dir=cache, combine_val=True, msmt_version=version)
    assert rows_by_path(merged["train"]) == {**expected["train"], **expected["val"]}


def test_msmt17_with_both_releases_asks_which(tmp_path: Path, cache: Path) -> None:
    make_msmt17(tmp_path / "MSMT17_V1", "v1")
    make_msmt17(tmp_path / "MSMT17_V2", "v2")
    with pytest.raises(ValueError, match="msmt_version='v1' or 'v2'"):
        load_reid_dataset("msmt17", tmp_path, cache_dir=cache)
    splits = load_reid_dataset("msmt17", tmp_path, cache_dir=cache, msmt_version="v2")
    assert all(path.startswith("MSMT17_V2/mask_train_v2/") for path in splits["train"]["path"])


def test_cuhk_sysu_is_train_only_with_pids_from_names(tmp_path: Path, cache: Path) -> None:
    names = {"p11422_s16929_1.jpg": 11422, "p11422_s16930_2.jpg": 11422, "p00007_s00001_1.jpg": 7}
    for name in names:
        write_image(tmp_path / "cuhksysu" / "cropped_images" / name)
    splits = load_reid_dataset("cuhk_sysu", tmp_path / "cuhksysu", cache_dir=cache)
    assert list(splits) == ["train"]
    got = {
        row["path"]: (row["pid"], row["camid"])
        for row in splits["train"].select_columns(["path", "pid", "camid"])
    }
    assert got == {f"cropped_images/{n}": (pid, 0) for n, pid in names.items()}


def test_unknown_layout_and_option_names_list_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="market1501") as err:
        load_reid_dataset("market1510", tmp_path)
    assert "Unknown Re-ID layout 'market1510'" in str(err.value)
    with pytest.raises(ValueError, match="combineall") as err:
        load_reid_dataset("msmt17", tmp_path, combineall=True)
    assert "combine_val" in str(err.value)
    assert "combine_val" in reid_layout_options("msmt17")
    with pytest.raises(ValueError, match="mode='outdoor' is invalid; expected one of 'all', 'indoor'"):
        load_reid_dataset("sysu_mm01", tmp_path, mode="outdoor")


def test_every_layout_of_the_foundation_issue_is_registered() -> None:
    wanted = {
        "market1501",
        "dukemtmc",
        "msmt17",
        "cuhk03_np",
        "cuhk_sysu",
        "sysu_mm01",
        "ltcc",
        "mlr_cuhk03",
        "captions",
        "custom",
        "synthpeds",
    }
    assert wanted <= set(reid_layout_names())


class _OnePerFolder(ReidBuilder):
    """A toy user layout: each sub-folder name is a pid, every image is camera 0, train only."""

    LAYOUT_NAME = "toy_layout"

    def _scan(self, root: Path) -> dict[str, SplitScan]:
        scan = SplitScan(source=root)
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            for image in sorted(folder.glob("*.png")):
                scan.records.append(ImageRecord(path=image, pid=int(folder.name)))
        return {"train": scan}


def test_register_reid_layout_adds_a_user_layout(tmp_path: Path, cache: Path) -> None:
    write_image(tmp_path / "toy" / "12" / "a.png")
    write_image(tmp_path / "toy" / "40" / "b.png")
    register_reid_layout("toy_layout", _OnePerFolder)
    try:
        splits = load_reid_dataset("toy_layout", tmp_path / "toy", cache_dir=cache)
    finally:
        from hf_reid.data import loading

        loading._LAYOUTS.pop("toy_layout")
    assert sorted(splits["train"]["pid"]) == [12, 40]
    with pytest.raises(ValueError, match="taken by Market1501"):
        register_reid_layout("market1501", _OnePerFolder)
    with pytest.raises(TypeError, match=r"subclass of hf_reid\.data\.layouts\.ReidBuilder"):
        register_reid_layout("bad", dict)  # type: ignore[arg-type]


def test_cache_is_rebuilt_when_the_data_changes(tmp_path: Path, cache: Path) -> None:
    root = tmp_path / "m"
    make_market(root, {"train": [(1, 1)], "query": [(2, 1)], "gallery": [(2, 2)]})
    first = load_reid_dataset("market1501", root, cache_dir=cache)
    assert len(first["gallery"]) == 1
    write_image(root / "bounding_box_test" / market_name(3, 4, 99))
    second = load_reid_dataset("market1501", root, cache_dir=cache)
    assert sorted(second["gallery"]["pid"]) == [2, 3]
