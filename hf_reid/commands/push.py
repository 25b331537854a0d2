"""``hf-reid push MODEL --repo-id ID``: upload a model folder (or its LoRA adapter, or a converted
dataset) to the Hub with hf_reid's push code (:mod:`hf_reid.hub`).

* a model folder: :func:`~hf_reid.hub.push_run_to_hub`, leaving out what recipes leave out
  (checkpoints, caches, logs); its card is rewritten first to name the repository (unless
  ``--no-card``, or the folder's ``README.md`` is not an hf_reid card);
* ``--adapter``: ``MODEL/lora_adapter`` (or MODEL itself, when it is an adapter folder) with
  :func:`~hf_reid.hub.push_adapter_to_hub`;
* ``--dataset``: a folder written by ``hf-reid convert`` (parquet or Arrow) to a dataset repository
  with :func:`~hf_reid.hub.push_dataset_folder`, private unless ``--public``.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

EXAMPLES = """\
examples:
  hf-reid push runs/clip_reid --repo-id ORG/clip-reid-synthpeds
  hf-reid push runs/clip_reid_lora --repo-id ORG/clip-reid-lora --adapter
  hf-reid push market1501_pq --repo-id ORG/market1501 --dataset          # private
  hf-reid push runs/retext --repo-id ORG/retext --private

Log in first (`hf auth login`, or HF_TOKEN); models are public and datasets private by default.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "push",
        help="upload a model folder, its LoRA adapter or a converted dataset to the Hugging Face Hub",
        description=textwrap.fill(
            "Create the Hub repository ID if needed and upload MODEL: a trained model folder (checkpoints, "
            "caches and logs left out; its card rewritten to name ID), its LoRA adapter (--adapter), or a "
            "dataset folder written by `hf-reid convert` (--dataset).",
            width=90,
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL", help="the model folder (or adapter / dataset folder)")
    parser.add_argument("--repo-id", required=True, metavar="ID", help="the Hub repository, e.g. ORG/NAME")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--adapter", action="store_true", help="push the LoRA adapter (MODEL/lora_adapter)")
    kind.add_argument(
        "--dataset", action="store_true", help="MODEL is a converted dataset: push a dataset repo"
    )
    visibility = parser.add_mutually_exclusive_group()
    visibility.add_argument(
        "--private", action="store_true", help="a private repository (default for datasets)"
    )
    visibility.add_argument("--public", action="store_true", help="a public repository (default for models)")
    parser.add_argument("--no-card", action="store_true", help="upload the model folder's README.md as it is")
    parser.add_argument("--token", default=None, help="Hub token (default: the logged-in one / HF_TOKEN)")
    return parser


def _is_hf_reid_card(path: Path) -> bool:
    from huggingface_hub import ModelCard

    try:
        return "hf_reid" in (ModelCard.load(path).data.tags or [])
    except Exception:  # not a card we can read: leave it alone
        return False


def _push(args: argparse.Namespace, folder: Path) -> str:
    from hf_reid import hub

    if args.dataset:
        return hub.push_dataset_folder(folder, args.repo_id, private=not args.public, token=args.token)
    if args.adapter:
        adapter = folder / "lora_adapter" if (folder / "lora_adapter").is_dir() else folder
        if not (adapter / "adapter_config.json").is_file():
            raise FileNotFoundError(f"{folder} has no LoRA adapter (lora_adapter/adapter_config.json)")
        return hub.push_adapter_to_hub(adapter, args.repo_id, private=args.private, token=args.token)
    from hf_reid.training.recipe_run import HUB_IGNORE

    card = folder / "README.md"
    if (
        not args.no_card
        and (folder / "config.json").is_file()
        and (not card.exists() or _is_hf_reid_card(card))
    ):
        try:
            hub.write_run_card(folder, model_id=args.repo_id)
        except ValueError as error:  # no template for this model type: push the folder as it is
            print(f"Card left as it is: {error}")
    return hub.push_run_to_hub(
        folder, args.repo_id, private=args.private, token=args.token, ignore_patterns=HUB_IGNORE
    )


def run(args: argparse.Namespace) -> int:
    import sys

    folder = Path(args.model)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: no such folder")
    try:
        url = _push(args, folder)
    except (FileNotFoundError, NotADirectoryError):
        raise
    except OSError as error:  # the Hub: offline, not logged in, no write access... (one line, no traceback)
        print(f"hf-reid push: error: the upload to {args.repo_id} failed: {error}", file=sys.stderr)
        return 1
    print(f"Pushed {folder} to {url}")
    return 0
