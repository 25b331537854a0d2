"""The run a checkpoint belongs to: its seed and the settings that define its training.

:class:`RunIdentity` gives the fingerprint that every checkpoint records (``trainer_state.json``)
with the values (``run.json``); :func:`_mismatch_details` says how another run's checkpoint
differs from this run, for the errors that refuse to mix two runs in one folder.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CheckpointError
from .file_io import _read_json
from .layout import RUN_NAME
from .trainer_state import TrainerState


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


@dataclass(frozen=True)
class RunIdentity:
    """What makes a run this run: its seed and the settings that define its training.

    ``config`` is any JSON-able mapping: a recipe passes its config without the fields that do
    not change the training (see :func:`~hf_reid.training.recipe_run.run_fingerprint_config`);
    a bare :class:`~hf_reid.training.loop.StageRunner` uses its stage names. The
    :attr:`fingerprint` is a hash of both; checkpoints record it in ``trainer_state.json`` and
    the values in ``run.json``.
    """

    seed: int | None
    config: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:  # canonical JSON values (tuples -> lists), so that a record read back compares equal
            plain = json.loads(json.dumps(dict(self.config)))
        except (TypeError, ValueError) as err:
            raise TypeError(f"RunIdentity: the run config must be JSON values ({err}).") from err
        object.__setattr__(self, "config", plain)

    @property
    def fingerprint(self) -> str:
        text = json.dumps({"seed": self.seed, "config": self.config}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "seed": self.seed, "config": self.config}

    @classmethod
    def from_dict(cls, data: Any, source: str = RUN_NAME) -> RunIdentity:
        if not isinstance(data, dict) or "seed" not in data or not isinstance(data.get("config"), dict):
            raise CheckpointError(f"{source} is not a run record (it needs 'seed' and 'config').")
        return cls(seed=data["seed"], config=data["config"])

    def differences(self, other: RunIdentity, limit: int = 5) -> list[str]:
        """``field: <self's value> -> <other's value>`` for every config field that differs
        (the first ``limit``, then a count); the seed is not among them."""
        mine, theirs = _flatten(self.config), _flatten(other.config)
        missing = object()
        diffs = [
            f"{key}: {_short(mine.get(key, missing))} -> {_short(theirs.get(key, missing))}"
            for key in sorted(set(mine) | set(theirs))
            if mine.get(key, missing) != theirs.get(key, missing)
        ]
        if len(diffs) > limit:
            diffs = [*diffs[:limit], f"and {len(diffs) - limit} more"]
        return diffs


def _short(value: Any) -> str:
    if not isinstance(value, (type(None), bool, int, float, str, list, dict)):
        return "(unset)"
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _read_run(checkpoint: Path) -> RunIdentity | None:
    try:
        return RunIdentity.from_dict(_read_json(checkpoint / RUN_NAME), str(checkpoint / RUN_NAME))
    except (CheckpointError, FileNotFoundError, TypeError):
        return None


def _mismatch_details(checkpoint: Path, state: TrainerState, run: RunIdentity) -> str:
    """``that run has seed 0, this run has seed 1; the configs differ (...)`` for the run that
    wrote ``checkpoint`` (its ``run.json``; the seed in ``trainer_state.json`` without one)."""
    other = _read_run(checkpoint)
    seed = other.seed if other is not None else state.seed
    text = f"that run has seed {seed}, this run has seed {run.seed}"
    diffs = other.differences(run) if other is not None else []
    if diffs:
        text += "; the configs differ (that run -> this run): " + "; ".join(diffs)
    elif state.run_fingerprint is None:
        text += " (that run was written by an hf_reid that did not record its config)"
    elif seed == run.seed:
        text += "; the configs differ"
    return text
