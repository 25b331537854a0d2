"""The recipe-test harness: load a recipe script, run it in-process, launch a script on two CPU
processes, and the small measurements the recipe tests share (embedding a split, mAP, the
chance level of random features)."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import numpy as np
import psutil
import torch
from huggingface_hub import HfApi
from training_toys import reset_accelerate_state

from hf_reid.data import generate_synthpeds
from hf_reid.data.synthetic.presets import PRESETS
from hf_reid.metrics import compute_distance_matrix, evaluate_rank

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
CONFIGS = RECIPES / "configs"


# A small SynthPeds for the CLIP-ReID recipe tests: two domains of 40 training and 24 test
# identities (about 200 images each).
CLIP_REID_PRESET = dataclasses.replace(
    PRESETS["tiny"], name="recipe_test", num_domains=2, train_ids=40, test_ids=24, images_per_camera=(1, 3)
)

CLIP_REID_TINY_CONFIG = """\
seed: 0
model:
  clip_name_or_path: {clip}
  image_size: [128, 64]
data:
  root: {data}
  synthpeds: null
  train_domains: [synthpeds_d0]
  eval_domains: [synthpeds_d0]
  p: 4
  k: 4
  pad: 0
  random_erasing_p: 0.0
  eval_batch_size: 64
stage1:
  epochs: 3
  lr: 1.0e-3
  warmup_epochs: 1
stage2:
  epochs: 20
  lr: 1.0e-3
  warmup_epochs: 1
  milestones: [15]
train:
  checkpoint_every: 8
  checkpoint_total_limit: 2
  progress_bar: false
eval:
  ranked_list_queries: 4
"""


def make_recipe_inputs(
    root: Path, template: str, preset: Any, layouts: Sequence[str] = ("market",)
) -> dict[str, Path]:
    """A tiny SynthPeds (``preset``, seed 0, ``layouts``), a tiny random CLIP checkpoint folder and
    the config ``template`` filled with their paths (``{clip}``, ``{data}``)."""
    from helpers_models import save_tiny_clip

    generate_synthpeds(root / "synthpeds", preset=preset, seed=0, layouts=list(layouts), num_workers=1)
    save_tiny_clip(root / "clip")
    config = root / "tiny.yaml"
    config.write_text(template.format(clip=root / "clip", data=root / "synthpeds"))
    return {"root": root, "config": config, "data": root / "synthpeds", "clip": root / "clip"}


def make_clip_reid_inputs(root: Path) -> dict[str, Path]:
    """The inputs of the CLIP-ReID recipe tests (two domains, the tiny CLIP-ReID config)."""
    return make_recipe_inputs(root, CLIP_REID_TINY_CONFIG, CLIP_REID_PRESET)


def pushed_run(recipe: ModuleType, config: Path, output_dir: Path, repo: str) -> dict[str, Any]:
    """One full run with ``--push_to_hub --hub_model_id repo``, the Hub patched; returns the run
    folder, the results and the recorded Hub calls."""
    with patched_hub() as calls:
        results = run_recipe(recipe, config, output_dir, "--push_to_hub", "--hub_model_id", repo)
    return {"dir": output_dir, "results": results, "hub": calls}


def load_recipe(name: str) -> ModuleType:
    """``recipes/<name>.py`` as a module (registered in ``sys.modules``: dataclasses resolve the
    config annotations through it)."""
    spec = importlib.util.spec_from_file_location(f"{name}_recipe", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run_recipe(recipe: ModuleType, config: Path | None, output_dir: Path | None, *extra: str) -> dict:
    """``recipe.main`` with ``--config`` / ``--output_dir`` (each left out when ``None``) and
    ``extra`` arguments, with fresh Accelerate singletons before and after."""
    argv = [
        *(["--config", str(config)] if config else []),
        *(["--output_dir", str(output_dir)] if output_dir else []),
    ]
    reset_accelerate_state()
    try:
        return recipe.main([*argv, *extra])
    finally:
        reset_accelerate_state()


@contextmanager
def patched_hub() -> Iterator[dict[str, Any]]:
    """``HfApi.create_repo`` / ``upload_folder`` replaced by recorders (no Hub here); yields the
    calls: ``{"create_repo": (repo_id, kwargs), "upload_folder": kwargs}``."""
    calls: dict[str, Any] = {}

    def fake_create_repo(self, repo_id, **kwargs):
        calls["create_repo"] = (repo_id, kwargs)

    def fake_upload_folder(self, **kwargs):
        calls["upload_folder"] = kwargs
        return mock.MagicMock(commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/1")

    with (
        mock.patch.object(HfApi, "create_repo", fake_create_repo),
        mock.patch.object(HfApi, "upload_folder", fake_upload_folder),
    ):
        yield calls


def mean_ap(query_feats: torch.Tensor, gallery_feats: torch.Tensor, query, gallery) -> float:
    """Market-1501-protocol mAP of features of a query and a gallery split."""
    distmat = compute_distance_matrix(query_feats, gallery_feats, "euclidean")
    ids = [np.array(split[c]) for split in (query, gallery) for c in ("pid", "camid")]
    return evaluate_rank(distmat, ids[0], ids[2], ids[1], ids[3]).mAP


def chance_map(query, gallery, trials: int = 10, dim: int = 16) -> float:
    """The mean mAP of random features: the chance level of a split pair."""
    generator = torch.Generator().manual_seed(0)
    return float(
        np.mean(
            [
                mean_ap(
                    torch.randn(len(query), dim, generator=generator),
                    torch.randn(len(gallery), dim, generator=generator),
                    query,
                    gallery,
                )
                for _ in range(trials)
            ]
        )
    )


def embed_split(model, processor, split) -> torch.Tensor:
    """Retrieval embeddings of a split's images through ``processor`` and ``model``."""
    pixels = processor(images=list(split["image"]), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        return model.get_image_embeddings(pixels)


LAUNCH_MARKER_ENV = "HF_REID_TEST_LAUNCH"
"""Set to a fresh id in the environment of every process a test launch starts (the launcher, the
``torchrun`` agent inside it and the ranks, which ``torchrun`` starts in sessions of their own):
how :func:`launch_processes` finds all of them, orphans included."""
TEST_DIST_TIMEOUT = 180.0
"""Seconds a rank of a test launch waits in a collective (``$HF_REID_DIST_TIMEOUT``) before it
raises and the launch ends with an error: well above what one rank does alone while the other
waits on these loaded 2-core machines, well below the launches' own timeouts."""


class LaunchResult(subprocess.CompletedProcess):
    """What :func:`launch_two_processes` returns: the exit status and output of the launch, its
    wall time, its marker and the processes of the launch still alive once the launcher had
    ended (killed then; a correct launch leaves none)."""

    def __init__(self, args, returncode, stdout, stderr, *, seconds: float, marker: str, leftover: list[str]):
        super().__init__(args, returncode, stdout, stderr)
        self.seconds = seconds
        self.marker = marker
        self.leftover = leftover


def launch_two_processes(
    script: Path,
    args: Sequence[str],
    *,
    timeout: float = 600,
    dist_timeout: float = TEST_DIST_TIMEOUT,
    env: dict[str, str] | None = None,
    marker: str | None = None,
) -> LaunchResult:
    """``accelerate launch`` of ``script`` on two CPU processes (gloo; HF_NOTES §6: plain
    ``--num_processes 2`` silently runs one process), on a free port of its own.

    A rank waits at most ``dist_timeout`` seconds in a collective (``$HF_REID_DIST_TIMEOUT``), so
    a rank that fails or stalls ends the launch with an error. Whatever happens (success, failure,
    the launch outliving ``timeout``: an ``AssertionError``), every process of the launch is
    killed before this returns: the launcher and the ranks, which ``torchrun`` starts in sessions
    of their own (a kill of the launcher's process group alone leaves them running, orphans).
    They are found by ``marker`` (default: a fresh id) in their environment."""
    marker = marker or uuid.uuid4().hex
    env = {
        **os.environ,
        "ACCELERATE_USE_CPU": "1",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_REID_DIST_TIMEOUT": str(dist_timeout),
        **(env or {}),
        LAUNCH_MARKER_ENV: marker,
    }
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--num_cpu_threads_per_process", "1", "--main_process_port", str(_free_port()), str(script), *args,
    ]  # fmt: skip
    # Output goes to files, not pipes: a rank left behind keeps a pipe open and would block the read.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.monotonic()
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=err, text=True, start_new_session=True
        )
        timed_out = False
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            seconds = time.monotonic() - start
            leftover = [] if timed_out else [_describe(p) for p in launch_processes(marker)]
            kill_launch(marker, process)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if timed_out:
        raise AssertionError(
            f"the two-process launch outlived {timeout} s (all its processes are killed):\n"
            f"{stdout[-3000:]}\n{stderr[-6000:]}"
        )
    return LaunchResult(
        command, process.returncode, stdout, stderr, seconds=seconds, marker=marker, leftover=leftover
    )


def launch_processes(marker: str) -> list[psutil.Process]:
    """The live processes whose environment holds ``LAUNCH_MARKER_ENV=marker`` (zombies are not
    processes any more: left out)."""
    found = []
    for process in psutil.process_iter():
        with suppress(psutil.Error):
            if (
                process.status() != psutil.STATUS_ZOMBIE
                and process.environ().get(LAUNCH_MARKER_ENV) == marker
            ):
                found.append(process)
    return found


def kill_launch(marker: str, launcher: subprocess.Popen | None = None, *, wait: float = 30) -> None:
    """SIGKILL every process of a launch: the launcher, its descendants and every process holding
    ``marker`` (ranks in sessions of their own, orphans), with their process groups; wait until
    they are gone. Raises ``AssertionError`` naming any that survives ``wait`` seconds."""
    own_group = os.getpgrp()
    deadline = time.monotonic() + wait
    while True:
        targets = {p.pid: p for p in launch_processes(marker)}
        if launcher is not None and launcher.poll() is None:
            with suppress(psutil.Error):
                root = psutil.Process(launcher.pid)
                targets.update({p.pid: p for p in [root, *root.children(recursive=True)]})
        targets.pop(os.getpid(), None)
        if not targets:
            break
        for process in targets.values():
            with suppress(psutil.Error, OSError):
                group = os.getpgid(process.pid)
                if group != own_group and group in targets:  # a group led by a process of the launch
                    os.killpg(group, signal.SIGKILL)
            with suppress(psutil.Error):
                process.kill()
        alive = _wait_gone(list(targets.values()), until=min(deadline, time.monotonic() + 5))
        if alive and time.monotonic() > deadline:
            raise AssertionError(f"processes of the launch survive SIGKILL: {[_describe(p) for p in alive]}")
    if launcher is not None:
        with suppress(subprocess.TimeoutExpired):
            launcher.wait(timeout=max(1, deadline - time.monotonic()))  # reap it: no zombie


def _wait_gone(processes: list[psutil.Process], until: float) -> list[psutil.Process]:
    """Wait until every process has ended (gone, or a zombie its parent has not reaped yet: the
    ranks of a killed launcher are reaped by whichever process adopts them); return those that
    have not by ``until``."""
    while True:
        alive = []
        for process in processes:
            with suppress(psutil.Error):
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(process)
        if not alive or time.monotonic() >= until:
            return alive
        time.sleep(0.05)


def _describe(process: psutil.Process) -> str:
    with suppress(psutil.Error):
        return f"{process.pid} {' '.join(process.cmdline())[-200:]}"
    return str(process.pid)


def _free_port() -> int:
    """A TCP port free now, for the launch's rendezvous (Accelerate picks another one itself if it
    is taken by the time the launch starts)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
