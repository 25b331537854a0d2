"""Deterministic k-smallest selection: ``torch.topk`` does not say which of several equal values
it returns, so ties at the selection boundary are settled here by index (the order a stable sort
gives), which makes re-ranking and retrieval results reproducible across devices and chunkings."""

from __future__ import annotations

import torch


def smallest_k(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` smallest entries of every row, ordered by (value, column index).

    Equal to ``torch.sort(values, dim=1, stable=True)[..., :k]`` but only sorts the rows whose
    ``k``-th and ``(k + 1)``-th smallest values tie (rare for real-valued distances).

    Args:
        values: ``(rows, n)`` tensor without NaN.
        k: number of entries to keep per row (clipped to ``n``).

    Returns:
        ``(values, indices)``, both ``(rows, min(k, n))``.
    """
    n = values.shape[1]
    k = min(k, n)
    vals, idx = torch.topk(values, min(k + 1, n), dim=1, largest=False, sorted=True)
    if k < n:
        ambiguous = vals[:, k] == vals[:, k - 1]
        vals, idx = vals[:, :k].clone(), idx[:, :k].clone()
        if bool(ambiguous.any()):
            rows = ambiguous.nonzero(as_tuple=True)[0]
            row_vals, row_idx = torch.sort(values[rows], dim=1, stable=True)
            vals[rows], idx[rows] = row_vals[:, :k], row_idx[:, :k]
    # Order the selection by (value, index): index order first, then a stable sort on value.
    idx, perm = torch.sort(idx, dim=1)
    vals = vals.gather(1, perm)
    vals, perm = torch.sort(vals, dim=1, stable=True)
    return vals, idx.gather(1, perm)
