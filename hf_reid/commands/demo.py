"""``hf-reid demo MODEL --gallery DIR``: person search in the browser, a Gradio app over
:mod:`hf_reid.search` (see :mod:`hf_reid.demo` and docs/DEMO.md)."""

from __future__ import annotations

import argparse

from ._common import add_search_arguments, add_search_model_arguments, check_search_arguments, int_in_range

EXAMPLES = """\
examples:
  # a SynthPeds domain: its bounding_box_test split is the gallery, its query split the examples
  hf-reid demo runs/retext --gallery data/synthpeds/synthpeds_d3

  # zero-shot with the shipped tiny CLIP, any folder of crops, another port
  hf-reid demo synthclip --gallery crops/ --port 7870

  # a saved index (hf-reid search ... --save-index), example queries from a folder, a public link
  hf-reid demo runs/retext --gallery gallery_retext.safetensors --queries crops/query --share true

Open the printed URL (default http://127.0.0.1:7860). Upload a query crop or click an example;
with a model whose caption path was trained (ReText, a CLIP), also search by description. Each
result is captioned "#rank · score · id IDENTITY", with a check mark when it is the query's
identity (identities come from Market-style file names 0001_c2s1_... or a folder per identity).
Needs gradio (pip install gradio).
"""


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "yes", "1", "on"):
        return True
    if value in ("false", "no", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


_port = int_in_range("--port", 1, 65535, what="a port number (1-65535)")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo",
        help="person search in the browser: a Gradio app (query crop or description -> gallery matches)",
        description=(
            "Serve a Gradio app that searches a gallery of crops with MODEL: upload a query crop (or "
            "pick an example from the gallery's query split), or type a description when the model "
            "has a trained caption path; the best gallery crops are shown with rank, score and "
            "identity. The gallery is embedded once, at start."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_search_arguments(
        parser,
        gallery_help=(
            "folder of crops (searched recursively), a dataset folder with a bounding_box_test (or "
            "gallery) split and a query split, or a saved index (NAME.safetensors / NAME.json)"
        ),
    )
    parser.add_argument(
        "--queries",
        default=None,
        metavar="DIR",
        help="folder of example query crops (default: the dataset's query split, or a sibling query/)",
    )
    parser.add_argument("--top-k", type=int, default=10, help="results shown at first (default: 10)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to serve on (default: 127.0.0.1; 0.0.0.0: every one)"
    )
    parser.add_argument("--port", type=_port, default=None, help="port (default: 7860, or the next free one)")
    parser.add_argument(
        "--share",
        type=_boolean,
        nargs="?",
        const=True,
        default=False,
        metavar="true|false",
        help="also serve through a temporary public gradio.live link (default: false)",
    )
    add_search_model_arguments(
        parser,
        untrained_text_help=(
            "search by description with a model whose caption path no loss trained "
            "(CLIP-ReID, CLIP-FGDI, ITKM)"
        ),
    )
    return parser


def build(args: argparse.Namespace):
    """The app of parsed ``hf-reid demo`` arguments (a ``gradio.Blocks``, not yet launched)."""
    check_search_arguments(args)
    try:
        import gradio  # noqa: F401
    except ImportError as error:
        raise ValueError(f"hf-reid demo needs gradio: pip install gradio ({error}).") from error
    from hf_reid.demo import build_demo

    return build_demo(
        args.model,
        args.gallery,
        top_k=args.top_k,
        queries=args.queries,
        allow_untrained_text=args.allow_untrained_text,
        device=args.device,
        batch_size=args.batch_size,
    )


def run(args: argparse.Namespace) -> int:
    from hf_reid.demo import launch_demo

    demo = build(args)
    launch_demo(demo, host=args.host, port=args.port, share=args.share, block=True)
    return 0
