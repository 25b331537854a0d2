"""Saving and loading a checkpoint of the whole training state.

A save writes into a hidden ``.tmp-checkpoint-<step>`` folder, adds ``checksums.json`` once every
other file is complete, then ``trainer_state.json``, and renames the folder into place (atomic):
a crash never leaves a ``checkpoint-*`` folder without ``trainer_state.json``, and the next save
removes the leftover temporary folder. A load verifies the checkpoint first.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from .errors import CheckpointError
from .file_io import _write_json
from .integrity import _manifest, _write_checksums, verify_checkpoint
from .layout import _TMP_PREFIX, RECIPE_STATE_NAME, RUN_NAME, TRAINER_STATE_NAME, _checkpoints_root
from .log import logger
from .recipe_state import Stateful, load_recipe_state, save_recipe_state
from .retention import _prune
from .run_identity import RunIdentity
from .trainer_state import TrainerState, read_trainer_state
from .training_files import _check_supported, _load_training_files, _save_training_files


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: str | os.PathLike,
    state: TrainerState,
    *,
    total_limit: int | None = None,
    recipe_state: Mapping[str, Stateful] | None = None,
    run: RunIdentity | None = None,
) -> str:
    """Save the full training state as ``checkpoints/checkpoint-<global_step>``, atomically.

    Every process must call this (each writes its RNG state). Returns the checkpoint folder. A
    folder of the same step from another stage (a stage without steps) gets the stage name as
    suffix. ``recipe_state`` objects (identical on every process) are written by the main
    process (:func:`save_recipe_state`). ``run`` is recorded (``run.json`` and the fingerprint in
    ``trainer_state.json``); retention then only counts and removes this run's checkpoints.
    """
    _check_supported(accelerator)
    if accelerator.project_configuration.automatic_checkpoint_naming:
        raise ValueError(
            "save_checkpoint names checkpoints itself; create the Accelerator without "
            "ProjectConfiguration(automatic_checkpoint_naming=True)."
        )
    if run is not None:
        state = dataclasses.replace(state, run_fingerprint=run.fingerprint)
    root = _checkpoints_root(output_dir)
    name = f"checkpoint-{state.global_step}"
    final = root / name
    if final.exists() and accelerator.is_main_process:
        try:
            existing = read_trainer_state(final) if (final / TRAINER_STATE_NAME).is_file() else None
        except CheckpointError:
            existing = None
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
        tmp.mkdir()
    accelerator.wait_for_everyone()
    _save_training_files(accelerator, tmp)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if recipe_state:
            save_recipe_state(tmp, recipe_state)
        if run is not None:
            _write_json(tmp / RUN_NAME, run.to_dict())
        _write_checksums(tmp)
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
        _prune(root, total_limit, state.run_fingerprint)
        logger.info("Saved checkpoint %s (stage %s, epoch %d).", final, state.stage, state.epoch)
    accelerator.wait_for_everyone()
    return str(final)


def load_checkpoint(
    accelerator: Accelerator,
    checkpoint: str | os.PathLike,
    recipe_state: Mapping[str, Stateful] | None = None,
) -> TrainerState:
    """Verify ``checkpoint`` (:func:`verify_checkpoint`), then restore models, optimizers,
    schedulers and registered objects, the grad scaler, this process's RNG states and the
    recipe's state objects; return the trainer state stored with them.

    The prepared objects must be the ones the checkpoint was saved with, prepared in the same
    order (that is what a recipe re-run with the same config does). Only files the checksum list
    holds are read; a file that does not load is a :class:`CheckpointError` naming it.
    """
    _check_supported(accelerator)
    folder = Path(checkpoint)
    state = verify_checkpoint(folder)
    if state.num_processes != accelerator.num_processes:
        logger.warning(
            "Checkpoint %s was written by %d process(es), this run has %d: the data order and "
            "random streams differ, so the resumed run will not match an uninterrupted one.",
            checkpoint,
            state.num_processes,
            accelerator.num_processes,
        )
    manifest = _manifest(folder)
    _load_training_files(accelerator, folder, manifest)
    if recipe_state:
        if not {f"{RECIPE_STATE_NAME}.json", f"{RECIPE_STATE_NAME}.safetensors"} <= set(manifest):
            raise FileNotFoundError(
                f"{folder} holds no recipe state ({RECIPE_STATE_NAME}.json), but this run has state "
                f"objects {sorted(recipe_state)}; was it written by another recipe?"
            )
        load_recipe_state(folder, recipe_state)
    return state
