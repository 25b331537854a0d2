"""``hf-reid convert NAME --src RAW --out DIR``: run ``dataset_scripts/convert_<NAME>.py`` (a Re-ID
dataset folder → a Hugging Face dataset with the images embedded and a dataset card).

The names are the converter scripts of the checkout (:func:`converter_names`); the scripts call
:func:`hf_reid.data.export.run_converter`, which holds the logic. Without a checkout (a regular
install) the command calls ``run_converter`` for any layout name itself.
"""

from __future__ import annotations

import argparse
import textwrap

from .train import checkout_folder, run_script

ENV_VAR = "HF_REID_DATASET_SCRIPTS"

EXAMPLES = """\
examples:
  hf-reid convert market1501 --src /data/Market-1501-v15.09.15 --out market1501_hf
  hf-reid convert ltcc --src /data/LTCC_ReID --out ltcc_pq --format parquet
  hf-reid convert cuhk03_np --src /data/cuhk03-np --out cuhk03_labeled --labeled
  hf-reid convert synthpeds --src data/synthpeds/synthpeds_d0 --push-to-hub ORG/synthpeds-d0
  hf-reid convert grid --help                    # the converter's own options

Everything after NAME except --src goes to the converter (--out | --push-to-hub, --format,
--public, --on-bad-image, the layout's options); hf-reid push DIR --dataset uploads a result later.
"""


def converter_names() -> list[str]:
    """``NAME`` of every ``dataset_scripts/convert_<NAME>.py`` of the checkout (empty without one)."""
    folder = checkout_folder("dataset_scripts", ENV_VAR)
    if folder is None:
        return []
    return sorted(p.stem.removeprefix("convert_") for p in folder.glob("convert_*.py"))


def _split_src(argv: list[str]) -> tuple[str | None, list[str]]:
    """``--src RAW`` / ``--src=RAW`` taken out of the converter arguments."""
    rest, src, i = [], None, 0
    while i < len(argv):
        if argv[i] == "--src" and i + 1 < len(argv):
            src, i = argv[i + 1], i + 2
            continue
        if argv[i].startswith("--src="):
            src = argv[i].split("=", 1)[1]
        else:
            rest.append(argv[i])
        i += 1
    return src, rest


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    names = converter_names()
    parser = subparsers.add_parser(
        "convert",
        help="convert a Re-ID dataset folder to a Hugging Face dataset (dataset_scripts/)",
        description=textwrap.fill(
            "Read RAW with the NAME layout (hf_reid.data.load_reid_dataset) and write it with the images "
            "embedded and a dataset card: save_to_disk Arrow (default), a Hub-ready parquet folder "
            "(--format parquet), or a private Hub dataset repository (--push-to-hub ORG/NAME). "
            f"Converters: {', '.join(names) if names else '(no dataset_scripts/ found: any layout name)'}.",
            width=90,
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", metavar="NAME", help="the dataset converter (layout) name")
    parser.add_argument("--src", metavar="RAW", default=None, help="the dataset folder to read")
    parser.add_argument(
        "converter_args",
        nargs=argparse.REMAINDER,
        metavar="...",
        help="--out DIR or --push-to-hub REPO_ID, and the converter's options (NAME --help lists them)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    names = converter_names()
    if not names:  # a regular install without the checkout's scripts: any layout name
        from hf_reid.data import reid_layout_names

        names = reid_layout_names()
    if args.name not in names:
        raise ValueError(f"unknown dataset converter {args.name!r}; converters: {', '.join(names)}")
    src, rest = _split_src(list(args.converter_args))
    src = args.src if args.src is not None else src
    if src is None and not any(a in ("-h", "--help") for a in rest):
        raise ValueError(f"give the {args.name} dataset folder with --src RAW")
    argv = [*([src] if src is not None else []), *rest]
    prog = f"hf-reid convert {args.name}"
    folder = checkout_folder("dataset_scripts", ENV_VAR)
    if folder is not None and (folder / f"convert_{args.name}.py").is_file():
        return run_script(folder / f"convert_{args.name}.py", argv, prog=prog)
    # The scripts only call run_converter; without them, call it here.
    import sys

    from hf_reid.data.export import run_converter

    saved, sys.argv = sys.argv, [prog]
    try:
        print(run_converter(args.name, argv))
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 1
    finally:
        sys.argv = saved
    return 0
