"""ONNX export of the Re-ID embedding: parity with PyTorch and CPU throughput under onnxruntime.

For each model size (random weights: timing and parity do not depend on the values), a CLIP-ReID
model is exported with :func:`hf_reid.onnx_export.export_onnx` and

* parity: the largest absolute difference between onnxruntime's and PyTorch's embeddings of the
  same 32 crops (target <= 1e-4);
* throughput: images/s of ``model.get_image_embeddings`` (PyTorch, ``inference_mode``) and of the
  onnxruntime session at batch 32, both on the same number of CPU threads
  (``torch.set_num_threads`` / ``intra_op_num_threads``), measured in one process, alternately,
  round after round, after warm-up; the median of the rounds is reported, so that load from other
  processes on the machine hits both alike.

Sizes: ``synthclip`` (the shipped SynthCLIP's shape — 128 wide, 4 layers — at 128x64, as the
SynthPeds configs use) and ``vit-b16`` (768 wide, 12 layers, 12 heads, 16-pixel patches, at
256x128 as CLIP-ReID uses; the text tower, which is not exported, is kept to one layer).

    python benchmarks/onnx_export.py                      # both sizes, 2 threads, batch 32
    python benchmarks/onnx_export.py --sizes synthclip --rounds 9 --threads 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import CLIPConfig

from hf_reid.models import CLIPReIDConfig, CLIPReIDModel
from hf_reid.onnx_export import PARITY_TOLERANCE, export_onnx, make_onnx_session, run_onnx
from hf_reid.synthclip import synthclip_path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_efficiency import alternate_times


def synthclip_config() -> tuple[CLIPConfig, tuple[int, int]]:
    return CLIPConfig.from_pretrained(synthclip_path()), (128, 64)


def vit_b16_config() -> tuple[CLIPConfig, tuple[int, int]]:
    vision = dict(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        image_size=224,
        patch_size=16,
        projection_dim=512,
    )
    text = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=1, num_attention_heads=8)
    return CLIPConfig(vision_config=vision, text_config=text, projection_dim=512), (256, 128)


SIZES = {"synthclip": synthclip_config, "vit-b16": vit_b16_config}


def measure(size: str, batch_size: int, threads: int, rounds: int, warmup: int, folder: Path) -> dict:
    clip_config, image_size = SIZES[size]()
    torch.manual_seed(0)
    model = CLIPReIDModel(
        CLIPReIDConfig(clip_config=clip_config, num_classes=751, image_size=image_size)
    ).eval()
    path = folder / f"{size}.onnx"
    start = time.perf_counter()
    meta = export_onnx(model, path)
    export_s = time.perf_counter() - start
    session = make_onnx_session(path, intra_op_num_threads=threads)

    pixels = torch.randn(batch_size, 3, *image_size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        reference = model.get_image_embeddings(pixels)
    onnx_out = torch.from_numpy(run_onnx(session, pixels))
    max_abs_diff = float((onnx_out.double() - reference.double()).abs().max())
    pixels_np = pixels.numpy()

    def run_torch() -> None:
        with torch.inference_mode():
            model.get_image_embeddings(pixels)

    def run_ort() -> None:
        run_onnx(session, pixels_np)

    times = alternate_times({"torch": run_torch, "onnxruntime": run_ort}, rounds, warmup)
    median = {name: statistics.median(values) for name, values in times.items()}
    return {
        "size": size,
        "image_size": list(image_size),
        "embedding_dim": meta["embedding_dim"],
        "file_mb": round(path.stat().st_size / 2**20, 1),
        "export_s": round(export_s, 2),
        "max_abs_diff": max_abs_diff,
        "torch_images_per_s": batch_size / median["torch"],
        "onnxruntime_images_per_s": batch_size / median["onnxruntime"],
        "speedup": median["torch"] / median["onnxruntime"],
        "round_s": {name: [round(t, 4) for t in values] for name, values in times.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["synthclip", "vit-b16"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    import onnxruntime

    print(
        f"ONNX export of CLIP-ReID embeddings: torch {torch.__version__} vs onnxruntime {onnxruntime.__version__}, "
        f"batch {args.batch_size}, {args.threads} CPU threads each, median of {args.rounds} alternating rounds "
        f"after {args.warmup} warm-up (os.cpu_count()={os.cpu_count()}, "
        f"load average {', '.join(f'{v:.1f}' for v in os.getloadavg())})"
    )
    results = []
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            result = measure(size, args.batch_size, args.threads, args.rounds, args.warmup, Path(tmp))
            results.append(result)
            parity_ok = result["max_abs_diff"] <= PARITY_TOLERANCE
            ok = ok and parity_ok
            h, w = result["image_size"]
            print(
                f"  {size:9s} {h}x{w}, {result['embedding_dim']}-d, {result['file_mb']:6.1f} MB, "
                f"export {result['export_s']:5.1f} s | max |onnx - torch| {result['max_abs_diff']:.2e} "
                f"(<= {PARITY_TOLERANCE:g} {'PASS' if parity_ok else 'FAIL'}) | torch "
                f"{result['torch_images_per_s']:8.1f} img/s | onnxruntime "
                f"{result['onnxruntime_images_per_s']:8.1f} img/s | x{result['speedup']:.2f}"
            )
    print(f"  load average after: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
