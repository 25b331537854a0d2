"""One generalization leaderboard on SynthPeds: every method under one protocol, with the
single-camera set as ReText's premise has it (issue #15).

    python benchmarks/generalization_leaderboard.py --dry_run           # the planned runs, nothing run
    python benchmarks/generalization_leaderboard.py --jobs 2            # 3 seeds, shipped budget (hours)
    python benchmarks/generalization_leaderboard.py --jobs 2 --budget double
    python benchmarks/generalization_leaderboard.py --jobs 2 --budget double --variants diverse \
        --rows base identities retext                                   # the verdicts' rows only

Protocol: train on the multi-camera source domains d0, d1, d2 (plus the single-camera captioned
set where a method uses it), test on the unseen domain d3, whose camera styles no training or
pretraining image has; every trained row spends the same image-encoder steps (the ReText
config's, 408 at the shipped budget; ``--budget double`` doubles every image-encoder epoch count
and schedule milestone, warm-up unchanged); seeds 0, 1, 2; d3 mAP / Rank-1 in %, mean ± std;
mean run time of a run.

Two columns, one per kind of single-camera set (``--captioned_identities`` identities each, 2,000
by default, against 360 multi-camera training identities, so both columns differ only in style):

- ``sources``: SynthPeds' captioned set as shipped: 9 cameras drawn from the source domains' styles.
- ``diverse``: every identity filmed by a camera of its own at a place of its own (designed styles
  other than the held-out domain's, moved; never the held-out style distribution; ``hf-reid synth
  --captioned-styles diverse``, docs/SYNTHPEDS.md): cheap single-camera data from many places.

Rows that use no single-camera data (SynthCLIP zero-shot, the CLIP-ReID recipe, the base, CLIP-FGDI)
run once and fill both columns. Rows: SynthCLIP zero-shot; CLIP-ReID recipe, two-stage
(``retext_generalization.two_stage_args``); CLIP-ReID base (multi-camera only); base + single-camera
images as identities (no text); ReText; ReText w/o reconstruction; ReText w/o structure; CLIP-FGDI
(paper sign). Two verdicts on the diverse column, each the difference of the means against the
sum of the two rows' standard deviations: (a) does diverse single-camera data improve d3
(identities row vs base)? (b) does text improve on that (ReText vs identities row)?

Runs whose results exist are reused: under ``--output_dir``, and, for runs identical to theirs (the
shipped budget, the shipped captioned set), those of ``benchmarks/retext_generalization.py`` and
``benchmarks/clip_fgdi_generalization.py`` under ``runs/``. The single-camera sets are generated
before any run (``data/synthpeds_<styles>_<identities>``; the multi-camera domains there are
byte-identical to ``data/synthpeds``'s).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "recipes"))

import clip_fgdi_generalization as fgdi_benchmark  # noqa: E402
import retext_generalization as retext_benchmark  # noqa: E402
from recipe_runs import RecipeRun, cell, finished_folder, run_folder, run_recipes  # noqa: E402

from hf_reid.data.synthetic import CAPTIONED_STYLES, get_preset  # noqa: E402
from hf_reid.metrics.plots import headless_figure  # noqa: E402
from hf_reid.training import display_name, load_config, prepare_synthpeds  # noqa: E402

logger = logging.getLogger("generalization_leaderboard")

RETEXT_CONFIG = fgdi_benchmark.RETEXT_CONFIG
SHIPPED_CAPTIONED_SET = retext_benchmark.SHIPPED_CAPTIONED_SET
"""The shipped set's folder, ``data.root`` of the config the plan starts from (the config itself
trains on the diverse set; every column here is spelled out)."""
CLIP_REID_CONFIG = fgdi_benchmark.CLIP_REID_CONFIG
FGDI_CONFIG = fgdi_benchmark.FGDI_CONFIG
VARIANTS: tuple[str, ...] = tuple(CAPTIONED_STYLES)  # ("sources", "diverse")
BOTH = "both"
"""The column of a run that uses no single-camera data: it fills every column."""
BUDGETS = {"shipped": 1, "double": 2}
CAPTIONED_IDENTITIES = 2000

ZERO_SHOT = "SynthCLIP zero-shot"
TWO_STAGE = "CLIP-ReID recipe, two-stage"
BASE = "CLIP-ReID base (multi-camera only)"
IDENTITIES = "base + single-camera images as identities (no text)"
RETEXT = "ReText"
FGDI = "CLIP-FGDI (paper sign)"


@dataclass(frozen=True)
class Row:
    """A trained row: its recipe, whether it trains on the single-camera set, its own overrides,
    and the (benchmark folder under ``runs/``, row name) whose identical runs it may reuse."""

    recipe: str
    single_camera: bool
    extra: tuple[str, ...] = ()
    reuse: tuple[tuple[str, str], ...] = ()


_RETEXT_RUNS = "retext_generalization"
_FGDI_RUNS = "clip_fgdi_generalization"
ROWS: dict[str, Row] = {
    TWO_STAGE: Row(
        "clip_reid",
        False,
        reuse=((_RETEXT_RUNS, fgdi_benchmark.BASE), (_FGDI_RUNS, fgdi_benchmark.BASE)),
    ),
    BASE: Row(
        "retext",
        False,
        tuple(retext_benchmark.RUNS[retext_benchmark.BASE]),
        ((_RETEXT_RUNS, retext_benchmark.BASE),),
    ),
    IDENTITIES: Row(
        "retext",
        True,
        tuple(retext_benchmark.RUNS[retext_benchmark.IDENTITIES]),
        ((_RETEXT_RUNS, retext_benchmark.IDENTITIES),),
    ),
    **{
        name: Row("retext", True, tuple(retext_benchmark.RUNS[name]), ((_RETEXT_RUNS, name),))
        for name in (RETEXT, "ReText w/o reconstruction", "ReText w/o structure")
    },
    FGDI: Row("clip_fgdi", False, reuse=((_FGDI_RUNS, fgdi_benchmark.FGDI),)),
}
"""The trained rows, in table order (SynthCLIP zero-shot, untrained, comes first)."""
ROW_KEYS = {
    "two_stage": TWO_STAGE,
    "base": BASE,
    "identities": IDENTITIES,
    "retext": RETEXT,
    "retext_wo_reconstruction": "ReText w/o reconstruction",
    "retext_wo_structure": "ReText w/o structure",
    "fgdi": FGDI,
}
"""``--rows`` names of the trained rows."""


@dataclass
class PlannedRun:
    """One recipe run of the leaderboard: its row, its column (a variant, or :data:`BOTH`), and
    whether its results already exist (``reused``: nothing to run)."""

    row: str
    column: str
    run: RecipeRun
    reused: bool

    def command(self) -> str:
        r = self.run
        parts = [f"recipes/{r.recipe}.py", "--config", str(r.config), "--output_dir", str(r.output_dir)]
        parts += ["--seed", str(r.seed), *r.extra]
        return "python " + shlex.join(parts)


def fgdi_schedule(config: Path = FGDI_CONFIG) -> dict[str, Any]:
    """The image-encoder schedule of the CLIP-FGDI config (stages I and III)."""
    return yaml.safe_load(config.read_text())["image_encoder"]


def budget_overrides(budget: str, retext_epochs: int, fgdi: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(ReText-recipe overrides, CLIP-FGDI overrides) of ``budget``: none at the shipped budget;
    every image-encoder epoch count and milestone times the factor otherwise (warm-up unchanged).
    The CLIP-ReID recipe follows the ReText epochs through ``two_stage_args``."""
    factor = BUDGETS[budget]
    if factor == 1:
        return [], []
    retext = ["--optim.epochs", str(retext_epochs * factor)]
    fgdi_args = [
        "--image_encoder.prior_epochs",
        str(fgdi["prior_epochs"] * factor),
        "--image_encoder.epochs",
        str(fgdi["epochs"] * factor),
        "--image_encoder.milestones",
        json.dumps([m * factor for m in fgdi["milestones"]]),
    ]
    return retext, fgdi_args


def captioned_root(cfg, variant: str, identities: int) -> str:
    """Where the single-camera set ``variant`` of ``identities`` identities lives: the config's
    ``data.root`` for the shipped set, ``<data.root>_<variant>_<identities>`` otherwise."""
    shipped = get_preset(cfg.data.synthpeds.preset).caption_ids
    if variant == "sources" and identities == shipped:
        return cfg.data.root
    return f"{cfg.data.root}_{variant}_{identities}"


def data_overrides(cfg, variant: str, identities: int) -> list[str]:
    """ReText-recipe overrides that train on the single-camera set ``variant`` (for the shipped
    set, the ReText benchmark's own, so those runs are its runs)."""
    root = captioned_root(cfg, variant, identities)
    if root == cfg.data.root:
        return list(SHIPPED_CAPTIONED_SET)
    return [
        "--data.root",
        root,
        "--captions.root",
        f"{root}/captions",
        "--data.synthpeds.captioned_styles",
        variant,
        "--data.synthpeds.captioned_identities",
        str(identities),
    ]


def _done(folder: Path) -> bool:
    """Finished here, or archived by an earlier run (``benchmarks/results``, see recipe_runs)."""
    return finished_folder(folder) is not None


def plan_leaderboard(
    cfg,
    fgdi: dict[str, Any],
    seeds: list[int],
    budget: str = "shipped",
    variants: tuple[str, ...] = VARIANTS,
    captioned_identities: int = CAPTIONED_IDENTITIES,
    output_dir: Path = ROOT / "runs" / "generalization_leaderboard",
    runs_root: Path = ROOT / "runs",
    rows: tuple[str, ...] = tuple(ROWS),
) -> list[PlannedRun]:
    """Every recipe run of the leaderboard, in run order (seed-major, table order within a seed).

    ``cfg``: the ReText SynthPeds config at the shipped budget, on the shipped captioned set
    (:data:`SHIPPED_CAPTIONED_SET`; ``data.root``, ``data.synthpeds``,
    ``data.train_domains`` / ``eval_domains``, ``optim.epochs``); ``fgdi``: :func:`fgdi_schedule`.
    Runs of rows without single-camera data appear once (column :data:`BOTH`). A run goes to
    ``output_dir/<budget>/<column>/<row>_seed<k>``, unless an identical run of the ReText or
    CLIP-FGDI benchmark has finished under ``runs_root``: that one is reused. ``rows``: the
    trained rows to plan (names of :data:`ROWS`), in table order whatever their order here.
    """
    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {list(BUDGETS)}, got {budget!r}")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ValueError(f"variants must be a non-empty subset of {list(VARIANTS)}, got {list(variants)}")
    retext_budget, fgdi_budget = budget_overrides(budget, cfg.optim.epochs, fgdi)
    budget_cfg = copy.deepcopy(cfg)
    budget_cfg.optim.epochs = cfg.optim.epochs * BUDGETS[budget]
    two_stage = retext_benchmark.two_stage_args(budget_cfg)
    planned = []
    unknown_rows = [name for name in rows if name not in ROWS]
    if unknown_rows or not rows:
        raise ValueError(f"rows must be a non-empty subset of {list(ROWS)}, got {list(rows)}")
    for seed in seeds:
        for name, row in ROWS.items():
            if name not in rows:
                continue
            for column in variants if row.single_camera else (BOTH,):
                if row.single_camera:
                    data = data_overrides(cfg, column, captioned_identities)
                else:  # the shipped folder, whose multi-camera domains every set shares
                    data = list(SHIPPED_CAPTIONED_SET)
                if row.recipe == "clip_reid":
                    config, extra = CLIP_REID_CONFIG, two_stage
                elif row.recipe == "clip_fgdi":
                    config, extra = FGDI_CONFIG, fgdi_budget
                else:
                    config, extra = RETEXT_CONFIG, [*row.extra, *retext_budget, *data]
                folder_name = column if column == BOTH else f"{column}_{captioned_identities}"
                output = output_dir / budget / folder_name / run_folder(name, seed)
                # The other benchmarks ran the shipped budget on the shipped data only.
                if not _done(output) and budget == "shipped" and data == SHIPPED_CAPTIONED_SET:
                    theirs = [
                        runs_root / bench / run_folder(their_name, seed) for bench, their_name in row.reuse
                    ]
                    output = next((folder for folder in theirs if _done(folder)), output)
                run = RecipeRun(row.recipe, config, output, seed, list(extra))
                planned.append(PlannedRun(name, column, run, _done(output)))
    return planned


def _data_args(cfg, variant: str, identities: int):
    """``cfg.data`` pointed at the single-camera set ``variant`` (for ``prepare_synthpeds``)."""
    synth = dataclasses.replace(cfg.data.synthpeds, captioned_styles=variant, captioned_identities=identities)
    return dataclasses.replace(cfg.data, root=captioned_root(cfg, variant, identities), synthpeds=synth)


def verdict(rows: dict, better: str, worse: str, column: str, target: str) -> tuple[float, float, str]:
    """(gain in mAP points, spread, answer) of row ``better`` over row ``worse`` in ``column``: YES
    when the difference of the means exceeds the sum of the two rows' standard deviations."""
    a = [m["mAP"] for m in rows[better][column]]
    b = [m["mAP"] for m in rows[worse][column]]
    gain, spread = 100 * (np.mean(a) - np.mean(b)), 100 * (np.std(a) + np.std(b))
    if min(len(a), len(b)) < 2:
        return gain, spread, "no verdict from one seed (no spread)"
    return gain, spread, "YES" if gain > spread else "NO"


def plot_leaderboard(rows: dict, variants: tuple[str, ...], title: str, path: Path) -> None:
    """The target's mAP per row and column as a dot plot (mean, whiskers one standard deviation,
    small dots the seeds): differences of a point or two show, which bars from zero hide."""
    names = list(rows)
    figure = headless_figure(9, 0.45 * len(names) + 1.4)
    axes = figure.add_subplot(1, 1, 1)
    offset = 0.36 / max(1, len(variants) - 1)
    colors = dict(zip(VARIANTS, ("#7f7f7f", "#1f77b4"), strict=True))
    for v, variant in enumerate(variants):
        for r, name in enumerate(names):
            values = 100 * np.array([entry["mAP"] for entry in rows[name][variant]])
            y = r + (v - (len(variants) - 1) / 2) * offset
            spread = values.std() if len(values) > 1 else None
            label = variant if r == 0 else None
            axes.errorbar(
                values.mean(), y, xerr=spread, fmt="o", color=colors[variant], label=label, capsize=3
            )
            axes.plot(values, np.full(len(values), y), ".", color=colors[variant], markersize=3, alpha=0.6)
    axes.set_yticks(range(len(names)), names, fontsize=8)
    axes.set_ylim(len(names) - 0.5, -0.5)
    axes.set_xlabel("mAP on the unseen domain (%)")
    axes.set_title(title, fontsize=9)
    axes.legend(title="single-camera set", fontsize=8, title_fontsize=8)
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", choices=list(BUDGETS), default="shipped", help="image-encoder steps")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument(
        "--captioned_identities",
        type=int,
        default=CAPTIONED_IDENTITIES,
        help="identities of each single-camera set (400: the shipped set, whose sources runs are the "
        "ReText benchmark's)",
    )
    parser.add_argument(
        "--rows", nargs="+", choices=list(ROW_KEYS), default=list(ROW_KEYS), help="trained rows"
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (each with cores // jobs threads)")
    parser.add_argument("--output_dir", type=Path, default=ROOT / "runs" / "generalization_leaderboard")
    parser.add_argument("--dry_run", action="store_true", help="print the planned runs and their arguments")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    import retext

    cfg = load_config(retext.ReTextRecipeConfig, RETEXT_CONFIG, SHIPPED_CAPTIONED_SET)
    variants = tuple(dict.fromkeys(args.variants))
    planned = plan_leaderboard(
        cfg,
        fgdi_schedule(),
        args.seeds,
        args.budget,
        variants,
        args.captioned_identities,
        args.output_dir,
        rows=tuple(ROW_KEYS[key] for key in args.rows),
    )
    roots = {v: captioned_root(cfg, v, args.captioned_identities) for v in variants}
    if args.dry_run:
        todo = sum(not p.reused for p in planned)
        print(
            f"Leaderboard plan: budget {args.budget}, seeds {args.seeds}, {args.captioned_identities} "
            f"single-camera identities per variant; {len(planned)} runs, {len(planned) - todo} reused, "
            f"{todo} to run."
        )
        print(f"data: {cfg.data.root} (multi-camera domains; SynthCLIP zero-shot computed there, no run)")
        for variant, root in roots.items():
            state = "present" if (Path(root) / "captions").is_dir() else "to generate"
            print(
                f"data: {root}/captions ({variant} styles, {args.captioned_identities} identities; {state})"
            )
        for p in planned:
            state = "reuse" if p.reused else "run"
            print(f"[{state}] {p.row} | column {p.column} | seed {p.run.seed}\n    {p.command()}")
        return 0

    zero_shot = retext_benchmark.untrained_rows(cfg)[ZERO_SHOT]  # also generates data.root
    for variant in variants:
        prepare_synthpeds(_data_args(cfg, variant, args.captioned_identities), extra_layouts=["captions"])
    target = display_name(cfg.data.layout, cfg.data.eval_domains[-1])
    outcomes = run_recipes([p.run for p in planned], args.jobs)
    rows: dict[str, dict[str, list[dict]]] = {ZERO_SHOT: {v: [zero_shot[target]] for v in variants}}
    seconds: dict[str, dict[str, list[float]]] = {}
    for p, (results, train) in zip(planned, outcomes, strict=True):
        for column in variants if p.column == BOTH else (p.column,):
            rows.setdefault(p.row, {}).setdefault(column, []).append(results[target])
            seconds.setdefault(p.row, {}).setdefault(column, []).append(train["total_seconds"])

    seeds = ", ".join(str(s) for s in args.seeds)
    print(
        f"\nSynthPeds generalization leaderboard: sources d0-d2 (+ the single-camera set where a row uses "
        f"it) -> unseen {target}; budget {args.budget}; seeds {seeds}; {args.captioned_identities} "
        "single-camera identities; mAP / Rank-1 in %, run time in s\n"
    )
    header = " | ".join(f"{v}: mAP | {v}: R1 | {v}: time" for v in variants)
    print(f"| method | {header} |")
    print("|---|" + "---|---|---|" * len(variants))
    for name, per_column in rows.items():
        cells = []
        for v in variants:
            entries = per_column[v]
            times = seconds.get(name, {}).get(v)
            cells += [cell([e["mAP"] for e in entries]), cell([e["rank-1"] for e in entries])]
            cells.append(f"{np.mean(times):.0f}" if times else "–")
        print(f"| {name} | {' | '.join(cells)} |")

    column = "diverse" if "diverse" in variants else variants[0]
    questions = (
        (
            IDENTITIES,
            BASE,
            f"(a) does {column} single-camera data improve {target} (identities row vs base)?",
        ),
        (RETEXT, IDENTITIES, "(b) does text improve on that (ReText vs identities row)?"),
    )
    print()
    for better, worse, question in questions:
        if better not in rows or worse not in rows:
            print(f"{question} no verdict: the row {better if better not in rows else worse!r} was not run")
            continue
        gain, spread, answer = verdict(rows, better, worse, column, target)
        others = "; ".join(
            "{} column: {:+.1f} (spread {:.1f})".format(v, *verdict(rows, better, worse, v, target)[:2])
            for v in variants
            if v != column
        )
        print(
            f"{question} {answer}: {gain:+.1f} mAP (spread {spread:.1f})" + (f" [{others}]" if others else "")
        )

    out = args.output_dir / args.budget
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "budget": args.budget,
        "seeds": args.seeds,
        "captioned_identities": args.captioned_identities,
        "data_roots": roots,
        "target": target,
        "rows": rows,
        "seconds": seconds,
        "runs": [{"row": p.row, "column": p.column, "output_dir": str(p.run.output_dir)} for p in planned],
    }
    (out / "leaderboard.json").write_text(json.dumps(summary, indent=2) + "\n")
    title = f"sources d0-d2 -> unseen {target}; budget {args.budget}; seeds {seeds}; mean ± std"
    plot_leaderboard(rows, variants, title, out / "leaderboard.png")
    print(f"\n{out / 'leaderboard.json'}, {out / 'leaderboard.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
