"""compute_distance_matrix, average_query_expansion (fast-reid's aqe fixture) and GalleryIndex
(torch and faiss backends against brute force)."""

from __future__ import annotations

from pathlib import Path

import faiss  # noqa: F401  (the faiss backend is tested, not skipped: faiss-cpu is a dev dependency)
import numpy as np
import pytest
import torch

from hf_reid.metrics import GalleryIndex, average_query_expansion, compute_distance_matrix

AQE_FIXTURE = Path(__file__).parent / "fixtures" / "metrics" / "aqe_reference.npz"


def brute_force(q: np.ndarray, g: np.ndarray, metric: str) -> np.ndarray:
    q, g = q.astype(np.float64), g.astype(np.float64)
    if metric == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        g = g / np.linalg.norm(g, axis=1, keepdims=True)
        return 1.0 - q @ g.T
    sq = ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)
    return np.sqrt(sq) if metric == "euclidean" else sq


@pytest.fixture(scope="module")
def features():
    rng = np.random.default_rng(0)
    return rng.standard_normal((23, 12)).astype(np.float32), rng.standard_normal((57, 12)).astype(np.float32)


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
def test_distance_matrix(features, metric):
    q, g = features
    expected = brute_force(q, g, metric)
    out = compute_distance_matrix(q, g, metric)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (23, 57)
    np.testing.assert_allclose(out, expected, atol=2e-5)
    chunked = compute_distance_matrix(torch.from_numpy(q), torch.from_numpy(g), metric, chunk_size=4)
    assert isinstance(chunked, torch.Tensor)
    np.testing.assert_allclose(chunked.numpy(), out, rtol=1e-6, atol=1e-6)
    as_double = compute_distance_matrix(q.astype(np.float64), g.astype(np.float64), metric)
    assert as_double.dtype == np.float64
    np.testing.assert_allclose(as_double, expected, atol=1e-10)


def test_distance_matrix_bad_input(features):
    q, g = features
    with pytest.raises(ValueError, match="Unknown distance metric"):
        compute_distance_matrix(q, g, "hamming")
    with pytest.raises(ValueError, match="features per row"):
        compute_distance_matrix(q, g[:, :5])
    bad = g.copy()
    bad[3, 4] = np.inf
    with pytest.raises(ValueError, match=r"`g` contains NaN or infinite values, the first at index \(3, 4\)"):
        compute_distance_matrix(q, bad)
    with pytest.raises(TypeError, match="floating-point"):
        compute_distance_matrix(q.astype(np.int64), g)
    with pytest.raises(ValueError, match="empty"):
        compute_distance_matrix(q[:0], g)


@pytest.mark.parametrize(("k", "alpha", "times"), [(5, 3.0, 1), (10, 3.0, 2)])
def test_query_expansion_matches_fast_reid(k, alpha, times):
    ref = np.load(AQE_FIXTURE)
    q, g = average_query_expansion(ref["query_features"], ref["gallery_features"], k, alpha, times)
    np.testing.assert_allclose(q, ref[f"query_{k}_{alpha}_{times}"], atol=1e-5)
    np.testing.assert_allclose(g, ref[f"gallery_{k}_{alpha}_{times}"], atol=1e-5)
    tq, tg = average_query_expansion(
        torch.from_numpy(ref["query_features"]),
        torch.from_numpy(ref["gallery_features"]),
        k,
        alpha,
        times,
        chunk_size=7,
    )
    np.testing.assert_allclose(tq.numpy(), q, atol=1e-6)
    np.testing.assert_allclose(tg.numpy(), g, atol=1e-6)


def test_query_expansion_bad_input(features):
    q, g = features
    with pytest.raises(ValueError, match="top_k"):
        average_query_expansion(q, g, top_k=0)
    with pytest.raises(ValueError, match="features per row"):
        average_query_expansion(q, g[:, :3])


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "sqeuclidean"])
def test_gallery_index_backends_agree_with_brute_force(features, metric):
    q, g = features
    expected = brute_force(q, g, metric)
    order = np.argsort(expected, axis=1, kind="stable")[:, :6]
    for backend in ("torch", "faiss"):
        index = GalleryIndex(g, metric=metric, backend=backend)
        distances, indices = index.search(q, top_k=6)
        assert distances.shape == indices.shape == (23, 6)
        np.testing.assert_array_equal(indices, order)
        np.testing.assert_allclose(distances, np.take_along_axis(expected, order, axis=1), atol=1e-4)


def test_gallery_index_ids_incremental_adds_and_ties(features):
    q, g = features
    ids = [f"img_{i}.jpg" for i in range(len(g))]
    whole = GalleryIndex(g, ids=ids, chunk_size=5)
    grown = GalleryIndex(g[:20], ids=ids[:20])
    grown.add(g[20:], ids=ids[20:])
    assert len(grown) == len(g)
    d1, i1 = whole.search(q, 4)
    d2, i2 = grown.search(q, 4)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(d1, d2, rtol=1e-6)
    assert grown.lookup(i2)[0, 0] == ids[i2[0, 0]]
    # Duplicated gallery vectors tie exactly: the lower gallery index comes first.
    twins = GalleryIndex(np.stack([g[0], g[1], g[0], g[0]]), metric="euclidean")
    assert twins.search(g[:1], 4)[1][0].tolist()[:3] == [0, 2, 3]
    # top_k larger than the gallery is clipped.
    assert twins.search(q, 10)[1].shape == (23, 4)


def test_gallery_index_bad_input(features):
    q, g = features
    with pytest.raises(ValueError, match="backend"):
        GalleryIndex(g, backend="annoy")
    index = GalleryIndex(g)
    with pytest.raises(ValueError, match="features per row"):
        index.search(q[:, :4])
    with pytest.raises(ValueError, match="top_k"):
        index.search(q, top_k=0)
    with pytest.raises(ValueError, match="without `ids`"):
        index.lookup([0])
    with pytest.raises(ValueError, match="ids"):
        GalleryIndex(g, ids=["a"])
