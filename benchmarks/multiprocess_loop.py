"""Run the multi-process tests again and again: how many loops pass, and how many processes each
loop leaves behind (issue #16: one of six runs of the two-process CLIP-ReID test hung, and its
rank stayed alive after the test, an orphan).

    python benchmarks/multiprocess_loop.py                  # 20 loops of the three multi-process tests
    python benchmarks/multiprocess_loop.py -n 5 --max-minutes 25 --stall   # and the stall tests

Every loop is one ``pytest`` run (``OMP_NUM_THREADS=1``) of

* ``tests/test_recipe_clip_reid_distributed.py`` (recipes/clip_reid.py on two gloo processes),
* ``tests/test_training_distributed.py`` (the toy triplet training on two processes),
* ``tests/test_checkpoint_safety.py::test_two_processes_save_their_rng_and_resume_bitwise``,
* with ``--stall``, ``tests/test_multiprocess_stall.py`` (a rank that stalls or fails),

with ``$HF_REID_LOOP_ID`` set to an id of this run, which every process those tests start inherits
(the ranks of ``accelerate launch`` included). After each loop it counts the live processes that
carry the id: what the loop left behind (then killed, so that the next loop starts clean). It
prints one line per loop and ``passed N/M loops; leftover processes: [...]``; ``--max-minutes``
stops starting loops after that long (the count then says how many ran). Exit status 1 when a
loop failed or left a process. The output of failing loops goes to ``--log-dir``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
TESTS = [
    "tests/test_recipe_clip_reid_distributed.py",
    "tests/test_training_distributed.py",
    "tests/test_checkpoint_safety.py::test_two_processes_save_their_rng_and_resume_bitwise",
]
STALL_TESTS = ["tests/test_multiprocess_stall.py"]
LOOP_ENV = "HF_REID_LOOP_ID"


def processes_of(loop_id: str) -> list[psutil.Process]:
    """Live processes (not zombies) whose environment carries this run's id."""
    found = []
    for process in psutil.process_iter():
        try:
            if (
                process.pid != os.getpid()
                and process.status() != psutil.STATUS_ZOMBIE
                and process.environ().get(LOOP_ENV) == loop_id
            ):
                found.append(process)
        except psutil.Error:
            continue
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--loops", type=int, default=20)
    parser.add_argument("--max-minutes", type=float, default=None, help="start no loop after this long")
    parser.add_argument("--stall", action="store_true", help="also run tests/test_multiprocess_stall.py")
    parser.add_argument("--loop-timeout", type=float, default=3600, help="seconds one pytest run may take")
    parser.add_argument("--log-dir", type=Path, default=None)
    args = parser.parse_args()
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="multiprocess_loop_"))
    log_dir.mkdir(parents=True, exist_ok=True)
    tests = TESTS + (STALL_TESTS if args.stall else [])
    loop_id = uuid.uuid4().hex
    env = {**os.environ, "OMP_NUM_THREADS": "1", LOOP_ENV: loop_id}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests]
    print(f"{' '.join(command[2:])}  (logs of failing loops: {log_dir})", flush=True)

    began = time.monotonic()
    passed, leftovers, ran = 0, [], 0
    for loop in range(1, args.loops + 1):
        if args.max_minutes is not None and time.monotonic() - began > 60 * args.max_minutes:
            print(f"stopping: {args.max_minutes} minutes spent", flush=True)
            break
        start = time.monotonic()
        log = log_dir / f"loop{loop:02d}.log"
        with open(log, "w") as out:
            try:
                status = subprocess.run(
                    command,
                    cwd=ROOT,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=args.loop_timeout,
                ).returncode
            except subprocess.TimeoutExpired:
                status = "timeout"
        seconds = time.monotonic() - start
        left = processes_of(loop_id)
        described = []
        for process in left:
            try:
                described.append(f"{process.pid} {' '.join(process.cmdline())[-120:]}")
                process.kill()
            except psutil.Error:
                continue
        ran += 1
        passed += status == 0
        leftovers.append(len(left))
        summary = log.read_text().strip().splitlines()[-1] if log.stat().st_size else ""
        if status == 0 and not left:
            log.unlink()
        print(
            f"loop {loop}/{args.loops}: {'passed' if status == 0 else f'FAILED ({status})'} in {seconds:.0f} s "
            f"[{summary}]; leftover processes: {len(left)} {described if described else ''}",
            flush=True,
        )
    print(f"passed {passed}/{ran} loops; leftover processes after each: {leftovers}")
    return 0 if passed == ran and not any(leftovers) else 1


if __name__ == "__main__":
    sys.exit(main())
