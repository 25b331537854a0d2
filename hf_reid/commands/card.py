"""``hf-reid card MODEL``: (re)write a model folder's ``README.md`` model card from its files, with
the card code the recipes use (:func:`hf_reid.hub.write_run_card`): the method's template from
``model_cards/``, the results of ``eval_results.json`` as model-index metadata, and from a recipe
run's ``config.yaml`` / ``train_results.json`` the training facts."""

from __future__ import annotations

import argparse
import textwrap

EXAMPLES = """\
examples:
  hf-reid card runs/clip_reid
  hf-reid card runs/retext --repo-id ORG/retext-synthpeds      # the card names its Hub repository
  hf-reid eval runs/clip_reid --data data/synthpeds/synthpeds_d3 --layout synthpeds --update-card
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "card",
        help="(re)write a model folder's model card (README.md) from its config and eval_results.json",
        description=textwrap.fill(
            "Render the model card of MODEL (an hf_reid model folder: clip_reid, retext, clip_fgdi or "
            "itkm) into MODEL/README.md: the method's text, the results of MODEL/eval_results.json as "
            "a table and as model-index metadata (shown on the Hub), and, for a recipe run folder, the "
            "starting CLIP, training data, training config and run facts.",
            width=90,
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL", help="the model folder")
    parser.add_argument(
        "--repo-id",
        default=None,
        metavar="ID",
        help="the model's Hub repository, named by the card (default: none)",
    )
    parser.add_argument(
        "--base-model",
        default=None,
        metavar="ID",
        help="the Hub id the model was trained from (default: from config.yaml)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from huggingface_hub import ModelCard

    from hf_reid.hub import write_run_card

    path = write_run_card(args.model, model_id=args.repo_id, base_model=args.base_model)
    card = ModelCard.load(path)
    entries = len(card.data.eval_results or [])
    print(f"Wrote {path} ({card.data.model_name}; {entries} model-index entries)")
    return 0
