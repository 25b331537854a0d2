"""The recipe-test harness: load a recipe script, run it in-process, launch a script on two CPU
processes, and the small measurements the recipe tests share (embedding a split, mAP, the
chance level of random features)."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import numpy as np
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


def launch_two_processes(
    script: Path, args: Sequence[str], *, timeout: float = 600
) -> subprocess.CompletedProcess:
    """``accelerate launch`` of ``script`` on two CPU processes (gloo; HF_NOTES §6: plain
    ``--num_processes 2`` silently runs one process). The launch runs in its own process group,
    killed whole when it outlives ``timeout``, so no process is left behind."""
    env = {
        **os.environ,
        "ACCELERATE_USE_CPU": "1",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--num_cpu_threads_per_process", "1", str(script), *args,
    ]  # fmt: skip
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process.pid)
        stdout, stderr = process.communicate()
        raise AssertionError(
            f"the two-process launch outlived {timeout} s:\n{stdout[-3000:]}\n{stderr[-6000:]}"
        ) from None
    finally:
        _kill_group(process.pid)  # ranks the launcher left behind, whatever happened
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _kill_group(pgid: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
