"""``hf-reid synth --out DIR``: write the SynthPeds benchmark (see :mod:`hf_reid.data.synthetic`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import int_in_range

PRESET_NAMES: tuple[str, ...] = ("default", "full", "tiny")
"""``sorted(hf_reid.data.synthetic.PRESETS)``, spelled out so that building the parser imports no
data code (a test keeps the two equal)."""
LAYOUT_NAMES: tuple[str, ...] = ("market", "ltcc", "sysu_mm01", "mlr_cuhk03", "captions", "pretrain")
"""``hf_reid.data.synthetic.LAYOUT_NAMES`` (likewise)."""
CAPTIONED_STYLES: tuple[str, ...] = ("sources", "diverse")
"""``hf_reid.data.synthetic.CAPTIONED_STYLES`` (likewise)."""


_positive_int = int_in_range("--captioned-identities", 1, what="a positive integer")


def _image_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--image-size must look like 128x64 (height x width), got {text!r}"
        ) from None
    return height, width


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "synth",
        help="write the SynthPeds synthetic Re-ID benchmark in the real datasets' layouts",
        description=(
            "Render SynthPeds (procedural pedestrian crops) into DIR: Market-1501-style domains "
            "synthpeds_d0.. (the last one is the held-out target domain), ltcc, sysu_mm01, "
            "mlr_cuhk03, captions and pretrain, plus synthpeds_meta.json (ground truth), a README and "
            "synthpeds_manifest.json (every file written; arrives last, when the run is complete)."
        ),
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--preset", default="default", choices=PRESET_NAMES, help="size preset (default: default)"
    )
    parser.add_argument("--seed", type=int, default=0, help="run seed; the same seed writes identical files")
    parser.add_argument(
        "--image-size", type=_image_size, default=(128, 64), help="crop size HxW: 128x64 (default) or 256x128"
    )
    parser.add_argument(
        "--layouts",
        default=None,
        help=f"comma-separated subset of {','.join(LAYOUT_NAMES)} (default: all)",
    )
    parser.add_argument(
        "--captioned-styles",
        default="sources",
        choices=CAPTIONED_STYLES,
        help=(
            "camera styles of the single-camera captioned set: sources (default; 9 cameras drawn from the "
            "source domains' styles) or diverse (every identity filmed by its own camera at a place of its "
            "own: designed styles other than the held-out domain's, moved; never the held-out style)"
        ),
    )
    parser.add_argument(
        "--captioned-identities",
        type=_positive_int,
        default=None,
        metavar="N",
        help="identities of the captioned set (default: the preset's: tiny 50, default 400, full 2000)",
    )
    parser.add_argument("--num-workers", type=int, default=2, help="rendering processes (default: 2)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help=(
            "replace the SynthPeds run in --out: removes only what its synthpeds_manifest.json lists, "
            "and refuses (changing nothing) when the new run would replace or mix with entries "
            "SynthPeds did not write"
        ),
    )
    parser.add_argument(
        "--preview", type=Path, default=None, help="also save a PNG contact sheet of samples here"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from hf_reid.data.synthetic import generate_synthpeds, save_preview

    summary = generate_synthpeds(
        args.out,
        preset=args.preset,
        seed=args.seed,
        image_size=args.image_size,
        layouts=args.layouts,
        num_workers=args.num_workers,
        overwrite=args.overwrite,
        captioned_styles=args.captioned_styles,
        captioned_identities=args.captioned_identities,
    )
    verb = (
        "reused"
        if summary.reused
        else f"wrote in {summary.seconds:.1f} s ({summary.images_per_second:.0f} images/s)"
    )
    print(
        f"SynthPeds {summary.preset} (seed {summary.seed}): {summary.num_images} images {verb} -> {summary.out_dir}"
    )
    for dataset, counts in summary.counts.items():
        print(f"  {dataset:<14} " + ", ".join(f"{split} {n}" for split, n in counts.items()))
    print(f"  held-out target domain: {summary.held_out_domain}")
    if summary.captioned_identities is not None:
        print(
            f"  captioned single-camera set: {summary.captioned_identities} identities, "
            f"{summary.captioned_styles} camera styles"
        )
    if args.preview is not None:
        print(f"  preview: {save_preview(summary.out_dir, args.preview)}")
    return 0
