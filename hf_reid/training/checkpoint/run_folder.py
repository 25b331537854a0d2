"""What a run does with its output folder at the start: which checkpoint it resumes, and whether
the folder's checkpoints are its own.

``--resume latest`` falls back to the newest checkpoint that passes its checks; a run is refused
in a folder holding another run's checkpoints, or to resume another run's checkpoint, with both
seeds and the differing settings named (unless told to start over).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CheckpointError, RunMismatchError
from .integrity import verify_checkpoint
from .layout import _checkpoints_root
from .listing import _order, list_checkpoints
from .log import _warn_once, logger
from .run_identity import RunIdentity, _mismatch_details
from .trainer_state import TrainerState, read_trainer_state

_START_OVER = "--overwrite_output_dir true"
"""The recipes' option that deletes a folder's checkpoints and starts over; the errors name it."""


def resolve_resume_checkpoint(output_dir: str | os.PathLike, resume: str | None) -> str | None:
    """Turn a recipe's ``--resume`` value into a verified checkpoint folder (``None``: fresh run).

    ``"latest"`` picks the newest checkpoint in ``output_dir`` that passes
    :func:`verify_checkpoint`: a newer one that fails is skipped with a warning naming the file
    (a clear error when none passes; a fresh run when there is none at all). Any other value
    must be a checkpoint folder that passes; else the error names the file.
    """
    if resume is None:
        return None
    if resume == "latest":
        checkpoints = list_checkpoints(output_dir)
        if not checkpoints:
            logger.info("--resume: no checkpoint in %s yet; starting from scratch.", output_dir)
            return None
        problems = []
        for path, _ in reversed(checkpoints):
            try:
                verify_checkpoint(path)
            except (CheckpointError, FileNotFoundError) as err:
                _warn_once(f"--resume: skipping checkpoint {path}: {err} Trying the one before.")
                problems.append(str(err))
                continue
            if problems:
                _warn_once(f"--resume: using {path}, the newest checkpoint that passes its checks.")
            return str(path)
        raise CheckpointError(
            f"--resume: no checkpoint in {_checkpoints_root(output_dir)} passes its checks: "
            + " ".join(problems[:3])
            + (f" (and {len(problems) - 3} more)." if len(problems) > 3 else "")
            + f" Start over with {_START_OVER}, or resume from a checkpoint elsewhere (--resume=PATH)."
        )
    path = Path(resume)
    if not path.is_dir():
        raise FileNotFoundError(f"--resume: checkpoint folder {resume} does not exist.")
    read_trainer_state(path)  # an incomplete folder: FileNotFoundError naming trainer_state.json
    try:
        verify_checkpoint(path)
    except CheckpointError as err:
        raise CheckpointError(f"--resume: {err}") from err
    return str(path)


@dataclass
class RunFolder:
    """What :func:`prepare_run_folder` decided for a run folder."""

    resume: str | None
    """The verified checkpoint to resume from (``None``: a fresh run)."""
    stale: list[Path] = field(default_factory=list)
    """Checkpoints this run replaces: removed before it writes its first checkpoint."""


def prepare_run_folder(
    output_dir: str | os.PathLike,
    run: RunIdentity,
    *,
    resume: str | None,
    overwrite: bool = False,
    is_main_process: bool = True,
    log: bool = True,
) -> RunFolder:
    """Check that ``output_dir`` may hold this run's checkpoints, and what to resume from.

    * ``resume=None`` in a folder with another run's checkpoints (another fingerprint: seed or
      config): :class:`RunMismatchError` naming both seeds and the differing fields, unless
      ``overwrite`` (the recipes' ``--overwrite_output_dir true``), which deletes them (on the main
      process) now. Checkpoints of an identical run (same fingerprint) are replaced: this run
      reproduces them, so they are removed when it writes its first checkpoint (``stale``).
    * ``resume`` (``"latest"`` or a folder): the checkpoint is verified (see
      :func:`resolve_resume_checkpoint`) and must have this run's fingerprint; checkpoints of
      the run newer than it (a corrupt latest one that was skipped, or a later point of an
      explicit ``--resume=PATH``) are ``stale``: the resumed run writes its own.
    """
    root = _checkpoints_root(output_dir)
    if resume is not None and overwrite:
        raise RunMismatchError(
            "--resume continues the run in the output folder and --overwrite_output_dir deletes its "
            "checkpoints; pass one of them."
        )
    fingerprint = run.fingerprint
    resume_path = resolve_resume_checkpoint(output_dir, resume)
    if resume_path is not None:
        state = read_trainer_state(resume_path)
        if state.run_fingerprint is None:
            _warn_once(
                f"--resume: checkpoint {resume_path} does not record its run; it cannot be checked "
                "to belong to this run (seed and config)."
            )
        elif state.run_fingerprint != fingerprint:
            raise RunMismatchError(
                f"--resume: checkpoint {resume_path} belongs to another run: "
                f"{_mismatch_details(Path(resume_path), state, run)}. Resume with the run's own config "
                f"and seed (its config.yaml), or start over without --resume and with {_START_OVER}."
            )
    own = list_checkpoints(root)
    resumed_here = resume_path is not None and Path(resume_path).resolve().parent == root.resolve()
    if resumed_here:
        point = _order(read_trainer_state(resume_path))
        stale = [p for p, s in own if s.run_fingerprint == state.run_fingerprint and _order(s) > point]
        if stale and log:
            _warn_once(
                f"Resuming from {resume_path}: the newer checkpoint(s) {[p.name for p in stale]} of this "
                "run are replaced; they are removed when the resumed run writes its first checkpoint."
            )
        return RunFolder(resume_path, stale)
    others = [(p, s) for p, s in own if s.run_fingerprint != fingerprint]
    if others:
        if overwrite:
            _remove(root, own, is_main_process, f"{_START_OVER}: deleting the checkpoints of another run")
            return RunFolder(resume_path, [])
        path, state = others[-1]
        raise RunMismatchError(
            f"{root} holds checkpoints of another run (up to {path.name}): {_mismatch_details(path, state, run)}. "
            f"Resume that run with its own config and seed (--resume), write this one elsewhere "
            f"(--output_dir), or pass {_START_OVER} to delete those checkpoints and start over."
        )
    if own and overwrite:
        _remove(root, own, is_main_process, f"{_START_OVER}: deleting the earlier checkpoints")
        return RunFolder(resume_path, [])
    if own and log:
        _warn_once(
            f"{root} holds checkpoints of an identical run (same config and seed {run.seed}); this run "
            "starts from scratch and reproduces them: they are removed when it writes its first "
            "checkpoint. Stop it and pass --resume to continue that run instead."
        )
    return RunFolder(resume_path, [p for p, _ in own])


def _remove(
    root: Path, checkpoints: list[tuple[Path, TrainerState]], is_main_process: bool, why: str
) -> None:
    if not checkpoints:
        return
    _warn_once(f"{why} in {root}: {[p.name for p, _ in checkpoints]}.")
    if is_main_process:
        for path, _ in checkpoints:
            shutil.rmtree(path, ignore_errors=True)
