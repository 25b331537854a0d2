"""``hf-reid export --onnx FILE MODEL``: the image tower + Re-ID head of a model folder as ONNX
(see :mod:`hf_reid.onnx_export` and docs/ONNX.md)."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export",
        help="export a model folder's image embedding to ONNX (checked against PyTorch)",
        description=(
            "Write the image tower and Re-ID head of an hf_reid model folder (or Hub id) as one ONNX "
            "file with a dynamic batch axis; the file's metadata holds the preprocessing it needs "
            "(size, mean, std, normalisation). By default onnxruntime is compared with PyTorch on "
            "random images and the export fails above 1e-4."
        ),
        epilog="example: hf-reid export runs/clip_reid --onnx runs/clip_reid/model.onnx",
    )
    parser.add_argument("model", help="model folder or Hub id")
    parser.add_argument("--onnx", required=True, metavar="FILE", help="ONNX file to write")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime parity check")
    return parser


def run(args: argparse.Namespace) -> int:
    from hf_reid.onnx_export import export_command

    try:
        summary = export_command(args.model, args.onnx, opset=args.opset, check=not args.no_check)
    except RuntimeError as error:  # the parity check failed; the file is kept for inspection
        print(f"hf-reid export: error: {error}")
        return 1
    print(json.dumps({k: v for k, v in summary.items() if k != "metadata"}, indent=2))
    return 0
