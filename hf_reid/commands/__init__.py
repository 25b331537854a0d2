"""The sub-commands of ``hf-reid``, one module per sub-command.

A command module (``hf_reid/commands/<module>.py``) defines two functions:

* ``add_parser(subparsers) -> argparse.ArgumentParser``: adds the sub-command and its options.
  ``hf-reid --help`` builds every command's parser, so a module imports only the standard library
  at its top and in ``add_parser`` (no torch, transformers or datasets; a test checks it);
* ``run(args) -> int``: does the work and returns the exit status; it imports what it needs.

Options and helpers that several commands share (model loading, ``--device``, ``--option``,
search options...) live in :mod:`hf_reid.commands._common`, under the same import rule.

To add a sub-command, write the module and list it in :data:`COMMANDS`. ``ValueError``,
``FileExistsError``, ``FileNotFoundError`` and ``NotADirectoryError`` raised by ``run`` are
printed as ``hf-reid <command>: error: ...`` with exit status 2 (see :func:`hf_reid.cli.main`).
"""

COMMANDS: tuple[str, ...] = (
    "synth",
    "train",
    "eval",
    "extract",
    "search",
    "demo",
    "export",
    "convert",
    "card",
    "push",
)
"""Modules of ``hf_reid.commands`` that define a sub-command, in help order."""

__all__ = ["COMMANDS"]
