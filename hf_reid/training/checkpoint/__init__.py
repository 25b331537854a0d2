"""Crash-safe, pickle-free, checksummed training checkpoints that know their run.

Layout of a run's output folder::

    <output_dir>/checkpoints/checkpoint-<global_step>/
        model.safetensors, model_1.safetensors, ...   weights of every prepared model (unwrapped)
        optimizer.pt, optimizer_1.pt, ...             optimizer state_dict()s (torch.save; read back
                                                      with torch.load(weights_only=True))
        schedulers.json + schedulers.safetensors      state_dict()s of the prepared schedulers and of
                                                      the objects registered with
                                                      accelerator.register_for_checkpointing (the
                                                      runner's schedulers): JSON, tensors apart
        scaler.json                                   the fp16 gradient scaler (only with one)
        random_states_<rank>.json                     python / numpy / torch (/ cuda, xpu) RNG of
                                                      every process, written by that process
        recipe_state.json + recipe_state.safetensors  the recipe's own state objects (pseudo-labels,
                                                      a cluster memory): tensors in safetensors
        run.json                                      the run: seed and fingerprinted config
        checksums.json                                size and sha256 of every file above
        trainer_state.json                            stage, epoch, steps, run fingerprint, best
                                                      metric, log history; written last

Nothing in a checkpoint is a pickle that resume runs: weights and tensors are safetensors, the
rest is JSON, and the optimizer states (tensors keyed by parameter index) are read with
``torch.load(..., weights_only=True)``, which refuses any object but tensors and plain
containers. Accelerate's ``save_state`` / ``load_state`` are not used: they store the schedulers
and registered objects as pickles loaded with ``weights_only=False`` (``custom_checkpoint_*.pkl``)
and the RNG states as pickles (``random_states_*.pkl``). The data pipeline needs no state: the
samplers' order derives from (seed, epoch), which the runner sets every epoch.

Completeness and integrity: a checkpoint is written into a hidden ``.tmp-checkpoint-<step>``
folder; ``checksums.json`` is written once every other file is complete, then
``trainer_state.json``, and the folder is renamed into place (atomic). A crash never leaves a
``checkpoint-*`` folder without ``trainer_state.json``, and leftover temporary folders are
removed by the next save. Before a checkpoint is loaded every listed file is checked against its
size and sha256 (:func:`verify_checkpoint`); ``--resume`` (latest) skips a checkpoint that fails,
with a warning naming the file, and uses the previous one that passes.

Runs: every checkpoint records its run (:class:`RunIdentity`: the seed and the settings that
define the training; ``trainer_state.json`` holds its fingerprint, ``run.json`` the values).
:func:`prepare_run_folder` refuses to start a run in a folder holding another run's checkpoints
(unless asked to start over) and to resume from another run's checkpoint; retention and the
restore of earlier stages only ever consider the run's own checkpoints.

Retention: the newest ``total_limit`` checkpoints of the run are kept, plus the last checkpoint of
every finished stage (a resume into a later stage restores the state each earlier stage ended with).

Modules: :mod:`.layout` (file and folder names), :mod:`.errors`, :mod:`.codec` (state dicts as
JSON + tensors), :mod:`.file_io` (single JSON / safetensors files), :mod:`.rng` (random states),
:mod:`.training_files` (the Accelerator's prepared objects), :mod:`.recipe_state`,
:mod:`.trainer_state`, :mod:`.run_identity`, :mod:`.integrity` (checksums), :mod:`.listing`,
:mod:`.retention`, :mod:`.run_folder` (resume and run checks at the start), :mod:`.save_load`
(the atomic save and the load) and :mod:`.log`. The public names are importable from this package.
"""

from __future__ import annotations

from .errors import CheckpointError, RunMismatchError
from .integrity import _write_checksums, verify_checkpoint  # noqa: F401  (tests corrupt checksums)
from .layout import CHECKPOINTS_DIR, CHECKSUMS_NAME, RECIPE_STATE_NAME, RUN_NAME, TRAINER_STATE_NAME
from .listing import find_latest_checkpoint, list_checkpoints
from .recipe_state import Stateful
from .retention import remove_checkpoints
from .run_folder import RunFolder, prepare_run_folder, resolve_resume_checkpoint
from .run_identity import RunIdentity
from .save_load import load_checkpoint, save_checkpoint
from .trainer_state import TrainerState, read_trainer_state

__all__ = [
    "CHECKPOINTS_DIR",
    "CHECKSUMS_NAME",
    "RECIPE_STATE_NAME",
    "RUN_NAME",
    "TRAINER_STATE_NAME",
    "CheckpointError",
    "RunFolder",
    "RunIdentity",
    "RunMismatchError",
    "Stateful",
    "TrainerState",
    "find_latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "prepare_run_folder",
    "read_trainer_state",
    "remove_checkpoints",
    "resolve_resume_checkpoint",
    "save_checkpoint",
    "verify_checkpoint",
]
