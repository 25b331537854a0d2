"""``synthpeds_manifest.json``: what a SynthPeds run wrote, and whether it finished.

Two promises rest on this file (issue #16, "nothing lost, nothing mixed"):

- **Overwrite removes only what SynthPeds wrote.** The manifest lists every file and folder the
  generator created in the output folder; ``overwrite`` deletes exactly those and refuses to
  touch anything else (a user's own ``ltcc/`` or ``README.md`` is never removed).
- **Data is complete or absent.** A run renders into a temporary folder and is moved into place
  when complete; the manifest is the last file to arrive and says ``"complete": true``. While
  an existing folder is being replaced, the manifest there says ``"complete": false``. Loaders
  (the ``synthpeds`` layout, ``load_synthpeds_domains``) refuse a domain whose run folder holds
  no complete manifest listing it, naming the folder and the command that regenerates it.

Folders written by hf_reid before the manifest existed hold ``synthpeds_meta.json``, which
those versions wrote last: its presence (without a manifest) still marks a complete run.

This module only uses the standard library, so the dataset loaders can import it cheaply.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

MANIFEST_FILE = "synthpeds_manifest.json"
MANIFEST_VERSION = 1
LEGACY_META_FILE = "synthpeds_meta.json"
"""The meta file; without a manifest, its presence marks a run of an earlier hf_reid version
as complete (those versions wrote it last)."""
PARTIAL_PREFIX = ".synthpeds-partial-"
"""Name prefix of the temporary folder a run renders into (inside an existing output folder,
or ``.<name>.synthpeds-partial-*`` beside a new one)."""


RUN_SETTINGS = ("preset", "seed", "image_size", "layouts")
CAPTIONED_SETTINGS = ("captioned_styles", "captioned_identities")
"""Options of the captioned single-camera set; a run records them (in its meta and manifest) only
when they differ from the defaults, so default runs keep the files they had before the options."""


class ManifestError(ValueError):
    """A manifest that cannot be read or lists paths outside its folder; names the file."""


def build_manifest(files: Iterable[str], *, complete: bool, settings: dict[str, Any]) -> dict[str, Any]:
    """The manifest of a run that writes ``files`` (posix paths relative to the output folder).

    ``entries`` are the top-level names (what the output folder gains), ``folders`` every
    folder the run creates (removed, deepest first, once empty), ``files`` every file.
    ``settings`` (preset, seed, image size, layouts, and the captioned set's options where a run
    records them: only when they are not the defaults) go into the regenerate hint of errors.
    """
    files = sorted(set(files))
    folders = sorted(
        {str(parent) for f in files for parent in PurePosixPath(f).parents if str(parent) != "."}
    )
    entries = sorted({PurePosixPath(f).parts[0] for f in files})
    return {
        "generator": "hf_reid.data.synthetic",
        "version": MANIFEST_VERSION,
        "complete": complete,
        "settings": {key: settings[key] for key in (*RUN_SETTINGS, *CAPTIONED_SETTINGS) if key in settings},
        "entries": entries,
        "folders": folders,
        "files": files,
    }


def write_manifest(manifest: dict[str, Any], folder: Path) -> Path:
    """Write ``manifest`` into ``folder`` atomically (a temporary file renamed over the old one)."""
    path = folder / MANIFEST_FILE
    temporary = folder / f".{MANIFEST_FILE}.tmp"
    temporary.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return path


def _safe_relative(value: Any) -> bool:
    if not isinstance(value, str) or not value or "\\" in value or "\0" in value:
        return False
    path = PurePosixPath(value)
    return not path.is_absolute() and all(part not in ("", ".", "..") for part in path.parts)


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of ``folder``, or ``None`` when it has none.

    Raises:
        ManifestError: naming the file, when it is not valid JSON, is not a SynthPeds manifest,
            or lists a path that is absolute or leaves the folder (it is then never trusted to
            say what may be deleted).
    """
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ManifestError(
            f"{path} is not a readable SynthPeds manifest ({type(err).__name__}: {err})."
        ) from None
    if not isinstance(manifest, dict) or manifest.get("generator") != "hf_reid.data.synthetic":
        raise ManifestError(f"{path} is not a SynthPeds manifest (no 'generator': 'hf_reid.data.synthetic').")
    for key in ("entries", "folders", "files"):
        values = manifest.get(key)
        if not isinstance(values, list) or not all(_safe_relative(v) for v in values):
            raise ManifestError(
                f"{path}: '{key}' must be a list of relative paths inside {folder}; refusing to trust it."
            )
    if not isinstance(manifest.get("complete"), bool):
        raise ManifestError(f"{path}: 'complete' must be true or false.")
    return manifest


def regenerate_command(folder: Path, manifest: dict[str, Any] | None) -> str:
    """The ``hf-reid synth`` command that rewrites the run of ``folder`` (as far as it is known)."""
    parts = ["hf-reid synth", f"--out {folder}"]
    settings = (manifest or {}).get("settings") or {}
    if isinstance(settings.get("preset"), str):
        parts.append(f"--preset {settings['preset']}")
    if isinstance(settings.get("seed"), int):
        parts.append(f"--seed {settings['seed']}")
    size = settings.get("image_size")
    if isinstance(size, list) and len(size) == 2:
        parts.append(f"--image-size {size[0]}x{size[1]}")
    if isinstance(settings.get("layouts"), list):
        parts.append(f"--layouts {','.join(map(str, settings['layouts']))}")
    if isinstance(settings.get("captioned_styles"), str):
        parts.append(f"--captioned-styles {settings['captioned_styles']}")
    if isinstance(settings.get("captioned_identities"), int):
        parts.append(f"--captioned-identities {settings['captioned_identities']}")
    return " ".join(parts)


def run_problem(folder: Path) -> tuple[str, dict[str, Any] | None] | None:
    """Why ``folder`` does not hold a complete SynthPeds run (with its manifest), or ``None``.

    A complete manifest, or (folders of earlier hf_reid versions) a meta file without any
    manifest, marks a complete run.
    """
    folder = Path(folder)
    try:
        manifest = read_manifest(folder)
    except ManifestError as err:
        return str(err), None
    if manifest is None:
        if (folder / LEGACY_META_FILE).is_file():
            return None
        return (
            f"{folder} has no {MANIFEST_FILE} (nor {LEGACY_META_FILE}): an interrupted generation of an "
            "earlier hf_reid version, or a folder SynthPeds did not write. Delete it and regenerate "
            f"with `hf-reid synth --out {folder}`",
            None,
        )
    if not manifest["complete"]:
        return (
            f"{folder}/{MANIFEST_FILE} marks the run as incomplete (a generation was interrupted while "
            f"replacing it). Regenerate it with `{regenerate_command(folder, manifest)} --overwrite`",
            manifest,
        )
    return None


def domain_problem(domain_dir: Path) -> str | None:
    """Why the folder ``domain_dir`` is not a complete domain of a SynthPeds run, or ``None``.

    The run folder is ``domain_dir``'s parent; its manifest must be complete and list the
    domain among the entries it wrote.
    """
    domain_dir = Path(domain_dir)
    run = domain_dir.parent
    problem = run_problem(run)
    if problem is not None:
        return problem[0]
    manifest = read_manifest(run)
    if manifest is not None and domain_dir.name not in manifest["entries"]:
        domains = [e for e in manifest["entries"] if e.startswith("synthpeds_d")]
        return (
            f"{domain_dir.name} is not part of the SynthPeds run in {run} (its {MANIFEST_FILE} lists "
            f"the domains {domains}); it was written by something else or left by another run"
        )
    return None


def complete_domains(run: Path) -> list[str] | None:
    """Domain folder names the complete run in ``run`` wrote, or ``None`` for a run of an earlier
    hf_reid version (no manifest: every ``synthpeds_d*`` folder counts)."""
    manifest = read_manifest(run)
    if manifest is None:
        return None
    return [e for e in manifest["entries"] if e.startswith("synthpeds_d")]
