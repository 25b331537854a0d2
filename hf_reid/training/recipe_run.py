"""The run plumbing every recipe shares, so that a recipe holds only its method.

A recipe's ``main`` reads top to bottom; what is not the method is a named call on a
:class:`RecipeRun` (in the spirit of fast-reid's ``default_setup`` and the training-utils of
diffusers' examples)::

    run = RecipeRun.start(MyConfig, argv, method="clip_reid", default_config=DEFAULT_CONFIG)
    data = run.load_data()                                   # SynthPeds if needed, train + eval sets
    processor, train_transform, test_transform = run.image_transforms(model.config.image_size)
    runner = run.stage_runner(["prompts", "image_encoder"])  # checkpoints, resume, hooks
    loader = run.pk_loader(data.train, ReidCollator(train_transform, columns=["labels"], seed=0))
    ...                                                       # the method: models, stages, losses
    run.save_model(model, processor, tokenizer, datasets=[...])  # before evaluation: never lost
    results = run.evaluate(data.eval_sets, embed, model=model, transform=test_transform,
                           normalize=True)                    # every eval set under its protocol
    run.finish(results, train_results={...})                  # results, card, push

``RecipeRun.start`` parses ``--config`` (default: the recipe's embedded SynthPeds config),
``--output_dir`` (default: ``runs/<method>``, printed), ``--resume``, ``--overwrite_output_dir``,
``--push_to_hub`` and ``--section.field VALUE`` overrides, validates the whole data section before
any work, checks that the run folder holds no other run's checkpoints (:data:`RUN_FINGERPRINT_IGNORES`),
and sets up the Accelerator, logging, the seed and the saved ``config.yaml``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from ..data import PKSampler, ReidTestTransform, ReidTrainTransform, ReidTransformConfig
from .checkpoint import RunIdentity, RunMismatchError, Stateful, prepare_run_folder, resolve_resume_checkpoint
from .config import ConfigError, RecipeArgs, config_to_dict, parse_recipe_args, save_config
from .evaluation import evaluate_domains
from .loop import StageRunner
from .reid_data import (
    DataArgs,
    EvalArgs,
    ReidData,
    TrainArgs,
    load_data,
    prepare_synthpeds,
    validate_data_args,
)
from .utils import create_accelerator, exit_if_distributed, set_seed, setup_logging, sync_buffers

__all__ = [
    "CACHE_DIR",
    "DEFAULT_RUNS_DIR",
    "HUB_IGNORE",
    "RUN_FINGERPRINT_IGNORES",
    "SYNTHCLIP_HUB_ID",
    "RecipeConfig",
    "RecipeRun",
    "check_checkpoint_fits",
    "check_numbers",
    "model_config_kwargs",
    "recipe_cli",
    "run_fingerprint_config",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_RUNS_DIR = "runs"
"""A recipe run without ``--output_dir`` writes to ``runs/<method>``."""
SYNTHCLIP_HUB_ID = "hf-reid/synthclip"
"""What model cards name as the base model of runs that start from the shipped SynthCLIP."""
CACHE_DIR = "cache"
"""Folder of a run's caches (feature caches; not uploaded by ``--push_to_hub``)."""
HUB_IGNORE = ["checkpoints/*", f"{CACHE_DIR}/*", "logs/*", "*.tmp"]
"""What ``--push_to_hub`` leaves out of the run folder."""


@dataclass
class RecipeConfig:
    """The sections every recipe config has. A recipe's config subclasses it, adding its
    ``model`` section (with at least ``clip_name_or_path``) and its stages; ``config.yaml`` in the
    run folder reproduces the run."""

    seed: int = 0
    data: DataArgs = field(default_factory=DataArgs)
    train: TrainArgs = field(default_factory=TrainArgs)
    eval: EvalArgs = field(default_factory=EvalArgs)


@dataclass
class RecipeRun:
    """One run of a recipe: its config, command-line arguments, Accelerator and run folder, and
    the shared steps around the method (see the module docstring)."""

    cfg: Any
    args: RecipeArgs
    accelerator: Accelerator
    method: str
    started: float = field(default_factory=time.perf_counter)
    timings: dict[str, float] = field(default_factory=dict)
    _card: tuple[list[str], dict[str, Any]] | None = field(default=None, repr=False)
    """Datasets and template variables of the model card (given to :meth:`save_model`)."""

    @property
    def output_dir(self) -> Path:
        return Path(self.args.output_dir)

    @property
    def resume_checkpoint(self) -> str | None:
        """The checkpoint ``--resume`` restores (``None`` for a fresh run)."""
        return resolve_resume_checkpoint(self.output_dir, self.args.resume)

    # ------------------------------------------------------------------ set-up

    @classmethod
    def start(
        cls,
        config_class: type[T],
        argv: Sequence[str] | None = None,
        *,
        method: str,
        default_config: str | os.PathLike,
        description: str | None = None,
        extra_data_folders: Sequence[str] = (),
    ) -> RecipeRun:
        """Parse the command line, validate the data section, and set up the Accelerator,
        logging (``train.log`` in the run folder), the seed and ``config.yaml``.

        ``extra_data_folders`` are folders under ``data.root`` the recipe reads besides the
        train and eval domains (ReText's captioned set), checked with them.
        """
        cfg, args = parse_recipe_args(
            config_class,
            argv,
            description=description,
            default_config=str(default_config),
            default_output_dir=str(Path(DEFAULT_RUNS_DIR) / method),
        )
        validate_data_args(cfg.data, extra_data_folders)
        check_numbers(cfg)
        output_dir = Path(args.output_dir)
        accelerator = create_accelerator(
            output_dir,
            seed=cfg.seed,
            gradient_accumulation_steps=cfg.train.gradient_accumulation_steps,
            mixed_precision=cfg.train.mixed_precision,
        )
        setup_logging(accelerator, log_file=output_dir / "train.log")
        set_seed(cfg.seed)
        run = cls(cfg=cfg, args=args, accelerator=accelerator, method=method)
        # Before config.yaml is written: another run's folder is refused (or, when asked, cleared).
        # A --resume of another run's checkpoint is refused by the stage runner, after the recipe's
        # own checks (check_checkpoint_fits names a changed number of identities); config.yaml
        # keeps that run's config.
        resumes_another_run = False
        try:
            prepare_run_folder(
                output_dir,
                run.run_identity,
                resume=args.resume,
                overwrite=args.overwrite_output_dir,
                is_main_process=accelerator.is_main_process,
                log=False,
            )
        except RunMismatchError:
            if args.resume is None or args.overwrite_output_dir:
                raise
            resumes_another_run = True
        accelerator.wait_for_everyone()
        if accelerator.is_main_process and not resumes_another_run:
            save_config(cfg, output_dir / "config.yaml")
        logger.info("%s run in %s (config: %s).", method, output_dir.resolve(), args.config)
        return run

    @property
    def run_identity(self) -> RunIdentity:
        """The seed and :func:`run_fingerprint_config`: recorded with every checkpoint, compared on
        ``--resume`` and when a run starts in a folder that holds checkpoints."""
        return RunIdentity(
            seed=self.cfg.seed,
            config=run_fingerprint_config(self.cfg, self.method, self.accelerator.mixed_precision),
        )

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Record the wall time of the block as ``timings[f"{name}_seconds"]``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[f"{name}_seconds"] = time.perf_counter() - start

    # ------------------------------------------------------------------ data

    def load_data(self, extra_synthpeds_layouts: Sequence[str] = ()) -> ReidData:
        """SynthPeds (generated first when the config asks for it and a folder is missing; main
        process first) and the pooled, relabelled training rows plus every evaluation set."""
        with self.accelerator.main_process_first():
            if self.accelerator.is_main_process:
                prepare_synthpeds(self.cfg.data, extra_layouts=extra_synthpeds_layouts)
            return load_data(self.cfg.data)

    def image_transforms(
        self, image_size: Sequence[int]
    ) -> tuple[Any, ReidTrainTransform, ReidTestTransform]:
        """The model's image processor and the training / test transforms derived from it (the
        test transform equals the processor's output, unless ``data.augment`` asks for instance
        normalisation, which a CLIP image processor cannot express; training adds ``data``'s
        augmentation)."""
        from ..models import build_reid_image_processor

        data = self.cfg.data
        processor = build_reid_image_processor(tuple(image_size))
        normalization = {k: v for k, v in data.augment.items() if k == "normalization"}
        test_transform = ReidTestTransform(
            ReidTransformConfig.from_image_processor(processor, **normalization)
        )
        train_transform = ReidTrainTransform(
            ReidTransformConfig.from_image_processor(
                processor,
                flip_p=data.flip_p,
                pad=data.pad,
                random_erasing_p=data.random_erasing_p,
                **data.augment,
            )
        )
        return processor, train_transform, test_transform

    def pk_loader(
        self,
        dataset: Any,
        collate_fn: Callable,
        *,
        labels: Sequence[int] | None = None,
        p: int | None = None,
        k: int | None = None,
        seed: int | None = None,
    ) -> DataLoader:
        """A DataLoader of P identities x K images per batch (per process, each process its own
        identities) over ``dataset``'s ``label`` column (or ``labels``), collated by
        ``collate_fn`` (e.g. a seeded :class:`~hf_reid.data.ReidCollator` with the training
        transform); not yet prepared. ``p`` / ``k`` / ``seed`` default to the config's."""
        data = self.cfg.data
        sampler = PKSampler(
            dataset["label"] if labels is None else labels,
            p=data.p if p is None else p,
            k=data.k if k is None else k,
            seed=self.cfg.seed if seed is None else seed,
            num_replicas=self.accelerator.num_processes,
        )
        return DataLoader(
            dataset,
            batch_size=sampler.batch_size,
            sampler=sampler,
            collate_fn=collate_fn,
            num_workers=data.num_workers,
        )

    # ------------------------------------------------------------------ training

    def stage_runner(
        self, stages: Sequence[str], recipe_state: dict[str, Stateful] | None = None
    ) -> StageRunner:
        """The stage runner with the config's checkpoint, logging and progress settings."""
        train = self.cfg.train
        return StageRunner(
            self.accelerator,
            self.output_dir,
            list(stages),
            seed=self.cfg.seed,
            checkpoint_every=train.checkpoint_every,
            total_limit=train.checkpoint_total_limit,
            resume=self.args.resume,
            log_every=train.log_every,
            progress_bar=train.progress_bar,
            recipe_state=recipe_state,
            run_config=self.run_identity.config,
            overwrite_output_dir=self.args.overwrite_output_dir,
        )

    # ------------------------------------------------------------------ save, evaluate, finish

    def save_model(
        self,
        model: Any,
        processor: Any,
        tokenizer: Any | None,
        *,
        datasets: Sequence[str],
        card_extra: dict[str, Any] | None = None,
    ) -> None:
        """``save_pretrained`` of model, image processor and tokenizer into the run folder, and
        its model card (``datasets`` and ``card_extra`` for the template; the results are added
        by :meth:`finish`). Called before evaluation, so that a failing evaluation never loses
        the trained model. Every process calls it (buffers are synchronised first)."""
        self._card = (list(dict.fromkeys(datasets)), dict(card_extra or {}))
        sync_buffers(model, self.accelerator)
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            model.save_pretrained(self.output_dir)
            processor.save_pretrained(self.output_dir)
            if tokenizer is not None:
                tokenizer.save_pretrained(self.output_dir)
            self._write_card({}, {})
            logger.info("Saved the trained model and its card to %s.", self.output_dir)
        self.accelerator.wait_for_everyone()

    def evaluate(
        self,
        eval_sets: Sequence[Any],
        embed: Callable[[dict], torch.Tensor],
        *,
        model: torch.nn.Module,
        transform: Any,
        normalize: bool,
    ) -> dict[str, dict[str, Any]]:
        """Every evaluation set under its protocol (``eval/<name>/``: results and plots)."""
        with self.timed("eval"):
            return evaluate_domains(
                eval_sets,
                embed,
                model=model,
                transform=transform,
                data_args=self.cfg.data,
                eval_args=self.cfg.eval,
                normalize=normalize,
                output_dir=self.output_dir,
                accelerator=self.accelerator,
                progress_bar=self.cfg.train.progress_bar,
            )

    def finish(self, results: dict[str, dict[str, Any]], *, train_results: dict[str, Any]) -> None:
        """Write ``eval_results.json``, ``train_results.json`` (timings first) and the model card
        with the results, push with ``--push_to_hub``, print the results and the run folder, and
        end the Accelerator's trackers. Call :meth:`save_model` first."""
        self.timings["total_seconds"] = time.perf_counter() - self.started
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            train_results = {
                **{k: round(v, 2) for k, v in self.timings.items()},
                **train_results,
                "num_processes": self.accelerator.num_processes,
            }
            out = self.output_dir
            (out / "eval_results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
            (out / "train_results.json").write_text(
                json.dumps(train_results, indent=2) + "\n", encoding="utf-8"
            )
            logger.info(
                "Run finished in %.0f s: %s", self.timings["total_seconds"], json.dumps(train_results)
            )
            repo_id = self.repo_id
            if self.args.push_to_hub:
                from ..hub import default_repo_id, push_run_to_hub

                repo_id = repo_id or default_repo_id(out.resolve().name)  # <your user>/<run folder>
            self._write_card(results, train_results, repo_id)
            if self.args.push_to_hub:
                url = push_run_to_hub(out, repo_id, ignore_patterns=HUB_IGNORE)
                logger.info("Pushed to %s", url)
            print(_summary(self.method, results, out), flush=True)
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()

    @property
    def repo_id(self) -> str | None:
        """The Hub repository of the run: ``--hub_model_id``, else ``None`` (the model card then
        names no repository; ``--push_to_hub`` without it pushes to ``<your user>/<run folder>``)."""
        return self.args.hub_model_id or None

    def _write_card(
        self, results: dict[str, dict[str, Any]], train_results: dict[str, Any], repo_id: str | None = None
    ) -> None:
        """The model card: it names ``repo_id`` (default :attr:`repo_id`) or no repository, the
        starting CLIP when it is a Hub id (SynthCLIP as :data:`SYNTHCLIP_HUB_ID`), and the
        training data by layout name in its text (not as Hub dataset ids in its metadata)."""
        from ..hub import CardInfo, write_model_card
        from ..models.configuration_reid_base import portable_name_or_path
        from ..synthclip import SYNTHCLIP_NAME

        if self._card is None:
            raise RuntimeError("RecipeRun: call save_model(...) before finish(...).")
        datasets, extra = self._card

        clip = self.cfg.model.clip_name_or_path
        base_model = SYNTHCLIP_HUB_ID if clip == SYNTHCLIP_NAME else (portable_name_or_path(clip) or None)
        write_model_card(
            self.output_dir,
            CardInfo(
                method=self.method,
                model_id=repo_id or self.repo_id,
                name=self.output_dir.resolve().name,
                base_model=base_model,
                training_data=datasets,
                extra={
                    "training_config": (self.output_dir / "config.yaml").read_text(encoding="utf-8"),
                    "train_results": train_results,
                    **extra,
                },
            ),
            {name: {k: v for k, v in m.items() if isinstance(v, float)} for name, m in results.items()},
        )


def _summary(method: str, results: dict[str, dict[str, Any]], output_dir: Path) -> str:
    """The lines a finished run prints: each evaluation's numbers and the run folder."""
    lines = [f"{method}: results (mAP / Rank-1 / mINP, %)"]
    for name, m in results.items():
        trials = f", mean of {m['num_trials']} trials" if m.get("num_trials", 1) > 1 else ""
        lines.append(
            f"  {name} [{m.get('protocol', 'standard')}{trials}]: "
            f"{100 * m['mAP']:.1f} / {100 * m['rank-1']:.1f} / {100 * m.get('mINP', float('nan')):.1f}"
        )
    lines.append(f"Run folder: {output_dir.resolve()}")
    return "\n".join(lines)


def check_numbers(cfg: Any, prefix: str = "") -> None:
    """Refuse impossible schedule values anywhere in a recipe config before any work, naming the
    field: ``*epochs`` below 0, a learning rate (``lr``, ``*_lr``; ``min_*`` / ``warmup_*`` may be
    0) or ``*batch_size`` not above 0, ``weight_decay*`` below 0."""
    import dataclasses

    for f in dataclasses.fields(cfg):
        value, name = getattr(cfg, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            check_numbers(value, f"{name}.")
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if f.name.endswith("epochs") and value < 0:
            raise ConfigError(f"{name} must be >= 0, got {value}.")
        floor = f.name.startswith(("min_", "warmup_"))  # a schedule may start or end at 0
        if (f.name == "lr" or f.name.endswith(("_lr", "batch_size"))) and not (
            value >= 0 if floor else value > 0
        ):
            raise ConfigError(f"{name} must be {'>=' if floor else '>'} 0, got {value}.")
        if f.name.startswith("weight_decay") and value < 0:
            raise ConfigError(f"{name} must be >= 0, got {value}.")


def model_config_kwargs(args: Any, config_class: type) -> dict[str, Any]:
    """The fields of a recipe's ``model`` section that are fields of the model's config class:
    one rule for every recipe (the rest — checkpoint names, LoRA, gradient checkpointing — is
    the recipe's to use). Tuples become lists, as configs store them."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(config_class)}
    return {
        f.name: list(value) if isinstance(value := getattr(args, f.name), tuple) else value
        for f in dataclasses.fields(args)
        if f.name in names
    }


def check_checkpoint_fits(checkpoint: str, model: torch.nn.Module, num_classes: int) -> None:
    """Refuse to resume from a checkpoint whose weights cannot fit this run's model, naming the
    difference (typically: trained on data with another number of identities)."""
    from safetensors import safe_open

    weights = Path(checkpoint) / "model.safetensors"
    if not weights.is_file():
        return  # another serialization; load_state reports problems itself
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    with safe_open(str(weights), framework="pt") as handle:
        saved = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118
    wrong = {n: (saved[n], s) for n, s in expected.items() if n in saved and saved[n] != s}
    if not wrong:
        return
    per_identity = [(have, want) for have, want in wrong.values() if want and want[0] == num_classes]
    if per_identity:
        raise ValueError(
            f"--resume: checkpoint {checkpoint} was trained on {per_identity[0][0][0]} identities, but the "
            f"training data of this run has {num_classes} (data.train_domains under {{data.root}}). Resume "
            "with the data the run started with, or start a new --output_dir."
        )
    name, (have, want) = next(iter(wrong.items()))
    raise ValueError(
        f"--resume: checkpoint {checkpoint} does not fit this run's model: {name} is {have} there but "
        f"{want} here ({len(wrong)} tensor(s) differ). Was the run started with another config? "
        "Resume with the run's own config.yaml, or start a new --output_dir."
    )


RUN_FINGERPRINT_IGNORES = (
    "seed",
    "train.checkpoint_every",
    "train.checkpoint_total_limit",
    "train.log_every",
    "train.progress_bar",
    "data.num_workers",
    "data.synthpeds.num_workers",
    "eval",
)
"""Config fields left out of a run's fingerprint: they do not change the training (checkpoint
and logging cadence, loader / generator worker counts, the final evaluation's settings; the seed
is recorded on its own). The command-line arguments (``--output_dir``, ``--resume``,
``--overwrite_output_dir``, ``--push_to_hub``, ``--hub_model_id``, ``--config``'s path) are not
config fields, so not in it either. Everything else is: another value is another run."""


def run_fingerprint_config(cfg: Any, method: str, mixed_precision: str | None = None) -> dict[str, Any]:
    """The settings that define a recipe run's training: the config without
    :data:`RUN_FINGERPRINT_IGNORES`, plus ``recipe`` (the method) and ``mixed_precision`` (the
    Accelerator's, which ``accelerate launch`` may choose when the config leaves it open)."""
    plain = config_to_dict(cfg)
    for dotted in RUN_FINGERPRINT_IGNORES:
        *parents, last = dotted.split(".")
        node = plain
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return {**plain, "recipe": method, "mixed_precision": mixed_precision}


def recipe_cli(main: Callable[[], Any]) -> None:
    """A recipe's command-line entry point: configuration mistakes end with a one-line error
    naming the field, not a traceback."""
    try:
        main()
    except ConfigError as error:
        sys.exit(f"{Path(sys.argv[0]).name}: error: {error}")
    exit_if_distributed()  # several processes: leave without the teardown that raced (issue #16)
