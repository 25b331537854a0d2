"""The data side every Re-ID recipe shares: typed data/train/eval arguments, SynthPeds on first
use, the training and evaluation domains, and the evaluation loaders.

A recipe's config holds ``data: DataArgs``, ``train: TrainArgs`` and ``eval: EvalArgs``; then

    prepare_synthpeds(cfg.data)           # generate SynthPeds into data.root if a domain is missing
    data = load_data(cfg.data)            # pooled, relabelled train rows + query/gallery per domain
    loader = eval_loader(data.eval_sets[0].query, test_transform, cfg.data)
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from datasets import Dataset, Image, concatenate_datasets
from torch.utils.data import DataLoader

from ..data import (
    STANDARD,
    EvalProtocol,
    ReidCollator,
    ReidTestTransform,
    ReidTransformConfig,
    concatenate_sources,
    generate_synthpeds,
    get_reid_layout,
    load_reid_dataset,
    reid_layout_options,
    relabel,
)
from ..data.synthetic import LAYOUT_NAMES as SYNTHPEDS_LAYOUTS
from ..data.synthetic import domain_name, get_preset
from ..data.synthetic.generate import run_captioned
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
    "validate_data_args",
]

logger = logging.getLogger(__name__)


@dataclass
class SynthPedsArgs:
    """Generate SynthPeds into ``data.root`` when a requested domain folder is missing."""

    preset: str = "default"
    seed: int = 0
    image_size: tuple[int, int] = (128, 64)
    num_workers: int = 2
    captioned_styles: Literal["sources", "diverse"] = "sources"
    """Camera styles of the captioned single-camera set (``hf-reid synth --captioned-styles``):
    ``sources`` (the source domains' styles) or ``diverse`` (a camera per identity at a place of
    its own, never the held-out domain's style)."""
    captioned_identities: int | None = None
    """Identities of the captioned set (``null``: the preset's)."""


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
    eval_options: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Evaluate an evaluation folder several times, under other options (and so protocols):
    one evaluation per entry, each merged over ``options``, e.g. ``{ltcc: [{protocol: standard},
    {protocol: clothes_changing}], sysu_mm01: [{mode: all}, {mode: indoor}]}``."""
    combine_all: bool = False
    """Train on every image of the training domains (train + query + gallery; distractors and
    junk left out), as the domain generalization protocols P1 and P3 do. The test identities of
    a domain get labels of their own."""
    synthpeds: SynthPedsArgs | None = None
    """Generate SynthPeds into ``root`` when a folder is missing (only into a folder that holds
    SynthPeds or nothing); ``null`` for your own data."""
    num_workers: int = 0
    """DataLoader workers per process (0: decode and augment in the training process)."""
    p: int = 16
    """Identities per batch (per process)."""
    k: int = 4
    """Images per identity."""
    flip_p: float = 0.5
    pad: int = 10
    random_erasing_p: float = 0.5
    augment: dict[str, Any] = field(default_factory=dict)
    """Further fields of :class:`~hf_reid.data.ReidTransformConfig` for training, e.g. CLIP-FGDI's
    ``{grayscale_p: 0.1, color_jitter_p: 0.1, augmix_p: 0.6, normalization: instance}``;
    ``normalization`` applies to the test transform too."""
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
    """One evaluation: a query and a gallery (the pools, when the protocol draws trials from
    them) and the protocol that ranks them."""

    name: str
    query: Dataset
    gallery: Dataset
    image_root: Path
    protocol: EvalProtocol = STANDARD


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


def display_name(layout: str, domain: str, synthetic: bool = False) -> str:
    """How a domain is named in results and the model card: ``SynthPeds d0``, ``SynthPeds ltcc``
    (``synthetic``: a folder of a SynthPeds run), ``Market-1501``, ``MSMT17 test``."""
    if layout == "synthpeds":
        return f"SynthPeds {domain.removeprefix('synthpeds_')}"
    if synthetic:
        return f"SynthPeds {domain}"
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
    run = {key: data.get(key) for key in ("preset", "seed", "image_size", "layouts")}
    styles, identities = run_captioned(data)  # the captioned set's options (absent: the defaults)
    return {**run, "captioned_styles": styles, "captioned_identities": identities}


def _captioned_mismatch(root: Path, existing: dict[str, Any], synth: SynthPedsArgs) -> str | None:
    """Why the captioned set of the run in ``root`` is not the one ``synth`` asks for, or ``None``
    (also when that run wrote no captioned set)."""
    if existing.get("captioned_identities") is None:
        return None
    have = (existing["captioned_styles"], existing["captioned_identities"])
    identities = synth.captioned_identities
    if identities is None:  # the preset's size: judged only against a run of the same preset
        same_preset = existing.get("preset") == synth.preset
        identities = get_preset(synth.preset).caption_ids if same_preset else have[1]
    wanted = (synth.captioned_styles, identities)
    if have == wanted:
        return None
    return (
        f"data.root {root} holds a SynthPeds captioned set with {have[0]} camera styles and {have[1]} "
        f"identities, not the configured data.synthpeds.captioned_styles {wanted[0]!r} and "
        f"captioned_identities {wanted[1]}. Use another data.root (and captions.root) for these options, "
        "or the options it was made with."
    )


def _synthpeds_layout(folder: str) -> str | None:
    """The SynthPeds layout that writes ``folder`` (``synthpeds_d<k>``: market; ``ltcc``: ltcc...)."""
    if folder.startswith("synthpeds_d") and folder.removeprefix("synthpeds_d").isdigit():
        return "market"
    return folder if folder in SYNTHPEDS_LAYOUTS else None


def validate_data_args(args: DataArgs, extra_folders: Sequence[str] = ()) -> None:
    """Check the whole data section before any work: layout names and options, the folders named
    in the per-folder settings, the batch shape, and the folders themselves — SynthPeds
    folders against what the configured preset writes, other folders on disk. Raises
    :class:`ConfigError` naming the field."""
    if not args.train_domains:
        raise ConfigError("data.train_domains is empty: name at least one folder under data.root.")
    for name in ("p", "k", "eval_batch_size"):
        if getattr(args, name) < 1:
            raise ConfigError(f"data.{name} must be >= 1, got {getattr(args, name)}.")
    if args.num_workers < 0:
        raise ConfigError(f"data.num_workers must be >= 0, got {args.num_workers}.")
    transform_fields = {f.name for f in dataclasses.fields(ReidTransformConfig)}
    wrong = sorted(set(args.augment) - transform_fields - {"height", "width", "mean", "std"})
    if wrong or set(args.augment) & {"height", "width", "mean", "std", "flip_p", "pad", "random_erasing_p"}:
        raise ConfigError(
            f"data.augment: {wrong or sorted(args.augment)} are not augmentation fields here (size and "
            "mean/std come from the model's image processor; flip_p, pad and random_erasing_p are data "
            f"fields of their own). Valid: {sorted(transform_fields - {'height', 'width', 'mean', 'std'})}."
        )
    folders = [*args.train_domains, *args.eval_domains]
    unknown = sorted((set(args.layouts) | set(args.options) | set(args.eval_options)) - set(folders))
    if unknown:
        raise ConfigError(
            f"data.layouts / data.options / data.eval_options name folder(s) {unknown} that are neither in "
            f"data.train_domains {args.train_domains} nor in data.eval_domains {args.eval_domains}."
        )
    for folder in dict.fromkeys(folders):
        layout = args.layouts.get(folder, args.layout)
        where = f"data.layouts.{folder}" if folder in args.layouts else "data.layout"
        try:
            get_reid_layout(layout)
        except ValueError as error:
            raise ConfigError(f"{where}: {error}") from None
        valid = reid_layout_options(layout)
        option_sets = [args.options.get(folder, {}), *args.eval_options.get(folder, [])]
        for options in option_sets:
            wrong = sorted(set(options) - set(valid))
            if wrong:
                raise ConfigError(
                    f"data.options / data.eval_options of {folder!r}: the {layout} layout has no option(s) "
                    f"{wrong}; valid: {valid}."
                )
    root = Path(args.root)
    wanted = list(dict.fromkeys([*folders, *extra_folders]))
    if args.synthpeds is not None:
        try:
            preset = get_preset(args.synthpeds.preset)
        except ValueError as error:
            raise ConfigError(f"data.synthpeds.preset: {error}") from None
        identities = args.synthpeds.captioned_identities
        if identities is not None and identities < 1:
            raise ConfigError(
                f"data.synthpeds.captioned_identities must be >= 1 (or null), got {identities}."
            )
        writes = {domain_name(k) for k in range(preset.num_domains)} | set(SYNTHPEDS_LAYOUTS)
        wrong = [f for f in wanted if f not in writes and not domain_dir(root, f).is_dir()]
        if wrong:
            raise ConfigError(
                f"data: folder(s) {wrong} are neither in data.root {root} nor written by SynthPeds preset "
                f"{args.synthpeds.preset!r} ({sorted(writes)}); check the names, or set data.synthpeds: null "
                "and point data.root at your own data."
            )
    else:
        missing = [f for f in wanted if not domain_dir(root, f).is_dir()]
        if missing:
            raise ConfigError(
                f"data.root {root} has no folder(s) {missing} (data.synthpeds is null, so nothing is generated); "
                "point data.root / data.train_domains / data.eval_domains at your data."
            )


def prepare_synthpeds(args: DataArgs, extra_layouts: Sequence[str] = ()) -> None:
    """Generate SynthPeds when ``data.synthpeds`` is set and a requested folder is missing.

    The folders of ``train_domains`` and ``eval_domains`` (and ``extra_layouts``, e.g.
    ``["captions"]`` for the captioned single-camera set ReText trains with) name the SynthPeds
    layouts to write: ``synthpeds_d<k>`` is a Market-style domain, ``ltcc`` / ``sysu_mm01`` /
    ``mlr_cuhk03`` / ``captions`` the layout of that name. SynthPeds is generated only into a
    folder of its own: one that does not exist, is empty, or holds an earlier SynthPeds run.
    """
    root = Path(args.root)
    wanted = list(dict.fromkeys([*args.train_domains, *args.eval_domains, *extra_layouts]))
    missing = sorted(d for d in wanted if not domain_dir(root, d).is_dir())
    if args.synthpeds is not None and "captions" in wanted:
        # A captioned set made with other options must not be used silently, present or not.
        existing = _synthpeds_run(root)
        problem = _captioned_mismatch(root, existing, args.synthpeds) if existing is not None else None
        if problem is not None:
            raise ConfigError(problem)
    if not missing:
        return
    if args.synthpeds is None:
        raise FileNotFoundError(
            f"data.root {root} has no folder(s) {missing}. Generate SynthPeds there "
            f"(`hf-reid synth --out {root} --layouts market`, or set data.synthpeds in the config) "
            "or point data.root / data.train_domains / data.eval_domains at your data."
        )
    synth = args.synthpeds
    not_synthpeds = [d for d in missing if _synthpeds_layout(d) is None]
    if not_synthpeds:
        raise ConfigError(f"data: SynthPeds writes no folder(s) {not_synthpeds} into {root}.")
    existing = _synthpeds_run(root)
    if existing is None and root.is_dir() and any(root.iterdir()):
        raise ConfigError(
            f"data.root {root} holds other data and no SynthPeds run, so SynthPeds is not generated there; "
            f"it lacks folder(s) {missing}. Point data.root at your data's folders, or at an empty or new "
            "folder for SynthPeds, or set data.synthpeds: null."
        )
    layouts = list(dict.fromkeys(_synthpeds_layout(d) for d in wanted if _synthpeds_layout(d)))
    overwrite = False
    if existing is not None:
        if (existing.get("preset"), existing.get("seed"), list(existing.get("image_size", []))) != (
            synth.preset,
            synth.seed,
            list(synth.image_size),
        ):
            raise ConfigError(
                f"data.root {root} holds a SynthPeds run with preset {existing.get('preset')!r}, seed "
                f"{existing.get('seed')}, image size {existing.get('image_size')}, not the configured "
                f"{synth.preset!r}, seed {synth.seed}, {list(synth.image_size)}; it lacks {missing}. Use "
                "another data.root or the settings it was made with."
            )
        # The same SynthPeds run with fewer layouts (e.g. the CLIP-ReID quickstart wrote only the
        # Re-ID domains; ReText also needs the captioned set): regenerate it with every layout.
        # Generation is deterministic, so the images already there come out identical.
        layouts = list(dict.fromkeys([*existing.get("layouts", []), *layouts]))
        overwrite = True
    captioned = {
        "captioned_styles": synth.captioned_styles,
        "captioned_identities": synth.captioned_identities,
    }
    if existing is not None and "captions" not in wanted and existing.get("captioned_identities") is not None:
        # The run's captioned set is not this config's to change: rewrite it as it was.
        captioned = {key: existing[key] for key in captioned}
    logger.info("Generating SynthPeds (%s, seed %d) into %s for %s.", synth.preset, synth.seed, root, missing)
    generate_synthpeds(
        root,
        preset=synth.preset,
        seed=synth.seed,
        image_size=synth.image_size,
        layouts=layouts,
        num_workers=synth.num_workers,
        overwrite=overwrite,
        **captioned,
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
    """Read the training and evaluation domains (images stay encoded until the collator).

    Every evaluation carries its layout's protocol (``EvalSet.protocol``); a protocol averaged
    over random draws (SYSU-MM01's gallery samplings) gets the pools it draws from.
    """
    validate_data_args(args)
    root = Path(args.root)
    cache: dict[tuple[str, str], Any] = {}

    def layout_of(domain: str) -> str:
        return args.layouts.get(domain, args.layout)

    def splits(domain: str, extra: Mapping[str, Any] | None = None):
        options = {**args.options.get(domain, {}), **(extra or {})}
        key = (domain, json.dumps(options, sort_keys=True, default=str))
        if key not in cache:
            cache[key] = load_reid_dataset(layout_of(domain), domain_dir(root, domain), **options)
        return cache[key]

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
        option_sets = args.eval_options.get(domain) or [{}]
        for extra in option_sets:
            eval_sets.append(_eval_set(domain, layout_of(domain), splits(domain, extra), splits, extra, root))
            if len(option_sets) > 1:
                eval_sets[-1].name = f"{eval_sets[-1].name} ({eval_sets[-1].protocol.name})"
    splits_seen = [train] + [split for s in eval_sets for split in (s.query, s.gallery)]
    num_cameras = 1 + max(max(split["camid"], default=0) for split in splits_seen)
    logger.info(
        "Training on %d images of %d identities (%s); evaluating on %s.",
        len(train),
        num_classes,
        ", ".join(args.train_domains),
        ", ".join(
            f"{s.name} ({len(s.query)} query, {len(s.gallery)} gallery, protocol {s.protocol.name})"
            for s in eval_sets
        ),
    )
    return ReidData(
        train=train.cast_column("image", Image(decode=False)),
        num_classes=num_classes,
        num_cameras=num_cameras,
        eval_sets=eval_sets,
    )


def _eval_set(
    domain: str, layout: str, data: Any, splits: Any, extra: Mapping[str, Any], root: Path
) -> EvalSet:
    """The evaluation of ``domain`` under its protocol; a protocol that averages random draws is
    given the pools it draws from (its ``pool_options``)."""
    for split in ("query", "gallery"):
        if split not in data:
            raise ValueError(
                f"data.eval_domains: {domain_dir(root, domain)} ({layout} layout) has no {split} "
                f"split (it has {sorted(data)}); evaluate on a domain with query and gallery."
            )
    protocol: EvalProtocol = getattr(data, "protocol", STANDARD)
    if protocol.pool_options:
        data = splits(domain, {**extra, **protocol.pool_options})
    synthetic = _synthpeds_run(root) is not None and _synthpeds_layout(domain) is not None
    name = display_name(layout, domain, synthetic)
    return EvalSet(name, data["query"], data["gallery"], domain_dir(root, domain), protocol)


class MetadataCollator:
    """A :class:`ReidCollator` that also returns columns it does not know, one entry per row:
    by default the rows' ``path`` as ``paths`` (for the ranked-list plots); integer columns come
    back as a tensor (e.g. ``{"rows": "row"}``: row indices to look pseudo-labels up)."""

    def __init__(self, collator: ReidCollator, columns: Mapping[str, str] | None = None):
        self.collator = collator
        self.columns = dict(columns or {"paths": "path"})

    def set_epoch(self, epoch: int) -> None:
        self.collator.set_epoch(epoch)

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        batch = self.collator(rows)
        for key, column in self.columns.items():
            values = [row[column] for row in rows]
            batch[key] = torch.tensor(values) if all(isinstance(v, int) for v in values) else values
        return batch


def eval_loader(dataset: Dataset, transform: ReidTestTransform, args: DataArgs) -> DataLoader:
    collator = MetadataCollator(ReidCollator(transform, columns=["pids", "camids", "clothes_ids"]))
    return DataLoader(
        dataset.cast_column("image", Image(decode=False)),
        batch_size=args.eval_batch_size,
        collate_fn=collator,
        num_workers=args.num_workers,
    )
