"""The platform every recipe stands on: evaluation under each dataset's protocol (checked against
computations written here from the protocols' definitions), own data without SynthPeds, a model
saved before evaluation, the whole config checked before any work, recipes that run bare, and
recipe state that resumes exactly after a SIGKILL."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_models import save_tiny_clip
from helpers_recipes import RECIPES, load_recipe, run_recipe
from PIL import Image
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F
from training_toys import reset_accelerate_state
from transformers import AutoModel

from hf_reid.data import STANDARD, ReidTestTransform, ReidTransformConfig, generate_synthpeds
from hf_reid.data.layouts.sysu_mm01 import SYSU_MM01_CAMERA_GROUPS
from hf_reid.models import CLIPReIDModel, build_reid_image_processor
from hf_reid.training import (
    ConfigError,
    DataArgs,
    EvalArgs,
    create_accelerator,
    evaluate_domains,
    extract_features,
    load_data,
)
from hf_reid.training.reid_data import eval_loader

TOY = Path(__file__).parent / "scripts" / "relabel_toy.py"


# ------------------------------------------------------------------------------------------------
# Evaluation protocols
# ------------------------------------------------------------------------------------------------
def pooled_colour(batch: dict) -> torch.Tensor:
    """A deterministic 24-d feature: the mean colour of 4 x 2 image regions."""
    return F.adaptive_avg_pool2d(batch["pixel_values"], (4, 2)).flatten(1)


def reference_metrics(q, g, junk_rule) -> tuple[float, float]:
    """mAP and rank-1 written from the definition: per query, sort the gallery by Euclidean
    distance (ties by gallery index), drop the entries ``junk_rule(query, gallery)`` marks, and
    score the rest; queries without a true match left are not counted."""
    aps, top1 = [], []
    for i in range(len(q["pids"])):
        distances = np.linalg.norm(g["features"] - q["features"][i], axis=1)
        order = np.argsort(distances, kind="stable")
        order = [j for j in order if not junk_rule(q, i, g, j)]
        matches = np.array([g["pids"][j] == q["pids"][i] for j in order])
        if not matches.any():
            continue
        hits = np.flatnonzero(matches)
        aps.append(np.mean([(n + 1) / (rank + 1) for n, rank in enumerate(hits)]))
        top1.append(float(matches[0]))
    return float(np.mean(aps)), float(np.mean(top1))


def same_pid_and_camera(q, i, g, j) -> bool:
    return q["pids"][i] == g["pids"][j] and q["camids"][i] == g["camids"][j]


def same_pid_and_camera_or_clothes(q, i, g, j) -> bool:
    return q["pids"][i] == g["pids"][j] and (
        q["camids"][i] == g["camids"][j] or q["clothes_ids"][i] == g["clothes_ids"][j]
    )


def same_pid_and_location(q, i, g, j) -> bool:
    groups = SYSU_MM01_CAMERA_GROUPS
    return q["pids"][i] == g["pids"][j] and groups[int(q["camids"][i])] == groups[int(g["camids"][j])]


def sysu_gallery_draw(g, trial: int) -> list[int]:
    """SYSU-MM01's single-shot gallery of ``trial``: random.Random(trial), identities and cameras
    ascending, one of each (identity, camera)'s images, file names sorted."""
    rng = random.Random(trial)
    keys = sorted({(int(p), int(c)) for p, c in zip(g["pids"], g["camids"])})
    picked = []
    for pid, cam in keys:
        rows = [j for j in range(len(g["pids"])) if (g["pids"][j], g["camids"][j]) == (pid, cam)]
        picked.append(rng.choice(sorted(rows, key=lambda j: os.path.basename(g["paths"][j]))))
    return picked


def as_numpy(side: dict) -> dict:
    return {k: v.numpy() if isinstance(v, torch.Tensor) else np.array(v) for k, v in side.items()}


def subset(side: dict, rows) -> dict:
    return {k: v[np.asarray(rows)] for k, v in side.items()}


@pytest.fixture(scope="module")
def scenario_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenarios")
    generate_synthpeds(root, preset="tiny", seed=0, layouts=["ltcc", "sysu_mm01"], num_workers=1)
    return root


def test_clothes_changing_and_camera_group_trials_equal_their_definitions(scenario_data, tmp_path):
    """Recipe evaluation (load_data + evaluate_domains) of an LTCC folder under the clothes-changing
    protocol and a SYSU-MM01 folder under all-search with 10 gallery draws equals the metrics
    computed here from the definitions, and differs from the standard protocol on the same features."""
    args = DataArgs(
        layout="ltcc",
        root=str(scenario_data),
        train_domains=["ltcc"],
        eval_domains=["ltcc", "sysu_mm01"],
        layouts={"sysu_mm01": "sysu_mm01"},
        options={"ltcc": {"protocol": "clothes_changing"}},
        eval_batch_size=64,
    )
    data = load_data(args)
    ltcc, sysu = data.eval_sets
    assert (ltcc.protocol.name, ltcc.protocol.num_trials) == ("clothes_changing", 1)
    assert (sysu.protocol.name, sysu.protocol.num_trials) == ("all_search", 10)
    transform = ReidTestTransform(
        ReidTransformConfig.from_image_processor(build_reid_image_processor((128, 64)))
    )
    reset_accelerate_state()
    accelerator = create_accelerator(tmp_path, seed=0)
    common = dict(
        model=nn.Identity(),
        transform=transform,
        data_args=args,
        eval_args=EvalArgs(plots=False),
        normalize=False,
        accelerator=accelerator,
        progress_bar=False,
    )
    results = evaluate_domains(data.eval_sets, pooled_colour, output_dir=tmp_path / "protocol", **common)
    features = {}
    for eval_set in data.eval_sets:
        features[eval_set.name] = [
            as_numpy(
                extract_features(
                    pooled_colour,
                    eval_loader(split, transform, args),
                    accelerator,
                    metadata_keys=["pids", "camids", "clothes_ids", "paths"],
                    progress_bar=False,
                )
            )
            for split in (eval_set.query, eval_set.gallery)
        ]

    q, g = features[ltcc.name]
    expected = reference_metrics(q, g, same_pid_and_camera_or_clothes)
    got = results[ltcc.name]
    assert got["protocol"] == "clothes_changing" and got["num_trials"] == 1
    assert got["mAP"] == pytest.approx(expected[0], abs=1e-6) and got["rank-1"] == pytest.approx(
        expected[1], abs=1e-6
    )
    standard_ltcc = reference_metrics(q, g, same_pid_and_camera)

    q, g = features[sysu.name]
    per_trial = [
        reference_metrics(q, subset(g, sysu_gallery_draw(g, t)), same_pid_and_location) for t in range(10)
    ]
    got = results[sysu.name]
    assert got["protocol"] == "all_search" and got["num_trials"] == 10 and len(got["trials"]) == 10
    assert got["mAP"] == pytest.approx(np.mean([m for m, _ in per_trial]), abs=1e-6)
    assert got["rank-1"] == pytest.approx(np.mean([r for _, r in per_trial]), abs=1e-6)
    assert got["mAP_std"] == pytest.approx(np.std([m for m, _ in per_trial]), abs=1e-6) and got["mAP_std"] > 0
    written = json.loads(
        (tmp_path / "protocol" / "eval" / sysu.name.replace(" ", "_") / "eval_results.json").read_text()
    )
    assert written["mAP"] == got["mAP"] and written["num_trials"] == 10

    # The standard protocol on the same features gives other numbers.
    ltcc.protocol = sysu.protocol = STANDARD
    standard = evaluate_domains(data.eval_sets, pooled_colour, output_dir=tmp_path / "standard", **common)
    assert standard[ltcc.name]["mAP"] == pytest.approx(standard_ltcc[0], abs=1e-6)
    assert abs(standard[ltcc.name]["mAP"] - results[ltcc.name]["mAP"]) > 1e-3
    assert abs(standard[sysu.name]["mAP"] - results[sysu.name]["mAP"]) > 1e-3
    reset_accelerate_state()


def test_eval_options_evaluate_one_folder_under_several_protocols(scenario_data):
    args = DataArgs(
        layout="sysu_mm01",
        root=str(scenario_data),
        train_domains=["sysu_mm01"],
        eval_domains=["sysu_mm01", "ltcc"],
        layouts={"ltcc": "ltcc"},
        eval_options={
            "sysu_mm01": [{"mode": "all"}, {"mode": "indoor"}],
            "ltcc": [{}, {"protocol": "clothes_changing"}],
        },
    )
    names = [(s.name, s.protocol.name) for s in load_data(args).eval_sets]
    assert [protocol for _, protocol in names] == [
        "all_search",
        "indoor_search",
        "standard",
        "clothes_changing",
    ]
    assert len({name for name, _ in names}) == 4


# ------------------------------------------------------------------------------------------------
# Own data, saving before evaluation, the config checked first
# ------------------------------------------------------------------------------------------------
OWN_DATA_CONFIG = """\
seed: 0
model:
  clip_name_or_path: {clip}
  image_size: [128, 64]
data:
  layout: custom
  root: {data}
  train_domains: ["."]
  eval_domains: ["."]
  options: {{".": {{num_test_ids: 6}}}}
  p: 4
  k: 2
  pad: 0
  eval_batch_size: 32
stage1:
  epochs: 1
stage2:
  epochs: 2
  lr: 1.0e-3
  warmup_epochs: 1
  milestones: [5]
train:
  checkpoint_every: null
  progress_bar: false
eval:
  plots: false
"""


@pytest.fixture(scope="module")
def own_data(tmp_path_factory):
    """A folder per identity, no cameras: 18 people, 4 images each, a colour per person."""
    root = tmp_path_factory.mktemp("own")
    rng = np.random.default_rng(0)
    for person in range(18):
        colour = rng.integers(0, 256, 3)
        for n in range(4):
            pixels = np.clip(colour + rng.normal(0, 12, (64, 32, 3)), 0, 255).astype(np.uint8)
            (root / "people" / f"person_{person:02d}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / "people" / f"person_{person:02d}" / f"{n}.jpg")
    save_tiny_clip(root / "clip")
    config = root / "own.yaml"
    config.write_text(OWN_DATA_CONFIG.format(clip=root / "clip", data=root / "people"))
    return {"root": root, "config": config}


@pytest.fixture(scope="module")
def clip_reid():
    return load_recipe("clip_reid")


def test_own_folder_per_identity_data_without_cameras_trains_evaluates_and_saves(
    clip_reid, own_data, tmp_path
):
    results = run_recipe(clip_reid, own_data["config"], tmp_path)
    (name,) = results
    assert results[name]["protocol"] == "no_cameras" and results[name]["num_query"] == 6
    assert 0.0 < results[name]["mAP"] <= 1.0
    model = AutoModel.from_pretrained(tmp_path)
    assert isinstance(model, CLIPReIDModel) and model.config.num_classes == 12
    assert not (own_data["root"] / "people" / "synthpeds_meta.json").exists()  # nothing generated there


def test_a_failing_evaluation_leaves_a_loadable_model(clip_reid, own_data, tmp_path, monkeypatch):
    import hf_reid.training.recipe_run as recipe_run

    def broken(*args, **kwargs):
        raise RuntimeError("evaluation broke")

    monkeypatch.setattr(recipe_run, "evaluate_domains", broken)
    with pytest.raises(RuntimeError, match="evaluation broke"):
        run_recipe(clip_reid, own_data["config"], tmp_path)
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= {
        p.name for p in tmp_path.iterdir()
    }
    assert isinstance(AutoModel.from_pretrained(tmp_path), CLIPReIDModel)
    assert not (tmp_path / "eval_results.json").exists()


def test_config_mistakes_fail_before_any_work(clip_reid, own_data, tmp_path):
    """A misspelt domain, an option the layout lacks, a zero batch size: refused before a single
    image is generated or a model built; SynthPeds is never generated into someone's data."""
    fresh = tmp_path / "fresh"
    with pytest.raises(ConfigError, match=r"synthpeds_d9.*neither in data.root.*nor written by SynthPeds"):
        run_recipe(
            clip_reid,
            None,
            tmp_path / "run",
            "--data.root",
            str(fresh),
            "--data.train_domains",
            "[synthpeds_d9]",
        )
    assert not fresh.exists()
    with pytest.raises(ConfigError, match=r"custom layout has no option\(s\) \['num_test_id'\]"):
        run_recipe(clip_reid, own_data["config"], tmp_path / "run", "--data.options", "{.: {num_test_id: 6}}")
    for override, message in [
        (["--data.p", "0"], r"data.p must be >= 1, got 0"),
        (["--stage2.epochs", "-1"], r"stage2.epochs must be >= 0, got -1"),
        (["--stage2.lr", "-1"], r"stage2.lr must be > 0, got -1"),
    ]:
        with pytest.raises(ConfigError, match=message):
            run_recipe(clip_reid, own_data["config"], tmp_path / "run", *override)
    assert not (tmp_path / "run" / "checkpoints").exists()
    people = own_data["root"] / "people"
    before = sorted(p.name for p in people.iterdir())
    with pytest.raises(ConfigError, match=r"holds other data and no SynthPeds run"):
        run_recipe(clip_reid, None, tmp_path / "run", "--data.root", str(people))
    assert sorted(p.name for p in people.iterdir()) == before
    with pytest.raises(ConfigError, match=r"'data.synthpeds' is a section.*switch it off with null"):
        run_recipe(clip_reid, None, tmp_path / "run", "--data.synthpeds", "yes")


# ------------------------------------------------------------------------------------------------
# Recipes run bare
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_recipes_run_bare_on_synthpeds_and_print_results_and_run_folder(tmp_path):
    """``accelerate launch recipes/<method>.py`` with nothing but a shorter budget: the embedded
    SynthPeds config (SynthPeds generated into ./data/synthpeds), the shipped SynthCLIP, the run in
    ./runs/<method>, the results and the run folder printed."""
    env = {**os.environ, "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
    budgets = {
        "clip_reid": ["--stage1.epochs", "1", "--stage2.epochs", "1"],
        "retext": ["--optim.epochs", "1"],
    }
    for method, budget in budgets.items():
        command = [*launch, str(RECIPES / f"{method}.py"), *budget, "--train.progress_bar", "false"]
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
        assert f"Run folder: {(tmp_path / 'runs' / method).resolve()}" in done.stdout
        assert "SynthPeds d3 [standard]:" in done.stdout
        results = json.loads((tmp_path / "runs" / method / "eval_results.json").read_text())
        assert results["SynthPeds d3"]["mAP"] > 0.1  # SynthCLIP alone is at about 0.28 here
    assert (tmp_path / "data" / "synthpeds" / "synthpeds_d3").is_dir()


# ------------------------------------------------------------------------------------------------
# Recipe state and SIGKILL
# ------------------------------------------------------------------------------------------------
def run_toy(output_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(TOY), "--output_dir", str(output_dir), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_labels_remade_every_epoch_resume_bitwise_after_a_sigkill(tmp_path):
    """A toy recipe re-labels its data at every epoch start (recipe state, checkpointed) and is
    killed with SIGKILL in the middle of an epoch, after a checkpoint; resumed, it ends with the
    weights and the label state of an uninterrupted run, bit for bit."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert run_toy(whole).returncode == 0
    done = run_toy(killed, "--kill_at_step", "11")
    assert done.returncode == -signal.SIGKILL
    assert not (killed / "final.safetensors").exists()
    state = json.loads(
        sorted((killed / "checkpoints").glob("checkpoint-*"))[-1].joinpath("trainer_state.json").read_text()
    )
    assert state["batch_in_epoch"] > 0  # the checkpoint is in the middle of an epoch
    done = run_toy(killed, "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    expected, got = load_file(str(whole / "final.safetensors")), load_file(str(killed / "final.safetensors"))
    for name, tensor in expected.items():
        assert torch.equal(tensor, got[name]), name
    labels = json.loads((whole / "labels.json").read_text())
    assert labels == json.loads((killed / "labels.json").read_text())
    assert len(labels["history"]) == 4 and labels["history"][0] != labels["history"][-1]  # re-labelled
