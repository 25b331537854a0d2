"""re_ranking / re_ranking_features: torchreid's k-reciprocal re-ranking numbers (fixtures from
its utils/rerank.py) computed in pieces, and clear errors on bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import hf_reid.metrics.rerank as rerank_module
from hf_reid.metrics import re_ranking, re_ranking_features

FIXTURE = Path(__file__).parent / "fixtures" / "metrics" / "rerank_reference.npz"
PARAMS = [(20, 6, 0.3), (7, 3, 0.5), (5, 1, 0.2)]


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    data = np.load(FIXTURE)
    return {key: data[key] for key in data.files}


def matrices(ref, prefix=""):
    return ref[f"{prefix}q_g_dist"], ref[f"{prefix}q_q_dist"], ref[f"{prefix}g_g_dist"]


@pytest.mark.parametrize(("k1", "k2", "lam"), PARAMS)
def test_matrices_match_reference(ref, k1, k2, lam):
    out = re_ranking(*matrices(ref), k1, k2, lam)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref[f"euclidean_{k1}_{k2}_{lam}"], atol=1e-5, rtol=0)


def test_asymmetric_matrices_match_reference(ref):
    # The reference reads columns of the stacked matrix; with non-symmetric input that matters.
    out = re_ranking(*matrices(ref, "asym_"), 10, 4, 0.3)
    np.testing.assert_allclose(out, ref["asym_10_4_0.3"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
def test_features_match_reference(ref, metric):
    out = re_ranking_features(ref["query_features"], ref["gallery_features"], 20, 6, 0.3, metric=metric)
    np.testing.assert_allclose(out, ref[f"{metric}_20_6_0.3"], atol=1e-5, rtol=0)


def test_small_pieces_give_the_same_numbers(ref, monkeypatch):
    # Force many row chunks, Jaccard pieces and distance blocks.
    monkeypatch.setattr(rerank_module, "_PAIR_BUDGET", 37)
    monkeypatch.setattr(rerank_module, "_BLOCK_ELEMENTS", 500)
    expected = ref["euclidean_20_6_0.3"]
    np.testing.assert_allclose(re_ranking(*matrices(ref), chunk_size=3), expected, atol=1e-5, rtol=0)
    out = re_ranking_features(ref["query_features"], ref["gallery_features"], chunk_size=5)
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=0)


def test_top_k_and_torch_inputs(ref):
    full = ref["euclidean_20_6_0.3"]
    dist, idx = re_ranking(*matrices(ref), top_k=7)
    np.testing.assert_array_equal(idx, np.argsort(full, axis=1, kind="stable")[:, :7])
    np.testing.assert_allclose(dist, np.sort(full, axis=1)[:, :7], atol=1e-5, rtol=0)
    tensors = [torch.from_numpy(m) for m in matrices(ref)]
    out = re_ranking(*tensors)
    assert isinstance(out, torch.Tensor) and out.shape == full.shape
    np.testing.assert_allclose(out.numpy(), full, atol=1e-5, rtol=0)


def test_lambda_one_is_the_normalised_original_distance(ref):
    q_g, q_q, _ = matrices(ref)
    out = re_ranking(*matrices(ref), lambda_value=1.0)
    column_max = np.maximum((q_q**2).max(axis=0), (q_g**2).max(axis=1))
    np.testing.assert_allclose(out, q_g**2 / column_max[:, None], rtol=1e-6)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: (m[0], m[1][:, :-1], m[2]), "q_q_dist"),
        (lambda m: (m[0], m[1], m[2][:-1]), "g_g_dist"),
        (
            lambda m: (m[0], m[1], np.where(np.eye(len(m[2])) > 0, np.nan, m[2]).astype(np.float32)),
            "g_g_dist",
        ),
        (lambda m: (np.full_like(m[0], np.inf), m[1], m[2]), "q_g_dist"),
        (lambda m: (m[0][:0], m[1][:0, :0], m[2]), "empty"),
        (lambda m: (m[0].astype(np.int32), m[1], m[2]), "floating-point"),
    ],
)
def test_bad_matrices(ref, change, message):
    with pytest.raises((ValueError, TypeError), match=message):
        re_ranking(*change(matrices(ref)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k1": 0}, "k1"),
        ({"k2": 1.5}, "k2"),
        ({"lambda_value": 1.5}, "lambda_value"),
        ({"top_k": 10**6}, "top_k"),
    ],
)
def test_bad_parameters(ref, kwargs, message):
    with pytest.raises(ValueError, match=message):
        re_ranking(*matrices(ref), **kwargs)


def test_bad_features(ref):
    q, g = ref["query_features"], ref["gallery_features"]
    with pytest.raises(ValueError, match="features per row"):
        re_ranking_features(q, g[:, :-1])
    with pytest.raises(ValueError, match=r"query_features.*NaN"):
        re_ranking_features(np.where(np.eye(*q.shape) > 0, np.nan, q).astype(np.float32), g)
    with pytest.raises(ValueError, match="Unknown distance metric"):
        re_ranking_features(q, g, metric="manhattan")


@pytest.mark.parametrize("sparse", [0, 1, 10**6])
@pytest.mark.parametrize("margin", [0, 8])
@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean"])
def test_symmetric_pass_equals_the_row_by_row_pass_with_tied_neighbours(monkeypatch, margin, metric, sparse):
    # Every feature appears three times, so neighbour lists are full of exact ties; without a
    # margin the k-th candidate always ties with the last one and every row takes the exact
    # row-by-row fallback. Strips of 7 rows and two workers exercise the merging; ``sparse``
    # forces the selection over whole columns (0), the default choice (1) or picked entries.
    import hf_reid.metrics._threads as threads_module

    monkeypatch.setattr(threads_module, "MIN_PARALLEL_WORK", 1)
    rng = np.random.default_rng(0)
    base = rng.standard_normal((30, 8)).astype(np.float32)
    feats = np.repeat(base, 3, axis=0)[rng.permutation(90)]
    q, g = feats[:20], feats[20:]

    def row_by_row(source, col_max, knn, chunk_size, exact_rows):
        for start in range(0, source.num_all, 7):
            exact_rows((start, min(start + 7, source.num_all)))

    with monkeypatch.context() as patch:
        patch.setattr(rerank_module, "_symmetric_neighbours", row_by_row)
        expected = re_ranking_features(q, g, 10, 3, metric=metric)
    monkeypatch.setattr(rerank_module, "_SELECT_MARGIN", margin)
    monkeypatch.setattr(rerank_module, "_SPARSE_ENTRIES", sparse)
    with threads_module.torch_threads(2):
        out = re_ranking_features(q, g, 10, 3, metric=metric, chunk_size=7)
    np.testing.assert_allclose(out, expected, atol=1e-6, rtol=0)


def test_symmetric_pass_reports_overflow():
    q = np.full((3, 4), 3e38, dtype=np.float32)
    g = -np.full((5, 4), 3e38, dtype=np.float32)
    with pytest.raises(ValueError, match="overflow"):
        re_ranking_features(q, g)


def test_entries_below_picks_each_columns_smallest_entries_under_its_limit():
    rng = np.random.default_rng(1)
    block = torch.from_numpy(rng.integers(0, 6, size=(9, 40)).astype(np.float32))  # many ties
    limit = torch.from_numpy(rng.integers(0, 5, size=40).astype(np.float32))
    width = 3
    columns, values, rows = rerank_module._entries_below(block, limit, width)
    expected_columns = [c for c in range(40) if (block[:, c] < limit[c]).any()]
    assert columns.tolist() == expected_columns
    for c, vals, idx in zip(columns.tolist(), values, rows, strict=True):
        below = sorted((float(block[r, c]), r) for r in range(9) if block[r, c] < limit[c])[:width]
        got = [(float(v), int(r)) for v, r in zip(vals, idx, strict=True) if r >= 0]
        assert got == below  # smallest first, ties by row
        assert all(torch.isinf(vals[len(got) :])) and all(idx[len(got) :] == -1)
    assert rerank_module._entries_below(block, torch.full((40,), 9.0), width) is None  # every entry
    none = rerank_module._entries_below(block, torch.zeros(40), width)
    assert none[0].numel() == 0 and none[1].shape == (0, width)
