"""Checkpoints and resume: a run killed after a checkpoint and resumed ends exactly like an
uninterrupted run, and a crash while saving never leaves a checkpoint that resume would use."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers_training import Crash, fresh_accelerate_state  # noqa: F401 (a fixture)
from torch.utils.data import DataLoader
from training_toys import (
    PKBatchSampler,
    ToyEmbedder,
    ToyReidDataset,
    batch_hard_triplet,
    make_clustered_data,
    mean_average_precision,
    reset_accelerate_state,
)

from hf_reid.training import (
    StageRunner,
    TrainerState,
    build_optimizer,
    build_scheduler,
    create_accelerator,
    find_latest_checkpoint,
    list_checkpoints,
    read_trainer_state,
    save_checkpoint,
    set_seed,
)
from hf_reid.training.checkpoint import save_load as checkpoint_module

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


def run_two_stage_recipe(
    output_dir: Path, *, resume: str | None = None, crash_at_call: int | None = None
) -> dict:
    """A miniature two-stage recipe: stage "a" (PK batches, epoch-stepped cosine) then the code
    between stages computes anchor embeddings that stage "b" (shuffled batches, step-stepped
    multistep, SGD) regularises towards. Gradient accumulation 2, dropout, checkpoints every 5
    optimizer steps."""
    accelerator = create_accelerator(output_dir, seed=0, gradient_accumulation_steps=2)
    set_seed(0)
    inputs, pids, camids = make_clustered_data(60, 4, seed=0)
    train = pids < 48
    train_set = ToyReidDataset(inputs[train], pids[train], camids[train])
    held_out = (inputs[~train], pids[~train])

    model = ToyEmbedder(dropout=0.2)
    optimizer_a = build_optimizer(model, "adam", lr=5e-3, weight_decay=1e-4, bias_lr_factor=2.0)
    scheduler_a = build_scheduler(
        optimizer_a, "cosine", total=2, warmup=1, warmup_init_lr=1e-4, start_index=1
    )
    loader_a = DataLoader(
        train_set, batch_sampler=PKBatchSampler(pids[train], p=4, k=2, seed=0)
    )  # 12 batches
    model, optimizer_a, loader_a = accelerator.prepare(model, optimizer_a, loader_a)
    runner = StageRunner(
        accelerator,
        output_dir,
        ["a", "b"],
        seed=0,
        checkpoint_every=5,
        total_limit=2,
        resume=resume,
        log_every=3,
    )
    calls = {"n": 0}

    def count_call() -> None:
        calls["n"] += 1
        if calls["n"] == crash_at_call:
            raise Crash(f"injected crash at call {calls['n']}")

    def loss_a(batch):
        count_call()
        loss = batch_hard_triplet(model(batch["inputs"]), batch["pids"])
        return loss, {"triplet": loss.detach()}

    def evaluate(state: TrainerState) -> dict:
        model.eval()
        with torch.no_grad():
            feats = model(held_out[0])
        model.train()
        first = torch.arange(len(feats)) % 4 == 0
        return {
            "mAP": mean_average_precision(
                feats[first], feats[~first], held_out[1][first], held_out[1][~first]
            )
        }

    runner.train_stage(
        "a",
        model=model,
        optimizer=optimizer_a,
        scheduler=scheduler_a,
        dataloader=loader_a,
        compute_loss=loss_a,
        epochs=2,
        on_epoch_end=evaluate,
        metric_for_best="mAP",
    )

    # Between stages: depends on the weights stage "a" ended with.
    with torch.no_grad():
        model.eval()
        anchors = model(inputs[train]).detach()
        model.train()
    optimizer_b = build_optimizer(model, "sgd", lr=2e-2, momentum=0.9)
    scheduler_b = build_scheduler(
        optimizer_b, "multistep", milestones=(8, 14), warmup=3, warmup_factor=0.1, step_unit="step"
    )
    index_set = torch.utils.data.TensorDataset(torch.arange(int(train.sum())))
    loader_b = DataLoader(index_set, batch_size=16, shuffle=True)  # 12 batches, seedable sampler
    optimizer_b, loader_b = accelerator.prepare(optimizer_b, loader_b)

    def loss_b(batch):
        count_call()
        (index,) = batch
        emb = model(inputs[train][index])
        triplet = batch_hard_triplet(emb, pids[train][index])
        pull = (emb - anchors[index]).pow(2).mean()
        return triplet + 0.1 * pull, {"triplet": triplet.detach(), "pull": pull.detach()}

    state = runner.train_stage(
        "b",
        model=model,
        optimizer=optimizer_b,
        scheduler=scheduler_b,
        dataloader=loader_b,
        compute_loss=loss_b,
        epochs=3,
        max_grad_norm=5.0,
        on_epoch_end=evaluate,
    )
    weights = {k: v.detach().clone() for k, v in accelerator.unwrap_model(model).state_dict().items()}
    return {
        "state": state,
        "weights": weights,
        "final": evaluate(state),
        "calls": calls["n"],
        "anchors": anchors,
    }


def test_killed_and_resumed_run_matches_uninterrupted_run(tmp_path):
    reference = run_two_stage_recipe(tmp_path / "uninterrupted")
    ref_state = reference["state"]
    # Stage a: 2 epochs x 12 batches / accumulation 2 = 12 steps; stage b: 3 x 6 = 18 steps.
    assert ref_state.global_step == 30
    assert ref_state.stage == "b" and ref_state.stage_completed

    # Kill during stage b, epoch 2: 24 calls of stage a + 21 of stage b, i.e. after the
    # checkpoint at stage-b step 10 (global step 22, 8 batches into epoch 2).
    crashed_dir = tmp_path / "crashed"
    reset_accelerate_state()
    with pytest.raises(Crash):
        run_two_stage_recipe(crashed_dir, crash_at_call=24 + 22)
    latest = find_latest_checkpoint(crashed_dir)
    assert latest is not None and Path(latest).name == "checkpoint-22"
    saved = read_trainer_state(latest)
    assert (saved.stage, saved.epoch, saved.batch_in_epoch, saved.stage_completed) == ("b", 1, 8, False)
    kept = {p.name: s for p, s in list_checkpoints(crashed_dir)}
    # total_limit=2 keeps the two newest plus the end of stage "a" (needed to resume into "b").
    assert set(kept) == {"checkpoint-12", "checkpoint-17", "checkpoint-22"}
    assert kept["checkpoint-12"].stage == "a" and kept["checkpoint-12"].stage_completed

    reset_accelerate_state()
    resumed = run_two_stage_recipe(crashed_dir, resume="latest")
    # Only the remaining 36 - 20 = 16 batches of stage b ran; stage "a" was restored, not re-run.
    assert resumed["calls"] == 16
    assert torch.equal(resumed["anchors"], reference["anchors"])
    for name, tensor in reference["weights"].items():
        assert torch.equal(resumed["weights"][name], tensor), name
    assert resumed["final"] == reference["final"]
    evals = [e for e in ref_state.log_history if "mAP" in e]
    assert [e for e in resumed["state"].log_history if "mAP" in e] == evals
    assert len(evals) == 5  # 2 epochs of "a" + 3 of "b"
    assert resumed["state"].global_step == ref_state.global_step


def test_resume_from_a_finished_run_trains_nothing(tmp_path):
    first = run_two_stage_recipe(tmp_path)
    reset_accelerate_state()
    again = run_two_stage_recipe(tmp_path, resume="latest")
    assert again["calls"] == 0
    for name, tensor in first["weights"].items():
        assert torch.equal(again["weights"][name], tensor)


def test_crash_while_saving_leaves_previous_checkpoint_as_latest(tmp_path, monkeypatch):
    accelerator = create_accelerator(tmp_path, seed=0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    save_checkpoint(accelerator, tmp_path, TrainerState(stage="s", stage_index=0, global_step=5))

    real_save_files = checkpoint_module._save_training_files

    def dying_save_files(accelerator, folder):
        real_save_files(accelerator, folder)  # files written, then the process "dies"
        raise Crash("killed while saving")

    monkeypatch.setattr(checkpoint_module, "_save_training_files", dying_save_files)
    with pytest.raises(Crash):
        save_checkpoint(accelerator, tmp_path, TrainerState(stage="s", stage_index=0, global_step=10))
    leftovers = [p.name for p in (tmp_path / "checkpoints").iterdir()]
    assert ".tmp-checkpoint-10" in leftovers and "checkpoint-10" not in leftovers
    assert Path(find_latest_checkpoint(tmp_path)).name == "checkpoint-5"

    # A folder that looks like a checkpoint but lacks trainer_state.json is ignored too.
    (tmp_path / "checkpoints" / "checkpoint-99").mkdir()
    assert Path(find_latest_checkpoint(tmp_path)).name == "checkpoint-5"

    monkeypatch.setattr(checkpoint_module, "_save_training_files", real_save_files)
    save_checkpoint(accelerator, tmp_path, TrainerState(stage="s", stage_index=0, global_step=15))
    names = {p.name for p in (tmp_path / "checkpoints").iterdir()}
    assert ".tmp-checkpoint-10" not in names  # cleaned by the next save
    assert Path(find_latest_checkpoint(tmp_path)).name == "checkpoint-15"


def test_resume_errors_name_the_problem(tmp_path):
    accelerator = create_accelerator(tmp_path, seed=0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        StageRunner(accelerator, tmp_path, ["a"], resume=str(tmp_path / "nope"))
    incomplete = tmp_path / "checkpoints" / "checkpoint-3"
    incomplete.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"trainer_state\.json is missing"):
        StageRunner(accelerator, tmp_path, ["a"], resume=str(incomplete))
    layer = torch.nn.Linear(2, 2)
    accelerator.prepare(layer, torch.optim.SGD(layer.parameters(), lr=0.1))
    save_checkpoint(accelerator, tmp_path, TrainerState(stage="other", stage_index=0, global_step=4))
    with pytest.raises(ValueError, match="stage 'other'"):
        StageRunner(accelerator, tmp_path, ["a", "b"], resume="latest")
    # --resume with no checkpoint yet starts from scratch.
    fresh = StageRunner(accelerator, tmp_path / "empty", ["a"], resume="latest")
    assert fresh.state.global_step == 0
