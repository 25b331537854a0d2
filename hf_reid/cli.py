"""The ``hf-reid`` command line.

One sub-command per everyday job, one module each in :mod:`hf_reid.commands` (``add_parser`` and
``run``; see that package to add one). Building the parsers imports no torch, transformers or
datasets, so ``hf-reid --help`` answers at once; a command imports what it needs when it runs.

    hf-reid synth --out data/synthpeds --preset default --seed 0
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from importlib import import_module

from hf_reid.commands import COMMANDS

logger = logging.getLogger("hf_reid.cli")

HANDLED_ERRORS = (ValueError, FileExistsError, FileNotFoundError, NotADirectoryError)
"""Errors of a command's ``run`` printed as one line (exit status 2) rather than a traceback."""


def build_parser() -> argparse.ArgumentParser:
    """The ``hf-reid`` parser with every sub-command of :data:`hf_reid.commands.COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="hf-reid", description="hf_reid: vision-language person re-identification."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMANDS:
        command = import_module(f"hf_reid.commands.{name}")
        command.add_parser(subparsers).set_defaults(func=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hf-reid`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.func(args)
    except HANDLED_ERRORS as error:
        print(f"hf-reid {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
