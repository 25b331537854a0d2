"""Tiny training runs for the checkpoint tests (test_training_checkpoint.py, test_checkpoint_safety.py
and the two-process toy script the latter launches).

* :func:`fresh_accelerate_state`: a fixture resetting Accelerate's process-wide state around a
  test (each tiny run creates an Accelerator of its own); a module uses it with
  ``pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")`` after importing it;
* :class:`Crash`: the kill a test injects into a run (from its loss, or while it saves);
* :func:`tiny_regression_run`: an Accelerator and a prepared regression toy (data, MLP with
  dropout, Adam, a cosine epoch schedule, a shuffling loader) for a :class:`StageRunner`.

A script run in another process imports it with :func:`script_env` in its environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from training_toys import reset_accelerate_state

from hf_reid.training import build_scheduler, create_accelerator, set_seed

TESTS = Path(__file__).resolve().parent


def script_env() -> dict[str, str]:
    """``{"PYTHONPATH": ...}`` for a script run in another process that imports this module:
    ``tests`` and ``tests/scripts`` (what pytest puts on its own path), then the caller's path."""
    folders = [str(TESTS), str(TESTS / "scripts"), os.environ.get("PYTHONPATH", "")]
    return {"PYTHONPATH": os.pathsep.join(f for f in folders if f)}


class Crash(RuntimeError):
    """A kill injected into a tiny run."""


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate's process-wide state reset before and after the test."""
    reset_accelerate_state()
    yield
    reset_accelerate_state()


class TinyRun(NamedTuple):
    accelerator: Any
    inputs: torch.Tensor
    """The (unprepared) training inputs, ``(samples, 16)``."""
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    """Not prepared: a :class:`StageRunner` registers an epoch schedule itself."""
    loader: DataLoader


def tiny_regression_run(
    output_dir: str | Path,
    *,
    seed: int = 0,
    samples: int = 32,
    hidden: int = 128,
    dropout: float = 0.2,
    epochs: int = 2,
) -> TinyRun:
    """An Accelerator for ``output_dir`` (seeded with ``seed``) and a regression toy prepared with
    it: ``samples`` random 16 -> 4 pairs (the same for every seed) in shuffled batches of 8, an MLP
    (``hidden`` units, ``dropout``) initialised from ``seed``, Adam (lr 1e-2) and a cosine schedule
    over ``epochs`` epochs with one warm-up epoch."""
    accelerator = create_accelerator(output_dir, seed=seed)
    set_seed(seed)
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(samples, 16, generator=generator)
    targets = torch.randn(samples, 4, generator=generator)
    model = nn.Sequential(nn.Linear(16, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 4))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scheduler = build_scheduler(optimizer, "cosine", total=epochs, warmup=1)
    loader = DataLoader(TensorDataset(inputs, targets), batch_size=8, shuffle=True)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    return TinyRun(accelerator, inputs, model, optimizer, scheduler, loader)
