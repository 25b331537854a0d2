"""ReText (Mamedov et al., 2026): generalizable Re-ID from multi-camera Re-ID data plus captioned
single-camera images, trained jointly on Re-ID, image–text matching and text-guided image
reconstruction.

    accelerate launch recipes/retext.py         # SynthPeds + SynthCLIP, writes runs/retext
    accelerate launch recipes/retext.py --config recipes/configs/retext_p2_market1501.yaml \\
        --output_dir runs/retext_p2 [--resume] [--optim.epochs 10] [--push_to_hub]

The same script runs under ``python``, ``accelerate launch`` on one CPU and on several GPUs.
Without ``--config`` it trains on its embedded default, ``configs/retext_synthpeds.yaml``.

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

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from datasets import Dataset, Image
from torch.utils.data import DataLoader

from hf_reid.data import CaptionCollator, ReidCollator, caption_statistics, load_reid_dataset, relabel
from hf_reid.models import ReTextConfig, ReTextModel
from hf_reid.synthclip import SYNTHCLIP_NAME, resolve_clip_path
from hf_reid.tokenization import load_tokenizer
from hf_reid.training import (
    ConfigError,
    RecipeConfig,
    RecipeRun,
    build_optimizer,
    build_scheduler,
    gather_with_grad,
    model_config_kwargs,
    recipe_cli,
    set_sampler_epoch,
)

logger = logging.getLogger("hf_reid.recipes.retext")

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "retext_synthpeds.yaml"
"""The embedded default: SynthPeds (generated on first use) and the shipped SynthCLIP."""
STAGE = "retext"


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
class ReTextRecipeConfig(RecipeConfig):
    """A ReText run: the shared sections (seed, data, train, eval), the model, the captioned
    single-camera set and the optimiser (one stage)."""

    model: ModelArgs = field(default_factory=ModelArgs)
    captions: CaptionArgs = field(default_factory=CaptionArgs)
    optim: OptimArgs = field(default_factory=OptimArgs)


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
def build_model(args: ModelArgs, num_classes: int) -> ReTextModel:
    """ReText from a CLIP checkpoint; every ``model.*`` field that is a ``ReTextConfig`` field goes
    to the config."""
    return ReTextModel.from_clip_pretrained(
        resolve_clip_path(args.clip_name_or_path),
        num_classes=num_classes,
        text_encoder_name_or_path=args.text_encoder_name_or_path,
        **model_config_kwargs(args, ReTextConfig),
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
    """Run the recipe; returns ``{evaluation name: metrics}`` (the content of ``eval_results.json``)."""
    run = RecipeRun.start(
        ReTextRecipeConfig, argv, method="retext", default_config=DEFAULT_CONFIG, description=__doc__
    )
    cfg, accelerator = run.cfg, run.accelerator
    mode = cfg.captions.mode

    # 1. Data ------------------------------------------------------------------------------------
    synth_captions = cfg.data.synthpeds is not None and mode != "none"
    data = run.load_data(extra_synthpeds_layouts=["captions"] if synth_captions else [])
    with accelerator.main_process_first():
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
    processor, train_transform, test_transform = run.image_transforms(model.config.image_size)
    caption_stats = None
    if captions is not None and mode == "text":
        caption_stats = caption_statistics(captions, tokenizer, model.config.max_text_length)

    # 3. Training --------------------------------------------------------------------------------
    multi_loader = run.pk_loader(data.train, ReidCollator(train_transform, columns=["labels"], seed=cfg.seed))
    caption_loader = None
    if captions is not None:
        image_collator = ReidCollator(
            train_transform, columns=["labels", "captions"] if mode == "text" else ["labels"], seed=cfg.seed
        )
        caption_loader = run.pk_loader(
            captions,
            CaptionCollator(image_collator, tokenizer, model.config.max_text_length, seed=cfg.seed)
            if mode == "text"
            else image_collator,
            p=cfg.captions.p,
            k=cfg.captions.k,
            seed=cfg.seed + 1,
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
    runner = run.stage_runner([STAGE])
    gather = gather_with_grad if accelerator.num_processes > 1 else None
    with run.timed("train"):
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

    # 4. Save (with the diffusers head in reconstruction_head/), evaluate, results and model card -
    run.save_model(
        unwrapped,
        processor,
        tokenizer,
        datasets=[cfg.data.layout, cfg.captions.layout],
        card_extra={"caption_mode": mode},
    )
    results = run.evaluate(
        data.eval_sets,
        lambda batch: unwrapped.get_image_embeddings(batch["pixel_values"]),
        model=unwrapped,
        transform=test_transform,
        normalize=cfg.model.feature_norm,
    )
    train_results = {
        "steps": runner.state.global_step,
        "num_train_images": len(data.train),
        "num_identities": data.num_classes,
        "num_captioned_images": len(captions) if captions is not None else 0,
        "num_captioned_identities": num_captioned,
        "caption_mode": mode,
    }
    if caption_stats is not None:
        train_results["captions"] = caption_stats.to_dict()
    run.finish(results, train_results=train_results)
    return results


if __name__ == "__main__":
    recipe_cli(main)
