"""Checkpoints that cannot mix runs, run no pickled code and are not trusted when corrupt
(issue #16, points 2, 4 and 5).

* runs: a run in a folder holding another run's checkpoints is refused naming both seeds (and
  the differing config fields), ``--overwrite_output_dir`` starts over, ``--resume`` refuses
  another run's checkpoint, and retention never removes the current run's checkpoints;
* pickles: a payload planted in any file of a checkpoint (checksums made to match) never runs:
  the resume fails with an error naming the file, or never reads it;
* corruption: a truncated or overwritten latest checkpoint is reported by path and the previous
  one is used; the resumed run still ends exactly like an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from helpers_recipes import load_recipe, make_clip_reid_inputs, run_recipe
from helpers_training import Crash, fresh_accelerate_state, tiny_regression_run  # noqa: F401 (a fixture)
from torch import nn
from training_toys import reset_accelerate_state

from hf_reid.training import (
    ConfigError,
    StageRunner,
    TrainerState,
    build_scheduler,
    create_accelerator,
    list_checkpoints,
    read_trainer_state,
    save_checkpoint,
)
from hf_reid.training import checkpoint as checkpoint_module
from hf_reid.training.checkpoint import CheckpointError, RunIdentity, RunMismatchError

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


class Memory:
    """Recipe state with a tensor: a running mean of the outputs, which the loss uses."""

    def __init__(self) -> None:
        self.mean = torch.zeros(4)
        self.updates = 0

    def update(self, outputs: torch.Tensor) -> None:
        self.mean = 0.9 * self.mean + 0.1 * outputs.mean(0)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"mean": self.mean.clone(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.updates = state["mean"].clone(), state["updates"]


def train_toy(
    output_dir: Path,
    *,
    seed: int = 0,
    resume: str | None = None,
    overwrite: bool = False,
    crash_at_call: int | None = None,
    run_config: dict | None = None,
) -> dict:
    """Two stages of 8 optimizer steps each (4 batches per epoch, 2 epochs), a checkpoint every 2
    steps, the two newest kept. Stage "a": Adam with an epoch schedule the runner registers;
    stage "b": SGD with a prepared step schedule and a pull towards outputs computed between the
    stages. Dropout, a shuffling loader and a recipe state object the loss depends on."""
    reset_accelerate_state()
    accelerator, inputs, model, optimizer_a, scheduler_a, loader = tiny_regression_run(output_dir, seed=seed)
    memory = Memory()
    runner = StageRunner(
        accelerator,
        output_dir,
        ["a", "b"],
        seed=seed,
        checkpoint_every=2,
        total_limit=2,
        resume=resume,
        progress_bar=False,
        recipe_state={"memory": memory},
        run_config=run_config,
        overwrite_output_dir=overwrite,
    )
    calls = {"n": 0}
    anchor: list[torch.Tensor] = []

    def compute_loss(batch):
        calls["n"] += 1
        if calls["n"] == crash_at_call:
            raise Crash(f"crash at call {calls['n']}")
        x, y = batch
        out = model(x)
        loss = nn.functional.mse_loss(out, y) + 0.1 * (out.mean(0) - memory.mean).pow(2).sum()
        if anchor:  # stage b: pulled towards what the model of stage a's end computed
            loss = loss + 0.1 * (out.mean(0) - anchor[0]).pow(2).sum()
        memory.update(out.detach())
        return loss, {}

    common = {"model": model, "dataloader": loader, "compute_loss": compute_loss, "epochs": 2}
    runner.train_stage("a", optimizer=optimizer_a, scheduler=scheduler_a, **common)
    with torch.no_grad():  # between stages: depends on the weights stage a ended with
        anchor.append(accelerator.unwrap_model(model).eval()(inputs).mean(0))
        model.train()
    optimizer_b = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    scheduler_b = build_scheduler(optimizer_b, "multistep", milestones=(3,), step_unit="step")
    optimizer_b, scheduler_b = accelerator.prepare(optimizer_b, scheduler_b)
    state = runner.train_stage("b", optimizer=optimizer_b, scheduler=scheduler_b, **common)
    weights = {k: v.detach().clone() for k, v in accelerator.unwrap_model(model).state_dict().items()}
    return {"weights": weights, "calls": calls["n"], "state": state, "memory": memory.state_dict()}


def assert_same_weights(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name


# 8 calls in stage a, then in stage b the 5th call: after the checkpoint at global step 12.
CRASH_IN_B = 8 + 5
CHECKPOINT_FILES = [
    "model.safetensors",
    "optimizer.pt",
    "optimizer_1.pt",
    "schedulers.json",
    "schedulers.safetensors",
    "random_states_0.json",
    "recipe_state.json",
    "recipe_state.safetensors",
    "run.json",
    "checksums.json",
    "trainer_state.json",
]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    return train_toy(tmp_path_factory.mktemp("reference"))


@pytest.fixture(scope="module")
def crashed(tmp_path_factory) -> Path:
    """A run folder of the toy killed in stage b (checkpoints 8 = end of a, 10 and 12)."""
    folder = tmp_path_factory.mktemp("crashed")
    with pytest.raises(Crash):
        train_toy(folder, crash_at_call=CRASH_IN_B)
    reset_accelerate_state()
    return folder


def copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def names(folder: Path) -> list[str]:
    return [p.name for p, _ in list_checkpoints(folder)]


# ------------------------------------------------------------------------------------------ layout
def test_checkpoint_layout_is_safetensors_json_and_checksums(crashed):
    assert names(crashed) == ["checkpoint-8", "checkpoint-10", "checkpoint-12"]
    latest = crashed / "checkpoints" / "checkpoint-12"
    assert sorted(p.name for p in latest.iterdir()) == sorted(CHECKPOINT_FILES)
    listed = json.loads((latest / "checksums.json").read_text())["files"]
    assert set(listed) == set(CHECKPOINT_FILES) - {"checksums.json", "trainer_state.json"}
    state = read_trainer_state(latest)
    run = json.loads((latest / "run.json").read_text())
    assert state.run_fingerprint == run["fingerprint"] and run["seed"] == 0
    assert run["config"] == {"stages": ["a", "b"]}  # a bare StageRunner: its stage names
    # the RNG state is JSON, no pickle anywhere
    rng = json.loads((latest / "random_states_0.json").read_text())
    assert {"python", "numpy", "torch"} <= set(rng)
    assert not [p for p in latest.iterdir() if p.suffix in (".pkl", ".bin")]


def test_resume_after_a_kill_is_bitwise(crashed, reference, tmp_path):
    folder = copy_run(crashed, tmp_path / "run")
    resumed = train_toy(folder, resume="latest")
    assert resumed["calls"] == 16 - 12  # only the rest of stage b
    assert_same_weights(resumed["weights"], reference["weights"])
    assert torch.equal(resumed["memory"]["mean"], reference["memory"]["mean"])
    assert resumed["memory"]["updates"] == 16 - 12 + 12  # restored, then 4 more


# ------------------------------------------------------------------------------------------ runs
def test_another_seed_in_the_same_folder_is_refused_and_start_over_clears(tmp_path, caplog):
    folder = tmp_path / "run"
    train_toy(folder, seed=0)  # run A
    a_checkpoints = names(folder)
    message = (
        r"holds checkpoints of another run \(up to checkpoint-16\): that run has seed 0, this run has seed 1"
    )
    with pytest.raises(RunMismatchError, match=message):
        train_toy(folder, seed=1)  # run B, fresh
    assert names(folder) == a_checkpoints  # nothing of A touched, nothing of B written
    with pytest.raises(
        RunMismatchError,
        match=r"--resume: checkpoint .* belongs to another run: that run has seed 0, this run has seed 1",
    ):
        train_toy(folder, seed=1, resume="latest")
    with pytest.raises(RunMismatchError, match="pass one of them"):
        train_toy(folder, seed=1, resume="latest", overwrite=True)

    with caplog.at_level(logging.WARNING):
        run_b = train_toy(folder, seed=1, overwrite=True)
    assert "deleting the checkpoints of another run" in caplog.text
    states = [s for _, s in list_checkpoints(folder)]
    assert states and all(s.seed == 1 for s in states)
    assert {s.run_fingerprint for s in states} == {RunIdentity(1, {"stages": ["a", "b"]}).fingerprint}
    # the stage-end checkpoint of "a" and the two newest: run B's own, nothing pruned wrongly
    assert names(folder) == ["checkpoint-8", "checkpoint-14", "checkpoint-16"]
    again = train_toy(folder, seed=1, resume="latest")
    assert again["calls"] == 0
    assert_same_weights(again["weights"], run_b["weights"])


def test_a_different_config_is_named_and_an_identical_run_replaces_the_checkpoints(tmp_path, caplog):
    folder = tmp_path / "run"
    first = train_toy(folder, run_config={"lr": 0.01, "epochs": 2})
    with pytest.raises(
        RunMismatchError,
        match=r"that run has seed 0, this run has seed 0; the configs differ .*lr: 0\.01 -> 0\.02",
    ):
        train_toy(folder, run_config={"lr": 0.02, "epochs": 2})
    with pytest.raises(RunMismatchError, match=r"lr: 0\.01 -> 0\.02"):
        train_toy(folder, run_config={"lr": 0.02, "epochs": 2}, resume="latest")
    before = {p.name: (p / "trainer_state.json").stat().st_mtime_ns for p, _ in list_checkpoints(folder)}
    with caplog.at_level(logging.WARNING):
        second = train_toy(folder, run_config={"lr": 0.01, "epochs": 2})  # identical, no --resume
    assert "checkpoints of an identical run" in caplog.text and "this run replaces them" in caplog.text
    after = {p.name: (p / "trainer_state.json").stat().st_mtime_ns for p, _ in list_checkpoints(folder)}
    assert after.keys() == before.keys() and all(after[k] != before[k] for k in after)  # all rewritten
    assert_same_weights(second["weights"], first["weights"])


def test_pruning_never_removes_the_current_runs_checkpoints(tmp_path):
    accelerator = create_accelerator(tmp_path, seed=0)
    layer = torch.nn.Linear(2, 2)
    accelerator.prepare(layer, torch.optim.SGD(layer.parameters(), lr=0.1))
    other, current = RunIdentity(seed=0), RunIdentity(seed=1)
    # another run's checkpoints first, with higher steps; then the current run's
    for run, steps in ((other, (100, 101, 102)), (current, (1, 2, 3))):
        for step in steps:
            state = TrainerState(stage="s", stage_index=0, global_step=step)
            save_checkpoint(accelerator, tmp_path, state, total_limit=2, run=run)
    kept = {p.name: s.run_fingerprint for p, s in list_checkpoints(tmp_path)}
    assert kept == {
        "checkpoint-2": current.fingerprint,
        "checkpoint-3": current.fingerprint,
        "checkpoint-101": other.fingerprint,
        "checkpoint-102": other.fingerprint,
    }


def test_earlier_stages_are_restored_from_the_resumed_runs_checkpoints_only(crashed, reference, tmp_path):
    """The mixed state the issue reports (another run's stage-a end with a higher step beside
    this run's checkpoints): the resume restores its own stage-a end, never the other one."""
    folder = copy_run(crashed, tmp_path / "run")
    other = tmp_path / "other"
    train_toy(other, seed=1)
    planted = folder / "checkpoints" / "checkpoint-9"  # stage a's end of the seed-1 run, renamed
    shutil.copytree(other / "checkpoints" / "checkpoint-8", planted)
    state = json.loads((planted / "trainer_state.json").read_text())
    (planted / "trainer_state.json").write_text(json.dumps({**state, "global_step": 9}))  # newer than 8
    resumed = train_toy(folder, resume=str(folder / "checkpoints" / "checkpoint-12"))
    assert_same_weights(resumed["weights"], reference["weights"])
    assert planted.is_dir()  # another run's checkpoint: neither used nor pruned


# ------------------------------------------------------------------------------------------ pickles
class Payload:
    """Unpickled, it runs code: it writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def plant(path: Path, marker: Path) -> None:
    if path.suffix == ".pt":
        torch.save(Payload(marker), path)  # the zip format torch.load reads
    else:
        path.write_bytes(pickle.dumps(Payload(marker)))


@pytest.mark.parametrize("name", CHECKPOINT_FILES)
def test_a_planted_pickle_payload_never_runs(name, crashed, tmp_path):
    marker = tmp_path / "payload_ran"
    # the payload is live: plain unpickling runs it
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()
    marker.unlink()

    folder = copy_run(crashed, tmp_path / "run")
    latest = folder / "checkpoints" / "checkpoint-12"
    plant(latest / name, marker)
    if name not in ("checksums.json", "trainer_state.json"):
        checkpoint_module._write_checksums(latest)  # an attacker who also rewrites the checksums
    with pytest.raises((CheckpointError, RunMismatchError)):
        train_toy(folder, seed=1, resume=str(latest))  # another run: run.json is read to describe it
    assert not marker.exists()
    try:
        train_toy(folder, resume=str(latest))
    except (CheckpointError, FileNotFoundError) as err:
        assert str(latest / name) in str(err)  # a clear error naming the file
    else:
        assert name == "run.json"  # read only to describe another run (above)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ corruption
def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def overwrite_4kib(path: Path) -> None:
    size = path.stat().st_size
    assert size > 4096 + 512
    with open(path, "r+b") as handle:  # in place, same size
        handle.seek(512)
        handle.write(bytes(range(256)) * 16)
    assert path.stat().st_size == size


@pytest.mark.parametrize("damage", [truncate, overwrite_4kib], ids=["truncated", "overwritten_4KiB"])
def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(
    damage, crashed, reference, tmp_path, caplog
):
    folder = copy_run(crashed, tmp_path / "run")
    bad = folder / "checkpoints" / "checkpoint-12" / "model.safetensors"
    damage(bad)
    with caplog.at_level(logging.WARNING):
        resumed = train_toy(folder, resume="latest")
    assert f"skipping checkpoint {bad.parent}: {bad}" in caplog.text
    assert "using " + str(folder / "checkpoints" / "checkpoint-10") in caplog.text
    assert resumed["calls"] == 16 - 10  # from checkpoint 10, not 12
    assert_same_weights(resumed["weights"], reference["weights"])
    assert torch.equal(resumed["memory"]["mean"], reference["memory"]["mean"])
    assert names(folder) == ["checkpoint-8", "checkpoint-14", "checkpoint-16"]  # the corrupt one replaced


def test_corrupt_checkpoints_are_named_errors(crashed, tmp_path):
    folder = copy_run(crashed, tmp_path / "run")
    checkpoints = folder / "checkpoints"
    # an explicitly named corrupt checkpoint: an error naming the file, no fall-back
    truncate(checkpoints / "checkpoint-12" / "optimizer.pt")
    with pytest.raises(
        CheckpointError, match=r"--resume: .*checkpoint-12/optimizer\.pt has \d+ bytes, \d+ expected"
    ):
        train_toy(folder, resume=str(checkpoints / "checkpoint-12"))
    # a deleted file
    (checkpoints / "checkpoint-10" / "random_states_0.json").unlink()
    with pytest.raises(
        CheckpointError, match=r"checkpoint-10/random_states_0\.json is missing \(listed in checksums\.json\)"
    ):
        train_toy(folder, resume=str(checkpoints / "checkpoint-10"))
    # the end of stage a, restored on a resume into stage b, is verified too
    overwrite_4kib(checkpoints / "checkpoint-8" / "model.safetensors")
    shutil.rmtree(checkpoints / "checkpoint-12")
    (checkpoints / "checkpoint-10" / "random_states_0.json").write_text("{}")
    checkpoint_module._write_checksums(checkpoints / "checkpoint-10")  # checkpoint 10 passes again
    with pytest.raises(
        CheckpointError,
        match=r"end of stage 'a' fails its checks: .*checkpoint-8/model\.safetensors does not match its sha256",
    ):
        train_toy(folder, resume="latest")
    # no checkpoint passes: a clear error, not a fresh start
    truncate(checkpoints / "checkpoint-10" / "model.safetensors")
    with pytest.raises(
        CheckpointError,
        match=r"no checkpoint in .* passes its checks: .*checkpoint-10/model\.safetensors .*checkpoint-8/model\.safetensors",
    ):
        train_toy(folder, resume="latest")


# ------------------------------------------------------------------------------------------ a recipe
def test_recipe_runs_with_another_seed_in_the_same_folder(tmp_path):
    """CLIP-ReID, the sequence of the issue: run A (seed 0), run B (seed 1) in A's folder, B with
    --resume; both refused before any work, naming the seeds; --overwrite_output_dir true starts
    B over."""
    recipe = load_recipe("clip_reid")
    inputs = make_clip_reid_inputs(tmp_path / "inputs")
    folder = tmp_path / "run"
    short = [
        "--stage1.epochs",
        "1",
        "--stage2.epochs",
        "1",
        "--train.checkpoint_every",
        "2",
        "--eval.plots",
        "false",
    ]
    run_recipe(recipe, inputs["config"], folder, *short)
    a_states = [s for _, s in list_checkpoints(folder)]
    assert a_states and {s.seed for s in a_states} == {0}
    config_a = (folder / "config.yaml").read_text()

    with pytest.raises(ConfigError, match=r"another run .*seed 0.*this run has seed 1"):
        run_recipe(recipe, inputs["config"], folder, *short, "--seed", "1")
    with pytest.raises(
        ConfigError, match=r"belongs to another run: that run has seed 0, this run has seed 1"
    ):
        run_recipe(recipe, inputs["config"], folder, *short, "--seed", "1", "--resume")
    with pytest.raises(ConfigError, match=r"the configs differ .*stage2\.epochs: 1 -> 2"):
        run_recipe(recipe, inputs["config"], folder, *short, "--stage2.epochs", "2", "--resume")
    assert (folder / "config.yaml").read_text() == config_a  # refused before anything was written
    assert [s for _, s in list_checkpoints(folder)] == a_states

    # logging and checkpoint cadence are not part of the run: a resume with other values is fine
    run_recipe(recipe, inputs["config"], folder, *short, "--train.log_every", "3", "--resume")

    run_recipe(recipe, inputs["config"], folder, *short, "--seed", "1", "--overwrite_output_dir", "true")
    b_states = [s for _, s in list_checkpoints(folder)]
    assert b_states and {s.seed for s in b_states} == {1}
    assert "seed: 1" in (folder / "config.yaml").read_text()
    run_recipe(recipe, inputs["config"], folder, *short, "--seed", "1", "--resume")  # B's own: fine


# ------------------------------------------------------------------------------------------ two processes
TWO_PROCESS_TOY = """
import hashlib, json, sys
import torch
from torch import nn
from helpers_training import tiny_regression_run
from hf_reid.training import StageRunner

out, mode = sys.argv[1], sys.argv[2]
accelerator, _, model, optimizer, scheduler, loader = tiny_regression_run(
    out, samples=64, hidden=32, dropout=0.3, epochs=3
)
torch.rand(accelerator.process_index + 1)  # the processes' random streams differ from here on
runner = StageRunner(accelerator, out, ["s"], seed=0, checkpoint_every=2, total_limit=2,
                     resume="latest" if mode == "resume" else None, progress_bar=False)
calls = [0]

def compute_loss(batch):
    calls[0] += 1
    if mode == "crash" and calls[0] == 7:  # both processes, after the checkpoint at step 6
        sys.exit(3)
    inputs, targets = batch
    return nn.functional.mse_loss(model(inputs), targets), {}

runner.train_stage("s", model=model, optimizer=optimizer, scheduler=scheduler, dataloader=loader,
                   compute_loss=compute_loss, epochs=3)
weights = accelerator.unwrap_model(model).state_dict()
digest = hashlib.sha256(b"".join(t.numpy().tobytes() for t in weights.values())).hexdigest()
record = {"weights": digest, "calls": calls[0], "rng": torch.rand(1).item()}
(__import__("pathlib").Path(out) / f"rank{accelerator.process_index}.json").write_text(json.dumps(record))
from hf_reid.training.utils import exit_if_distributed

exit_if_distributed()  # as recipe_cli does: no interpreter teardown around gloo's threads
"""


@pytest.mark.slow
def test_two_processes_save_their_rng_and_resume_bitwise(tmp_path):
    from helpers_recipes import launch_two_processes
    from helpers_training import script_env

    script = tmp_path / "toy.py"
    script.write_text(TWO_PROCESS_TOY)
    whole, killed = tmp_path / "whole", tmp_path / "killed"

    def launch(*args: str):
        return launch_two_processes(script, list(args), timeout=300, env=script_env())

    done = launch(str(whole), "full")
    assert done.returncode == 0, done.stderr[-4000:]
    done = launch(str(killed), "crash")
    assert done.returncode != 0
    latest = list_checkpoints(killed)[-1][0]
    assert {"random_states_0.json", "random_states_1.json"} <= {p.name for p in latest.iterdir()}
    ranks = [json.loads((latest / f"random_states_{r}.json").read_text())["torch"] for r in range(2)]
    assert ranks[0] != ranks[1]  # each process its own stream
    done = launch(str(killed), "resume")
    assert done.returncode == 0, done.stderr[-4000:]
    for rank in range(2):
        expected = json.loads((whole / f"rank{rank}.json").read_text())
        resumed = json.loads((killed / f"rank{rank}.json").read_text())
        assert resumed["weights"] == expected["weights"]
        assert resumed["rng"] == expected["rng"]  # the random stream continued exactly
        assert resumed["calls"] == 12 - 6
