"""CLIP-ReID on SynthPeds with and without the stage-1 prompts, against two baselines.

    python benchmarks/clip_reid_ablation.py                      # the synthpeds config, seed 0
    python benchmarks/clip_reid_ablation.py --seeds 0 1 2        # mean ± std over seeds

Rows of the markdown table it prints (mAP and Rank-1 on every evaluation domain of the config):

- **colour histogram**: HSV histograms of the upper and lower halves of the crop (the feature of
  ``synthpeds_difficulty.py``), Euclidean distance; no learning.
- **SynthCLIP zero-shot**: the projected image embedding of the CLIP the recipe starts from,
  L2-normalised (``hf_reid.zero_shot.zero_shot_reid``); no Re-ID training.
- **CLIP-ReID, no prompts**: ``recipes/clip_reid.py --stage1.enabled false``: the paper's baseline,
  the image encoder fine-tuned with the ID and triplet losses only.
- **CLIP-ReID**: the full two-stage recipe (stage-1 prompts, then ID + triplet + image-to-text).

Each recipe run is ``python recipes/clip_reid.py --config CONFIG --output_dir OUT/<run>`` in a
subprocess, so its timings are those of a plain run (also printed). Extra arguments after ``--``
go to every recipe run, e.g. ``-- --stage2.epochs 20``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "recipes"))

from recipe_runs import cell, run_folder, run_recipe  # noqa: E402
from synthpeds_difficulty import color_histogram, euclidean  # noqa: E402

from hf_reid.data import load_reid_dataset  # noqa: E402
from hf_reid.metrics import evaluate_rank  # noqa: E402
from hf_reid.synthclip import resolve_clip_path  # noqa: E402
from hf_reid.training import display_name, domain_dir, load_config, prepare_synthpeds  # noqa: E402

logger = logging.getLogger("clip_reid_ablation")

RUNS = {"CLIP-ReID, no prompts": ["--stage1.enabled", "false"], "CLIP-ReID": []}


def histogram_baseline(query, gallery) -> dict[str, float]:
    q = np.stack([color_histogram(image) for image in query["image"]])
    g = np.stack([color_histogram(image) for image in gallery["image"]])
    result = evaluate_rank(
        euclidean(q, g),
        np.asarray(query["pid"]),
        np.asarray(gallery["pid"]),
        np.asarray(query["camid"]),
        np.asarray(gallery["camid"]),
    )
    return result.to_dict()


def baselines(cfg, recipe) -> dict[str, dict[str, dict[str, float]]]:
    """Colour histogram and zero-shot CLIP on every evaluation domain of the config."""
    from transformers import CLIPModel

    from hf_reid.zero_shot import zero_shot_reid

    prepare_synthpeds(cfg.data)
    clip = CLIPModel.from_pretrained(resolve_clip_path(cfg.model.clip_name_or_path)).eval()
    height, width = cfg.model.image_size
    zero_shot = "SynthCLIP zero-shot" if cfg.model.clip_name_or_path == recipe.SYNTHCLIP else "CLIP zero-shot"
    rows: dict[str, dict[str, dict[str, float]]] = {"colour histogram": {}, zero_shot: {}}
    for domain in cfg.data.eval_domains:
        splits = load_reid_dataset(cfg.data.layout, domain_dir(Path(cfg.data.root), domain))
        name = display_name(cfg.data.layout, domain)
        rows["colour histogram"][name] = histogram_baseline(splits["query"], splits["gallery"])
        rows[zero_shot][name] = zero_shot_reid(
            clip, splits["query"], splits["gallery"], height=height, width=width
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config", type=Path, default=ROOT / "recipes" / "configs" / "clip_reid_synthpeds.yaml"
    )
    parser.add_argument("--output_dir", type=Path, default=ROOT / "runs" / "clip_reid_ablation")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("extra", nargs="*", help="recipe overrides, after --")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    import clip_reid as recipe

    cfg = load_config(recipe.CLIPReIDRecipeConfig, args.config, args.extra)
    rows: dict[str, dict[str, list[dict]]] = {}
    for name, metrics in baselines(cfg, recipe).items():
        rows[name] = {domain: [m] for domain, m in metrics.items()}
    seconds: dict[str, list[float]] = {}
    for seed in args.seeds:
        for name, run_args in RUNS.items():
            results, train = run_recipe(
                "clip_reid",
                args.config,
                args.output_dir / run_folder(name, seed),
                seed,
                [*run_args, *args.extra],
            )
            for domain, metrics in results.items():
                rows.setdefault(name, {}).setdefault(domain, []).append(metrics)
            seconds.setdefault(name, []).append(train["total_seconds"])

    domains = list(next(iter(rows.values())))
    seeds = ", ".join(str(s) for s in args.seeds)
    print(f"\nCLIP-ReID ablation ({args.config.name}, seed(s) {seeds}; mAP / Rank-1 in %)\n")
    header = " | ".join(f"{d} mAP | {d} R1" for d in domains)
    print(f"| method | {header} | run time (s) |")
    print("|---|" + "---|---|" * len(domains) + "---|")
    for name, per_domain in rows.items():
        cells = []
        for domain in domains:
            entries = per_domain[domain]
            cells += [cell([e["mAP"] for e in entries]), cell([e["rank-1"] for e in entries])]
        time_cell = f"{np.mean(seconds[name]):.0f}" if name in seconds else "–"
        print(f"| {name} | {' | '.join(cells)} | {time_cell} |")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    summary = {"config": str(args.config), "seeds": args.seeds, "rows": rows, "seconds": seconds}
    (args.output_dir / "ablation.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
