"""The metrics' CPU thread sizing: CPUs from affinity and cgroup quota (v1 and v2, faked here),
worker counts from the work size, and parallel_map's order, errors and thread restoring."""

from __future__ import annotations

import os
import threading

import pytest
import torch

from hf_reid.metrics import _threads
from hf_reid.metrics._threads import (
    MIN_PARALLEL_WORK,
    available_cpus,
    cgroup_cpu_limit,
    num_workers,
    parallel_map,
    torch_threads,
)


def affinity() -> int:
    return len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("max 100000", None), ("150000 100000", 1.5), ("50000 100000", 0.5), ("garbage", None)],
)
def test_cgroup_v2_quota(tmp_path, text, expected):
    (tmp_path / "cpu.max").write_text(text + "\n")
    assert cgroup_cpu_limit(tmp_path) == expected


def test_cgroup_v1_quota(tmp_path):
    folder = tmp_path / "cpu,cpuacct"
    folder.mkdir()
    (folder / "cpu.cfs_quota_us").write_text("-1\n")
    (folder / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path) is None  # -1: no quota
    (folder / "cpu.cfs_quota_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.0
    assert cgroup_cpu_limit(tmp_path / "missing") is None


def test_available_cpus_is_capped_by_the_quota_rounded_up(tmp_path):
    assert available_cpus(tmp_path) == affinity()  # no cgroup file: the affinity mask
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert available_cpus(tmp_path) == 1  # half a CPU still runs one thread
    (tmp_path / "cpu.max").write_text(f"{100000 * (affinity() + 3)} 100000\n")
    assert available_cpus(tmp_path) == affinity()  # a quota above the affinity does not add CPUs


def test_available_cpus_follows_the_affinity_mask():
    if not hasattr(os, "sched_setaffinity") or affinity() < 2:
        pytest.skip("needs Linux and 2 CPUs")
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(before)})
        assert available_cpus() == 1
    finally:
        os.sched_setaffinity(0, before)


def test_workers_are_sized_to_the_work(monkeypatch):
    monkeypatch.setattr(_threads, "available_cpus", lambda root=None: 4)
    with torch_threads(4):
        assert num_workers(MIN_PARALLEL_WORK - 1, 100) == 1  # small: single-threaded path
        assert num_workers(2 * MIN_PARALLEL_WORK, 100) == 2
        assert num_workers(100 * MIN_PARALLEL_WORK, 100) == 4  # capped by the CPUs
        assert num_workers(100 * MIN_PARALLEL_WORK, 3) == 3  # and by the blocks
        assert num_workers(100 * MIN_PARALLEL_WORK, 100, "meta") == 1  # not a CPU device
    with torch_threads(1):  # the user's OMP_NUM_THREADS=1 / set_num_threads(1) is respected
        assert num_workers(100 * MIN_PARALLEL_WORK, 100) == 1


def test_parallel_map_keeps_order_runs_single_threaded_and_restores_threads():
    seen = []

    def work(item):
        seen.append((threading.get_ident(), torch.get_num_threads()))
        return item * item

    with torch_threads(2):
        assert parallel_map(work, range(20), 2) == [i * i for i in range(20)]
        assert torch.get_num_threads() == 2
        assert parallel_map(work, [3], 2) == [9]  # one item: on the calling thread
        assert torch.get_num_threads() == 2
    assert all(threads == 1 for _, threads in seen)
    assert threading.get_ident() in {ident for ident, _ in seen[-1:]}


def test_parallel_map_reraises_and_restores_threads():
    def work(item):
        if item == 5:
            raise ValueError("item five")
        return item

    with torch_threads(2):
        with pytest.raises(ValueError, match="item five"):
            parallel_map(work, range(10), 2)
        assert torch.get_num_threads() == 2
        with pytest.raises(ValueError, match="item five"):
            parallel_map(work, range(10), 1)
        assert torch.get_num_threads() == 2
