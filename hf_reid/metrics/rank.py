"""CMC, mAP and mINP under the Market-1501 protocol, exact and in bounded memory.

The standard evaluators (torchreid, fast-reid, CLIP-ReID) argsort the whole query x gallery
distance matrix and walk every ranked list in Python. Here no ranked list is ever built: the
1-based position of every positive in a query's filtered ranked list is

    position(p) = #positives before p + #valid negatives before p + 1,

where "before" orders gallery items by (distance, gallery index). That order is a stable sort, so
ties are broken deterministically by gallery index. Counting the negatives before each positive
takes one batched ``searchsorted`` of the gallery distances into the query's (few) sorted positive
distances plus a histogram, per chunk of queries, on CPU or GPU. AP, CMC and INP follow exactly
from those positions, so the numbers equal the reference evaluator's (up to float rounding) when
there are no ties, and equal its numbers with a stable sort when there are.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from ._inputs import ArrayLike, check_all_finite, float_matrix, int_vector, resolve_device
from ._threads import num_workers, parallel_map, single_threaded

logger = logging.getLogger(__name__)

__all__ = ["RankResult", "evaluate_rank"]

NUM_SINGLE_SHOT_REPEATS = 10
"""Random gallery samplings averaged by the CUHK03 single-gallery-shot CMC (as in the original
protocol and every reference implementation)."""

_CHUNK_ELEMENTS = 1 << 20
"""Query x gallery entries processed at once when ``chunk_size`` is not given (about 40 MB of
temporaries; small chunks stay in cache and are faster on CPU than large ones)."""


@dataclass(frozen=True, eq=False)
class RankResult:
    """Ranking metrics of one evaluation.

    Attributes:
        cmc: CMC curve, ``cmc[k]`` = fraction of valid queries whose first true match is within
            the top ``k + 1`` (length ``max_rank``; float64 in [0, 1]).
        mAP: mean over valid queries of the non-interpolated average precision.
        mINP: mean over valid queries of the inverse negative penalty (number of true matches /
            position of the hardest one), as defined by Ye et al. (AGW, TPAMI 2021).
        num_valid_queries: queries with at least one true match left in the gallery.
        num_invalid_queries: queries skipped because the gallery had no true match for them.
    """

    cmc: np.ndarray
    mAP: float
    mINP: float
    num_valid_queries: int
    num_invalid_queries: int

    def to_dict(self, ranks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
        """``{"rank-1": ..., "rank-5": ..., "rank-10": ..., "mAP": ..., "mINP": ...}`` (floats
        in [0, 1]); ranks beyond ``len(cmc)`` are left out."""
        result = {f"rank-{rank}": float(self.cmc[rank - 1]) for rank in ranks if 1 <= rank <= len(self.cmc)}
        result["mAP"] = float(self.mAP)
        result["mINP"] = float(self.mINP)
        return result


def evaluate_rank(
    distmat: ArrayLike,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike | None,
    g_camids: ArrayLike | None,
    max_rank: int = 50,
    *,
    cross_camera: bool = True,
    single_gallery_shot: bool = False,
    seed: int = 0,
    q_clothes_ids: ArrayLike | None = None,
    g_clothes_ids: ArrayLike | None = None,
    clothes_changing: bool = False,
    camera_groups: Mapping[int, int] | ArrayLike | None = None,
    chunk_size: int | None = None,
    device: str | torch.device | None = None,
) -> RankResult:
    """Evaluate a query x gallery distance matrix with the Market-1501 protocol.

    For every query, gallery entries with the query's pid *and* camera are junk: they are removed
    from its ranked list (same-camera entries of other identities stay as negatives). Queries with
    no true match left are skipped and counted in ``num_invalid_queries``; CMC, mAP and mINP are
    averaged over the others. Ties in distance are broken by gallery index (a stable sort).

    Args:
        distmat: ``(num_query, num_gallery)`` distances, smaller = more similar; numpy array or
            torch tensor on any device, any float dtype. NaN and inf are rejected.
        q_pids, g_pids: integer identities of queries and gallery entries.
        q_camids, g_camids: integer cameras; may be ``None`` only with ``cross_camera=False``.
        max_rank: length of the returned CMC curve. It may exceed the gallery size: the curve then
            stays at its final value (1.0: every valid query has its first match somewhere).
        cross_camera: ``True`` (standard): same pid + same camera entries are junk. ``False``, for
            data without camera labels: **nothing is excluded**, every gallery entry with the
            query's pid counts as a true match, including ones from the query's own camera. Query
            and gallery are separate image sets, so the query image itself is never in the
            gallery; if your gallery does contain copies of the query images, remove them first
            (or give each query its own camera id and use ``cross_camera=True``).
        single_gallery_shot: CUHK03 classic protocol: the CMC is averaged over 10 random
            samplings of one gallery image per identity (from the query's filtered gallery). mAP
            and mINP are computed on the full filtered gallery, as in the reference. Reproducible
            for a given ``seed``, independently of ``chunk_size`` and ``device``.
        seed: seed of the single-gallery-shot sampling.
        q_clothes_ids, g_clothes_ids: outfit ids (non-negative), needed by ``clothes_changing``
            and ignored otherwise.
        clothes_changing: clothes-changing protocol (LTCC, PRCC): gallery entries with the
            query's pid and the query's clothes id are also junk.
        camera_groups: optional map camid -> group (a dict, or a 1-D array indexed by camid).
            "Same camera" in the junk rule is then decided on groups, e.g. SYSU-MM01's rule that
            camera-3 queries ignore same-pid camera-2 images is ``{0: 0, 1: 1, 2: 1, 3: 3, 4: 4,
            5: 5}`` on 0-based camids.
        chunk_size: queries processed at once (default: about 1M matrix entries per chunk).
        device: where to compute; defaults to ``distmat``'s device (CPU for numpy).

    Returns:
        A [`RankResult`].

    Raises:
        ValueError: on mismatched lengths, empty inputs, NaN/inf distances, or when no query has
            a true match in the gallery.
        TypeError: on non-float distances or non-integer ids.
    """
    dist = float_matrix(distmat, "distmat", check_finite=False, widen=False)
    num_query, num_gallery = dist.shape
    if isinstance(max_rank, bool) or not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise ValueError(f"`max_rank` must be a positive integer, got {max_rank!r}.")
    max_rank = int(max_rank)
    device = resolve_device(device, distmat)

    q_pid = int_vector(q_pids, "q_pids", num_query).to(device)
    g_pid = int_vector(g_pids, "g_pids", num_gallery).to(device)
    q_cam = g_cam = None
    if cross_camera:
        if q_camids is None or g_camids is None:
            raise ValueError(
                "`q_camids` and `g_camids` are required with cross_camera=True; pass cross_camera=False "
                "for data without camera labels."
            )
        q_cam = int_vector(q_camids, "q_camids", num_query)
        g_cam = int_vector(g_camids, "g_camids", num_gallery)
        if camera_groups is not None:
            q_cam, g_cam = _apply_camera_groups(camera_groups, q_cam, g_cam)
        q_cam, g_cam = q_cam.to(device), g_cam.to(device)
    q_cloth = g_cloth = None
    if clothes_changing:
        if q_clothes_ids is None or g_clothes_ids is None:
            raise ValueError("clothes_changing=True needs `q_clothes_ids` and `g_clothes_ids`.")
        q_cloth = int_vector(q_clothes_ids, "q_clothes_ids", num_query).to(device)
        g_cloth = int_vector(g_clothes_ids, "g_clothes_ids", num_gallery).to(device)
        for name, ids in (("q_clothes_ids", q_cloth), ("g_clothes_ids", g_cloth)):
            if bool((ids < 0).any()):
                raise ValueError(
                    f"`{name}` contains negative (unknown) clothes ids; the clothes-changing protocol "
                    "needs a known outfit for every image."
                )
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_ELEMENTS // num_gallery)
        if single_gallery_shot:
            chunk_size = max(1, chunk_size // NUM_SINGLE_SHOT_REPEATS)
    elif chunk_size < 1:
        raise ValueError(f"`chunk_size` must be positive, got {chunk_size}.")

    g_label = torch.unique(g_pid, return_inverse=True)[1] if single_gallery_shot else None
    # Gallery indices grouped by identity (ascending within a group): the few same-pid entries of
    # a query are looked up here instead of comparing its pid with the whole gallery.
    g_order = torch.argsort(g_pid, stable=True)
    groups = _Groups(g_pid[g_order], g_order)

    def rank_chunk(bounds: tuple[int, int]) -> tuple[torch.Tensor, float, float, int]:
        start, stop = bounds
        d = dist[start:stop].to(device).contiguous()
        if d.dtype in (torch.float16, torch.bfloat16):
            d = d.float()
        low, high = torch.aminmax(d)  # NaN propagates; one cheap pass instead of isfinite
        if not (bool(torch.isfinite(low)) and bool(torch.isfinite(high))):
            check_all_finite(d, "distmat", row_offset=start)
        rows, cols = groups.same_pid_entries(q_pid[start:stop])
        junk = torch.zeros(rows.shape[0], dtype=torch.bool, device=device)
        if q_cam is not None:
            junk |= q_cam[start:stop][rows] == g_cam[cols]
        if q_cloth is not None:
            junk |= q_cloth[start:stop][rows] == g_cloth[cols]
        positive = ~junk
        num_pos = torch.bincount(rows[positive], minlength=stop - start)
        valid = num_pos > 0
        query_index = torch.arange(start, stop, device=device)
        if not bool(valid.all()):
            keep = valid[rows]
            new_row = torch.cumsum(valid, 0) - 1
            rows, cols, positive, junk = new_row[rows[keep]], cols[keep], positive[keep], junk[keep]
            d, num_pos, query_index = d[valid], num_pos[valid], query_index[valid]
        counts = torch.zeros(max_rank + 1, dtype=torch.float64, device=device)
        if d.shape[0] == 0:
            return counts, 0.0, 0.0, 0
        ranks = _positive_ranks(d, rows, cols, positive, num_pos)

        pos_range = torch.arange(1, ranks.shape[1] + 1, device=device, dtype=torch.float64)
        in_list = pos_range[None, :] <= num_pos[:, None]
        precision = torch.where(in_list, pos_range[None, :] / ranks, 0.0)
        chunk_ap = float((precision.sum(dim=1) / num_pos).sum())
        last = ranks.gather(1, (num_pos - 1)[:, None]).squeeze(1)
        chunk_inp = float((num_pos / last).sum())

        if single_gallery_shot:
            same_pid, positive_mask, junk_mask = _dense_masks(d.shape, rows, cols, positive, junk)
            first = _single_shot_first_ranks(
                d, same_pid, positive_mask, junk_mask, g_label, query_index, seed
            )
            weight = 1.0 / NUM_SINGLE_SHOT_REPEATS
        else:
            first = ranks[:, 0].long()
            weight = 1.0
        counts += weight * torch.bincount(first.clamp(max=max_rank + 1) - 1, minlength=max_rank + 1).to(
            torch.float64
        )
        return counts, chunk_ap, chunk_inp, d.shape[0]

    chunks = [(start, min(start + chunk_size, num_query)) for start in range(0, num_query, chunk_size)]
    workers = num_workers(num_query * num_gallery, len(chunks), device)
    first_rank_counts = torch.zeros(max_rank + 1, dtype=torch.float64, device=device)
    sum_ap = sum_inp = 0.0
    num_valid = 0
    # Chunks of queries are independent: a few single-threaded workers (see _threads.py) instead
    # of torch's per-operation thread pool, which collapses when other processes share the CPUs.
    with single_threaded(device):
        results = parallel_map(rank_chunk, chunks, workers)
    for counts, chunk_ap, chunk_inp, chunk_valid in results:
        first_rank_counts += counts
        sum_ap += chunk_ap
        sum_inp += chunk_inp
        num_valid += chunk_valid

    num_invalid = num_query - num_valid
    if num_valid == 0:
        raise ValueError(
            f"None of the {num_query} queries has a true match in the gallery after removing same-pid "
            "same-camera entries; check that q_pids/g_pids use the same identity labels (and the "
            "camera ids, or use cross_camera=False for data without cameras)."
        )
    if num_invalid:
        logger.info(
            "%d of %d queries have no true match in the gallery and were skipped.", num_invalid, num_query
        )
    cmc = (torch.cumsum(first_rank_counts[:max_rank], dim=0) / num_valid).cpu().numpy()
    return RankResult(
        cmc=cmc,
        mAP=sum_ap / num_valid,
        mINP=sum_inp / num_valid,
        num_valid_queries=num_valid,
        num_invalid_queries=num_invalid,
    )


class _Groups:
    """Gallery entries grouped by pid, to list the same-pid entries of a chunk of queries."""

    def __init__(self, sorted_pids: torch.Tensor, order: torch.Tensor):
        self.sorted_pids, self.order = sorted_pids, order

    def same_pid_entries(self, q_pid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rows, cols)`` of every (query, gallery) pair with equal pids, sorted by row and, within
        a row, by gallery index."""
        left = torch.searchsorted(self.sorted_pids, q_pid)
        counts = torch.searchsorted(self.sorted_pids, q_pid, right=True) - left
        total = int(counts.sum())
        rows = torch.repeat_interleave(
            torch.arange(q_pid.shape[0], device=q_pid.device), counts, output_size=total
        )
        offset = torch.arange(total, device=q_pid.device) - torch.repeat_interleave(
            torch.cumsum(counts, 0) - counts, counts, output_size=total
        )
        return rows, self.order[left[rows] + offset]


def _dense_masks(
    shape: torch.Size, rows: torch.Tensor, cols: torch.Tensor, positive: torch.Tensor, junk: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Boolean ``(same_pid, positive, junk)`` matrices of a chunk from its same-pid entries."""
    masks = []
    for selected in (None, positive, junk):
        mask = torch.zeros(shape, dtype=torch.bool, device=rows.device)
        if selected is None:
            mask[rows, cols] = True
        else:
            mask[rows[selected], cols[selected]] = True
        masks.append(mask)
    return masks[0], masks[1], masks[2]


_CELLS = 4096
"""Cells of the per-query lookup table that replaces a binary search per gallery entry."""

_INT32_INDEX_LIMIT = 2**31
"""Cell and bucket indices below this are kept in int32 (half the bytes of int64)."""


def _positive_ranks(
    d: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, positive: torch.Tensor, num_pos: torch.Tensor
) -> torch.Tensor:
    """1-based positions of every query's positives in its filtered ranked list.

    ``rows, cols`` are the chunk's same-pid entries (row-major, columns ascending within a row),
    ``positive`` says which of them are true matches (the others are junk), ``num_pos`` counts
    them per row (all > 0). Returns a float64 ``(C, R)`` tensor, ``R = max(num_pos)``: column
    ``k`` is the position of the query's ``k``-th positive in (distance, index) order; columns
    ``>= num_pos`` are padding.

    position(k) = k + 1 + #negatives before positive k. Every gallery entry's "bucket" (how many
    positives precede it in (distance, index) order) is read from a lookup table over ``_CELLS``
    equal cells spanning the row's positive distances, through a monotone map distance -> cell:
    for an entry whose cell holds no positive, the bucket is exact (a positive in a lower cell has
    a smaller distance, one in a higher cell a larger one); the few entries in a cell holding a
    positive are compared with the positives one by one, ties broken by index. Buckets are
    counted over all entries, then the same-pid entries' buckets are subtracted, which leaves
    the negatives' counts: two passes over the chunk without any per-entry branching.
    """
    chunk, num_gallery = d.shape
    device = d.device
    width = int(num_pos.max())
    p_rows, p_cols = rows[positive], cols[positive]
    row_start = torch.cumsum(num_pos, 0) - num_pos
    slot = torch.arange(p_rows.shape[0], device=device) - row_start[p_rows]
    pos_d = torch.full((chunk, width), float("inf"), dtype=d.dtype, device=device)
    pos_d[p_rows, slot] = d[p_rows, p_cols]
    pos_i = torch.full((chunk, width), num_gallery, dtype=torch.long, device=device)
    pos_i[p_rows, slot] = p_cols
    # Stable sort on distance of index-ordered positives = (distance, index) order.
    pos_d, order = torch.sort(pos_d, dim=1, stable=True)
    pos_i = pos_i.gather(1, order)

    # Monotone (non-decreasing) map distance -> global cell index: IEEE subtraction and
    # multiplication by a positive number are monotone, and so are clamping and truncation; the
    # same tensor operations are applied to the positives, so both sides agree bit for bit.
    low = pos_d[:, :1]
    span = (pos_d.gather(1, (num_pos - 1)[:, None]) - low).double()
    scale = torch.where(span > 0, (_CELLS - 1) / span, 1.0).clamp(1e-30, 1e30).to(d.dtype)
    stride = _CELLS + 2
    bins = width + 1
    sentinel = chunk * bins
    # Cell indices and buckets in int32 where they fit: the conversion, the gather
    # (``index_select``, 3x faster than ``take`` with int64 on CPU) and the histogram move half
    # the bytes.
    index_dtype = torch.int32 if max(chunk * stride, sentinel + 1) < _INT32_INDEX_LIMIT else torch.long
    cell_base = (torch.arange(chunk, device=device)[:, None] * stride + 1).to(index_dtype)

    def cells(values: torch.Tensor) -> torch.Tensor:
        scaled = values - low
        scaled *= scale
        # The positives land in cells 0 .. _CELLS - 1 (about); entries below and above them are
        # clamped into cells -1 and _CELLS, which hold no positive.
        scaled.clamp_(-1.0, float(_CELLS))
        index = scaled.to(index_dtype)  # truncation: -1 .. _CELLS
        index += cell_base  # shifted to the row's range
        return index

    real = torch.arange(width, device=device)[None, :] < num_pos[:, None]
    per_cell = torch.bincount(cells(pos_d)[real], minlength=chunk * stride).view(chunk, stride)
    lookup = torch.arange(chunk, device=device)[:, None] * bins + (torch.cumsum(per_cell, 1) - per_cell)
    lookup[per_cell > 0] = sentinel  # cells holding a positive: decided one entry at a time

    buckets = lookup.to(index_dtype).view(-1).index_select(0, cells(d).view(-1)).view(chunk, num_gallery)
    counts = torch.bincount(buckets.view(-1), minlength=sentinel + 1)
    if int(counts[sentinel]) > 0:
        a_rows, a_cols = (buckets == sentinel).nonzero(as_tuple=True)
        counts += _bucket_counts(pos_d, pos_i, d, a_rows, a_cols, bins, sentinel + 1)
    counts = counts[:sentinel] - _bucket_counts(pos_d, pos_i, d, rows, cols, bins, sentinel)
    negatives_before = counts.view(chunk, bins).cumsum(dim=1)[:, :width]
    pos_range = torch.arange(1, width + 1, device=device)
    return (pos_range[None, :] + negatives_before).to(torch.float64)


def _bucket_counts(
    pos_d: torch.Tensor,
    pos_i: torch.Tensor,
    d: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    bins: int,
    size: int,
) -> torch.Tensor:
    """Histogram (flat ``row * bins + bucket``, length ``size``) of the entries ``(rows, cols)``
    by their number of preceding positives in (distance, index) order, by direct comparison."""
    out = torch.zeros(size, dtype=torch.long, device=d.device)
    step = max(1, (1 << 20) // pos_d.shape[1])
    for start in range(0, rows.shape[0], step):
        r, c = rows[start : start + step], cols[start : start + step]
        values = d[r, c][:, None]
        row_d = pos_d[r]
        before = (row_d < values) | ((row_d == values) & (pos_i[r] < c[:, None]))
        out += torch.bincount(r * bins + before.sum(dim=1), minlength=size)
    return out


def _single_shot_first_ranks(
    d: torch.Tensor,
    same_pid: torch.Tensor,
    positive: torch.Tensor,
    junk: torch.Tensor | None,
    g_label: torch.Tensor,
    query_index: torch.Tensor,
    seed: int,
) -> torch.Tensor:
    """Rank of the true match in each of ``NUM_SINGLE_SHOT_REPEATS`` single-shot galleries.

    In every repeat each query keeps one uniformly drawn image per gallery identity (among its
    non-junk entries); the rank of its kept positive is 1 + the number of kept negatives before it
    in (distance, index) order. The random numbers come from ``numpy.random.default_rng((seed,
    query index))``, so they do not depend on chunking or device. Returns all ranks flattened.
    """
    chunk, num_gallery = d.shape
    device = d.device
    num_labels = int(g_label.max()) + 1
    usable = ~junk if junk is not None else torch.ones_like(same_pid)
    draws = np.stack(
        [
            np.random.default_rng((seed, int(q))).random((NUM_SINGLE_SHOT_REPEATS, num_gallery))
            for q in query_index.tolist()
        ],
        axis=1,
    )
    labels = g_label[None, :].expand(chunk, num_gallery)
    gallery_index = torch.arange(num_gallery, device=device)[None, :]
    ranks = []
    for draw in torch.from_numpy(draws).to(device):
        draw = torch.where(usable, draw, float("inf"))
        best = torch.full((chunk, num_labels), float("inf"), dtype=draw.dtype, device=device)
        best.scatter_reduce_(1, labels, draw, reduce="amin")
        kept = usable & (draw == best.gather(1, labels))
        kept_pos = (kept & positive).to(torch.uint8).argmax(dim=1, keepdim=True)
        kept_d = d.gather(1, kept_pos)
        ahead = (d < kept_d) | ((d == kept_d) & (gallery_index < kept_pos))
        ranks.append((kept & ~same_pid & ahead).sum(dim=1) + 1)
    return torch.cat(ranks)


def _apply_camera_groups(
    camera_groups: Mapping[int, int] | ArrayLike, q_cam: torch.Tensor, g_cam: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace camera ids by their group ids, with an error naming any camera without a group."""
    if isinstance(camera_groups, Mapping):
        size = max([int(k) for k in camera_groups] + [int(q_cam.max()), int(g_cam.max())]) + 1
        lookup = torch.full((size,), -1, dtype=torch.long)
        for cam, group in camera_groups.items():
            if int(cam) < 0 or int(group) < 0:
                raise ValueError(
                    f"`camera_groups` must map non-negative camids to non-negative groups, got {cam}: {group}."
                )
            lookup[int(cam)] = int(group)
    else:
        lookup = int_vector(camera_groups, "camera_groups").cpu()
    mapped = []
    for name, cams in (("q_camids", q_cam), ("g_camids", g_cam)):
        cams = cams.cpu()
        if bool((cams < 0).any()) or bool((cams >= lookup.shape[0]).any()):
            raise ValueError(f"`{name}` has camids outside `camera_groups` (size {lookup.shape[0]}).")
        groups = lookup[cams]
        if bool((groups < 0).any()):
            missing = sorted(set(cams[groups < 0].tolist()))
            raise ValueError(f"`camera_groups` has no group for camid(s) {missing} found in `{name}`.")
        mapped.append(groups)
    return mapped[0], mapped[1]
