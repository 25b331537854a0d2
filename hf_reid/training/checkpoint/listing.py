"""The complete checkpoints of a run folder, oldest first, and the newest one.

A checkpoint is complete once its ``trainer_state.json`` is there (it is written last); folders
without it, from a crash during a save, are left out with a warning.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import CheckpointError
from .integrity import verify_checkpoint
from .layout import _CHECKPOINT_RE, CHECKPOINTS_DIR, TRAINER_STATE_NAME
from .log import _warn_once
from .trainer_state import TrainerState, read_trainer_state


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[Path, TrainerState]]:
    """Complete checkpoints of a run folder, oldest first (by global step, then stage).

    ``output_dir`` is the run folder (its ``checkpoints`` subfolder is listed) or a folder that
    holds ``checkpoint-*`` folders directly. A checkpoint is complete when its
    ``trainer_state.json`` is there and readable (the files are not checked here: see
    :func:`verify_checkpoint`); others are left out with a warning.
    """
    root = Path(output_dir)
    if (root / CHECKPOINTS_DIR).is_dir():
        root = root / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        if not child.is_dir() or not _CHECKPOINT_RE.match(child.name):
            continue
        if not (child / TRAINER_STATE_NAME).is_file():
            _warn_once(f"Ignoring incomplete checkpoint {child} (no {TRAINER_STATE_NAME}).")
            continue
        try:
            found.append((child, read_trainer_state(child)))
        except (CheckpointError, TypeError) as err:
            _warn_once(f"Ignoring checkpoint {child}: {err}")
    found.sort(key=lambda item: _order(item[1]))
    return found


def _order(state: TrainerState) -> tuple[int, int, bool]:
    return (state.global_step, state.stage_index, state.stage_completed)


def find_latest_checkpoint(output_dir: str | os.PathLike, *, verify: bool = False) -> str | None:
    """The newest complete checkpoint of a run (``output_dir`` or its ``checkpoints`` folder);
    with ``verify``, the newest that passes :func:`verify_checkpoint` (failures are warned)."""
    checkpoints = list_checkpoints(output_dir)
    if not verify:
        return str(checkpoints[-1][0]) if checkpoints else None
    for path, _ in reversed(checkpoints):
        try:
            verify_checkpoint(path)
        except CheckpointError as err:
            _warn_once(f"Skipping checkpoint {path}: {err}")
            continue
        return str(path)
    return None
