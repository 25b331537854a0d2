"""compute_distance_matrix, average_query_expansion (fast-reid's aqe fixture) and GalleryIndex
(exact backends against brute force, approximate IVF / HNSW against exact, save / load)."""

from __future__ import annotations

import json
from pathlib import Path

import faiss  # noqa: F401  (the faiss backend is tested, not skipped: faiss-cpu is a dev dependency)
import numpy as np
import pytest
import torch

from hf_reid.metrics import (
    GalleryIndex,
    HNSWParams,
    IVFParams,
    average_query_expansion,
    compute_distance_matrix,
)

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


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
def test_block_written_in_place_is_bit_identical(metric):
    """compute_distance_matrix writes each block into its output (no temporaries); on torch the
    numbers must be those of the allocating formulas, bit for bit: re-ranking's symmetric pass
    and its row-by-row fallback rely on them."""
    from hf_reid.metrics.distance import pairwise_block, prepare_features

    rng = np.random.default_rng(1)
    a, b = (
        torch.from_numpy(rng.standard_normal(shape).astype(np.float32)) for shape in ((37, 64), (301, 64))
    )
    (a, a_sq), (b, b_sq) = prepare_features(a, metric), prepare_features(b, metric)
    if metric == "cosine":  # the allocating formulas these kernels used before writing in place
        expected = 1.0 - a @ b.T
    else:
        expected = torch.addmm(a_sq[:, None] + b_sq[None, :], a, b.T, beta=1.0, alpha=-2.0).clamp(min=0.0)
        expected = expected.sqrt() if metric == "euclidean" else expected
    out = torch.full((37, 301), float("nan"))
    assert pairwise_block(a, a_sq, b, b_sq, metric, out=out) is out
    assert torch.equal(out, expected)
    assert torch.equal(pairwise_block(a, a_sq, b, b_sq, metric), expected)


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
def test_numpy_blas_backend_matches_torch(monkeypatch, metric):
    """On AMD CPUs compute_distance_matrix runs its product on numpy's BLAS (``_gemm.py``); both
    backends give the brute-force distances, and an unknown backend name is refused."""
    rng = np.random.default_rng(2)
    x, y = (
        rng.standard_normal((150, 48)).astype(np.float32),
        rng.standard_normal((170, 48)).astype(np.float32),
    )
    expected = brute_force(x, y, metric)
    results = {}
    for backend in ("torch", "numpy"):
        monkeypatch.setenv("HF_REID_CPU_MATMUL", backend)
        out = compute_distance_matrix(x, y, metric, chunk_size=16)
        np.testing.assert_allclose(out, expected, atol=5e-5)
        results[backend] = out
    np.testing.assert_allclose(results["numpy"], results["torch"], atol=5e-5)
    monkeypatch.setenv("HF_REID_CPU_MATMUL", "mkl")
    with pytest.raises(ValueError, match="HF_REID_CPU_MATMUL='mkl'"):
        compute_distance_matrix(x, y, metric)


def test_numpy_blas_is_single_threaded_inside_the_kernels(monkeypatch):
    """Inside torch_threads(1) numpy's BLAS runs on one thread too (the workers of parallel_map
    must not each start a BLAS pool); the user's setting is back after."""
    from threadpoolctl import threadpool_info

    from hf_reid.metrics._threads import torch_threads

    monkeypatch.setenv("HF_REID_CPU_MATMUL", "numpy")

    def blas_threads() -> list[int]:
        return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]

    before = blas_threads()
    with torch_threads(1):
        assert blas_threads() and all(n == 1 for n in blas_threads())
    assert blas_threads() == before


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


# --------------------------------------------------------------------------- approximate backends, save / load


def clustered(identities: int = 60, views: int = 10, dim: int = 32, seed: int = 0):
    """Re-ID-like toy embeddings: ``identities`` centres with ``views`` noisy views each, plus one
    fresh view per identity as the queries."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((identities, dim)).astype(np.float32)
    gallery = np.repeat(centres, views, axis=0) + 0.35 * rng.standard_normal((identities * views, dim))
    queries = centres + 0.35 * rng.standard_normal((identities, dim))
    return gallery.astype(np.float32), queries.astype(np.float32)


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return sum(len(np.intersect1d(f, e)) for f, e in zip(found, exact, strict=True)) / exact.size


APPROXIMATE = [
    ("ivf", IVFParams(nlist=8, nprobe=3)),
    ("ivf", IVFParams(nlist=8, nprobe=3, encoding="sq8")),
    ("hnsw", HNSWParams(m=8, ef_search=64)),
]


@pytest.mark.parametrize(("backend", "params"), APPROXIMATE)
def test_approximate_backends_find_the_exact_neighbours(backend, params):
    g, q = clustered()
    ids = [f"person{i // 10:03d}_view{i % 10}.jpg" for i in range(len(g))]
    _, exact = GalleryIndex(g, metric="cosine").search(q, top_k=10)
    index = GalleryIndex(g, ids=ids, metric="cosine", backend=backend, params=params)
    assert index.approximate and len(index) == len(g) and index.params == params
    distances, found = index.search(q, top_k=10)
    assert found.shape == (len(q), 10) and found.dtype == np.int64
    assert recall(found, exact) >= 0.95
    # The returned distances are the cosine distances of the returned entries, nearest first.
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    true = 1.0 - np.einsum("qd,qkd->qk", qn, gn[found])
    np.testing.assert_allclose(distances, true, atol=0.02 if params == APPROXIMATE[1][1] else 1e-4)
    assert np.all(np.diff(distances, axis=1) >= -1e-6)
    # ids follow gallery positions: query i's nearest entries are views of person i.
    names = index.lookup(found)
    assert names[5, 0] == ids[found[5, 0]]
    assert np.mean([name.startswith(f"person{i:03d}") for i, row in enumerate(names) for name in row]) > 0.95


def test_ivf_scanning_every_cell_is_exact_and_deterministic():
    g, q = clustered(dim=16)
    for metric in ("cosine", "euclidean", "sqeuclidean"):
        exact_d, exact_i = GalleryIndex(g, metric=metric).search(q, top_k=7)
        index = GalleryIndex(g, metric=metric, backend="ivf", params=IVFParams(nlist=8, nprobe=2))
        d, i = index.search(q, top_k=7, nprobe=8)  # per-call override: every cell
        np.testing.assert_array_equal(i, exact_i)
        np.testing.assert_allclose(d, exact_d, rtol=1e-4, atol=1e-4)
        again = GalleryIndex(g, metric=metric, backend="ivf", params=IVFParams(nlist=8, nprobe=2))
        np.testing.assert_array_equal(again.search(q, top_k=7)[1], index.search(q, top_k=7)[1])
    # Fewer cells scanned than needed for top_k: rows are padded with -1 / inf, lookup gives None.
    small = GalleryIndex(g, ids=list(range(len(g))), backend="ivf", params=IVFParams(nlist=8, nprobe=1))
    d, i = small.search(q, top_k=300)
    assert (i == -1).any() and np.all(np.isinf(d[i == -1])) and np.all(np.isfinite(d[i >= 0]))
    assert small.lookup(i)[i == -1].tolist() == [None] * int((i == -1).sum())


def test_faiss_backends_leave_the_callers_array_alone():
    g, _ = clustered(identities=20)
    original = g.copy()
    for backend in ("faiss", "ivf", "hnsw"):
        GalleryIndex(g, backend=backend)
        np.testing.assert_array_equal(g, original)


def test_torch_gallery_chunks_merge_exactly():
    g, q = clustered(identities=30, dim=16)
    for metric in ("cosine", "euclidean"):
        whole_d, whole_i = GalleryIndex(g, metric=metric).search(q, top_k=12)
        chunked = GalleryIndex(g, metric=metric, chunk_size=7, gallery_chunk_size=37)
        d, i = chunked.search(q, top_k=12)
        np.testing.assert_array_equal(i, whole_i)
        np.testing.assert_allclose(d, whole_d, rtol=1e-6, atol=1e-6)
    # Exact ties in different gallery chunks (small integers: every distance is exact whatever the
    # block shapes): the lower gallery index comes first, as in one block.
    rng = np.random.default_rng(1)
    ints = rng.integers(-3, 4, (300, 8)).astype(np.float32)
    ints[[3, 150, 299]] = ints[0]
    ints[[40, 41, 260]] = ints[7]
    expected = np.argsort(brute_force(ints[:10], ints, "sqeuclidean"), axis=1, kind="stable")[:, :12]
    for metric in ("sqeuclidean", "euclidean"):
        chunked = GalleryIndex(ints, metric=metric, chunk_size=3, gallery_chunk_size=37)
        _, i = chunked.search(ints[:10], top_k=12)
        np.testing.assert_array_equal(i, expected)
        assert i[0, :4].tolist() == [0, 3, 150, 299] and i[7, :4].tolist() == [7, 40, 41, 260]


def test_nbytes_states_the_index_size():
    g, _ = clustered()
    size, dim = g.shape
    assert GalleryIndex(g).nbytes == size * dim * 4
    assert GalleryIndex(g, metric="euclidean").nbytes == size * (dim + 1) * 4
    assert GalleryIndex(g, backend="faiss").nbytes == size * dim * 4
    flat = GalleryIndex(g, backend="ivf", params=IVFParams(nlist=8)).nbytes
    sq8 = GalleryIndex(g, backend="ivf", params=IVFParams(nlist=8, encoding="sq8")).nbytes
    assert flat == 8 * dim * 4 + size * (dim * 4 + 8)
    assert sq8 < flat / 2
    assert GalleryIndex(g, backend="hnsw", params=HNSWParams(m=8)).nbytes > size * dim * 4


ROUND_TRIP = [
    ("torch", None, "cosine"),
    ("torch", None, "euclidean"),
    ("faiss", None, "sqeuclidean"),
    ("ivf", IVFParams(nlist=8, nprobe=2), "cosine"),
    ("ivf", IVFParams(nlist=8, encoding="sq8"), "euclidean"),
    ("hnsw", HNSWParams(m=8, ef_search=20), "cosine"),
]


@pytest.mark.parametrize(("backend", "params", "metric"), ROUND_TRIP)
def test_save_load_round_trip(tmp_path, backend, params, metric):
    g, q = clustered()
    ids = [f"img_{i}.jpg" if i % 2 else i for i in range(len(g))]
    index = GalleryIndex(g, ids=ids, metric=metric, backend=backend, params=params, chunk_size=9)
    d, i = index.search(q, top_k=10)
    folder = index.save(tmp_path / "index")
    loaded = GalleryIndex.load(folder)
    assert (loaded.backend, loaded.metric, loaded.params, loaded.dim, len(loaded), loaded.chunk_size) == (
        backend,
        metric,
        params,
        g.shape[1],
        len(g),
        9,
    )
    assert loaded.nbytes == index.nbytes
    assert loaded.ids.tolist() == ids
    d2, i2 = loaded.search(q, top_k=10)
    np.testing.assert_array_equal(i2, i)
    np.testing.assert_array_equal(d2, d)
    # The loaded index keeps growing like the original.
    index.add(q, ids=["q"] * len(q))
    loaded.add(q, ids=["q"] * len(q))
    np.testing.assert_array_equal(loaded.search(q, top_k=3)[1], index.search(q, top_k=3)[1])


@pytest.mark.parametrize("backend", ["torch", "ivf"])
def test_load_names_the_missing_or_corrupt_file(tmp_path, backend):
    g, _ = clustered(identities=20)
    folder = GalleryIndex(g, backend=backend).save(tmp_path / "index")
    data = folder / ("embeddings.safetensors" if backend == "torch" else "index.faiss")
    content = data.read_bytes()

    data.write_bytes(content[: len(content) // 2])
    with pytest.raises(ValueError, match=rf"{data.name} has \d+ bytes .* truncated"):
        GalleryIndex.load(folder)
    data.write_bytes(b"\x07" * len(content))  # same size, garbage
    with pytest.raises(ValueError, match=rf"{data.name} is not a readable"):
        GalleryIndex.load(folder)
    data.unlink()
    with pytest.raises(FileNotFoundError, match=data.name):
        GalleryIndex.load(folder)

    data.write_bytes(content)
    meta_file = folder / "gallery_index.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**meta, "count": meta["count"] + 1, "ids": None}))
    with pytest.raises(ValueError, match=rf"{data.name}.*\b{meta['count'] + 1}\b"):
        GalleryIndex.load(folder)
    meta_file.write_text("{not json")
    with pytest.raises(ValueError, match=r"gallery_index\.json is not valid JSON"):
        GalleryIndex.load(folder)
    meta_file.unlink()
    with pytest.raises(FileNotFoundError, match=r"gallery_index\.json"):
        GalleryIndex.load(folder)


def test_bad_parameters_are_named(tmp_path):
    g, q = clustered(identities=10)
    with pytest.raises(ValueError, match="`nprobe`"):
        IVFParams(nprobe=0)
    with pytest.raises(ValueError, match="`nlist`"):
        IVFParams(nlist=True)
    with pytest.raises(ValueError, match="encoding"):
        IVFParams(encoding="pq")
    with pytest.raises(ValueError, match="`train_size`"):
        IVFParams(nlist=64, train_size=10)
    with pytest.raises(ValueError, match="`m`"):
        HNSWParams(m=1)
    with pytest.raises(ValueError, match="`ef_search`"):
        HNSWParams(ef_search=0)
    with pytest.raises(TypeError, match="IVFParams"):
        GalleryIndex(g, backend="ivf", params=HNSWParams())
    with pytest.raises(TypeError, match="exact"):
        GalleryIndex(g, backend="faiss", params=IVFParams())
    with pytest.raises(ValueError, match="nlist=512"):
        GalleryIndex(g, backend="ivf", params=IVFParams(nlist=512))
    with pytest.raises(ValueError, match="`nprobe` applies to backend='ivf'"):
        GalleryIndex(g).search(q, nprobe=4)
    with pytest.raises(ValueError, match="`ef_search`"):
        GalleryIndex(g, backend="hnsw").search(q, ef_search=0)
    with pytest.raises(ValueError, match="gallery_chunk_size"):
        GalleryIndex(g, gallery_chunk_size=0)
    with pytest.raises(TypeError, match="id 1 is a PosixPath"):
        GalleryIndex(g[:2], ids=["a", Path("b.jpg")]).save(tmp_path / "index")
