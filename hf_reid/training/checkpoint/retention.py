"""Removing checkpoints: retention after a save, and checkpoints a run replaces.

Retention keeps the run's newest ``total_limit`` checkpoints plus the last checkpoint of every
finished stage (a resume into a later stage restores the state each earlier stage ended with),
and never touches another run's checkpoints.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .listing import list_checkpoints
from .log import logger


def remove_checkpoints(paths: list[Path], why: str) -> None:
    """Delete checkpoint folders (main process only), logging ``why``."""
    existing = [p for p in paths if p.exists()]
    if existing:
        logger.warning("Removing checkpoint(s) %s: %s.", [str(p) for p in existing], why)
    for path in existing:
        shutil.rmtree(path, ignore_errors=True)


def _prune(root: Path, total_limit: int | None, fingerprint: str | None) -> None:
    """Keep the run's newest ``total_limit`` checkpoints and its stage ends; checkpoints of any
    other run are never touched."""
    checkpoints = [(p, s) for p, s in list_checkpoints(root) if s.run_fingerprint == fingerprint]
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
