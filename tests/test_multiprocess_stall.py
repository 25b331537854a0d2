"""A rank that stalls or fails ends a two-process launch within a bound, and the launch leaves no
process behind (issue #16: a two-process run used to hang, a rank asleep in the process group
after the other had left, and stay alive, an orphan, after the test's timeout).

The ranks train a toy model with the stage runner (DDP all-reduce, checkpoints with their
barriers and broadcasts); ``STALL=<where>`` makes rank 1 sleep for an hour, or fail, at one
point. Every collective waits at most ``$HF_REID_DIST_TIMEOUT`` seconds (set through
``create_accelerator``), so rank 0 raises, ``torchrun`` stops rank 1 and the launch ends with an
error. ``launch_two_processes`` then checks that no process of the launch is left (the ranks run
in sessions of their own, which a kill of the launcher's process group does not reach).
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from helpers_recipes import launch_processes, launch_two_processes

from hf_reid.training.utils import DIST_TIMEOUT_ENV, _process_group_kwargs, dist_timeout_seconds

DIST_TIMEOUT = 10.0
"""Seconds a rank waits in a collective in these tests."""
SLACK = 30.0
"""What ending a launch may take beyond the collective timeout on a loaded 2-core machine: the
waiting rank's traceback and exit, torchrun noticing it (0.1 s) and stopping the other rank."""

STALLING_TOY = """
import os, sys, time
from pathlib import Path
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
import hf_reid.training.checkpoint.save_load as checkpoint
from hf_reid.training import StageRunner, create_accelerator, set_seed
from hf_reid.training.utils import exit_if_distributed

out = Path(sys.argv[1])
where = os.environ.get("STALL", "")
accelerator = create_accelerator(out, seed=0)
set_seed(0)
rank = accelerator.process_index
generator = torch.Generator().manual_seed(0)
x, y = torch.randn(64, 8, generator=generator), torch.randn(64, 2, generator=generator)
model = nn.Linear(8, 2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
model, optimizer, loader = accelerator.prepare(
    model, optimizer, DataLoader(TensorDataset(x, y), batch_size=4, shuffle=True)
)


def stall(point):
    if rank == 1 and where.startswith(point):
        (out / "stalled_at").write_text(repr(time.time()))
        if where.endswith("fail"):
            raise RuntimeError(f"rank 1 fails on purpose at {point}")
        time.sleep(3600)


def compute_loss(batch):
    if runner.state.global_step == 3:
        stall("step")  # rank 0 goes on into the DDP all-reduce of this step's gradients
    inputs, targets = batch
    return nn.functional.mse_loss(model(inputs), targets), {}


save_files = checkpoint._save_training_files


def stalling_save_files(accelerator, folder):
    stall("checkpoint")  # rank 0 writes its files and waits at the barrier after them
    save_files(accelerator, folder)


checkpoint._save_training_files = stalling_save_files
runner = StageRunner(accelerator, out, ["s"], seed=0, checkpoint_every=5, progress_bar=False)
runner.train_stage("s", model=model, optimizer=optimizer, dataloader=loader, compute_loss=compute_loss, epochs=2)
(out / f"done{rank}").write_text("ok")
accelerator.end_training()
exit_if_distributed()
"""


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "stalling_toy.py"
    path.write_text(STALLING_TOY)
    return path


def launch(script, out, stall: str, **kwargs):
    return launch_two_processes(script, [str(out)], dist_timeout=DIST_TIMEOUT, env={"STALL": stall}, **kwargs)


@pytest.mark.slow
def test_without_a_stall_the_toy_finishes(script, tmp_path):
    done = launch(script, tmp_path, "", timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert (tmp_path / "done0").is_file() and (tmp_path / "done1").is_file()
    assert done.leftover == [] and launch_processes(done.marker) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stall", "message"),
    [
        ("step", "Timed out"),  # rank 0 waits in the DDP gradient all-reduce
        ("checkpoint", "Timed out"),  # rank 0 waits at a barrier of save_checkpoint
        ("step-fail", "Connection closed by peer"),  # rank 1 raises: rank 0's all-reduce fails at once
    ],
)
def test_a_stalled_or_failed_rank_ends_the_launch_within_the_timeout(script, tmp_path, stall, message):
    done = launch(script, tmp_path, stall, timeout=300)
    ended = time.time()
    assert done.returncode != 0, done.stdout[-2000:]
    stalled_at = float((tmp_path / "stalled_at").read_text())
    bound = (0 if stall.endswith("fail") else DIST_TIMEOUT) + SLACK
    assert ended - stalled_at < bound, (ended - stalled_at, done.stderr[-4000:])
    assert message in done.stderr, done.stderr[-4000:]
    assert not (tmp_path / "done0").exists() and not (tmp_path / "done1").exists()
    # torchrun stopped the stalled rank itself; nothing was left for the harness to kill
    assert done.leftover == [], done.leftover
    assert launch_processes(done.marker) == []


@pytest.mark.slow
def test_a_launch_that_outlives_its_timeout_is_killed_whole(script, tmp_path):
    # The collective timeout is longer than the launch's: the harness kills the launcher, the
    # torchrun agent in it and both ranks (in their own sessions), and raises.
    marker = "stall-test-" + tmp_path.name
    started = time.monotonic()
    with pytest.raises(AssertionError, match="outlived"):
        launch_two_processes(
            script, [str(tmp_path)], timeout=60, dist_timeout=3600, env={"STALL": "step"}, marker=marker
        )
    assert time.monotonic() - started < 60 + SLACK
    assert (tmp_path / "stalled_at").is_file()  # it did stall, not fail to start
    assert launch_processes(marker) == []


def test_the_collective_timeout_comes_from_the_argument_the_environment_or_the_default(monkeypatch):
    monkeypatch.delenv(DIST_TIMEOUT_ENV, raising=False)
    assert dist_timeout_seconds() == 1800
    monkeypatch.setenv(DIST_TIMEOUT_ENV, " 25 ")
    assert dist_timeout_seconds() == 25 and dist_timeout_seconds(7) == 7
    for bad, message in [
        ("0", "a positive"),
        ("-3", "a positive"),
        ("nan", "a positive"),
        ("soon", "a number"),
    ]:
        monkeypatch.setenv(DIST_TIMEOUT_ENV, bad)
        with pytest.raises(ValueError, match=rf"\$HF_REID_DIST_TIMEOUT must be {message}"):
            dist_timeout_seconds()
    with pytest.raises(ValueError, match="dist_timeout must be a positive"):
        dist_timeout_seconds(0)
    # Accelerate passes on only what differs from its defaults (600 s): 600 s must still arrive
    assert _process_group_kwargs(30).to_kwargs() == {"timeout": timedelta(seconds=30)}
    assert abs(_process_group_kwargs(600).to_kwargs()["timeout"] - timedelta(seconds=600)) < timedelta(
        seconds=1
    )
