"""StageRunner: accumulation, clipping, scheduler stepping, logging, sampler epochs, callbacks."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from training_toys import reset_accelerate_state

from hf_reid.training import (
    StageRunner,
    build_optimizer,
    build_scheduler,
    create_accelerator,
    scheduled_lr,
    set_sampler_epoch,
)


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    reset_accelerate_state()
    yield
    reset_accelerate_state()


def regression_data(n: int = 24, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(n, 1, generator=g)
    return TensorDataset(x, y)


def test_gradient_accumulation_matches_a_hand_written_loop(tmp_path):
    data = regression_data()
    model = nn.Linear(3, 1)
    reference = copy.deepcopy(model)
    accelerator = create_accelerator(tmp_path, seed=0, gradient_accumulation_steps=3)
    optimizer = build_optimizer(model, "sgd", lr=0.05, momentum=0.0)
    scheduler = build_scheduler(optimizer, "multistep", milestones=(2,), gamma=0.5, step_unit="step")
    loader = DataLoader(data, batch_size=4)  # 6 batches -> 2 optimizer steps per epoch
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)

    def compute_loss(batch):
        x, y = batch
        loss = nn.functional.mse_loss(model(x), y)
        return loss, {"mse": loss.detach()}

    runner = StageRunner(accelerator, tmp_path, ["fit"], log_every=100, progress_bar=False)
    state = runner.train_stage(
        "fit",
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        dataloader=loader,
        compute_loss=compute_loss,
        epochs=2,
    )
    assert (state.global_step, state.stage_step, state.epoch, state.stage_completed) == (4, 4, 2, True)
    assert scheduler.last_epoch == 4  # stepped once per optimizer step

    # The same by hand: mean of 3 batch losses per step, lr 0.05 for 2 steps then 0.025.
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.05)
    step = 0
    for _ in range(2):
        for start in range(0, 24, 12):
            ref_opt.zero_grad()
            for b in range(start, start + 12, 4):
                x, y = data[b : b + 4]
                (nn.functional.mse_loss(reference(x), y) / 3).backward()
            for group in ref_opt.param_groups:
                group["lr"] = 0.05 * (0.5 if step >= 2 else 1.0)
            ref_opt.step()
            step += 1
    unwrapped = accelerator.unwrap_model(model)
    for p, q in zip(unwrapped.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_epoch_scheduler_sets_the_rate_each_epoch_trains_with(tmp_path):
    accelerator = create_accelerator(tmp_path, seed=0)
    model = nn.Linear(3, 1)
    optimizer = build_optimizer(model, "adam", lr=5e-6)
    kwargs = {"milestones": (3,), "warmup": 2, "warmup_factor": 0.1, "start_index": 1}
    scheduler = build_scheduler(optimizer, "multistep", **kwargs)
    model, optimizer, loader = accelerator.prepare(
        model, optimizer, DataLoader(regression_data(), batch_size=8)
    )
    seen: list[float] = []

    def compute_loss(batch):
        seen.append(optimizer.param_groups[0]["lr"])
        x, y = batch
        return nn.functional.mse_loss(model(x), y), {}

    StageRunner(accelerator, tmp_path, ["s"], progress_bar=False).train_stage(
        "s",
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        dataloader=loader,
        compute_loss=compute_loss,
        epochs=4,
    )
    per_epoch = [seen[i : i + 3] for i in range(0, 12, 3)]
    assert all(len(set(rates)) == 1 for rates in per_epoch)  # constant within an epoch
    # CLIP-ReID convention: epoch e (1-based) trains at schedule position e.
    expected = [5e-6 * 0.55, 5e-6, 5e-6 * 0.1, 5e-6 * 0.1]
    assert [rates[0] for rates in per_epoch] == pytest.approx(expected, rel=1e-12)
    assert [rates[0] for rates in per_epoch] == pytest.approx(
        [
            scheduled_lr(e, 5e-6, name="multistep", **{k: v for k, v in kwargs.items() if k != "start_index"})
            for e in range(1, 5)
        ]
    )


def test_gradient_clipping_bounds_the_update(tmp_path):
    accelerator = create_accelerator(tmp_path, seed=0)
    weight = nn.Parameter(torch.zeros(4))
    model = nn.Module()
    model.weight = weight
    optimizer = torch.optim.SGD([weight], lr=1.0)
    model, optimizer, loader = accelerator.prepare(
        model, optimizer, DataLoader(TensorDataset(torch.ones(1, 4)), batch_size=1)
    )

    def compute_loss(batch):
        return 1000.0 * (model.weight * batch[0]).sum(), {}

    StageRunner(accelerator, tmp_path, ["s"], progress_bar=False).train_stage(
        "s",
        model=model,
        optimizer=optimizer,
        dataloader=loader,
        compute_loss=compute_loss,
        epochs=1,
        max_grad_norm=0.5,
    )
    # Unclipped the step would be lr * 1000 per coordinate; clipped its norm is 0.5.
    assert weight.detach().norm().item() == pytest.approx(0.5, rel=1e-5)


def test_logs_window_means_of_every_term_and_epoch_metrics(tmp_path):
    accelerator = create_accelerator(tmp_path, seed=0)
    model = nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    values = TensorDataset(torch.arange(1.0, 6.0))  # batches 1, 2, 3, 4, 5
    model, optimizer, loader = accelerator.prepare(model, optimizer, DataLoader(values, batch_size=1))

    def compute_loss(batch):
        (value,) = batch
        loss = model.weight.sum() * 0 + value.sum()
        return loss, {"double": 2 * value.sum(), "const": 7.0}

    metrics = iter([{"mAP": 0.1}, {"mAP": 0.5}, {"mAP": 0.3}])
    runner = StageRunner(accelerator, tmp_path, ["s"], log_every=2, progress_bar=False)
    state = runner.train_stage(
        "s",
        model=model,
        optimizer=optimizer,
        dataloader=loader,
        compute_loss=compute_loss,
        epochs=3,
        on_epoch_end=lambda state: next(metrics),
        metric_for_best="mAP",
    )
    train_logs = [e for e in state.log_history if "loss" in e]
    # per epoch: windows (1, 2), (3, 4) and the epoch-end flush (5)
    assert [e["loss"] for e in train_logs[:3]] == [1.5, 3.5, 5.0]
    assert [e["double"] for e in train_logs[:3]] == [3.0, 7.0, 10.0]
    assert all(e["const"] == 7.0 and e["stage"] == "s" for e in train_logs)
    assert [(e["epoch"], e["step"]) for e in train_logs[:3]] == [(1, 2), (1, 4), (1, 5)]
    evals = [e for e in state.log_history if "mAP" in e]
    assert [(e["epoch"], e["mAP"]) for e in evals] == [(1, 0.1), (2, 0.5), (3, 0.3)]
    assert (state.best_metric, state.best_epoch) == (0.5, 2)


def test_lower_is_better_and_missing_best_metric(tmp_path):
    accelerator = create_accelerator(tmp_path, seed=0)
    model = nn.Linear(1, 1)
    model, optimizer, loader = accelerator.prepare(
        model,
        torch.optim.SGD(model.parameters(), lr=0.0),
        DataLoader(TensorDataset(torch.ones(2, 1)), batch_size=1),
    )

    def compute_loss(batch):
        return model(batch[0]).sum(), {}

    metrics = iter([{"loss": 3.0}, {"loss": 1.0}, {"loss": 2.0}])
    runner = StageRunner(accelerator, tmp_path, ["s", "t"], progress_bar=False)
    state = runner.train_stage(
        "s",
        model=model,
        optimizer=optimizer,
        dataloader=loader,
        compute_loss=compute_loss,
        epochs=3,
        on_epoch_end=lambda s: next(metrics),
        metric_for_best="loss",
        greater_is_better=False,
    )
    assert (state.best_metric, state.best_epoch) == (1.0, 2)
    with pytest.raises(KeyError, match="metric_for_best 'mAP' is not among"):
        runner.train_stage(
            "t",
            model=model,
            optimizer=optimizer,
            dataloader=loader,
            compute_loss=compute_loss,
            epochs=1,
            on_epoch_end=lambda s: {"R1": 1.0},
            metric_for_best="mAP",
        )


class RecordingBatchSampler:
    def __init__(self) -> None:
        self.epochs: list[int] = []
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.epochs.append(epoch)

    def __len__(self) -> int:
        return 2

    def __iter__(self):
        g = torch.Generator().manual_seed(self.epoch)
        order = torch.randperm(8, generator=g).tolist()
        yield order[:4]
        yield order[4:]


def test_sampler_epoch_is_set_before_each_epoch(tmp_path):
    accelerator = create_accelerator(tmp_path, seed=0)
    sampler = RecordingBatchSampler()
    model = nn.Linear(1, 1)
    loader = DataLoader(TensorDataset(torch.arange(8.0)[:, None]), batch_sampler=sampler)
    model, optimizer, loader = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=0.0), loader)
    orders = []

    def compute_loss(batch):
        orders.append(batch[0].flatten().tolist())
        return model(batch[0]).sum(), {}

    StageRunner(accelerator, tmp_path, ["s"], progress_bar=False).train_stage(
        "s", model=model, optimizer=optimizer, dataloader=loader, compute_loss=compute_loss, epochs=3
    )
    assert sorted(set(sampler.epochs)) == [0, 1, 2]
    for epoch in range(3):
        expected = torch.randperm(8, generator=torch.Generator().manual_seed(epoch)).tolist()
        assert orders[2 * epoch] + orders[2 * epoch + 1] == expected

    class Inner:
        epoch = None

        def set_epoch(self, epoch):
            self.epoch = epoch

    class Outer:
        def __init__(self):
            self.batch_sampler = type("Shard", (), {"batch_sampler": Inner()})()

    outer = Outer()
    set_sampler_epoch(outer, 7)
    assert outer.batch_sampler.batch_sampler.epoch == 7


def test_runner_errors(tmp_path):
    accelerator = create_accelerator(tmp_path, seed=0)
    model = nn.Linear(1, 1)
    raw_optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(TensorDataset(torch.ones(2, 1)), batch_size=1)
    runner = StageRunner(accelerator, tmp_path, ["a", "b"], progress_bar=False)

    def nan_loss(batch):
        return model(batch[0]).sum() * float("nan"), {"term": 1.0}

    common = {"model": model, "dataloader": loader, "epochs": 1, "compute_loss": nan_loss}
    with pytest.raises(TypeError, match=r"accelerator\.prepare"):
        runner.train_stage("a", optimizer=raw_optimizer, **common)
    runner = StageRunner(accelerator, tmp_path, ["a", "b"], progress_bar=False)
    optimizer = accelerator.prepare(raw_optimizer)
    with pytest.raises(RuntimeError, match="out of order; the next stage is 'a'"):
        runner.train_stage("b", optimizer=optimizer, **common)
    with pytest.raises(ValueError, match="Unknown stage 'c'"):
        runner.train_stage("c", optimizer=optimizer, **common)
    with pytest.raises(FloatingPointError, match=r"Stage 'a', epoch 1, step 1: the loss is nan"):
        runner.train_stage("a", optimizer=optimizer, **common)
    with pytest.raises(ValueError, match="stage names"):
        StageRunner(accelerator, tmp_path, ["a", ""])
    with pytest.raises(ValueError, match="continues 'b', which is not an earlier stage"):
        StageRunner(accelerator, tmp_path, ["a", "b"], progress_bar=False).train_stage(
            "a", optimizer=optimizer, continues="b", **common
        )


class EpochRecorder:
    """A sampler-side object that records the data epochs the runner announces."""

    def __init__(self):
        self.epochs: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)


def test_a_stage_continues_another_stages_schedule_and_a_stage_is_re_entered(tmp_path):
    """Stages a, b, b (re-entered), c; c continues a's optimizer and epoch-stepped schedule
    (CLIP-FGDI's last stage): its learning rates follow the schedule from where a stopped, and its data epochs
    continue a's count. A resume from a checkpoint inside c restores every earlier stage and ends
    with the same weights."""
    data = regression_data()

    def build():
        reset_accelerate_state()
        model = nn.Linear(3, 1)
        accelerator = create_accelerator(tmp_path, seed=0)
        optimizer = build_optimizer(model, "sgd", lr=0.1, momentum=0.0)
        scheduler = build_scheduler(optimizer, "multistep", milestones=(2, 4), gamma=0.5)
        loader = DataLoader(data, batch_size=6)
        model, optimizer = accelerator.prepare(model, optimizer)
        return model, accelerator, optimizer, scheduler, loader

    def run(resume=None, epochs_of_c=3):
        model, accelerator, optimizer, scheduler, loader = build()
        runner = StageRunner(
            accelerator, tmp_path, ["a", "b", "b", "c"], checkpoint_every=2, resume=resume, progress_bar=False
        )
        recorder = EpochRecorder()
        loader.set_epoch = recorder.set_epoch
        lrs = []

        def loss(batch):
            lrs.append((runner.state.stage, runner.state.stage_index, optimizer.param_groups[0]["lr"]))
            return nn.functional.mse_loss(model(batch[0]), batch[1]), {}

        common = {"model": model, "dataloader": loader, "compute_loss": loss}
        runner.train_stage("a", optimizer=optimizer, scheduler=scheduler, epochs=2, **common)
        other = accelerator.prepare(build_optimizer(model, "sgd", lr=0.01, momentum=0.0))
        runner.train_stage("b", optimizer=other, epochs=1, **common)
        runner.train_stage("b", optimizer=other, epochs=1, **common)  # re-entered: a stage of its own
        runner.train_stage(
            "c", optimizer=optimizer, scheduler=scheduler, epochs=epochs_of_c, continues="a", **common
        )
        return model, recorder.epochs, lrs

    model, epochs, lrs = run()
    # a: epochs 0, 1; b: 0; b again: 0; c continues a: 2, 3, 4
    assert epochs == [0, 1, 0, 0, 2, 3, 4]
    c_lrs = [lr for stage, index, lr in lrs if index == 3]
    assert c_lrs[::4] == pytest.approx([0.05, 0.05, 0.025])  # a ended at schedule epoch 2
    weights = model.weight.detach().clone()
    # killed inside c: resume from its first checkpoint (stage index 3, mid-stage)
    from hf_reid.training import list_checkpoints

    inside_c = [p for p, s in list_checkpoints(tmp_path) if s.stage_index == 3 and not s.stage_completed]
    resumed, epochs, _ = run(resume=str(inside_c[0]))
    assert torch.equal(resumed.weight.detach(), weights)
    assert epochs[-1] == 4
