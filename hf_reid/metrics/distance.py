"""Query x gallery distance matrices, computed in chunks of query rows on CPU or GPU.

Naming: ``"euclidean"`` is the true L2 distance and ``"sqeuclidean"`` its square. torchreid's
``metric="euclidean"`` is the *squared* distance, i.e. our ``"sqeuclidean"``. ``"cosine"`` is
``1 - cos``. On L2-normalised features ``sqeuclidean = 2 * cosine``, so all three rank alike.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from ._gemm import matmul_nt, squared_distances_into
from ._inputs import ArrayLike, float_matrix, resolve_device
from ._threads import num_workers, parallel_map, single_threaded

__all__ = ["METRICS", "compute_distance_matrix"]

Metric = Literal["euclidean", "sqeuclidean", "cosine"]
METRICS: tuple[str, ...] = ("euclidean", "sqeuclidean", "cosine")

_CHUNK_ELEMENTS = 1 << 24
"""Output entries computed at once when ``chunk_size`` is not given."""


def check_metric(metric: str) -> None:
    """Raise a ValueError listing the supported metrics if ``metric`` is not one of them."""
    if metric not in METRICS:
        raise ValueError(f"Unknown distance metric {metric!r}; choose one of {list(METRICS)}.")


def prepare_features(features: torch.Tensor, metric: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Features and, for the Euclidean metrics, their squared norms (for cosine: normalised
    features and ``None``)."""
    if metric == "cosine":
        return torch.nn.functional.normalize(features, p=2, dim=1), None
    return features, features.pow(2).sum(dim=1)


def pairwise_block(
    a: torch.Tensor,
    a_sq: torch.Tensor | None,
    b: torch.Tensor,
    b_sq: torch.Tensor | None,
    metric: str,
    out: torch.Tensor | None = None,
    numpy_blas: bool = False,
) -> torch.Tensor:
    """Distances between the rows of ``a`` and ``b`` (already passed through ``prepare_features``),
    written into ``out`` when given (a ``(len(a), len(b))`` tensor: no temporaries the size of the
    block, the same numbers as without it). ``numpy_blas``: the matrix product may run on numpy's
    BLAS where it is the faster one (``_gemm.py``)."""
    if out is None:
        out = torch.empty(
            (a.shape[0], b.shape[0]), dtype=torch.promote_types(a.dtype, b.dtype), device=a.device
        )
    if metric == "cosine":
        return matmul_nt(a, b, out, numpy_blas).neg_().add_(1.0)  # -x + 1 rounds as 1 - x
    sq = squared_distances_into(out, a, a_sq, b, b_sq, numpy_blas).clamp_(min=0.0)
    return sq.sqrt_() if metric == "euclidean" else sq


def compute_distance_matrix(
    q: ArrayLike,
    g: ArrayLike,
    metric: Metric = "euclidean",
    *,
    chunk_size: int | None = None,
    device: str | torch.device | None = None,
) -> np.ndarray | torch.Tensor:
    """Distances between every query and every gallery feature.

    Args:
        q: ``(num_query, dim)`` query features (numpy array or torch tensor).
        g: ``(num_gallery, dim)`` gallery features.
        metric: ``"euclidean"`` (L2), ``"sqeuclidean"`` (squared L2, torchreid's "euclidean") or
            ``"cosine"`` (1 - cosine similarity).
        chunk_size: query rows per chunk (default: about 16M output entries per chunk), which
            bounds the temporary memory beyond the output itself.
        device: where to compute (default: the device of ``q`` or ``g`` if a tensor, else CPU).

    On AMD CPUs the matrix product runs on numpy's BLAS (OpenBLAS), about 1.4x faster there than
    torch's MKL; ``HF_REID_CPU_MATMUL=torch`` or ``=numpy`` chooses (see ``_gemm.py``). The two
    round differently, by a few ulps.

    Returns:
        ``(num_query, num_gallery)`` distances in the features' float dtype (float32 for half
        precision): a numpy array when both inputs are numpy arrays, else a tensor on ``device``.

    Raises:
        ValueError: unknown metric, empty or non-2-D input, different feature sizes, NaN or inf.
        TypeError: non-float features.
    """
    check_metric(metric)
    device = resolve_device(device, q, g)
    query = float_matrix(q, "q").to(device)
    gallery = float_matrix(g, "g").to(device)
    if query.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"`q` has {query.shape[1]} features per row but `g` has {gallery.shape[1]}; both must come "
            "from the same model."
        )
    dtype = torch.promote_types(query.dtype, gallery.dtype)
    query, gallery = query.to(dtype), gallery.to(dtype)
    num_query, num_gallery = query.shape[0], gallery.shape[0]
    if chunk_size is None:  # at least 8 blocks, to balance the workers
        chunk_size = max(1, min(_CHUNK_ELEMENTS // num_gallery, -(-num_query // 8)))
    elif chunk_size < 1:
        raise ValueError(f"`chunk_size` must be positive, got {chunk_size}.")

    gallery, gallery_sq = prepare_features(gallery, metric)
    out = torch.empty((num_query, num_gallery), dtype=dtype, device=device)

    def fill(start: int) -> None:
        block, block_sq = prepare_features(query[start : start + chunk_size], metric)
        rows = out[start : start + chunk_size]
        pairwise_block(block, block_sq, gallery, gallery_sq, metric, out=rows, numpy_blas=True)

    # Row blocks go to a few single-threaded workers (see _threads.py): no per-operation thread
    # synchronisation, so the speed degrades gracefully when other processes share the CPUs.
    starts = range(0, num_query, chunk_size)
    workers = num_workers(num_query * num_gallery * max(1, query.shape[1] // 8), len(starts), device)
    with single_threaded(device):
        parallel_map(fill, starts, workers)
    if isinstance(q, np.ndarray) and isinstance(g, np.ndarray):
        return out.cpu().numpy()
    return out
