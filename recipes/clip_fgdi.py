"""CLIP-FGDI (Zhao, Qi, Geng, IEEE TIFS 2025): generalizable Re-ID from several source domains
with domain-invariant and domain-relevant text prompts guiding the image encoder.

    accelerate launch recipes/clip_fgdi.py      # SynthPeds + SynthCLIP, writes runs/clip_fgdi
    accelerate launch recipes/clip_fgdi.py --config recipes/configs/clip_fgdi_p1.yaml \\
        --output_dir runs/clip_fgdi_p1 [--resume] [--model.apn_sign code] [--push_to_hub]

The same script runs under ``python``, ``accelerate launch`` on one CPU and on several GPUs.
Without ``--config`` it trains on its embedded default, ``configs/clip_fgdi_synthpeds.yaml``
(SynthPeds leave-one-domain-out: sources d0-d2, target d3, the data and image-encoder budget of
``retext_synthpeds.yaml``). Our reading of the method and where it differs from the authors'
code: ``docs/CLIP_FGDI.md``.

1. Data: the source domains pooled with globally unique identity labels; each image's domain
   label is the index of the source dataset it comes from (``data.train_domains`` order; with
   ``data.combine_all`` a dataset's train and test identities are one domain). Evaluation on
   every evaluation domain under its protocol (Protocol-1 sets: the mean over 10 splits).
2. Model: ``CLIPFGDIModel.from_clip_pretrained`` on any CLIP (SynthCLIP for CPU runs,
   ``openai/clip-vit-base-patch16`` for real ones).
3. Stage I (``image_prior``): the image encoder adapts to Re-ID with ID + soft-margin triplet
   losses on PK batches, for ``image_encoder.prior_epochs`` epochs of its optimizer and schedule.
4. Stage II on cached features: the projected image features of the stage-I encoder are
   extracted once (test transform) and the image encoder leaves the graph.
   II-a (``invariant_prompts``): the identity tokens learn with ``L_i2t + L_t2i`` plus the
   adversarial domain loss through the gradient-reversal layer; II-b (``domain_prompts``): the
   domain tokens learn with ``L_i2t + L_t2i`` on the domain-relevant prompts (identity tokens
   frozen) plus the domain classifier on detached features. Every process runs the same full
   batches (cheap), so the prompts stay identical across processes.
5. Stage III (``image_encoder``): the text features of all identities are computed once (both
   prompt kinds); the image encoder learns with ID + triplet + ``(1 - beta)`` image-to-text CE +
   ``beta`` guidance loss, continuing stage I's optimizer and schedule (``continues=``: its lr
   starts where stage I's left off, its data epochs continue stage I's count).
6. ``save_pretrained`` of model, image processor and tokenizer, evaluation (``eval/<domain>/``,
   ``eval_results.json``), ``train_results.json`` (with stage II's seconds per epoch), a model card
   with the results and ``--push_to_hub``.

Ablations: ``--domain_prompts.enabled false --model.apn_weight 0`` (no domain-relevant prompts, no
guidance), ``--model.apn_weight 0`` (beta = 0), ``--model.grl_lambda 0`` (no gradient reversal),
``--model.apn_sign code`` (the released code's guidance direction).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from datasets import Dataset
from torch.utils.data import DataLoader

from hf_reid.data import ReidCollator
from hf_reid.models import CLIPFGDIConfig, CLIPFGDIModel
from hf_reid.models.configuration_clip_fgdi import DEFAULT_DOMAIN_PROMPT_TEMPLATE, DEFAULT_PROMPT_TEMPLATE
from hf_reid.synthclip import SYNTHCLIP_NAME as SYNTHCLIP
from hf_reid.synthclip import resolve_clip_path
from hf_reid.tokenization import load_tokenizer
from hf_reid.training import (
    CACHE_DIR,
    ConfigError,
    DataArgs,
    FeatureDataset,
    RecipeConfig,
    RecipeRun,
    build_optimizer,
    build_scheduler,
    check_checkpoint_fits,
    domain_dir,
    extract_features,
    fingerprint,
    gather_with_grad,
    load_or_extract,
    model_config_kwargs,
    recipe_cli,
)

logger = logging.getLogger("hf_reid.recipes.clip_fgdi")

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "clip_fgdi_synthpeds.yaml"
"""The embedded default: SynthPeds leave-one-domain-out (generated on first use) and SynthCLIP."""
STAGES = ("image_prior", "invariant_prompts", "domain_prompts", "image_encoder")
"""Stages I, II-a, II-b and III; ``image_encoder`` continues ``image_prior``'s optimizer."""


# ------------------------------------------------------------------------------------------------
# Config
# ------------------------------------------------------------------------------------------------
@dataclass
class ModelArgs:
    """The CLIP to start from and the ``CLIPFGDIConfig`` fields (see its docstring)."""

    clip_name_or_path: str = SYNTHCLIP
    """A CLIP checkpoint (Hub id or folder) or ``synthclip``."""
    image_size: tuple[int, int] = (224, 224)
    stride_size: int | None = None
    pos_interpolation: Literal["bicubic", "bilinear"] = "bicubic"
    input_norm: Literal["instance", "mean_std"] = "instance"
    """``instance``: per-image instance normalisation inside the model, as the code does."""
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    domain_prompt_template: str = DEFAULT_DOMAIN_PROMPT_TEMPLATE
    num_prompt_tokens: int = 4
    num_domain_tokens: int = 1
    domain_classifier_hidden_size: int = 128
    grl_lambda: float = 0.1
    """``epsilon``: the gradient-reversal factor (0: no adversarial signal to the prompts)."""
    domain_loss_weight: float = 0.01
    """``omega``: weight of the domain cross-entropies of stage II."""
    apn_weight: float = 0.1
    """``beta``: stage III weighs the image-to-text CE by ``1 - beta``, the guidance loss by ``beta``."""
    apn_sign: Literal["paper", "code"] = "paper"
    neck_feat: Literal["before", "after"] = "before"
    feature_norm: bool = False
    """L2-normalise the retrieval embeddings (the code evaluates raw features)."""
    id_loss_weight: float = 1.0
    triplet_loss_weight: float = 1.0
    triplet_margin: float | None = None
    """``null``: the soft-margin triplet (the code's)."""
    label_smoothing: float = 0.1
    gradient_checkpointing: bool = False


@dataclass
class ImageEncoderArgs:
    """Stages I and III share one Adam optimizer and one warm-up + multi-step schedule, stepped
    per epoch: stage III's first epoch is schedule epoch ``prior_epochs + 1``."""

    prior_epochs: int = 3
    """Stage I epochs."""
    epochs: int = 60
    """Stage III epochs."""
    lr: float = 5e-6
    head_lr: float | None = None
    """Learning rate of the BNNecks and identity classifiers (``null``: ``lr``)."""
    weight_decay: float = 1e-4
    weight_decay_bias: float = 1e-4
    bias_lr_factor: float = 2.0
    warmup_epochs: int = 10
    warmup_factor: float = 0.1
    milestones: list[int] = field(default_factory=lambda: [30, 50])
    """Schedule epochs (counted over stages I and III together) where the rate drops by ``gamma``."""
    gamma: float = 0.1
    max_grad_norm: float | None = None


@dataclass
class PromptArgs:
    """A prompt stage on cached image features (Adam, warm-up then cosine, stepped per epoch)."""

    enabled: bool = True
    epochs: int = 120
    batch_size: int = 128
    """Cached features per batch; the last partial batch is dropped (as the code)."""
    lr: float = 3.5e-4
    """Learning rate of the prompt tokens (identity tokens in II-a, domain tokens in II-b)."""
    classifier_lr: float = 0.01
    """Learning rate of the stage's domain classifier."""
    weight_decay: float = 1e-4
    warmup_epochs: int = 5
    warmup_init_lr: float = 1e-5
    min_lr: float = 1e-6
    reshuffle: bool = False
    """``false``: the cached features are shuffled once and read in that order every epoch (the
    code); ``true``: reshuffled every epoch (CLIP-ReID's stage 1)."""


def _domain_prompt_defaults() -> PromptArgs:
    return PromptArgs(epochs=30)


@dataclass
class CLIPFGDIRecipeConfig(RecipeConfig):
    """A CLIP-FGDI run: the shared sections (seed, data, train, eval), the model and its stages."""

    model: ModelArgs = field(default_factory=ModelArgs)
    image_encoder: ImageEncoderArgs = field(default_factory=ImageEncoderArgs)
    invariant_prompts: PromptArgs = field(default_factory=PromptArgs)
    domain_prompts: PromptArgs = field(default_factory=_domain_prompt_defaults)


def check_stage_settings(cfg: CLIPFGDIRecipeConfig, num_train_images: int | None = None) -> None:
    """Refuse settings that leave a loss without its inputs, or a prompt stage without a batch,
    naming the fields (the batch sizes once the number of training images is known)."""
    for name in ("invariant_prompts", "domain_prompts"):
        prompts = getattr(cfg, name)
        if (
            num_train_images is not None
            and prompts.enabled
            and prompts.epochs
            and num_train_images < prompts.batch_size
        ):
            raise ConfigError(
                f"{name}.batch_size={prompts.batch_size} is larger than the {num_train_images} training images; "
                "the last partial batch is dropped (as the code does), so no batch would be left. Lower it."
            )
    if not cfg.domain_prompts.enabled and cfg.model.apn_weight > 0:
        raise ConfigError(
            f"model.apn_weight={cfg.model.apn_weight}: the guidance loss needs the domain-relevant prompts, but "
            "domain_prompts.enabled is false; set model.apn_weight 0 for the ablation without them."
        )
    if not cfg.invariant_prompts.enabled and cfg.domain_prompts.enabled:
        raise ConfigError(
            "domain_prompts.enabled needs invariant_prompts.enabled: the domain-relevant prompts reuse the "
            "identity tokens stage II-a learns."
        )


# ------------------------------------------------------------------------------------------------
# Data: domain labels
# ------------------------------------------------------------------------------------------------
def with_domain_labels(train: Dataset, data: DataArgs) -> tuple[Dataset, list[str]]:
    """The training rows with ``source`` set to the index (in ``data.train_domains``) of the
    source dataset each image comes from, and the domain names.

    ``load_data`` numbers its pooled sources 0..N-1; with ``combine_all`` a dataset gives two
    sources (its train and its test identities), which are one domain here. Each source is
    mapped to the training folder that holds its images.
    """
    names = list(data.train_domains)
    if "source" not in train.column_names:
        return train.add_column("source", np.zeros(len(train), dtype=np.int64)), names
    sources = np.asarray(train["source"])
    found = np.unique(sources)
    if len(found) == len(names):
        return train, names
    folders = [domain_dir(Path(data.root), name).resolve() for name in names]
    mapping = {}
    for source in found:
        first = int(np.flatnonzero(sources == source)[0])
        path = (train.select([first])["image"][0] or {}).get("path")
        owners = [i for i, f in enumerate(folders) if path and Path(path).resolve().is_relative_to(f)]
        if not owners:
            raise ValueError(
                f"cannot tell which of data.train_domains {names} source {int(source)} comes from (its first "
                f"image is {path!r}); the domain labels of CLIP-FGDI need images stored under the domain folders."
            )
        mapping[int(source)] = max(owners, key=lambda i: len(folders[i].parts))  # the innermost folder
    domains = np.vectorize(mapping.__getitem__)(sources).astype(np.int64)
    return train.remove_columns("source").add_column("source", domains), names


def identity_domains(train: Dataset, num_classes: int) -> torch.Tensor:
    """The source domain of every training identity (num_classes,): each label belongs to one
    source, so each identity has exactly one domain-relevant prompt."""
    labels, domains = np.asarray(train["label"]), np.asarray(train["source"])
    table = np.full(num_classes, -1, dtype=np.int64)
    table[labels] = domains
    if (table < 0).any() or (table[labels] != domains).any():
        raise ValueError("every training identity must belong to exactly one source domain.")
    return torch.from_numpy(table)


# ------------------------------------------------------------------------------------------------
# Model and losses
# ------------------------------------------------------------------------------------------------
def build_model(args: ModelArgs, num_classes: int, num_domains: int, tokenizer) -> CLIPFGDIModel:
    """CLIP-FGDI from a CLIP checkpoint; every ``model.*`` field that is a ``CLIPFGDIConfig``
    field goes to the config."""
    return CLIPFGDIModel.from_clip_pretrained(
        resolve_clip_path(args.clip_name_or_path),
        num_classes=num_classes,
        tokenizer=tokenizer,
        num_domains=num_domains,
        **model_config_kwargs(args, CLIPFGDIConfig),
    )


def weights_fingerprint(model: CLIPFGDIModel) -> str:
    """A cheap fingerprint of the image encoder's weights (the stage-II feature cache depends on it)."""
    clip = model.backbone.clip
    parameters = [*clip.vision_model.parameters(), *clip.visual_projection.parameters()]
    return fingerprint([f"{float(p.detach().double().sum()):.10e}" for p in parameters])


def image_loss_fn(
    model: torch.nn.Module,
    text_features: torch.Tensor | None,
    relevant_text_features: torch.Tensor | None,
    gather: Callable | None,
) -> Callable[[dict], tuple]:
    """Stages I (no text features) and III (both kinds)."""

    def compute_loss(batch: dict) -> tuple[torch.Tensor, dict]:
        out = model(
            pixel_values=batch["pixel_values"],
            labels=batch["labels"],
            text_features=text_features,
            relevant_text_features=relevant_text_features,
            feature_gather=gather,
        )
        logs = {"id": out.id_loss.detach(), "triplet": out.triplet_loss.detach()}
        for name in ("i2t", "apn"):
            value = getattr(out, f"{name}_loss")
            if value is not None:
                logs[name] = value.detach()
        return out.loss, logs

    return compute_loss


def prompt_loss_fn(loss: Callable, device: torch.device) -> Callable[[dict], tuple]:
    """Stages II-a / II-b: ``loss`` is the model's ``invariant_prompt_loss`` or ``relevant_prompt_loss``."""

    def compute_loss(batch: dict) -> tuple[torch.Tensor, dict]:
        domains = batch["domains"].to(device)
        out = loss(batch["features"].to(device), batch["labels"].to(device), domains)
        logs = {"i2t": out.i2t_loss.detach(), "t2i": out.t2i_loss.detach()}
        if out.domain_loss is not None:
            logs["domain"] = out.domain_loss.detach()
            logs["domain_acc"] = (out.domain_logits.argmax(dim=1) == domains).float().mean()
        return out.loss, logs

    return compute_loss


# ------------------------------------------------------------------------------------------------
# Run
# ------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the recipe, stages I, II-a, II-b and III; returns ``{evaluation name: metrics}`` (the
    content of ``eval_results.json``)."""
    run = RecipeRun.start(
        CLIPFGDIRecipeConfig, argv, method="clip_fgdi", default_config=DEFAULT_CONFIG, description=__doc__
    )
    cfg, accelerator, output_dir = run.cfg, run.accelerator, run.output_dir
    check_stage_settings(cfg)

    # 1. Data: the pooled sources and each image's source domain --------------------------------
    data = run.load_data()
    train, domain_names = with_domain_labels(data.train, cfg.data)
    label_domains = identity_domains(train, data.num_classes)
    check_stage_settings(cfg, len(train))

    # 2. Model, image processor, tokenizer ---------------------------------------------------------
    tokenizer = load_tokenizer(resolve_clip_path(cfg.model.clip_name_or_path))
    model = build_model(cfg.model, data.num_classes, len(domain_names), tokenizer)
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    processor, train_transform, test_transform = run.image_transforms(model.config.image_size)
    if run.resume_checkpoint is not None:
        check_checkpoint_fits(run.resume_checkpoint, model, data.num_classes)
    # Prepared once with the image-encoder parameters trainable (under several processes DDP
    # synchronises exactly those); stage II trains the prompts through the unwrapped model.
    model.set_trainable("image")
    model = accelerator.prepare(model)
    unwrapped: CLIPFGDIModel = accelerator.unwrap_model(model)
    runner = run.stage_runner(STAGES)
    gather = gather_with_grad if accelerator.num_processes > 1 else None
    stage_seconds: dict[str, float] = {}

    # 3. Stage I: adapt the image encoder (ID + soft-margin triplet) -------------------------------
    args = cfg.image_encoder
    with run.timed("stage1"):
        train_loader = run.pk_loader(train, ReidCollator(train_transform, columns=["labels"], seed=cfg.seed))
        image_optimizer = build_optimizer(
            unwrapped.named_parameters(),
            "adam",
            lr=args.lr,
            weight_decay=args.weight_decay,
            bias_lr_factor=args.bias_lr_factor,
            weight_decay_bias=args.weight_decay_bias,
            lr_overrides={r"^head\.": args.head_lr} if args.head_lr is not None else None,
        )
        image_scheduler = build_scheduler(
            image_optimizer,
            "multistep",
            warmup=args.warmup_epochs,
            warmup_factor=args.warmup_factor,
            milestones=args.milestones,
            gamma=args.gamma,
            start_index=1,
        )
        image_optimizer, train_loader = accelerator.prepare(image_optimizer, train_loader)
        runner.train_stage(
            "image_prior",
            model=model,
            optimizer=image_optimizer,
            scheduler=image_scheduler,
            dataloader=train_loader,
            compute_loss=image_loss_fn(model, None, None, gather),
            epochs=args.prior_epochs,
            max_grad_norm=args.max_grad_norm,
        )

    # 4. Stage II: prompts on cached image features of the stage-I encoder ------------------------
    with run.timed("stage2_features"):
        needs_features = cfg.invariant_prompts.enabled
        cached: dict[str, Any] = {
            "features": torch.empty(0),
            "labels": torch.empty(0),
            "sources": torch.empty(0),
        }
        if needs_features:
            features_loader = accelerator.prepare(
                DataLoader(
                    train,
                    batch_size=cfg.data.eval_batch_size,
                    collate_fn=ReidCollator(test_transform, columns=["labels", "sources"]),
                    num_workers=cfg.data.num_workers,
                )
            )
            cache_key = fingerprint(
                "clip_fgdi_stage2",
                weights_fingerprint(unwrapped),
                list(unwrapped.config.image_size),
                unwrapped.config.input_norm,
                train._fingerprint,
                domain_names,
            )
            cached = load_or_extract(
                output_dir / CACHE_DIR / "stage2_image_features.pt",
                lambda: extract_features(
                    lambda batch: unwrapped.get_image_features(batch["pixel_values"]),
                    features_loader,
                    accelerator,
                    model=unwrapped,
                    metadata_keys=["labels", "sources"],
                    desc="Stage-II image features",
                    progress_bar=cfg.train.progress_bar,
                ),
                accelerator,
                key=cache_key,
            )
        # The code shuffles the cached features once and reads them in that order every epoch.
        order = torch.randperm(len(cached["labels"]), generator=torch.Generator().manual_seed(cfg.seed))
        feature_set = FeatureDataset(
            {
                "features": cached["features"][order],
                "labels": cached["labels"][order],
                "domains": cached["sources"][order],
            }
        )

    def prompt_stage(name: str, prompts: PromptArgs, trainable: str, loss: Callable) -> None:
        """One prompt stage (II-a or II-b): its own optimizer and cosine schedule."""
        unwrapped.set_trainable(trainable)
        epochs = prompts.epochs if prompts.enabled else 0
        loader = DataLoader(
            feature_set, batch_size=prompts.batch_size, shuffle=prompts.reshuffle, drop_last=True
        )
        optimizer = build_optimizer(
            unwrapped.named_parameters(),
            "adam",
            lr=prompts.lr,
            weight_decay=prompts.weight_decay,
            lr_overrides={"domain_classifier": prompts.classifier_lr},
        )
        scheduler = build_scheduler(
            optimizer,
            "cosine",
            total=prompts.epochs,
            warmup=prompts.warmup_epochs,
            warmup_init_lr=prompts.warmup_init_lr,
            min_lr=prompts.min_lr,
            start_index=1,
        )
        optimizer = accelerator.prepare(optimizer)
        steps_before, started = runner.state.global_step, time.perf_counter()
        runner.train_stage(
            name,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            dataloader=loader,
            compute_loss=prompt_loss_fn(loss, accelerator.device),
            epochs=epochs,
        )
        trained_epochs = (runner.state.global_step - steps_before) / max(len(loader), 1)
        if trained_epochs > 0:  # not restored from a checkpoint by a resume
            stage_seconds[f"{name}_seconds_per_epoch"] = round(
                (time.perf_counter() - started) / trained_epochs, 3
            )

    with run.timed("stage2a"):
        prompt_stage(
            "invariant_prompts", cfg.invariant_prompts, "invariant_prompts", unwrapped.invariant_prompt_loss
        )
    with run.timed("stage2b"):
        prompt_stage("domain_prompts", cfg.domain_prompts, "domain_prompts", unwrapped.relevant_prompt_loss)

    # 5. Stage III: the final image encoder, guided by both prompts; stage I's optimizer goes on ---
    with run.timed("stage3"):
        text_features = relevant_text_features = None
        if cfg.invariant_prompts.enabled:
            unwrapped.eval()
            text_features = unwrapped.compute_text_features().detach()
            if cfg.domain_prompts.enabled:
                relevant_text_features = unwrapped.compute_text_features(domains=label_domains).detach()
        unwrapped.set_trainable("image")
        runner.train_stage(
            "image_encoder",
            model=model,
            optimizer=image_optimizer,
            scheduler=image_scheduler,
            dataloader=train_loader,
            compute_loss=image_loss_fn(model, text_features, relevant_text_features, gather),
            epochs=args.epochs,
            max_grad_norm=args.max_grad_norm,
            continues="image_prior",
        )

    # 6. Save, evaluate, results and model card ----------------------------------------------------
    layouts = [cfg.data.layouts.get(domain, cfg.data.layout) for domain in cfg.data.train_domains]
    run.save_model(
        unwrapped,
        processor,
        tokenizer,
        datasets=layouts,
        card_extra={
            "domains": domain_names,
            "apn_sign": cfg.model.apn_sign,
            "domain_prompts_enabled": cfg.domain_prompts.enabled,
        },
    )
    results = run.evaluate(
        data.eval_sets,
        lambda batch: unwrapped.get_image_embeddings(batch["pixel_values"]),
        model=unwrapped,
        transform=test_transform,
        normalize=cfg.model.feature_norm,
    )
    train_results = {
        **stage_seconds,
        "steps": runner.state.global_step,
        "num_train_images": len(train),
        "num_identities": data.num_classes,
        "domains": domain_names,
    }
    run.finish(results, train_results=train_results)
    return results


if __name__ == "__main__":
    recipe_cli(main)
