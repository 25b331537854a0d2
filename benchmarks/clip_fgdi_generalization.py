"""Does CLIP-FGDI beat the CLIP-ReID base on an unseen domain? FGDI and its ablations on SynthPeds'
leave-one-domain-out protocol, with the ReText table's data and image-encoder budget.

    python benchmarks/clip_fgdi_generalization.py --jobs 2              # 3 seeds
    python benchmarks/clip_fgdi_generalization.py --seeds 0 --jobs 2    # one seed

Rows: colour histogram and SynthCLIP zero-shot (no training); the CLIP-ReID recipe, two-stage,
on the same sources for the same image-encoder epochs (``retext_generalization.two_stage_args``);
FGDI with the paper's guidance sign and with the released code's; FGDI without stage II-b (no
domain-relevant prompts, no guidance), with β = 0, and without the gradient-reversal term. It
prints a markdown table of d3 mAP / Rank-1 (mean ± std over seeds) with run times, and the
verdict: FGDI (paper sign) against the CLIP-ReID base, the difference of the means against the sum
of the two rows' standard deviations. Runs whose results exist under ``--output_dir`` are reused.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "recipes"))

from recipe_runs import RecipeRun, cell, run_folder, run_recipes  # noqa: E402
from retext_generalization import SHIPPED_CAPTIONED_SET, two_stage_args, untrained_rows  # noqa: E402

from hf_reid.training import load_config  # noqa: E402

FGDI_CONFIG = ROOT / "recipes" / "configs" / "clip_fgdi_synthpeds.yaml"
RETEXT_CONFIG = ROOT / "recipes" / "configs" / "retext_synthpeds.yaml"
CLIP_REID_CONFIG = ROOT / "recipes" / "configs" / "clip_reid_synthpeds.yaml"
BASE = "CLIP-ReID recipe, two-stage"
FGDI = "FGDI (paper sign)"
ROWS = {
    FGDI: [],
    "FGDI (code sign)": ["--model.apn_sign", "code"],
    "FGDI w/o stage II-b": ["--domain_prompts.enabled", "false", "--model.apn_weight", "0"],
    "FGDI, β = 0": ["--model.apn_weight", "0"],
    "FGDI w/o gradient reversal": ["--model.grl_lambda", "0"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs at a time (each gets cores // jobs threads)"
    )
    parser.add_argument("--output_dir", type=Path, default=ROOT / "runs" / "clip_fgdi_generalization")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    import retext

    # The same sources, target and budget as the ReText benchmark's runs.
    retext_cfg = load_config(retext.ReTextRecipeConfig, RETEXT_CONFIG, SHIPPED_CAPTIONED_SET)
    runs = {BASE: ("clip_reid", CLIP_REID_CONFIG, two_stage_args(retext_cfg))}
    runs.update({name: ("clip_fgdi", FGDI_CONFIG, extra) for name, extra in ROWS.items()})
    jobs = [
        (name, RecipeRun(recipe, config, args.output_dir / run_folder(name, seed), seed, extra))
        for seed in args.seeds
        for name, (recipe, config, extra) in runs.items()
    ]
    outcomes = run_recipes([job for _, job in jobs], args.jobs)
    values: dict[str, dict[str, list[float]]] = {}
    for (name, _), (results, train) in zip(jobs, outcomes, strict=True):
        (metrics,) = results.values()
        row = values.setdefault(name, {"mAP": [], "R1": [], "seconds": []})
        row["mAP"].append(metrics["mAP"])
        row["R1"].append(metrics["rank-1"])
        row["seconds"].append(train["total_seconds"])

    lines = ["| method | d3 mAP | d3 R1 | run time (s) |", "|---|---|---|---|"]
    for name, metrics in untrained_rows(retext_cfg).items():
        (m,) = metrics.values()
        lines.append(f"| {name} | {cell([m['mAP']])} | {cell([m['rank-1']])} | – |")
    for name, row in values.items():
        lines.append(f"| {name} | {cell(row['mAP'])} | {cell(row['R1'])} | {np.mean(row['seconds']):.0f} |")
    print("\n".join(lines))
    fgdi, base = values[FGDI]["mAP"], values[BASE]["mAP"]
    gain, spread = 100 * (np.mean(fgdi) - np.mean(base)), 100 * (np.std(fgdi) + np.std(base))
    verdict = "HOLDS" if gain > spread else "DOES NOT HOLD"
    if len(args.seeds) < 2:
        verdict = "no verdict from one seed (no spread)"
    print(f"\nFGDI (paper sign) vs the CLIP-ReID base on d3: {gain:+.1f} mAP (spread {spread:.1f}; "
          f"{len(args.seeds)} seed(s)): {verdict}")  # fmt: skip


if __name__ == "__main__":
    main()
