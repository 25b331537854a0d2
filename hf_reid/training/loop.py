"""The training loop every recipe stage shares, with checkpoints and resume.

A recipe declares its stages once and calls :meth:`StageRunner.train_stage` for each, handing
in what the method itself decides: the model(s), optimizer, scheduler, data and a
``compute_loss(batch) -> (loss, logs)`` function. The runner does the bookkeeping around it:
gradient accumulation, clipping, optimizer and scheduler steps, per-term loss logging (tqdm on
the main process, ``accelerator.log`` for trackers, ``state.log_history``), the sampler epoch,
periodic checkpoints, an epoch-end callback (e.g. evaluation) and resume.

Resume across stages: on ``--resume``, every stage before the checkpoint's stage restores the
checkpoint saved at its own end (so the recipe code between stages, e.g. computing text features
of the learned prompts, sees the same model as in the uninterrupted run) and returns without
training; the checkpoint's stage restores it and continues from the next batch. Checkpoints are
verified (sha256) before they are loaded, and only the resumed run's own checkpoints are used.

Runs: every checkpoint records the run's fingerprint (seed and ``run_config``). A fresh run in a
folder holding another run's checkpoints is refused unless ``overwrite_output_dir`` (which deletes
them), a resume from another run's checkpoint too; a fresh run identical to the one there
replaces its checkpoints (removed when the new run writes its first). See
:mod:`hf_reid.training.checkpoint`.

What multi-stage methods need beyond that:

* ``on_epoch_start(state)`` runs at the start of every epoch, before the sampler learns the
  epoch: an unsupervised method re-clusters there and hands the sampler its new labels. It does
  not run again for an epoch that a resume enters half-way: that epoch's labels come back with
  the checkpoint.
* recipe state objects (``StageRunner(..., recipe_state={"labels": obj})`` or
  :meth:`StageRunner.track_state`): anything with ``state_dict`` / ``load_state_dict`` (pseudo-
  labels, a cluster memory) is saved in every checkpoint and restored on resume, pickle-free.
* a stage name may appear more than once in ``stages`` (a stage re-entered, e.g. alternating
  clustering and prompt rounds), and ``train_stage(..., continues="adapt")`` goes on with an
  earlier stage's optimizer and schedule (pass the same prepared optimizer and scheduler): its
  data epochs continue that stage's count, as CLIP-FGDI's last stage does.

Reproducible resume needs the data order to depend on (seed, epoch) only: use samplers with
``set_epoch`` (the PK sampler, or ``create_accelerator``'s seedable sampler) and draw random
augmentations per sample rather than from a stream shared by the whole epoch.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.optimizer import AcceleratedOptimizer
from accelerate.scheduler import AcceleratedScheduler
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .checkpoint import (
    CheckpointError,
    RunIdentity,
    Stateful,
    TrainerState,
    list_checkpoints,
    load_checkpoint,
    prepare_run_folder,
    read_trainer_state,
    remove_checkpoints,
    save_checkpoint,
)

__all__ = ["EpochEndFn", "EpochStartFn", "LossFn", "StageRunner", "StepEndFn", "set_sampler_epoch"]

logger = logging.getLogger(__name__)

LossFn = Callable[[Any], tuple[torch.Tensor, Mapping[str, float | torch.Tensor]]]
"""``compute_loss(batch) -> (loss, logs)``: ``logs`` maps loss-term names to scalars."""
EpochEndFn = Callable[[TrainerState], Mapping[str, float] | None]
"""``on_epoch_end(state) -> metrics or None``; called on every process after each epoch."""
EpochStartFn = Callable[[TrainerState], None]
"""``on_epoch_start(state)``; called on every process before each epoch's sampler epoch is set."""
StepEndFn = Callable[[TrainerState], None]
"""``on_optimizer_step(state)``; called on every process after each optimizer step."""


def set_sampler_epoch(dataloader: Any, epoch: int) -> None:
    """Tell the dataloader, every sampler / batch sampler inside it and its ``collate_fn``
    which epoch starts.

    Samplers that shuffle per epoch (the PK sampler, ``DistributedSampler``, Accelerate's
    seedable sampler) derive their order from it, and a seeded ``ReidCollator`` its augmentation;
    objects without ``set_epoch`` are skipped.
    """
    seen: set[int] = set()
    stack = [dataloader]
    while stack:
        obj = stack.pop()
        if obj is None or id(obj) in seen:
            continue
        seen.add(id(obj))
        set_epoch = getattr(obj, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
        for attr in ("batch_sampler", "sampler", "collate_fn"):
            try:
                stack.append(getattr(obj, attr, None))
            except Exception:  # a property that cannot be evaluated here
                continue


def _num_batches(dataloader: Any) -> int | None:
    try:
        return len(dataloader)
    except TypeError:
        return None


class StageRunner:
    """Runs a recipe's training stages with Accelerate; one :meth:`train_stage` call per stage.

    Args:
        accelerator: the run's Accelerator (see :func:`~hf_reid.training.utils.create_accelerator`).
        output_dir: the run folder; checkpoints go to ``output_dir/checkpoints``.
        stages: names of the recipe's stages in the order they run (a name may repeat: the stage
            is entered again).
        seed: the run's seed (epoch-start random draws of the data pipeline derive from it).
        checkpoint_every: save a checkpoint every this many optimizer steps and at the end of each
            stage; ``None`` disables checkpoints.
        total_limit: how many recent checkpoints to keep (stage-end ones are always kept).
        resume: ``None``, ``"latest"`` or a checkpoint folder (a recipe's ``args.resume``).
        log_every: log the mean of each loss term every this many optimizer steps (and at the end
            of every epoch).
        progress_bar: show a tqdm bar per epoch on the local main process.
        recipe_state: the recipe's own state objects (``name -> obj`` with ``state_dict`` /
            ``load_state_dict``), checkpointed with the model and restored on resume.
        run_config: the settings that define this run's training (JSON values; a recipe passes its
            config without output, logging and checkpoint fields). With ``seed`` they make the run's
            fingerprint (:class:`~hf_reid.training.checkpoint.RunIdentity`), recorded in every
            checkpoint; default: the stage names. A fresh run in a folder holding another run's
            checkpoints is refused, a resume from another run's checkpoint too, and a fresh run
            with the same fingerprint replaces the checkpoints there (see
            :func:`~hf_reid.training.checkpoint.prepare_run_folder`).
        overwrite_output_dir: start over in a folder holding another run's checkpoints, deleting them.
    """

    def __init__(
        self,
        accelerator: Accelerator,
        output_dir: str | os.PathLike,
        stages: Sequence[str],
        *,
        seed: int = 0,
        checkpoint_every: int | None = None,
        total_limit: int | None = 2,
        resume: str | None = None,
        log_every: int = 10,
        progress_bar: bool = True,
        recipe_state: Mapping[str, Stateful] | None = None,
        run_config: Mapping[str, Any] | None = None,
        overwrite_output_dir: bool = False,
    ) -> None:
        if not stages or not all(isinstance(name, str) and name for name in stages):
            raise ValueError(f"stages must be a non-empty list of stage names, got {list(stages)}.")
        if checkpoint_every is not None and checkpoint_every <= 0:
            raise ValueError(
                f"checkpoint_every must be a positive number of steps or None, got {checkpoint_every}."
            )
        if log_every <= 0:
            raise ValueError(f"log_every must be positive, got {log_every}.")
        self.accelerator = accelerator
        self.output_dir = str(output_dir)
        self.stages = list(stages)
        self.seed = seed
        self.checkpoint_every = checkpoint_every
        self.total_limit = total_limit
        self.log_every = log_every
        self.progress_bar = progress_bar
        self.run = RunIdentity(
            seed=seed, config={"stages": self.stages} if run_config is None else run_config
        )
        self.state = TrainerState(
            num_processes=accelerator.num_processes, seed=seed, run_fingerprint=self.run.fingerprint
        )
        self.recipe_state: dict[str, Stateful] = {}
        for name, obj in (recipe_state or {}).items():
            self.track_state(name, obj)
        self._stage_end_epochs: dict[int, int] = {}
        """Stage index -> the data epoch it ended at (for stages that continue it)."""
        self._next_stage = 0
        self._registered: set[int] = set()
        folder = prepare_run_folder(
            self.output_dir,
            self.run,
            resume=resume,
            overwrite=overwrite_output_dir,
            is_main_process=accelerator.is_main_process,
        )
        if overwrite_output_dir:
            accelerator.wait_for_everyone()  # the main process deleted the other run's checkpoints
        self._stale = folder.stale
        """Checkpoints this run replaces; removed just before it writes its first one."""
        self._resume_path = folder.resume
        self._resume_state = read_trainer_state(self._resume_path) if self._resume_path else None
        if self._resume_state is not None:
            index = self._resume_state.stage_index
            if not 0 <= index < len(self.stages) or self.stages[index] != self._resume_state.stage:
                raise ValueError(
                    f"Checkpoint {self._resume_path} belongs to stage '{self._resume_state.stage}' "
                    f"(position {index}), which this recipe does not have there (stages: {self.stages})."
                )
            logger.info(
                "Resuming from %s (stage %s, epoch %d, step %d).",
                self._resume_path,
                self._resume_state.stage,
                self._resume_state.epoch,
                self._resume_state.global_step,
            )

    def track_state(self, name: str, obj: Stateful) -> None:
        """Checkpoint ``obj`` (``state_dict`` / ``load_state_dict``) as ``name`` from now on, and
        restore it whenever a checkpoint is loaded. Register before the first stage runs."""
        if not isinstance(obj, Stateful):
            raise TypeError(
                f"recipe state {name!r}: {type(obj).__name__} has no state_dict / load_state_dict."
            )
        if name in self.recipe_state and self.recipe_state[name] is not obj:
            raise ValueError(f"recipe state {name!r} is already tracked (another object).")
        self.recipe_state[name] = obj

    # ------------------------------------------------------------------------------------------
    def train_stage(
        self,
        name: str,
        *,
        model: nn.Module | Sequence[nn.Module],
        optimizer: torch.optim.Optimizer,
        dataloader: Iterable[Any],
        compute_loss: LossFn,
        epochs: int,
        scheduler: Any | None = None,
        max_grad_norm: float | None = None,
        on_epoch_start: EpochStartFn | None = None,
        on_epoch_end: EpochEndFn | None = None,
        on_optimizer_step: StepEndFn | None = None,
        metric_for_best: str | None = None,
        greater_is_better: bool = True,
        continues: str | None = None,
    ) -> TrainerState:
        """Train one stage for ``epochs`` epochs (or restore it when resuming past it).

        Args:
            name: one of the ``stages`` given to the runner, in order.
            model: the prepared model(s) being trained (set to train mode each epoch; used for
                gradient accumulation).
            optimizer: the optimizer, prepared with ``accelerator.prepare``.
            dataloader: the prepared training dataloader (any re-iterable of batches works; a
                resume then re-reads the skipped batches).
            compute_loss: ``batch -> (loss, logs)``; ``logs`` maps term names to scalars and
                must have the same keys on every process.
            epochs: epochs of this stage.
            scheduler: a :class:`~hf_reid.training.optim.WarmupLRScheduler` (or any scheduler with
                a ``step_unit`` attribute; others are stepped per epoch). Do not pass it through
                ``accelerator.prepare``: the runner steps it and registers it for checkpointing.
            max_grad_norm: clip the gradient norm to this value before each optimizer step.
            on_epoch_start: called on every process at the start of each epoch, before the
                sampler's epoch is set (not again for an epoch a resume enters half-way).
            on_epoch_end: called after each epoch on every process; metrics it returns are logged.
            on_optimizer_step: called on every process after each optimizer step (after the
                gradient-accumulation window closes), e.g. to update a momentum encoder.
            metric_for_best: a key of those metrics tracked as ``state.best_metric``.
            greater_is_better: direction of ``metric_for_best``.
            continues: the name of an earlier stage whose optimizer and scheduler this stage goes
                on with: its data epochs (sampler order, augmentation) continue that stage's count.
        """
        if name not in self.stages:
            raise ValueError(f"Unknown stage '{name}'; the runner was created with stages {self.stages}.")
        index = self._next_stage
        if index >= len(self.stages) or self.stages[index] != name:
            expected = self.stages[index] if index < len(self.stages) else None
            raise RuntimeError(f"Stage '{name}' called out of order; the next stage is {expected!r}.")
        self._next_stage += 1
        epoch_offset = 0
        if continues is not None:
            earlier = [i for i in range(index) if self.stages[i] == continues]
            if not earlier:
                raise ValueError(
                    f"Stage '{name}' continues '{continues}', which is not an earlier stage of {self.stages}."
                )
            epoch_offset = self._stage_end_epochs[earlier[-1]]
        if not isinstance(optimizer, AcceleratedOptimizer):
            raise TypeError(
                f"Stage '{name}': pass the optimizer through accelerator.prepare(...) first "
                "(it handles gradient accumulation and is checkpointed with the run)."
            )
        if epochs < 0:
            raise ValueError(f"Stage '{name}': epochs must be >= 0, got {epochs}.")
        models = [model] if isinstance(model, nn.Module) else list(model)
        scheduler = self._register_scheduler(scheduler)

        if self._enter_stage(name, index, epoch_offset):
            self._stage_end_epochs[index] = self.state.epoch_offset + self.state.epoch
            return self.state

        step_unit = getattr(scheduler, "step_unit", "epoch") if scheduler is not None else None
        state = self.state
        while state.epoch < epochs:
            for module in models:
                module.train()
            if on_epoch_start is not None and state.batch_in_epoch == 0:
                on_epoch_start(state)
            set_sampler_epoch(dataloader, state.epoch_offset + state.epoch)
            self._train_epoch(
                models=models,
                optimizer=optimizer,
                step_scheduler=scheduler if step_unit == "step" else None,
                dataloader=dataloader,
                compute_loss=compute_loss,
                epochs=epochs,
                max_grad_norm=max_grad_norm,
                on_optimizer_step=on_optimizer_step,
            )
            state.epoch += 1
            state.batch_in_epoch = 0
            if scheduler is not None and step_unit != "step":
                scheduler.step()
            if on_epoch_end is not None:
                metrics = on_epoch_end(state)
                if metrics:
                    self._log_metrics(metrics, metric_for_best, greater_is_better)

        state.stage_completed = True
        self._stage_end_epochs[index] = state.epoch_offset + state.epoch
        logger.info(
            "Stage '%s' finished: %d epochs, %d optimizer steps.", name, state.epoch, state.stage_step
        )
        if self.checkpoint_every is not None:
            self._save()
        return state

    def _save(self) -> None:
        if self._stale:
            if self.accelerator.is_main_process:
                remove_checkpoints(self._stale, "this run replaces them")
            self._stale = []
        save_checkpoint(
            self.accelerator,
            self.output_dir,
            self.state,
            total_limit=self.total_limit,
            recipe_state=self.recipe_state,
            run=self.run,
        )

    def _train_epoch(
        self,
        *,
        models: list[nn.Module],
        optimizer: AcceleratedOptimizer,
        step_scheduler: Any | None,
        dataloader: Iterable[Any],
        compute_loss: LossFn,
        epochs: int,
        max_grad_norm: float | None,
        on_optimizer_step: StepEndFn | None = None,
    ) -> None:
        """One epoch (or its remainder after a resume): forward/backward through
        ``compute_loss``, optimizer steps, per-step scheduler steps, logging and checkpoints."""
        accelerator, state = self.accelerator, self.state
        params = [p for group in optimizer.param_groups for p in group["params"]]
        total = _num_batches(dataloader)
        window: dict[str, torch.Tensor] = {}
        window_batches = 0
        bar = tqdm(
            total=total,
            initial=state.batch_in_epoch,
            desc=f"{state.stage} {state.epoch + 1}/{epochs}",
            disable=not (self.progress_bar and accelerator.is_local_main_process),
            dynamic_ncols=True,
            leave=False,
        )
        for batch in self._epoch_batches(dataloader, state.batch_in_epoch, total):
            with accelerator.accumulate(*models):
                loss, logs = compute_loss(batch)
                if not torch.isfinite(loss.detach()).all():
                    raise FloatingPointError(
                        f"Stage '{state.stage}', epoch {state.epoch + 1}, step {state.stage_step + 1}: the "
                        f"loss is {loss.item()} (logs: {self._as_floats(logs)}); lower the learning rate or "
                        "check the inputs."
                    )
                accelerator.backward(loss)
                if max_grad_norm is not None and accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            state.batch_in_epoch += 1
            window_batches += 1
            for key, value in {"loss": loss, **dict(logs)}.items():
                value = torch.as_tensor(value).detach().float().reshape(()).to(accelerator.device)
                window[key] = window[key] + value if key in window else value
            bar.update(1)
            if not accelerator.sync_gradients:
                continue
            state.stage_step += 1
            state.global_step += 1
            if on_optimizer_step is not None:
                on_optimizer_step(state)
            if step_scheduler is not None and not optimizer.step_was_skipped:
                step_scheduler.step()
            if state.stage_step % self.log_every == 0:
                entry = self._log_window(window, window_batches, optimizer)
                bar.set_postfix({k: f"{v:.4g}" for k, v in entry.items() if k in window})
                window, window_batches = {}, 0
            if self.checkpoint_every is not None and state.stage_step % self.checkpoint_every == 0:
                self._save()
        bar.close()
        if window_batches:
            self._log_window(window, window_batches, optimizer)

    # ------------------------------------------------------------------------------------------
    def _register_scheduler(self, scheduler: Any | None) -> Any | None:
        if scheduler is None:
            return None
        if isinstance(scheduler, AcceleratedScheduler):
            # Prepared schedulers are checkpointed already, but they step once per process on
            # every step() call; step the wrapped scheduler instead.
            return scheduler.scheduler
        if id(scheduler) not in self._registered:
            self.accelerator.register_for_checkpointing(scheduler)
            self._registered.add(id(scheduler))
        return scheduler

    def _enter_stage(self, name: str, index: int, epoch_offset: int) -> bool:
        """Set up the state for a stage; return True when resuming says it is already done."""
        resume = self._resume_state
        if resume is not None and resume.stage_index > index:
            ends = [  # of the resumed run only: another run's checkpoints are never mixed in
                p
                for p, s in list_checkpoints(self._resume_path_root())
                if s.stage_index == index
                and s.stage_completed
                and s.run_fingerprint == resume.run_fingerprint
            ]
            if not ends:
                raise FileNotFoundError(
                    f"Cannot resume stage '{resume.stage}': the checkpoint saved at the end of stage "
                    f"'{name}' is missing from {self._resume_path_root()}."
                )
            logger.info("Stage '%s' already finished; restoring its final state from %s.", name, ends[-1])
            try:
                self.state = load_checkpoint(self.accelerator, ends[-1], self.recipe_state)
            except CheckpointError as err:
                raise CheckpointError(
                    f"Cannot resume stage '{resume.stage}': the checkpoint saved at the end of stage "
                    f"'{name}' fails its checks: {err} Start over (--overwrite_output_dir true)."
                ) from err
            return True
        if resume is not None and resume.stage_index == index:
            self.state = load_checkpoint(self.accelerator, self._resume_path, self.recipe_state)
            self._resume_state = None
            if self.state.stage_completed:
                logger.info("Stage '%s' already finished in %s.", name, self._resume_path)
                return True
            logger.info(
                "Stage '%s': resuming at epoch %d, batch %d.",
                name,
                self.state.epoch + 1,
                self.state.batch_in_epoch,
            )
            return False
        previous = self.state
        self.state = TrainerState(
            stage=name,
            stage_index=index,
            global_step=previous.global_step,
            epoch_offset=epoch_offset,
            num_processes=self.accelerator.num_processes,
            seed=self.seed,
            run_fingerprint=self.run.fingerprint,
            log_history=previous.log_history,
        )
        return False

    def _resume_path_root(self) -> str:
        assert self._resume_path is not None
        return os.path.dirname(os.path.abspath(self._resume_path))

    def _epoch_batches(self, dataloader: Iterable[Any], skip: int, total: int | None) -> Iterator[Any]:
        """The batches of one epoch after the first ``skip``.

        The iterator is started (which draws worker seeds and, for samplers without their own
        generator, the shuffle) inside a forked RNG seeded by (seed, stage, epoch): the draws are
        then the same whether the epoch starts fresh or mid-way after a resume, and they do not
        shift the random stream the training steps use.
        """
        if total is not None and skip >= total:
            return
        loader = dataloader
        if skip:
            if isinstance(dataloader, DataLoader):
                loader = self.accelerator.skip_first_batches(dataloader, skip)
            else:
                loader = itertools.islice(dataloader, skip, None)
        epoch_seed = (self.seed * 1_000_003 + self.state.stage_index * 10_007 + self.state.epoch) % 2**63
        with torch.random.fork_rng(devices=[]):
            # A plain DataLoader draws its workers' base seed when the iterator is made (a prepared
            # one at the first batch): from a seed of its own, off the training stream, so that a
            # resumed epoch does not shift the random draws that follow.
            torch.manual_seed((epoch_seed + 1) % 2**63)
            iterator = iter(loader)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(epoch_seed)
            first = next(iterator, _END)
        if first is _END:
            return
        yield first
        yield from iterator

    @staticmethod
    def _as_floats(logs: Mapping[str, Any]) -> dict[str, float]:
        return {k: float(torch.as_tensor(v).detach().float().mean()) for k, v in logs.items()}

    def _lrs(self, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        groups = optimizer.param_groups
        lrs = {"lr": float(groups[0]["lr"])}
        names = [g.get("name") for g in groups]
        if len(groups) > 1 and all(names) and len(set(names)) == len(names):
            lrs.update({f"lr/{n}": float(g["lr"]) for n, g in zip(names, groups)})
        return lrs

    def _log_window(
        self, window: Mapping[str, torch.Tensor], batches: int, optimizer: torch.optim.Optimizer
    ) -> dict[str, Any]:
        """Average the loss terms over the window and over processes, then log them."""
        keys = sorted(window)
        values = torch.stack([window[k] for k in keys]).to(self.accelerator.device) / batches
        values = self.accelerator.reduce(values, reduction="mean")
        state = self.state
        entry: dict[str, Any] = {
            "stage": state.stage,
            "epoch": state.epoch + 1,
            "batch": state.batch_in_epoch,
            "step": state.global_step,
        }
        entry.update({k: float(v) for k, v in zip(keys, values.tolist())})
        entry.update(self._lrs(optimizer))
        state.log_history.append(entry)
        self.accelerator.log(
            {f"{state.stage}/{k}": v for k, v in entry.items() if isinstance(v, float)},
            step=state.global_step,
        )
        if self.accelerator.is_main_process:
            terms = " ".join(f"{k}={entry[k]:.4g}" for k in keys)
            logger.info(
                "[%s] epoch %d step %d %s lr=%.3g",
                state.stage,
                state.epoch + 1,
                state.global_step,
                terms,
                entry["lr"],
            )
        return entry

    def _log_metrics(
        self, metrics: Mapping[str, float], metric_for_best: str | None, greater_is_better: bool
    ) -> None:
        state = self.state
        values = {k: float(v) for k, v in metrics.items()}
        state.log_history.append(
            {"stage": state.stage, "epoch": state.epoch, "step": state.global_step, **values}
        )
        self.accelerator.log(
            {f"{state.stage}/eval/{k}": v for k, v in values.items()}, step=state.global_step
        )
        if self.accelerator.is_main_process:
            logger.info("[%s] epoch %d eval %s", state.stage, state.epoch, values)
        if metric_for_best is None:
            return
        if metric_for_best not in values:
            raise KeyError(
                f"metric_for_best '{metric_for_best}' is not among the epoch-end metrics {sorted(values)}."
            )
        value = values[metric_for_best]
        best = state.best_metric
        if best is None or math.isnan(best) or (value > best if greater_is_better else value < best):
            state.best_metric, state.best_epoch = value, state.epoch


_END = object()
