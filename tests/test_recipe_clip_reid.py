"""recipes/clip_reid.py end to end on a small SynthPeds and a tiny CLIP: it learns, saves a model
that reloads with identical embeddings, writes a card with its numbers, pushes (HfApi patched),
resumes to the same final metrics, trains LoRA and the no-prompt baseline, and rejects bad input
with errors that say what to fix."""

from __future__ import annotations

import fnmatch
import json
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
from helpers_recipes import (
    CONFIGS,
    chance_map,
    embed_split,
    load_recipe,
    make_clip_reid_inputs,
    mean_ap,
    pushed_run,
    run_recipe,
)
from huggingface_hub import ModelCard
from transformers import AutoImageProcessor, AutoModel

from hf_reid.data import load_reid_dataset
from hf_reid.models import CLIPReIDModel
from hf_reid.training import ConfigError, list_checkpoints, load_config, read_trainer_state, recipe_cli

HUB_REPO = "org/clip-reid-tiny"


@pytest.fixture(scope="module")
def recipe():
    return load_recipe("clip_reid")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_clip_reid_inputs(tmp_path_factory.mktemp("recipe_inputs"))


def run(recipe, inputs, output_dir, *extra) -> dict:
    return run_recipe(recipe, inputs["config"], output_dir, *extra)


@pytest.fixture(scope="module")
def trained(recipe, inputs, tmp_path_factory):
    """One full run with --push_to_hub, HfApi.create_repo / upload_folder patched (no Hub here)."""
    return pushed_run(recipe, inputs["config"], tmp_path_factory.mktemp("run"), HUB_REPO)


# ------------------------------------------------------------------------------------------------
# The shipped configs
# ------------------------------------------------------------------------------------------------
def test_shipped_configs_load_and_market_follows_the_paper(recipe):
    market = load_config(recipe.CLIPReIDRecipeConfig, CONFIGS / "clip_reid_market1501.yaml")
    synth = load_config(recipe.CLIPReIDRecipeConfig, CONFIGS / "clip_reid_synthpeds.yaml")
    # CLIP-ReID ViT-B/16 (configs/person/vit_clipreid.yml): 256x128, stage 1 120 epochs at 3.5e-4,
    # stage 2 60 epochs at 5e-6 with warm-up 10 and decay at 30 / 50, P16 x K4, ID weight 0.25.
    assert market.model.clip_name_or_path == "openai/clip-vit-base-patch16"
    assert market.model.image_size == (256, 128) and market.data.layout == "market1501"
    assert (market.stage1.epochs, market.stage1.lr, market.stage1.batch_size) == (120, 3.5e-4, 64)
    assert (market.stage2.epochs, market.stage2.lr, market.stage2.milestones) == (60, 5e-6, [30, 50])
    assert (market.data.p, market.data.k, market.model.id_loss_weight) == (16, 4, 0.25)
    # The CPU config starts from the packaged SynthCLIP and is trained and evaluated in-domain.
    assert synth.model.clip_name_or_path == recipe.SYNTHCLIP
    assert synth.data.eval_domains[0] == synth.data.train_domains[0] == "synthpeds_d0"
    assert synth.data.synthpeds is not None


# ------------------------------------------------------------------------------------------------
# A full run
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_run_learns_far_above_chance_and_the_untrained_model(trained, inputs):
    splits = load_reid_dataset("synthpeds", inputs["data"] / "synthpeds_d0")
    query, gallery = splits["query"], splits["gallery"]
    trained_map = trained["results"]["SynthPeds d0"]["mAP"]
    chance = chance_map(query, gallery)
    untrained = CLIPReIDModel.from_clip_pretrained(
        inputs["clip"], num_classes=40, image_size=(128, 64)
    ).eval()
    processor = AutoImageProcessor.from_pretrained(trained["dir"])
    untrained_map = mean_ap(
        embed_split(untrained, processor, query), embed_split(untrained, processor, gallery), query, gallery
    )
    assert trained_map > 2.0 * chance, (trained_map, chance)
    assert trained_map > 2.0 * untrained_map, (trained_map, untrained_map)
    # both stages lowered their losses
    history = read_trainer_state(list_checkpoints(trained["dir"])[-1][0]).log_history
    for stage in ("prompts", "image_encoder"):
        losses = [entry["loss"] for entry in history if entry.get("stage") == stage and "loss" in entry]
        assert losses[-1] < 0.9 * losses[0], (stage, losses)


def test_output_folder_reloads_with_the_evaluated_embeddings(trained, inputs):
    """AutoModel + AutoImageProcessor from the run folder reproduce the mAP the run reported, so the
    saved model, its processor and the recipe's evaluation transform agree."""
    folder = trained["dir"]
    for name in (
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "tokenizer.json",
        "modeling_clip_reid.py",
    ):
        assert (folder / name).is_file(), name
    model = AutoModel.from_pretrained(folder).eval()
    assert isinstance(model, CLIPReIDModel) and model.config.num_classes == 40
    processor = AutoImageProcessor.from_pretrained(folder)
    splits = load_reid_dataset("synthpeds", inputs["data"] / "synthpeds_d0")
    reloaded_map = mean_ap(
        embed_split(model, processor, splits["query"]),
        embed_split(model, processor, splits["gallery"]),
        splits["query"],
        splits["gallery"],
    )
    written = json.loads((folder / "eval_results.json").read_text())
    assert written == json.loads(json.dumps(trained["results"]))
    # Equal up to float rounding: the run embedded in batches of 64, here all at once, and BLAS
    # kernels differ in the last bits between batch shapes, which can swap near-tied gallery items.
    assert reloaded_map == pytest.approx(written["SynthPeds d0"]["mAP"], abs=1e-3)
    per_domain = json.loads((folder / "eval" / "SynthPeds_d0" / "eval_results.json").read_text())
    assert per_domain["mAP"] == written["SynthPeds d0"]["mAP"]
    assert (folder / "eval" / "SynthPeds_d0" / "cmc.png").is_file()
    assert (folder / "eval" / "SynthPeds_d0" / "ranked_list.png").is_file()
    # the saved model refuses images of another size, pointing at its processor
    with pytest.raises(ValueError, match="image processor"):
        model(pixel_values=torch.zeros(1, 3, 256, 128))


def test_model_card_and_push_to_hub(trained):
    folder, hub = trained["dir"], trained["hub"]
    card = ModelCard.load(folder / "README.md")
    metrics = {r.metric_type: r.metric_value for r in card.data.eval_results}
    result = trained["results"]["SynthPeds d0"]
    assert metrics["mAP"] == round(100 * result["mAP"], 2) and metrics["Rank-1"] == round(
        100 * result["rank-1"], 2
    )
    assert f'AutoModel.from_pretrained("{HUB_REPO}"' in card.text
    assert "stage2:" in card.text  # the training configuration is in the card
    # pushed: the repo is created, the run folder uploaded without checkpoints and caches
    assert hub["create_repo"][0] == HUB_REPO
    upload = hub["upload_folder"]
    assert upload["repo_id"] == HUB_REPO and Path(upload["folder_path"]) == folder
    files = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    uploaded = [
        f for f in files if not any(fnmatch.fnmatch(f, pattern) for pattern in upload["ignore_patterns"])
    ]
    assert {
        "config.json",
        "model.safetensors",
        "README.md",
        "preprocessor_config.json",
        "tokenizer.json",
    } <= set(uploaded)
    assert not any(f.startswith(("checkpoints/", "cache/")) for f in uploaded)
    assert any(f.startswith("checkpoints/") for f in files) and any(f.startswith("cache/") for f in files)


@pytest.mark.slow
def test_resume_after_a_kill_ends_with_the_same_metrics(recipe, trained, inputs, tmp_path, monkeypatch):
    """Killed mid-epoch in stage 2, right after a checkpoint; the resumed run restores stage 1 from
    its end checkpoint, skips the batches already trained and ends exactly like the full run."""

    class Killed(RuntimeError):
        pass

    real_loss_fn = recipe.stage2_loss_fn
    calls = {"n": 0}

    def dying_loss_fn(*args, **kwargs):
        compute_loss = real_loss_fn(*args, **kwargs)

        def wrapped(batch):
            calls["n"] += 1
            if calls["n"] == 15:  # stage-2 step 15: in epoch 2, after the checkpoint at global step 24
                raise Killed("killed")
            return compute_loss(batch)

        return wrapped

    monkeypatch.setattr(recipe, "stage2_loss_fn", dying_loss_fn)
    with pytest.raises(Killed):
        run(recipe, inputs, tmp_path)
    monkeypatch.setattr(recipe, "stage2_loss_fn", real_loss_fn)
    latest = read_trainer_state(list_checkpoints(tmp_path)[-1][0])
    assert (
        latest.stage == "image_encoder"
        and latest.batch_in_epoch > 0
        and not (tmp_path / "eval_results.json").exists()
    )

    resumed = run(recipe, inputs, tmp_path, "--resume")
    assert resumed == trained["results"]
    uninterrupted = AutoModel.from_pretrained(trained["dir"]).state_dict()
    for name, tensor in AutoModel.from_pretrained(tmp_path).state_dict().items():
        torch.testing.assert_close(tensor, uninterrupted[name], rtol=0, atol=0, msg=name)


def test_lora_and_no_prompt_baseline(recipe, inputs, tmp_path):
    """stage1.enabled=false trains without prompts or image-to-text loss; model.lora trains an
    adapter, saved in lora_adapter/, and the saved model is the merged adapter."""
    from hf_reid.models.lora import load_lora_adapter

    run(
        recipe,
        inputs,
        tmp_path,
        "--stage1.enabled=false",
        "--stage2.epochs=2",
        "--model.lora.rank=4",
        "--eval.plots=false",
    )
    history = read_trainer_state(list_checkpoints(tmp_path)[-1][0]).log_history
    stage2 = [e for e in history if e.get("stage") == "image_encoder" and "loss" in e]
    assert stage2 and all("i2t" not in e and "triplet" in e for e in stage2)
    assert not any(e.get("stage") == "prompts" and "loss" in e for e in history)
    assert json.loads((tmp_path / "lora_adapter" / "adapter_config.json").read_text())["r"] == 4

    merged = AutoModel.from_pretrained(tmp_path).eval()
    base = CLIPReIDModel.from_clip_pretrained(inputs["clip"], num_classes=40, image_size=(128, 64))
    adapter = load_lora_adapter(base, tmp_path / "lora_adapter").eval()
    pixels = torch.randn(3, 3, 128, 64, generator=torch.Generator().manual_seed(0))
    untrained = CLIPReIDModel.from_clip_pretrained(
        inputs["clip"], num_classes=40, image_size=(128, 64)
    ).eval()
    with torch.no_grad():
        adapted = adapter(pixel_values=pixels).embeddings
        torch.testing.assert_close(merged(pixel_values=pixels).embeddings, adapted, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(adapted, untrained(pixel_values=pixels).embeddings, atol=1e-4)  # it trained


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------
def test_config_unknown_key_and_wrong_type(recipe, inputs, tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'stage2\.epoch'\. Did you mean 'stage2\.epochs'"):
        run(recipe, inputs, tmp_path, "--stage2.epoch", "3")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        inputs["config"]
        .read_text()
        .replace("lr: 1.0e-3\n  warmup_epochs: 1\n  milestones", "lr: fast\n  warmup_epochs: 1\n  milestones")
    )
    with pytest.raises(ConfigError, match=r"bad\.yaml'.*field 'stage2\.lr': expected float, got str 'fast'"):
        recipe.main(["--config", str(bad), "--output_dir", str(tmp_path)])
    typo = tmp_path / "typo.yaml"
    typo.write_text(inputs["config"].read_text().replace("train_domains", "train_domain"))
    with pytest.raises(
        ConfigError, match=r"unknown key 'data\.train_domain'\. Did you mean 'data\.train_domains'"
    ):
        recipe.main(["--config", str(typo), "--output_dir", str(tmp_path)])
    # on the command line: one line naming the problem, no traceback
    with (
        mock.patch.object(sys, "argv", ["clip_reid.py", "--config", str(bad), "--output_dir", str(tmp_path)]),
        pytest.raises(SystemExit) as exit_info,
    ):
        recipe_cli(recipe.main)
    assert str(exit_info.value).startswith("clip_reid.py: error: ") and "stage2.lr" in str(exit_info.value)


def test_resume_with_another_number_of_identities_is_refused(recipe, trained, inputs):
    with pytest.raises(
        ValueError, match=r"trained on 40 identities, but the training data of this run has \d+"
    ):
        run(recipe, inputs, trained["dir"], "--resume", "--data.train_domains", "[synthpeds_d0,synthpeds_d1]")


def test_continuing_from_a_clip_reid_model_that_does_not_fit(recipe, trained, inputs, tmp_path):
    """A saved CLIP-ReID folder as the starting point: another identity count or input size is a
    clear error that names the fix."""
    start = ["--model.clip_name_or_path", str(trained["dir"])]
    with pytest.raises(ValueError, match=r"num_classes=40 identities.*ignore_mismatched_sizes"):
        run(recipe, inputs, tmp_path, *start, "--data.train_domains", "[synthpeds_d0,synthpeds_d1]")
    with pytest.raises(ValueError, match=r"image_size=\(128, 64\).*image_size=\(256, 128\) was requested"):
        run(recipe, inputs, tmp_path, *start, "--model.image_size", "[256,128]")
