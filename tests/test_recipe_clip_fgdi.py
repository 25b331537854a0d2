"""recipes/clip_fgdi.py end to end on a small SynthPeds (two source domains, one held-out domain) and a
tiny CLIP: it learns above chance on the unseen domain, runs all four stages with stage III on stage
I's schedule, saves a model that reloads with the evaluated embeddings, writes a card and pushes
(HfApi patched), resumes after a kill inside stage III to the same results, runs the ablation
without domain-relevant prompts, and refuses impossible settings naming the field."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from helpers_recipes import (
    CLIP_REID_PRESET,
    CONFIGS,
    chance_map,
    embed_split,
    load_recipe,
    make_recipe_inputs,
    mean_ap,
    pushed_run,
    run_recipe,
)
from huggingface_hub import ModelCard
from transformers import AutoImageProcessor, AutoModel

from hf_reid.data import load_reid_dataset
from hf_reid.models import CLIPFGDIModel
from hf_reid.training import ConfigError, list_checkpoints, load_config, read_trainer_state, scheduled_lr

HUB_REPO = "org/clip-fgdi-tiny"
PRIOR_EPOCHS, FINAL_EPOCHS, LR, WARMUP, MILESTONE = 2, 16, 1.0e-3, 4, 15

TINY_CONFIG = f"""\
seed: 0
model:
  clip_name_or_path: {{clip}}
  image_size: [128, 64]
data:
  root: {{data}}
  synthpeds: null
  train_domains: [synthpeds_d0, synthpeds_d1]
  eval_domains: [synthpeds_d2]
  p: 4
  k: 4
  pad: 0
  random_erasing_p: 0.0
  eval_batch_size: 64
image_encoder:
  prior_epochs: {PRIOR_EPOCHS}
  epochs: {FINAL_EPOCHS}
  lr: {LR}
  warmup_epochs: {WARMUP}
  warmup_factor: 0.1
  milestones: [{MILESTONE}]
invariant_prompts:
  epochs: 3
  batch_size: 32
  lr: 1.0e-3
  warmup_epochs: 1
domain_prompts:
  epochs: 2
  batch_size: 32
  lr: 1.0e-3
  warmup_epochs: 1
train:
  checkpoint_every: 8
  checkpoint_total_limit: 2
  progress_bar: false
eval:
  ranked_list_queries: 4
"""


@pytest.fixture(scope="module")
def recipe():
    return load_recipe("clip_fgdi")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Three SynthPeds domains of 40 training and 24 test identities: d0, d1 are the sources, d2 the
    unseen target; a tiny random CLIP; the tiny config."""
    preset = dataclasses.replace(CLIP_REID_PRESET, name="clip_fgdi_test", num_domains=3)
    return make_recipe_inputs(tmp_path_factory.mktemp("clip_fgdi_inputs"), TINY_CONFIG, preset)


def run(recipe, inputs, output_dir, *extra) -> dict:
    return run_recipe(recipe, inputs["config"], output_dir, *extra)


@pytest.fixture(scope="module")
def trained(recipe, inputs, tmp_path_factory):
    """One full run with --push_to_hub, HfApi.create_repo / upload_folder patched (no Hub here)."""
    run = pushed_run(recipe, inputs["config"], tmp_path_factory.mktemp("clip_fgdi_run"), HUB_REPO)
    return {**run, "history": read_trainer_state(list_checkpoints(run["dir"])[-1][0]).log_history}


# ------------------------------------------------------------------------------------------------
# The shipped configs
# ------------------------------------------------------------------------------------------------
def test_shipped_configs_follow_the_code_and_the_retext_budget(recipe):
    configs = {
        name: load_config(recipe.CLIPFGDIRecipeConfig, CONFIGS / f"clip_fgdi_{name}.yaml")
        for name in ("synthpeds", "p1", "p2_market1501", "p3_market1501")
    }
    for name in ("p1", "p2_market1501", "p3_market1501"):
        cfg = configs[name]
        # cfgs/cfgs.py of the authors' code (docs/CLIP_FGDI.md): 224x224, P32 x K4, 3 / 120 / 30 / 60
        # epochs, image encoder 5e-6, prompts 3.5e-4, domain classifiers 0.01, the augmentations.
        assert cfg.model.clip_name_or_path == "openai/clip-vit-base-patch16" and cfg.model.image_size == (
            224,
            224,
        )
        assert (cfg.model.input_norm, cfg.model.triplet_margin, cfg.model.feature_norm) == (
            "instance",
            None,
            False,
        )
        assert (cfg.data.p, cfg.data.k, cfg.data.flip_p, cfg.data.random_erasing_p) == (32, 4, 0.4, 0.0)
        assert (cfg.data.augment["augmix_p"], cfg.data.augment["grayscale_p"]) == (0.6, 0.1)
        epochs = (
            cfg.image_encoder.prior_epochs,
            cfg.invariant_prompts.epochs,
            cfg.domain_prompts.epochs,
            cfg.image_encoder.epochs,
        )
        assert epochs == (3, 120, 30, 60)
        assert (cfg.image_encoder.lr, cfg.invariant_prompts.lr, cfg.invariant_prompts.classifier_lr) == (
            5e-6,
            3.5e-4,
            0.01,
        )
        assert cfg.image_encoder.milestones == [30, 50] and cfg.invariant_prompts.batch_size == 128
    p1 = configs["p1"]
    assert p1.data.combine_all and len(p1.data.train_domains) == 4
    assert {p1.data.layouts[d] for d in p1.data.eval_domains} == {"prid", "grid", "viper", "ilids"}
    assert not configs["p2_market1501"].data.combine_all and configs["p3_market1501"].data.combine_all
    # SynthPeds: the data and the 408 image-encoder steps of the ReText config (same PK batches).
    synth = configs["synthpeds"]
    retext = load_config(load_recipe("retext").ReTextRecipeConfig, CONFIGS / "retext_synthpeds.yaml")
    for field in ("train_domains", "eval_domains", "p", "k", "pad", "random_erasing_p"):
        assert getattr(synth.data, field) == getattr(retext.data, field), field
    for field in ("preset", "seed", "image_size"):  # the same multi-camera domains
        assert getattr(synth.data.synthpeds, field) == getattr(retext.data.synthpeds, field), field
    assert synth.model.image_size == retext.model.image_size and synth.seed == retext.seed
    assert synth.image_encoder.prior_epochs + synth.image_encoder.epochs == retext.optim.epochs
    assert synth.model.clip_name_or_path == recipe.SYNTHCLIP


# ------------------------------------------------------------------------------------------------
# A full run
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_run_learns_on_the_unseen_domain_and_every_stage_ran(trained, inputs):
    splits = load_reid_dataset("synthpeds", inputs["data"] / "synthpeds_d2")
    chance = chance_map(splits["query"], splits["gallery"])
    assert trained["results"]["SynthPeds d2"]["mAP"] > 2.0 * chance, (trained["results"], chance)
    terms = {
        "image_prior": {"id", "triplet"},
        "invariant_prompts": {"i2t", "t2i", "domain", "domain_acc"},
        "domain_prompts": {"i2t", "t2i", "domain", "domain_acc"},
        "image_encoder": {"id", "triplet", "i2t", "apn"},
    }
    for stage, keys in terms.items():
        entries = [e for e in trained["history"] if e.get("stage") == stage and "loss" in e]
        assert entries and keys <= set(entries[-1]), (stage, entries[-1:])
    assert "apn" not in [e for e in trained["history"] if e.get("stage") == "image_prior"][-1]
    train_results = json.loads((trained["dir"] / "train_results.json").read_text())
    assert train_results["domains"] == ["synthpeds_d0", "synthpeds_d1"]
    assert train_results["invariant_prompts_seconds_per_epoch"] > 0
    assert train_results["domain_prompts_seconds_per_epoch"] > 0
    assert (trained["dir"] / "cache" / "stage2_image_features.pt").is_file()


def test_stage3_learning_rates_continue_stage1_schedule(trained):
    """Stage III goes on with stage I's optimizer and schedule: its epoch e trains at schedule epoch
    prior_epochs + e (warm-up continued, then the decay at the milestone)."""

    def expected(position: int) -> float:
        return scheduled_lr(
            position,
            LR,
            name="multistep",
            warmup=WARMUP,
            warmup_factor=0.1,
            milestones=[MILESTONE],
            gamma=0.1,
        )

    rates: dict[tuple[str, int], float] = {}
    for entry in trained["history"]:
        if entry.get("stage") in ("image_prior", "image_encoder") and "lr" in entry:
            rates[(entry["stage"], entry["epoch"])] = entry["lr"]
    for epoch in range(1, PRIOR_EPOCHS + 1):
        assert rates[("image_prior", epoch)] == pytest.approx(expected(epoch)), epoch
    for epoch in range(1, FINAL_EPOCHS + 1):
        assert rates[("image_encoder", epoch)] == pytest.approx(expected(PRIOR_EPOCHS + epoch)), epoch
    assert rates[("image_encoder", 1)] > rates[("image_prior", PRIOR_EPOCHS)]  # not restarted
    assert rates[("image_encoder", FINAL_EPOCHS)] == pytest.approx(0.1 * LR)  # decayed at the milestone


def test_saved_model_reloads_with_the_evaluated_embeddings_card_and_push(trained, inputs):
    folder = trained["dir"]
    for name in (
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "tokenizer.json",
        "README.md",
    ):
        assert (folder / name).is_file(), name
    assert (folder / "modeling_clip_fgdi.py").is_file()
    model = AutoModel.from_pretrained(folder).eval()
    assert isinstance(model, CLIPFGDIModel)
    assert (model.config.num_classes, model.config.num_domains, model.config.apn_sign) == (80, 2, "paper")
    processor = AutoImageProcessor.from_pretrained(folder)
    splits = load_reid_dataset("synthpeds", inputs["data"] / "synthpeds_d2")
    reloaded = mean_ap(
        embed_split(model, processor, splits["query"]),
        embed_split(model, processor, splits["gallery"]),
        splits["query"],
        splits["gallery"],
    )
    written = json.loads((folder / "eval_results.json").read_text())
    assert written == json.loads(json.dumps(trained["results"]))
    assert reloaded == pytest.approx(written["SynthPeds d2"]["mAP"], abs=1e-3)
    card = ModelCard.load(folder / "README.md")
    metrics = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert metrics["mAP"] == round(100 * written["SynthPeds d2"]["mAP"], 2)
    assert (
        "CLIP-FGDI" in card.text
        and "synthpeds_d0, synthpeds_d1" in card.text
        and "image_encoder:" in card.text
    )
    assert (
        trained["hub"]["create_repo"][0] == HUB_REPO
        and trained["hub"]["upload_folder"]["repo_id"] == HUB_REPO
    )


@pytest.mark.slow
def test_resume_after_a_kill_in_stage3_ends_with_the_same_results(
    recipe, trained, inputs, tmp_path, monkeypatch
):
    """Killed mid-epoch in stage III, after a checkpoint: the resumed run restores stages I, II-a and
    II-b from their end checkpoints (the feature cache hits), continues stage III from the next
    batch on stage I's optimizer, and ends exactly like the uninterrupted run."""

    class Killed(RuntimeError):
        pass

    real_loss_fn = recipe.image_loss_fn
    calls = {"n": 0}

    def dying_loss_fn(model, text_features, relevant_text_features, gather):
        compute_loss = real_loss_fn(model, text_features, relevant_text_features, gather)
        if text_features is None:  # stage I
            return compute_loss

        def wrapped(batch):
            calls["n"] += 1
            if calls["n"] == 30:  # stage III, epoch 2, after the checkpoint at its step 24
                raise Killed("killed")
            return compute_loss(batch)

        return wrapped

    monkeypatch.setattr(recipe, "image_loss_fn", dying_loss_fn)
    with pytest.raises(Killed):
        run(recipe, inputs, tmp_path)
    monkeypatch.setattr(recipe, "image_loss_fn", real_loss_fn)
    latest = read_trainer_state(list_checkpoints(tmp_path)[-1][0])
    assert (
        latest.stage == "image_encoder" and latest.batch_in_epoch > 0 and latest.epoch_offset == PRIOR_EPOCHS
    )
    assert not (tmp_path / "eval_results.json").exists()

    resumed = run(recipe, inputs, tmp_path, "--resume")
    assert resumed == trained["results"]
    uninterrupted = AutoModel.from_pretrained(trained["dir"]).state_dict()
    for name, tensor in AutoModel.from_pretrained(tmp_path).state_dict().items():
        torch.testing.assert_close(tensor, uninterrupted[name], rtol=0, atol=0, msg=name)


def test_ablation_without_domain_relevant_prompts(recipe, inputs, tmp_path):
    run(
        recipe,
        inputs,
        tmp_path,
        "--domain_prompts.enabled=false",
        "--model.apn_weight=0",
        "--image_encoder.prior_epochs=1",
        "--image_encoder.epochs=1",
        "--invariant_prompts.epochs=1",
        "--eval.plots=false",
    )
    history = read_trainer_state(list_checkpoints(tmp_path)[-1][0]).log_history
    assert not any(e.get("stage") == "domain_prompts" and "loss" in e for e in history)
    final = [e for e in history if e.get("stage") == "image_encoder" and "loss" in e]
    assert final and all("i2t" in e and "apn" not in e for e in final)
    assert "domain_prompts_seconds_per_epoch" not in json.loads((tmp_path / "train_results.json").read_text())


def test_impossible_settings_are_refused_naming_the_field(recipe, inputs, tmp_path):
    with pytest.raises(ConfigError, match=r"model\.apn_weight=0\.1: the guidance loss needs"):
        run(recipe, inputs, tmp_path, "--domain_prompts.enabled=false")
    with pytest.raises(ConfigError, match=r"domain_prompts\.enabled needs invariant_prompts\.enabled"):
        run(recipe, inputs, tmp_path, "--invariant_prompts.enabled=false")
    with pytest.raises(
        ConfigError, match=r"invariant_prompts\.batch_size=100000 is larger than the \d+ training"
    ):
        run(recipe, inputs, tmp_path, "--invariant_prompts.batch_size=100000")
