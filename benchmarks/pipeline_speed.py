"""Throughput of the training input pipeline: decode + augment + collate, in images per second.

Writes (once, then reuses) ~5k 128x64 JPEG crops in a temporary Market-1501 layout, or reads the
``bounding_box_train`` folder of ``--data_dir`` (e.g. a SynthPeds domain), builds a ``datasets``
split with an ``Image`` column and times one pass of a ``DataLoader`` with PK sampling
(P16 x K4 = 64), :class:`~hf_reid.data.transforms.ReidTrainTransform` (CLIP-ReID defaults plus
ReText's colour jitter / grayscale, so every augmentation is exercised) and
:class:`~hf_reid.data.collate.ReidCollator`, for 0, 1 and 2 workers and with the image column
decoded by ``datasets`` (PIL objects built in ``__getitem__``) or cast to ``Image(decode=False)``
(bytes decoded in the collator). The tiny default model trains at about 500 images/s on 2 CPU
cores, so the pipeline has to deliver well above that. On a shared machine the wall-clock rates
understate what the pipeline can do, so the script also prints images per CPU-second (over the
main process and its workers) and the rate two idle cores would sustain with workers.

Usage: ``python benchmarks/pipeline_speed.py [--data_dir DIR] [--workers 0 1 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset, Features, Value
from datasets import Image as ImageFeature
from PIL import Image
from torch.utils.data import DataLoader

from hf_reid.data.collate import ReidCollator
from hf_reid.data.labels import relabel
from hf_reid.data.samplers import PKSampler
from hf_reid.data.transforms import ReidTrainTransform, ReidTransformConfig, resize_images

MARKET_NAME = re.compile(r"^(-?\d+)_c(\d+)")
TARGET_IMAGES_PER_SECOND = 500.0


def write_market_crops(folder: Path, num_images: int, num_ids: int = 750, seed: int = 0) -> None:
    """Write ``num_images`` 128x64 JPEGs named in the Market scheme into ``folder/bounding_box_train``.

    The crops are smooth person-like pictures (background gradient, coloured torso and legs,
    mild noise), so JPEG sizes and decode times resemble real crops rather than pure noise.
    """
    train = folder / "bounding_box_train"
    train.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (num_ids, 3, 3))
    rows = np.linspace(0, 1, 128)[:, None, None]
    for i in range(num_images):
        pid, camera = i % num_ids + 1, int(rng.integers(1, 7))
        top, legs, background = colours[pid - 1]
        image = background * (0.6 + 0.4 * rows) * np.ones((128, 64, 3))
        left = int(rng.integers(14, 22))
        image[20:70, left : left + 28] = top
        image[70:120, left + 2 : left + 26] = legs
        image += rng.normal(0, 6, image.shape)
        name = f"{pid:04d}_c{camera}s1_{i:06d}_01.jpg"
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(train / name, quality=90)


def build_split(data_dir: Path) -> Dataset:
    """The train folder as a ``datasets`` split with ``image`` (paths), ``pid``, ``camid`` and ``label``."""
    files = sorted((data_dir / "bounding_box_train").glob("*.jpg"))
    parsed = [(str(f), MARKET_NAME.match(f.name)) for f in files]
    rows = [(path, int(m.group(1)), int(m.group(2)) - 1) for path, m in parsed if m and int(m.group(1)) > 0]
    skipped = len(files) - len(rows)
    if not rows:
        raise SystemExit(f"No Market-named JPEGs in {data_dir / 'bounding_box_train'}.")
    if skipped:
        print(f"skipped {skipped} files that are junk/distractors or not named PPPP_cC...")
    features = Features({"image": ImageFeature(), "pid": Value("int64"), "camid": Value("int64")})
    split = Dataset.from_dict(
        {"image": [r[0] for r in rows], "pid": [r[1] for r in rows], "camid": [r[2] for r in rows]},
        features=features,
    )
    return relabel(split)[0]


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the DataLoader workers, once joined)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def time_pass(
    split: Dataset, transform: ReidTrainTransform, workers: int, seed: int = 0
) -> tuple[float, float, int]:
    """Wall seconds and CPU seconds (all processes) of one full pass (worker start-up included),
    and the number of images it delivered."""
    sampler = PKSampler(split["label"], p=16, k=4, seed=seed)
    loader = DataLoader(
        split,
        batch_size=sampler.batch_size,
        sampler=sampler,
        collate_fn=ReidCollator(transform, columns=["labels", "pids", "camids"]),
        num_workers=workers,
    )
    start, cpu_start, images = time.perf_counter(), cpu_seconds(), 0
    for batch in loader:
        images += batch["pixel_values"].shape[0]
    wall = time.perf_counter() - start
    del loader  # joins the workers so that their CPU time is counted
    return wall, cpu_seconds() - cpu_start, images


def time_stages(split: Dataset, transform: ReidTrainTransform, batches: int = 10) -> dict[str, float]:
    """Single-process images per CPU-second of decode + resize alone and of the augmentation alone."""
    raw = split.cast_column("image", ImageFeature(decode=False))
    config = transform.config
    cells = raw[: 64 * batches]["image"]
    start = time.process_time()
    resized = [
        resize_images(
            [Image.open(c["path"]) for c in cells[i : i + 64]], config.height, config.width, config.resample
        )
        for i in range(0, len(cells), 64)
    ]
    decode = len(cells) / (time.process_time() - start)
    start = time.process_time()
    for batch in resized:
        transform(batch)
    augment = len(cells) / (time.process_time() - start)
    return {"decode+resize": decode, "augment": augment}


def run(data_dir: Path, workers: list[int], height: int = 256, width: int = 128) -> dict[str, float]:
    """Time the stages and one pass per (decode mode, workers); print a table; return the numbers."""
    split = build_split(data_dir)
    config = ReidTransformConfig(
        height=height, width=width, color_jitter_p=0.1, brightness=0.15, contrast=0.1,
        saturation=0.05, hue=0.05, grayscale_p=0.1,
    )  # fmt: skip
    transform = ReidTrainTransform(config)
    print(
        f"pipeline_speed: {len(split)} images, {len(set(split['label']))} ids, {height}x{width}, "
        f"batch 64 (P16xK4), {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print("  img/CPU-s = images per CPU-second over all processes (what one idle core gives)")
    results: dict[str, float] = {}
    for name, rate in time_stages(split, transform).items():
        print(f"  stage {name:<14s} {rate:8.0f} img/CPU-s")
        results[f"stage_{name}"] = rate
    for decode in (True, False):
        data = split if decode else split.cast_column("image", ImageFeature(decode=False))
        for num_workers in workers:
            seconds, cpu, images = time_pass(data, transform, num_workers)
            key = f"{'decode' if decode else 'raw'}_w{num_workers}"
            results[key], results[f"{key}_per_cpu_s"] = images / seconds, images / cpu
            label = f"{'datasets decode' if decode else 'decode=False'}, workers={num_workers}"
            print(
                f"  {label:<28s} {images / seconds:8.0f} img/s {images / cpu:8.0f} img/CPU-s"
                f"  ({images} images in {seconds:.2f} s)"
            )
    passes = [k for k in results if not k.startswith("stage_") and not k.endswith("_per_cpu_s")]
    results["best"] = max(results[k] for k in passes)
    # The rate 2 idle cores would sustain with 2 workers, from the CPU time of the best worker setting.
    per_cpu = max(results[f"{k}_per_cpu_s"] for k in passes if not k.endswith("_w0"))
    results["two_core_capacity"] = (
        2 * per_cpu if any(not k.endswith("_w0") for k in passes) else results["best"]
    )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data_dir", type=Path, help="a Market-layout folder (with bounding_box_train/)")
    parser.add_argument("--num_images", type=int, default=5000, help="crops to write when no --data_dir")
    parser.add_argument(
        "--cache_dir", type=Path, default=Path(tempfile.gettempdir()) / "hf_reid_pipeline_bench"
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)

    data_dir = args.data_dir
    if data_dir is None:
        data_dir = args.cache_dir / f"market_{args.num_images}"
        if len(list((data_dir / "bounding_box_train").glob("*.jpg"))) != args.num_images:
            start = time.perf_counter()
            write_market_crops(data_dir, args.num_images)
            print(f"wrote {args.num_images} crops to {data_dir} in {time.perf_counter() - start:.1f} s")
    results = run(data_dir, args.workers, args.height, args.width)
    target = TARGET_IMAGES_PER_SECOND
    ok = results["best"] > target or results["two_core_capacity"] > target
    print(
        f"pipeline_speed: best pass {results['best']:.0f} img/s (wall clock, shared machine); "
        f"2-core capacity from CPU time {results['two_core_capacity']:.0f} img/s; "
        f"tiny model trains at ~{target:.0f} img/s: {'PASS' if ok else 'FAIL'}"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    sys.exit(main())
