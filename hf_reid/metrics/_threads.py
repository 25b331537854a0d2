"""CPU thread sizing for the metrics' kernels: how many CPUs this process may really use, and how
to spread independent blocks of work over them without a busy-waiting pool.

Two facts, measured on 2 shared cores (docs/METRICS_SPEED.md):

- torch's intra-op parallelism (OpenMP) splits *every* operation over all threads and joins them
  after it. A kernel that is a long sequence of small and medium operations pays that join each
  time; when other processes hold the cores, a join waits for a descheduled thread (a time slice,
  milliseconds), and the re-ranking step ran 11x slower than on one thread.
- Coarse blocks need no join per operation: [`parallel_map`] hands independent blocks (rows of
  queries, tiles of a distance matrix) to a few Python threads, each running torch on a single
  intra-op thread. torch releases the GIL inside its kernels, so the blocks run in parallel; a
  worker that the OS deschedules only delays its own block while the others take the next ones
  from the queue, and an idle worker sleeps on the queue instead of spinning.

Problems too small for threads to pay (less than [`MIN_PARALLEL_WORK`] elements per extra worker)
run on the calling thread, single-threaded.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TypeVar

import torch

from ._gemm import blas_threads

__all__ = ["available_cpus", "num_workers", "parallel_map", "single_threaded", "torch_threads"]

T = TypeVar("T")
R = TypeVar("R")

CGROUP_ROOT = Path("/sys/fs/cgroup")

MIN_PARALLEL_WORK = 1 << 21
"""Elementary operations (matrix entries times a kernel's cost factor) that one extra worker must
get before a second thread is used: below about 2M the thread start-up and hand-over cost more
than they save (measured on 2 cores: re-ranking 300 x 1,200 is faster on one thread, Market-1501
evaluation is faster on two)."""


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _quota(quota: str, period: str) -> float | None:
    """``quota / period`` CPUs, or ``None`` for no limit ("max", -1) or unreadable values."""
    try:
        quota_value, period_value = float(quota), float(period)
    except ValueError:
        return None
    return quota_value / period_value if quota_value > 0 and period_value > 0 else None


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs allowed by the cgroup CPU quota (cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us`` /
    ``cpu.cfs_period_us``), or ``None`` when there is no quota or no cgroup file to read."""
    text = _read(root / "cpu.max")
    if text is not None:
        parts = text.split()
        return _quota(*parts) if len(parts) == 2 else None
    for folder in (root / "cpu", root / "cpu,cpuacct", root):
        quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
        if quota is not None and period is not None:
            return _quota(quota, period)
    return None


def available_cpus(root: Path = CGROUP_ROOT) -> int:
    """CPUs this process can actually run on: its affinity mask, capped by the cgroup quota
    (rounded up), at least 1. ``os.cpu_count()`` counts the machine's cores instead, which in a
    container or under ``taskset`` overstates what the process gets."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        cpus = min(cpus, math.ceil(limit))
    return max(1, cpus)


def num_workers(
    work: float, num_blocks: int, device: torch.device | str = "cpu", max_threads: int | None = None
) -> int:
    """Workers for ``num_blocks`` independent blocks totalling ``work`` elementary operations:
    one per [`MIN_PARALLEL_WORK`] of work, at most one per block and per available CPU; 1 on GPU
    (the device parallelises) and when ``torch.get_num_threads()`` was set to 1 by the user
    (``OMP_NUM_THREADS=1`` or ``torch.set_num_threads(1)``), which is respected. Callers already
    inside [`single_threaded`] pass the user's setting as ``max_threads``."""
    if torch.device(device).type != "cpu":
        return 1
    threads = torch.get_num_threads() if max_threads is None else max_threads
    limit = min(available_cpus(), threads, num_blocks)
    return max(1, min(limit, int(work // MIN_PARALLEL_WORK)))


@contextmanager
def torch_threads(num_threads: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run torch, and numpy's BLAS where the kernels use it (``_gemm.py``), on ``num_threads``
    CPU threads inside the block; the previous settings are restored after, even on error. Does
    nothing for GPU devices or when already set."""
    previous = torch.get_num_threads()
    if torch.device(device).type != "cpu":
        yield
        return
    with blas_threads(num_threads):
        if previous == num_threads:
            yield
            return
        torch.set_num_threads(num_threads)
        try:
            yield
        finally:
            torch.set_num_threads(previous)


def single_threaded(device: torch.device) -> AbstractContextManager[None]:
    """``torch_threads(1, device)``: for kernels made of many small operations (see the module
    docstring), on the calling thread."""
    return torch_threads(1, device)


def parallel_map(function: Callable[[T], R], items: Sequence[T] | Iterable[T], workers: int) -> list[R]:
    """``[function(item) for item in items]``, in order, on ``workers`` threads that each run torch
    single-threaded (see the module docstring); on the calling thread when ``workers <= 1``.

    ``function`` must only write to memory no other item writes (e.g. its own rows of an output).
    The caller's torch thread setting is the same after the call. The first exception raised by
    ``function`` (in item order) is re-raised once the running items finish; queued ones are dropped.
    """
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        with torch_threads(1):
            return [function(item) for item in items]
    previous = torch.get_num_threads()
    pool = ThreadPoolExecutor(
        max_workers=min(workers, len(items)), initializer=torch.set_num_threads, initargs=(1,)
    )
    try:
        futures = [pool.submit(function, item) for item in items]
        return [future.result() for future in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # after an error, the queued items never start
        # torch.set_num_threads in the workers also sets the process-wide default that new threads
        # start with; put the caller's value back.
        torch.set_num_threads(previous)
