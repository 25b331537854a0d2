"""Layouts with an evaluation protocol or free-form input: SYSU-MM01, LTCC, caption JSON, custom.

Expected values come from the fixture specifications and, for SYSU-MM01's gallery draw, from
re-running the public evaluation code's procedure (``random.seed(trial)`` then
``random.choice`` over each identity/camera folder) directly on the files.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections import Counter
from pathlib import Path

import pytest
from helpers_data import write_image

from hf_reid.data import load_reid_dataset

# --- SYSU-MM01 -----------------------------------------------------------------------------------

SYSU_IDS = {"train": [1, 2], "val": [3], "test": [4, 5, 6]}


def make_sysu(root: Path) -> dict[tuple[int, int], int]:
    """cam1..cam6/<pid>/<n>.jpg; returns {(pid, camera): number of images}."""
    counts = {}
    for camera in range(1, 7):
        for pid in [p for ids in SYSU_IDS.values() for p in ids]:
            if camera == 5 and pid == 6:
                continue  # not every identity is seen by every camera
            n = 12 if (pid, camera) == (4, 1) else 2 + (pid + camera) % 3
            for index in range(n):
                write_image(
                    root / f"cam{camera}" / f"{pid:04d}" / f"{index + 1:04d}.jpg", shade=pid * 7 + camera
                )
            counts[(pid, camera)] = n
    (root / "exp").mkdir()
    for name, ids in SYSU_IDS.items():
        (root / "exp" / f"{name}_id.txt").write_text(",".join(str(i) for i in ids))
    return counts


def reference_single_shot_gallery(root: Path, cameras: list[int], trial: int) -> list[str]:
    """The draw of the public SYSU-MM01 evaluation code, re-done on the files."""
    random.seed(trial)
    picked = []
    for pid in sorted(f"{i:04d}" for i in SYSU_IDS["test"]):
        for camera in cameras:
            folder = root / f"cam{camera}" / pid
            if folder.is_dir():
                files = sorted(f"cam{camera}/{pid}/{name}" for name in os.listdir(folder))
                picked.append(random.choice(files))
    return picked


@pytest.fixture(scope="module")
def sysu(tmp_path_factory) -> tuple[Path, dict[tuple[int, int], int]]:
    root = tmp_path_factory.mktemp("sysu") / "SYSU-MM01"
    return root, make_sysu(root)


def test_sysu_mm01_all_search_single_shot(sysu, tmp_path: Path) -> None:
    root, counts = sysu
    splits = load_reid_dataset("sysu_mm01", root, cache_dir=tmp_path / "c", trial=3)
    query, gallery, train = splits["query"], splits["gallery"], splits["train"]

    expected_query = sum(n for (pid, cam), n in counts.items() if pid in SYSU_IDS["test"] and cam in (3, 6))
    assert len(query) == expected_query
    assert set(query["camid"]) == {2, 5} and set(query["modality"]) == {1}
    assert set(query["pid"]) == set(SYSU_IDS["test"])

    assert list(gallery["path"]) == reference_single_shot_gallery(root, [1, 2, 4, 5], trial=3)
    assert set(gallery["modality"]) == {0}
    groups = Counter(zip(gallery["pid"], gallery["camid"]))
    assert set(groups.values()) == {1}
    assert set(groups) == {(p, c - 1) for (p, c) in counts if p in SYSU_IDS["test"] and c in (1, 2, 4, 5)}

    expected_train = sum(n for (pid, _), n in counts.items() if pid in SYSU_IDS["train"] + SYSU_IDS["val"])
    assert len(train) == expected_train
    assert {m for m in train["modality"]} == {0, 1}
    by_camera = dict(zip(train["camid"], train["modality"]))
    assert by_camera == {0: 0, 1: 0, 2: 1, 3: 0, 4: 0, 5: 1}


def test_sysu_mm01_indoor_multi_shot_and_trials(sysu, tmp_path: Path) -> None:
    root, counts = sysu
    cache = tmp_path / "c"
    multi = load_reid_dataset("sysu_mm01", root, cache_dir=cache, mode="indoor", gallery_shot="multi")
    groups = Counter(zip(multi["gallery"]["pid"], multi["gallery"]["camid"]))
    assert groups == Counter(
        {(p, c - 1): min(10, n) for (p, c), n in counts.items() if p in SYSU_IDS["test"] and c in (1, 2)}
    )
    assert len(set(multi["gallery"]["path"])) == len(multi["gallery"])

    galleries = [
        tuple(
            load_reid_dataset("sysu_mm01", root, cache_dir=cache, mode="indoor", trial=t)["gallery"]["path"]
        )
        for t in (0, 1, 0)
    ]
    assert galleries[0] == galleries[2]
    assert galleries[0] != galleries[1]
    assert list(galleries[1]) == reference_single_shot_gallery(root, [1, 2], trial=1)

    no_val = load_reid_dataset("sysu_mm01", root, cache_dir=cache, combine_val=False)
    assert set(no_val["train"]["pid"]) == set(SYSU_IDS["train"])


# --- LTCC ----------------------------------------------------------------------------------------

LTCC_SPEC = {
    # folder: [(pid, clothes, camera)]
    "train": [(1, 1, 1), (1, 2, 2), (2, 1, 12)],
    "query": [(10, 1, 1), (11, 1, 3), (12, 2, 6)],
    "test": [(10, 2, 2), (10, 1, 4), (11, 1, 5), (11, 2, 3), (12, 1, 6), (12, 3, 7)],
}


def make_ltcc(root: Path) -> dict[str, dict[str, tuple[int, int, int]]]:
    expected = {}
    for folder, items in LTCC_SPEC.items():
        split = "gallery" if folder == "test" else folder
        expected[split] = {}
        for frame, (pid, clothes, camera) in enumerate(items):
            relative = f"{folder}/{pid:03d}_{clothes}_c{camera}_{frame:06d}.png"
            write_image(root / relative, shade=pid + clothes)
            expected[split][relative] = (pid, camera - 1, clothes)
    return expected


def test_ltcc_clothes_ids_and_protocols(tmp_path: Path) -> None:
    expected = make_ltcc(tmp_path / "LTCC_ReID")
    cache = tmp_path / "c"
    standard = load_reid_dataset("ltcc", tmp_path / "LTCC_ReID", cache_dir=cache)
    for split, dataset in standard.items():
        got = {
            r["path"]: (r["pid"], r["camid"], r["clothes_id"])
            for r in dataset.select_columns(["path", "pid", "camid", "clothes_id"])
        }
        assert got == expected[split]

    changing = load_reid_dataset("ltcc", tmp_path / "LTCC_ReID", cache_dir=cache, protocol="clothes_changing")
    # A query survives when the gallery has its identity in other clothes from another camera.
    answerable = {
        path
        for path, (pid, cam, clothes) in expected["query"].items()
        if any(p == pid and c != cam and k != clothes for p, c, k in expected["gallery"].values())
    }
    assert set(changing["query"]["path"]) == answerable
    assert answerable and answerable != set(expected["query"])
    assert len(changing["gallery"]) == len(expected["gallery"])


# --- caption JSON --------------------------------------------------------------------------------


def test_caption_json_in_cuhk_pedes_format(tmp_path: Path) -> None:
    root = tmp_path / "pedes"
    entries = [
        {
            "id": 12,
            "file_path": "imgs/0012_c3_000003.jpg",
            "captions": ["A man in a red coat.", "He wears jeans. "],
            "split": "train",
        },
        {
            "id": 12,
            "file_path": "imgs/0012_c1_000004.jpg",
            "captions": "A man with a backpack.",
            "split": "train",
        },
        {"id": 40, "file_path": "CUHK01/0363004.png", "captions": ["A woman in a skirt."], "split": "train"},
        {"id": 41, "file_path": "imgs/0041_c2_000001.jpg", "captions": ["Held out."], "split": "test"},
    ]
    for entry in entries:
        path = (
            root / entry["file_path"]
            if entry["file_path"].startswith("imgs/")
            else root / "imgs" / entry["file_path"]
        )
        write_image(path)
    (root / "reid_raw.json").write_text(json.dumps(entries))
    splits = load_reid_dataset("captions", root, cache_dir=tmp_path / "c")
    assert list(splits) == ["train"]
    rows = {
        r["path"]: (r["pid"], r["camid"], r["captions"])
        for r in splits["train"].select_columns(["path", "pid", "camid", "captions"])
    }
    assert rows == {
        "imgs/0012_c3_000003.jpg": (12, 2, ["A man in a red coat.", "He wears jeans."]),
        "imgs/0012_c1_000004.jpg": (12, 0, ["A man with a backpack."]),
        "imgs/CUHK01/0363004.png": (40, 0, ["A woman in a skirt."]),
    }
    assert set(splits["train"]["domain"]) == {"pedes"}
    everything = load_reid_dataset("captions", root, cache_dir=tmp_path / "c", keep_split=None)
    assert 41 in everything["train"]["pid"]


def test_caption_field_names_are_configurable(tmp_path: Path) -> None:
    root = tmp_path / "retext"
    write_image(root / "images" / "a.jpg")
    (root / "captions.json").write_text(
        json.dumps([{"person": 7, "image": "a.jpg", "texts": ["Short hair."]}])
    )
    splits = load_reid_dataset(
        "captions",
        root,
        cache_dir=tmp_path / "c",
        json_file="captions.json",
        image_dir="images",
        id_field="person",
        path_field="image",
        captions_field="texts",
    )
    assert splits["train"][0]["pid"] == 7
    assert splits["train"][0]["captions"] == ["Short hair."]
    assert splits["train"][0]["path"] == "images/a.jpg"
    with pytest.raises(ValueError, match="entry 0 has no field 'id'"):
        load_reid_dataset("captions", root, cache_dir=tmp_path / "c", json_file="captions.json")


# --- custom --------------------------------------------------------------------------------------


def test_custom_identity_folders_with_camera_pattern_and_split_rules(tmp_path: Path, caplog) -> None:
    root = tmp_path / "mine"
    written = {}
    for pid in (3, 5, 8, 13):
        for index in range(3):
            relative = f"{pid}/img_c{index + 1}_{index}.jpg"
            write_image(root / relative, shade=pid)
            written[relative] = (pid, index)
    cache = tmp_path / "c"
    whole = load_reid_dataset("custom", root, cache_dir=cache, camera_pattern=r"_c(\d+)_")
    assert list(whole) == ["train"]
    assert {
        r["path"]: (r["pid"], r["camid"]) for r in whole["train"].select_columns(["path", "pid", "camid"])
    } == written

    split = load_reid_dataset(
        "custom", root, cache_dir=cache, num_test_ids=2, num_query_per_id=1, split_seed=4
    )
    train_ids, query_ids, gallery_ids = (set(split[s]["pid"]) for s in ("train", "query", "gallery"))
    assert len(query_ids) == 2 and query_ids == gallery_ids and not (train_ids & query_ids)
    assert train_ids | query_ids == {3, 5, 8, 13}
    assert Counter(split["query"]["pid"]) == Counter({pid: 1 for pid in query_ids})
    assert Counter(split["gallery"]["pid"]) == Counter({pid: 2 for pid in query_ids})
    assert not set(split["query"]["path"]) & set(split["gallery"]["path"])
    again = load_reid_dataset(
        "custom", root, cache_dir=cache, num_test_ids=2, num_query_per_id=1, split_seed=4
    )
    assert list(again["query"]["path"]) == list(split["query"]["path"])
    with pytest.raises(ValueError, match="only 4 identities"):
        load_reid_dataset("custom", root, cache_dir=cache, num_test_ids=5)


def test_custom_named_identities_and_explicit_split_folders(tmp_path: Path, caplog) -> None:
    root = tmp_path / "people"
    for split, names in {"train": ["zoe", "adam"], "query": ["bob"], "gallery": ["bob", "carl"]}.items():
        for name in names:
            write_image(root / split / name / "1.png")
    with caplog.at_level(logging.INFO, logger="hf_reid"):
        splits = load_reid_dataset("custom", root, cache_dir=tmp_path / "c")
    # sorted names adam, bob, carl, zoe -> 0, 1, 2, 3, shared by every split
    assert sorted(splits["train"]["pid"]) == [0, 3]
    assert list(splits["query"]["pid"]) == [1]
    assert sorted(splits["gallery"]["pid"]) == [1, 2]
    assert set(splits["gallery"]["camid"]) == {0}
    assert "not all integers" in caplog.text


def test_custom_csv_with_cameras_clothes_and_splits(tmp_path: Path) -> None:
    root = tmp_path / "csvdata"
    rows = [
        ("a/1.jpg", "7", "0", "", "train"),
        ("a/2.jpg", "7", "1", "2", "train"),
        ("b/1.jpg", "9", "0", "", "query"),
        ("b/2.jpg", "9", "3", "", "gallery"),
        ("c/1.jpg", "11", "", "", "gallery"),
    ]
    for path, *_ in rows:
        write_image(root / path)
    (root / "labels.csv").write_text(
        "path,pid,camid,clothes_id,split\n" + "\n".join(",".join(r) for r in rows) + "\n"
    )
    splits = load_reid_dataset("custom", root, cache_dir=tmp_path / "c", csv_file="labels.csv")
    got = {
        r["path"]: (r["pid"], r["camid"], r["clothes_id"])
        for s in splits.values()
        for r in s.select_columns(["path", "pid", "camid", "clothes_id"])
    }
    assert got == {
        "a/1.jpg": (7, 0, -1),
        "a/2.jpg": (7, 1, 2),
        "b/1.jpg": (9, 0, -1),
        "b/2.jpg": (9, 3, -1),
        "c/1.jpg": (11, 0, -1),
    }
    assert list(splits["query"]["path"]) == ["b/1.jpg"]

    (root / "bad.csv").write_text("path,pid,split\nb/1.jpg,9,query\n")
    with pytest.raises(ValueError, match="query split but no gallery split"):
        load_reid_dataset("custom", root, cache_dir=tmp_path / "c", csv_file="bad.csv")
    (root / "typo.csv").write_text("path,pid,split\na/1.jpg,7,tset\n")
    with pytest.raises(ValueError, match=r"typo.csv line 2: split 'tset'"):
        load_reid_dataset("custom", root, cache_dir=tmp_path / "c", csv_file="typo.csv")


def test_sysu_mm01_all_shot_keeps_every_visible_test_image(sysu, tmp_path: Path) -> None:
    root, counts = sysu
    splits = load_reid_dataset("sysu_mm01", root, cache_dir=tmp_path / "c", gallery_shot="all")
    expected = sum(n for (pid, cam), n in counts.items() if pid in SYSU_IDS["test"] and cam in (1, 2, 4, 5))
    assert len(splits["gallery"]) == expected


def test_sysu_mm01_camera_groups_join_cameras_2_and_3_only() -> None:
    from hf_reid.data import SYSU_MM01_CAMERA_GROUPS

    groups = dict(SYSU_MM01_CAMERA_GROUPS)
    assert sorted(groups) == [0, 1, 2, 3, 4, 5]  # 0-based camids of cam1..cam6
    assert groups[1] == groups[2]  # cam2 and cam3 share a location
    others = [groups[c] for c in (0, 1, 3, 4, 5)]
    assert len(set(others)) == 5
