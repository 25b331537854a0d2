"""Scoped single-threaded torch execution for the CPU kernels of the metrics."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def single_threaded(device: torch.device) -> Iterator[None]:
    """Run torch on one CPU thread inside the block; the previous setting is restored after.

    The ranking and re-ranking kernels are long sequences of small and medium operations. Each
    multi-threaded one synchronises torch's thread pool; on a machine whose cores are also busy
    with other processes that synchronisation dominates (measured on 2 shared cores: Market-1501
    evaluation 4.8 s on one thread vs 17 s on two, the re-ranking Jaccard step 7 s vs 120 s),
    while on an idle machine a second thread saves little. Does nothing for GPU devices.
    """
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
