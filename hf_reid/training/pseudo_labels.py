"""Pseudo-labels for unsupervised Re-ID: k-reciprocal Jaccard distance, DBSCAN, per-group labels.

The Cluster-Contrast recipe (and CCLNet, RLIM, ITKM after them) re-clusters the training set every
epoch: extract features, compute the k-reciprocal Jaccard distance among them
(``compute_jaccard_distance(k1=30, k2=6)``), run ``DBSCAN(eps=0.6, min_samples=4,
metric="precomputed")`` on it and drop the outliers for the epoch. ITKM clusters every scenario,
and in visible-infrared every modality, on its own (``docs/METHODS.md`` §3.3).

:func:`jaccard_distance` gives the numbers of the public implementation (fast-reid's and
Cluster-Contrast's ``compute_jaccard_distance``, both from OpenUnReID), which is the
gallery-gallery case of k-reciprocal re-ranking with these details:

1. squared L2 distances between the (here by default L2-normalised) features; the ``k1`` nearest
   neighbours of every item, itself included (the reference asks faiss for ``k1`` neighbours and
   then reads "``k1 + 1``" columns, so the forward list has ``k1`` entries);
2. ``R(i)``: the k-reciprocal neighbours among those (``x`` in ``i``'s list and ``i`` in ``x``'s);
   for each ``c`` in ``R(i)``, its set ``R½(c)`` over ``round(k1 / 2) + 1`` neighbours is added
   when more than 2/3 of it lies in ``R(i)``;
3. ``V[i, x] = softmax(-d²(i, x))`` over the expanded set (no normalisation of the distances);
   with ``k2 > 1`` row ``i`` is replaced by the mean of the rows of its ``k2`` nearest neighbours;
4. ``jaccard(i, x) = 1 - s / (2 - s)`` with ``s = sum_j min(V[i, j], V[x, j])``, negatives set to 0.

The reference holds dense N x N float32 matrices (``V``, its expansion, the distances: 10 GB each
at N = 50,000, two alive at once) and loops over rows in Python. Here only the nearest-neighbour
lists and their distances, the sparse ``V`` (the k-reciprocal sets and the local query expansion
are the re-ranking kernels of :mod:`hf_reid.metrics.rerank`) and the pairs with distance below 1
(those sharing a column of ``V``, or only those within ``max_distance``) are kept: memory
O(N * (k1 * k2 + dim)) plus the stored pairs, never N x N; the work is vectorised in chunks, and
the Jaccard step computes one triangle (the distance is symmetric). Ties in distance are broken by
index (faiss leaves them unspecified), so near-ties in float32 can make a few neighbour lists, and
the distances that depend on them, differ from the reference's; with the same lists the numbers
agree to about 1e-6. With fewer than ``k1`` items, every item is everyone's neighbour.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from scipy import sparse

from hf_reid.metrics._inputs import ArrayLike, as_tensor, float_matrix, int_vector, resolve_device
from hf_reid.metrics._select import smallest_k
from hf_reid.metrics._threads import single_threaded
from hf_reid.metrics.rerank import (
    _PAIR_BUDGET,
    _compressed_rows,
    _k_reciprocal_weights,
    _local_query_expansion,
    _split_by_work,
)

__all__ = [
    "PseudoLabelState",
    "assign_pseudo_labels",
    "cluster_dbscan",
    "jaccard_distance",
    "pseudo_label_quality",
]

_BLOCK_ELEMENTS = 1 << 23
"""Distance entries per chunk of rows in the nearest-neighbour search (about 32 MB of float32)."""
_JACCARD_ELEMENTS = 1 << 17
"""Entries of the dense per-chunk accumulator of the Jaccard step (1 MB of float64, plus as much
int64 scratch; rows per chunk = this / N): its random updates are several times faster while it
stays in the CPU cache."""


# --------------------------------------------------------------------------- Jaccard distance


def jaccard_distance(
    features: ArrayLike,
    k1: int = 30,
    k2: int = 6,
    *,
    normalize: bool = True,
    max_distance: float | None = None,
    chunk_size: int | None = None,
    device: str | torch.device | None = None,
) -> sparse.csr_matrix:
    """k-reciprocal Jaccard distance among N features, as a sparse matrix (never N x N dense).

    The numbers of fast-reid's / Cluster-Contrast's ``compute_jaccard_distance(features, k1, k2)``
    (see the module docstring) to about 1e-6, on the L2-normalised features by default (as
    Cluster-Contrast passes them; on normalised features squared L2 = 2 x cosine distance, so the
    neighbour lists are those of either). Two items that share no column of the sparse ``V`` are
    at distance exactly 1 and are not stored; every stored entry is below 1, the diagonal (about 0)
    included. Memory is O(N * (k1 * k2 + dim)) plus the output, which holds the pairs two hops apart
    in ``V`` (hundreds to thousands per item: 3,500 on 5,000 synthetic identities x 10 with the
    defaults): pass ``max_distance`` (e.g. the DBSCAN ``eps``: about 10 per item there) to keep only
    the pairs that matter.

    The nearest-neighbour search (an N x N x dim matrix product, in chunks) uses torch's current
    thread count; the rest runs on one CPU thread, which is faster on busy machines (see
    :func:`hf_reid.metrics._threads.single_threaded`). Deterministic on CPU.

    Args:
        features: ``(N, dim)`` features (numpy array or torch tensor, any float dtype).
        k1: neighbours of the k-reciprocal sets (Cluster-Contrast and CCLNet: 30; fast-reid: 20).
        k2: neighbours of the local query expansion (6; 1 turns it off).
        normalize: L2-normalise the features first (default, as the USL recipes do).
        max_distance: if given, store only the pairs with distance ``<= max_distance``.
        chunk_size: rows handled at once (default: about 8M distance entries, 32 MB, per chunk of
            the neighbour search; the Jaccard step takes at most this many and by default as many
            as fill a 1 MB accumulator).
        device: where to compute (default: the device of ``features``, CPU for numpy).

    Returns:
        ``scipy.sparse.csr_matrix`` of shape ``(N, N)``, float32, column indices sorted per row;
        entries that are not stored mean "distance 1 (or above ``max_distance``)". Pass it to
        :func:`cluster_dbscan`. Zero distances are stored as explicit zeros, so do not call
        ``eliminate_zeros()`` on it.

    Raises:
        ValueError: non-positive ``k1``/``k2``/``chunk_size``, a ``max_distance`` outside [0, 1],
            non-2-D or empty features, NaN or infinite features.
        TypeError: non-float features.
    """
    device = resolve_device(device, features)
    feats = float_matrix(features, "features").to(device)
    _check_positive_int(k1, "k1")
    _check_positive_int(k2, "k2")
    if chunk_size is not None:
        _check_positive_int(chunk_size, "chunk_size")
    if max_distance is not None and not 0.0 <= float(max_distance) <= 1.0:
        raise ValueError(f"`max_distance` must be in [0, 1] (or None), got {max_distance!r}.")
    return _jaccard_csr(feats, k1, k2, normalize, max_distance, chunk_size)


def _check_positive_int(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


def _jaccard_csr(
    feats: torch.Tensor,
    k1: int,
    k2: int,
    normalize: bool,
    max_distance: float | None,
    chunk_size: int | None,
) -> sparse.csr_matrix:
    """:func:`jaccard_distance` on checked input (a float tensor already on its device)."""
    num, device = feats.shape[0], feats.device
    if normalize:
        feats = torch.nn.functional.normalize(feats, p=2, dim=1)
    # The reference's neighbour lists: k1 columns (self first); the half lists and the query
    # expansion read the first round(k1 / 2) + 1 and k2 of them.
    k_fwd = min(k1, num)
    k_half = min(round(k1 / 2) + 1, k_fwd)  # round half to even, like np.around
    k_qe = min(k2, k_fwd)
    knn, knn_sq = _nearest_neighbours(feats, k_fwd, chunk_size)
    source = _NeighbourSource(feats, knn, knn_sq)
    with single_threaded(device):
        # V: softmax(-d²) over each expanded k-reciprocal set (no column-max normalisation).
        ones = torch.ones(num, dtype=torch.float32, device=device)
        rows, cols, vals = _k_reciprocal_weights(source, knn, ones, k_fwd, k_half, chunk_size)
        crow = _compressed_rows(rows, num)
        if k_qe > 1:
            crow, cols, vals = _local_query_expansion(crow, cols, vals, knn[:, :k_qe])
        indptr, indices, data = _sparse_jaccard(crow, cols, vals, num, max_distance, chunk_size)
    return sparse.csr_matrix((data, indices, indptr), shape=(num, num))


def _nearest_neighbours(
    feats: torch.Tensor, k: int, chunk_size: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest items of every item by squared L2 distance (self included): ``(N, k)``
    indices and their float32 squared distances, nearest first (ties by index).

    Each chunk of rows ranks ``|y|² - 2 x·y`` (one fused matrix product; ``|x|²`` is constant along
    a row and added to the ``k`` kept values only)."""
    num = feats.shape[0]
    sq_norms = feats.pow(2).sum(dim=1)
    knn = torch.empty((num, k), dtype=torch.long, device=feats.device)
    knn_sq = torch.empty((num, k), dtype=torch.float32, device=feats.device)
    step = chunk_size or max(1, _BLOCK_ELEMENTS // num)
    for start in range(0, num, step):
        stop = min(start + step, num)
        block = torch.addmm(sq_norms[None, :], feats[start:stop], feats.T, beta=1.0, alpha=-2.0)
        values, knn[start:stop] = smallest_k(block, k)
        knn_sq[start:stop] = (values + sq_norms[start:stop, None]).clamp_(min=0.0).float()
    return knn, knn_sq


class _NeighbourSource:
    """Squared L2 distances between items, for :func:`hf_reid.metrics.rerank._k_reciprocal_weights`.

    Most pairs it asks for (an item and a member of its expanded k-reciprocal set) are among the
    item's nearest neighbours, whose distances the neighbour search kept; only the others are
    computed from the features (a gather of two feature rows per pair)."""

    _PAIRS_PER_STEP = 1 << 14

    def __init__(self, feats: torch.Tensor, knn: torch.Tensor, knn_sq: torch.Tensor) -> None:
        self.features, self.knn, self.knn_sq = feats, knn, knn_sq
        self.sq_norms = feats.pow(2).sum(dim=1)
        self.num_all = feats.shape[0]
        self.device = feats.device

    def pairs(self, i: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``d²(i, x)`` (float32) for index vectors ``i`` and ``x``."""
        out = torch.empty(i.shape[0], dtype=torch.float32, device=self.device)
        for start in range(0, i.shape[0], self._PAIRS_PER_STEP):
            a, b = i[start : start + self._PAIRS_PER_STEP], x[start : start + self._PAIRS_PER_STEP]
            # At most one hit per row: a neighbour list holds distinct items.
            hit = self.knn.index_select(0, a) == b[:, None]
            found = hit.any(dim=1)
            piece = out[start : start + a.shape[0]]
            piece.masked_scatter_(found, self.knn_sq.index_select(0, a).masked_select(hit))
            if not bool(found.all()):
                a, b = a.masked_select(~found), b.masked_select(~found)
                dot = (self.features.index_select(0, a) * self.features.index_select(0, b)).sum(dim=1)
                sq = self.sq_norms.index_select(0, a) + self.sq_norms.index_select(0, b) - 2.0 * dot
                piece.masked_scatter_(~found, sq.clamp_(min=0.0).float())
        return out


def _sparse_jaccard(
    crow: torch.Tensor,
    cols: torch.Tensor,
    vals: torch.Tensor,
    num: int,
    max_distance: float | None,
    chunk_size: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR arrays of ``1 - s / (2 - s)``, ``s[i, x] = sum_j min(V[i, j], V[x, j])``, over the pairs
    with ``s > 0`` (those sharing a column of ``V``).

    Every entry ``(i, j)`` of ``V`` meets the entries ``(x, j)`` of column ``j`` (an inverted
    index) with ``x >= i``, giving a triple ``(i, x, min)``; the lower triangle is the mirror
    image (``s`` is symmetric), which halves the work. A chunk of rows sums its triples into a
    dense ``(rows, N)`` float64 accumulator; the distinct pairs touched are found without sorting
    the triples (each writes its position into a scratch array at its pair; the one position that
    survives per pair picks it), read out and reset, so each chunk costs O(its triples)."""
    device = cols.device
    owner = torch.repeat_interleave(torch.arange(num, device=device), crow[1:] - crow[:-1])
    order = torch.argsort(cols, stable=True)
    sorted_cols = cols[order]
    inv_rows, inv_vals = owner[order], vals[order]
    inv_ptr = _compressed_rows(sorted_cols, num)
    # Column lists are sorted by row, so the rows x >= i of column j start at entry (i, j) itself.
    first = torch.empty_like(order).scatter_(0, order, torch.arange(order.shape[0], device=device))
    del order, sorted_cols
    pair_counts = inv_ptr[cols + 1] - first
    # Triple t of V entry e reads inverted-index entry t + entry_shift[e].
    pair_start = pair_counts.cumsum(0) - pair_counts
    entry_shift = first - pair_start
    del first

    # On CPU, larger chunks than the default only slow this step down (the accumulator leaves the
    # cache); a GPU wants large ones.
    elements = _JACCARD_ELEMENTS if device.type == "cpu" else _JACCARD_ELEMENTS << 7
    rows_per_chunk = min(num, chunk_size or num, max(1, elements // num))
    accumulator = torch.zeros(rows_per_chunk * num, dtype=torch.float64, device=device)
    scratch = torch.empty(rows_per_chunk * num, dtype=torch.long, device=device)
    out_keys, out_dist = [], []
    # index_select / scatter_ / gather rather than tensor[index]: several times faster on CPU.
    for start in range(0, num, rows_per_chunk):
        stop = min(start + rows_per_chunk, num)
        chunk_lo, chunk_hi = int(crow[start]), int(crow[stop])
        targets = []
        for piece_start, piece_stop in _split_by_work(pair_counts[chunk_lo:chunk_hi], _PAIR_BUDGET):
            lo, hi = chunk_lo + piece_start, chunk_lo + piece_stop
            counts = pair_counts[lo:hi]
            total = int(counts.sum())
            if total == 0:
                continue
            entry = torch.arange(int(pair_start[lo]), int(pair_start[lo]) + total, device=device)
            entry += torch.repeat_interleave(entry_shift[lo:hi], counts, output_size=total)
            target = torch.repeat_interleave((owner[lo:hi] - start) * num, counts, output_size=total)
            target += inv_rows.index_select(0, entry)
            shared = torch.minimum(
                torch.repeat_interleave(vals[lo:hi], counts, output_size=total),
                inv_vals.index_select(0, entry),
            )
            accumulator.index_add_(0, target, shared.to(torch.float64))
            targets.append(target)
        if not targets:
            continue
        target = torch.cat(targets) if len(targets) > 1 else targets[0]
        position = torch.arange(target.shape[0], device=device)
        scratch.scatter_(0, target, position)
        pairs = target.masked_select(scratch.gather(0, target) == position)
        overlap = accumulator.gather(0, pairs)
        accumulator.index_fill_(0, pairs, 0.0)
        dist = (1.0 - overlap / (2.0 - overlap)).to(torch.float32).clamp_(min=0.0)
        if max_distance is not None:
            keep = dist <= max_distance
            pairs, dist = pairs.masked_select(keep), dist.masked_select(keep)
        pairs, order = torch.sort(pairs)
        out_keys.append(pairs + start * num)
        out_dist.append(dist.index_select(0, order))
    del accumulator, scratch
    keys = torch.cat(out_keys).cpu().numpy() if out_keys else np.empty(0, dtype=np.int64)
    upper_data = torch.cat(out_dist).cpu().numpy() if out_dist else np.empty(0, dtype=np.float32)
    return _symmetric_csr(keys // num, keys % num, upper_data, num)


def _symmetric_csr(
    rows: np.ndarray, cols: np.ndarray, data: np.ndarray, num: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR arrays (column indices sorted per row) of the symmetric matrix whose upper triangle,
    diagonal included, is given as COO entries sorted by (row, column). Explicit zeros are kept."""
    index_dtype = np.int32 if 2 * len(data) < 2**31 and num < 2**31 else np.int64
    upper_ptr = np.zeros(num + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=num), out=upper_ptr[1:])
    strict = rows != cols
    # The strict lower triangle is the transpose of the strict upper one: scipy's CSR -> CSC
    # conversion is a counting sort (linear time, explicit zeros kept, rows sorted per column).
    strict_rows = rows[strict]
    strict_ptr = np.zeros(num + 1, dtype=np.int64)
    np.cumsum(np.bincount(strict_rows, minlength=num), out=strict_ptr[1:])
    lower = sparse.csr_matrix(
        (data[strict], cols[strict].astype(index_dtype), strict_ptr), shape=(num, num)
    ).tocsc()
    lower_ptr, lower_cols, lower_data = lower.indptr.astype(np.int64), lower.indices, lower.data
    # Row r is its lower entries (columns < r) followed by its upper entries (columns >= r).
    indptr = lower_ptr + upper_ptr
    indices = np.empty(len(lower_data) + len(data), dtype=index_dtype)
    values = np.empty(len(indices), dtype=np.float32)
    lower_owner = np.repeat(np.arange(num), np.diff(lower_ptr))
    at = np.arange(len(lower_data)) + upper_ptr[lower_owner]
    indices[at], values[at] = lower_cols, lower_data
    at = np.arange(len(data)) + lower_ptr[1:][rows]
    indices[at], values[at] = cols, data
    return indptr.astype(index_dtype), indices, values


# --------------------------------------------------------------------------- clustering


def cluster_dbscan(
    jaccard: sparse.spmatrix | sparse.sparray | np.ndarray, eps: float = 0.6, min_samples: int = 4
) -> np.ndarray:
    """DBSCAN (scikit-learn, ``metric="precomputed"``) on a distance matrix, e.g. from
    :func:`jaccard_distance`.

    With a sparse matrix, the pairs that are not stored are "far" (never neighbours, whatever
    ``eps``: for :func:`jaccard_distance` output that is exact for ``eps < 1``) and stored zeros are
    distance 0; each item is its own neighbour as in scikit-learn. The rows are sorted by
    distance here (vectorised), which scikit-learn would otherwise do row by row in Python.

    Args:
        jaccard: ``(N, N)`` distances: a scipy sparse matrix/array, or a dense array.
        eps: neighbourhood radius (Cluster-Contrast: 0.6).
        min_samples: neighbours (self included) that make a core point (4).

    Returns:
        ``(N,)`` int64 labels ``0 .. num_clusters - 1`` in order of discovery, ``-1`` for outliers.

    Raises:
        ValueError: a non-square matrix, NaN or negative distances, ``eps <= 0`` or
            ``min_samples < 1``.
    """
    from sklearn.cluster import DBSCAN

    if not float(eps) > 0.0:
        raise ValueError(f"`eps` must be positive, got {eps!r}.")
    _check_positive_int(min_samples, "min_samples")
    if sparse.issparse(jaccard):
        graph = sparse.csr_matrix(jaccard)  # no copy for CSR input: _sorted_by_distance copies
        values = graph.data
    else:
        graph = np.asarray(jaccard)
        if not np.issubdtype(graph.dtype, np.floating):
            raise TypeError(f"`jaccard` must hold floating-point distances, got {graph.dtype}.")
        values = graph
    if graph.ndim != 2 or graph.shape[0] != graph.shape[1]:
        raise ValueError(f"`jaccard` must be a square (N, N) distance matrix, got shape {graph.shape}.")
    if graph.shape[0] == 0:
        return np.empty(0, dtype=np.int64)
    if values.size and not np.isfinite(values).all():
        raise ValueError("`jaccard` contains NaN or infinite distances; recompute it from finite features.")
    if values.size and values.min() < 0:
        raise ValueError(
            f"`jaccard` contains negative distances (min {values.min()}); distances must be >= 0."
        )
    if sparse.issparse(graph):
        graph = _sorted_by_distance(graph)
    labels = DBSCAN(eps=float(eps), min_samples=int(min_samples), metric="precomputed").fit_predict(graph)
    return labels.astype(np.int64)


def _sorted_by_distance(graph: sparse.csr_matrix) -> sparse.csr_matrix:
    """``graph`` with the diagonal stored explicitly (its value, else 0: DBSCAN's ``setdiag``, a
    point is its own neighbour) and each row's entries ordered by value, as scikit-learn wants."""
    graph = graph.copy()
    graph.sum_duplicates()
    coo = graph.tocoo()
    num = graph.shape[0]
    off_diagonal = coo.row != coo.col
    everyone = np.arange(num)
    rows = np.concatenate([coo.row[off_diagonal], everyone])
    cols = np.concatenate([coo.col[off_diagonal], everyone])
    data = np.concatenate([coo.data[off_diagonal], graph.diagonal().astype(coo.data.dtype)])
    order = np.lexsort((cols, data, rows))
    indptr = np.zeros(num + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=num), out=indptr[1:])
    return sparse.csr_matrix((data[order], cols[order], indptr), shape=graph.shape)


def assign_pseudo_labels(
    features: ArrayLike,
    groups: ArrayLike | None = None,
    *,
    k1: int = 30,
    k2: int = 6,
    eps: float = 0.6,
    min_samples: int = 4,
    normalize: bool = True,
    chunk_size: int | None = None,
    device: str | torch.device | None = None,
) -> tuple[np.ndarray, dict[int, dict[str, float]]]:
    """Cluster every group on its own (Jaccard distance + DBSCAN) and number the clusters globally.

    A group is whatever must never share an identity: a scenario (dataset), or a (scenario,
    modality) pair for visible-infrared, as ITKM and CCLNet cluster them. Groups are processed in
    increasing id order and group ``g``'s clusters get the labels after those of the groups
    before it, so the labels are ``0 .. total_clusters - 1`` and never shared across groups.
    Deterministic on CPU.

    Args:
        features: ``(N, dim)`` features of all training samples.
        groups: ``(N,)`` integer group id per sample (any integers); ``None``: one group (id 0).
        k1, k2: see :func:`jaccard_distance`.
        eps, min_samples: see :func:`cluster_dbscan` (``eps`` in (0, 1)).
        normalize, chunk_size, device: see :func:`jaccard_distance`.

    Returns:
        ``(labels, stats)``: ``(N,)`` int64 labels, ``-1`` for outliers (drop them for the epoch);
        ``stats[group] = {"num_samples", "num_clusters", "num_outliers", "outlier_share"}``.

    Raises:
        ValueError: NaN/infinite or empty features, ``groups`` of the wrong length, bad parameters.
        TypeError: non-float features or non-integer groups.
    """
    device = resolve_device(device, features)
    feats = float_matrix(features, "features").to(device)
    num = feats.shape[0]
    group_ids = _groups(groups, num)
    for value, name in ((k1, "k1"), (k2, "k2"), (min_samples, "min_samples")):
        _check_positive_int(value, name)
    if chunk_size is not None:
        _check_positive_int(chunk_size, "chunk_size")
    if not 0.0 < float(eps) < 1.0:
        # Unstored pairs (distance 1) are never neighbours, which is exact only for eps < 1.
        raise ValueError(f"`eps` must be in (0, 1) for Jaccard distances, got {eps!r}.")

    labels = np.full(num, -1, dtype=np.int64)
    stats: dict[int, dict[str, float]] = {}
    offset = 0
    for group in np.unique(group_ids):
        members = np.flatnonzero(group_ids == group)
        index = torch.from_numpy(members).to(device)
        # Pairs beyond eps never matter to DBSCAN, so they are not kept.
        distances = _jaccard_csr(feats[index], k1, k2, normalize, float(eps), chunk_size)
        group_labels = cluster_dbscan(distances, eps=eps, min_samples=min_samples)
        num_clusters = int(group_labels.max()) + 1 if group_labels.size else 0
        clustered = group_labels >= 0
        labels[members[clustered]] = group_labels[clustered] + offset
        offset += num_clusters
        num_outliers = int((~clustered).sum())
        stats[int(group)] = {
            "num_samples": len(members),
            "num_clusters": num_clusters,
            "num_outliers": num_outliers,
            "outlier_share": num_outliers / len(members),
        }
    return labels, stats


def _groups(groups: ArrayLike | None, num: int) -> np.ndarray:
    if groups is None:
        return np.zeros(num, dtype=np.int64)
    return int_vector(groups, "groups", length=num).cpu().numpy()


# --------------------------------------------------------------------------- quality (logging only)


def pseudo_label_quality(
    labels: ArrayLike, true_ids: ArrayLike, groups: ArrayLike | None = None
) -> dict[int, dict[str, float]]:
    """How well the pseudo-labels of each group match the true identities: for logs and plots.

    Uses the ground truth, so it must never feed training (no label selection, no early stopping
    on it in an unsupervised run).

    Outliers (label -1) are counted two ways: ``nmi`` and ``ari`` treat every outlier as a
    singleton cluster of its own (the partition training effectively sees: outliers join no
    cluster), so many outliers lower them; ``nmi_clustered`` and ``ari_clustered`` score only the
    samples that were clustered (NaN when none was).

    Args:
        labels: ``(N,)`` pseudo-labels, ``-1`` for outliers.
        true_ids: ``(N,)`` true identities.
        groups: ``(N,)`` group ids as given to :func:`assign_pseudo_labels`; ``None``: one group 0.

    Returns:
        ``{group: {"nmi", "ari", "nmi_clustered", "ari_clustered", "num_samples", "num_true_ids",
        "num_clusters", "num_outliers", "outlier_share"}}`` with plain Python numbers.

    Raises:
        ValueError: arrays of different lengths or not 1-D. TypeError: non-integer arrays.
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    pseudo = int_vector(labels, "labels").cpu().numpy()
    truth = int_vector(true_ids, "true_ids", length=pseudo.shape[0]).cpu().numpy()
    group_ids = _groups(groups, pseudo.shape[0])
    result: dict[int, dict[str, float]] = {}
    for group in np.unique(group_ids):
        members = group_ids == group
        pred, true = pseudo[members], truth[members]
        outlier = pred < 0
        singletons = pred.copy()
        if outlier.any():
            singletons[outlier] = pred.max(initial=-1) + 1 + np.arange(int(outlier.sum()))
        clustered = ~outlier
        if clustered.any():
            nmi_clustered = float(normalized_mutual_info_score(true[clustered], pred[clustered]))
            ari_clustered = float(adjusted_rand_score(true[clustered], pred[clustered]))
        else:
            nmi_clustered = ari_clustered = float("nan")
        result[int(group)] = {
            "nmi": float(normalized_mutual_info_score(true, singletons)),
            "ari": float(adjusted_rand_score(true, singletons)),
            "nmi_clustered": nmi_clustered,
            "ari_clustered": ari_clustered,
            "num_samples": int(members.sum()),
            "num_true_ids": len(np.unique(true)),
            "num_clusters": len(np.unique(pred[clustered])),
            "num_outliers": int(outlier.sum()),
            "outlier_share": float(outlier.mean()),
        }
    return result


# --------------------------------------------------------------------------- state


class PseudoLabelState:
    """The current pseudo-labels and the epoch they were made at: recipe state to checkpoint.

    ``state_dict()`` holds only a tensor and ints, so it loads with ``torch.load(...,
    weights_only=True)`` and needs no pickled objects. Before the first clustering ``labels`` is
    ``None`` and ``epoch`` is -1.
    """

    def __init__(self, labels: ArrayLike | None = None, epoch: int = -1) -> None:
        self.labels: torch.Tensor | None = None
        self.epoch = -1
        if labels is not None:
            self.update(labels, epoch)

    def update(self, labels: ArrayLike, epoch: int) -> None:
        """Replace the labels (``(N,)`` integers, -1 for outliers) made at ``epoch`` (>= 0)."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"`epoch` must be a non-negative integer, got {epoch!r}.")
        tensor = int_vector(labels, "labels")
        if tensor.numel() and int(tensor.min()) < -1:
            raise ValueError(f"`labels` must be >= -1 (-1 marks outliers), got {int(tensor.min())}.")
        self.labels = tensor.detach().to("cpu", torch.long).clone()
        self.epoch = int(epoch)

    @property
    def num_clusters(self) -> int:
        """Distinct non-negative labels (0 before the first clustering)."""
        if self.labels is None:
            return 0
        return int(torch.unique(self.labels[self.labels >= 0]).numel())

    @property
    def num_outliers(self) -> int:
        """Samples labelled -1 (0 before the first clustering)."""
        return 0 if self.labels is None else int((self.labels < 0).sum())

    def state_dict(self) -> dict[str, Any]:
        """``{"labels": int64 tensor (empty before the first clustering), "epoch": int}``."""
        labels = self.labels if self.labels is not None else torch.empty(0, dtype=torch.long)
        return {"labels": labels.clone(), "epoch": self.epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict` output; raises naming a missing or malformed entry."""
        missing = {"labels", "epoch"} - set(state)
        if missing:
            raise KeyError(f"PseudoLabelState state is missing {sorted(missing)}; got keys {sorted(state)}.")
        epoch = state["epoch"]
        if isinstance(epoch, torch.Tensor) and epoch.numel() == 1:
            epoch = int(epoch)
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)):
            raise ValueError(f"PseudoLabelState `epoch` must be an integer, got {epoch!r}.")
        labels = as_tensor(state["labels"], "labels")
        if epoch < 0:
            self.labels, self.epoch = None, -1
            return
        self.update(labels, int(epoch))

    def __repr__(self) -> str:
        if self.labels is None:
            return "PseudoLabelState(no labels yet)"
        return (
            f"PseudoLabelState(epoch={self.epoch}, samples={self.labels.numel()}, "
            f"clusters={self.num_clusters}, outliers={self.num_outliers})"
        )
