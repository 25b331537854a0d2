"""The data side every Re-ID recipe shares: typed data/train/eval arguments, SynthPeds on first
use, the training and evaluation domains, and the evaluation loaders.

A recipe's config holds ``data: DataArgs``, ``train: TrainArgs`` and ``eval: EvalArgs``; then

    prepare_synthpeds(cfg.data)           # generate SynthPeds into data.root if a domain is missing
    data = load_data(cfg.data)            # pooled, relabelled train rows + query/gallery per domain
    loader = eval_loader(data.eval_sets[0].query, test_transform, cfg.data)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from datasets import Dataset, Image, concatenate_datasets
from torch.utils.data import DataLoader

from ..data import (
    ReidCollator,
    ReidTestTransform,
    concatenate_sources,
    generate_synthpeds,
    load_reid_dataset,
    relabel,
)
from .config import ConfigError

__all__ = [
    "DataArgs",
    "EvalArgs",
    "EvalSet",
    "MetadataCollator",
    "ReidData",
    "SynthPedsArgs",
    "TrainArgs",
    "display_name",
    "domain_dir",
    "eval_loader",
    "load_data",
    "prepare_synthpeds",
]

logger = logging.getLogger(__name__)


@dataclass
class SynthPedsArgs:
    """Generate SynthPeds into ``data.root`` when a requested domain folder is missing."""

    preset: str = "default"
    seed: int = 0
    image_size: tuple[int, int] = (128, 64)
    num_workers: int = 2


@dataclass
class DataArgs:
    layout: str = "synthpeds"
    """A ``load_reid_dataset`` layout name (synthpeds, market1501, msmt17, ...)."""
    root: str = "data/synthpeds"
    train_domains: list[str] = field(default_factory=lambda: ["synthpeds_d0"])
    """Folders under ``root`` whose train splits are pooled; ``["."]`` is ``root`` itself."""
    eval_domains: list[str] = field(default_factory=lambda: ["synthpeds_d0"])
    """Folders under ``root`` whose query/gallery splits are evaluated."""
    layouts: dict[str, str] = field(default_factory=dict)
    """Per-folder layouts where the domains differ, e.g. ``{MSMT17: msmt17, CUHK-SYSU: cuhk_sysu}``
    (the domain generalization protocols pool datasets of different layouts); others use ``layout``."""
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per-folder ``load_reid_dataset`` options, e.g. ``{cuhk03-np: {labeled: true}}``."""
    combine_all: bool = False
    """Train on every image of the training domains (train + query + gallery; distractors and
    junk left out), as the domain generalization protocols P1 and P3 do. The test identities of
    a domain get labels of their own."""
    synthpeds: SynthPedsArgs | None = None
    num_workers: int = 0
    """DataLoader workers per process (0: decode and augment in the training process)."""
    p: int = 16
    """Identities per batch (per process)."""
    k: int = 4
    """Images per identity."""
    flip_p: float = 0.5
    pad: int = 10
    random_erasing_p: float = 0.5
    eval_batch_size: int = 128


@dataclass
class TrainArgs:
    checkpoint_every: int | None = 200
    """Optimizer steps between checkpoints (also one at the end of each stage); null: none."""
    checkpoint_total_limit: int = 2
    log_every: int = 10
    gradient_accumulation_steps: int = 1
    mixed_precision: Literal["no", "fp16", "bf16"] | None = None
    """``null`` keeps what ``accelerate launch`` chose."""
    progress_bar: bool = True


@dataclass
class EvalArgs:
    metric: Literal["euclidean", "sqeuclidean", "cosine"] = "euclidean"
    max_rank: int = 50
    plots: bool = True
    ranked_list_queries: int = 8


@dataclass
class EvalSet:
    name: str
    query: Dataset
    gallery: Dataset
    image_root: Path


@dataclass
class ReidData:
    train: Dataset
    """Training rows with contiguous ``label`` s (images not decoded)."""
    num_classes: int
    num_cameras: int
    eval_sets: list[EvalSet]


def domain_dir(root: Path, domain: str) -> Path:
    """The folder of ``domain`` under ``root`` (``"."`` or ``""``: ``root`` itself)."""
    return root if domain in ("", ".") else root / domain


DATASET_NAMES = {
    "market1501": "Market-1501",
    "dukemtmc": "DukeMTMC-reID",
    "msmt17": "MSMT17",
    "cuhk03_np": "CUHK03-NP",
    "mlr_cuhk03": "MLR-CUHK03",
}


def display_name(layout: str, domain: str) -> str:
    """How a domain is named in results and the model card: ``SynthPeds d0``, ``Market-1501``."""
    if layout == "synthpeds":
        return f"SynthPeds {domain.removeprefix('synthpeds_')}"
    name = DATASET_NAMES.get(layout, layout)
    return name if domain in ("", ".") else f"{name} {domain}"


def _synthpeds_run(root: Path) -> dict[str, Any] | None:
    """The settings of the SynthPeds run in ``root`` (its ``synthpeds_meta.json``), if any."""
    meta = root / "synthpeds_meta.json"
    if not meta.is_file():
        return None
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return {key: data.get(key) for key in ("preset", "seed", "image_size", "layouts")}


def prepare_synthpeds(args: DataArgs, extra_layouts: Sequence[str] = ()) -> None:
    """Generate SynthPeds when ``data.synthpeds`` is set and a requested folder is missing.

    The Re-ID domains (``train_domains`` and ``eval_domains``, layout ``market``) are always
    wanted; ``extra_layouts`` adds SynthPeds layouts whose folder has the layout's name, e.g.
    ``["captions"]`` for the captioned single-camera set ReText trains with.
    """
    root = Path(args.root)
    wanted = {*args.train_domains, *args.eval_domains, *extra_layouts}
    missing = sorted(d for d in wanted if not domain_dir(root, d).is_dir())
    if not missing:
        return
    if args.synthpeds is None:
        raise FileNotFoundError(
            f"data.root {root} has no folder(s) {missing}. Generate SynthPeds there "
            f"(`hf-reid synth --out {root} --layouts market`, or set data.synthpeds in the config) "
            "or point data.root / data.train_domains / data.eval_domains at your data."
        )
    synth = args.synthpeds
    layouts = ["market", *extra_layouts]
    overwrite = False
    existing = _synthpeds_run(root)
    if existing is not None and (
        existing.get("preset"),
        existing.get("seed"),
        list(existing.get("image_size", [])),
    ) == (synth.preset, synth.seed, list(synth.image_size)):
        # The same SynthPeds run with fewer layouts (e.g. the CLIP-ReID quickstart wrote only the
        # Re-ID domains; ReText also needs the captioned set): regenerate it with every layout.
        # Generation is deterministic, so the images already there come out identical.
        layouts = list(dict.fromkeys([*existing.get("layouts", []), *layouts]))
        overwrite = True
    logger.info("Generating SynthPeds (%s, seed %d) into %s for %s.", synth.preset, synth.seed, root, missing)
    generate_synthpeds(
        root,
        preset=synth.preset,
        seed=synth.seed,
        image_size=synth.image_size,
        layouts=layouts,
        num_workers=synth.num_workers,
        overwrite=overwrite,
    )
    still_missing = sorted(d for d in wanted if not domain_dir(root, d).is_dir())
    if still_missing:
        raise FileNotFoundError(
            f"SynthPeds preset {synth.preset!r} does not write {still_missing} into {root}; "
            "choose domains it has (synthpeds_d0, synthpeds_d1, ...)."
        )


def _combined_splits(domain: str, data: Mapping[str, Dataset]) -> dict[str, Dataset]:
    """The sources of ``combine_all``: the train split, and query + gallery (one identity set),
    each labelled apart because test pids may repeat train pids (MSMT17 numbers them anew)."""
    parts = {f"{domain}/train": data["train"]}
    if "query" in data and "gallery" in data:
        test = concatenate_datasets([data["query"], data["gallery"]])
        test = test.filter(lambda pid: pid > 0, input_columns="pid")  # no distractors (0) or junk (-1)
        if len(test):
            parts[f"{domain}/test"] = test
    return parts


def load_data(args: DataArgs) -> ReidData:
    """Read the training and evaluation domains (images stay encoded until the collator)."""
    if not args.train_domains:
        raise ConfigError("data.train_domains is empty: name at least one folder under data.root.")
    root = Path(args.root)
    unknown = sorted((set(args.layouts) | set(args.options)) - {*args.train_domains, *args.eval_domains})
    if unknown:
        raise ConfigError(
            f"data.layouts / data.options name folder(s) {unknown} that are neither in data.train_domains "
            f"{args.train_domains} nor in data.eval_domains {args.eval_domains}."
        )
    cache: dict[str, Any] = {}

    def layout_of(domain: str) -> str:
        return args.layouts.get(domain, args.layout)

    def splits(domain: str):
        if domain not in cache:
            cache[domain] = load_reid_dataset(
                layout_of(domain), domain_dir(root, domain), **args.options.get(domain, {})
            )
        return cache[domain]

    sources: dict[str, Dataset] = {}
    for domain in args.train_domains:
        if args.combine_all:
            sources.update(_combined_splits(domain, splits(domain)))
        else:
            sources[domain] = splits(domain)["train"]
    if len(sources) == 1:
        train, _ = relabel(next(iter(sources.values())))
    else:
        train = concatenate_sources(sources)
    num_classes = len(set(train["label"]))
    eval_sets = []
    for domain in args.eval_domains:
        data = splits(domain)
        for split in ("query", "gallery"):
            if split not in data:
                raise ValueError(
                    f"data.eval_domains: {domain_dir(root, domain)} ({layout_of(domain)} layout) has no {split} "
                    f"split (it has {sorted(data)}); evaluate on a domain with query and gallery."
                )
        eval_sets.append(
            EvalSet(
                display_name(layout_of(domain), domain),
                data["query"],
                data["gallery"],
                domain_dir(root, domain),
            )
        )
    splits_seen = [train] + [split for s in eval_sets for split in (s.query, s.gallery)]
    num_cameras = 1 + max(max(split["camid"], default=0) for split in splits_seen)
    logger.info(
        "Training on %d images of %d identities (%s); evaluating on %s.",
        len(train),
        num_classes,
        ", ".join(args.train_domains),
        ", ".join(f"{s.name} ({len(s.query)} query, {len(s.gallery)} gallery)" for s in eval_sets),
    )
    return ReidData(
        train=train.cast_column("image", Image(decode=False)),
        num_classes=num_classes,
        num_cameras=num_cameras,
        eval_sets=eval_sets,
    )


class MetadataCollator:
    """A :class:`ReidCollator` that also returns the rows' ``path`` (for the ranked-list plots)."""

    def __init__(self, collator: ReidCollator):
        self.collator = collator

    def set_epoch(self, epoch: int) -> None:
        self.collator.set_epoch(epoch)

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        batch = self.collator(rows)
        batch["paths"] = [row["path"] for row in rows]
        return batch


def eval_loader(dataset: Dataset, transform: ReidTestTransform, args: DataArgs) -> DataLoader:
    collator = MetadataCollator(ReidCollator(transform, columns=["pids", "camids"]))
    return DataLoader(
        dataset.cast_column("image", Image(decode=False)),
        batch_size=args.eval_batch_size,
        collate_fn=collator,
        num_workers=args.num_workers,
    )
