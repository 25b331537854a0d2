"""Where training stands (:class:`TrainerState`), stored as ``trainer_state.json``.

The file is written last into a checkpoint and so marks it complete; reading it is strict (an
unknown field is an error) so that a folder written by another tool is not taken for one.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CheckpointError
from .layout import TRAINER_STATE_NAME


@dataclass
class TrainerState:
    """Where training stands; stored as ``trainer_state.json`` in every checkpoint.

    The RNG states are not in this file: every process writes its own
    (``random_states_<rank>.json``) next to it and :func:`load_checkpoint` restores them.
    """

    stage: str = ""
    """Name of the current (or last) stage."""
    stage_index: int = -1
    """Position of ``stage`` in the recipe's stage list."""
    epoch: int = 0
    """Epochs of the current stage that are finished."""
    batch_in_epoch: int = 0
    """Batches of the running epoch already trained (a resume skips them)."""
    stage_step: int = 0
    """Optimizer steps in the current stage."""
    global_step: int = 0
    """Optimizer steps over all stages; names the checkpoints."""
    stage_completed: bool = False
    """True once every epoch of ``stage`` ran."""
    epoch_offset: int = 0
    """Added to ``epoch`` for the data pipeline's epoch (sampler order, augmentation): a stage
    that continues another's optimizer and schedule goes on with that stage's epoch count."""
    best_metric: float | None = None
    """Best value of the stage's ``metric_for_best`` so far."""
    best_epoch: int | None = None
    """Epoch (1-based, within the stage) of ``best_metric``."""
    num_processes: int = 1
    """Processes of the run that wrote the checkpoint (resuming with another count is not bitwise)."""
    seed: int | None = None
    run_fingerprint: str | None = None
    """:attr:`RunIdentity.fingerprint` of the run that wrote the checkpoint (``None``: not recorded)."""
    log_history: list[dict[str, Any]] = field(default_factory=list)
    """Logged loss terms, learning rates and evaluation metrics, oldest first."""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = TRAINER_STATE_NAME) -> TrainerState:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{source} is not valid JSON: {err}") from err
        if not isinstance(data, dict):
            raise CheckpointError(f"{source} must hold a JSON object, got {type(data).__name__}.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(f"{source} has unknown fields {unknown}; was it written by another tool?")
        return cls(**data)


def read_trainer_state(checkpoint: str | os.PathLike) -> TrainerState:
    """Read ``trainer_state.json`` of a checkpoint folder."""
    path = Path(checkpoint) / TRAINER_STATE_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{checkpoint} is not a complete hf_reid checkpoint: {TRAINER_STATE_NAME} is missing."
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not readable JSON ({type(err).__name__}: {err}).") from err
    return TrainerState.from_json(text, source=str(path))
