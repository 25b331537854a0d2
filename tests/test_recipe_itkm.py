"""recipes/itkm.py end to end on a tiny SynthPeds (clothes change, visible-infrared and low
resolution) and a tiny CLIP: no identity label reaches training, the pseudo-label quality is logged
and plotted, every scenario is evaluated under its protocol, the model saves and reloads, and a
run killed inside stage I resumes to the same results."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers_recipes import CONFIGS, load_recipe, make_recipe_inputs, run_recipe
from transformers import AutoModel

import hf_reid.training.recipe_run as recipe_run
from hf_reid.models import ITKMModel
from hf_reid.training import list_checkpoints, load_config, read_trainer_state

TINY_CONFIG = """\
seed: 0
model:
  clip_name_or_path: {clip}
  image_size: [128, 64]
data:
  layout: ltcc
  layouts: {{sysu_mm01: sysu_mm01, mlr_cuhk03: mlr_cuhk03}}
  root: {data}
  train_domains: [ltcc, sysu_mm01, mlr_cuhk03]
  eval_domains: [ltcc, sysu_mm01, mlr_cuhk03]
  eval_options:
    ltcc: [{{protocol: standard}}, {{protocol: clothes_changing}}]
  p: 4
  k: 4
  pad: 0
  random_erasing_p: 0.0
  eval_batch_size: 64
cluster:
  k1: 6
  k2: 2
  eps: 0.5
  min_samples: 2
stage1:
  epochs: 2
  lr: 1.0e-4
  warmup_epochs: 0
stage2:
  epochs: 3
  batch_size: 32
  warmup_epochs: 0
stage3:
  epochs: 2
  lr: 1.0e-4
  warmup_epochs: 0
train:
  checkpoint_every: 3
  checkpoint_total_limit: 2
  progress_bar: false
eval:
  plots: false
"""


@pytest.fixture(scope="module")
def recipe():
    return load_recipe("itkm")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    layouts = ["ltcc", "sysu_mm01", "mlr_cuhk03"]
    return make_recipe_inputs(tmp_path_factory.mktemp("itkm_inputs"), TINY_CONFIG, "tiny", layouts)


@pytest.fixture(scope="module")
def trained(recipe, inputs, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("itkm_run")
    return {"dir": output_dir, "results": run_recipe(recipe, inputs["config"], output_dir)}


def weights(folder) -> dict[str, torch.Tensor]:
    return AutoModel.from_pretrained(folder).state_dict()


def test_shipped_config_trains_three_scenarios_without_labels(recipe):
    cfg = load_config(recipe.ITKMRecipeConfig, CONFIGS / "itkm_synthpeds.yaml")
    assert cfg.data.train_domains == ["ltcc", "sysu_mm01", "mlr_cuhk03"] and cfg.data.synthpeds is not None
    assert cfg.model.use_sie and cfg.matching.cluster_level and cfg.matching.text_update == "ema"


def test_every_scenario_is_evaluated_under_its_protocol_and_the_model_reloads(trained):
    results = trained["results"]
    protocols = {name: (m["protocol"], m["num_trials"]) for name, m in results.items()}
    assert sorted(protocols.values()) == sorted(
        [("standard", 1), ("clothes_changing", 1), ("all_search", 10), ("low_resolution", 1)]
    )
    assert all(0.0 < m["mAP"] <= 1.0 for m in results.values())
    model = AutoModel.from_pretrained(trained["dir"])
    assert isinstance(model, ITKMModel) and model.config.num_scenarios == 3 and model.config.num_classes > 1
    history = read_trainer_state(list_checkpoints(trained["dir"])[-1][0]).log_history
    stages = {e["stage"] for e in history if "loss" in e}
    assert stages == {"adapt", "prompts", "text_guided"}
    assert any("i2t" in e for e in history if e.get("stage") == "text_guided")
    assert any("separation" in e for e in history if e.get("stage") == "prompts")


def test_pseudo_label_quality_is_logged_per_scenario_and_plotted(trained):
    history = json.loads((trained["dir"] / "pseudo_labels.json").read_text())
    # stage I: 2 epochs; before stage II: 1; stage III: 2
    assert [h["stage"] for h in history] == ["adapt", "adapt", "prompts", "text_guided", "text_guided"]
    for entry in history:
        assert set(entry["scenarios"]) == {"ltcc", "sysu_mm01", "mlr_cuhk03"}
        for quality in entry["scenarios"].values():
            assert {"nmi", "ari", "num_clusters", "outlier_share"} <= set(quality)
            assert 0.0 <= quality["nmi"] <= 1.0
    assert all(
        "merged_clusters" in h and "joined_outliers" in h for h in history if h["stage"] == "text_guided"
    )
    assert (trained["dir"] / "pseudo_labels.png").stat().st_size > 1000


@pytest.mark.slow
def test_no_identity_label_reaches_training(recipe, inputs, trained, tmp_path, monkeypatch):
    """The same run with every training pid shuffled (and relabelled) ends with bit-identical
    weights; only the logged pseudo-label quality, which compares with the pids, changes."""
    real_load_data = recipe_run.load_data

    def shuffled_load_data(args):
        data = real_load_data(args)
        order = np.random.default_rng(0).permutation(len(data.train))
        train = data.train
        for column in ("pid", "label"):
            values = np.asarray(train[column])[order]
            train = train.remove_columns(column).add_column(column, values.tolist())
        data.train = train
        return data

    monkeypatch.setattr(recipe_run, "load_data", shuffled_load_data)
    run_recipe(recipe, inputs["config"], tmp_path)
    expected, got = weights(trained["dir"]), weights(tmp_path)
    for name, tensor in expected.items():
        assert torch.equal(tensor, got[name]), name
    logged = json.loads((tmp_path / "pseudo_labels.json").read_text())
    original = json.loads((trained["dir"] / "pseudo_labels.json").read_text())
    assert [h["scenarios"]["ltcc"]["num_clusters"] for h in logged] == [
        h["scenarios"]["ltcc"]["num_clusters"] for h in original
    ]
    assert logged[0]["scenarios"]["ltcc"]["nmi"] != original[0]["scenarios"]["ltcc"]["nmi"]


@pytest.mark.slow
def test_killed_in_stage_one_resumes_to_the_same_results(recipe, inputs, trained, tmp_path, monkeypatch):
    class Killed(RuntimeError):
        pass

    real_forward = ITKMModel.forward
    calls = {"n": 0}

    def dying_forward(self, *args, **kwargs):
        if kwargs.get("memory") is not None:
            calls["n"] += 1
            if calls["n"] == 5:  # stage I, after the checkpoint at step 3, mid-epoch
                raise Killed("killed")
        return real_forward(self, *args, **kwargs)

    monkeypatch.setattr(ITKMModel, "forward", dying_forward)
    with pytest.raises(Killed):
        run_recipe(recipe, inputs["config"], tmp_path)
    monkeypatch.setattr(ITKMModel, "forward", real_forward)
    latest = read_trainer_state(list_checkpoints(tmp_path)[-1][0])
    assert latest.stage == "adapt" and latest.batch_in_epoch > 0
    assert run_recipe(recipe, inputs["config"], tmp_path, "--resume") == trained["results"]
