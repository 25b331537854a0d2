"""``hf-reid demo``: person search in the browser (a Gradio app over :mod:`hf_reid.search`).

Upload a query crop (or click one of the example queries: the gallery folder's ``query`` split,
when it has one), or type a description when the model has a trained caption path (ReText, a plain
CLIP such as SynthCLIP); the results are the gallery's best crops, each captioned with its rank,
its score (cosine similarity) and its identity when the file name or folder gives one (with ✓ / ✗
when the query's identity is known too)::

    from hf_reid.demo import build_demo, launch_demo

    demo = build_demo("runs/retext", "data/synthpeds/synthpeds_d3")  # gallery + query splits
    launch_demo(demo, port=7860)

The gallery is a folder of crops (searched recursively), a Market-style dataset folder (its
``bounding_box_test`` or ``gallery`` split; its ``query`` split gives the examples) or a saved
:class:`~hf_reid.search.SearchIndex`. Gradio is imported only when a demo is built.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import gradio as gr

    from hf_reid.search import SearchIndex, SearchModel, SearchResult

DEFAULT_TOP_K = 10
MAX_EXAMPLES = 24
"""Example queries shown at most (one per identity first)."""
GALLERY_SPLITS = ("bounding_box_test", "gallery")
"""Sub-folders taken as the gallery when ``--gallery`` is a dataset folder (first found)."""
QUERY_SPLIT = "query"

RESULTS_ID = "results"
STATUS_ID = "status"
QUERY_IMAGE_ID = "query-image"
SEARCH_IMAGE_ID = "search-image"
QUERY_TEXT_ID = "query-text"
SEARCH_TEXT_ID = "search-text"
EXAMPLES_ID = "examples"
"""``elem_id`` of the components a browser test (or a user script) drives."""
CSS = f"#{RESULTS_ID} .caption-label {{ white-space: normal; overflow: visible; text-overflow: clip; }}"
"""Result captions wrap rather than being cut off."""


@dataclass
class DemoSources:
    """Where a demo's gallery and example queries come from."""

    gallery: Path
    """A folder of crops, or a saved index (``NAME.safetensors`` / ``NAME.json`` / ``NAME``)."""
    queries: Path | None
    """A folder of example query crops, or ``None``."""


def resolve_sources(gallery: str | os.PathLike, queries: str | os.PathLike | None = None) -> DemoSources:
    """The gallery and example-query folders of ``--gallery`` (and ``--queries``).

    A dataset folder with a ``bounding_box_test`` (or ``gallery``) split: that split, with its
    ``query`` split as examples. A folder of crops: itself, with a sibling ``query`` folder as
    examples. Anything else (a saved index): as given, without examples unless ``queries``."""
    gallery = Path(gallery)
    examples = Path(queries) if queries is not None else None
    if examples is not None and not examples.is_dir():
        raise NotADirectoryError(f"example queries {examples} is not a folder of crops.")
    if gallery.is_dir():
        for split in GALLERY_SPLITS:
            if (gallery / split).is_dir():
                if examples is None and (gallery / QUERY_SPLIT).is_dir():
                    examples = gallery / QUERY_SPLIT
                return DemoSources(gallery / split, examples)
        sibling = gallery.resolve().parent / QUERY_SPLIT
        if examples is None and sibling.is_dir() and sibling != gallery.resolve():
            examples = sibling
    return DemoSources(gallery, examples)


def example_queries(folder: Path | None, limit: int = MAX_EXAMPLES) -> list[str]:
    """Up to ``limit`` crops of ``folder``: the first image of each identity (by file name or
    folder), in order, then the remaining images."""
    if folder is None or limit < 1:
        return []
    from hf_reid.search import identity_from_path, list_images

    try:
        paths = list_images(folder)
    except ValueError:  # an empty query folder: no examples
        return []
    seen: set[str | None] = set()
    first, rest = [], []
    for path in paths:
        identity = identity_from_path(path, folder)
        if identity is not None and identity not in seen:
            seen.add(identity)
            first.append(path)
        else:
            rest.append(path)
    return [str(p) for p in (first + rest)[:limit]]


def caption(rank: int, score: float, identity: str | None, match: bool | None) -> str:
    """``#1 · 0.973 · id 4 ✓``: rank, score, identity (``id ?`` when unknown) and, when both
    identities are known, whether it is the query's."""
    mark = "" if match is None else (" ✓" if match else " ✗")
    return f"#{rank} · {score:.3f} · id {identity if identity is not None else '?'}{mark}"


def gallery_items(result: SearchResult) -> list[tuple[str, str]]:
    """``(image path, caption)`` of each hit, best first (what the results gallery shows)."""
    matches = result.matches or [None] * len(result.paths)
    return [
        (path, caption(rank, score, identity, match))
        for rank, (path, score, identity, match) in enumerate(
            zip(result.paths, result.scores, result.identities, matches), start=1
        )
    ]


def summary(result: SearchResult, gallery_size: int) -> str:
    """One Markdown line about a search: the query, and the top hit."""
    if result.kind == "text":
        query = f"description “{result.query}”"
    else:
        known = f"id {result.query_identity}" if result.query_identity is not None else "identity unknown"
        query = f"query crop ({known})"
    if not result.paths:
        return f"{query}: no results."
    top = result.identities[0]
    line = f"**{query}** → top-1: **id {top if top is not None else '?'}** (score {result.scores[0]:.3f})"
    if result.matches and result.matches[0] is not None:
        line += ", the query's identity" if result.matches[0] else ", another identity"
    return f"{line}; {len(result.paths)} of {gallery_size} gallery crops shown."


def text_search_refusal(model: SearchModel, index: SearchIndex) -> str | None:
    """Why text queries are off for this model and index, or ``None`` when they work."""
    try:
        model.check_text()
    except ValueError as error:
        return str(error)
    if "joint" not in index.spaces:
        return (
            "the saved index has no image-text (joint) embeddings: rebuild it from the folder of crops "
            "(hf-reid search MODEL --gallery DIR --save-index FILE) to search by description."
        )
    return None


def _theme():
    """Gradio's default theme with the system's fonts (its Google fonts need the network)."""
    import gradio as gr

    return gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )


def build_demo(
    model_path: str | os.PathLike | SearchModel,
    gallery: str | os.PathLike,
    top_k: int = DEFAULT_TOP_K,
    *,
    queries: str | os.PathLike | None = None,
    allow_untrained_text: bool = False,
    device: str | None = None,
    batch_size: int = 64,
    max_examples: int = MAX_EXAMPLES,
) -> gr.Blocks:
    """The person-search app: the model (a folder, ``"synthclip"``, or a loaded
    :class:`~hf_reid.search.SearchModel`) and the gallery (see :func:`resolve_sources`) are loaded
    and embedded now; every search afterwards is one query embedding and one matrix product.

    Launch it with :func:`launch_demo` (local fonts, the gallery folders allowed, no SSR)."""
    import gradio as gr

    from hf_reid.search import SearchIndex, SearchModel, identity_from_path, open_gallery

    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}.")
    sources = resolve_sources(gallery, queries)
    if not sources.gallery.exists() and not any(f.is_file() for f in SearchIndex.files(sources.gallery)):
        raise FileNotFoundError(
            f"gallery {sources.gallery} does not exist (give a folder of crops or a saved index)."
        )
    if isinstance(model_path, SearchModel):
        model = model_path
    else:
        model = SearchModel.load(
            model_path, allow_untrained_text=allow_untrained_text, device=device, batch_size=batch_size
        )
    spaces = ["reid", "joint"] if (model.has_trained_caption_path or allow_untrained_text) else ["reid"]
    index = open_gallery(model, sources.gallery, spaces)
    examples = example_queries(sources.queries, max_examples)
    refusal = text_search_refusal(model, index)
    identities = {i for i in index.identities if i is not None}
    max_k = len(index)

    def clamp_k(k: float | None) -> int:
        return max(1, min(int(k or top_k), max_k))

    def search_image(path: str | None, k: float) -> tuple[list[tuple[str, str]], str]:
        if not path:
            raise gr.Error("Upload a query crop (or click an example) first.")
        try:
            result = index.query_images(
                model, [path], top_k=clamp_k(k), identities=[identity_from_path(path)]
            )[0]
        except (ValueError, FileNotFoundError) as error:
            raise gr.Error(str(error)) from error
        return gallery_items(result), summary(result, len(index))

    def search_text(text: str | None, k: float) -> tuple[list[tuple[str, str]], str]:
        if not text or not text.strip():
            raise gr.Error("Type a description first.")
        try:
            result = index.query_texts(model, [text.strip()], top_k=clamp_k(k))[0]
        except ValueError as error:
            raise gr.Error(str(error)) from error
        return gallery_items(result), summary(result, len(index))

    header = (
        f"# hf_reid person search\n"
        f"Model **{model.name}** · gallery **{sources.gallery}**: {len(index)} crops"
        + (f", {len(identities)} identities" if identities else "")
        + f" · search: {index.backend}, cosine similarity."
    )
    with gr.Blocks(
        title="hf_reid person search", analytics_enabled=False, delete_cache=(3600, 86400)
    ) as demo:
        gr.Markdown(header)
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                with gr.Tab("By image"):
                    query_image = gr.Image(
                        type="filepath",
                        image_mode=None,
                        sources=["upload", "clipboard"],
                        label="Query crop",
                        height=280,
                        elem_id=QUERY_IMAGE_ID,
                    )
                    image_button = gr.Button("Search by image", variant="primary", elem_id=SEARCH_IMAGE_ID)
                with gr.Tab("By description"):
                    if refusal is None:
                        query_text = gr.Textbox(
                            label="Description",
                            placeholder="a woman in a red coat with a black backpack",
                            lines=2,
                            elem_id=QUERY_TEXT_ID,
                        )
                        text_button = gr.Button(
                            "Search by description", variant="primary", elem_id=SEARCH_TEXT_ID
                        )
                    else:
                        gr.Markdown(f"Search by description is off for this model: {refusal}")
                k_slider = gr.Slider(1, max_k, value=min(top_k, max_k), step=1, label="Results shown (top-k)")
            with gr.Column(scale=2):
                status = gr.Markdown("Upload a query crop or pick an example.", elem_id=STATUS_ID)
                results = gr.Gallery(
                    label="Gallery matches (rank · score · identity)",
                    columns=5,
                    rows=2,
                    object_fit="contain",
                    allow_preview=True,
                    elem_id=RESULTS_ID,
                )
        if examples:
            gr.Examples(
                examples=[[path] for path in examples],
                inputs=[query_image],
                outputs=[results, status],
                fn=_with_default_k(search_image, top_k),
                run_on_click=True,
                cache_examples=False,
                examples_per_page=max_examples,
                label=f"Example queries ({sources.queries}; click one to search)",
                elem_id=EXAMPLES_ID,
            )
        image_button.click(search_image, inputs=[query_image, k_slider], outputs=[results, status])
        if refusal is None:
            text_button.click(search_text, inputs=[query_text, k_slider], outputs=[results, status])
            query_text.submit(search_text, inputs=[query_text, k_slider], outputs=[results, status])

    demo.hf_reid_allowed_paths = _allowed_paths(sources, index)
    demo.hf_reid_index = index
    demo.hf_reid_model = model
    return demo


def _with_default_k(search_image: Any, top_k: int) -> Any:
    """``search_image`` with the default ``top_k`` (an example click passes only the image)."""

    def search(path: str | None) -> Any:
        return search_image(path, top_k)

    return search


def _allowed_paths(sources: DemoSources, index: SearchIndex) -> list[str]:
    """The folders the app may serve images from: the gallery's (an index's images may lie
    anywhere) and the example queries'."""
    folders = {str(Path(p).resolve().parent) for p in index.paths}
    if sources.gallery.is_dir():
        folders.add(str(sources.gallery.resolve()))
    if sources.queries is not None:
        folders.add(str(sources.queries.resolve()))
    return sorted(folders)


def launch_demo(
    demo: gr.Blocks,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    block: bool = True,
    quiet: bool = False,
) -> Any:
    """Serve ``demo`` on ``host:port`` (``share=True``: also through a public Gradio link). With
    ``block=False`` it returns at once (the server runs in a thread; ``demo.close()`` stops it)."""
    return demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        prevent_thread_lock=not block,
        quiet=quiet,
        show_error=True,
        ssr_mode=False,
        theme=_theme(),
        css=CSS,
        allowed_paths=list(getattr(demo, "hf_reid_allowed_paths", [])),
        footer_links=["gradio"],
    )


__all__ = [
    "DEFAULT_TOP_K",
    "DemoSources",
    "build_demo",
    "caption",
    "example_queries",
    "gallery_items",
    "launch_demo",
    "resolve_sources",
    "summary",
    "text_search_refusal",
]
