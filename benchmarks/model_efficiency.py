"""CLIP-ReID model efficiency against a bare CLIP vision tower, on the same batch.

Two ratios, each against plain ``transformers`` CLIP on 256x128 images
(``interpolate_pos_encoding=True``):

* training: one full CLIP-ReID stage-2 step (forward, BNNecks, both identity CEs, three batch-hard
  triplets, image-to-text CE against cached text features of all identities, backward, Adam
  step) vs. a bare CLIP vision forward + projection + backward + Adam step. Target: overhead
  at most 25%.
* inference: ``CLIPReIDModel.get_image_embeddings`` images/s vs. ``CLIPModel.get_image_features``.
  Target: at least 95%.

Both models have the same CLIP shape and random weights (timing does not depend on values).
The two are timed alternately, round after round, and the median of each is reported, so that
load from other processes on the machine hits both alike.

    python benchmarks/model_efficiency.py                  # CPU default: "small" ViT, batch 16
    python benchmarks/model_efficiency.py --preset vit-b16 --device cuda --batch-size 64
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch
from transformers import CLIPConfig, CLIPModel

from hf_reid.models import CLIPReIDConfig, CLIPReIDModel

MAX_TRAIN_OVERHEAD = 0.25
MIN_INFERENCE_RATIO = 0.95

PRESETS = {
    # ViT-B/16 as in CLIP-ReID (text tower unused by the timed steps, kept small in the others).
    "vit-b16": {"width": 768, "layers": 12, "heads": 12, "text_width": 512, "text_layers": 12, "proj": 512},
    "small": {"width": 384, "layers": 6, "heads": 6, "text_width": 256, "text_layers": 2, "proj": 256},
    "tiny": {"width": 64, "layers": 2, "heads": 4, "text_width": 64, "text_layers": 2, "proj": 32},
}


def clip_config(preset: str) -> CLIPConfig:
    p = PRESETS[preset]
    vision = dict(
        hidden_size=p["width"],
        intermediate_size=4 * p["width"],
        num_hidden_layers=p["layers"],
        num_attention_heads=p["heads"],
        image_size=224,
        patch_size=16,
        projection_dim=p["proj"],
    )
    text = dict(
        hidden_size=p["text_width"],
        intermediate_size=4 * p["text_width"],
        num_hidden_layers=p["text_layers"],
        num_attention_heads=8 if p["text_width"] >= 256 else 4,
        projection_dim=p["proj"],
    )
    return CLIPConfig(vision_config=vision, text_config=text, projection_dim=p["proj"])


def synchronize(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def alternate_times(
    tasks: dict[str, Callable[[], None]], rounds: int, warmup: int, device: torch.device | None = None
) -> dict[str, list[float]]:
    """Seconds of each of ``rounds`` calls of each task, after ``warmup`` calls of each, timing
    the tasks alternately, round after round (a CUDA ``device`` is synchronised around each call),
    so that load from other processes hits them alike."""
    for _ in range(warmup):
        for task in tasks.values():
            task()
    times: dict[str, list[float]] = {name: [] for name in tasks}
    for _ in range(rounds):
        for name, task in tasks.items():
            synchronize(device)
            start = time.perf_counter()
            task()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def alternate(
    tasks: dict[str, Callable[[], None]], rounds: int, warmup: int, device: torch.device
) -> dict[str, float]:
    """Median seconds per call of each task, timing them alternately (:func:`alternate_times`)."""
    times = alternate_times(tasks, rounds, warmup, device)
    return {name: statistics.median(values) for name, values in times.items()}


def run(
    preset: str = "small",
    batch_size: int = 16,
    num_classes: int = 751,
    image_size: tuple[int, int] = (256, 128),
    rounds: int = 4,
    warmup: int = 1,
    device: str = "cpu",
) -> dict[str, float]:
    """Measure both ratios; returns seconds per call and the ratios."""
    torch.manual_seed(0)
    device_ = torch.device(device)
    config = clip_config(preset)
    clip = CLIPModel(config).to(device_)
    reid = CLIPReIDModel(
        CLIPReIDConfig(clip_config=config, num_classes=num_classes, image_size=image_size)
    ).to(device_)
    reid.set_trainable("image")
    text_features = reid.compute_text_features()  # stage 2 caches these once

    pixels = torch.randn(batch_size, 3, *image_size, device=device_)
    k = 4  # PK batch: batch_size / 4 identities with 4 images each
    labels = torch.arange(batch_size, device=device_) // k % num_classes

    clip_params = list(clip.vision_model.parameters()) + list(clip.visual_projection.parameters())
    clip_optimizer = torch.optim.Adam(clip_params, lr=1e-6)
    reid_optimizer = torch.optim.Adam([p for p in reid.parameters() if p.requires_grad], lr=1e-6)

    def bare_train_step() -> None:
        features = clip.get_image_features(pixel_values=pixels, interpolate_pos_encoding=True).pooler_output
        features.float().pow(2).mean().backward()
        clip_optimizer.step()
        clip_optimizer.zero_grad(set_to_none=True)

    def reid_train_step() -> None:
        reid(pixels, labels=labels, text_features=text_features).loss.backward()
        reid_optimizer.step()
        reid_optimizer.zero_grad(set_to_none=True)

    def bare_inference() -> None:
        with torch.inference_mode():
            clip.get_image_features(pixel_values=pixels, interpolate_pos_encoding=True)

    def reid_inference() -> None:
        with torch.inference_mode():
            reid.get_image_embeddings(pixels)

    clip.train()
    reid.train()
    train = alternate({"bare": bare_train_step, "reid": reid_train_step}, rounds, warmup, device_)
    clip.eval()
    reid.eval()
    infer = alternate({"bare": bare_inference, "reid": reid_inference}, rounds, warmup, device_)
    return {
        "train_step_bare_s": train["bare"],
        "train_step_reid_s": train["reid"],
        "train_overhead": train["reid"] / train["bare"] - 1.0,
        "inference_bare_images_per_s": batch_size / infer["bare"],
        "inference_reid_images_per_s": batch_size / infer["reid"],
        "inference_ratio": infer["bare"] / infer["reid"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-classes", type=int, default=751)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    result = run(
        args.preset,
        args.batch_size,
        args.num_classes,
        rounds=args.rounds,
        warmup=args.warmup,
        device=args.device,
    )
    train_ok = result["train_overhead"] <= MAX_TRAIN_OVERHEAD
    infer_ok = result["inference_ratio"] >= MIN_INFERENCE_RATIO
    where = f"{args.device}, {torch.get_num_threads()} threads" if args.device == "cpu" else args.device
    print(
        f"CLIP-ReID efficiency vs bare CLIP vision ({args.preset}, batch {args.batch_size}, 256x128, {where})"
    )
    print(
        f"  stage-2 train step: bare {result['train_step_bare_s'] * 1e3:8.1f} ms | CLIP-ReID "
        f"{result['train_step_reid_s'] * 1e3:8.1f} ms | overhead {result['train_overhead']:+.1%} "
        f"(target <= {MAX_TRAIN_OVERHEAD:.0%}) {'PASS' if train_ok else 'FAIL'}"
    )
    print(
        f"  inference:          bare {result['inference_bare_images_per_s']:8.1f} img/s | CLIP-ReID "
        f"{result['inference_reid_images_per_s']:8.1f} img/s | ratio {result['inference_ratio']:.1%} "
        f"(target >= {MIN_INFERENCE_RATIO:.0%}) {'PASS' if infer_ok else 'FAIL'}"
    )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"preset": args.preset, "batch_size": args.batch_size, **result}, handle, indent=2)
    return 0 if train_ok and infer_ok else 1


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
