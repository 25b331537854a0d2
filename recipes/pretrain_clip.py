"""Pretrain SynthCLIP: a tiny CLIP trained with CLIP's contrastive loss on SynthPeds
image–caption pairs — the pretrained backbone every CPU run of hf_reid starts from.

Every method in hf_reid exploits a pretrained CLIP's image–text alignment; a random-init CLIP has
none. Real use starts from ``openai/clip-vit-base-patch16``; on a CPU, with no downloads, this
recipe makes the stand-in, reproducibly:

    make synthclip
    # = accelerate launch recipes/pretrain_clip.py --config recipes/configs/pretrain_clip_synthpeds.yaml \
    #       --output_dir runs/synthclip

The data is SynthPeds' ``pretrain`` split: identities disjoint from every Re-ID split, camera
styles of the source domains only — the held-out domain's styles never appear, so zero-shot and
generalization numbers on it stay "unseen". The result is a standard ``CLIPModel`` folder (square
position table; Re-ID models resize it once for their input) with the genuine CLIP tokenizer.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Image
from torch.utils.data import DataLoader
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

from hf_reid.data import ReidCollator, ReidTrainTransform, ReidTransformConfig, load_reid_dataset
from hf_reid.data.synthetic import generate_synthpeds, get_preset
from hf_reid.hub import CardInfo, write_model_card
from hf_reid.tokenization import load_clip_tokenizer
from hf_reid.training import (
    StageRunner,
    build_optimizer,
    build_scheduler,
    create_accelerator,
    parse_recipe_args,
    save_config,
    set_seed,
    setup_logging,
)
from hf_reid.training.recipe_run import run_fingerprint_config
from hf_reid.zero_shot import text_to_image_retrieval, zero_shot_reid

logger = logging.getLogger("hf_reid.recipes.pretrain_clip")


@dataclass
class ModelArgs:
    """The tiny CLIP: both towers ``width`` wide and ``layers`` deep, the genuine CLIP vocabulary."""

    width: int = 128
    layers: int = 4
    heads: int = 4
    mlp_ratio: int = 4
    patch_size: int = 16
    image_size: int = 128
    """Side of the square position table (8×8 patches); 128×64 inputs use its bicubic resize."""
    projection_dim: int = 128
    max_text_length: int = 77


@dataclass
class DataArgs:
    synthpeds_dir: str = "data/synthpeds_pretrain"
    """Where SynthPeds is (or gets) generated."""
    preset: str = "default"
    """Same domains as the quickstart data, so its held-out domain is never seen in pretraining."""
    pretrain_ids: int = 2000
    """Identities of the pretraining split (2–4 images each, about 6k image–caption pairs)."""
    synth_seed: int = 1000
    """Seed of the pretraining data; other than the Re-ID data's seed 0, so no image is shared."""
    height: int = 128
    width: int = 64
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    num_workers: int = 0


@dataclass
class TrainArgs:
    epochs: int = 15
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_epochs: int = 1
    min_lr: float = 1e-5
    max_grad_norm: float = 1.0
    checkpoint_every: int = 200
    flip_p: float = 0.5
    pad: int = 4
    random_erasing_p: float = 0.0


@dataclass
class EvalArgs:
    in_domain: str = "synthpeds_d0"
    """A source domain (its camera styles were drawn from the same distributions as pretraining)."""
    unseen_domain: str = "synthpeds_d3"
    """The held-out domain: its styles are excluded from the pretraining split."""


@dataclass
class PretrainConfig:
    seed: int = 0
    model: ModelArgs = field(default_factory=ModelArgs)
    data: DataArgs = field(default_factory=DataArgs)
    train: TrainArgs = field(default_factory=TrainArgs)
    eval: EvalArgs = field(default_factory=EvalArgs)


def build_tiny_clip(args: ModelArgs, tokenizer) -> CLIPModel:
    """A random-init CLIP of the given size whose special token ids match ``tokenizer``."""
    common = dict(
        hidden_size=args.width,
        intermediate_size=args.width * args.mlp_ratio,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        projection_dim=args.projection_dim,
        hidden_act="quick_gelu",
    )
    text = dict(
        common,
        vocab_size=len(tokenizer),
        max_position_embeddings=args.max_text_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = dict(common, image_size=args.image_size, patch_size=args.patch_size)
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=args.projection_dim)
    return CLIPModel(config)


def main() -> None:
    cfg, args = parse_recipe_args(PretrainConfig, description=__doc__.splitlines()[0])
    output_dir = Path(args.output_dir)
    accelerator = create_accelerator(output_dir, seed=cfg.seed)
    setup_logging(accelerator, log_file=output_dir / "train.log")
    set_seed(cfg.seed)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, output_dir / "config.yaml")

    # 1. Data: SynthPeds' pretraining split (generated once, deterministic per seed).
    synth_dir = Path(cfg.data.synthpeds_dir)
    if accelerator.is_main_process:
        preset = dataclasses.replace(get_preset(cfg.data.preset), pretrain_ids=cfg.data.pretrain_ids)
        generate_synthpeds(
            synth_dir,
            preset=preset,
            layouts=["market", "captions", "pretrain"],
            seed=cfg.data.synth_seed,
            image_size=(cfg.data.height, cfg.data.width),
        )
    accelerator.wait_for_everyone()
    pairs = load_reid_dataset("captions", synth_dir / "pretrain")["train"]
    logger.info("Pretraining on %d images of %d identities", len(pairs), len(set(pairs["pid"])))

    tokenizer = load_clip_tokenizer(model_max_length=cfg.model.max_text_length)
    transform = ReidTrainTransform(
        ReidTransformConfig(
            height=cfg.data.height,
            width=cfg.data.width,
            mean=cfg.data.mean,
            std=cfg.data.std,
            flip_p=cfg.train.flip_p,
            pad=cfg.train.pad,
            random_erasing_p=cfg.train.random_erasing_p,
        )
    )
    # No colour augmentation: captions name colours, and the image must keep agreeing with them.
    collate_images = ReidCollator(transform, columns=["pids", "captions"])
    caption_rng = random.Random(cfg.seed)

    def collate(rows):
        batch = collate_images(rows)
        texts = [caption_rng.choice(caps) for caps in batch.pop("captions")]
        tokens = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        return {"pixel_values": batch["pixel_values"], **tokens}

    loader = DataLoader(
        pairs.cast_column("image", Image(decode=False)),
        batch_size=cfg.train.batch_size,
        shuffle=True,
        drop_last=True,
        collate_fn=collate,
        num_workers=cfg.data.num_workers,
    )

    # 2. Model, optimizer, schedule (linear warm-up, cosine decay, stepped per iteration).
    model = build_tiny_clip(cfg.model, tokenizer)
    optimizer = build_optimizer(
        model.named_parameters(), "adamw", lr=cfg.train.lr, weight_decay=cfg.train.weight_decay
    )
    steps_per_epoch = len(loader)
    scheduler = build_scheduler(
        optimizer,
        "cosine",
        total=cfg.train.epochs * steps_per_epoch,
        warmup=cfg.train.warmup_epochs * steps_per_epoch,
        warmup_init_lr=cfg.train.lr * 0.01,
        min_lr=cfg.train.min_lr,
        step_unit="step",
    )
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)

    # 3. CLIP's own symmetric contrastive loss, with its learnable temperature.
    def compute_loss(batch):
        out = model(**batch, return_loss=True, interpolate_pos_encoding=True)
        return out.loss, {
            "contrastive": out.loss.detach(),
            "logit_scale": out.logits_per_image.new_tensor(
                accelerator.unwrap_model(model).logit_scale.exp().item()
            ),
        }

    runner = StageRunner(
        accelerator,
        output_dir,
        ["contrastive"],
        seed=cfg.seed,
        checkpoint_every=cfg.train.checkpoint_every,
        resume=args.resume,
        run_config=run_fingerprint_config(cfg, "pretrain_clip", accelerator.mixed_precision),
        overwrite_output_dir=args.overwrite_output_dir,
    )
    start = time.perf_counter()
    runner.train_stage(
        "contrastive",
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        dataloader=loader,
        compute_loss=compute_loss,
        epochs=cfg.train.epochs,
        max_grad_norm=cfg.train.max_grad_norm,
    )
    train_seconds = time.perf_counter() - start

    # 4. Save a standard CLIP folder: fp16 weights, a config that loads them as float32.
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    model = accelerator.unwrap_model(model).float().eval()
    export_dir = output_dir / "synthclip"
    model.half().save_pretrained(export_dir)
    model.float()
    config_path = export_dir / "config.json"
    config_json = json.loads(config_path.read_text())
    config_json["dtype"] = "float32"
    config_path.write_text(json.dumps(config_json, indent=2, sort_keys=True) + "\n")
    tokenizer.save_pretrained(export_dir)
    CLIPImageProcessor(
        size={"height": cfg.data.height, "width": cfg.data.width},
        crop_size={"height": cfg.data.height, "width": cfg.data.width},
        do_center_crop=False,
        image_mean=list(cfg.data.mean),
        image_std=list(cfg.data.std),
    ).save_pretrained(export_dir)

    # 5. Zero-shot: text -> image on the held-out captioned set, Re-ID in-domain and unseen.
    reloaded = CLIPModel.from_pretrained(export_dir).eval()
    size = dict(height=cfg.data.height, width=cfg.data.width, mean=cfg.data.mean, std=cfg.data.std)
    held_out_captions = load_reid_dataset("captions", synth_dir / "captions")["train"]
    results = {"text_to_image": text_to_image_retrieval(reloaded, tokenizer, held_out_captions, **size)}
    for key, domain in (("in_domain", cfg.eval.in_domain), ("unseen_domain", cfg.eval.unseen_domain)):
        splits = load_reid_dataset("synthpeds", synth_dir / domain)
        results[key] = {
            "domain": domain,
            **zero_shot_reid(reloaded, splits["query"], splits["gallery"], **size),
        }
    results["train_seconds"] = round(train_seconds, 1)
    results["num_pairs"] = len(pairs)
    (output_dir / "zeroshot_results.json").write_text(json.dumps(results, indent=2) + "\n")
    logger.info("Zero-shot results: %s", json.dumps(results, indent=2))

    write_model_card(
        export_dir,
        CardInfo(
            method="synthclip",
            model_id="hf-reid/synthclip",
            datasets=["synthpeds"],
            extra={
                "zeroshot": results,
                "training_config": (output_dir / "config.yaml").read_text(),
                "num_parameters": sum(p.numel() for p in reloaded.parameters()),
            },
        ),
        {
            f"SynthPeds {results['in_domain']['domain']} (zero-shot)": results["in_domain"],
            f"SynthPeds {results['unseen_domain']['domain']} (zero-shot, unseen)": results["unseen_domain"],
        },
    )


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main()
