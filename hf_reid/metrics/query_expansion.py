"""Alpha-weighted average query expansion (alpha-QE, Radenović et al., TPAMI 2019).

Every query *and* gallery vector is replaced by the mean of its ``top_k`` nearest neighbours among
all query + gallery vectors (itself included), each weighted by its cosine similarity to the power
``alpha``. This is fast-reid's ``aqe`` (``evaluation/query_expansion.py``), computed in chunks of
rows instead of from a full (Q+G)^2 similarity matrix.
"""

from __future__ import annotations

import numpy as np
import torch

from ._inputs import ArrayLike, float_matrix, resolve_device
from ._select import smallest_k

__all__ = ["average_query_expansion"]

_CHUNK_ELEMENTS = 1 << 23


def average_query_expansion(
    query_features: ArrayLike,
    gallery_features: ArrayLike,
    top_k: int = 5,
    alpha: float = 3.0,
    num_iterations: int = 1,
    *,
    chunk_size: int | None = None,
    device: str | torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray] | tuple[torch.Tensor, torch.Tensor]:
    """Expand query and gallery features with their nearest neighbours.

    Args:
        query_features: ``(Q, dim)`` features.
        gallery_features: ``(G, dim)`` features.
        top_k: neighbours averaged per vector, itself included (fast-reid's ``QE_K``, default 5).
        alpha: exponent of the cosine-similarity weights. Negative similarities get weight 0
            (fast-reid would give them a negative weight, or NaN for a fractional ``alpha``).
        num_iterations: rounds of expansion; each round searches with the previous round's
            (normalised) vectors.
        chunk_size: rows whose similarities are computed at once (default: about 8M entries).
        device: where to compute (default: the inputs' device, CPU for numpy).

    Returns:
        ``(expanded_query, expanded_gallery)``, not normalised (as fast-reid), in the input's
        dtype; numpy arrays if ``query_features`` is numpy, else tensors on ``device``. Evaluate
        them with the cosine distance (or normalise them first).
    """
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"`top_k` must be a positive integer, got {top_k!r}.")
    if (
        isinstance(num_iterations, bool)
        or not isinstance(num_iterations, (int, np.integer))
        or num_iterations < 0
    ):
        raise ValueError(f"`num_iterations` must be a non-negative integer, got {num_iterations!r}.")
    if not np.isfinite(alpha) or alpha < 0:
        raise ValueError(f"`alpha` must be a non-negative number, got {alpha!r}.")
    device = resolve_device(device, query_features, gallery_features)
    query = float_matrix(query_features, "query_features")
    gallery = float_matrix(gallery_features, "gallery_features")
    if query.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"`query_features` has {query.shape[1]} features per row but `gallery_features` has "
            f"{gallery.shape[1]}."
        )
    dtype = torch.promote_types(query.dtype, gallery.dtype)
    features = torch.cat([query.to(dtype), gallery.to(dtype)]).to(device)
    num_all = features.shape[0]
    k = min(int(top_k), num_all)
    step = chunk_size or max(1, _CHUNK_ELEMENTS // num_all)
    for _ in range(num_iterations):
        normed = torch.nn.functional.normalize(features, p=2, dim=1)
        expanded = torch.empty_like(features)
        for start in range(0, num_all, step):
            sims = normed[start : start + step] @ normed.T
            neg_sims, idx = smallest_k(-sims, k)
            weights = (-neg_sims).clamp(min=0.0).pow(alpha)
            expanded[start : start + step] = (weights[..., None] * features[idx]).sum(dim=1) / k
        features = expanded
    num_query = query.shape[0]
    out_query, out_gallery = features[:num_query], features[num_query:]
    if isinstance(query_features, np.ndarray):
        return out_query.cpu().numpy(), out_gallery.cpu().numpy()
    return out_query, out_gallery
