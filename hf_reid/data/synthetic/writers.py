"""Render planned images and write them, with their text files, into the dataset layouts.

Rendering is spread over worker processes in fixed chunks; each image is a pure function of its
:class:`~.layouts.ImagePlan` (its own seed) and of the run's identities and cameras, so the
files are byte-identical whatever the number of workers.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .cameras import CameraStyle
from .identities import Identity
from .layouts import ImagePlan, LayoutPlan
from .render import PedestrianRenderer

logger = logging.getLogger(__name__)

JPEG_QUALITY = 90
_CHUNK = 48


@dataclass(frozen=True)
class RenderContext:
    """What every worker needs besides the image plans themselves."""

    seed: int
    image_size: tuple[int, int]
    out_dir: str
    identities: dict[int, Identity]
    cameras: dict[str, CameraStyle]


def encode_image(image: ImagePlan, context: RenderContext, renderer: PedestrianRenderer) -> bytes:
    """Render ``image`` and encode it as its file's bytes (PNG for ``.png`` paths, else JPEG)."""
    pixels = renderer.render(
        context.identities[image.identity],
        context.cameras[image.camera],
        np.random.default_rng(image.seed),
        outfit=image.outfit,
        junk=image.junk,
        view=image.view,
    )
    if image.lowres > 1:
        h, w = context.image_size
        pixels = pixels.resize((round(w / image.lowres), round(h / image.lowres)), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    if image.path.endswith(".png"):
        pixels.save(buffer, format="PNG", compress_level=1)
    else:
        pixels.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


_WORKER: tuple[RenderContext, PedestrianRenderer] | None = None


def _init_worker(context: RenderContext) -> None:
    global _WORKER
    _WORKER = (context, PedestrianRenderer(context.image_size, context.seed))


def _render_chunk(images: list[ImagePlan]) -> int:
    assert _WORKER is not None, "worker not initialised"
    context, renderer = _WORKER
    root = Path(context.out_dir)
    for image in images:
        (root / image.path).write_bytes(encode_image(image, context, renderer))
    return len(images)


def _pool_context() -> multiprocessing.context.BaseContext:
    # fork starts workers in milliseconds on Linux; elsewhere use the platform default.
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context()


def write_layouts(
    plans: list[LayoutPlan], out_dir: Path, seed: int, image_size: tuple[int, int], num_workers: int = 2
) -> int:
    """Render every planned image and write the layouts' text files under ``out_dir``.

    Returns the number of images written.
    """
    images = [image for plan in plans for image in plan.images]
    context = RenderContext(
        seed=seed,
        image_size=image_size,
        out_dir=str(out_dir),
        identities={uid: ident for plan in plans for uid, ident in plan.identities.items()},
        cameras={key: camera for plan in plans for key, camera in plan.cameras.items()},
    )
    for folder in sorted({str(Path(image.path).parent) for image in images}):
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
    for plan in plans:
        for relative, text in plan.text_files.items():
            path = out_dir / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")

    chunks = [images[i : i + _CHUNK] for i in range(0, len(images), _CHUNK)]
    done, step = 0, max(1, len(images) // 10)
    if num_workers <= 1:
        _init_worker(context)
        results = map(_render_chunk, chunks)
        for count in results:
            done = _progress(done, count, len(images), step)
        return done
    with ProcessPoolExecutor(
        max_workers=num_workers, mp_context=_pool_context(), initializer=_init_worker, initargs=(context,)
    ) as pool:
        for count in pool.map(_render_chunk, chunks):
            done = _progress(done, count, len(images), step)
    return done


def _progress(done: int, count: int, total: int, step: int) -> int:
    if (done + count) // step != done // step or done + count == total:
        logger.info("SynthPeds: rendered %d / %d images", done + count, total)
    return done + count
