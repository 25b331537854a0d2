"""Kill a small CLIP-ReID run with SIGKILL at random moments, resume it, and check that every
resumed run ends byte-identical to the uninterrupted one.

    python benchmarks/fault_injection.py                       # 10 kills, 4 of them during checkpoint writes
    python benchmarks/fault_injection.py --kills 20 --during-writes 8 --seed 1 --work /tmp/fi

The run is ``python recipes/clip_reid.py`` (one process, ``OMP_NUM_THREADS=1``) on the tiny
config of the recipe tests (``tests/helpers_recipes.py``: a two-domain SynthPeds of 40 training
identities, a tiny random CLIP; 3 prompt epochs, 20 image-encoder epochs, a checkpoint every 8
steps), which takes about 30-60 s uninterrupted. First one uninterrupted reference run; then, for
every kill, a fresh run in a folder of its own is killed (its whole process group, SIGKILL):

* at a random moment of the reference run's wall time, or
* during a checkpoint write (``--during-writes`` of the kills): when the hidden
  ``checkpoints/.tmp-checkpoint-<step>`` folder of a randomly chosen save appears, after a random
  delay of up to 20 ms.

A kill counts as "during a checkpoint write" when a ``.tmp-*`` folder is left in ``checkpoints/``
after the process died (a complete save renames it into place). Then ``--resume latest`` runs the
folder to its end, and its ``model.safetensors`` (bytes) and ``eval_results.json`` (every metric)
are compared with the reference's. It prints one line per kill and the totals::

    kills: 10, during checkpoint writes: 4, identical: 10/10

Exit status 1 when any resumed run differs or fails.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "clip_reid.py"
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "scripts")]

ENV = {
    "OMP_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
TMP_PREFIX = ".tmp-"


def start(config: Path, output_dir: Path, *extra: str) -> subprocess.Popen:
    """The recipe in a session of its own (its process group is killed whole), output to a log."""
    command = [sys.executable, str(RECIPE), "--config", str(config), "--output_dir", str(output_dir)]
    command += ["--eval.plots", "false", *extra]
    output_dir.mkdir(parents=True, exist_ok=True)
    log = open(output_dir.parent / f"{output_dir.name}{'-resume' if extra else ''}.log", "w")  # noqa: SIM115
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, **ENV},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    process.log = log  # type: ignore[attr-defined]
    return process


def finish(process: subprocess.Popen, timeout: float) -> int:
    try:
        return process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        process.log.close()  # type: ignore[attr-defined]


def tmp_folders(output_dir: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(output_dir / "checkpoints") if e.name.startswith(TMP_PREFIX))
    except FileNotFoundError:
        return []


def kill(process: subprocess.Popen) -> bool:
    """SIGKILL the run's process group; False when it had already ended."""
    if process.poll() is not None:
        return False
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return True


def kill_at(process: subprocess.Popen, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        time.sleep(0.01)
    return kill(process)


def kill_in_save(process: subprocess.Popen, output_dir: Path, save: int, delay: float) -> bool:
    """Kill when the ``save``-th temporary checkpoint folder appears (after ``delay`` seconds)."""
    seen: set[str] = set()
    while process.poll() is None:
        new = [name for name in tmp_folders(output_dir) if name not in seen]
        if new:
            seen.update(new)
            if len(seen) >= save:
                time.sleep(delay)
                return kill(process)
        time.sleep(0.0005)
    return False


def outcome(output_dir: Path) -> tuple[bytes, dict]:
    return (output_dir / "model.safetensors").read_bytes(), json.loads(
        (output_dir / "eval_results.json").read_text()
    )


def metrics(results: dict) -> dict:
    """The numbers of ``eval_results.json`` (every float and list of floats, per evaluation)."""
    return {
        name: {k: v for k, v in entry.items() if isinstance(v, (float, list))}
        for name, entry in results.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument(
        "--during-writes", type=int, default=4, help="how many kills aim at checkpoint writes"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = args.work or Path(tempfile.mkdtemp(prefix="fault_injection_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work folder: {work}", flush=True)

    from helpers_recipes import make_clip_reid_inputs

    config = work / "inputs" / "tiny.yaml"
    if not config.is_file():
        make_clip_reid_inputs(work / "inputs")

    reference = work / "reference"
    began = time.monotonic()
    if finish(start(config, reference), timeout=1800) != 0:
        print(f"the reference run failed: see {work / 'reference.log'}")
        return 1
    wall = time.monotonic() - began
    saves = (reference / "train.log").read_text().count("Saved checkpoint")
    ref_weights, ref_results = outcome(reference)
    print(f"reference run: {wall:.0f} s, {saves} checkpoint saves", flush=True)

    plan = ["write"] * min(args.during_writes, args.kills) + ["time"] * max(
        0, args.kills - args.during_writes
    )
    rng.shuffle(plan)
    kills = during_writes = identical = attempts = 0
    failures = []
    while kills < args.kills and attempts < 3 * args.kills:
        kind = plan[kills]
        folder = work / f"kill{kills:02d}-try{attempts:02d}"
        attempts += 1
        process = start(config, folder)
        if kind == "write":
            save, delay = rng.randint(1, saves), rng.uniform(0.0, 0.02)
            what = f"at save {save}/{saves} (+{1000 * delay:.0f} ms)"
            killed = kill_in_save(process, folder, save, delay)
        else:
            moment = rng.uniform(0.05, 0.95) * wall
            what = f"at {moment:.1f} s"
            killed = kill_at(process, moment)
        if not killed:  # the run ended first: no kill, draw again
            finish(process, timeout=60)
            print(f"  {folder.name}: the run ended before the kill {what}; drawn again", flush=True)
            continue
        process.log.close()  # type: ignore[attr-defined]
        kills += 1
        left = tmp_folders(folder)
        in_write = bool(left)
        during_writes += in_write
        checkpoints = sorted(
            (p.name for p in (folder / "checkpoints").glob("checkpoint-*")), key=lambda n: int(n.split("-")[1])
        ) if (folder / "checkpoints").is_dir() else []  # fmt: skip
        status = finish(start(config, folder, "--resume", "latest"), timeout=1800)
        if status != 0:
            same, note = False, f"the resumed run failed (exit {status}; {folder.name}-resume.log)"
        else:
            weights, results = outcome(folder)
            same_weights, same_metrics = weights == ref_weights, metrics(results) == metrics(ref_results)
            same = same_weights and same_metrics
            note = "identical" if same else f"DIFFERENT (weights {same_weights}, metrics {same_metrics})"
        identical += same
        if not same:
            failures.append(folder.name)
        print(
            f"  kill {kills:2d} {what}: {'during a checkpoint write ' + str(left) if in_write else 'not in a write'}"
            f"; last checkpoint {checkpoints[-1] if checkpoints else None} -> resumed: {note}",
            flush=True,
        )
    print(f"kills: {kills}, during checkpoint writes: {during_writes}, identical: {identical}/{kills}")
    if failures:
        print(f"differing or failed: {failures} (under {work})")
    return 0 if identical == kills == args.kills else 1


if __name__ == "__main__":
    sys.exit(main())
