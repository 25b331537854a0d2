"""CLIP-ReID (Li, Sun, Li, AAAI 2023): learn one text prompt per identity, then fine-tune the image
encoder with those prompts as guidance.

    accelerate launch recipes/clip_reid.py --config recipes/configs/clip_reid_synthpeds.yaml \\
        --output_dir runs/clip_reid_synthpeds [--resume] [--stage2.epochs 30] [--push_to_hub]

The same script runs under ``python``, ``accelerate launch`` on one CPU and on several GPUs.

1. Data: the training domains (relabelled to 0..C-1; several are pooled with globally unique
   labels) and the evaluation domains' query/gallery splits, read by ``load_reid_dataset``.
   SynthPeds is generated into ``data.root`` first when the config says so and it is missing.
2. Model: ``CLIPReIDModel.from_clip_pretrained`` on any CLIP checkpoint (SynthCLIP, the tiny CLIP
   shipped with hf_reid, for CPU runs; ``openai/clip-vit-base-patch16`` for real ones), or a saved
   CLIP-ReID folder to continue from.
3. Stage 1 (prompts): the image features of the frozen encoder are extracted once (test-time
   transform, cached), then only the identity prompt tokens learn with ``L_i2t + L_t2i``.
   Every process runs the same full stage-1 batches (it is cheap), so the prompts stay identical
   across processes without synchronising anything and the batch is the paper's whatever the
   process count.
4. Stage 2 (image encoder): the text features of all identities are computed once; the image
   encoder (or its LoRA adapter), BNNecks and classifiers learn with ID + triplet + image-to-text
   losses on PK batches. Under several processes the PK sampler gives every process its own
   identities and the triplet mining gathers the features of all processes.
5. Evaluation on every evaluation domain (``eval/<domain>/``: eval_results.json, CMC curve, ranked
   lists; all domains in ``eval_results.json``), then ``save_pretrained`` of model, image processor
   and tokenizer into ``--output_dir``, a model card with the results as model-index metadata, and
   ``--push_to_hub``.

``stage1.enabled: false`` is the paper's baseline: no prompts, no image-to-text loss.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader
from transformers import PretrainedConfig

from hf_reid.data import PKSampler, ReidCollator, ReidTestTransform, ReidTrainTransform, ReidTransformConfig
from hf_reid.hub import CardInfo, push_run_to_hub, write_model_card
from hf_reid.models import DEFAULT_PROMPT_TEMPLATE, CLIPReIDModel, build_reid_image_processor
from hf_reid.synthclip import SYNTHCLIP_NAME as SYNTHCLIP
from hf_reid.synthclip import resolve_clip_path
from hf_reid.tokenization import load_tokenizer
from hf_reid.training import (
    ConfigError,
    DataArgs,
    EvalArgs,
    FeatureDataset,
    StageRunner,
    TrainArgs,
    build_optimizer,
    build_scheduler,
    create_accelerator,
    evaluate_domains,
    extract_features,
    fingerprint,
    gather_with_grad,
    load_data,
    load_or_extract,
    parse_recipe_args,
    prepare_synthpeds,
    resolve_resume_checkpoint,
    save_config,
    set_seed,
    setup_logging,
    sync_buffers,
)

logger = logging.getLogger("hf_reid.recipes.clip_reid")

SYNTHCLIP_HUB_ID = "hf-reid/synthclip"
STAGES = ("prompts", "image_encoder")
CACHE_DIR = "cache"
"""Folder of the run's caches (not uploaded by ``--push_to_hub``)."""
HUB_IGNORE = ["checkpoints/*", f"{CACHE_DIR}/*", "logs/*", "*.tmp"]


# ------------------------------------------------------------------------------------------------
# Config
# ------------------------------------------------------------------------------------------------
@dataclass
class LoraArgs:
    """LoRA on the CLIP towers during stage 2 (``hf_reid.models.lora.LoraSettings``)."""

    towers: list[str] = field(default_factory=lambda: ["vision"])
    projections: list[str] = field(default_factory=lambda: ["q", "k", "v", "out"])
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0


@dataclass
class ModelArgs:
    """The CLIP to start from and the ``CLIPReIDConfig`` fields (see its docstring)."""

    clip_name_or_path: str = SYNTHCLIP
    """A CLIP checkpoint (Hub id or folder), ``synthclip``, or a saved CLIP-ReID folder."""
    ignore_mismatched_sizes: bool = False
    """Starting from a CLIP-ReID folder trained on other identities: keep its backbone and start
    the per-identity parts (classifiers, prompts) afresh."""
    image_size: tuple[int, int] = (128, 64)
    stride_size: int | None = None
    pos_interpolation: Literal["bicubic", "bilinear"] = "bicubic"
    use_sie: bool = False
    sie_coe: float = 3.0
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    num_prompt_tokens: int = 4
    neck_feat: Literal["before", "after"] = "before"
    feature_norm: bool = True
    """L2-normalise the retrieval embeddings (CLIP-ReID evaluates normalised features)."""
    id_loss_weight: float = 0.25
    triplet_loss_weight: float = 1.0
    i2t_loss_weight: float = 1.0
    triplet_margin: float | None = 0.3
    """``null`` selects the soft-margin triplet."""
    label_smoothing: float = 0.1
    lora: LoraArgs | None = None
    """Train a LoRA adapter instead of the whole image encoder in stage 2 (``null``: full)."""
    gradient_checkpointing: bool = False


@dataclass
class Stage1Args:
    """Prompt learning (timm cosine schedule, stepped per epoch)."""

    enabled: bool = True
    epochs: int = 120
    batch_size: int = 64
    lr: float = 3.5e-4
    weight_decay: float = 1e-4
    warmup_epochs: int = 5
    warmup_init_lr: float = 1e-5
    min_lr: float = 1e-6


@dataclass
class Stage2Args:
    """Image-encoder fine-tuning (Adam, warm-up + multi-step schedule, stepped per epoch)."""

    epochs: int = 60
    lr: float = 5e-6
    weight_decay: float = 1e-4
    weight_decay_bias: float = 1e-4
    bias_lr_factor: float = 2.0
    warmup_epochs: int = 10
    warmup_factor: float = 0.1
    milestones: list[int] = field(default_factory=lambda: [30, 50])
    gamma: float = 0.1
    max_grad_norm: float | None = None


@dataclass
class CLIPReIDRecipeConfig:
    """Everything a CLIP-ReID run depends on; ``config.yaml`` in the run folder reproduces it."""

    seed: int = 0
    model: ModelArgs = field(default_factory=ModelArgs)
    data: DataArgs = field(default_factory=DataArgs)
    stage1: Stage1Args = field(default_factory=Stage1Args)
    stage2: Stage2Args = field(default_factory=Stage2Args)
    train: TrainArgs = field(default_factory=TrainArgs)
    eval: EvalArgs = field(default_factory=EvalArgs)


# ------------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------------
def _saved_model_type(name_or_path: str) -> str | None:
    try:
        config, _ = PretrainedConfig.get_config_dict(name_or_path)
    except (OSError, ValueError) as error:
        raise FileNotFoundError(
            f"model.clip_name_or_path: cannot read a model config from {name_or_path!r} ({error})."
        ) from error
    return config.get("model_type")


def build_model(args: ModelArgs, num_classes: int, num_cameras: int, tokenizer) -> CLIPReIDModel:
    """A CLIP-ReID model from a CLIP checkpoint, or from a saved CLIP-ReID folder."""
    path = resolve_clip_path(args.clip_name_or_path)
    reid_fields = dict(
        stride_size=args.stride_size,
        pos_interpolation=args.pos_interpolation,
        use_sie=args.use_sie,
        num_cameras=num_cameras,
        sie_coe=args.sie_coe,
        prompt_template=args.prompt_template,
        num_prompt_tokens=args.num_prompt_tokens,
        neck_feat=args.neck_feat,
        feature_norm=args.feature_norm,
        id_loss_weight=args.id_loss_weight,
        triplet_loss_weight=args.triplet_loss_weight,
        i2t_loss_weight=args.i2t_loss_weight,
        triplet_margin=args.triplet_margin,
        label_smoothing=args.label_smoothing,
    )
    if _saved_model_type(path) == "clip_reid":
        # Continue from a CLIP-ReID model: its config says what the weights are; a different number
        # of identities, input size or SIE table is refused with a clear error by from_pretrained.
        # Its prompt template (and token ids) are kept.
        logger.info("Starting from the CLIP-ReID model in %s.", path)
        for name in ("prompt_template", "num_prompt_tokens"):
            reid_fields.pop(name)
        return CLIPReIDModel.from_pretrained(
            path,
            num_classes=num_classes,
            image_size=tuple(args.image_size),
            ignore_mismatched_sizes=args.ignore_mismatched_sizes,
            **reid_fields,
        )
    model = CLIPReIDModel.from_clip_pretrained(
        path, num_classes=num_classes, image_size=tuple(args.image_size), tokenizer=tokenizer, **reid_fields
    )
    return model


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
    context = saved.get("prompt_learner.context")
    if context is not None and context[0] != num_classes:
        raise ValueError(
            f"--resume: checkpoint {checkpoint} was trained on {context[0]} identities, but the training "
            f"data of this run has {num_classes} (data.train_domains under {{data.root}}). Resume with the "
            "data the run started with, or start a new --output_dir."
        )
    wrong = {n: (saved[n], s) for n, s in expected.items() if n in saved and saved[n] != s}
    if wrong:
        name, (have, want) = next(iter(wrong.items()))
        raise ValueError(
            f"--resume: checkpoint {checkpoint} does not fit this run's model: {name} is {have} there but "
            f"{want} here ({len(wrong)} tensor(s) differ). Was the run started with another config? "
            "Resume with the run's own config.yaml, or start a new --output_dir."
        )


def weights_fingerprint(model: CLIPReIDModel) -> str:
    """A cheap fingerprint of the vision tower's weights (the stage-1 feature cache depends on it)."""
    sums = [float(p.detach().double().sum()) for p in model.backbone.clip.vision_model.parameters()]
    return fingerprint([f"{s:.10e}" for s in sums])


# ------------------------------------------------------------------------------------------------
# Run
# ------------------------------------------------------------------------------------------------
def stage1_loss_fn(model: CLIPReIDModel, device: torch.device) -> Callable[[dict], tuple]:
    def compute_loss(batch: dict) -> tuple[torch.Tensor, dict]:
        out = model.prompt_loss(batch["features"].to(device), batch["labels"].to(device))
        return out.loss, {"i2t": out.i2t_loss.detach(), "t2i": out.t2i_loss.detach()}

    return compute_loss


def stage2_loss_fn(
    model: torch.nn.Module, text_features: torch.Tensor | None, use_sie: bool, gather: Callable | None
) -> Callable[[dict], tuple]:
    def compute_loss(batch: dict) -> tuple[torch.Tensor, dict]:
        out = model(
            pixel_values=batch["pixel_values"],
            labels=batch["labels"],
            camids=batch["camids"] if use_sie else None,
            text_features=text_features,
            feature_gather=gather,
        )
        logs = {"id": out.id_loss.detach(), "triplet": out.triplet_loss.detach()}
        if out.i2t_loss is not None:
            logs["i2t"] = out.i2t_loss.detach()
        return out.loss, logs

    return compute_loss


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the recipe; returns ``{domain name: metrics}`` (the content of ``eval_results.json``)."""
    cfg, args = parse_recipe_args(CLIPReIDRecipeConfig, argv, description=__doc__.splitlines()[0])
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

    # 1. Data ------------------------------------------------------------------------------------
    with accelerator.main_process_first():
        if accelerator.is_main_process:
            prepare_synthpeds(cfg.data)
        data = load_data(cfg.data)

    # 2. Model, image processor, tokenizer ---------------------------------------------------------
    tokenizer = load_tokenizer(resolve_clip_path(cfg.model.clip_name_or_path))
    model = build_model(cfg.model, data.num_classes, data.num_cameras, tokenizer)
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    processor = build_reid_image_processor(model.config.image_size)
    test_transform = ReidTestTransform(ReidTransformConfig.from_image_processor(processor))
    train_transform = ReidTrainTransform(
        ReidTransformConfig.from_image_processor(
            processor, flip_p=cfg.data.flip_p, pad=cfg.data.pad, random_erasing_p=cfg.data.random_erasing_p
        )
    )
    resume_from = resolve_resume_checkpoint(output_dir, args.resume)
    if resume_from is not None:
        check_checkpoint_fits(resume_from, model, data.num_classes)
    use_sie = model.config.use_sie

    # The model is prepared once, with the stage-2 parameters trainable (under several processes
    # DDP synchronises exactly those); stage 1 trains the prompts through the unwrapped model.
    model.set_trainable("image")
    model = accelerator.prepare(model)
    unwrapped: CLIPReIDModel = accelerator.unwrap_model(model)
    runner = StageRunner(
        accelerator,
        output_dir,
        list(STAGES),
        seed=cfg.seed,
        checkpoint_every=cfg.train.checkpoint_every,
        total_limit=cfg.train.checkpoint_total_limit,
        resume=args.resume,
        log_every=cfg.train.log_every,
        progress_bar=cfg.train.progress_bar,
    )
    timings: dict[str, float] = {}

    # 3. Stage 1: prompts ------------------------------------------------------------------------
    stage_start = time.perf_counter()
    unwrapped.set_trainable("prompts")
    features_loader = accelerator.prepare(
        DataLoader(
            data.train,
            batch_size=cfg.data.eval_batch_size,
            collate_fn=ReidCollator(test_transform, columns=["labels"]),
            num_workers=cfg.data.num_workers,
        )
    )
    optimizer1 = build_optimizer(
        unwrapped.named_parameters(), "adam", lr=cfg.stage1.lr, weight_decay=cfg.stage1.weight_decay
    )
    scheduler1 = build_scheduler(
        optimizer1,
        "cosine",
        total=cfg.stage1.epochs,
        warmup=cfg.stage1.warmup_epochs,
        warmup_init_lr=cfg.stage1.warmup_init_lr,
        min_lr=cfg.stage1.min_lr,
        start_index=1,
    )
    optimizer1 = accelerator.prepare(optimizer1)
    stage1_epochs = cfg.stage1.epochs if cfg.stage1.enabled else 0
    stage1_loader: Any = []
    if stage1_epochs:
        cache_key = fingerprint(
            "clip_reid_stage1",
            weights_fingerprint(unwrapped),
            list(unwrapped.config.image_size),
            unwrapped.config.stride_size,
            data.train._fingerprint,
        )
        cached = load_or_extract(
            output_dir / CACHE_DIR / "stage1_image_features.pt",
            lambda: extract_features(
                lambda batch: unwrapped.get_image_features(batch["pixel_values"]),
                features_loader,
                accelerator,
                model=unwrapped,
                metadata_keys=["labels"],
                desc="Stage-1 image features",
                progress_bar=cfg.train.progress_bar,
            ),
            accelerator,
            key=cache_key,
        )
        stage1_loader = DataLoader(
            FeatureDataset({"features": cached["features"], "labels": cached["labels"]}),
            batch_size=cfg.stage1.batch_size,
            shuffle=True,
        )
    runner.train_stage(
        "prompts",
        model=model,
        optimizer=optimizer1,
        scheduler=scheduler1,
        dataloader=stage1_loader,
        compute_loss=stage1_loss_fn(unwrapped, accelerator.device),
        epochs=stage1_epochs,
    )
    timings["stage1_seconds"] = time.perf_counter() - stage_start

    # 4. Stage 2: image encoder ------------------------------------------------------------------
    stage_start = time.perf_counter()
    text_features = unwrapped.compute_text_features() if cfg.stage1.enabled else None
    if text_features is not None:
        text_features = text_features.detach()
    if cfg.model.lora is not None:
        from hf_reid.models.lora import LoraSettings, apply_lora

        unwrapped.requires_grad_(False)
        peft_model = apply_lora(unwrapped, LoraSettings.from_dict(vars(cfg.model.lora)))
        for name, parameter in peft_model.named_parameters():
            if "prompt_learner" in name:  # the adapter stores the prompts; stage 2 does not train them
                parameter.requires_grad_(False)
        train_model = accelerator.prepare(peft_model)
    else:
        unwrapped.set_trainable("image")
        train_model = model
    sampler = PKSampler(
        data.train["label"],
        p=cfg.data.p,
        k=cfg.data.k,
        seed=cfg.seed,
        num_replicas=accelerator.num_processes,
    )
    train_loader = DataLoader(
        data.train,
        batch_size=sampler.batch_size,
        sampler=sampler,
        collate_fn=ReidCollator(train_transform, columns=["labels", "camids"], seed=cfg.seed),
        num_workers=cfg.data.num_workers,
    )
    optimizer2 = build_optimizer(
        accelerator.unwrap_model(train_model).named_parameters(),
        "adam",
        lr=cfg.stage2.lr,
        weight_decay=cfg.stage2.weight_decay,
        bias_lr_factor=cfg.stage2.bias_lr_factor,
        weight_decay_bias=cfg.stage2.weight_decay_bias,
    )
    scheduler2 = build_scheduler(
        optimizer2,
        "multistep",
        warmup=cfg.stage2.warmup_epochs,
        warmup_factor=cfg.stage2.warmup_factor,
        milestones=cfg.stage2.milestones,
        gamma=cfg.stage2.gamma,
        start_index=1,
    )
    optimizer2, train_loader = accelerator.prepare(optimizer2, train_loader)
    gather = gather_with_grad if accelerator.num_processes > 1 else None
    runner.train_stage(
        "image_encoder",
        model=train_model,
        optimizer=optimizer2,
        scheduler=scheduler2,
        dataloader=train_loader,
        compute_loss=stage2_loss_fn(train_model, text_features, use_sie, gather),
        epochs=cfg.stage2.epochs,
        max_grad_norm=cfg.stage2.max_grad_norm,
    )
    timings["stage2_seconds"] = time.perf_counter() - stage_start

    # 5. Evaluation ------------------------------------------------------------------------------
    stage_start = time.perf_counter()
    eval_model = accelerator.unwrap_model(train_model)
    sync_buffers(eval_model, accelerator)

    def embed(batch: dict) -> torch.Tensor:
        return eval_model.get_image_embeddings(batch["pixel_values"], batch["camids"] if use_sie else None)

    results = evaluate_domains(
        data.eval_sets,
        embed,
        model=eval_model,
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

    # 6. Save, model card, push ------------------------------------------------------------------
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_run(cfg, args, output_dir, eval_model, processor, tokenizer, results, timings, data, accelerator)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return results


def save_run(cfg, args, output_dir, model, processor, tokenizer, results, timings, data, accelerator) -> None:
    """``save_pretrained`` of model (merged, when LoRA was trained; the adapter goes to
    ``lora_adapter/``), processor and tokenizer; results files; model card; push."""
    if cfg.model.lora is not None:
        from hf_reid.models.lora import merge_lora, save_lora_adapter

        save_lora_adapter(model, output_dir / "lora_adapter")
        model = merge_lora(model)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    (output_dir / "eval_results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    train_results = {
        **{k: round(v, 2) for k, v in timings.items()},
        "num_train_images": len(data.train),
        "num_identities": data.num_classes,
        "num_processes": accelerator.num_processes,
    }
    (output_dir / "train_results.json").write_text(
        json.dumps(train_results, indent=2) + "\n", encoding="utf-8"
    )
    logger.info("Run finished in %.0f s: %s", timings["total_seconds"], json.dumps(train_results))

    clip = cfg.model.clip_name_or_path
    base_model = SYNTHCLIP_HUB_ID if clip == SYNTHCLIP else (None if os.path.isdir(clip) else clip)
    repo_id = args.hub_model_id or f"hf-reid/{output_dir.resolve().name}"
    write_model_card(
        output_dir,
        CardInfo(
            method="clip_reid",
            model_id=repo_id,
            base_model=base_model,
            datasets=[cfg.data.layout],
            extra={
                "training_config": (output_dir / "config.yaml").read_text(encoding="utf-8"),
                "stage1_enabled": cfg.stage1.enabled,
                "lora": cfg.model.lora is not None,
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
