"""``generate_synthpeds``: plan, render and write a SynthPeds run into an output folder."""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .card import dataset_card
from .layouts import LAYOUT_NAMES, domain_name, plan_synthpeds, resolve_layouts
from .metadata import META_FILE, build_meta, preset_settings, read_meta, write_meta
from .presets import SynthPedsPreset, get_preset
from .writers import write_layouts

logger = logging.getLogger(__name__)

IMAGE_SIZES = ((128, 64), (256, 128))
"""Supported (height, width) crop sizes."""


@dataclass
class SynthPedsSummary:
    """What a :func:`generate_synthpeds` call wrote (or found already written)."""

    out_dir: Path
    preset: str
    seed: int
    image_size: tuple[int, int]
    layouts: tuple[str, ...]
    domains: tuple[str, ...]
    held_out_domain: str
    num_images: int
    counts: dict[str, dict[str, int]]
    seconds: float
    reused: bool = False
    meta_path: Path = field(default=Path())

    @property
    def images_per_second(self) -> float:
        """Generation speed of this call (0 when the run was reused)."""
        return self.num_images / self.seconds if self.seconds > 0 and not self.reused else 0.0

    def dataset_dir(self, dataset: str) -> Path:
        """The folder of one written dataset, e.g. ``summary.dataset_dir("ltcc")``."""
        if dataset not in self.counts:
            raise KeyError(
                f"{self.out_dir} has no SynthPeds dataset {dataset!r}; written: {sorted(self.counts)}"
            )
        return self.out_dir / dataset


def _settings(
    preset: SynthPedsPreset, seed: int, image_size: tuple[int, int], layouts: tuple[str, ...]
) -> dict[str, Any]:
    domains = [domain_name(k) for k in range(preset.num_domains)]
    return {
        "preset": preset.name,
        "seed": seed,
        "image_size": list(image_size),
        "layouts": list(layouts),
        "domains": domains,
        "held_out_domain": domains[-1],
        "source_domains": domains[:-1],
        "preset_settings": preset_settings(preset),
    }


def _summary(meta: dict[str, Any], out_dir: Path, seconds: float, reused: bool) -> SynthPedsSummary:
    return SynthPedsSummary(
        out_dir=out_dir,
        preset=meta["preset"],
        seed=meta["seed"],
        image_size=tuple(meta["image_size"]),
        layouts=tuple(meta["layouts"]),
        domains=tuple(meta["domains"]),
        held_out_domain=meta["held_out_domain"],
        num_images=meta["num_images"],
        counts=meta["counts"],
        seconds=seconds,
        reused=reused,
        meta_path=out_dir / META_FILE,
    )


def _owned_entries(out_dir: Path) -> list[Path]:
    """Entries of ``out_dir`` a SynthPeds run writes (and ``overwrite`` may delete)."""
    names = {*LAYOUT_NAMES, META_FILE, "README.md"} - {"market"}
    return [p for p in out_dir.iterdir() if p.name in names or p.name.startswith("synthpeds_d")]


def _reusable(out_dir: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    try:
        meta = read_meta(out_dir)
    except (FileNotFoundError, ValueError):
        return None
    same = all(meta.get(key) == value for key, value in settings.items())
    if same and all((out_dir / record["path"]).is_file() for record in meta["images"]):
        return meta
    return None


def generate_synthpeds(
    out_dir: str | os.PathLike,
    preset: str | SynthPedsPreset = "default",
    seed: int = 0,
    image_size: tuple[int, int] = (128, 64),
    layouts: list[str] | str | None = None,
    num_workers: int = 2,
    overwrite: bool = False,
) -> SynthPedsSummary:
    """Write the SynthPeds benchmark into ``out_dir`` in the real datasets' layouts.

    Args:
        out_dir: output folder; created if missing.
        preset: ``"tiny"`` (about 1.3k images, for tests), ``"default"`` (about 16k, the
            quickstart) or ``"full"`` (benchmarks), or a :class:`SynthPedsPreset`.
        seed: run seed; the same seed gives byte-identical files for any ``num_workers``.
        image_size: (height, width): (128, 64) or (256, 128).
        layouts: subset of ``market, ltcc, sysu_mm01, mlr_cuhk03, captions, pretrain`` (a list
            or a comma-separated string); ``None`` writes all.
        num_workers: rendering processes (0 or 1: render in this process).
        overwrite: replace an existing SynthPeds run in ``out_dir``. Without it, a folder that
            already holds exactly this run is reused and any other non-empty folder is an error.

    Returns:
        A :class:`SynthPedsSummary` with counts per dataset folder and split, and the speed.

    Raises:
        ValueError: unknown preset or layout, unsupported image size, negative seed.
        FileExistsError: ``out_dir`` is not empty and holds no identical run (pass ``overwrite``).
    """
    preset = get_preset(preset)
    if int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    image_size = tuple(int(v) for v in image_size)
    if image_size not in IMAGE_SIZES:
        raise ValueError(f"image_size must be one of {IMAGE_SIZES} (height, width), got {image_size}")
    chosen = resolve_layouts(layouts)
    settings = _settings(preset, int(seed), image_size, chosen)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(
            f"SynthPeds output {out_dir} exists and is not a folder; choose another --out."
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(out_dir.iterdir()):
        if not overwrite:
            meta = _reusable(out_dir, settings)
            if meta is not None:
                logger.info(
                    "SynthPeds: %s already holds this run (%d images); reusing it.",
                    out_dir,
                    meta["num_images"],
                )
                return _summary(meta, out_dir, 0.0, reused=True)
            raise FileExistsError(
                f"SynthPeds output folder {out_dir} is not empty and holds no identical run; pass "
                "overwrite=True (CLI: --overwrite) to replace it, or choose another folder."
            )
        for entry in _owned_entries(out_dir):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()

    start = time.perf_counter()
    plans = plan_synthpeds(int(seed), preset, chosen)
    logger.info(
        "SynthPeds: writing %d images (preset %s, seed %d, %dx%d) into %s with %d worker(s)",
        sum(len(p.images) for p in plans),
        preset.name,
        seed,
        *image_size,
        out_dir,
        num_workers,
    )
    write_layouts(plans, out_dir, int(seed), image_size, num_workers)
    meta = build_meta(plans, settings)
    (out_dir / "README.md").write_text(dataset_card(meta), encoding="utf-8")
    write_meta(meta, out_dir)  # last: a folder with a meta file holds a complete run
    seconds = time.perf_counter() - start
    summary = _summary(meta, out_dir, seconds, reused=False)
    logger.info(
        "SynthPeds: wrote %d images in %.1f s (%.0f images/s)",
        summary.num_images,
        seconds,
        summary.images_per_second,
    )
    return summary
