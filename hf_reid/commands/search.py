"""``hf-reid search MODEL --gallery DIR_or_INDEX (--query IMG... | --text "...")``: person search by
example image(s) or by description (see :mod:`hf_reid.search` and docs/SEARCH.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._common import add_search_arguments, add_search_model_arguments, check_search_arguments

EXAMPLES = """\
examples:
  # image query: the same person in a folder of crops (a Market-style name gives the true identity)
  hf-reid search runs/clip_reid --gallery data/synthpeds/synthpeds_d3/bounding_box_test \\
      --query data/synthpeds/synthpeds_d3/query/0001_c1s6_002165_02.jpg --top-k 10 --out results/

  # text query with ReText (its image-text matching loss trained the joint space); keep the index
  hf-reid search runs/retext --gallery data/synthpeds/synthpeds_d3/bounding_box_test \\
      --text "a woman in a red coat" --save-index gallery_retext.safetensors

  # reuse the saved index (NAME.safetensors + NAME.json), several descriptions at once
  hf-reid search runs/retext --gallery gallery_retext.safetensors \\
      --text "a man with a blue backpack" "a girl in a white dress"

  # zero-shot with the shipped tiny CLIP
  hf-reid search synthclip --gallery DIR --text "a man in a green tee and black shorts"

Writes OUT/results.png (query, then the top-k with scores; green: same identity, red: another,
grey: unknown) and OUT/results.json. Identities come from Market-style file names (0001_c2s1_...)
or a folder per identity. CLIP-ReID, CLIP-FGDI and ITKM train no caption path: a text query with
them is refused unless --allow-untrained-text.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "search",
        help="find a person in a gallery of crops by example image(s) or by a description",
        description=(
            "Rank the crops of a gallery (a folder, embedded now, or an index saved with --save-index) "
            "by similarity to query images (the model's Re-ID embedding) or to a description (the "
            "image-text space: ReText, or a CLIP zero-shot). Exact inner product of L2-normalised "
            "embeddings (cosine); faiss when installed, else torch."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_search_arguments(
        parser,
        gallery_help="folder of crops (searched recursively) or a saved index (NAME.safetensors / NAME.json)",
    )
    queries = parser.add_mutually_exclusive_group(required=True)
    queries.add_argument("--query", nargs="+", metavar="IMG", help="query image file(s)")
    queries.add_argument("--text", nargs="+", metavar="TEXT", help="description(s), one query each")
    parser.add_argument("--top-k", type=int, default=10, help="hits per query (default: 10)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("search_results"),
        metavar="DIR",
        help="output folder (default: search_results)",
    )
    parser.add_argument(
        "--save-index",
        type=Path,
        default=None,
        metavar="FILE",
        help="also save the gallery index as FILE (.safetensors, with a .json next to it)",
    )
    parser.add_argument(
        "--keep-query",
        action="store_true",
        help="keep a query image that is itself in the gallery among its hits",
    )
    add_search_model_arguments(
        parser,
        untrained_text_help=(
            "text queries with a model whose caption path no loss trained (CLIP-ReID, CLIP-FGDI, ITKM)"
        ),
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from hf_reid.search import SearchIndex, SearchModel, open_gallery, read_image, save_grid

    check_search_arguments(args)
    gallery = Path(args.gallery)
    if not gallery.exists() and not any(f.is_file() for f in SearchIndex.files(gallery)):
        raise FileNotFoundError(
            f"gallery {gallery} does not exist (give a folder of crops or a saved index)."
        )
    for image in args.query or []:
        read_image(image)  # a missing or unreadable query fails before the gallery is embedded

    model = SearchModel.load(
        args.model,
        allow_untrained_text=args.allow_untrained_text,
        device=args.device,
        batch_size=args.batch_size,
    )
    if args.text:
        model.check_text()
    space = "joint" if args.text else "reid"
    spaces = [space]
    if args.save_index is not None:
        spaces = ["reid", "joint"] if (args.text or model.has_trained_caption_path) else ["reid"]
    index = open_gallery(model, gallery, spaces)
    if args.save_index is not None:
        tensors_file, json_file = index.save(args.save_index)
        print(f"index: {len(index)} images ({', '.join(index.spaces)}) -> {tensors_file} + {json_file.name}")

    if args.text:
        results = index.query_texts(model, args.text, top_k=args.top_k)
    else:
        results = index.query_images(model, args.query, top_k=args.top_k, exclude_query=not args.keep_query)

    args.out.mkdir(parents=True, exist_ok=True)
    png = save_grid(results, args.out / "results.png")
    summary = {
        "model": args.model,
        "gallery": str(gallery),
        "gallery_size": len(index),
        "query_kind": "text" if args.text else "image",
        "space": space,
        "top_k": args.top_k,
        "backend": index.backend,
        "png": str(png),
        "results": [result.to_dict() for result in results],
    }
    json_path = args.out / "results.json"
    json_path.write_text(json.dumps(summary, indent=2) + "\n")

    for result in results:
        query = result.query if result.kind == "image" else f'"{result.query}"'
        print(f"{query}" + (f" (id {result.query_identity})" if result.query_identity is not None else ""))
        hits = list(zip(result.paths, result.scores, result.matches, strict=True))
        for rank, (path, score, match) in enumerate(hits[:5], start=1):
            print(f"  #{rank} {score:.3f} {path}" + (" (same identity)" if match else ""))
    print(f"wrote {png} and {json_path}")
    return 0
