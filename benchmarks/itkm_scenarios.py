"""Does learning several scenarios together beat learning each alone? ITKM and its ablations on
the SynthPeds scenarios, each evaluated under its own protocol.

    python benchmarks/itkm_scenarios.py                      # 3 seeds, the shipped config
    python benchmarks/itkm_scenarios.py --seeds 0 --jobs 2   # one seed, two runs at a time
    python benchmarks/itkm_scenarios.py --budget half --jobs 2   # every stage at half its epochs

Every ITKM row runs ``recipes/itkm.py`` with ``recipes/configs/itkm_synthpeds.yaml`` — the same
stage epochs for every row — and reads no identity label. Rows:

- **SynthCLIP zero-shot**: the recipe with every stage at 0 epochs (no scenario embedding).
- **ITKM, each scenario alone**: three runs per seed, each trained and evaluated on one scenario.
- **ITKM, all scenarios**: one model on the three scenarios at once.
- **w/o scenario embedding / separation loss / heterogeneous matching / dynamic text update**:
  one component switched off.
- **CLIP-ReID, supervised (ceiling)**: ``recipes/clip_reid.py`` on each scenario *with* its
  identity labels, stage 1 as long as ITKM's stage II and stage 2 as long as ITKM's stages I + III.

It prints a markdown table (mAP / Rank-1 in %, mean ± std over seeds, per scenario and protocol,
with run times) and the verdict on "multi-scenario beats per-scenario": for each scenario's main
protocol, the difference of the means against the sum of the two rows' standard deviations.
Runs whose results exist under ``--output_dir`` are reused.
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

from hf_reid.training import load_config  # noqa: E402

logger = logging.getLogger("itkm_scenarios")

CONFIG = ROOT / "recipes" / "configs" / "itkm_synthpeds.yaml"
CLIP_REID_CONFIG = ROOT / "recipes" / "configs" / "clip_reid_synthpeds.yaml"
SCENARIOS = {
    "ltcc": {"layout": "ltcc", "options": "[{protocol: standard}, {protocol: clothes_changing}]"},
    "sysu_mm01": {"layout": "sysu_mm01", "options": "[{mode: all}, {mode: indoor}]"},
    "mlr_cuhk03": {"layout": "mlr_cuhk03", "options": None},
}
COLUMNS = [
    ("SynthPeds ltcc (standard)", "LTCC standard"),
    ("SynthPeds ltcc (clothes_changing)", "LTCC clothes-changing"),
    ("SynthPeds sysu_mm01 (all_search)", "SYSU all-search"),
    ("SynthPeds sysu_mm01 (indoor_search)", "SYSU indoor-search"),
    ("SynthPeds mlr_cuhk03", "MLR-CUHK03"),
]
MAIN = {"ltcc": "SynthPeds ltcc (clothes_changing)", "sysu_mm01": "SynthPeds sysu_mm01 (all_search)",
        "mlr_cuhk03": "SynthPeds mlr_cuhk03"}  # fmt: skip
ALL = "ITKM, all scenarios"
ALONE = "ITKM, each scenario alone"
ABLATIONS = {
    ALL: [],
    "w/o scenario embedding": ["--model.use_sie", "false"],
    "w/o separation loss": ["--model.separation_loss_weight", "0"],
    "w/o heterogeneous matching": ["--matching.cluster_level", "false", "--matching.instance_level", "false"],
    "w/o dynamic text update": ["--matching.text_update", "static"],
}


def scenario_arguments(scenario: str) -> list[str]:
    """Overrides that train and evaluate one scenario only (its protocols kept)."""
    spec = SCENARIOS[scenario]
    args = ["--data.layout", spec["layout"], "--data.layouts", "{}", "--data.train_domains", f"[{scenario}]",
            "--data.eval_domains", f"[{scenario}]"]  # fmt: skip
    options = f"{{{scenario}: {spec['options']}}}" if spec["options"] else "{}"
    return [*args, "--data.eval_options", options]


BUDGETS = {"shipped": 1.0, "half": 0.5}
"""Epoch scale of every stage of every trained row (the same for all rows of one table)."""


def stage_epochs(cfg, scale: float) -> dict[str, int]:
    """Stage -> ``scale`` times its shipped epochs (at least one), for every ITKM stage."""
    return {s: max(1, round(scale * getattr(cfg, s).epochs)) for s in ("stage1", "stage2", "stage3")}


def budget_arguments(cfg, scale: float) -> list[str]:
    """Overrides giving every ITKM stage ``scale`` times its shipped epochs (at least one)."""
    if scale == 1.0:
        return []
    return [arg for stage, n in stage_epochs(cfg, scale).items() for arg in (f"--{stage}.epochs", str(n))]


def per_scenario_runs(
    recipe: str, config: Path, output: Path, seeds: list[int], extra: list[str]
) -> list[list[RecipeRun]]:
    """Per seed, one ``recipe`` run for each scenario, trained and evaluated on it alone (run
    folders named ``<recipe> <scenario>``), with the overrides ``extra``."""
    return [
        [
            RecipeRun(
                recipe,
                config,
                output / run_folder(f"{recipe} {s}", seed),
                seed,
                [*scenario_arguments(s), *extra],
            )
            for s in SCENARIOS
        ]
        for seed in seeds
    ]


def plan(seeds: list[int], output: Path, scale: float = 1.0) -> dict[str, list[list[RecipeRun]]]:
    """Row name -> per seed, the runs whose results make up the row (``scale``: the epochs of every
    stage relative to the shipped config; run folders of another budget get their own names)."""
    cfg = load_config(_recipe_config(), CONFIG)
    budget = budget_arguments(cfg, scale)
    if budget:
        output = output / f"budget_{scale:g}"
    epochs = stage_epochs(cfg, scale)
    image_epochs = epochs["stage1"] + epochs["stage3"]
    zero = [
        "--stage1.epochs",
        "0",
        "--stage2.epochs",
        "0",
        "--stage3.epochs",
        "0",
        "--model.use_sie",
        "false",
    ]
    rows: dict[str, list[list[RecipeRun]]] = {
        "SynthCLIP zero-shot": [[RecipeRun("itkm", CONFIG, output / "synthclip_zero_shot", 0, zero)]]
    }
    rows[ALONE] = per_scenario_runs("itkm", CONFIG, output, seeds, budget)
    for name, extra in ABLATIONS.items():
        rows[name] = [
            [RecipeRun("itkm", CONFIG, output / run_folder(name, seed), seed, [*extra, *budget])]
            for seed in seeds
        ]
    ceiling = ["--stage1.epochs", str(epochs["stage2"]), "--stage2.epochs", str(image_epochs),
               "--stage2.milestones", f"[{image_epochs}]"]  # fmt: skip
    rows["CLIP-ReID, supervised (ceiling)"] = per_scenario_runs(
        "clip_reid", CLIP_REID_CONFIG, output, seeds, ceiling
    )
    return rows


def _recipe_config():
    import itkm

    return itkm.ITKMRecipeConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs at a time (each gets cores // jobs threads)"
    )
    parser.add_argument("--output_dir", type=Path, default=ROOT / "runs" / "itkm_scenarios")
    parser.add_argument(
        "--budget",
        choices=sorted(BUDGETS),
        default="shipped",
        help="epochs of every stage (default: shipped)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    rows = plan(args.seeds, args.output_dir, BUDGETS[args.budget])
    print(f"ITKM on the SynthPeds scenarios, budget {args.budget}, seeds {args.seeds}\n")
    flat = [run for per_seed in rows.values() for runs in per_seed for run in runs]
    outcomes = dict(zip((id(r) for r in flat), run_recipes(flat, args.jobs), strict=True))

    table: dict[str, dict[str, list[float]]] = {}
    header = "| method | " + " | ".join(f"{label} mAP / R1" for _, label in COLUMNS) + " | run time (s) |"
    lines = [header, "|---" * (len(COLUMNS) + 2) + "|"]
    for name, per_seed in rows.items():
        values: dict[str, list[float]] = {}
        times = []
        for runs in per_seed:
            merged: dict[str, dict] = {}
            seconds = 0.0
            for run in runs:
                results, train = outcomes[id(run)]
                merged.update(results)
                seconds += train.get("total_seconds", 0.0)
            times.append(seconds)
            for key, _ in COLUMNS:
                if key in merged:
                    values.setdefault(f"{key}/mAP", []).append(merged[key]["mAP"])
                    values.setdefault(f"{key}/R1", []).append(merged[key]["rank-1"])
        table[name] = values
        cells = [
            f"{cell(values[f'{k}/mAP'])} / {cell(values[f'{k}/R1'])}" if f"{k}/mAP" in values else "–"
            for k, _ in COLUMNS
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {np.mean(times):.0f} |")
    print("\n".join(lines))
    print()
    for scenario, key in MAIN.items():
        together, alone = table[ALL][f"{key}/mAP"], table[ALONE][f"{key}/mAP"]
        gain = 100 * (np.mean(together) - np.mean(alone))
        spread = 100 * (np.std(together) + np.std(alone))
        verdict = "HOLDS" if gain > spread else "DOES NOT HOLD"
        if len(together) < 2:
            verdict = "no verdict from one seed (no spread)"
        print(f"{scenario} ({key}): all scenarios vs alone {gain:+.1f} mAP (spread {spread:.1f}): {verdict}")


if __name__ == "__main__":
    main()
