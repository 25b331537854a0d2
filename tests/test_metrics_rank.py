"""evaluate_rank: the reference's CMC / mAP / mINP (fixtures from torchreid and fast-reid),
deterministic ties, the protocol options, and clear errors on bad input."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_reid.metrics import RankResult, evaluate_rank
from hf_reid.metrics.rank_reference import rank_by_sorting

FIXTURE = Path(__file__).parent / "fixtures" / "metrics" / "rank_reference.npz"


@pytest.fixture(scope="module")
def cases() -> dict[str, dict[str, np.ndarray]]:
    data = np.load(FIXTURE)
    out: dict[str, dict[str, np.ndarray]] = {}
    for key in data.files:
        case, field = key.split("__")
        out.setdefault(case, {})[field] = data[key]
    return out


def random_case(seed, num_query=25, num_gallery=120, num_ids=12, num_cams=3, decimals=None):
    rng = np.random.default_rng(seed)
    dist = rng.random((num_query, num_gallery))
    if decimals is not None:
        dist = np.round(dist, decimals)
    return (
        dist.astype(np.float32),
        rng.integers(0, num_ids, num_query),
        rng.integers(0, num_ids, num_gallery),
        rng.integers(0, num_cams, num_query),
        rng.integers(0, num_cams, num_gallery),
    )


@pytest.mark.parametrize("name", ["market", "ties", "camera_groups"])
def test_matches_reference(cases, name):
    case = cases[name]
    groups = case.get("camera_groups")
    result = evaluate_rank(
        case["distmat"],
        case["q_pids"],
        case["g_pids"],
        case["q_camids"],
        case["g_camids"],
        50,
        camera_groups=groups,
    )
    np.testing.assert_allclose(result.cmc, case["ref_cmc"], atol=1e-6)
    assert result.mAP == pytest.approx(float(case["ref_mAP"]), abs=1e-6)
    assert result.mINP == pytest.approx(float(case["ref_mINP"]), abs=1e-6)
    # The fixture has queries absent from the gallery and queries whose matches share their camera.
    assert result.num_invalid_queries > 0
    assert result.num_valid_queries + result.num_invalid_queries == len(case["q_pids"])


def test_without_cameras_matches_reference_with_nothing_excluded(cases):
    case = cases["no_cameras"]
    result = evaluate_rank(
        case["distmat"], case["q_pids"], case["g_pids"], None, None, 50, cross_camera=False
    )
    np.testing.assert_allclose(result.cmc, case["ref_cmc"], atol=1e-6)
    assert result.mAP == pytest.approx(float(case["ref_mAP"]), abs=1e-6)
    assert result.mINP == pytest.approx(float(case["ref_mINP"]), abs=1e-6)


def test_gallery_shorter_than_max_rank(cases):
    case = cases["small_gallery"]
    result = evaluate_rank(
        case["distmat"], case["q_pids"], case["g_pids"], case["q_camids"], case["g_camids"], 50
    )
    reference = case["ref_cmc"]
    assert len(reference) == 30 and len(result.cmc) == 50
    np.testing.assert_allclose(result.cmc[:30], reference, atol=1e-6)
    np.testing.assert_allclose(result.cmc[30:], reference[-1])
    assert result.mAP == pytest.approx(float(case["ref_mAP"]), abs=1e-6)


def test_ties_follow_gallery_index_and_do_not_depend_on_chunks_or_types():
    dist, q_pids, g_pids, q_cams, g_cams = random_case(0, decimals=1)
    junk = (q_pids[:, None] == g_pids[None, :]) & (q_cams[:, None] == g_cams[None, :])
    cmc, mean_ap, mean_inp, valid = rank_by_sorting(dist, q_pids, g_pids, junk, 20)
    outputs = [
        evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, 20, chunk_size=chunk) for chunk in (None, 1, 7)
    ]
    outputs.append(evaluate_rank(dist.astype(np.float64), q_pids, g_pids, q_cams, g_cams, 20))
    outputs.append(evaluate_rank(torch.from_numpy(dist).half(), q_pids, g_pids, q_cams, g_cams, 20))
    outputs.append(
        evaluate_rank(torch.from_numpy(dist), torch.from_numpy(q_pids), g_pids.tolist(), q_cams, g_cams, 20)
    )
    for result in outputs:
        np.testing.assert_allclose(result.cmc, cmc, atol=1e-12)
        assert result.mAP == pytest.approx(mean_ap, abs=1e-12)
        assert result.mINP == pytest.approx(mean_inp, abs=1e-12)
        assert result.num_valid_queries == valid


@pytest.mark.parametrize("cells, int32_limit", [(1, 2**31), (2, 2**31), (3, 0), (17, 2**31), (4096, 0)])
def test_lookup_table_kernel_is_exact_with_ties_junk_and_parallel_chunks(monkeypatch, cells, int32_limit):
    # Few cells put many entries in cells holding a positive (decided by direct comparison), many
    # cells put almost none there; heavy ties test the (distance, index) order either way. Two
    # workers share the chunks (forced even for this small problem). A limit of 0 forces the int64
    # indices that huge chunks take.
    import hf_reid.metrics._threads as threads_module
    import hf_reid.metrics.rank as rank_module

    monkeypatch.setattr(rank_module, "_CELLS", cells)
    monkeypatch.setattr(rank_module, "_INT32_INDEX_LIMIT", int32_limit)
    monkeypatch.setattr(threads_module, "MIN_PARALLEL_WORK", 1)
    for seed, decimals in ((1, 1), (2, 2), (3, None)):
        dist, q_pids, g_pids, q_cams, g_cams = random_case(seed, 40, 300, 8, 3, decimals)
        dist[:, ::7] = dist[:, :1]  # many exact ties with the first column in every row
        junk = (q_pids[:, None] == g_pids[None, :]) & (q_cams[:, None] == g_cams[None, :])
        cmc, mean_ap, mean_inp, valid = rank_by_sorting(dist, q_pids, g_pids, junk, 50)
        with threads_module.torch_threads(2):
            result = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, 50, chunk_size=3)
        np.testing.assert_allclose(result.cmc, cmc, atol=1e-12)
        assert result.mAP == pytest.approx(mean_ap, abs=1e-12)
        assert result.mINP == pytest.approx(mean_inp, abs=1e-12)
        assert result.num_valid_queries == valid


def test_lookup_table_kernel_with_extreme_and_negative_distances():
    # Distances spanning float32's range (scaled cells overflow to inf) and signed values.
    rng = np.random.default_rng(4)
    dist = (rng.standard_normal((20, 200)) * 10.0 ** rng.integers(-30, 30, (20, 200))).astype(np.float32)
    q_pids, g_pids = rng.integers(0, 5, 20), rng.integers(0, 5, 200)
    q_cams, g_cams = rng.integers(0, 2, 20), rng.integers(0, 2, 200)
    junk = (q_pids[:, None] == g_pids[None, :]) & (q_cams[:, None] == g_cams[None, :])
    cmc, mean_ap, mean_inp, _ = rank_by_sorting(dist, q_pids, g_pids, junk, 50)
    result = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, 50)
    np.testing.assert_allclose(result.cmc, cmc, atol=1e-12)
    assert result.mAP == pytest.approx(mean_ap, abs=1e-12)
    assert result.mINP == pytest.approx(mean_inp, abs=1e-12)


def test_equal_distances_rank_lower_gallery_index_first():
    # One query, three gallery items at the same distance: the positive at index 1 is ranked
    # second (after index 0), never first or third.
    dist = np.array([[0.5, 0.5, 0.5]], dtype=np.float32)
    result = evaluate_rank(dist, [7], [1, 7, 2], [0], [1, 1, 1], 3)
    np.testing.assert_allclose(result.cmc, [0.0, 1.0, 1.0])
    assert result.mAP == pytest.approx(0.5)
    assert result.mINP == pytest.approx(0.5)


def test_clothes_changing_also_excludes_same_clothes():
    dist, q_pids, g_pids, q_cams, g_cams = random_case(1, num_ids=6)
    rng = np.random.default_rng(1)
    q_clothes, g_clothes = rng.integers(0, 3, len(q_pids)), rng.integers(0, 3, len(g_pids))
    same_pid = q_pids[:, None] == g_pids[None, :]
    junk = same_pid & ((q_cams[:, None] == g_cams[None, :]) | (q_clothes[:, None] == g_clothes[None, :]))
    cmc, mean_ap, mean_inp, valid = rank_by_sorting(dist, q_pids, g_pids, junk, 10)
    result = evaluate_rank(
        dist,
        q_pids,
        g_pids,
        q_cams,
        g_cams,
        10,
        q_clothes_ids=q_clothes,
        g_clothes_ids=g_clothes,
        clothes_changing=True,
        chunk_size=4,
    )
    np.testing.assert_allclose(result.cmc, cmc, atol=1e-12)
    assert (result.mAP, result.mINP, result.num_valid_queries) == pytest.approx((mean_ap, mean_inp, valid))
    standard = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, 10)
    assert standard.mAP != pytest.approx(result.mAP)


def test_sysu_camera_groups_exclude_camera_two_for_camera_three_queries():
    # 0-based camids: an infrared camera-3 query (camid 2) whose nearest same-pid image comes
    # from camera 2 (camid 1), the same location.
    dist = np.array([[0.1, 0.2, 0.3]], dtype=np.float32)
    args = (dist, [4], [4, 5, 4], [2], [1, 0, 0], 3)
    plain = evaluate_rank(*args)
    grouped = evaluate_rank(*args, camera_groups={0: 0, 1: 1, 2: 1, 3: 3, 4: 4, 5: 5})
    as_array = evaluate_rank(*args, camera_groups=np.array([0, 1, 1, 3, 4, 5]))
    assert plain.cmc.tolist() == [1.0, 1.0, 1.0]  # different cameras: the first image counts
    assert grouped.cmc.tolist() == [0.0, 1.0, 1.0]  # same group: it is junk
    np.testing.assert_array_equal(as_array.cmc, grouped.cmc)


def test_single_gallery_shot_is_exact_in_expectation():
    # Query pid 1 (camera 0) against 2 images of pid 1 and 2 images each of pids 2 and 3.
    dist = np.array([[0.30, 0.10, 0.20, 0.40, 0.05, 0.50]], dtype=np.float32)
    g_pids = np.array([1, 2, 2, 1, 3, 3])
    # Exact expectation: enumerate the 2 * 2 * 2 equally likely single-shot galleries.
    expected = np.zeros(3)
    for choice in itertools.product([0, 3], [1, 2], [4, 5]):
        kept = np.array(sorted(choice, key=lambda i: dist[0, i]))
        first = int(np.flatnonzero(g_pids[kept] == 1)[0])
        expected[first:] += 1 / 8
    draws = [
        evaluate_rank(dist, [1], g_pids, [0], [1] * 6, 3, single_gallery_shot=True, seed=seed).cmc
        for seed in range(150)
    ]
    np.testing.assert_allclose(np.mean(draws, axis=0), expected, atol=0.04)
    market = evaluate_rank(dist, [1], g_pids, [0], [1] * 6, 3)
    single = evaluate_rank(dist, [1], g_pids, [0], [1] * 6, 3, single_gallery_shot=True, seed=3)
    assert single.mAP == market.mAP  # AP is computed on the full gallery, as in the reference


def test_single_gallery_shot_is_reproducible_and_exact_with_one_image_per_identity():
    dist, q_pids, g_pids, q_cams, g_cams = random_case(2, num_query=15, num_gallery=60, num_ids=40)
    first = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, 10, single_gallery_shot=True, seed=5)
    again = evaluate_rank(
        dist, q_pids, g_pids, q_cams, g_cams, 10, single_gallery_shot=True, seed=5, chunk_size=2
    )
    np.testing.assert_array_equal(first.cmc, again.cmc)
    # One gallery image per identity: nothing to sample, so the single-shot CMC is the Market CMC.
    unique = np.unique(g_pids, return_index=True)[1]
    args = (dist[:, unique], q_pids, g_pids[unique], q_cams, g_cams[unique], 10)
    np.testing.assert_allclose(
        evaluate_rank(*args, single_gallery_shot=True, seed=1).cmc, evaluate_rank(*args).cmc, atol=1e-12
    )


def test_result_dict():
    dist, q_pids, g_pids, q_cams, g_cams = random_case(3)
    result = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, 10)
    assert isinstance(result, RankResult)
    values = result.to_dict()
    assert list(values) == ["rank-1", "rank-5", "rank-10", "mAP", "mINP"]
    assert values["rank-5"] == result.cmc[4] and values["mAP"] == result.mAP
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in values.values())
    assert "rank-10" not in evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, 5).to_dict()


def test_every_query_invalid_is_a_clear_error():
    dist = np.random.default_rng(0).random((3, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="None of the 3 queries has a true match"):
        evaluate_rank(dist, [1, 2, 3], [4, 5, 6, 7], [0, 0, 0], [1, 1, 1, 1])
    with pytest.raises(ValueError, match="None of the 1 queries"):  # matches only in its camera
        evaluate_rank(dist[:1], [1], [1, 1, 5, 6], [0], [0, 0, 1, 1])


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (lambda a: {**a, "q_pids": a["q_pids"][:-1]}, ValueError, "q_pids"),
        (lambda a: {**a, "g_camids": a["g_camids"][:-1]}, ValueError, "g_camids"),
        (
            lambda a: {**a, "distmat": np.where(np.eye(4, 6) > 0, np.nan, a["distmat"])},
            ValueError,
            "NaN or infinite",
        ),
        (lambda a: {**a, "distmat": np.full((4, 6), np.inf, np.float32)}, ValueError, "NaN or infinite"),
        (
            lambda a: {**a, "distmat": np.zeros((0, 6), np.float32), "q_pids": [], "q_camids": []},
            ValueError,
            "empty",
        ),
        (
            lambda a: {**a, "distmat": np.zeros((4, 0), np.float32), "g_pids": [], "g_camids": []},
            ValueError,
            "empty",
        ),
        (lambda a: {**a, "distmat": a["distmat"].astype(np.int64)}, TypeError, "floating-point"),
        (lambda a: {**a, "q_pids": a["q_pids"].astype(np.float32)}, TypeError, "q_pids"),
        (lambda a: {**a, "distmat": a["distmat"][0]}, ValueError, "2-D"),
        (lambda a: {**a, "q_camids": None}, ValueError, "cross_camera=False"),
        (lambda a: {**a, "max_rank": 0}, ValueError, "max_rank"),
        (lambda a: {**a, "camera_groups": {0: 0}}, ValueError, "camera_groups"),
        (lambda a: {**a, "clothes_changing": True}, ValueError, "clothes"),
    ],
)
def test_bad_input(change, error, message):
    rng = np.random.default_rng(0)
    args = {
        "distmat": rng.random((4, 6)).astype(np.float32),
        "q_pids": np.array([1, 2, 3, 4]),
        "g_pids": np.array([1, 2, 3, 4, 5, 6]),
        "q_camids": np.array([0, 0, 0, 0]),
        "g_camids": np.array([1, 1, 1, 1, 1, 1]),
    }
    with pytest.raises(error, match=message):
        evaluate_rank(**change(args))


def test_thread_setting_is_restored_even_after_an_error():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        dist, q_pids, g_pids, q_cams, g_cams = random_case(4)
        evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, 10)
        assert torch.get_num_threads() == 2
        dist[0, 0] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, 10)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
