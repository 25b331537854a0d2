"""Run every hf_reid benchmark in turn (``make bench``) and print their tables.

Each benchmark is its own script (run one alone for its options); this runner executes them as
subprocesses, so one's memory and threads never affect the next, and reports which ones missed
their targets. Extra arguments are not forwarded: the defaults are the published settings.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

BENCHMARKS = [
    ("SynthPeds generation speed", ["synth_speed.py"]),
    ("Training input pipeline speed", ["pipeline_speed.py"]),
    ("SynthPeds difficulty report", ["synthpeds_difficulty.py"]),
    ("Evaluation and re-ranking speed", ["eval_speed.py", "--scale", "market"]),
    ("CLIP-ReID model efficiency", ["model_efficiency.py"]),
]


def main() -> int:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    failed = []
    for title, argv in BENCHMARKS:
        print(f"\n## {title}  (python benchmarks/{' '.join(argv)})\n", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, str(HERE / argv[0]), *argv[1:]], env=env)
        print(f"\n[{title}: exit {code}, {time.perf_counter() - start:.0f} s]", flush=True)
        if code != 0:
            failed.append(title)
    if failed:
        print(f"\nMissed targets or failed: {', '.join(failed)}")
        return 1
    print("\nAll benchmarks met their targets.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
