"""Crash-safe training checkpoints on top of ``accelerator.save_state``.

Layout of a run's output folder::

    <output_dir>/checkpoints/checkpoint-<global_step>/
        model.safetensors, optimizer.bin, custom_checkpoint_<i>.pkl (schedulers, ...),
        random_states_<rank>.pkl (python/numpy/torch RNG of every process),
        recipe_state.json + recipe_state.safetensors (the recipe's own state objects, e.g.
            pseudo-labels or a cluster memory: tensors in safetensors, the rest as JSON),
        trainer_state.json (stage, epoch, steps, best metric, log history)

A checkpoint is written into a hidden ``.tmp-checkpoint-<step>`` folder and renamed into place
only once every file, ``trainer_state.json`` last, is complete; renaming a folder is atomic, so
a crash never leaves a half-written ``checkpoint-*`` that a resume would pick up. Leftover
temporary folders are ignored and removed by the next save.

Retention: the newest ``total_limit`` checkpoints are kept, plus the last checkpoint of every
finished stage (a resume into a later stage restores the state each earlier stage ended with).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

__all__ = [
    "CHECKPOINTS_DIR",
    "RECIPE_STATE_NAME",
    "TRAINER_STATE_NAME",
    "Stateful",
    "TrainerState",
    "find_latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "read_trainer_state",
    "resolve_resume_checkpoint",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
TRAINER_STATE_NAME = "trainer_state.json"
RECIPE_STATE_NAME = "recipe_state"
"""Stem of the recipe-state files of a checkpoint (``.json`` and ``.safetensors``)."""
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)(?:-[A-Za-z0-9_.-]+)?$")
_TMP_PREFIX = ".tmp-"


@runtime_checkable
class Stateful(Protocol):
    """A recipe's own training state (pseudo-labels, a cluster memory, ...) that checkpoints
    carry: ``state_dict()`` returns a nested dict of tensors, numbers, strings, booleans, ``None``
    and lists / dicts of them; ``load_state_dict`` takes it back. Nothing is pickled."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


_TENSOR_KEY = "__tensor__"


def _split_tensors(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """``value`` with every tensor moved into ``tensors`` (under its path) and replaced by a
    reference; raises ``TypeError`` naming the path for anything JSON cannot hold."""
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu().contiguous()
        return {_TENSOR_KEY: path}
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str) or "/" in key:
                raise TypeError(f"recipe state {path!r}: keys must be strings without '/', got {key!r}.")
            out[key] = _split_tensors(item, f"{path}/{key}", tensors)
        return out
    if isinstance(value, (list, tuple)):
        return [_split_tensors(item, f"{path}/{i}", tensors) for i, item in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(
        f"recipe state {path!r} holds a {type(value).__name__}; state_dict() may hold only tensors, "
        "numbers, strings, booleans, None and lists / dicts of them (checkpoints pickle nothing)."
    )


def _join_tensors(value: Any, tensors: Mapping[str, torch.Tensor], source: str) -> Any:
    if isinstance(value, dict):
        if set(value) == {_TENSOR_KEY}:
            key = value[_TENSOR_KEY]
            if key not in tensors:
                raise ValueError(f"{source}: tensor {key!r} is missing from the .safetensors file.")
            return tensors[key]
        return {k: _join_tensors(v, tensors, source) for k, v in value.items()}
    if isinstance(value, list):
        return [_join_tensors(v, tensors, source) for v in value]
    return value


def save_recipe_state(folder: str | os.PathLike, objects: Mapping[str, Stateful]) -> None:
    """Write the ``state_dict()`` of every object into ``folder/recipe_state.{json,safetensors}``."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    plain = {name: _split_tensors(obj.state_dict(), name, tensors) for name, obj in objects.items()}
    folder = Path(folder)
    save_file(tensors, str(folder / f"{RECIPE_STATE_NAME}.safetensors"))
    (folder / f"{RECIPE_STATE_NAME}.json").write_text(json.dumps(plain, indent=1) + "\n", encoding="utf-8")


def load_recipe_state(folder: str | os.PathLike, objects: Mapping[str, Stateful]) -> None:
    """Restore every object from ``folder`` (see :func:`save_recipe_state`); an object the
    checkpoint does not hold is an error naming it."""
    from safetensors.torch import load_file

    if not objects:
        return
    folder = Path(folder)
    source = folder / f"{RECIPE_STATE_NAME}.json"
    if not source.is_file():
        raise FileNotFoundError(
            f"{folder} holds no recipe state ({source.name}), but this run has state objects "
            f"{sorted(objects)}; was it written by another recipe?"
        )
    plain = json.loads(source.read_text(encoding="utf-8"))
    tensors = load_file(str(folder / f"{RECIPE_STATE_NAME}.safetensors"))
    missing = sorted(set(objects) - set(plain))
    if missing:
        raise ValueError(f"{source} has no state for {missing} (it has {sorted(plain)}).")
    for name, obj in objects.items():
        obj.load_state_dict(_join_tensors(plain[name], tensors, str(source)))


@dataclass
class TrainerState:
    """Where training stands; stored as ``trainer_state.json`` in every checkpoint.

    The RNG states are not in this file: ``accelerator.save_state`` writes them per process
    (``random_states_<rank>.pkl``) next to it and ``load_state`` restores them.
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
    log_history: list[dict[str, Any]] = field(default_factory=list)
    """Logged loss terms, learning rates and evaluation metrics, oldest first."""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = TRAINER_STATE_NAME) -> TrainerState:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{source} is not valid JSON: {err}") from err
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source} has unknown fields {unknown}; was it written by another tool?")
        return cls(**data)


def _checkpoints_root(output_dir: str | os.PathLike) -> Path:
    """``output_dir/checkpoints``; also accepts that folder itself."""
    path = Path(output_dir)
    return path if path.name == CHECKPOINTS_DIR else path / CHECKPOINTS_DIR


def read_trainer_state(checkpoint: str | os.PathLike) -> TrainerState:
    """Read ``trainer_state.json`` of a checkpoint folder."""
    path = Path(checkpoint) / TRAINER_STATE_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{checkpoint} is not a complete hf_reid checkpoint: {TRAINER_STATE_NAME} is missing."
        )
    return TrainerState.from_json(path.read_text(encoding="utf-8"), source=str(path))


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[Path, TrainerState]]:
    """Complete checkpoints of a run, oldest first (by global step, then stage).

    ``output_dir`` is the run folder (its ``checkpoints`` subfolder is listed) or a folder that
    holds ``checkpoint-*`` folders directly.
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
            logger.warning("Ignoring incomplete checkpoint %s (no %s).", child, TRAINER_STATE_NAME)
            continue
        found.append((child, read_trainer_state(child)))
    found.sort(key=lambda item: (item[1].global_step, item[1].stage_index, item[1].stage_completed))
    return found


def find_latest_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest complete checkpoint of a run (``output_dir`` or its ``checkpoints`` folder)."""
    checkpoints = list_checkpoints(output_dir)
    return str(checkpoints[-1][0]) if checkpoints else None


def resolve_resume_checkpoint(output_dir: str | os.PathLike, resume: str | None) -> str | None:
    """Turn a recipe's ``--resume`` value into a checkpoint folder (or ``None`` for a fresh run).

    ``"latest"`` picks the newest checkpoint in ``output_dir`` (a fresh run when there is none);
    any other value must be a checkpoint folder.
    """
    if resume is None:
        return None
    if resume == "latest":
        latest = find_latest_checkpoint(output_dir)
        if latest is None:
            logger.info("--resume: no checkpoint in %s yet; starting from scratch.", output_dir)
        return latest
    path = Path(resume)
    if not path.is_dir():
        raise FileNotFoundError(f"--resume: checkpoint folder {resume} does not exist.")
    read_trainer_state(path)  # fails early on an incomplete folder
    return str(path)


def _prune(root: Path, total_limit: int | None) -> None:
    checkpoints = list_checkpoints(root)
    if total_limit is None or len(checkpoints) <= total_limit:
        return
    keep = {path for path, _ in checkpoints[-total_limit:]} if total_limit > 0 else set()
    last_of_stage: dict[int, Path] = {}
    for path, state in checkpoints:
        if state.stage_completed:
            last_of_stage[state.stage_index] = path
    keep |= set(last_of_stage.values())
    for path, _ in checkpoints:
        if path not in keep:
            logger.info("Removing old checkpoint %s (total_limit=%d).", path, total_limit)
            shutil.rmtree(path, ignore_errors=True)


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: str | os.PathLike,
    state: TrainerState,
    *,
    total_limit: int | None = None,
    recipe_state: Mapping[str, Stateful] | None = None,
) -> str:
    """Save the full training state as ``checkpoints/checkpoint-<global_step>``, atomically.

    Every process must call this (``save_state`` writes each process's RNG state). Returns the
    checkpoint folder. A folder of the same step from another stage (a stage without steps)
    gets the stage name as suffix. ``recipe_state`` objects (identical on every process) are
    written by the main process (:func:`save_recipe_state`).
    """
    if accelerator.project_configuration.automatic_checkpoint_naming:
        raise ValueError(
            "save_checkpoint names checkpoints itself; create the Accelerator without "
            "ProjectConfiguration(automatic_checkpoint_naming=True)."
        )
    root = _checkpoints_root(output_dir)
    name = f"checkpoint-{state.global_step}"
    final = root / name
    if final.exists() and accelerator.is_main_process:
        existing = read_trainer_state(final) if (final / TRAINER_STATE_NAME).is_file() else None
        if existing is not None and existing.stage_index != state.stage_index:
            name = f"{name}-{state.stage}"
            final = root / name
    name = broadcast_object_list([name], from_process=0)[0]  # the main process decides the name
    final = root / name
    tmp = root / f"{_TMP_PREFIX}{name}"

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        for child in root.iterdir():  # leftovers of a crash during an earlier save
            if child.name.startswith(_TMP_PREFIX):
                shutil.rmtree(child, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if recipe_state:
            save_recipe_state(tmp, recipe_state)
        state_path = tmp / TRAINER_STATE_NAME
        with open(state_path, "w", encoding="utf-8") as handle:
            handle.write(state.to_json())
            handle.flush()
            os.fsync(handle.fileno())
        if final.exists():  # re-saving a step (e.g. a stage end at a periodic step): swap
            trash = root / f"{_TMP_PREFIX}old-{name}"
            os.replace(final, trash)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _prune(root, total_limit)
        logger.info("Saved checkpoint %s (stage %s, epoch %d).", final, state.stage, state.epoch)
    accelerator.wait_for_everyone()
    return str(final)


def load_checkpoint(
    accelerator: Accelerator,
    checkpoint: str | os.PathLike,
    recipe_state: Mapping[str, Stateful] | None = None,
) -> TrainerState:
    """Restore models, optimizers, registered objects (schedulers), RNG states and the recipe's
    state objects; return the trainer state stored with them.

    The prepared objects must be the ones the checkpoint was saved with, prepared in the same
    order (that is what a recipe re-run with the same config does).
    """
    state = read_trainer_state(checkpoint)
    if state.num_processes != accelerator.num_processes:
        logger.warning(
            "Checkpoint %s was written by %d process(es), this run has %d: the data order and "
            "random streams differ, so the resumed run will not match an uninterrupted one.",
            checkpoint,
            state.num_processes,
            accelerator.num_processes,
        )
    accelerator.load_state(str(checkpoint))
    load_recipe_state(checkpoint, recipe_state or {})
    return state
