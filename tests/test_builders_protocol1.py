"""Protocol-1 layouts: VIPeR, PRID2011, GRID, QMUL iLIDS (10 random splits) and CUHK02 (train only).

Each fixture is a tiny folder in the dataset's real layout and file names (a few identities,
16x32 images). The splits are checked against their definition (hf_reid/data/layouts/protocol1.py):
the larger half of the sorted candidate identities in ``RandomState(t).permutation`` order, or
GRID's shipped partitions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers_data import write_image
from scipy.io import savemat

from hf_reid.data import ReidDataError, load_reid_dataset
from hf_reid.data.layouts.protocol1 import NUM_SPLITS, PRID_CAM_A_ONLY_OFFSET, draw_test_ids
from hf_reid.metrics import evaluate_rank

# --- fixtures in each release's layout ------------------------------------------------------------

VIPER_NUMBERS = [0, 1, 2, 4, 5, 7, 8, 11, 12, 13, 15, 17, 20, 21, 23, 30]  # gaps, as in the release


def make_viper(root: Path) -> None:
    for k in VIPER_NUMBERS:
        write_image(root / "cam_a" / f"{k:03d}_45.bmp", shade=k)
        write_image(root / "cam_b" / f"{k:03d}_90.bmp", shade=k + 100)
    (root / "cam_a" / "Thumbs.db").write_bytes(b"x")


PRID_SHARED, PRID_A_ONLY, PRID_B_ONLY = 16, 3, 5


def make_prid(root: Path) -> None:
    for camera, count in (("cam_a", PRID_SHARED + PRID_A_ONLY), ("cam_b", PRID_SHARED + PRID_B_ONLY)):
        for number in range(1, count + 1):
            write_image(root / "single_shot" / camera / f"person_{number:04d}.png", shade=number)
    (root / "multi_shot").mkdir()  # the release also has the sequences; they are not read


GRID_IDS, GRID_DISTRACTORS = list(range(1, 17)), 6
GRID_TRAIN = [frozenset((np.random.RandomState(100 + t).permutation(16)[:8] + 1).tolist()) for t in range(10)]
"""The shipped partitions of the fixture: 8 training people each, unlike the seeded halves."""


def grid_name(pid: int, camera: int, frame: int) -> str:
    return f"{pid:04d}_{camera}_{25000 + frame}_{107 + pid}_32_130.jpeg"


def make_grid(root: Path, partitions: list[frozenset[int]] | None = GRID_TRAIN) -> None:
    for pid in GRID_IDS:
        write_image(root / "probe" / grid_name(pid, 1 + pid % 4, pid), shade=pid)
        write_image(root / "gallery" / grid_name(pid, 5 + pid % 4, pid), shade=pid + 50)
    for k in range(GRID_DISTRACTORS):
        write_image(root / "gallery" / grid_name(0, 1 + k % 8, 100 + k), shade=200 + k)
    if partitions is not None:
        write_partitions(root / "features_and_partitions.mat", partitions)


def write_partitions(path: Path, partitions: list[frozenset[int]]) -> None:
    """``trainIdxAll``: a 1x10 cell of structs, as in the release (field names as it has them)."""
    cells = np.empty((1, len(partitions)), dtype=object)
    for t, train in enumerate(partitions):
        ids = np.array(sorted(train), dtype=np.float64)
        cells[0, t] = {"probeImIdx": 2 * ids, "galleryImIdx": 2 * ids - 1, "personIdx": ids}
    savemat(str(path), {"trainIdxAll": cells, "testIdxAll": cells})


ILIDS_IMAGES = {pid: 2 + pid % 3 for pid in range(1, 16)}  # 2 to 4 images per person


def make_ilids(root: Path) -> None:
    for pid, count in ILIDS_IMAGES.items():
        for index in range(1, count + 1):
            write_image(root / "Persons" / f"{pid:04d}{index:03d}.jpg", shade=pid * 10 + index)


CUHK02_IDS = {"P1": [1, 2, 3], "P2": [1, 2], "P3": [5], "P4": [1, 7], "P5": [2, 3]}


def make_cuhk02(root: Path) -> None:
    for pair, ids in CUHK02_IDS.items():
        for camera in (1, 2):
            for pid in ids:
                for n in (1, 2):
                    write_image(root / pair / f"cam{camera}" / f"{pid:04d}_{n}.png", shade=pid + camera + n)


MAKERS = {"viper": make_viper, "prid": make_prid, "grid": make_grid, "ilids": make_ilids}
OPTIONS = {"prid": {"num_shared_ids": PRID_SHARED}}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("protocol1")
    out = {}
    for name, make in MAKERS.items():
        out[name] = base / name
        make(out[name])
    return out


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def load(name: str, root: Path, cache: Path, **options):
    return load_reid_dataset(name, root, cache_dir=cache, **{**OPTIONS.get(name, {}), **options})


def rows(dataset) -> dict[str, np.ndarray]:
    """What recipe evaluation hands ``protocol.trial_indices``."""
    return {
        "pids": np.asarray(dataset["pid"]),
        "camids": np.asarray(dataset["camid"]),
        "clothes_ids": np.asarray(dataset["clothes_id"]),
        "paths": np.asarray(dataset["path"], dtype=object),
    }


def trials(splits) -> list[tuple[np.ndarray, np.ndarray]]:
    query, gallery = rows(splits["query"]), rows(splits["gallery"])
    return [splits.protocol.trial_indices(query, gallery, t) for t in range(splits.protocol.num_trials)]


# --- the splits -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["viper", "prid", "grid", "ilids"])
def test_ten_deterministic_distinct_splits(name, folders, cache) -> None:
    splits = load(name, folders[name], cache)
    protocol = splits.protocol
    assert protocol.name == "random_splits" and protocol.num_trials == NUM_SPLITS
    assert protocol.cross_camera is (name != "ilids")
    assert protocol.to_dict()["num_trials"] == NUM_SPLITS

    query, gallery = rows(splits["query"]), rows(splits["gallery"])
    found = trials(splits)
    again = trials(load(name, folders[name], cache))  # reloaded from the cache
    signatures, test_sets = set(), []
    for (q_idx, g_idx), (q_again, g_again) in zip(found, again):
        assert np.array_equal(q_idx, q_again) and np.array_equal(g_idx, g_again)
        q_pids, g_pids = query["pids"][q_idx], gallery["pids"][g_idx]
        assert len(set(q_pids)) == len(q_pids)  # one query per test identity
        for pid in q_pids:  # every query has exactly one true match, which is not itself
            assert (g_pids == pid).sum() == 1
        assert not set(query["paths"][q_idx]) & set(gallery["paths"][g_idx])
        test_sets.append(frozenset(q_pids.tolist()))
        signatures.add((tuple(q_idx), tuple(g_idx)))
    assert len(signatures) == NUM_SPLITS  # the splits differ from each other
    candidates = {"viper": 16, "prid": PRID_SHARED, "grid": len(GRID_IDS), "ilids": len(ILIDS_IMAGES)}[name]
    assert {len(s) for s in test_sets} == {candidates - candidates // 2}
    union = frozenset().union(*test_sets)
    assert candidates - candidates // 2 < len(union) <= candidates  # the splits cover most identities


def test_viper_pools_cameras_and_random_halves(folders, cache) -> None:
    splits = load("viper", folders["viper"], cache)
    query, gallery, train = splits["query"], splits["gallery"], splits["train"]
    assert set(query["camid"]) == {0} and set(gallery["camid"]) == {1}
    assert all(p.startswith("cam_a/") for p in query["path"]) and all(
        p.startswith("cam_b/") for p in gallery["path"]
    )
    pids = sorted(k + 1 for k in VIPER_NUMBERS)  # pid = file number + 1 (pid 0 means distractor)
    assert sorted(query["pid"]) == pids and sorted(gallery["pid"]) == pids
    assert len(train) == 2 * len(pids) and sorted(set(train["pid"])) == pids
    for t, (q_idx, g_idx) in enumerate(trials(splits)):
        expected, _ = draw_test_ids(pids, t)
        assert sorted(np.asarray(query["pid"])[q_idx]) == expected
        assert sorted(np.asarray(gallery["pid"])[g_idx]) == expected  # no extra gallery images


def test_prid_distractors_and_one_camera_people(folders, cache) -> None:
    splits = load("prid", folders["prid"], cache)
    query, gallery, train = splits["query"], splits["gallery"], splits["train"]
    shared = list(range(1, PRID_SHARED + 1))
    assert sorted(query["pid"]) == shared and set(query["camid"]) == {0}
    assert sorted(gallery["pid"]) == list(range(1, PRID_SHARED + PRID_B_ONLY + 1)) and set(
        gallery["camid"]
    ) == {1}
    a_only = [PRID_CAM_A_ONLY_OFFSET + n for n in range(PRID_SHARED + 1, PRID_SHARED + PRID_A_ONLY + 1)]
    assert (
        sorted(set(train["pid"]))
        == shared + list(range(PRID_SHARED + 1, PRID_SHARED + PRID_B_ONLY + 1)) + a_only
    )
    assert len(train) == 2 * PRID_SHARED + PRID_A_ONLY + PRID_B_ONLY
    b_only = set(range(PRID_SHARED + 1, PRID_SHARED + PRID_B_ONLY + 1))
    for t, (q_idx, g_idx) in enumerate(trials(splits)):
        test, _ = draw_test_ids(shared, t)
        assert sorted(np.asarray(query["pid"])[q_idx]) == test
        # gallery = cam_b images of the test people + every cam_b-only person (distractors)
        assert set(np.asarray(gallery["pid"])[g_idx]) == set(test) | b_only
        assert len(g_idx) == len(test) + PRID_B_ONLY


def test_grid_uses_the_shipped_partitions(folders, cache) -> None:
    splits = load("grid", folders["grid"], cache)
    query, gallery, train = splits["query"], splits["gallery"], splits["train"]
    assert len(query) == len(GRID_IDS) and len(gallery) == len(GRID_IDS) + GRID_DISTRACTORS
    assert (np.asarray(gallery["pid"]) == 0).sum() == GRID_DISTRACTORS
    assert 0 not in set(train["pid"]) and len(train) == 2 * len(GRID_IDS)
    assert set(query["camid"]) <= set(range(8)) and sorted(set(gallery["camid"])) == list(range(8))
    for t, (q_idx, g_idx) in enumerate(trials(splits)):
        test = sorted(set(GRID_IDS) - GRID_TRAIN[t])
        assert sorted(np.asarray(query["pid"])[q_idx]) == test
        g_pids = np.asarray(gallery["pid"])[g_idx]
        assert sorted(g_pids[g_pids > 0]) == test and (g_pids == 0).sum() == GRID_DISTRACTORS
    assert "features_and_partitions.mat" in splits.protocol.description

    seeded = load("grid", folders["grid"], cache, partitions="random")
    assert "seeded random halves" in seeded.protocol.description
    for t, (q_idx, _) in enumerate(trials(seeded)):
        assert sorted(np.asarray(seeded["query"]["pid"])[q_idx]) == draw_test_ids(GRID_IDS, t)[0]


def test_grid_without_partition_file(tmp_path: Path, caplog) -> None:
    root = tmp_path / "underground_reid"
    make_grid(root, partitions=None)
    with pytest.raises(FileNotFoundError, match=r"features_and_partitions\.mat"):
        load_reid_dataset("grid", root, cache_dir=tmp_path / "c", partitions="file")
    splits = load_reid_dataset("grid", root, cache_dir=tmp_path / "c")  # auto: seeded random halves
    assert "random splits" in caplog.text
    q_idx, _ = splits.protocol.trial_indices(rows(splits["query"]), rows(splits["gallery"]), 4)
    assert sorted(np.asarray(splits["query"]["pid"])[q_idx]) == draw_test_ids(GRID_IDS, 4)[0]


def test_grid_bad_partition_file_names_file_and_field(tmp_path: Path) -> None:
    root = tmp_path / "underground_reid"
    make_grid(root, partitions=[frozenset({1, 2, 99})] * 10)
    with pytest.raises(ReidDataError, match=r"features_and_partitions\.mat.*trainIdxAll\{1\}\.personIdx.*99"):
        load_reid_dataset("grid", root, cache_dir=tmp_path / "c")
    (root / "features_and_partitions.mat").write_bytes(b"not a mat file")
    with pytest.raises(ReidDataError, match=r"features_and_partitions\.mat.*partitions='random'"):
        load_reid_dataset("grid", root, cache_dir=tmp_path / "c2")
    savemat(str(root / "features_and_partitions.mat"), {"other": np.zeros(3)})
    with pytest.raises(ReidDataError, match="trainIdxAll"):
        load_reid_dataset("grid", root, cache_dir=tmp_path / "c3")


def test_ilids_draws_one_query_and_one_gallery_image(folders, cache) -> None:
    splits = load("ilids", folders["ilids"], cache)
    query, gallery = splits["query"], splits["gallery"]
    assert len(query) == len(gallery) == len(splits["train"]) == sum(ILIDS_IMAGES.values())
    assert set(query["camid"]) == {0}  # cameras are not labelled: no camera rule
    for q_idx, g_idx in trials(splits):
        assert len(q_idx) == len(g_idx) == len(ILIDS_IMAGES) - len(ILIDS_IMAGES) // 2
        assert np.array_equal(np.asarray(query["pid"])[q_idx], np.asarray(gallery["pid"])[g_idx])


@pytest.mark.parametrize("name", ["viper", "prid", "grid", "ilids"])
def test_split_id_loads_one_split_with_disjoint_train(name, folders, cache) -> None:
    pools = load(name, folders[name], cache)
    q_idx, g_idx = trials(pools)[3]
    one = load(name, folders[name], cache, split_id=3)
    assert one.protocol.name == "random_splits" and one.protocol.num_trials == 1
    assert "Split 3 only" in one.protocol.description
    assert list(one["query"]["path"]) == [pools["query"]["path"][i] for i in q_idx]
    assert list(one["gallery"]["path"]) == [pools["gallery"]["path"][i] for i in g_idx]
    test_ids = set(one["query"]["pid"]) | set(one["gallery"]["pid"])
    assert len(one["train"]) > 0 and not set(one["train"]["pid"]) & test_ids
    if name != "prid":  # PRID's train split also keeps the cam_a-only people
        assert set(one["train"]["pid"]) | (test_ids - {0}) == set(pools["train"]["pid"])
    with pytest.raises(ValueError, match="split_id"):
        load(name, folders[name], cache, split_id=10)


# --- CUHK02 -------------------------------------------------------------------------------------------


def test_cuhk02_is_train_only_with_unique_ids_per_pair(tmp_path: Path) -> None:
    root = tmp_path / "Dataset"
    make_cuhk02(root)
    splits = load_reid_dataset("cuhk02", root, cache_dir=tmp_path / "c")
    assert list(splits) == ["train"]
    train = splits["train"]
    assert len(train) == 4 * sum(len(ids) for ids in CUHK02_IDS.values())
    expected = {p * 10_000 + pid for p, ids in enumerate(CUHK02_IDS.values(), start=1) for pid in ids}
    assert set(train["pid"]) == expected  # P1 and P2 both have a person 1: two identities
    assert sorted(set(train["camid"])) == list(range(10))  # cam1/cam2 of P1 .. P5
    for path, camid in zip(train["path"], train["camid"]):
        pair, camera = path.split("/")[:2]
        assert camid == 2 * (int(pair[1]) - 1) + int(camera[-1]) - 1


# --- bad input ------------------------------------------------------------------------------------


def test_bad_names_raise_naming_the_file(tmp_path: Path) -> None:
    viper = tmp_path / "VIPeR"
    make_viper(viper)
    write_image(viper / "cam_a" / "person_45.bmp")
    with pytest.raises(ReidDataError, match=r"cam_a/person_45\.bmp.*VIPeR scheme"):
        load_reid_dataset("viper", viper, cache_dir=tmp_path / "c")
    splits = load_reid_dataset("viper", viper, cache_dir=tmp_path / "c", on_bad_image="skip")
    assert len(splits["query"]) == len(VIPER_NUMBERS)
    (viper / "cam_a" / "person_45.bmp").unlink()
    write_image(viper / "cam_b" / "0001_90.bmp")
    with pytest.raises(ReidDataError, match=r"cam_b/0001_90\.bmp and cam_b/001_90\.bmp.*person 2"):
        load_reid_dataset("viper", viper, cache_dir=tmp_path / "c")

    grid = tmp_path / "underground_reid"
    make_grid(grid)
    write_image(grid / "gallery" / grid_name(3, 9, 7))
    with pytest.raises(ReidDataError, match=r"gallery/0003_9_.*camera 9 is unknown"):
        load_reid_dataset("grid", grid, cache_dir=tmp_path / "c")

    prid = tmp_path / "prid_2011"
    make_prid(prid)
    write_image(prid / "single_shot" / "cam_b" / "img_0001.png")
    with pytest.raises(ReidDataError, match=r"single_shot/cam_b/img_0001\.png"):
        load_reid_dataset("prid", prid, cache_dir=tmp_path / "c", num_shared_ids=PRID_SHARED)

    ilids = tmp_path / "i-LIDS_Pedestrian"
    make_ilids(ilids)
    write_image(ilids / "Persons" / "0001_01.jpg")
    with pytest.raises(ReidDataError, match=r"Persons/0001_01\.jpg.*0001001\.jpg"):
        load_reid_dataset("ilids", ilids, cache_dir=tmp_path / "c")

    cuhk02 = tmp_path / "Dataset"
    make_cuhk02(cuhk02)
    write_image(cuhk02 / "P3" / "cam2" / "abc.png")
    with pytest.raises(ReidDataError, match=r"P3/cam2/abc\.png"):
        load_reid_dataset("cuhk02", cuhk02, cache_dir=tmp_path / "c")
    (cuhk02 / "P3" / "cam2" / "abc.png").unlink()
    for child in (cuhk02 / "P5" / "cam1").iterdir():
        child.unlink()
    (cuhk02 / "P5" / "cam1").rmdir()
    with pytest.raises(FileNotFoundError, match="P5/cam1"):
        load_reid_dataset("cuhk02", cuhk02, cache_dir=tmp_path / "c")


def test_missing_folder_points_one_level_down(tmp_path: Path) -> None:
    make_viper(tmp_path / "viper" / "VIPeR")
    with pytest.raises(FileNotFoundError, match=r"one level down.*VIPeR"):
        load_reid_dataset("viper", tmp_path / "viper", cache_dir=tmp_path / "c")


# --- end to end: the mean over the 10 splits ------------------------------------------------------


@pytest.mark.parametrize("name", ["viper", "prid", "grid", "ilids"])
def test_mean_over_ten_splits_of_random_features(name, folders, cache) -> None:
    splits = load(name, folders[name], cache)
    protocol = splits.protocol
    query, gallery = rows(splits["query"]), rows(splits["gallery"])
    rng = np.random.default_rng(0)
    q_features = rng.normal(size=(len(query["pids"]), 8))
    g_features = rng.normal(size=(len(gallery["pids"]), 8))
    distances = ((q_features[:, None] - g_features[None]) ** 2).sum(-1)  # extracted once for the pools
    results = []
    for t in range(protocol.num_trials):
        q_idx, g_idx = protocol.trial_indices(query, gallery, t)
        result = evaluate_rank(
            distances[np.ix_(q_idx, g_idx)],
            query["pids"][q_idx],
            gallery["pids"][g_idx],
            query["camids"][q_idx],
            gallery["camids"][g_idx],
            max_rank=5,
            **protocol.rank_kwargs(),
        )
        assert result.num_invalid_queries == 0
        results.append([result.cmc[0], result.mAP])
    mean, spread = np.mean(results, axis=0), np.std(results, axis=0)
    assert np.isfinite(mean).all() and np.isfinite(spread).all()
    assert 0.0 <= mean[0] <= 1.0 and 0.0 < mean[1] <= 1.0
    # a perfect feature ranks every true match first in every split
    identity = np.where(query["pids"][:, None] == gallery["pids"][None], 0.0, 1.0)
    for t in range(protocol.num_trials):
        q_idx, g_idx = protocol.trial_indices(query, gallery, t)
        kwargs = protocol.rank_kwargs()
        perfect = evaluate_rank(
            identity[np.ix_(q_idx, g_idx)],
            query["pids"][q_idx],
            gallery["pids"][g_idx],
            query["camids"][q_idx],
            gallery["camids"][g_idx],
            max_rank=5,
            **kwargs,
        )
        assert perfect.mAP == 1.0
