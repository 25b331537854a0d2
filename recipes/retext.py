"""ReText (Mamedov et al., 2026): generalizable Re-ID from multi-camera Re-ID data plus captioned
single-camera images, trained jointly on Re-ID, image–text matching and text-guided image
reconstruction.

    accelerate launch recipes/retext.py --config recipes/configs/retext_synthpeds.yaml \\
        --output_dir runs/retext_synthpeds [--resume] [--optim.epochs 10] [--push_to_hub]

The same script runs under ``python``, ``accelerate launch`` on one CPU and on several GPUs.

1. Data: the multi-camera source domains (pooled, relabelled) and the captioned single-camera
   set (``captions`` layout: CUHK-PEDES-style JSON; SynthPeds writes one), plus the evaluation
   domains' query/gallery (on SynthPeds: the held-out domain d3, whose style no training image
   has). Caption statistics (truncated captions, single-image identities) are logged and saved.
2. Model: ``ReTextModel.from_clip_pretrained`` on any CLIP (SynthCLIP on CPU,
   ``openai/clip-vit-base-patch16`` for real runs), optionally with another text encoder (BERT).
3. One training stage on mixed batches: every step takes a PK batch of multi-camera images
   (ID + triplet losses) and a PK batch of captioned single-camera images (identity-aware
   matching, structure-preserving and text-guided reconstruction losses), in ONE forward. The
   momentum (EMA) image encoder is updated after every optimizer step.
   ``captions.mode`` gives the ablations of ``benchmarks/retext_generalization.py``:
   ``text`` (ReText), ``identities`` (the captioned images as extra Re-ID identities, no text),
   ``none`` (multi-camera data only: the CLIP-ReID baseline without prompts).
4. Evaluation on every evaluation domain, ``save_pretrained`` of model (with its diffusers
   reconstruction head also written to ``reconstruction_head/``), processor and tokenizer, a
   model card with the results as model-index metadata, and ``--push_to_hub``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch
from datasets import Dataset, Image
from torch.utils.data import DataLoader

from hf_reid.data import (
    CaptionCollator,
    PKSampler,
    ReidCollator,
    ReidTestTransform,
    ReidTrainTransform,
    ReidTransformConfig,
    caption_statistics,
    load_reid_dataset,
    relabel,
)
from hf_reid.hub import CardInfo, push_run_to_hub, write_model_card
from hf_reid.models import ReTextModel, build_reid_image_processor
from hf_reid.synthclip import SYNTHCLIP_NAME, resolve_clip_path
from hf_reid.tokenization import load_tokenizer
from hf_reid.training import (
    ConfigError,
    DataArgs,
    EvalArgs,
    StageRunner,
    TrainArgs,
    build_optimizer,
    build_scheduler,
    create_accelerator,
    evaluate_domains,
    gather_with_grad,
    load_data,
    parse_recipe_args,
    prepare_synthpeds,
    save_config,
    set_sampler_epoch,
    set_seed,
    setup_logging,
    sync_buffers,
)

logger = logging.getLogger("hf_reid.recipes.retext")

SYNTHCLIP_HUB_ID = "hf-reid/synthclip"
STAGE = "retext"
HUB_IGNORE = ["checkpoints/*", "logs/*", "*.tmp"]


# ------------------------------------------------------------------------------------------------
# Config
# ------------------------------------------------------------------------------------------------
@dataclass
class ModelArgs:
    """The CLIP to start from and the ``ReTextConfig`` fields (see its docstring)."""

    clip_name_or_path: str = SYNTHCLIP_NAME
    """A CLIP checkpoint (Hub id or folder) or ``synthclip``."""
    text_encoder_name_or_path: str | None = None
    """Another text encoder (any ``AutoModel``, e.g. ``bert-base-uncased`` as the paper);
    ``null`` keeps CLIP's own text tower."""
    image_size: tuple[int, int] = (256, 128)
    stride_size: int | None = None
    neck_feat: Literal["before", "after"] = "before"
    feature_norm: bool = True
    momentum: float = 0.995
    id_loss_weight: float = 0.25
    triplet_loss_weight: float = 1.0
    triplet_margin: float | None = 0.3
    label_smoothing: float = 0.1
    matching_loss_weight: float = 1.0
    matching_temperature: float = 0.02
    structure_loss_weight: float = 1.0
    structure_temperature: float = 0.1
    reconstruction_loss_weight: float = 1.0
    mask_ratio: float = 0.75
    max_text_length: int = 77
    gradient_checkpointing: bool = False


@dataclass
class CaptionArgs:
    """The captioned single-camera set and how it is used."""

    mode: Literal["text", "identities", "none"] = "text"
    """``text``: ReText's text tasks; ``identities``: the images as extra Re-ID identities (no
    text); ``none``: not used (multi-camera data only)."""
    root: str = "data/synthpeds/captions"
    layout: str = "captions"
    options: dict[str, Any] = field(default_factory=dict)
    """Options of the layout, e.g. ``{json_file: captions.json, captions_field: caption}``."""
    on_bad_image: Literal["error", "skip"] = "skip"
    """Missing or unreadable images and entries without a caption: skipped with a count, or an error."""
    p: int = 8
    """Captioned identities per batch (per process)."""
    k: int = 4


@dataclass
class OptimArgs:
    """Adam with warm-up and cosine decay, stepped per epoch (an epoch = one pass of the
    multi-camera PK sampler)."""

    epochs: int = 60
    lr: float = 5e-6
    text_lr: float | None = None
    """Learning rate of the text encoder (``null``: ``lr``)."""
    head_lr: float | None = None
    """Learning rate of the reconstruction head (``null``: ``lr``); a fresh head needs more than
    a pretrained encoder."""
    reid_head_lr: float | None = None
    """Learning rate of the Re-ID BNNecks and identity classifiers (``null``: ``lr``), fresh too: at
    a rate low enough for the encoders, the classifiers over hundreds of identities barely move."""
    weight_decay: float = 1e-4
    bias_lr_factor: float = 2.0
    warmup_epochs: int = 5
    warmup_factor: float = 0.1
    min_lr: float = 1e-7
    max_grad_norm: float | None = 5.0


@dataclass
class ReTextRecipeConfig:
    """Everything a ReText run depends on; ``config.yaml`` in the run folder reproduces it."""

    seed: int = 0
    model: ModelArgs = field(default_factory=ModelArgs)
    data: DataArgs = field(default_factory=DataArgs)
    captions: CaptionArgs = field(default_factory=CaptionArgs)
    optim: OptimArgs = field(default_factory=OptimArgs)
    train: TrainArgs = field(default_factory=TrainArgs)
    eval: EvalArgs = field(default_factory=EvalArgs)


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------
def load_captions(args: CaptionArgs) -> Dataset | None:
    """The captioned single-camera images, relabelled to 0..C-1 (``None`` in mode ``none``)."""
    if args.mode == "none":
        return None
    try:
        splits = load_reid_dataset(args.layout, args.root, on_bad_image=args.on_bad_image, **args.options)
    except ValueError as error:
        raise ConfigError(f"captions: {error}") from error
    captions, _ = relabel(splits["train"])
    return captions.cast_column("image", Image(decode=False))


class MixedBatches:
    """Pairs every multi-camera batch with a captioned batch: one epoch is one pass of the
    multi-camera loader; the captioned loader restarts whenever it runs out (and only advances
    its epoch when the multi-camera one does, so that a resume replays the same pairs)."""

    def __init__(self, multi_camera: DataLoader, captioned: DataLoader | None):
        self.multi_camera = multi_camera
        self.captioned = captioned
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        set_sampler_epoch(self.multi_camera, epoch)

    def __len__(self) -> int:
        return len(self.multi_camera)

    def _captioned_batches(self) -> Iterator[dict | None]:
        if self.captioned is None:
            while True:
                yield None
        cycle = 0
        while True:
            # Cycle c of epoch e reshuffles with a distinct sampler epoch.
            set_sampler_epoch(self.captioned, self.epoch * 1_000 + cycle)
            yield from self.captioned
            cycle += 1

    def __iter__(self) -> Iterator[tuple[dict, dict | None]]:
        return zip(self.multi_camera, self._captioned_batches(), strict=False)


# ------------------------------------------------------------------------------------------------
# Model and loss
# ------------------------------------------------------------------------------------------------
NOT_CONFIG_FIELDS = ("clip_name_or_path", "text_encoder_name_or_path", "image_size", "gradient_checkpointing")


def build_model(args: ModelArgs, num_classes: int) -> ReTextModel:
    """ReText from a CLIP checkpoint; every other ``model.*`` field is a ``ReTextConfig`` field."""
    config_fields = {f.name: getattr(args, f.name) for f in fields(args) if f.name not in NOT_CONFIG_FIELDS}
    return ReTextModel.from_clip_pretrained(
        resolve_clip_path(args.clip_name_or_path),
        num_classes=num_classes,
        image_size=tuple(args.image_size),
        text_encoder_name_or_path=args.text_encoder_name_or_path,
        **config_fields,
    )


def retext_loss_fn(
    model: torch.nn.Module, mode: str, num_multi_camera_classes: int, gather: Callable | None
) -> Callable[[tuple], tuple]:
    """``(multi-camera batch, captioned batch) -> (loss, logs)`` for the chosen caption mode."""

    def compute_loss(batch: tuple) -> tuple[torch.Tensor, dict]:
        multi, captioned = batch
        inputs: dict[str, Any] = {
            "pixel_values": multi["pixel_values"],
            "labels": multi["labels"],
            "feature_gather": gather,
        }
        if mode == "identities":
            # The captioned identities continue the label range of the multi-camera ones.
            inputs["pixel_values"] = torch.cat([multi["pixel_values"], captioned["pixel_values"]])
            inputs["labels"] = torch.cat([multi["labels"], captioned["labels"] + num_multi_camera_classes])
        elif mode == "text":
            inputs.update(
                caption_pixel_values=captioned["pixel_values"],
                input_ids=captioned["input_ids"],
                attention_mask=captioned["attention_mask"],
                caption_labels=captioned["labels"],
            )
        out = model(**inputs)
        logs = {"id": out.id_loss.detach(), "triplet": out.triplet_loss.detach()}
        for name in ("matching", "structure", "reconstruction"):
            value = getattr(out, f"{name}_loss")
            if value is not None:
                logs[name] = value.detach()
        return out.loss, logs

    return compute_loss


def build_retext_optimizer(model: ReTextModel, args: OptimArgs) -> torch.optim.Optimizer:
    """Adam over the trainable parameters, with the rates of ``args``: ``lr`` for the image
    encoder, ``text_lr`` for the text encoder and projection, ``head_lr`` for the reconstruction
    head and mask token, ``reid_head_lr`` for the BNNecks and identity classifiers."""
    lr_overrides = {}
    if args.text_lr is not None:
        lr_overrides[r"^text_"] = args.text_lr
    if args.head_lr is not None:
        lr_overrides[r"^(reconstruction_head|mask_token)"] = args.head_lr
    if args.reid_head_lr is not None:
        lr_overrides[r"^head\."] = args.reid_head_lr
    return build_optimizer(
        model.named_parameters(),
        "adam",
        lr=args.lr,
        weight_decay=args.weight_decay,
        bias_lr_factor=args.bias_lr_factor,
        lr_overrides=lr_overrides,
    )


# ------------------------------------------------------------------------------------------------
# Run
# ------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the recipe; returns ``{domain name: metrics}`` (the content of ``eval_results.json``)."""
    cfg, args = parse_recipe_args(ReTextRecipeConfig, argv, description=__doc__.splitlines()[0])
    output_dir = Path(args.output_dir)
    accelerator = create_accelerator(
        output_dir,
        seed=cfg.seed,
        gradient_accumulation_steps=cfg.train.gradient_accumulation_steps,
        mixed_precision=cfg.train.mixed_precision,
    )
    setup_logging(accelerator, log_file=output_dir / "train.log")
    set_seed(cfg.seed)
    if accelerator.is_main_process:
        save_config(cfg, output_dir / "config.yaml")
    started = time.perf_counter()
    mode = cfg.captions.mode

    # 1. Data ------------------------------------------------------------------------------------
    synth_captions = cfg.data.synthpeds is not None and mode != "none"
    with accelerator.main_process_first():
        if accelerator.is_main_process:
            prepare_synthpeds(cfg.data, extra_layouts=["captions"] if synth_captions else [])
        data = load_data(cfg.data)
        captions = load_captions(cfg.captions)
    num_captioned = len(set(captions["label"])) if captions is not None else 0
    num_classes = data.num_classes + (num_captioned if mode == "identities" else 0)

    # 2. Model, image processor, tokenizer ---------------------------------------------------------
    clip_path = resolve_clip_path(cfg.model.clip_name_or_path)
    tokenizer = load_tokenizer(cfg.model.text_encoder_name_or_path or clip_path)
    model = build_model(cfg.model, num_classes)
    if mode != "text":
        # No text tasks: the text encoder and reconstruction head get no gradient (and must not be
        # trainable under DDP, which expects a gradient for every trainable parameter).
        model.set_trainable(text=False, reconstruction=False)
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    processor = build_reid_image_processor(model.config.image_size)
    test_transform = ReidTestTransform(ReidTransformConfig.from_image_processor(processor))
    train_transform = ReidTrainTransform(
        ReidTransformConfig.from_image_processor(
            processor, flip_p=cfg.data.flip_p, pad=cfg.data.pad, random_erasing_p=cfg.data.random_erasing_p
        )
    )
    caption_stats = None
    if captions is not None and mode == "text":
        caption_stats = caption_statistics(captions, tokenizer, model.config.max_text_length)

    # 3. Training --------------------------------------------------------------------------------
    multi_sampler = PKSampler(
        data.train["label"], p=cfg.data.p, k=cfg.data.k, seed=cfg.seed, num_replicas=accelerator.num_processes
    )
    multi_loader = DataLoader(
        data.train,
        batch_size=multi_sampler.batch_size,
        sampler=multi_sampler,
        collate_fn=ReidCollator(train_transform, columns=["labels"], seed=cfg.seed),
        num_workers=cfg.data.num_workers,
    )
    caption_loader = None
    if captions is not None:
        caption_sampler = PKSampler(
            captions["label"],
            p=cfg.captions.p,
            k=cfg.captions.k,
            seed=cfg.seed + 1,
            num_replicas=accelerator.num_processes,
        )
        image_collator = ReidCollator(
            train_transform, columns=["labels", "captions"] if mode == "text" else ["labels"], seed=cfg.seed
        )
        collate = (
            CaptionCollator(image_collator, tokenizer, model.config.max_text_length, seed=cfg.seed)
            if mode == "text"
            else image_collator
        )
        caption_loader = DataLoader(
            captions,
            batch_size=caption_sampler.batch_size,
            sampler=caption_sampler,
            collate_fn=collate,
            num_workers=cfg.data.num_workers,
        )

    optimizer = build_retext_optimizer(model, cfg.optim)
    scheduler = build_scheduler(
        optimizer,
        "cosine",
        total=cfg.optim.epochs,
        warmup=cfg.optim.warmup_epochs,
        warmup_factor=cfg.optim.warmup_factor,
        min_lr=cfg.optim.min_lr,
        start_index=1,
    )
    model, optimizer, multi_loader = accelerator.prepare(model, optimizer, multi_loader)
    if caption_loader is not None:
        caption_loader = accelerator.prepare(caption_loader)
    unwrapped: ReTextModel = accelerator.unwrap_model(model)
    runner = StageRunner(
        accelerator,
        output_dir,
        [STAGE],
        seed=cfg.seed,
        checkpoint_every=cfg.train.checkpoint_every,
        total_limit=cfg.train.checkpoint_total_limit,
        resume=args.resume,
        log_every=cfg.train.log_every,
        progress_bar=cfg.train.progress_bar,
    )
    gather = gather_with_grad if accelerator.num_processes > 1 else None
    stage_start = time.perf_counter()
    runner.train_stage(
        STAGE,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        dataloader=MixedBatches(multi_loader, caption_loader),
        compute_loss=retext_loss_fn(model, mode, data.num_classes, gather),
        epochs=cfg.optim.epochs,
        max_grad_norm=cfg.optim.max_grad_norm,
        on_optimizer_step=lambda state: unwrapped.momentum_update(),
    )
    timings = {"train_seconds": time.perf_counter() - stage_start}

    # 4. Evaluation ------------------------------------------------------------------------------
    stage_start = time.perf_counter()
    sync_buffers(unwrapped, accelerator)
    results = evaluate_domains(
        data.eval_sets,
        lambda batch: unwrapped.get_image_embeddings(batch["pixel_values"]),
        model=unwrapped,
        transform=test_transform,
        data_args=cfg.data,
        eval_args=cfg.eval,
        normalize=cfg.model.feature_norm,
        output_dir=output_dir,
        accelerator=accelerator,
        progress_bar=cfg.train.progress_bar,
    )
    timings["eval_seconds"] = time.perf_counter() - stage_start
    timings["total_seconds"] = time.perf_counter() - started

    # 5. Save, model card, push ------------------------------------------------------------------
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        train_results = {
            **{k: round(v, 2) for k, v in timings.items()},
            "steps": runner.state.global_step,
            "num_train_images": len(data.train),
            "num_identities": data.num_classes,
            "num_captioned_images": len(captions) if captions is not None else 0,
            "num_captioned_identities": num_captioned,
            "caption_mode": mode,
            "num_processes": accelerator.num_processes,
        }
        if caption_stats is not None:
            train_results["captions"] = caption_stats.to_dict()
        save_run(cfg, args, output_dir, unwrapped, processor, tokenizer, results, train_results)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return results


def save_run(cfg, args, output_dir: Path, model, processor, tokenizer, results, train_results) -> None:
    """``save_pretrained`` of model (+ ``reconstruction_head/``), processor and tokenizer; results
    files; model card; push."""
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    (output_dir / "eval_results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (output_dir / "train_results.json").write_text(
        json.dumps(train_results, indent=2) + "\n", encoding="utf-8"
    )
    logger.info("Run finished in %.0f s: %s", train_results["total_seconds"], json.dumps(train_results))

    clip = cfg.model.clip_name_or_path
    base_model = SYNTHCLIP_HUB_ID if clip == SYNTHCLIP_NAME else (None if os.path.isdir(clip) else clip)
    repo_id = args.hub_model_id or f"hf-reid/{output_dir.resolve().name}"
    write_model_card(
        output_dir,
        CardInfo(
            method="retext",
            model_id=repo_id,
            base_model=base_model,
            datasets=[cfg.data.layout, cfg.captions.layout],
            extra={
                "training_config": (output_dir / "config.yaml").read_text(encoding="utf-8"),
                "caption_mode": cfg.captions.mode,
                "train_results": train_results,
            },
        ),
        {
            name: {k: v for k, v in metrics.items() if isinstance(v, float)}
            for name, metrics in results.items()
        },
    )
    if args.push_to_hub:
        url = push_run_to_hub(output_dir, repo_id, ignore_patterns=HUB_IGNORE)
        logger.info("Pushed to %s", url)


def cli() -> None:
    """Command-line entry point: configuration mistakes end with a one-line error, not a traceback."""
    try:
        main()
    except ConfigError as error:
        sys.exit(f"{Path(sys.argv[0]).name}: error: {error}")


if __name__ == "__main__":
    cli()
