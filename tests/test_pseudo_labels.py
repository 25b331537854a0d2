"""Pseudo-labels: the sparse Jaccard distance equals a dense implementation written from the
definition (fast-reid's / Cluster-Contrast's ``compute_jaccard_distance``), DBSCAN recovers
separated identities per group, and the label state round-trips."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from scipy import sparse
from sklearn.metrics import adjusted_rand_score

import hf_reid.training.pseudo_labels as pl_module
from hf_reid.training.pseudo_labels import (
    PseudoLabelState,
    assign_pseudo_labels,
    cluster_dbscan,
    jaccard_distance,
    pseudo_label_quality,
)


def dense_jaccard(features: np.ndarray, k1: int, k2: int) -> np.ndarray:
    """The definition, with dense N x N matrices (float64), step by step as the reference does it."""
    x = features.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sq = (x * x).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2 * x @ x.T
    num = len(x)
    rank = np.argsort(d2, axis=1, kind="stable")[:, :k1]  # faiss search with k = k1

    def reciprocal(i: int, k: int) -> np.ndarray:  # initial_rank[i, :k + 1] of a k1-column rank
        forward = rank[i, : k + 1]
        return forward[(rank[forward, : k + 1] == i).any(axis=1)]

    near = [reciprocal(i, k1) for i in range(num)]
    half = [reciprocal(i, int(np.around(k1 / 2))) for i in range(num)]
    v = np.zeros((num, num))
    for i in range(num):
        expanded = near[i]
        for c in near[i]:
            if len(np.intersect1d(half[c], near[i])) > 2 / 3 * len(half[c]):
                expanded = np.append(expanded, half[c])
        expanded = np.unique(expanded)
        weights = np.exp(-d2[i, expanded])
        v[i, expanded] = weights / weights.sum()
    if k2 != 1:
        v = v[rank[:, :k2]].mean(axis=1)
    overlap = np.minimum(v[:, None, :], v[None, :, :]).sum(axis=2)
    return np.maximum(1 - overlap / (2 - overlap), 0.0)


def blobs(num_ids: int, per_id: int, dim: int = 64, noise: float = 0.05, seed: int = 0):
    """Unit-norm identity centres plus small noise: well-separated identities."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_ids, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    ids = np.repeat(np.arange(num_ids), per_id)
    feats = centres[ids] + noise * rng.standard_normal((len(ids), dim))
    return feats.astype(np.float32), ids


def as_dense(distances: sparse.csr_matrix) -> np.ndarray:
    """Stored entries, and 1 where nothing is stored."""
    out = np.ones(distances.shape)
    coo = distances.tocoo()
    out[coo.row, coo.col] = coo.data
    return out


@pytest.mark.parametrize(("k1", "k2"), [(30, 6), (10, 4), (7, 1), (20, 6)])
def test_jaccard_matches_dense_definition(k1, k2):
    rng = np.random.default_rng(k1 + k2)
    feats = rng.standard_normal((60, 16)).astype(np.float32)
    expected = dense_jaccard(feats, k1, k2)
    out = jaccard_distance(feats, k1, k2)
    assert isinstance(out, sparse.csr_matrix) and out.dtype == np.float32 and out.shape == (60, 60)
    assert out.has_sorted_indices
    # Exactly the pairs below distance 1 are stored.
    coo = out.tocoo()
    np.testing.assert_array_equal(np.sort(coo.row * 60 + coo.col), np.flatnonzero(expected.ravel() < 1))
    np.testing.assert_allclose(as_dense(out), expected, atol=1e-6, rtol=0)


def test_clustered_data_small_chunks_and_cutoff(monkeypatch):
    feats, _ = blobs(12, 6, noise=0.3)
    expected = dense_jaccard(feats, 30, 6)
    # Many row chunks, Jaccard pieces and neighbour blocks.
    monkeypatch.setattr(pl_module, "_PAIR_BUDGET", 50)
    monkeypatch.setattr(pl_module, "_BLOCK_ELEMENTS", 300)
    monkeypatch.setattr(pl_module._NeighbourSource, "_PAIRS_PER_STEP", 7)
    small = jaccard_distance(feats.astype(np.float64), chunk_size=5)
    np.testing.assert_allclose(as_dense(small), expected, atol=1e-6, rtol=0)
    assert (small != small.T).nnz == 0  # one triangle computed, mirrored exactly
    cut = jaccard_distance(torch.from_numpy(feats), max_distance=0.6)
    assert cut.data.max() <= 0.6
    assert cut.nnz == int((expected <= 0.6).sum())
    np.testing.assert_allclose(cut.toarray()[expected <= 0.6], expected[expected <= 0.6], atol=1e-6)


def test_tiny_inputs():
    # Fewer items than k1, k2, and a single item.
    feats = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_allclose(as_dense(jaccard_distance(feats)), dense_jaccard(feats, 3, 3), atol=1e-6)
    one = jaccard_distance(feats[:1])
    assert one.shape == (1, 1) and one.nnz == 1 and abs(one.data[0]) < 1e-6


def test_duplicates_are_stored_as_explicit_zeros():
    feats, _ = blobs(6, 10)
    feats = np.concatenate([feats, feats[:3]])  # exact copies: distance 0, ties broken by index
    out = jaccard_distance(feats)
    np.testing.assert_allclose(as_dense(out), dense_jaccard(feats, 30, 6), atol=1e-6, rtol=0)
    assert 60 in out[0].indices and 0 in out[60].indices and out[0, 60] == 0.0
    labels = cluster_dbscan(out)
    np.testing.assert_array_equal(labels[60:], labels[:3])


def test_dbscan_recovers_identities_and_outliers():
    feats, ids = blobs(20, 10)
    # Directions orthogonal to every identity centre and to each other: nothing is near them. (A
    # random direction is not enough: its k2 nearest neighbours all come from the closest identity,
    # and the local query expansion pulls it into that cluster, in the reference too.)
    means = np.stack([feats[ids == i].mean(axis=0) for i in range(20)])
    isolated = np.linalg.svd(means, full_matrices=True)[2][-6:].astype(np.float32)
    all_feats = np.concatenate([feats, isolated])
    labels = cluster_dbscan(jaccard_distance(all_feats), eps=0.6, min_samples=4)
    assert labels.dtype == np.int64
    assert adjusted_rand_score(ids, labels[: len(ids)]) > 0.95
    assert (labels[len(ids) :] == -1).all()
    # Sparse input equals the dense matrix with "far" pairs at distance 1.
    dense = as_dense(jaccard_distance(all_feats)).astype(np.float32)
    np.testing.assert_array_equal(cluster_dbscan(dense), labels)


def test_groups_never_share_labels_and_are_deterministic():
    feats, ids = blobs(10, 10)
    # The same identities seen in two modalities (a shifted copy), plus a third group.
    feats2 = feats + 0.02
    third, ids3 = blobs(6, 10, seed=7)
    all_feats = np.concatenate([feats, feats2, third])
    groups = np.repeat([5, 2, 9], [len(feats), len(feats2), len(third)])
    true_ids = np.concatenate([ids, ids, ids3 + 100])
    labels, stats = assign_pseudo_labels(all_feats, groups)
    again, _ = assign_pseudo_labels(torch.from_numpy(all_feats), torch.from_numpy(groups))
    np.testing.assert_array_equal(labels, again)
    seen = [set(labels[(groups == g) & (labels >= 0)].tolist()) for g in (2, 5, 9)]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    assert sorted(set().union(*seen)) == list(range(sum(s["num_clusters"] for s in stats.values())))
    # Groups are numbered in increasing id order.
    assert max(seen[0]) < min(seen[1]) and max(seen[1]) < min(seen[2])
    assert stats[5] == {"num_samples": 100, "num_clusters": 10, "num_outliers": 0, "outlier_share": 0.0}
    quality = pseudo_label_quality(labels, true_ids, groups)
    assert set(quality) == {2, 5, 9}
    for group in quality.values():
        assert group["ari"] > 0.95 and group["nmi"] > 0.95 and group["num_outliers"] == 0


def test_quality_counts_outliers_as_singletons():
    true_ids = np.array([0, 0, 0, 1, 1, 1])
    labels = np.array([0, 0, -1, 1, 1, -1])
    q = pseudo_label_quality(labels, true_ids)[0]
    assert q["ari_clustered"] == 1.0 and q["nmi_clustered"] == pytest.approx(1.0)
    assert q["ari"] < 1.0
    assert q["num_clusters"] == 2 and q["num_outliers"] == 2 and q["outlier_share"] == pytest.approx(1 / 3)
    assert np.isnan(pseudo_label_quality([-1, -1], [0, 1])[0]["ari_clustered"])


def test_state_round_trip():
    state = PseudoLabelState()
    assert state.labels is None and state.num_clusters == 0
    empty = state.state_dict()
    state.update(np.array([0, 1, -1, 1, 2]), epoch=3)
    saved = state.state_dict()
    assert set(saved) == {"labels", "epoch"} and isinstance(saved["epoch"], int)
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    buffer.seek(0)
    restored = PseudoLabelState()
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.epoch == 3 and restored.labels.tolist() == [0, 1, -1, 1, 2]
    assert restored.num_clusters == 3 and restored.num_outliers == 1
    restored.load_state_dict(empty)
    assert restored.labels is None and restored.epoch == -1
    with pytest.raises(KeyError, match="epoch"):
        restored.load_state_dict({"labels": torch.zeros(2, dtype=torch.long)})
    with pytest.raises(ValueError, match="labels"):
        state.update([0, -2], epoch=1)


def test_bad_input_names_the_problem():
    feats = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    feats[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"`features` contains NaN"):
        jaccard_distance(feats)
    with pytest.raises(ValueError, match=r"`features` contains NaN"):
        assign_pseudo_labels(feats, np.zeros(10, dtype=np.int64))
    good = np.nan_to_num(feats)
    with pytest.raises(ValueError, match="`k1`"):
        jaccard_distance(good, k1=0)
    with pytest.raises(ValueError, match="`groups`"):
        assign_pseudo_labels(good, np.zeros(9, dtype=np.int64))
    with pytest.raises(ValueError, match="`eps`"):
        assign_pseudo_labels(good, eps=1.0)
    with pytest.raises(ValueError, match="square"):
        cluster_dbscan(sparse.csr_matrix((3, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="`eps`"):
        cluster_dbscan(jaccard_distance(good), eps=0)
