"""``hf-reid train METHOD [recipe options...]``: run ``recipes/<method>.py`` with the remaining
arguments, exactly as ``python recipes/<method>.py ...`` would.

The recipes are scripts at the root of an hf_reid checkout, not part of the package: they are
found next to the package of an editable install (``pip install -e .``), in ``$HF_REID_RECIPES``,
or in ``./recipes``. :func:`checkout_folder` finds such a folder (``hf-reid convert`` finds
``dataset_scripts/`` with it).
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path

METHODS: tuple[str, ...] = ("clip_reid", "retext", "clip_fgdi", "itkm", "pretrain_clip")
"""The recipes ``hf-reid train`` runs (``recipes/<method>.py``)."""

EXAMPLES = """\
examples:
  hf-reid train clip_reid                       # the SynthPeds default: writes runs/clip_reid
  hf-reid train retext --output_dir runs/retext_s1 --seed 1
  hf-reid train clip_reid --config recipes/configs/clip_reid_market1501.yaml --stage2.epochs 30
  hf-reid train itkm --resume                   # go on from the latest checkpoint of runs/itkm
  hf-reid train itkm --help                     # the recipe's own options
  accelerate launch -m hf_reid.cli train clip_fgdi   # several processes / GPUs

Everything after METHOD goes to the recipe unchanged (--config, --output_dir, --resume,
--overwrite_output_dir, --push_to_hub, --hub_model_id, --section.field VALUE).
"""


def checkout_folder(name: str, env_var: str | None = None) -> Path | None:
    """The folder ``name`` (``recipes``, ``dataset_scripts``) of the hf_reid checkout this package
    runs from: ``$env_var`` if set, else ``<checkout>/<name>`` next to the package (editable
    install), else ``./<name>`` when it holds hf_reid's scripts; ``None`` when there is none."""
    if env_var and os.environ.get(env_var):
        return Path(os.environ[env_var])
    package_root = Path(__file__).resolve().parents[2]
    for candidate in (package_root / name, Path.cwd() / name):
        if candidate.is_dir():
            return candidate
    return None


def missing_checkout_message(name: str, env_var: str) -> str:
    """Why a script folder of the checkout cannot be found, and what to do."""
    package = Path(__file__).resolve().parents[1]
    return (
        f"the {name}/ scripts of an hf_reid checkout are not next to this installation ({package}) "
        f"nor in ./{name}; install hf_reid from a clone (`pip install -e .`), run from the clone's "
        f"root, or set {env_var}=/path/to/hf_reid/{name}"
    )


def recipe_path(method: str) -> Path:
    """``recipes/<method>.py``; ``ValueError`` for an unknown method, ``FileNotFoundError`` when
    the package has no recipes beside it."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; methods: {', '.join(METHODS)}")
    folder = checkout_folder("recipes", "HF_REID_RECIPES")
    if folder is None:
        raise FileNotFoundError(missing_checkout_message("recipes", "HF_REID_RECIPES"))
    path = folder / f"{method}.py"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {method}.py (is it an hf_reid recipes folder?)")
    return path


def run_script(path: Path, argv: list[str], prog: str) -> int:
    """Run the script at ``path`` as ``__main__`` (as ``python path ...`` would, with
    ``sys.argv = [prog, *argv]``, so that its usage and errors name ``prog``); returns its exit
    status (``sys.exit`` with a message prints it to stderr and gives 1, as Python does)."""
    import types

    module = types.ModuleType("__main__")
    module.__file__ = str(path)
    code = compile(path.read_text(encoding="utf-8"), str(path), "exec")
    saved_argv, saved_main = sys.argv, sys.modules.get("__main__")
    sys.argv = [prog, *argv]
    sys.modules["__main__"] = module  # dataclasses resolve the script's annotations through it
    try:
        exec(code, module.__dict__)
    except SystemExit as exit_:
        code_ = exit_.code
        if code_ is None or isinstance(code_, int):
            return code_ or 0
        print(code_, file=sys.stderr)
        return 1
    finally:
        sys.argv = saved_argv
        if saved_main is not None:
            sys.modules["__main__"] = saved_main
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train",
        help="train a method with its recipe (recipes/<method>.py)",
        description=textwrap.fill(
            "Run recipes/<METHOD>.py of the hf_reid checkout with the remaining arguments, in this "
            "process (one process; for several, `accelerate launch -m hf_reid.cli train ...` or "
            "`accelerate launch recipes/<METHOD>.py ...`). Without arguments a recipe trains on its "
            "embedded SynthPeds default and writes runs/<METHOD>.",
            width=90,
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("method", choices=METHODS, metavar="METHOD", help=f"one of: {', '.join(METHODS)}")
    parser.add_argument(
        "recipe_args", nargs=argparse.REMAINDER, metavar="...", help="arguments of the recipe (see --help)"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    import logging

    path = recipe_path(args.method)
    # The recipe logs through a handler of its own (hf_reid.training.setup_logging): its messages
    # must not reach the handler hf-reid installed as well, or every line prints twice.
    package_logger = logging.getLogger("hf_reid")
    propagate, package_logger.propagate = package_logger.propagate, False
    try:
        return run_script(path, list(args.recipe_args), prog=f"hf-reid train {args.method}")
    finally:
        package_logger.propagate = propagate
