"""The ``hf-reid`` command line.

One sub-command per everyday job; each has an ``add_<name>_parser(subparsers)`` function that
declares its options and a ``run_<name>(args) -> int`` function that does the work. To add a
sub-command, write both and list the adder in ``SUBCOMMANDS``.

    hf-reid synth --out data/synthpeds --preset default --seed 0
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

logger = logging.getLogger("hf_reid.cli")


# -- synth ------------------------------------------------------------------------------------------
def _image_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--image-size must look like 128x64 (height x width), got {text!r}"
        ) from None
    return height, width


def add_synth_parser(subparsers: argparse._SubParsersAction) -> None:
    """``hf-reid synth``: write the SynthPeds benchmark."""
    from hf_reid.data.synthetic.layouts import LAYOUT_NAMES
    from hf_reid.data.synthetic.presets import PRESETS

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
        "--preset", default="default", choices=sorted(PRESETS), help="size preset (default: default)"
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
    parser.set_defaults(func=run_synth)


def run_synth(args: argparse.Namespace) -> int:
    from hf_reid.data.synthetic import generate_synthpeds, save_preview

    summary = generate_synthpeds(
        args.out,
        preset=args.preset,
        seed=args.seed,
        image_size=args.image_size,
        layouts=args.layouts,
        num_workers=args.num_workers,
        overwrite=args.overwrite,
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
    if args.preview is not None:
        print(f"  preview: {save_preview(summary.out_dir, args.preview)}")
    return 0


# -- entry point ----------------------------------------------------------------------------------
SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [add_synth_parser]
"""Parser builders of every sub-command, in help order."""


def build_parser() -> argparse.ArgumentParser:
    """The ``hf-reid`` parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="hf-reid", description="hf_reid: vision-language person re-identification."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hf-reid`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.func(args)
    except (ValueError, FileExistsError, FileNotFoundError, NotADirectoryError) as error:
        print(f"hf-reid {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
