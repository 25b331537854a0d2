"""Checksums of a checkpoint and their verification.

``checksums.json`` lists the size and sha256 of every file (written once all of them are
complete, before ``trainer_state.json``); :func:`verify_checkpoint` checks them all before
anything is loaded and remembers the result while the folder's files stay unchanged. Loading
reads only files the list holds (:func:`_listed`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import CheckpointError
from .file_io import _read_json
from .layout import CHECKSUMS_NAME, TRAINER_STATE_NAME
from .trainer_state import TrainerState, read_trainer_state


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _write_checksums(folder: Path) -> None:
    """``checksums.json``: size and sha256 of every file of ``folder`` (all but itself and
    ``trainer_state.json``, which come after)."""
    files = {}
    for path in sorted(folder.iterdir()):
        if path.name in (CHECKSUMS_NAME, TRAINER_STATE_NAME) or not path.is_file():
            continue
        files[path.name] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    with open(folder / CHECKSUMS_NAME, "w", encoding="utf-8") as handle:
        handle.write(json.dumps({"algorithm": "sha256", "files": files}, indent=1) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


_verified: dict[str, tuple[tuple, CheckpointError | None]] = {}
"""Checkpoint folder -> (file sizes and mtimes, result of its last verification)."""


def _listing(folder: Path) -> tuple:
    try:
        return tuple(
            sorted(
                (e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(folder) if e.is_file()
            )
        )
    except OSError:
        return ()


def _manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """The files listed in ``checksums.json`` (``name -> {"size", "sha256"}``), checked for form."""
    path = folder / CHECKSUMS_NAME
    if not path.is_file():
        raise CheckpointError(
            f"{path} is missing: an incomplete checkpoint, or one written before checkpoints carried "
            "checksums (with Accelerate's pickle files, which resume no longer loads)."
        )
    data = _read_json(path)
    files = data.get("files") if isinstance(data, dict) else None
    if (
        not isinstance(files, dict)
        or data.get("algorithm") != "sha256"
        or not all(
            isinstance(name, str)
            and name == Path(name).name
            and name not in ("", ".", "..")
            and isinstance(entry, dict)
            and isinstance(entry.get("size"), int)
            and isinstance(entry.get("sha256"), str)
            for name, entry in files.items()
        )
    ):
        raise CheckpointError(f"{path} is not a checksum list of this folder's files; refusing to trust it.")
    return files


def verify_checkpoint(checkpoint: str | os.PathLike) -> TrainerState:
    """Check that ``checkpoint`` is complete and intact: ``trainer_state.json`` reads, and every
    file ``checksums.json`` lists is there with its size and sha256. Returns the trainer state;
    raises :class:`CheckpointError` (``FileNotFoundError`` for a folder without
    ``trainer_state.json``) naming the first file that fails.

    The result is remembered per folder while its files keep their sizes and times.
    """
    folder = Path(checkpoint)
    key = str(folder.resolve())
    listing = _listing(folder)
    cached = _verified.get(key)
    state = read_trainer_state(folder)  # FileNotFoundError: incomplete; read anew (callers change it)
    if cached is not None and cached[0] == listing:
        if cached[1] is not None:
            raise cached[1]
        return state
    try:
        for name, entry in _manifest(folder).items():
            path = folder / name
            if not path.is_file():
                raise CheckpointError(f"{path} is missing (listed in {CHECKSUMS_NAME}).")
            size = path.stat().st_size
            if size != entry["size"]:
                raise CheckpointError(
                    f"{path} has {size} bytes, {entry['size']} expected: the file is truncated or replaced."
                )
            if _sha256(path) != entry["sha256"]:
                raise CheckpointError(
                    f"{path} does not match its sha256 in {CHECKSUMS_NAME}: the file is corrupt."
                )
    except CheckpointError as err:
        _verified[key] = (listing, err)
        raise
    _verified[key] = (listing, None)
    return state


def _listed(folder: Path, name: str, manifest: Mapping[str, Any], what: str) -> Path:
    """``folder/name`` if the checksum list holds it; a named error otherwise (never reads a
    file that was not verified)."""
    if name not in manifest:
        raise CheckpointError(
            f"{folder} has no {name} ({what}); was it saved with other models, optimizers or "
            "schedulers prepared than this run has?"
        )
    return folder / name
