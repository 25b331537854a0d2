"""``generate_synthpeds``: plan, render and write a SynthPeds run into an output folder."""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .card import dataset_card
from .layouts import check_captioned, domain_name, plan_synthpeds, resolve_layouts
from .manifest import (
    CAPTIONED_SETTINGS,
    MANIFEST_FILE,
    PARTIAL_PREFIX,
    build_manifest,
    read_manifest,
    write_manifest,
)
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
    captioned_styles: str = "sources"
    captioned_identities: int | None = None
    """Identities of the captioned set (``None``: no captioned set written)."""

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
    preset: SynthPedsPreset,
    seed: int,
    image_size: tuple[int, int],
    layouts: tuple[str, ...],
    captioned: dict[str, Any] | None = None,
) -> dict[str, Any]:
    domains = [domain_name(k) for k in range(preset.num_domains)]
    return {
        "preset": preset.name,
        "seed": seed,
        "image_size": list(image_size),
        "layouts": list(layouts),
        **(captioned or {}),
        "domains": domains,
        "held_out_domain": domains[-1],
        "source_domains": domains[:-1],
        "preset_settings": preset_settings(preset),
    }


def captioned_options(
    preset: SynthPedsPreset, layouts: tuple[str, ...], styles: str = "sources", identities: int | None = None
) -> tuple[SynthPedsPreset, dict[str, Any]]:
    """The preset a run plans with (``caption_ids`` = ``identities``) and the captioned settings it
    records: only those that differ from the defaults, and none when the run writes no captioned
    set (the options then change nothing)."""
    check_captioned(styles, identities)
    if "captions" not in layouts:
        return preset, {}
    recorded: dict[str, Any] = {}
    if styles != "sources":
        recorded["captioned_styles"] = styles
    if identities is not None and int(identities) != preset.caption_ids:
        recorded["captioned_identities"] = int(identities)
        preset = dataclasses.replace(preset, caption_ids=int(identities))
    return preset, recorded


def run_captioned(meta: dict[str, Any]) -> tuple[str, int | None]:
    """(captioned styles, captioned identities) of the run whose meta or settings is ``meta``
    (identities ``None`` when it wrote no captioned set)."""
    if "captions" not in (meta.get("layouts") or []):
        return meta.get("captioned_styles", "sources"), None
    identities = meta.get("captioned_identities", (meta.get("preset_settings") or {}).get("caption_ids"))
    return meta.get("captioned_styles", "sources"), identities


def _summary(meta: dict[str, Any], out_dir: Path, seconds: float, reused: bool) -> SynthPedsSummary:
    styles, identities = run_captioned(meta)
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
        captioned_styles=styles,
        captioned_identities=identities,
    )


def _partial_folders(out_dir: Path) -> list[Path]:
    """Temporary folders of interrupted runs into ``out_dir`` whose process no longer runs."""
    candidates = []
    if out_dir.is_dir():
        candidates += out_dir.glob(f"{PARTIAL_PREFIX}*")
    if out_dir.parent.is_dir():
        candidates += out_dir.parent.glob(f".{glob.escape(out_dir.name)}{PARTIAL_PREFIX}*")
    stale = []
    for folder in candidates:
        pid = folder.name.rsplit(PARTIAL_PREFIX, 1)[1].split("-", 1)[0]
        ours = folder.is_dir() and not folder.is_symlink() and pid.isascii() and pid.isdigit()
        if ours and not _process_alive(int(pid)):
            stale.append(folder)
    return stale


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError):
        return True  # exists (another user's) or cannot tell: leave its folder alone
    return True


def _entries(out_dir: Path) -> list[str]:
    """Names in ``out_dir``, leaving out temporary folders of runs (ours or interrupted ones)."""
    if not out_dir.is_dir():
        return []
    return sorted(p.name for p in out_dir.iterdir() if not p.name.startswith(PARTIAL_PREFIX))


def _legacy_manifest(out_dir: Path) -> dict[str, Any] | None:
    """The manifest of a run written by hf_reid before manifests existed, rebuilt from its meta.

    Those versions wrote ``synthpeds_meta.json`` last, so its presence marks a complete run; the
    files it wrote are its images (listed in the meta) plus the text files its settings plan.
    ``None`` when the meta is missing or does not match what its settings plan.
    """
    try:
        meta = read_meta(out_dir)
        fields = {f.name for f in dataclasses.fields(SynthPedsPreset)}
        saved = meta["preset_settings"]
        preset = SynthPedsPreset(
            **{key: tuple(v) if isinstance(v, list) else v for key, v in saved.items() if key in fields}
        )
        plans = plan_synthpeds(
            int(meta["seed"]), preset, tuple(meta["layouts"]), meta.get("captioned_styles", "sources")
        )
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
    planned = [image.path for plan in plans for image in plan.images]
    if planned != [record["path"] for record in meta["images"]]:
        return None
    logger.info(
        "SynthPeds: %s has no %s (written by an earlier hf_reid); rebuilt the list of its files from %s.",
        out_dir,
        MANIFEST_FILE,
        META_FILE,
    )
    return build_manifest(_run_files(plans), complete=True, settings=meta)


def _run_files(plans: list) -> list[str]:
    """Every file a run of ``plans`` writes, relative to the output folder (manifest included)."""
    files = [image.path for plan in plans for image in plan.images]
    files += [relative for plan in plans for relative in plan.text_files]
    return [*files, "README.md", META_FILE, MANIFEST_FILE]


def _owned(out_dir: Path) -> dict[str, Any] | None:
    """What the run in ``out_dir`` wrote: its manifest, or one rebuilt for an older run."""
    manifest = read_manifest(out_dir)  # ManifestError (a ValueError) names an unusable file
    return manifest if manifest is not None else _legacy_manifest(out_dir)


def _check_replaceable(out_dir: Path, owned: dict[str, Any] | None, new_files: list[str]) -> None:
    """Refuse an overwrite that would remove, replace or mix with anything SynthPeds did not write.

    Raises:
        FileExistsError: naming ``out_dir`` and the entries in the way: top-level entries the
            new run writes that no manifest lists, or files SynthPeds did not write inside the
            folders it did (they would be mixed into the new run's data).
    """
    owned_entries = set(owned["entries"]) if owned else set()
    new_entries = {PurePosixPath(f).parts[0] for f in new_files}
    existing = _entries(out_dir)
    conflicts = sorted(name for name in existing if name in new_entries and name not in owned_entries)
    manifest_note = (
        f"its {MANIFEST_FILE} does not list them"
        if owned
        else f"it holds no {MANIFEST_FILE} saying what SynthPeds wrote"
    )
    if conflicts:
        raise FileExistsError(
            f"SynthPeds output folder {out_dir} holds {', '.join(conflicts)}, which SynthPeds did not "
            f"write ({manifest_note}); --overwrite only replaces what a SynthPeds manifest lists. Move "
            "them away or choose another --out; nothing was changed."
        )
    if not owned:
        return
    owned_files, owned_folders = set(owned["files"]), set(owned["folders"])
    foreign = []
    for entry in sorted(owned_entries & set(existing)):
        path = out_dir / entry
        if path.is_symlink() or (path.is_dir() and entry not in owned_folders):
            foreign.append(entry)
        elif path.is_dir():
            for root, dirs, files in os.walk(path):  # does not follow links: they are reported
                for name in sorted(files):
                    relative = Path(root, name).relative_to(out_dir).as_posix()
                    if relative not in owned_files:
                        foreign.append(relative)
                for name in sorted(dirs):
                    relative = Path(root, name).relative_to(out_dir).as_posix()
                    if relative not in owned_folders or Path(root, name).is_symlink():
                        foreign.append(relative)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" (and {len(foreign) - 5} more)" if len(foreign) > 5 else "")
        raise FileExistsError(
            f"SynthPeds output folder {out_dir}: {shown} inside folders SynthPeds wrote are not in its "
            f"{MANIFEST_FILE}; --overwrite would mix them into the new run. Move them away first; "
            "nothing was changed."
        )


def _remove_owned(out_dir: Path, owned: dict[str, Any]) -> None:
    """Delete exactly the files and (then empty) folders ``owned`` lists."""
    for relative in owned["files"]:
        path = out_dir / relative
        if path.is_file() or path.is_symlink():
            path.unlink()
    for relative in sorted(owned["folders"], key=lambda f: f.count("/"), reverse=True):
        path = out_dir / relative
        if path.is_dir() and not path.is_symlink():
            path.rmdir()  # empty by now: _check_replaceable found no foreign files in it


def _move_into_place(partial: Path, out_dir: Path, owned: dict[str, Any] | None, manifest: dict) -> None:
    """Put the complete run in ``partial`` at ``out_dir``: complete or absent at every moment.

    A new ``out_dir`` is one rename. Into an existing folder, a manifest marking the run
    incomplete (listing the old and the new files, so an interrupted swap can be overwritten)
    goes first, then the old run's files go, the new entries are renamed in, and the complete
    manifest arrives last.
    """
    if partial.parent != out_dir:
        try:
            partial.rename(out_dir)
        except OSError as err:  # another process created out_dir meanwhile (rename needs it absent or empty)
            raise FileExistsError(
                f"SynthPeds output folder {out_dir} was created by something else while this run was being "
                f"generated ({err.strerror}); nothing of this run was written there."
            ) from None
        return
    pending = build_manifest(
        [*(owned["files"] if owned else []), *manifest["files"]],
        complete=False,
        settings=manifest["settings"],
    )
    write_manifest(pending, out_dir)
    if owned:
        _remove_owned(out_dir, {**owned, "files": [f for f in owned["files"] if f != MANIFEST_FILE]})
    for entry in manifest["entries"]:
        if entry != MANIFEST_FILE:
            (partial / entry).rename(out_dir / entry)
    os.replace(partial / MANIFEST_FILE, out_dir / MANIFEST_FILE)
    partial.rmdir()


def _partial_folder(out_dir: Path) -> Path:
    """A new temporary folder for a run into ``out_dir``, on the same file system.

    Beside ``out_dir`` when it does not exist yet (renamed into place at the end), else inside
    it (its entries are renamed into place); the name carries this process id, so a later run
    can tell an interrupted run's folder from a live one.
    """
    name = f"{PARTIAL_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    if out_dir.is_dir():
        partial = out_dir / name
    else:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        partial = out_dir.parent / f".{out_dir.name}{name}"
    partial.mkdir()  # not tempfile.mkdtemp: its 0700 mode would stay on the renamed output folder
    return partial


def _reusable(out_dir: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    try:
        manifest = read_manifest(out_dir)
        meta = read_meta(out_dir)
    except (FileNotFoundError, ValueError):
        return None
    if manifest is not None and not manifest["complete"]:
        return None
    same = all(meta.get(key) == value for key, value in settings.items())
    # Compared both ways: a default request (which records none of them) must not reuse a folder
    # made with other captioned options.
    same = same and all(meta.get(key) == settings.get(key) for key in CAPTIONED_SETTINGS)
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
    captioned_styles: str = "sources",
    captioned_identities: int | None = None,
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
        overwrite: replace an existing SynthPeds run in ``out_dir``: only the files and folders
            its ``synthpeds_manifest.json`` lists are removed; other entries are left alone, and
            the call is refused (nothing changed) when the new run would write over, or mix
            with, anything SynthPeds did not write. Without it, a folder that already holds
            exactly this run is reused and any other non-empty folder is an error.
        captioned_styles: camera styles of the single-camera captioned set: ``"sources"`` (9
            cameras drawn from the source domains' styles; the default, and the set as it was
            before this option) or ``"diverse"`` (every identity filmed by a camera of its own,
            at a place of its own: a designed style other than the held-out domain's with every
            range moved, and never within ``HELD_OUT_MARGIN`` of the held-out domain's style
            distribution; the same people with the same image counts as ``"sources"``).
        captioned_identities: identities of the captioned set (``None``: the preset's
            ``caption_ids``). Both options are recorded in ``synthpeds_meta.json`` and the
            manifest when they differ from the defaults, and a folder is only reused for the
            same options.

    The run renders into a temporary folder and is moved into place once complete, with
    ``synthpeds_manifest.json`` (the completion marker the loaders check) arriving last: an
    interrupted run leaves ``out_dir`` as it was (a new folder absent, an existing one marked
    incomplete), never half-written data that loads.

    Returns:
        A :class:`SynthPedsSummary` with counts per dataset folder and split, and the speed.

    Raises:
        ValueError: unknown preset or layout, unsupported image size, negative seed, an
            unreadable manifest (:class:`~.manifest.ManifestError`, naming it).
        FileExistsError: ``out_dir`` is not empty and holds no identical run (pass
            ``overwrite``), or ``overwrite`` would touch entries SynthPeds did not write (named).
    """
    preset = get_preset(preset)
    if int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    image_size = tuple(int(v) for v in image_size)
    if image_size not in IMAGE_SIZES:
        raise ValueError(f"image_size must be one of {IMAGE_SIZES} (height, width), got {image_size}")
    chosen = resolve_layouts(layouts)
    preset, captioned = captioned_options(preset, chosen, captioned_styles, captioned_identities)
    settings = _settings(preset, int(seed), image_size, chosen, captioned)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(
            f"SynthPeds output {out_dir} exists and is not a folder; choose another --out."
        )
    for stale in _partial_folders(out_dir):
        logger.warning("SynthPeds: removing %s, left by an interrupted generation.", stale)
        shutil.rmtree(stale, ignore_errors=True)
    owned = None
    if _entries(out_dir):
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
        owned = _owned(out_dir)

    start = time.perf_counter()
    plans = plan_synthpeds(int(seed), preset, chosen, captioned_styles)
    new_files = _run_files(plans)
    if _entries(out_dir):
        _check_replaceable(out_dir, owned, new_files)  # before any work: nothing is changed
    logger.info(
        "SynthPeds: writing %d images (preset %s, seed %d, %dx%d) into %s with %d worker(s)",
        sum(len(p.images) for p in plans),
        preset.name,
        seed,
        *image_size,
        out_dir,
        num_workers,
    )
    partial = _partial_folder(out_dir)
    try:
        write_layouts(plans, partial, int(seed), image_size, num_workers)
        meta = build_meta(plans, settings)
        (partial / "README.md").write_text(dataset_card(meta), encoding="utf-8")
        write_meta(meta, partial)
        manifest = build_manifest(new_files, complete=True, settings=settings)
        write_manifest(manifest, partial)  # last: a folder with a complete manifest holds a complete run
        _move_into_place(partial, out_dir, owned, manifest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    seconds = time.perf_counter() - start
    summary = _summary(meta, out_dir, seconds, reused=False)
    logger.info(
        "SynthPeds: wrote %d images in %.1f s (%.0f images/s)",
        summary.num_images,
        seconds,
        summary.images_per_second,
    )
    return summary
