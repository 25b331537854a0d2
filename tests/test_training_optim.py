"""Optimizer groups and learning-rate schedules, checked against values computed by hand from
CLIP-ReID's formulas (METHODS.md §1.2, §1.3)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hf_reid.training import build_optimizer, build_param_groups, build_scheduler


class Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(4, 4)
        self.classifier = nn.Linear(4, 3)
        self.prompt_learner = nn.Parameter(torch.zeros(2, 4))
        self.bias_ctx = nn.Parameter(torch.zeros(4))  # named like a bias but is not one
        self.bottleneck = nn.BatchNorm1d(4)
        self.bottleneck.bias.requires_grad_(False)  # BNNeck: frozen bias


def lrs_per_epoch(optimizer, scheduler, epochs: int) -> list[list[float]]:
    """The rates each epoch trains with, stepping like StageRunner (after the epoch)."""
    seen = []
    for _ in range(epochs):
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return seen


def test_clipreid_stage1_cosine_schedule():
    # timm CosineLRScheduler(t_initial=120, lr_min=1e-6, warmup_t=5, warmup_lr_init=1e-5),
    # stepped with scheduler.step(epoch) at the start of epochs 1..120.
    prompt = nn.Parameter(torch.zeros(3))
    optimizer = build_optimizer([("prompt_learner.cls_ctx", prompt)], "adam", lr=3.5e-4, weight_decay=1e-4)
    scheduler = build_scheduler(
        optimizer, "cosine", total=120, warmup=5, warmup_init_lr=1e-5, min_lr=1e-6, start_index=1
    )
    got = [lrs[0] for lrs in lrs_per_epoch(optimizer, scheduler, 120)]
    # Hand-computed: warm-up steps of (3.5e-4 - 1e-5) / 5 = 6.8e-5 from 1e-5.
    assert got[:4] == pytest.approx([7.8e-5, 1.46e-4, 2.14e-4, 2.82e-4], rel=1e-12)
    # Epoch 60: 1e-6 + 0.5 * (3.5e-4 - 1e-6) * (1 + cos(pi / 2)) = 1.755e-4.
    assert got[59] == pytest.approx(1.755e-4, rel=1e-12)
    assert got[119] == pytest.approx(1e-6, rel=1e-12)  # t = t_initial: the cycle is over
    for epoch in range(5, 120):
        expected = 1e-6 + 0.5 * (3.5e-4 - 1e-6) * (1 + math.cos(math.pi * epoch / 120))
        assert got[epoch - 1] == pytest.approx(expected, rel=1e-12)
    assert optimizer.param_groups[0]["weight_decay"] == 1e-4


def test_clipreid_stage2_warmup_multistep_schedule():
    # WarmupMultiStepLR([30, 50], gamma=0.1, warmup_factor=0.1, warmup_iters=10, "linear"),
    # stepped at the start of each epoch; base lr 5e-6, biases x2.
    model = nn.Linear(4, 2)
    optimizer = build_optimizer(model, "adam", lr=5e-6, weight_decay=1e-4, bias_lr_factor=2.0)
    scheduler = build_scheduler(
        optimizer, "multistep", milestones=(30, 50), gamma=0.1, warmup=10, warmup_factor=0.1, start_index=1
    )
    names = [g["name"] for g in optimizer.param_groups]
    assert names == ["default", "default.bias"]
    got = lrs_per_epoch(optimizer, scheduler, 60)
    for epoch, (weight_lr, bias_lr) in enumerate(got, start=1):
        if epoch < 10:  # factor 0.1 * (1 - e/10) + e/10
            expected = 5e-6 * (0.1 + 0.9 * epoch / 10)
        elif epoch < 30:
            expected = 5e-6
        elif epoch < 50:
            expected = 5e-7
        else:
            expected = 5e-8
        assert weight_lr == pytest.approx(expected, rel=1e-12), epoch
        assert bias_lr == pytest.approx(2 * expected, rel=1e-12), epoch
    assert got[0][0] == pytest.approx(9.5e-7, rel=1e-12)
    assert got[8][0] == pytest.approx(4.55e-6, rel=1e-12)


def test_step_unit_schedule_with_per_group_rates_and_absolute_warmup():
    model = Head()
    optimizer = build_optimizer(
        model, "adamw", lr=1e-3, lr_overrides={"prompt": 1e-2, r"^classifier\.": 5e-3}, weight_decay=0.05
    )
    scheduler = build_scheduler(
        optimizer, "cosine", total=20, warmup=4, warmup_init_lr=1e-4, step_unit="step"
    )
    assert scheduler.step_unit == "step"
    peaks = {g["name"]: g["initial_lr"] for g in optimizer.param_groups}
    got = lrs_per_epoch(optimizer, scheduler, 21)
    for t, lrs in enumerate(got):
        for group_lr, group in zip(lrs, optimizer.param_groups):
            peak = peaks[group["name"]]
            if t < 4:  # every group ramps from the same absolute 1e-4 to its own peak (timm)
                expected = 1e-4 + t * (peak - 1e-4) / 4
            elif t < 20:
                expected = 0.5 * peak * (1 + math.cos(math.pi * t / 20))
            else:
                expected = 0.0
            assert group_lr == pytest.approx(expected, abs=1e-15)
    assert got[0] == pytest.approx([1e-4] * len(optimizer.param_groups))


def test_param_groups_bias_factor_overrides_and_frozen_parameters():
    groups = build_param_groups(
        Head(),
        lr=1.0,
        weight_decay=0.1,
        bias_lr_factor=2.0,
        weight_decay_bias=0.0,
        lr_overrides={"classifier": 10.0, "prompt": 3.0},
    )
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"default", "default.bias", "classifier", "classifier.bias", "prompt"}
    assert sorted(by_name["default"]["param_names"]) == ["backbone.weight", "bias_ctx", "bottleneck.weight"]
    assert by_name["default.bias"]["param_names"] == ["backbone.bias"]  # bottleneck.bias is frozen
    assert (by_name["default"]["lr"], by_name["default"]["weight_decay"]) == (1.0, 0.1)
    assert (by_name["default.bias"]["lr"], by_name["default.bias"]["weight_decay"]) == (2.0, 0.0)
    assert (by_name["classifier"]["lr"], by_name["classifier.bias"]["lr"]) == (10.0, 20.0)
    assert by_name["prompt"]["param_names"] == ["prompt_learner"] and by_name["prompt"]["lr"] == 3.0
    total = sum(p.numel() for g in groups for p in g["params"])
    assert total == sum(p.numel() for p in Head().parameters() if p.requires_grad)


def test_sgd_momentum_and_adam_weight_decay_reach_the_optimizer():
    sgd = build_optimizer(nn.Linear(2, 2), "sgd", lr=0.1, momentum=0.5)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.5
    adam = build_optimizer(nn.Linear(2, 2), "adam", lr=0.1, weight_decay=1e-4)
    assert isinstance(adam, torch.optim.Adam) and not isinstance(adam, torch.optim.AdamW)
    ready = build_optimizer(
        [{"params": nn.Linear(2, 2).parameters(), "lr": 0.5}], "adamw", lr=0.1, weight_decay=0.2
    )
    assert ready.param_groups[0]["lr"] == 0.5 and ready.param_groups[0]["weight_decay"] == 0.2


def test_scheduler_state_round_trip_continues_the_schedule():
    model = nn.Linear(2, 2)
    optimizer = build_optimizer(model, "adam", lr=1.0)
    scheduler = build_scheduler(optimizer, "multistep", milestones=(2, 4), warmup=1, warmup_factor=0.5)
    lrs_per_epoch(optimizer, scheduler, 3)
    state = scheduler.state_dict()
    optimizer2 = build_optimizer(nn.Linear(2, 2), "adam", lr=1.0)
    scheduler2 = build_scheduler(optimizer2, "multistep", milestones=(2, 4), warmup=1, warmup_factor=0.5)
    scheduler2.load_state_dict(state)
    optimizer2.step()
    scheduler2.step()
    optimizer.step()
    scheduler.step()
    assert (
        scheduler2.get_last_lr() == scheduler.get_last_lr() == pytest.approx([0.01, 0.01])
    )  # t = 4: gamma**2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "linear"}, "Unknown schedule 'linear'"),
        ({"name": "cosine"}, "needs total > 0"),
        ({"name": "multistep"}, "needs milestones"),
        ({"name": "multistep", "milestones": (50, 30)}, "must be increasing"),
        ({"name": "constant", "warmup_factor": 0.1, "warmup_init_lr": 1e-5}, "not both"),
        ({"name": "constant", "step_unit": "iteration"}, "step_unit must be"),
    ],
)
def test_scheduler_argument_errors(kwargs, message):
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match=message):
        build_scheduler(optimizer, **kwargs)


def test_optimizer_argument_errors():
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(frozen, "adam", lr=0.1)
    with pytest.raises(ValueError, match="Unknown optimizer 'lamb'"):
        build_optimizer(nn.Linear(2, 2), "lamb", lr=0.1)
