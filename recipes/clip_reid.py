"""CLIP-ReID (Li, Sun, Li, AAAI 2023): learn one text prompt per identity, then fine-tune the image
encoder with those prompts as guidance.

    accelerate launch recipes/clip_reid.py      # SynthPeds + SynthCLIP, writes runs/clip_reid
    accelerate launch recipes/clip_reid.py --config recipes/configs/clip_reid_market1501.yaml \\
        --output_dir runs/clip_reid_market [--resume] [--stage2.epochs 30] [--push_to_hub]

The same script runs under ``python``, ``accelerate launch`` on one CPU and on several GPUs.
Without ``--config`` it trains on its embedded default, ``configs/clip_reid_synthpeds.yaml``.

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

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader
from transformers import PretrainedConfig

from hf_reid.data import ReidCollator
from hf_reid.models import DEFAULT_PROMPT_TEMPLATE, CLIPReIDConfig, CLIPReIDModel
from hf_reid.synthclip import SYNTHCLIP_NAME as SYNTHCLIP
from hf_reid.synthclip import resolve_clip_path
from hf_reid.tokenization import load_tokenizer
from hf_reid.training import (
    CACHE_DIR,
    FeatureDataset,
    RecipeConfig,
    RecipeRun,
    build_optimizer,
    build_scheduler,
    check_checkpoint_fits,
    extract_features,
    fingerprint,
    gather_with_grad,
    load_or_extract,
    model_config_kwargs,
    recipe_cli,
)

logger = logging.getLogger("hf_reid.recipes.clip_reid")

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "clip_reid_synthpeds.yaml"
"""The embedded default: SynthPeds (generated on first use) and the shipped SynthCLIP."""
STAGES = ("prompts", "image_encoder")


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
class CLIPReIDRecipeConfig(RecipeConfig):
    """A CLIP-ReID run: the shared sections (seed, data, train, eval) and the model and its stages."""

    model: ModelArgs = field(default_factory=ModelArgs)
    stage1: Stage1Args = field(default_factory=Stage1Args)
    stage2: Stage2Args = field(default_factory=Stage2Args)


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
    """A CLIP-ReID model from a CLIP checkpoint, or from a saved CLIP-ReID folder; every
    ``model.*`` field that is a :class:`CLIPReIDConfig` field goes to the config."""
    path = resolve_clip_path(args.clip_name_or_path)
    config_fields = {**model_config_kwargs(args, CLIPReIDConfig), "num_cameras": num_cameras}
    if _saved_model_type(path) == "clip_reid":
        # Continue from a CLIP-ReID model: its config says what the weights are; a different number
        # of identities, input size or SIE table is refused with a clear error by from_pretrained.
        # Its prompt template (and token ids) are kept.
        logger.info("Starting from the CLIP-ReID model in %s.", path)
        for name in ("prompt_template", "num_prompt_tokens"):
            config_fields.pop(name)
        return CLIPReIDModel.from_pretrained(
            path,
            num_classes=num_classes,
            ignore_mismatched_sizes=args.ignore_mismatched_sizes,
            **config_fields,
        )
    return CLIPReIDModel.from_clip_pretrained(
        path, num_classes=num_classes, tokenizer=tokenizer, **config_fields
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
    """Run the recipe; returns ``{evaluation name: metrics}`` (the content of ``eval_results.json``)."""
    run = RecipeRun.start(
        CLIPReIDRecipeConfig, argv, method="clip_reid", default_config=DEFAULT_CONFIG, description=__doc__
    )
    cfg, accelerator, output_dir = run.cfg, run.accelerator, run.output_dir

    # 1. Data ------------------------------------------------------------------------------------
    data = run.load_data()

    # 2. Model, image processor, tokenizer ---------------------------------------------------------
    tokenizer = load_tokenizer(resolve_clip_path(cfg.model.clip_name_or_path))
    model = build_model(cfg.model, data.num_classes, data.num_cameras, tokenizer)
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    processor, train_transform, test_transform = run.image_transforms(model.config.image_size)
    if run.resume_checkpoint is not None:
        check_checkpoint_fits(run.resume_checkpoint, model, data.num_classes)
    use_sie = model.config.use_sie

    # The model is prepared once, with the stage-2 parameters trainable (under several processes
    # DDP synchronises exactly those); stage 1 trains the prompts through the unwrapped model.
    model.set_trainable("image")
    model = accelerator.prepare(model)
    unwrapped: CLIPReIDModel = accelerator.unwrap_model(model)
    runner = run.stage_runner(STAGES)

    # 3. Stage 1: prompts ------------------------------------------------------------------------
    with run.timed("stage1"):
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

    # 4. Stage 2: image encoder ------------------------------------------------------------------
    with run.timed("stage2"):
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
        train_loader = run.pk_loader(
            data.train, ReidCollator(train_transform, columns=["labels", "camids"], seed=cfg.seed)
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

    # 5. Save (LoRA merged; its adapter in lora_adapter/), evaluate, results and model card -----
    eval_model = accelerator.unwrap_model(train_model)
    if cfg.model.lora is not None:
        from hf_reid.models.lora import merge_lora, save_lora_adapter

        if accelerator.is_main_process:
            save_lora_adapter(eval_model, output_dir / "lora_adapter")
        eval_model = merge_lora(eval_model)  # what is saved is what is evaluated
    run.save_model(
        eval_model,
        processor,
        tokenizer,
        datasets=[cfg.data.layout],
        card_extra={"stage1_enabled": cfg.stage1.enabled, "lora": cfg.model.lora is not None},
    )

    def embed(batch: dict) -> torch.Tensor:
        return eval_model.get_image_embeddings(batch["pixel_values"], batch["camids"] if use_sie else None)

    results = run.evaluate(
        data.eval_sets, embed, model=eval_model, transform=test_transform, normalize=cfg.model.feature_norm
    )
    run.finish(
        results, train_results={"num_train_images": len(data.train), "num_identities": data.num_classes}
    )
    return results


if __name__ == "__main__":
    recipe_cli(main)
