"""Is SynthCLIP reproducible? Re-train it with the shipped seed and with other seeds, and compare
the zero-shot numbers with those shipped in ``hf_reid/assets/synthclip/zeroshot_results.json``.

    python benchmarks/synthclip_reproducibility.py                  # seeds 0 (shipped) and 1
    python benchmarks/synthclip_reproducibility.py --seeds 0 1 2

Each run is ``recipes/pretrain_clip.py --config recipes/configs/pretrain_clip_synthpeds.yaml
--seed S`` in a subprocess (the package's SynthCLIP is never overwritten; ``make synthclip`` does
that). The seed-0 run checks reproducibility with the shipped seed; the other seeds measure the
spread that training randomness alone gives, the yardstick for "matches". It prints a table of
every run's zero-shot numbers and wall time, the shipped row, and the verdict.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "hf_reid" / "assets" / "synthclip" / "zeroshot_results.json"
COLUMNS = {
    "t2i R@1": ("text_to_image", "R@1"),
    "t2i R@10": ("text_to_image", "R@10"),
    "d0 mAP": ("in_domain", "mAP"),
    "d0 R1": ("in_domain", "rank-1"),
    "d3 mAP": ("unseen_domain", "mAP"),
    "d3 R1": ("unseen_domain", "rank-1"),
}


def values(results: dict) -> dict[str, float]:
    return {name: 100 * results[group][key] for name, (group, key) in COLUMNS.items()}


def pretrain(config: Path, output_dir: Path, seed: int) -> tuple[dict, float]:
    results_file = output_dir / "zeroshot_results.json"
    start = time.perf_counter()
    if not results_file.is_file():
        command = [sys.executable, str(ROOT / "recipes" / "pretrain_clip.py"), "--config", str(config)]
        command += ["--output_dir", str(output_dir), "--seed", str(seed)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-4000:]}")
    return json.loads(results_file.read_text()), time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config", type=Path, default=ROOT / "recipes" / "configs" / "pretrain_clip_synthpeds.yaml"
    )
    parser.add_argument("--output_dir", type=Path, default=ROOT / "runs" / "synthclip_reproducibility")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args(argv)

    shipped = values(json.loads(SHIPPED.read_text()))
    runs = {}
    for seed in args.seeds:
        results, seconds = pretrain(args.config, args.output_dir / f"seed{seed}", seed)
        runs[seed] = (values(results), results.get("train_seconds", seconds))

    print("\nSynthCLIP zero-shot, re-trained (%, wall time on this machine)\n")
    print("| run | " + " | ".join(COLUMNS) + " | train (s) |")
    print("|---|" + "---|" * (len(COLUMNS) + 1))
    print("| shipped (seed 0) | " + " | ".join(f"{shipped[c]:.1f}" for c in COLUMNS) + " | – |")
    for seed, (row, seconds) in runs.items():
        print(f"| seed {seed} | " + " | ".join(f"{row[c]:.1f}" for c in COLUMNS) + f" | {seconds:.0f} |")

    other = [row for seed, (row, _) in runs.items() if seed != 0]
    if 0 in runs:
        diff = {c: runs[0][0][c] - shipped[c] for c in COLUMNS}
        print("\nseed 0 minus shipped: " + ", ".join(f"{c} {d:+.2f}" for c, d in diff.items()))
        if other:
            every = [shipped, runs[0][0], *other]
            spread = {c: float(np.ptp([r[c] for r in every])) for c in COLUMNS}
            print(
                "range over all runs (seed spread): " + ", ".join(f"{c} {s:.2f}" for c, s in spread.items())
            )
            inside = all(abs(diff[c]) <= spread[c] for c in COLUMNS)
            print(f"Reproducible within the seed spread: {'yes' if inside else 'NO'}")
    (args.output_dir / "reproducibility.json").write_text(
        json.dumps({"shipped": shipped, "runs": {str(s): r for s, r in runs.items()}}, indent=2) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
