"""PNG figures of evaluation results: CMC curves and ranked lists.

Figures are drawn on matplotlib ``Figure`` objects with the Agg canvas, without ``pyplot``, so
they work on headless machines and never change the caller's matplotlib backend.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .rank import RankResult

__all__ = ["plot_cmc", "plot_ranked_list"]

MATCH_COLOR = (34, 160, 60)
"""Border of a correct match in ranked lists (green)."""
MISMATCH_COLOR = (210, 40, 40)
"""Border of a wrong match (red)."""
QUERY_COLOR = (40, 40, 40)
"""Border of the query image."""


def headless_figure(width: float, height: float):
    """A matplotlib ``Figure`` of ``width`` x ``height`` inches on the Agg canvas (no ``pyplot``,
    no backend change): what every PNG of the package and its benchmarks is drawn on."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def plot_cmc(
    results: Mapping[str, RankResult] | RankResult,
    path: str | os.PathLike,
    *,
    max_rank: int | None = None,
    title: str = "CMC curve",
) -> Path:
    """Draw one CMC curve per result (rank on x, matching rate in % on y) and save a PNG.

    Args:
        results: a [`RankResult`] or a mapping ``name -> RankResult`` (one curve each; the legend
            shows each curve's rank-1 and mAP).
        path: output file (``.png``); parent folders are created.
        max_rank: last rank shown (default: the longest curve).
        title: figure title.

    Returns:
        The path written.
    """
    if isinstance(results, RankResult):
        results = {"": results}
    if not results:
        raise ValueError("`results` is empty; pass at least one RankResult.")
    for name, result in results.items():
        if not isinstance(result, RankResult):
            raise TypeError(f"`results[{name!r}]` is a {type(result).__name__}, expected a RankResult.")
    longest = max(len(result.cmc) for result in results.values())
    max_rank = longest if max_rank is None else min(int(max_rank), longest)
    if max_rank < 1:
        raise ValueError(f"`max_rank` must be positive, got {max_rank}.")

    figure = headless_figure(6.4, 4.4)
    axes = figure.add_subplot(1, 1, 1)
    for name, result in results.items():
        ranks = np.arange(1, min(max_rank, len(result.cmc)) + 1)
        label = f"R1 {100 * result.cmc[0]:.1f}%, mAP {100 * result.mAP:.1f}%"
        label = f"{name} ({label})" if name else label
        axes.plot(
            ranks,
            100 * result.cmc[: len(ranks)],
            marker="o" if max_rank <= 20 else None,
            markersize=3,
            label=label,
        )
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("Rank")
    axes.set_ylabel("Matching rate (%)")
    axes.set_xlim(1, max(max_rank, 2))
    axes.set_ylim(0, 101.5)  # a curve at 100% stays visible above the frame
    axes.grid(True, alpha=0.3)
    axes.set_title(title)
    axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    return _save(figure, path)


def plot_ranked_list(
    query_images: Sequence[Image.Image | str | os.PathLike],
    gallery_images: Sequence[Image.Image | str | os.PathLike],
    ranked_indices: np.ndarray | Sequence[Sequence[int]],
    matches: np.ndarray | Sequence[Sequence[bool]],
    path: str | os.PathLike,
    top_k: int = 10,
    *,
    distances: np.ndarray | None = None,
    image_size: tuple[int, int] = (64, 128),
) -> Path:
    """Draw each query next to its top-k gallery images, with green (match) or red borders.

    Args:
        query_images: one image (PIL image or file path) per row.
        gallery_images: the whole gallery, indexed by ``ranked_indices``.
        ranked_indices: ``(num_queries, >= top_k)`` gallery indices, best first (e.g. from
            ``GalleryIndex.search`` or ``np.argsort(distmat, axis=1)``).
        matches: ``(num_queries, >= top_k)`` booleans, True where the ranked image is a true
            match of the query.
        path: output file (``.png``); parent folders are created.
        top_k: gallery images shown per query.
        distances: optional ``(num_queries, >= top_k)`` distances, printed under each image.
        image_size: ``(width, height)`` every crop is resized to.

    Returns:
        The path written.
    """
    ranked_indices = np.asarray(ranked_indices)
    matches = np.asarray(matches)
    num_queries = len(query_images)
    if num_queries == 0:
        raise ValueError("`query_images` is empty.")
    for name, array in (("ranked_indices", ranked_indices), ("matches", matches)):
        if array.ndim != 2 or array.shape[0] != num_queries or array.shape[1] < top_k:
            raise ValueError(
                f"`{name}` must have shape (num_queries={num_queries}, >= top_k={top_k}), got {array.shape}."
            )
    if distances is not None and (np.shape(distances)[0] != num_queries or np.shape(distances)[1] < top_k):
        raise ValueError(
            f"`distances` must have shape ({num_queries}, >= {top_k}), got {np.shape(distances)}."
        )
    if ranked_indices.size and (
        ranked_indices[:, :top_k].min() < 0 or ranked_indices[:, :top_k].max() >= len(gallery_images)
    ):
        raise ValueError(f"`ranked_indices` must index `gallery_images` (0 .. {len(gallery_images) - 1}).")

    width, height = image_size
    figure = headless_figure((top_k + 1) * width / 55 + 0.4, num_queries * (height / 55 + 0.35))
    grid = figure.add_gridspec(num_queries, top_k + 1, wspace=0.08, hspace=0.15)
    for row in range(num_queries):
        cells = [(query_images[row], QUERY_COLOR, "query")]
        for rank in range(top_k):
            caption = f"#{rank + 1}"
            if distances is not None:
                caption += f" {float(np.asarray(distances)[row, rank]):.3f}"
            color = MATCH_COLOR if bool(matches[row, rank]) else MISMATCH_COLOR
            cells.append((gallery_images[int(ranked_indices[row, rank])], color, caption))
        for column, (image, color, caption) in enumerate(cells):
            axes = figure.add_subplot(grid[row, column])
            axes.imshow(_framed(image, color, image_size))
            axes.set_axis_off()
            axes.set_title(caption, fontsize=7, color=np.array(color) / 255, pad=2)
    return _save(figure, path, tight=True)


def _framed(
    image: Image.Image | str | os.PathLike, color: tuple[int, int, int], size: tuple[int, int]
) -> Image.Image:
    """The image resized to ``size`` inside a coloured border."""
    if not isinstance(image, Image.Image):
        try:
            with Image.open(image) as opened:
                image = opened.convert("RGB")
        except (OSError, ValueError) as error:
            raise ValueError(f"Cannot read image {image!s}: {error}") from error
    image = image.convert("RGB").resize(size, Image.BILINEAR)
    border = max(2, size[0] // 16)
    return ImageOps.expand(image, border=border, fill=color)


def _save(figure, path: str | os.PathLike, tight: bool = False) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        figure.savefig(path, format="png", bbox_inches="tight", pad_inches=0.05)
    else:
        figure.savefig(path, format="png")
    return path
