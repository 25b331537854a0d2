"""Readers and writers of single JSON and safetensors files of a checkpoint.

A file that does not read is a :class:`CheckpointError` naming it (a missing one stays a
``FileNotFoundError``), so that a corrupt checkpoint is reported by its file, not by a
traceback from the JSON or safetensors library.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CheckpointError(f"{path} is not readable JSON ({type(err).__name__}: {err}).") from err


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as err:  # SafetensorError, OSError: a truncated or foreign file
        raise CheckpointError(f"{path} is not a readable safetensors file ({err}).") from err


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
