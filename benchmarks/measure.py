"""Memory measurement the benchmarks share: a process's resident-set peak during a block, and
handing freed heap back to the OS between steps (Linux, read from /proc)."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import threading


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


class PeakMemory:
    """Resident-set high-water mark of this process during a block: ``peak_gb`` (absolute) and
    ``extra_gb`` (above the resident set at the start, i.e. what the block itself needed).

    Resets the kernel's VmHWM through /proc/self/clear_refs when allowed; otherwise samples
    VmRSS every 2 ms in a thread."""

    def __enter__(self) -> PeakMemory:
        self.before = _status_kb("VmRSS")
        self.sampled = self.before
        try:
            with open("/proc/self/clear_refs", "w") as clear:
                clear.write("5")
            self.use_hwm = True
        except OSError:
            self.use_hwm = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.sampled = max(self.sampled, _status_kb("VmRSS"))

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        peak = _status_kb("VmHWM") if self.use_hwm else self.sampled
        self.peak_gb = peak / 2**20
        self.extra_gb = max(0, peak - self.before) / 2**20


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (glibc's ``malloc_trim``), so that the
    next step's resident-set baseline holds no memory freed by the previous one."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: skip
        ctypes.CDLL("libc.so.6").malloc_trim(0)
