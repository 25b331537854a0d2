"""Optimizer and learning-rate schedule factories shared by the recipes.

:func:`build_optimizer` turns named parameters into parameter groups with per-group learning
rates (bias factor, name-pattern overrides) the way the CLIP-ReID family does, then builds Adam,
AdamW or SGD. :func:`build_scheduler` gives a warm-up followed by cosine, multi-step or constant
decay, stepped per epoch or per optimizer step. It reproduces CLIP-ReID's two schedules:

* stage 1 (timm ``CosineLRScheduler``): ``build_scheduler(opt, "cosine", warmup=5,
  warmup_init_lr=1e-5, min_lr=1e-6, total=120, start_index=1)``;
* stage 2 (``WarmupMultiStepLR``): ``build_scheduler(opt, "multistep", warmup=10,
  warmup_factor=0.1, milestones=(30, 50), gamma=0.1, start_index=1)``.

``start_index=1`` reflects that those schedulers are stepped at the *start* of every 1-based
epoch, so the first epoch already trains at schedule position 1 (PyTorch's usual convention,
stepping at the end of an epoch, is ``start_index=0``).
"""

from __future__ import annotations

import logging
import math
import re
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["WarmupLRScheduler", "build_optimizer", "build_param_groups", "build_scheduler", "scheduled_lr"]

logger = logging.getLogger(__name__)

OptimizerName = Literal["adam", "adamw", "sgd"]
ScheduleName = Literal["cosine", "multistep", "constant"]
StepUnit = Literal["epoch", "step"]


def _is_bias(name: str) -> bool:
    return name.rsplit(".", 1)[-1] == "bias"


def build_param_groups(
    named_params: nn.Module | Iterable[tuple[str, nn.Parameter]],
    *,
    lr: float,
    weight_decay: float = 0.0,
    bias_lr_factor: float = 1.0,
    weight_decay_bias: float | None = None,
    lr_overrides: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Group trainable parameters by learning rate and weight decay.

    Args:
        named_params: a module or ``(name, parameter)`` pairs; parameters with
            ``requires_grad=False`` are left out (they are frozen).
        lr: the base learning rate.
        weight_decay: weight decay of non-bias parameters.
        bias_lr_factor: learning-rate multiplier of biases (CLIP-ReID: 2). A bias is a parameter
            whose last name component is ``bias``.
        weight_decay_bias: weight decay of biases (defaults to ``weight_decay``).
        lr_overrides: ``{regex: lr}``; a parameter whose name matches a pattern (``re.search``,
            first match in order) gets that learning rate instead of ``lr`` (the bias factor still
            applies), e.g. ``{"prompt_learner": 3.5e-4, "domain_classifier": 1e-2}``.

    Returns:
        Parameter groups for ``torch.optim``, each with ``params``, ``lr``, ``weight_decay`` and a
        ``name`` (the matched pattern or ``default``, plus ``.bias``) used in logs.
    """
    if isinstance(named_params, nn.Module):
        named_params = named_params.named_parameters()
    overrides = dict(lr_overrides or {})
    compiled = [(pattern, re.compile(pattern), value) for pattern, value in overrides.items()]
    if weight_decay_bias is None:
        weight_decay_bias = weight_decay
    groups: dict[tuple[str, bool], dict[str, Any]] = {}
    matched_patterns: set[str] = set()
    for name, param in named_params:
        if not param.requires_grad:
            continue
        group_name, group_lr = "default", lr
        for pattern, rx, value in compiled:
            if rx.search(name):
                group_name, group_lr = pattern, value
                matched_patterns.add(pattern)
                break
        bias = _is_bias(name)
        key = (group_name, bias)
        if key not in groups:
            groups[key] = {
                "params": [],
                "param_names": [],
                "lr": group_lr * (bias_lr_factor if bias else 1.0),
                "weight_decay": weight_decay_bias if bias else weight_decay,
                "name": f"{group_name}.bias" if bias else group_name,
            }
        groups[key]["params"].append(param)
        groups[key]["param_names"].append(name)
    if not groups:
        raise ValueError(
            "build_param_groups: no trainable parameters (every parameter has requires_grad=False); "
            "unfreeze the parameters this stage should train."
        )
    for pattern in overrides:
        if pattern not in matched_patterns:
            logger.warning("lr override pattern %r matched no trainable parameter.", pattern)
    return list(groups.values())


def build_optimizer(
    params: nn.Module | Iterable[tuple[str, nn.Parameter]] | Sequence[Mapping[str, Any]],
    name: OptimizerName = "adam",
    *,
    lr: float,
    weight_decay: float = 0.0,
    bias_lr_factor: float = 1.0,
    weight_decay_bias: float | None = None,
    lr_overrides: Mapping[str, float] | None = None,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.optim.Optimizer:
    """Build Adam, AdamW or SGD over trainable parameters with per-group learning rates.

    ``params`` is a module, ``(name, parameter)`` pairs (grouped by :func:`build_param_groups`)
    or ready parameter groups (dicts with ``params``; missing ``lr``/``weight_decay`` default to
    the arguments). Adam applies weight decay as L2 (as CLIP-ReID does), AdamW decoupled.
    """
    if isinstance(params, nn.Module):
        params = list(params.named_parameters())
    else:
        params = list(params)
    if params and isinstance(params[0], Mapping):
        groups = [dict(g) for g in params]
        for group in groups:
            group.setdefault("lr", lr)
            group.setdefault("weight_decay", weight_decay)
    else:
        groups = build_param_groups(
            params,
            lr=lr,
            weight_decay=weight_decay,
            bias_lr_factor=bias_lr_factor,
            weight_decay_bias=weight_decay_bias,
            lr_overrides=lr_overrides,
        )
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"Unknown optimizer {name!r}: use 'adam', 'adamw' or 'sgd'.")


def scheduled_lr(
    t: int,
    base_lr: float,
    *,
    name: ScheduleName,
    warmup: int = 0,
    warmup_init_lr: float | None = None,
    warmup_factor: float | None = None,
    warmup_method: Literal["linear", "constant"] = "linear",
    total: int | None = None,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    min_lr: float = 0.0,
) -> float:
    """The learning rate at schedule position ``t`` for a group whose peak rate is ``base_lr``.

    * Warm-up (``t < warmup``): from ``warmup_init_lr`` (absolute) or ``base_lr * warmup_factor``
      linearly towards ``base_lr`` (``warmup_method="constant"`` holds the start value).
    * ``cosine`` (timm ``CosineLRScheduler``, one cycle, no warm-up prefix):
      ``min_lr + (base_lr - min_lr) * (1 + cos(pi * t / total)) / 2`` for ``t < total``, then
      ``min_lr``.
    * ``multistep`` (``WarmupMultiStepLR``): ``base_lr * gamma ** bisect_right(milestones, t)``;
      the warm-up multiplies this decay too.
    * ``constant``: ``base_lr`` after the warm-up.
    """
    start = warmup_init_lr if warmup_init_lr is not None else base_lr * (warmup_factor or 0.0)
    if t < warmup:
        ramp = start if warmup_method == "constant" else start + (base_lr - start) * t / warmup
    else:
        ramp = base_lr
    if name == "cosine":
        if t < warmup:
            return ramp
        if total is None:
            raise ValueError("The cosine schedule needs total (its length).")
        if t >= total:
            return min_lr
        return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * t / total))
    if name == "multistep":
        return ramp * gamma ** bisect_right(list(milestones), t)
    if name == "constant":
        return ramp
    raise ValueError(f"Unknown schedule {name!r}: use 'cosine', 'multistep' or 'constant'.")


class WarmupLRScheduler(LRScheduler):
    """Warm-up then cosine / multi-step / constant decay, evaluated in closed form.

    Every parameter group follows :func:`scheduled_lr` with its own initial ``lr`` as peak. The
    position is ``last_epoch + start_index``, where ``last_epoch`` counts :meth:`step` calls.
    ``step_unit`` tells the training loop whether to call :meth:`step` once per epoch or once per
    optimizer step. The state dict holds plain numbers only, so ``accelerator.save_state``
    checkpoints it when it is registered with ``accelerator.register_for_checkpointing``.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        name: ScheduleName,
        step_unit: StepUnit = "epoch",
        start_index: int = 0,
        warmup: int = 0,
        warmup_init_lr: float | None = None,
        warmup_factor: float | None = None,
        warmup_method: Literal["linear", "constant"] = "linear",
        total: int | None = None,
        milestones: Sequence[int] = (),
        gamma: float = 0.1,
        min_lr: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        self.name = name
        self.step_unit = step_unit
        self.start_index = start_index
        self.warmup = warmup
        self.warmup_init_lr = warmup_init_lr
        self.warmup_factor = warmup_factor
        self.warmup_method = warmup_method
        self.total = total
        self.milestones = list(milestones)
        self.gamma = gamma
        self.min_lr = min_lr
        super().__init__(optimizer, last_epoch)

    def lr_at(self, t: int, base_lr: float) -> float:
        """The rate of a group with peak ``base_lr`` at schedule position ``t``."""
        return scheduled_lr(
            t,
            base_lr,
            name=self.name,
            warmup=self.warmup,
            warmup_init_lr=self.warmup_init_lr,
            warmup_factor=self.warmup_factor,
            warmup_method=self.warmup_method,
            total=self.total,
            milestones=self.milestones,
            gamma=self.gamma,
            min_lr=self.min_lr,
        )

    def get_lr(self) -> list[float]:
        t = self.last_epoch + self.start_index
        return [self.lr_at(t, base) for base in self.base_lrs]


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    name: ScheduleName = "cosine",
    *,
    total: int | None = None,
    warmup: int = 0,
    warmup_init_lr: float | None = None,
    warmup_factor: float | None = None,
    warmup_method: Literal["linear", "constant"] = "linear",
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    min_lr: float = 0.0,
    step_unit: StepUnit = "epoch",
    start_index: int = 0,
) -> WarmupLRScheduler:
    """Build a warm-up + decay schedule; all lengths are in ``step_unit`` (epochs or steps).

    Args:
        optimizer: the optimizer whose groups' current ``lr`` are the peak rates.
        name: ``cosine`` (needs ``total``), ``multistep`` (needs ``milestones``) or ``constant``.
        total: length of the cosine cycle; the rate stays at ``min_lr`` from there on.
        warmup: number of warm-up epochs/steps (0: none).
        warmup_init_lr: absolute start rate of the warm-up (timm style, e.g. 1e-5).
        warmup_factor: relative start rate of the warm-up (``WarmupMultiStepLR`` style, e.g. 0.1).
            Give at most one of the two; with neither, the warm-up starts from 0.
        warmup_method: ``linear`` ramp or ``constant`` start rate during the warm-up.
        milestones: positions where ``multistep`` multiplies the rate by ``gamma``.
        min_lr: the floor of ``cosine``.
        step_unit: ``epoch`` (step once per epoch) or ``step`` (once per optimizer step);
            :class:`~hf_reid.training.loop.StageRunner` reads it.
        start_index: schedule position of the first epoch/step; 1 reproduces CLIP-ReID (see the
            module docstring).
    """
    if name not in ("cosine", "multistep", "constant"):
        raise ValueError(f"Unknown schedule {name!r}: use 'cosine', 'multistep' or 'constant'.")
    if step_unit not in ("epoch", "step"):
        raise ValueError(f"step_unit must be 'epoch' or 'step', got {step_unit!r}.")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}.")
    if warmup_init_lr is not None and warmup_factor is not None:
        raise ValueError("Give warmup_init_lr (absolute) or warmup_factor (relative), not both.")
    if name == "cosine" and (total is None or total <= 0):
        raise ValueError(f"The cosine schedule needs total > 0 (its length in {step_unit}s), got {total}.")
    if name == "multistep":
        if not milestones:
            raise ValueError("The multistep schedule needs milestones, e.g. (30, 50).")
        if list(milestones) != sorted(milestones):
            raise ValueError(f"milestones must be increasing, got {list(milestones)}.")
    return WarmupLRScheduler(
        optimizer,
        name=name,
        step_unit=step_unit,
        start_index=start_index,
        warmup=warmup,
        warmup_init_lr=warmup_init_lr,
        warmup_factor=warmup_factor,
        warmup_method=warmup_method,
        total=total,
        milestones=milestones,
        gamma=gamma,
        min_lr=min_lr,
    )
