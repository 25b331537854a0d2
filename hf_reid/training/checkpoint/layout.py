"""Names of the files and folders of a checkpoint (the layout is drawn in the package docstring).

Kept in one place so that the writers, the readers, the checksum list and the folder listing
agree on every name.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

CHECKPOINTS_DIR = "checkpoints"
TRAINER_STATE_NAME = "trainer_state.json"
CHECKSUMS_NAME = "checksums.json"
RUN_NAME = "run.json"
RECIPE_STATE_NAME = "recipe_state"
"""Stem of the recipe-state files of a checkpoint (``.json`` and ``.safetensors``)."""
SCHEDULERS_NAME = "schedulers"
"""Stem of the scheduler / registered-object files of a checkpoint (``.json``, ``.safetensors``)."""
SCALER_NAME = "scaler.json"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)(?:-[A-Za-z0-9_.-]+)?$")
_TMP_PREFIX = ".tmp-"


def _checkpoints_root(output_dir: str | os.PathLike) -> Path:
    """``output_dir/checkpoints``; also accepts that folder itself."""
    path = Path(output_dir)
    return path if path.name == CHECKPOINTS_DIR else path / CHECKPOINTS_DIR


def _indexed(stem: str, index: int, suffix: str) -> str:
    return f"{stem}{suffix}" if index == 0 else f"{stem}_{index}{suffix}"
