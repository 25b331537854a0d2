"""The query x gallery matrix product of the distance kernels, on the faster CPU BLAS.

torch's CPU wheels call Intel MKL for float matrix products; numpy's wheels call OpenBLAS. On AMD
CPUs MKL does not use its fast kernels: on an AMD EPYC (AVX2, one thread, 512 x 512 times
512 x 20,000 in float32, best of 10) ``torch.mm`` ran at 47-55 GFLOP/s and numpy's ``matmul``
(OpenBLAS, Haswell kernels) at 68-74, about 1.4x (``python benchmarks/eval_speed.py --scale msmt``
prints both). The distance matrix of
MSMT17 (11,659 x 82,161 x 512) is almost all matrix product, so on such CPUs
``compute_distance_matrix`` hands it to numpy. On Intel CPUs MKL stays. Kernels that need a
pair's distance to come out bit-identical from different calls (re-ranking's symmetric pass and
its row-by-row fallback) stay on torch.

The choice is by CPU vendor, not timed at run time, so that a machine always computes the same
numbers (the two libraries round differently, by a few ulps). ``HF_REID_CPU_MATMUL=torch`` or
``=numpy`` overrides it.

numpy's BLAS keeps its own thread pool; [`blas_threads`] sizes it with torch's (see
``_threads.torch_threads``), so that the single-threaded workers of ``parallel_map`` stay
single-threaded when they call it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

__all__ = ["blas_threads", "matmul_nt", "squared_distances_into", "use_numpy_blas"]

ENV_VARIABLE = "HF_REID_CPU_MATMUL"
_CHOICES = ("torch", "numpy")


def _cpu_vendor() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


@functools.cache
def _default_backend() -> str:
    return "numpy" if _cpu_vendor() == "AuthenticAMD" else "torch"


def _backend() -> str:
    """``"torch"`` or ``"numpy"``: ``HF_REID_CPU_MATMUL`` if set (validated), else by CPU vendor."""
    choice = os.environ.get(ENV_VARIABLE, "").strip().lower() or _default_backend()
    if choice not in _CHOICES:
        raise ValueError(f"{ENV_VARIABLE}={choice!r}: choose one of {list(_CHOICES)}.")
    return choice


def use_numpy_blas(out: torch.Tensor) -> bool:
    """Whether a product written into ``out`` (float32/float64, contiguous, on CPU, no autograd)
    goes to numpy's BLAS (whose fast path needs a contiguous output)."""
    return (
        _backend() == "numpy"
        and out.device.type == "cpu"
        and out.dtype in (torch.float32, torch.float64)
        and not out.requires_grad
        and out.is_contiguous()
    )


def matmul_nt(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, numpy_blas: bool = False) -> torch.Tensor:
    """``out = a @ b.T`` (same dtype); returns ``out``. With ``numpy_blas`` and where
    [`use_numpy_blas`] allows it, through numpy's BLAS."""
    if numpy_blas and use_numpy_blas(out):
        np.matmul(a.numpy(), b.numpy().T, out=out.numpy())
        return out
    return torch.mm(a, b.T, out=out)


_NORM_TILE = 1 << 16
"""Entries of the tile in which the norms are summed before being added (cache-sized)."""


def squared_distances_into(
    out: torch.Tensor,
    a: torch.Tensor,
    a_sq: torch.Tensor,
    b: torch.Tensor,
    b_sq: torch.Tensor,
    numpy_blas: bool = False,
) -> torch.Tensor:
    """``out = (|a|^2 + |b|^2) - 2 a.b`` for every pair of rows, unclamped; returns ``out``.

    The norms are summed first, as ``torch.addmm`` on their sum does. With torch: the sum written
    first, the product added in place (``addmm_``), bit-identical to the allocating ``addmm``. With ``numpy_blas`` (where
    [`use_numpy_blas`] allows it): ``(-2 a) @ b.T`` by numpy (the factor 2 is exact), then the
    norm sums added tile by tile. The two round differently (by a few ulps): kernels that compare
    values from different calls (the symmetric pass of re-ranking) use one of them throughout.
    """
    if numpy_blas and use_numpy_blas(out):
        np.matmul((a * -2.0).numpy(), b.numpy().T, out=out.numpy())
        rows = max(1, _NORM_TILE // max(1, out.shape[1]))
        tile = torch.empty((min(rows, out.shape[0]), out.shape[1]), dtype=out.dtype)
        for start in range(0, out.shape[0], rows):
            part = out[start : start + rows]
            part.add_(torch.add(a_sq[start : start + rows, None], b_sq[None, :], out=tile[: part.shape[0]]))
        return out
    torch.add(a_sq[:, None], b_sq[None, :], out=out)
    return out.addmm_(a, b.T, beta=1.0, alpha=-2.0)


@functools.cache
def _controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@contextmanager
def blas_threads(num_threads: int) -> Iterator[None]:
    """Run numpy's BLAS on ``num_threads`` threads inside the block (restored after); nothing to
    do when numpy's BLAS is not used for the kernels."""
    if _backend() != "numpy":
        yield
        return
    blas = _controller().select(user_api="blas")
    if all(library.num_threads == num_threads for library in blas.lib_controllers):
        yield
        return
    with blas.limit(limits=num_threads):
        yield
