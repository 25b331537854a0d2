"""``hf-reid eval MODEL --data DIR --layout NAME``: a model's metrics on a dataset under the
dataset's own protocol, with the recipes' evaluation (:func:`hf_reid.training.evaluate_domains`).

Writes into ``--output`` (default ``runs/eval/<model name>``) what a recipe run writes for its
evaluation: ``eval_results.json`` (``{evaluation: metrics}``), ``eval/<evaluation>/`` with that
evaluation's ``eval_results.json``, ``cmc.png`` and ``ranked_list.png``, and ``model_index.json``
(the card metadata the Hub reads). ``--update-card`` adds the results to a local model folder's
``eval_results.json`` and rewrites its model card.

Camera and scenario embeddings (SIE). A CLIP-ReID model trained with ``use_sie`` is given each
image's camera id from the dataset, as its recipe evaluates it. ITKM's scenario embedding is
indexed by the *training scenario* (its recipe's ``data.train_domains``), which no layout
records: the command uses ``--scenario`` (an index, or a folder name of the run's
``config.yaml``), else the index of the dataset folder's name in the model folder's
``config.yaml`` (what the recipe does), else scenario 0 (logged). Other models take no ids.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path
from typing import Any

from ._common import (
    add_layout_option_argument,
    add_model_arguments,
    add_on_bad_image_argument,
    embedding_fn,
    image_transform,
    layout_options,
    load_model,
    resolve_device,
    resolve_scenario,
)

PROTOCOL_OPTIONS: dict[str, tuple[str, dict[str, str]]] = {
    "ltcc": ("protocol", {"standard": "standard", "clothes_changing": "clothes_changing"}),
    "sysu_mm01": ("mode", {"all": "all", "all_search": "all", "indoor": "indoor", "indoor_search": "indoor"}),
}
"""Layouts with several protocols: the layout option ``--protocol`` sets, and its accepted values
(``hf_reid.data.layouts``: LTCC's ``protocol``, SYSU-MM01's ``mode``)."""

EXAMPLES = """\
examples:
  hf-reid eval runs/clip_reid --data data/synthpeds/synthpeds_d3 --layout synthpeds
  hf-reid eval runs/clip_reid --data /data/Market-1501-v15.09.15 --layout market1501 --output runs/eval/market
  hf-reid eval runs/itkm --data data/synthpeds/ltcc --layout ltcc --protocol standard --protocol clothes_changing
  hf-reid eval runs/itkm --data data/synthpeds/sysu_mm01 --layout sysu_mm01 --protocol indoor --scenario sysu_mm01
  hf-reid eval ORG/clip-reid-market --data /data/cuhk03-np --layout cuhk03_np --option labeled=true
  hf-reid eval runs/retext --data data/synthpeds/synthpeds_d3 --layout synthpeds --update-card

Protocols: every layout states its own (docs/PLATFORM.md); --protocol picks one where a layout has
several: ltcc standard | clothes_changing, sysu_mm01 all | indoor (10 gallery draws, mean and std).
"""


# ---------------------------------------------------------------------------------------- helpers
def evaluation_name(layout: str, folder: Path) -> str:
    """What the recipes call an evaluation of ``folder`` (``SynthPeds d0``, ``Market-1501``...)."""
    from hf_reid.training.reid_data import DATASET_NAMES, display_name

    folder = folder.resolve()
    synthetic = (folder.parent / "synthpeds_meta.json").is_file()
    if layout == "synthpeds" or synthetic:
        return display_name(layout, folder.name, synthetic)
    return DATASET_NAMES.get(layout, f"{layout} {folder.name}")


def eval_sets(args: argparse.Namespace) -> list[Any]:
    """One :class:`~hf_reid.training.EvalSet` per protocol asked for (the layout's default: one)."""
    from hf_reid.data import load_reid_dataset
    from hf_reid.training import EvalSet

    data = Path(args.data)
    if not data.is_dir():
        raise NotADirectoryError(f"--data {data}: no such folder")
    options = layout_options(args.option)
    option_sets = [options]
    if args.protocol:
        if args.layout not in PROTOCOL_OPTIONS:
            choices = "; ".join(f"{k}: {', '.join(v[1])}" for k, v in PROTOCOL_OPTIONS.items())
            raise ValueError(
                f"--protocol: the {args.layout} layout has one protocol (its own); layouts with several: {choices}"
            )
        option, values = PROTOCOL_OPTIONS[args.layout]
        wrong = [p for p in args.protocol if p not in values]
        if wrong:
            raise ValueError(f"--protocol {wrong[0]}: the {args.layout} layout has {', '.join(values)}")
        option_sets = [{**options, option: values[p]} for p in dict.fromkeys(args.protocol)]
    base = args.name or evaluation_name(args.layout, data)
    sets = []
    for extra in option_sets:
        splits = load_reid_dataset(args.layout, data, on_bad_image=args.on_bad_image, **extra)
        missing = [s for s in ("query", "gallery") if s not in splits]
        if missing:
            raise ValueError(
                f"{data} ({args.layout} layout) has no {' / '.join(missing)} split (it has {sorted(splits)}); "
                "evaluate on a dataset with query and gallery"
            )
        protocol = splits.protocol
        if protocol.pool_options:  # trials drawn from pools (SYSU-MM01's gallery draws)
            splits = load_reid_dataset(
                args.layout, data, on_bad_image=args.on_bad_image, **{**extra, **protocol.pool_options}
            )
        name = f"{base} ({protocol.name})" if len(option_sets) > 1 else base
        sets.append(EvalSet(name, splits["query"], splits["gallery"], data, protocol))
    return sets


def default_output(model: str) -> Path:
    return Path("runs") / "eval" / Path(model.rstrip("/")).name


def summary_lines(results: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for name, m in results.items():
        trials = f", mean of {m['num_trials']} trials" if m.get("num_trials", 1) > 1 else ""
        cells = ", ".join(
            f"{label} {100 * m[key]:.1f}"
            for key, label in (("mAP", "mAP"), ("rank-1", "R1"), ("rank-5", "R5"), ("rank-10", "R10"))
            if key in m
        )
        lines.append(
            f"  {name} [{m.get('protocol', 'standard')}{trials}]: {cells}, mINP {100 * m['mINP']:.1f}"
        )
    return lines


# ----------------------------------------------------------------------------------------- command
def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a model on a dataset under the dataset's protocol (metrics, CMC, ranked lists)",
        description=textwrap.fill(
            "Embed the query and gallery of DIR (read as the NAME layout) with MODEL's "
            "get_image_embeddings and rank them under the layout's protocol, as the recipes evaluate: "
            "mAP, CMC (rank-1/5/10), mINP. Writes eval_results.json, model_index.json and per "
            "evaluation eval/<name>/ (eval_results.json, cmc.png, ranked_list.png) into --output.",
            width=90,
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL", help="hf_reid model folder or Hub id")
    parser.add_argument("--data", required=True, metavar="DIR", help="the dataset folder")
    parser.add_argument(
        "--layout",
        required=True,
        metavar="NAME",
        help="its layout: market1501, synthpeds, ltcc, ... (docs/LAYOUTS.md)",
    )
    parser.add_argument(
        "--protocol",
        action="append",
        metavar="NAME",
        help="ltcc: standard | clothes_changing; sysu_mm01: all | indoor; repeat for several (default: the layout's)",
    )
    add_layout_option_argument(
        parser, help="a layout option, e.g. labeled=true (cuhk03_np), msmt_version=v2; repeatable"
    )
    parser.add_argument("--output", default=None, metavar="DIR", help="default: runs/eval/<model name>")
    parser.add_argument(
        "--name", default=None, help="the evaluation's name in results (default: as the recipes name it)"
    )
    parser.add_argument(
        "--metric",
        choices=("euclidean", "sqeuclidean", "cosine"),
        default="euclidean",
        help="default: euclidean",
    )
    parser.add_argument(
        "--max-rank", type=int, default=50, metavar="N", help="length of the CMC curve (default: 50)"
    )
    parser.add_argument(
        "--ranked-list-queries",
        type=int,
        default=8,
        metavar="N",
        help="queries in ranked_list.png (default: 8)",
    )
    parser.add_argument("--no-plots", action="store_true", help="no cmc.png / ranked_list.png")
    add_on_bad_image_argument(parser, help="unreadable images: stop (default) or skip")
    parser.add_argument(
        "--update-card",
        action="store_true",
        help="MODEL is a local folder: add the results to its eval_results.json and rewrite its README.md card",
    )
    add_model_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from accelerate import Accelerator

    from hf_reid.hub import model_index
    from hf_reid.training import DataArgs, EvalArgs, evaluate_domains

    if args.update_card and not Path(args.model, "config.json").is_file():
        raise ValueError(f"--update-card: {args.model} is not a local model folder")
    device = resolve_device(args.device)
    sets = eval_sets(args)
    model, processor = load_model(args.model, device)
    scenario = resolve_scenario(model, args.model, args.scenario, Path(args.data).resolve())
    output = Path(args.output) if args.output else default_output(args.model)
    accelerator = Accelerator(cpu=device.type == "cpu")
    results = evaluate_domains(
        sets,
        embedding_fn(model, scenario),
        model=model,
        transform=image_transform(processor),
        data_args=DataArgs(eval_batch_size=args.batch_size, num_workers=args.num_workers),
        eval_args=EvalArgs(
            metric=args.metric,
            max_rank=args.max_rank,
            plots=not args.no_plots,
            ranked_list_queries=args.ranked_list_queries,
        ),
        normalize=bool(getattr(model.config, "feature_norm", True)),
        output_dir=output,
        accelerator=accelerator,
        progress_bar=not args.no_progress,
    )
    for entry in results.values():
        entry["model"] = args.model
        if scenario is not None:
            entry["scenario"] = scenario
    output.mkdir(parents=True, exist_ok=True)
    (output / "eval_results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    numbers = {name: {k: v for k, v in m.items() if isinstance(v, float)} for name, m in results.items()}
    index = model_index(numbers, Path(args.model.rstrip("/")).name)
    (output / "model_index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    print(f"{args.model}: results (%)")
    print("\n".join(summary_lines(results)))
    print(f"Results, plots and model-index entries: {output.resolve()}")
    if args.update_card:
        from hf_reid.hub import write_run_card

        folder = Path(args.model)
        path = folder / "eval_results.json"
        merged = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        if isinstance(merged, dict) and "mAP" in merged:  # one evaluation's file: keep it as one entry
            merged = {str(merged.get("dataset", "result")): merged}
        elif not isinstance(merged, dict):
            merged = {}
        merged.update(results)
        path.write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")
        print(f"Model card with {len(merged)} evaluation(s): {write_run_card(folder)}")
    return 0
