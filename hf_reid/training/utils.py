"""Small helpers every recipe needs: the Accelerator, seeding, logging and a gradient-keeping
all-gather for metric learning across processes.

Multi-process runs: every collective (barrier, gather, broadcast) waits at most
``$HF_REID_DIST_TIMEOUT`` seconds (default 1800) for the other processes. A process that fails,
stalls or leaves early then ends the launch with an error naming the collective instead of
leaving the others asleep in it: the waiting process raises, and the launcher (``accelerate
launch`` / ``torchrun``) stops the rest. Raise it for steps that one process does alone for long
while the others wait (generating a large SynthPeds, evaluating a very large gallery). They end
with :func:`exit_if_distributed` (the recipes' command line does it): a DDP model keeps gloo's
threads and sockets alive after ``destroy_process_group``, and tearing the interpreter down
around them races with the other processes leaving (a process aborted, ``terminate called
without an active exception``, or hung there).
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import sys
from contextlib import suppress
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import InitProcessGroupKwargs, ProjectConfiguration, broadcast
from accelerate.utils import set_seed as _accelerate_set_seed

__all__ = [
    "DEFAULT_DIST_TIMEOUT",
    "DIST_TIMEOUT_ENV",
    "create_accelerator",
    "dist_timeout_seconds",
    "exit_if_distributed",
    "gather_with_grad",
    "set_seed",
    "setup_logging",
    "sync_buffers",
]

logger = logging.getLogger(__name__)

DIST_TIMEOUT_ENV = "HF_REID_DIST_TIMEOUT"
"""Environment variable: seconds a process waits in a collective for the others (see the module
docstring)."""
DEFAULT_DIST_TIMEOUT = 1800.0
"""Seconds a collective waits by default (torch's own default for gloo and NCCL)."""


def set_seed(seed: int, *, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices) with the same ``seed`` on every process.

    ``deterministic=True`` also asks torch for deterministic kernels (slower on GPU; some
    operations then raise instead of running nondeterministically).
    """
    _accelerate_set_seed(seed, deterministic=deterministic)


def dist_timeout_seconds(timeout: float | None = None) -> float:
    """The seconds a collective waits for the other processes: ``timeout`` when given, else
    ``$HF_REID_DIST_TIMEOUT``, else :data:`DEFAULT_DIST_TIMEOUT`. A value that is not a positive
    number is a ``ValueError`` naming where it came from."""
    source = "dist_timeout"
    if timeout is None:
        text = os.environ.get(DIST_TIMEOUT_ENV, "").strip()
        if not text:
            return DEFAULT_DIST_TIMEOUT
        source = f"${DIST_TIMEOUT_ENV}"
        try:
            timeout = float(text)
        except ValueError:
            raise ValueError(f"{source} must be a number of seconds, got {text!r}.") from None
    if isinstance(timeout, bool) or not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"{source} must be a positive number of seconds, got {timeout!r}.")
    return float(timeout)


def _process_group_kwargs(seconds: float) -> InitProcessGroupKwargs:
    """Accelerate's process-group settings with this timeout. Accelerate passes on only the values
    that differ from the class defaults (its default timeout is NCCL's 600 s, whatever the
    backend; gloo's own is 1800 s), so 600 s is passed as 600 s and a microsecond."""
    timeout = timedelta(seconds=seconds)
    if timeout == InitProcessGroupKwargs().timeout:
        timeout += timedelta(microseconds=1)
    return InitProcessGroupKwargs(timeout=timeout)


def create_accelerator(
    output_dir: str | os.PathLike,
    *,
    seed: int,
    gradient_accumulation_steps: int = 1,
    mixed_precision: str | None = None,
    log_with: str | list[str] | None = None,
    project_name: str = "hf_reid",
    tracker_config: dict[str, Any] | None = None,
    cpu: bool = False,
    dist_timeout: float | None = None,
) -> Accelerator:
    """The Accelerator the recipes use, set up for reproducible, resumable runs.

    * shuffling ``DataLoader`` s get a sampler seeded by ``seed`` and the epoch, so a resumed run
      sees the same order (``use_seedable_sampler``);
    * ``output_dir`` is the project folder (tracker logs go to ``output_dir/logs``), and
      checkpoints are named by :func:`~hf_reid.training.checkpoint.save_checkpoint`;
    * trackers (``log_with="tensorboard"``, ``"wandb"``, ...) are started when requested; without
      them ``accelerator.log`` does nothing;
    * under several processes every collective waits at most ``dist_timeout`` seconds (default
      ``$HF_REID_DIST_TIMEOUT``, else 30 minutes) for the others, then raises: a process that
      failed or stalled ends the launch instead of leaving the others waiting. It takes effect
      when this call starts the process group (the first Accelerator of the process).

    ``mixed_precision=None`` keeps whatever ``accelerate launch`` / ``accelerate config`` chose.
    """
    project = ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(Path(output_dir) / "logs"))
    accelerator = Accelerator(
        gradient_accumulation_steps=gradient_accumulation_steps,
        mixed_precision=mixed_precision,
        log_with=log_with,
        project_config=project,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=seed),
        step_scheduler_with_optimizer=False,
        cpu=cpu,
        kwargs_handlers=[_process_group_kwargs(dist_timeout_seconds(dist_timeout))],
    )
    if log_with:
        accelerator.init_trackers(project_name, config=tracker_config)
    return accelerator


def exit_if_distributed(status: int = 0) -> None:
    """In a process of a multi-process run: end the process now with ``status``; elsewhere
    (one process, or no Accelerator made): return.

    Ending means running the ``atexit`` handlers (loggers and trackers flush), flushing the
    standard streams and ``os._exit(status)``, without the interpreter's teardown. That teardown
    is where multi-process runs used to end badly: a DDP model keeps the process group's
    backend alive after ``destroy_process_group`` (gloo: its worker and socket threads), and
    destroying the interpreter around those threads while the other processes leave, closing
    their sockets, now and then aborted a process (``terminate called without an active
    exception``) or left it asleep with its port open after the others had gone. Call it last,
    once the run's files are written (``RecipeRun.finish`` has ended the Accelerator).
    """
    from accelerate.state import PartialState, is_initialized

    if not is_initialized() or PartialState().num_processes <= 1:
        return
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):  # a closed or broken stream: nothing more to write
            stream.flush()
    os._exit(status)


def setup_logging(
    accelerator: Accelerator | None = None,
    *,
    level: int = logging.INFO,
    log_file: str | os.PathLike | None = None,
) -> None:
    """Log ``hf_reid`` messages to stderr (and optionally a file) on the main process only.

    Other processes log warnings and errors only, so a multi-process run does not print
    everything N times. ``transformers`` and ``datasets`` are kept at warning level.
    """
    is_main = accelerator is None or accelerator.is_local_main_process
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    package_logger = logging.getLogger("hf_reid")
    package_logger.setLevel(level if is_main else logging.WARNING)
    if not any(getattr(h, "_hf_reid", False) for h in package_logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter)
        handler._hf_reid = True  # type: ignore[attr-defined]
        package_logger.addHandler(handler)
    if log_file is not None and is_main:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(formatter)
        package_logger.addHandler(file_handler)
    for name in ("transformers", "datasets", "accelerate"):
        logging.getLogger(name).setLevel(logging.WARNING)


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """All-gather ``tensor`` along dim 0 from every process, keeping the gradient of the local part.

    Batch-hard triplet mining and contrastive losses need the whole global batch as candidates;
    a plain ``all_gather`` returns tensors without autograd history. Here the slice of this
    process is the original tensor, so the loss computed on the gathered batch back-propagates
    into this process's own features; the other slices are constants. With DDP's gradient
    averaging the resulting update equals the single-process update on the union batch divided
    by the number of processes (irrelevant for Adam-type optimizers).

    Per-process sizes may differ (e.g. a smaller last batch). Without an initialised process
    group (one process) the tensor is returned unchanged.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    world, rank = dist.get_world_size(), dist.get_rank()
    local = tensor.contiguous()
    size = torch.tensor([local.shape[0]], device=local.device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    longest = max(counts)
    padded = local
    if local.shape[0] < longest:
        pad = local.new_zeros((longest - local.shape[0], *local.shape[1:]))
        padded = torch.cat([local.detach(), pad], dim=0)
    buffers = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(buffers, padded.detach())
    parts = [buf[:n] for buf, n in zip(buffers, counts)]
    parts[rank] = tensor  # keeps the autograd graph of this process's features
    return torch.cat(parts, dim=0)


@torch.no_grad()
def sync_buffers(model: torch.nn.Module, accelerator: Accelerator) -> None:
    """Give every process the main process's buffers (e.g. the BNNecks' running statistics).

    DDP broadcasts them at the start of every forward, but the last training step updates each
    process's copy with its own batch; evaluation (each process embeds its shard) and the saved
    model must use one set.
    """
    if accelerator.num_processes == 1:
        return
    for buffer in model.buffers():
        buffer.copy_(broadcast(buffer.detach().clone(), from_process=0))
