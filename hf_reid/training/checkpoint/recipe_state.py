"""A recipe's own training state (pseudo-labels, a cluster memory, ...) in a checkpoint.

Objects with ``state_dict()`` / ``load_state_dict`` (:class:`Stateful`) are stored as
``recipe_state.json`` + ``recipe_state.safetensors``: JSON values with the tensors apart, nothing
pickled (see :mod:`.codec`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from .codec import _join_tensors, _split_tensors
from .errors import CheckpointError
from .file_io import _load_safetensors, _read_json, _write_json
from .layout import RECIPE_STATE_NAME


@runtime_checkable
class Stateful(Protocol):
    """A recipe's own training state (pseudo-labels, a cluster memory, ...) that checkpoints
    carry: ``state_dict()`` returns a nested dict of tensors, numbers, strings, booleans, ``None``
    and lists / dicts of them; ``load_state_dict`` takes it back. Nothing is pickled."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


def save_recipe_state(folder: str | os.PathLike, objects: Mapping[str, Stateful]) -> None:
    """Write the ``state_dict()`` of every object into ``folder/recipe_state.{json,safetensors}``."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    plain = {name: _split_tensors(obj.state_dict(), name, tensors) for name, obj in objects.items()}
    folder = Path(folder)
    save_file(tensors, str(folder / f"{RECIPE_STATE_NAME}.safetensors"))
    _write_json(folder / f"{RECIPE_STATE_NAME}.json", plain)


def load_recipe_state(folder: str | os.PathLike, objects: Mapping[str, Stateful]) -> None:
    """Restore every object from ``folder`` (see :func:`save_recipe_state`); an object the
    checkpoint does not hold is an error naming it."""
    if not objects:
        return
    folder = Path(folder)
    source = folder / f"{RECIPE_STATE_NAME}.json"
    if not source.is_file():
        raise FileNotFoundError(
            f"{folder} holds no recipe state ({source.name}), but this run has state objects "
            f"{sorted(objects)}; was it written by another recipe?"
        )
    plain = _read_json(source)
    if not isinstance(plain, dict):
        raise CheckpointError(f"{source} must hold a JSON object, got {type(plain).__name__}.")
    tensors = _load_safetensors(folder / f"{RECIPE_STATE_NAME}.safetensors")
    missing = sorted(set(objects) - set(plain))
    if missing:
        raise ValueError(f"{source} has no state for {missing} (it has {sorted(plain)}).")
    for name, obj in objects.items():
        obj.load_state_dict(_join_tensors(plain[name], tensors, str(source)))
