"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) in memory proportional to N * k, not N^2.

The numbers are those of the common public implementation (torchreid ``utils/rerank.py``, itself
Zhong's code adapted to distance matrices), to about 1e-6:

1. ``D`` is the (Q+G) x (Q+G) matrix ``[[q_q, q_g], [q_g^T, g_g]]``; it is squared elementwise
   (float32) and every column is divided by its maximum; row ``i`` of the result is
   ``OD[i, x] = D[x, i]^2 / max_y D[y, i]^2``.
2. ``R(i)``: the k-reciprocal neighbours among the ``k1 + 1`` nearest (``x`` in ``i``'s list and
   ``i`` in ``x``'s). For each ``c`` in ``R(i)``, its ``round(k1 / 2)``-reciprocal set ``R½(c)`` is
   added when more than 2/3 of it lies in ``R(i)``.
3. ``V[i, x] = exp(-OD[i, x])`` over the expanded set, normalised to sum 1; with ``k2 > 1``, row
   ``i`` is replaced by the mean of the rows of its ``k2`` nearest neighbours (local query
   expansion).
4. Jaccard distance ``1 - s / (2 - s)`` with ``s = sum_j min(V[i, j], V[x, j])``, and the result
   ``(1 - lambda) * jaccard + lambda * OD`` on the query x gallery block.

The reference materialises several dense N x N float32 matrices (35 GB each on MSMT17). Here only
the k-nearest-neighbour lists, the sparse ``V`` and one chunk of distance rows at a time are held;
the features variant never builds the distance matrices at all. Ties in distance are broken by
index (the reference's quicksort leaves them unspecified).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import torch

from ._gemm import squared_distances_into
from ._inputs import ArrayLike, check_all_finite, float_matrix, resolve_device
from ._select import smallest_k
from ._threads import num_workers, parallel_map, single_threaded
from .distance import Metric, check_metric, pairwise_block, prepare_features

__all__ = ["re_ranking", "re_ranking_features"]

_BLOCK_ELEMENTS = 1 << 23
"""Distance-matrix entries per chunk of rows (about 32 MB of float32)."""
_JACCARD_DENSE_COST = 1
"""Work per query-gallery entry in the Jaccard step, in ``num_workers`` units."""
_PAIR_BUDGET = 1 << 15
"""(query, gallery, shared neighbour) triples expanded at once in the Jaccard step, and entries at
once in the local query expansion: small enough for the temporaries to stay in cache."""


class _MatrixSource:
    """Squared distances read from the three given matrices (the reference's input)."""

    def __init__(self, q_g: torch.Tensor, q_q: torch.Tensor, g_g: torch.Tensor, device: torch.device):
        self.q_g, self.q_q, self.g_g = q_g, q_q, g_g
        self.num_query, self.num_gallery = q_g.shape
        self.num_all = self.num_query + self.num_gallery
        self.dtype = torch.promote_types(torch.promote_types(q_g.dtype, q_q.dtype), g_g.dtype)
        self.device = device

    def _square(self, values: torch.Tensor) -> torch.Tensor:
        # As the reference: square in the inputs' common dtype, then cast to float32.
        values = values.to(device=self.device, dtype=self.dtype)
        return (values * values).to(torch.float32)

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` of ``D^T`` squared; never crosses the query/gallery boundary."""
        nq = self.num_query
        if stop <= nq:
            block = torch.cat([_transposed(self.q_q[:, start:stop]), self.q_g[start:stop]], dim=1)
        else:
            columns = slice(start - nq, stop - nq)
            block = torch.cat([_transposed(self.q_g[:, columns]), _transposed(self.g_g[:, columns])], dim=1)
        return self._square(block)

    def pairs(self, i: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``D[x, i]^2`` for index vectors ``i`` and ``x`` (on ``self.device``)."""
        nq = self.num_query
        out = torch.empty(i.shape[0], dtype=self.dtype, device=self.device)
        i_q, x_q = i < nq, x < nq
        for mask, matrix, row, col in (
            (i_q & x_q, self.q_q, x, i),
            (i_q & ~x_q, self.q_g, i, x - nq),
            (~i_q & x_q, self.q_g, x, i - nq),
            (~i_q & ~x_q, self.g_g, x - nq, i - nq),
        ):
            if bool(mask.any()):
                rows, cols = row[mask].to(matrix.device), col[mask].to(matrix.device)
                out[mask] = matrix[rows, cols].to(device=self.device, dtype=self.dtype)
        return self._square(out)

    def query_gallery(self, start: int, stop: int) -> torch.Tensor:
        """Squared query-gallery distances of queries ``start:stop``."""
        return self._square(self.q_g[start:stop])

    def check_finite(self) -> None:
        """Raise naming the matrix that holds NaN or inf (called only once one was seen)."""
        for name, matrix in (("q_g_dist", self.q_g), ("q_q_dist", self.q_q), ("g_g_dist", self.g_g)):
            check_all_finite(matrix, name)


def _transposed(columns: torch.Tensor, tile: int = 64) -> torch.Tensor:
    """``columns.T`` as a contiguous tensor, copied in row tiles: a plain transposed copy of a
    column slice reads memory with a large stride and is several times slower."""
    out = torch.empty((columns.shape[1], columns.shape[0]), dtype=columns.dtype, device=columns.device)
    for start in range(0, columns.shape[0], tile):
        out[:, start : start + tile] = columns[start : start + tile].T
    return out


class _FeatureSource:
    """Squared distances computed on the fly from query and gallery features."""

    def __init__(self, query: torch.Tensor, gallery: torch.Tensor, metric: str, device: torch.device):
        self.metric = metric
        self.num_query, self.num_gallery = query.shape[0], gallery.shape[0]
        self.num_all = self.num_query + self.num_gallery
        self.features, self.sq_norms = prepare_features(torch.cat([query, gallery]).to(device), metric)
        self.dim = self.features.shape[1]
        self.device = device

    def _distances(self, rows: slice, columns: slice) -> torch.Tensor:
        a_sq = None if self.sq_norms is None else self.sq_norms[rows]
        b_sq = None if self.sq_norms is None else self.sq_norms[columns]
        block = pairwise_block(self.features[rows], a_sq, self.features[columns], b_sq, self.metric)
        return block.mul_(block).to(torch.float32)  # a fresh block: squared in place

    def rows(self, start: int, stop: int) -> torch.Tensor:
        return self._distances(slice(start, stop), slice(None))

    def pairs(self, i: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out = torch.empty(i.shape[0], dtype=torch.float32, device=self.device)
        step = max(1, _BLOCK_ELEMENTS // self.features.shape[1])
        for start in range(0, i.shape[0], step):
            a, b = i[start : start + step], x[start : start + step]
            dot = (self.features[a] * self.features[b]).sum(dim=1)
            if self.metric == "cosine":
                dist = 1.0 - dot
            else:
                dist = (self.sq_norms[a] + self.sq_norms[b] - 2.0 * dot).clamp_(min=0.0)
                if self.metric == "euclidean":
                    dist = dist.sqrt_()
            out[start : start + step] = (dist * dist).to(torch.float32)
        return out

    def query_gallery(self, start: int, stop: int) -> torch.Tensor:
        return self._distances(slice(start, stop), slice(self.num_query, None))

    def check_finite(self) -> None:
        """Features were checked on input; only overflow can produce non-finite distances."""


def re_ranking(
    q_g_dist: ArrayLike,
    q_q_dist: ArrayLike,
    g_g_dist: ArrayLike,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    *,
    top_k: int | None = None,
    chunk_size: int | None = None,
    device: str | torch.device | None = None,
) -> np.ndarray | torch.Tensor | tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]:
    """k-reciprocal re-ranking of a query-gallery distance matrix (torchreid's numbers).

    The given distances are squared inside (as in the reference), so pass plain distances (e.g.
    our ``"euclidean"``) to get Zhong et al.'s original squared-L2 formulation; torchreid's engine
    passes squared distances and so works on their fourth power.

    Args:
        q_g_dist: ``(Q, G)`` query-gallery distances.
        q_q_dist: ``(Q, Q)`` query-query distances.
        g_g_dist: ``(G, G)`` gallery-gallery distances. For large galleries, where this matrix does
            not fit in memory, use [`re_ranking_features`].
        k1, k2, lambda_value: the method's parameters (paper: 20, 6, 0.3).
        top_k: if given, return only the ``top_k`` smallest re-ranked distances per query and
            their gallery indices instead of the full matrix.
        chunk_size: rows of the (Q+G)-square distance matrix handled at once (default: about 8M
            entries per chunk).
        device: where to compute (default: the inputs' device, CPU for numpy).

    Returns:
        The ``(Q, G)`` float32 re-ranked distances (numpy if ``q_g_dist`` is numpy, else a tensor
        on ``device``), or ``(distances, indices)`` of shape ``(Q, top_k)`` with ``top_k``.
    """
    device = resolve_device(device, q_g_dist)
    # NaN / inf are detected while the matrices are read (see _MatrixSource.check_finite).
    q_g = float_matrix(q_g_dist, "q_g_dist", check_finite=False)
    q_q = float_matrix(q_q_dist, "q_q_dist", check_finite=False)
    g_g = float_matrix(g_g_dist, "g_g_dist", check_finite=False)
    num_query, num_gallery = q_g.shape
    for name, matrix, shape in (
        ("q_q_dist", q_q, (num_query, num_query)),
        ("g_g_dist", g_g, (num_gallery, num_gallery)),
    ):
        if tuple(matrix.shape) != shape:
            raise ValueError(
                f"`{name}` has shape {tuple(matrix.shape)} but `q_g_dist` of shape {tuple(q_g.shape)} "
                f"needs {shape}."
            )
    source = _MatrixSource(q_g, q_q, g_g, device)
    return _re_rank(
        source, k1, k2, lambda_value, top_k, chunk_size, as_numpy=isinstance(q_g_dist, np.ndarray)
    )


def re_ranking_features(
    query_features: ArrayLike,
    gallery_features: ArrayLike,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    *,
    metric: Metric = "euclidean",
    top_k: int | None = None,
    chunk_size: int | None = None,
    device: str | torch.device | None = None,
) -> np.ndarray | torch.Tensor | tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]:
    """k-reciprocal re-ranking straight from features, never building an N x N matrix.

    Gives the numbers of ``re_ranking(d(q, g), d(q, q), d(g, g), ...)`` with
    ``d = compute_distance_matrix(..., metric=metric)``. The default ``"euclidean"`` reproduces
    Zhong et al.'s feature-based code (squared L2 after the internal squaring); ``"sqeuclidean"``
    reproduces torchreid's engine with ``rerank=True``. Memory is O((Q+G) * (k1 * k2 + dim)) plus
    the ``(Q, G)`` output (or only ``(Q, top_k)`` with ``top_k``), so MSMT17 (11,659 x 82,161)
    runs in a few GB.

    Args:
        query_features: ``(Q, dim)`` features.
        gallery_features: ``(G, dim)`` features.
        k1, k2, lambda_value: see [`re_ranking`].
        metric: base distance, ``"euclidean"``, ``"sqeuclidean"`` or ``"cosine"``.
        top_k, chunk_size, device: see [`re_ranking`].

    Returns:
        As [`re_ranking`]: numpy if ``query_features`` is numpy, else a tensor on ``device``.
    """
    check_metric(metric)
    device = resolve_device(device, query_features, gallery_features)
    query = float_matrix(query_features, "query_features")
    gallery = float_matrix(gallery_features, "gallery_features")
    if query.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"`query_features` has {query.shape[1]} features per row but `gallery_features` has "
            f"{gallery.shape[1]}."
        )
    dtype = torch.promote_types(query.dtype, gallery.dtype)
    source = _FeatureSource(query.to(dtype), gallery.to(dtype), metric, device)
    return _re_rank(
        source, k1, k2, lambda_value, top_k, chunk_size, as_numpy=isinstance(query_features, np.ndarray)
    )


def _check_parameters(k1: int, k2: int, lambda_value: float, top_k: int | None, num_gallery: int) -> None:
    for name, value in (("k1", k1), ("k2", k2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    if not 0.0 <= float(lambda_value) <= 1.0:
        raise ValueError(f"`lambda_value` must be in [0, 1], got {lambda_value!r}.")
    if top_k is not None and not 1 <= top_k <= num_gallery:
        raise ValueError(f"`top_k` must be between 1 and the gallery size {num_gallery}, got {top_k!r}.")


def _row_blocks(source, chunk_size: int | None) -> Iterator[tuple[int, int]]:
    """Row ranges of ``D^T`` that never straddle the query/gallery boundary."""
    step = chunk_size or max(1, _BLOCK_ELEMENTS // source.num_all)
    for first, last in ((0, source.num_query), (source.num_query, source.num_all)):
        for start in range(first, last, step):
            yield start, min(start + step, last)


def _re_rank(
    source, k1: int, k2: int, lambda_value: float, top_k: int | None, chunk_size: int | None, as_numpy: bool
):
    # Every operation runs single-threaded on the calling thread, except the large independent
    # row blocks handed to parallel_map: under load, each multi-threaded torch operation can cost
    # a scheduler time slice (see _threads.py).
    source.max_threads = torch.get_num_threads()  # the user's setting caps the workers
    with single_threaded(source.device):
        return _re_rank_single_threaded(source, k1, k2, lambda_value, top_k, chunk_size, as_numpy)


def _re_rank_single_threaded(
    source, k1: int, k2: int, lambda_value: float, top_k: int | None, chunk_size: int | None, as_numpy: bool
):
    _check_parameters(k1, k2, lambda_value, top_k, source.num_gallery)
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"`chunk_size` must be positive, got {chunk_size}.")
    num_all, device = source.num_all, source.device
    k_fwd = min(k1 + 1, num_all)
    k_half = min(round(k1 / 2) + 1, num_all)  # round half to even, like np.around
    k_qe = min(k2, num_all)

    # Pass 1: column maxima and nearest-neighbour lists of the normalised squared distances. Row
    # blocks are independent: a few single-threaded workers share them (see _threads.py).
    col_max = torch.empty(num_all, dtype=torch.float32, device=device)
    knn = torch.empty((num_all, max(k_fwd, k_qe)), dtype=torch.long, device=device)
    blocks = list(_row_blocks(source, chunk_size))
    dim = getattr(source, "dim", 1)
    workers = num_workers(num_all * num_all * max(1, dim // 16), len(blocks), device, source.max_threads)

    def neighbours(bounds: tuple[int, int]) -> None:
        start, stop = bounds
        block = source.rows(start, stop)
        block_max = block.max(dim=1).values
        if not bool(torch.isfinite(block_max).all()):
            source.check_finite()
            raise ValueError(
                f"Squared distances overflow float32 near item {start} (query + gallery order); "
                "rescale the distances or features."
            )
        if bool((block_max <= 0).any()):
            row = start + int((block_max <= 0).nonzero()[0])
            raise ValueError(
                f"All distances from item {row} (query + gallery order) are zero; cannot normalise."
            )
        col_max[start:stop] = block_max
        knn[start:stop] = smallest_k(block / block_max[:, None], knn.shape[1])[1]

    if isinstance(source, _FeatureSource) and source.metric != "cosine":
        _symmetric_neighbours(source, col_max, knn, chunk_size, neighbours)
    else:
        parallel_map(neighbours, blocks, workers)
    weights_rows, weights_cols, weights = _k_reciprocal_weights(
        source, knn, col_max, k_fwd, k_half, chunk_size
    )
    crow = _compressed_rows(weights_rows, num_all)
    if k_qe > 1:
        crow, weights_cols, weights = _local_query_expansion(crow, weights_cols, weights, knn[:, :k_qe])
    return _jaccard_and_mix(source, crow, weights_cols, weights, col_max, lambda_value, top_k, as_numpy)


_SELECT_MARGIN = 8
"""Extra nearest neighbours selected on the raw squared distances (see _symmetric_neighbours)."""
_STRIP_ROWS = 512
"""Rows per strip of the symmetric pass: GEMMs this tall run near the CPU's peak."""


def _symmetric_neighbours(source, col_max: torch.Tensor, knn: torch.Tensor, chunk_size, exact_rows) -> None:
    """Pass 1 of the features variant on half of the (Q+G)^2 distances (Euclidean metrics).

    The squared distance matrix is symmetric, so strip ``I`` (rows ``I``, columns from ``I`` on)
    serves both its rows (row-wise selection) and the later rows (column-wise selection): half
    the matrix products of a row-by-row pass. Per row only the running maximum and the
    ``k + _SELECT_MARGIN`` smallest raw values ``a_sq + b_sq - 2 a.b`` are kept, merged strip by
    strip. The normalised distance is a monotone (non-decreasing) function of the raw value
    (clamp at 0, square root for "euclidean", square, cast, division by the row maximum), so the
    row maximum and the ``k`` nearest neighbours in (normalised distance, index) order follow from
    the candidates, except when the ``k``-th candidate ties with the largest one after the
    transform: such rows are recomputed by ``exact_rows`` (the row-by-row pass), as are none on
    real data. Equal to the row-by-row pass up to the rounding of the matrix products (a pair's
    distance is computed once instead of once per row).
    """
    num, device = source.num_all, source.device
    feats, sq = source.features, source.sq_norms
    k = knn.shape[1]
    width = min(k + _SELECT_MARGIN, num)
    best_vals = torch.full((num, width), float("inf"), dtype=feats.dtype, device=device)
    best_idx = torch.full((num, width), -1, dtype=torch.long, device=device)
    row_max = torch.full((num,), float("-inf"), dtype=feats.dtype, device=device)
    lock = threading.Lock()

    def merge(rows: torch.Tensor | slice, vals: torch.Tensor, idx: torch.Tensor) -> None:
        vals = torch.cat([best_vals[rows], vals], dim=1)
        idx = torch.cat([best_idx[rows], idx], dim=1)
        keep_vals, keep_pos = torch.topk(vals, width, dim=1, largest=False)
        best_vals[rows] = keep_vals
        best_idx[rows] = idx.gather(1, keep_pos)

    def strip(start: int) -> None:
        stop = min(start + step, num)
        raw = torch.empty((stop - start, num - start), dtype=feats.dtype, device=device)
        squared_distances_into(raw, feats[start:stop], sq[start:stop], feats[start:], sq[start:])
        own_max = raw.max(dim=1).values  # NaN propagates: one pass both checks and takes the maxima
        if bool(torch.isnan(own_max).any()):  # inf - inf: left to the exact pass, which reports it
            raw = raw.nan_to_num(nan=float("inf"))
            own_max = raw.max(dim=1).values
        own_vals, own_pos = torch.topk(raw, min(width, raw.shape[1]), dim=1, largest=False)
        tail = raw[:, stop - start :]  # columns after the strip: candidates for those rows
        tail_max = columns = None
        if tail.shape[1]:
            tail_max = _fold_columns(tail, torch.maximum)
            # Only entries below their column's current worst candidate can change it: after the
            # first strips a few per column, so they are picked out (``_entries_below``) instead
            # of selecting over every column. The limits only decrease, so reading them while
            # another worker merges gives a larger, still safe, limit.
            limit = best_vals[stop:, width - 1].clone()
            picked = _entries_below(tail, limit, width)
            if picked is None:  # early strips: most entries qualify
                columns = (_fold_columns(tail, torch.minimum) < limit).nonzero().flatten()
                sub = tail.index_select(1, columns).T.contiguous()
                tail_vals, tail_pos = torch.topk(sub, min(width, sub.shape[1]), dim=1, largest=False)
            else:
                columns, tail_vals, tail_pos = picked
                tail_pos = torch.where(tail_pos >= 0, tail_pos, tail_pos.new_tensor(-1 - start))
        with lock:
            merge(slice(start, stop), own_vals, own_pos + start)
            torch.maximum(row_max[start:stop], own_max, out=row_max[start:stop])
            if tail_max is not None:
                torch.maximum(row_max[stop:], tail_max, out=row_max[stop:])
            if columns is not None and columns.numel():
                merge(columns + stop, tail_vals, tail_pos + start)

    step = chunk_size or _STRIP_ROWS
    starts = range(0, num, step)
    workers = num_workers(num * num * max(1, source.dim // 16), len(starts), device, source.max_threads)
    parallel_map(strip, starts, workers)

    def transform(values: torch.Tensor) -> torch.Tensor:  # as pairwise_block + _FeatureSource
        values = values.clamp(min=0.0)
        if source.metric == "euclidean":
            values = values.sqrt()
        return (values * values).to(torch.float32)

    maxima = transform(row_max)
    usable = torch.isfinite(maxima) & (maxima > 0) & (best_idx >= 0).all(dim=1)
    normalised = transform(best_vals) / maxima[:, None]
    # (normalised distance, index) order: sort by index, then a stable sort on the distance.
    idx, perm = torch.sort(best_idx, dim=1)
    normalised = normalised.gather(1, perm)
    normalised, perm = torch.sort(normalised, dim=1, stable=True)
    idx = idx.gather(1, perm)
    if width < num:  # every other item's normalised distance is >= that of the largest candidate
        bound = transform(best_vals.max(dim=1).values) / maxima
        usable &= normalised[:, k - 1] < bound
    col_max.copy_(maxima)
    knn.copy_(idx[:, :k])
    for row in (~usable).nonzero().flatten().tolist():  # rare: ties at the boundary, overflow
        exact_rows((row, row + 1))


def _fold_columns(matrix: torch.Tensor, reduce) -> torch.Tensor:
    """``reduce`` (``torch.minimum`` or ``torch.maximum``) over every column, folded row by row: a
    reduction over dim 0 of a row-major matrix (``amax(dim=0)``) reads it with a large stride and
    was 5x slower (measured on a 512 x 23,000 strip: 15 ms for both folds against 71 ms for
    ``amax`` alone)."""
    out = matrix[0].clone()
    for row in matrix[1:]:
        reduce(out, row, out=out)
    return out


_SPARSE_ENTRIES = 1
"""Entries per column, on average and in units of the candidate width, up to which the symmetric
pass picks single entries instead of selecting over whole columns."""


def _entries_below(
    block: torch.Tensor, limit: torch.Tensor, width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """For every column ``c`` of ``block`` with entries below ``limit[c]``: up to ``width`` of
    them, smallest first, as ``(columns, values, rows)`` with ``values`` and ``rows`` of shape
    ``(len(columns), width)`` (padded with ``inf`` and -1). ``None`` when more than
    ``_SPARSE_ENTRIES * width`` entries per column qualify (the first strips): then a selection
    over whole columns is cheaper.

    Measured on a 512 x 93,820 block with about 3 entries per column below the limit (one
    thread): comparing, counting and finding them 90 ms, against 130 ms for only gathering half
    of the columns into a transposed copy (before any selection over them).
    """
    mask = torch.lt(block, limit)
    count = int(torch.count_nonzero(mask))
    if count == 0:
        empty = torch.empty(0, dtype=torch.long, device=block.device)
        return empty, block.new_empty((0, width)), empty.view(0, width)
    if count > _SPARSE_ENTRIES * width * block.shape[1]:
        return None
    rows, cols = mask.nonzero(as_tuple=True)
    values = block[rows, cols]
    # Order by (column, value): a stable sort on the value, then a stable sort on the column.
    order = torch.argsort(values, stable=True)
    order = order.index_select(0, torch.argsort(cols.index_select(0, order), stable=True))
    rows, cols, values = rows[order], cols[order], values[order]
    columns, counts = torch.unique_consecutive(cols, return_counts=True)
    rank = torch.arange(count, device=block.device) - torch.repeat_interleave(
        counts.cumsum(0) - counts, counts
    )
    keep = rank < width
    slot = torch.repeat_interleave(torch.arange(columns.numel(), device=block.device), counts)[keep]
    out_values = torch.full((columns.numel(), width), float("inf"), dtype=block.dtype, device=block.device)
    out_rows = torch.full((columns.numel(), width), -1, dtype=torch.long, device=block.device)
    out_values[slot, rank[keep]] = values[keep]
    out_rows[slot, rank[keep]] = rows[keep]
    return columns, out_values, out_rows


def _compressed_rows(rows: torch.Tensor, num_rows: int) -> torch.Tensor:
    """CSR row pointer of row-sorted COO entries."""
    counts = torch.bincount(rows, minlength=num_rows)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def _k_reciprocal_weights(
    source, knn: torch.Tensor, col_max: torch.Tensor, k_fwd: int, k_half: int, chunk_size
):
    """Sparse ``V`` as row-sorted COO (rows, cols, float32 values)."""
    num_all, device = source.num_all, source.device
    forward, half = knn[:, :k_fwd], knn[:, :k_half]
    everyone = torch.arange(num_all, device=device)

    # x is a half-reciprocal neighbour of c when each is in the other's k_half list.
    step = max(1, (1 << 22) // (k_half * k_half))
    half_mask = torch.empty((num_all, k_half), dtype=torch.bool, device=device)
    for start in range(0, num_all, step):
        rows = everyone[start : start + step]
        half_mask[start : start + step] = (half[half[rows]] == rows[:, None, None]).any(dim=-1)
    half_len = half_mask.sum(dim=1).to(torch.float64)

    # Membership in R(i) is looked up in a (rows x N) bitmap that is set and reset per chunk.
    step = chunk_size or max(1, min((1 << 22) // (k_fwd * k_fwd), (1 << 24) // num_all))
    in_set = torch.zeros((min(step, num_all), num_all), dtype=torch.bool, device=device)
    out_rows, out_cols, out_vals = [], [], []
    for start in range(0, num_all, step):
        rows = everyone[start : start + step]
        local = rows - start
        fwd = forward[rows]
        recip = (forward[fwd] == rows[:, None, None]).any(dim=-1)  # (C, k_fwd)
        set_rows, set_cols = local[:, None].expand_as(fwd)[recip], fwd[recip]
        in_set[set_rows, set_cols] = True
        cand_half, cand_mask = half[fwd], half_mask[fwd]  # (C, k_fwd, k_half)
        in_recip = in_set.view(-1)[local[:, None, None] * num_all + cand_half]
        in_set[set_rows, set_cols] = False
        overlap = (in_recip & cand_mask).sum(dim=-1).to(torch.float64)
        accept = recip & (overlap > 2.0 / 3 * half_len[fwd])
        sentinel = num_all
        members = torch.cat(
            [
                torch.where(recip, fwd, sentinel),
                torch.where(accept[..., None] & cand_mask, cand_half, sentinel).flatten(1),
            ],
            dim=1,
        )
        members = torch.sort(members, dim=1).values
        keep = members != sentinel
        keep[:, 1:] &= members[:, 1:] != members[:, :-1]
        row_idx = rows[:, None].expand_as(members)[keep]
        col_idx = members[keep]
        dist = source.pairs(row_idx, col_idx) / col_max[row_idx]
        weight = torch.exp(-dist)
        row_sum = torch.zeros(rows.shape[0], dtype=torch.float32, device=device)
        row_sum.index_add_(0, row_idx - start, weight)
        out_rows.append(row_idx)
        out_cols.append(col_idx)
        out_vals.append(weight / row_sum[row_idx - start])
    return torch.cat(out_rows), torch.cat(out_cols), torch.cat(out_vals)


def _local_query_expansion(
    crow: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, neighbours: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Replace each row of the CSR matrix by the mean of its neighbours' rows."""
    num_rows, k = neighbours.shape
    device = cols.device
    lengths = crow[1:] - crow[:-1]
    work = lengths[neighbours].sum(dim=1)
    new_cols, new_vals, new_counts = [], [], []
    for start, stop in _split_by_work(work, _PAIR_BUDGET):
        nb = neighbours[start:stop].flatten()
        nb_len = lengths[nb]
        owner = torch.arange(start, stop, device=device).repeat_interleave(k).repeat_interleave(nb_len)
        first = torch.repeat_interleave(crow[:-1][nb], nb_len)
        offset = torch.arange(int(nb_len.sum()), device=device) - torch.repeat_interleave(
            nb_len.cumsum(0) - nb_len, nb_len
        )
        entry = first + offset
        key = (owner - start) * num_rows + cols[entry]
        unique_key, inverse = torch.unique(key, return_inverse=True)
        summed = torch.zeros(unique_key.shape[0], dtype=torch.float64, device=device)
        summed.index_add_(0, inverse, vals[entry].to(torch.float64))
        new_cols.append(unique_key % num_rows)
        new_vals.append((summed / k).to(torch.float32))
        new_counts.append(torch.bincount(unique_key // num_rows, minlength=stop - start))
    counts = torch.cat(new_counts)
    new_crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    return new_crow, torch.cat(new_cols), torch.cat(new_vals)


def _split_by_work(work: torch.Tensor, budget: int) -> Iterator[tuple[int, int]]:
    """Consecutive ranges of rows (or entries) whose summed ``work`` stays under ``budget``
    (at least one row each)."""
    cumulative = work.cumsum(0).cpu().numpy()
    start, done = 0, 0
    total = len(cumulative)
    while start < total:
        stop = int(np.searchsorted(cumulative, done + budget, side="right"))
        stop = max(stop, start + 1)
        yield start, stop
        done = int(cumulative[stop - 1])
        start = stop


def _jaccard_and_mix(source, crow, cols, vals, col_max, lambda_value, top_k, as_numpy):
    """Jaccard distance of every query to every gallery item, mixed with the original distance."""
    nq, ng, num_all, device = source.num_query, source.num_gallery, source.num_all, source.device
    # Inverted index over gallery rows: for every column j, the gallery items x with V[x, j] > 0.
    g_start = int(crow[nq])
    g_cols, g_vals = cols[g_start:], vals[g_start:]
    g_rows = torch.repeat_interleave(torch.arange(ng, device=device), crow[nq + 1 :] - crow[nq:-1])
    order = torch.argsort(g_cols, stable=True)
    inv_rows, inv_vals = g_rows[order], g_vals[order]
    inv_ptr = _compressed_rows(g_cols[order], num_all)
    inv_len = inv_ptr[1:] - inv_ptr[:-1]

    inv_vals = inv_vals.to(torch.float64)  # min() is exact: same as widening each minimum
    q_cols, q_vals = cols[: int(crow[nq])], vals[: int(crow[nq])].to(torch.float64)
    q_lengths = crow[1 : nq + 1] - crow[:nq]
    q_owner = torch.repeat_interleave(torch.arange(nq, device=device), q_lengths)
    pair_counts = inv_len[q_cols]
    # Triple t of query entry e reads inverted-index entry t + entry_shift[e].
    pair_start = pair_counts.cumsum(0) - pair_counts
    entry_shift = inv_ptr[q_cols] - pair_start
    target_base = q_owner * ng

    if top_k is None:
        result = torch.empty((nq, ng), dtype=torch.float32, device="cpu" if as_numpy else device)
    else:
        result = torch.empty((nq, top_k), dtype=torch.float32, device="cpu" if as_numpy else device)
        result_idx = torch.empty((nq, top_k), dtype=torch.long, device=result.device)
    rows_per_block = max(1, _BLOCK_ELEMENTS // ng)
    # Each block also computes its query-gallery distances and the mix (coarse operations), so the
    # blocks are shared by the workers when the dense part is large.
    workers = num_workers(nq * ng * _JACCARD_DENSE_COST, nq, device, source.max_threads)
    if workers > 1:  # blocks enough for every worker to take several
        rows_per_block = max(1, min(rows_per_block, -(-nq // (4 * workers))))
    blocks = [(start, min(start + rows_per_block, nq)) for start in range(0, nq, rows_per_block)]

    def jaccard_block(bounds: tuple[int, int]) -> None:
        start, stop = bounds
        overlap = torch.zeros((stop - start) * ng, dtype=torch.float64, device=device)
        # Small pieces of work keep the expanded triples in cache, which is what makes this fast;
        # a piece is a range of (query, column) entries and may split a query.
        block_lo = int(crow[start])
        for piece_start, piece_stop in _split_by_work(pair_counts[block_lo : int(crow[stop])], _PAIR_BUDGET):
            lo, hi = block_lo + piece_start, block_lo + piece_stop
            counts = pair_counts[lo:hi]
            first, total = int(pair_start[lo]), int(counts.sum())
            # Expand every (query, shared column j) entry over the gallery items of column j.
            entry = torch.arange(first, first + total, device=device)
            entry += torch.repeat_interleave(entry_shift[lo:hi], counts, output_size=total)
            target = torch.repeat_interleave(target_base[lo:hi] - start * ng, counts, output_size=total)
            target += inv_rows.index_select(0, entry)
            shared = torch.minimum(
                torch.repeat_interleave(q_vals[lo:hi], counts, output_size=total),
                inv_vals.index_select(0, entry),
            )
            overlap.index_add_(0, target, shared)
        # final = (1 - o / (2 - o)) * (1 - lambda) + original / col_max * lambda, each operation
        # as the plain expression rounds it, in place: three block-sized buffers instead of nine
        # (each a fresh allocation the size of the block, and a pass over memory).
        jaccard = overlap.view(stop - start, ng).to(torch.float32)
        jaccard.div_(torch.rsub(jaccard, 2.0)).neg_().add_(1.0).mul_(1 - lambda_value)
        original = source.query_gallery(start, stop)
        original.div_(col_max[start:stop, None]).mul_(lambda_value)
        if top_k is None and result.device == jaccard.device:
            torch.add(jaccard, original, out=result[start:stop])
            return
        final = jaccard.add_(original)
        if top_k is None:
            result[start:stop] = final.to(result.device)
        else:
            top_vals, top_idx = smallest_k(final, top_k)
            result[start:stop] = top_vals.to(result.device)
            result_idx[start:stop] = top_idx.to(result.device)

    parallel_map(jaccard_block, blocks, workers)
    if top_k is None:
        return result.numpy() if as_numpy else result
    if as_numpy:
        return result.numpy(), result_idx.numpy()
    return result, result_idx
