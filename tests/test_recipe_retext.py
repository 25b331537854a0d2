"""recipes/retext.py end to end on a small SynthPeds (two source domains + the captioned set) and a
tiny CLIP: it learns, saves a model (and its diffusers reconstruction head) that reload with the
evaluated embeddings, writes a card and pushes (HfApi patched), resumes to the same final metrics,
runs the ablation modes, and reports bad caption data."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from helpers_models import tiny_clip_config
from helpers_recipes import (
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
from hf_reid.data.synthetic.presets import PRESETS
from hf_reid.models import ReTextConfig, ReTextModel
from hf_reid.training import ConfigError, list_checkpoints, load_config, read_trainer_state

HUB_REPO = "org/retext-tiny"

# Two source domains of 40 training identities and one test domain, plus 40 captioned identities.
TEST_PRESET = dataclasses.replace(
    PRESETS["tiny"],
    name="retext_test",
    num_domains=3,
    train_ids=40,
    test_ids=24,
    images_per_camera=(1, 3),
    caption_ids=40,
    caption_images=(2, 4),
)

TINY_CONFIG = """\
seed: 0
model:
  clip_name_or_path: {clip}
  image_size: [128, 64]
  momentum: 0.9
data:
  root: {data}
  train_domains: [synthpeds_d0, synthpeds_d1]
  eval_domains: [synthpeds_d2]
  p: 4
  k: 4
  pad: 0
  random_erasing_p: 0.0
  eval_batch_size: 64
captions:
  root: {data}/captions
  p: 4
  k: 2
optim:
  epochs: 6
  lr: 1.0e-3
  head_lr: 1.0e-3
  warmup_epochs: 1
train:
  checkpoint_every: 7
  checkpoint_total_limit: 2
  progress_bar: false
eval:
  ranked_list_queries: 4
"""


@pytest.fixture(scope="module")
def recipe():
    return load_recipe("retext")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_recipe_inputs(
        tmp_path_factory.mktemp("retext_inputs"), TINY_CONFIG, TEST_PRESET, ["market", "captions"]
    )


def run(recipe, inputs, output_dir, *extra) -> dict:
    return run_recipe(recipe, inputs["config"], output_dir, *extra)


@pytest.fixture(scope="module")
def trained(recipe, inputs, tmp_path_factory):
    """One full ReText run with --push_to_hub, HfApi.create_repo / upload_folder patched."""
    return pushed_run(recipe, inputs["config"], tmp_path_factory.mktemp("retext_run"), HUB_REPO)


def test_shipped_configs_load(recipe):
    synth = load_config(recipe.ReTextRecipeConfig, CONFIGS / "retext_synthpeds.yaml")
    assert synth.data.eval_domains == ["synthpeds_d3"]
    assert "synthpeds_d3" not in synth.data.train_domains and synth.captions.mode == "text"
    # ReText's premise (issue #15): the diverse single-camera set, far larger than the 360
    # multi-camera identities, read from the folder it is generated into.
    assert synth.data.synthpeds.captioned_styles == "diverse"
    assert synth.data.synthpeds.captioned_identities == 2000
    assert synth.captions.root == f"{synth.data.root}/captions"
    p2 = load_config(recipe.ReTextRecipeConfig, CONFIGS / "retext_p2_market1501.yaml")
    assert p2.model.clip_name_or_path == "openai/clip-vit-base-patch16"
    assert set(p2.data.layouts.values()) == {"msmt17", "cuhk_sysu", "cuhk03_np"}
    assert p2.data.eval_domains == ["Market-1501-v15.09.15"] and p2.model.image_size == (256, 128)


@pytest.mark.slow
def test_run_learns_all_losses_and_generalizes_above_chance(trained, inputs):
    splits = load_reid_dataset("synthpeds", inputs["data"] / "synthpeds_d2")
    chance = chance_map(splits["query"], splits["gallery"])
    trained_map = trained["results"]["SynthPeds d2"]["mAP"]
    assert trained_map > 2.0 * chance, (trained_map, chance)
    history = read_trainer_state(list_checkpoints(trained["dir"])[-1][0]).log_history
    entries = [e for e in history if e.get("stage") == "retext" and "loss" in e]
    for term in ("id", "triplet", "matching", "structure", "reconstruction"):
        values = [e[term] for e in entries]
        assert values[-1] < values[0], (term, values)
    train_results = json.loads((trained["dir"] / "train_results.json").read_text())
    assert train_results["captions"]["num_captions"] > 0 and train_results["caption_mode"] == "text"


def test_output_folder_reloads_with_the_evaluated_embeddings_and_a_standalone_head(trained, inputs):
    from diffusers import PixArtTransformer2DModel

    folder = trained["dir"]
    model = AutoModel.from_pretrained(folder).eval()
    assert isinstance(model, ReTextModel)
    processor = AutoImageProcessor.from_pretrained(folder)
    splits = load_reid_dataset("synthpeds", inputs["data"] / "synthpeds_d2")
    reloaded = mean_ap(
        embed_split(model, processor, splits["query"]),
        embed_split(model, processor, splits["gallery"]),
        splits["query"],
        splits["gallery"],
    )
    # up to float rounding between batch shapes (see test_recipe_clip_reid.py)
    assert reloaded == pytest.approx(trained["results"]["SynthPeds d2"]["mAP"], abs=1e-3)
    head = PixArtTransformer2DModel.from_pretrained(folder / "reconstruction_head")
    for name, tensor in head.state_dict().items():
        torch.testing.assert_close(tensor, model.reconstruction_head.state_dict()[name], rtol=0, atol=0)


def test_model_card_and_push_to_hub(trained):
    folder, hub = trained["dir"], trained["hub"]
    card = ModelCard.load(folder / "README.md")
    metrics = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert metrics["mAP"] == round(100 * trained["results"]["SynthPeds d2"]["mAP"], 2)
    assert "ReText" in card.text and "reconstruction_head/" in card.text and "captions:" in card.text
    assert hub["create_repo"][0] == HUB_REPO
    upload = hub["upload_folder"]
    assert upload["repo_id"] == HUB_REPO and "checkpoints/*" in upload["ignore_patterns"]


@pytest.mark.slow
def test_resume_after_a_kill_ends_with_the_same_metrics(recipe, trained, inputs, tmp_path, monkeypatch):
    class Killed(RuntimeError):
        pass

    real_loss_fn = recipe.retext_loss_fn
    calls = {"n": 0}

    def dying_loss_fn(*args, **kwargs):
        compute_loss = real_loss_fn(*args, **kwargs)

        def wrapped(batch):
            calls["n"] += 1
            if calls["n"] == 10:  # after the checkpoint at step 7, mid-epoch
                raise Killed("killed")
            return compute_loss(batch)

        return wrapped

    monkeypatch.setattr(recipe, "retext_loss_fn", dying_loss_fn)
    with pytest.raises(Killed):
        run(recipe, inputs, tmp_path)
    monkeypatch.setattr(recipe, "retext_loss_fn", real_loss_fn)
    assert read_trainer_state(list_checkpoints(tmp_path)[-1][0]).global_step == 7
    resumed = run(recipe, inputs, tmp_path, "--resume")
    assert resumed == trained["results"]
    uninterrupted = AutoModel.from_pretrained(trained["dir"]).state_dict()
    for name, tensor in AutoModel.from_pretrained(tmp_path).state_dict().items():
        torch.testing.assert_close(tensor, uninterrupted[name], rtol=0, atol=0, msg=name)


def test_ablation_modes_train_what_they_say(recipe, inputs, tmp_path):
    """``identities``: the captioned images are extra classes, no text loss; ``none``: the
    multi-camera data only; a text loss with weight 0 is not computed."""
    run(
        recipe,
        inputs,
        tmp_path / "ids",
        "--captions.mode",
        "identities",
        "--optim.epochs",
        "1",
        "--eval.plots",
        "false",
    )
    model = AutoModel.from_pretrained(tmp_path / "ids")
    captioned = json.loads((tmp_path / "ids" / "train_results.json").read_text())["num_captioned_identities"]
    assert model.config.num_classes == 80 + captioned
    history = read_trainer_state(list_checkpoints(tmp_path / "ids")[-1][0]).log_history
    assert all("matching" not in e for e in history) and any("triplet" in e for e in history)

    run(
        recipe,
        inputs,
        tmp_path / "none",
        "--captions.mode",
        "none",
        "--optim.epochs",
        "1",
        "--eval.plots",
        "false",
    )
    assert AutoModel.from_pretrained(tmp_path / "none").config.num_classes == 80

    run(
        recipe,
        inputs,
        tmp_path / "norec",
        "--model.reconstruction_loss_weight",
        "0",
        "--optim.epochs",
        "1",
        "--eval.plots",
        "false",
    )
    history = read_trainer_state(list_checkpoints(tmp_path / "norec")[-1][0]).log_history
    logged = [e for e in history if "loss" in e]
    assert logged and all("reconstruction" not in e and "matching" in e for e in logged)


def test_each_part_trains_at_its_own_rate(recipe):
    """``optim.lr`` / ``text_lr`` / ``head_lr`` / ``reid_head_lr`` reach exactly the image encoder,
    the text side, the reconstruction head (+ mask token) and the Re-ID heads; the momentum
    encoder is not optimized at all."""
    model = ReTextModel(ReTextConfig(clip_config=tiny_clip_config(), num_classes=4, image_size=(32, 16)))
    args = recipe.OptimArgs(lr=1e-4, text_lr=2e-4, head_lr=3e-4, reid_head_lr=4e-4, bias_lr_factor=1.0)
    optimizer = recipe.build_retext_optimizer(model, args)
    rate = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    expected = {
        "backbone.": 1e-4,
        "text_": 2e-4,
        "reconstruction_head.": 3e-4,
        "mask_token": 3e-4,
        "head.": 4e-4,
    }
    momentum = [p for name, p in model.named_parameters() if name.startswith("momentum_encoder")]
    assert momentum and not any(p.requires_grad for p in momentum)
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            assert id(parameter) not in rate, name
            continue
        prefix = next((p for p in expected if name.startswith(p)), None)
        assert prefix is not None, f"{name} is trainable but belongs to no known part"
        assert rate[id(parameter)] == pytest.approx(expected[prefix]), name


def test_bad_caption_data_is_reported(recipe, inputs, tmp_path, caplog):
    """A caption file with a missing image and an empty caption is read with both counted (skip
    mode, the default), or refused naming them (error mode); a config typo is named."""
    import shutil

    captions = tmp_path / "captions"
    shutil.copytree(inputs["data"] / "captions", captions)
    entries = json.loads((captions / "reid_raw.json").read_text())
    entries[0]["captions"] = ["   "]
    entries[1]["file_path"] = "imgs/does_not_exist.jpg"
    (captions / "reid_raw.json").write_text(json.dumps(entries))
    common = ["--captions.root", str(captions), "--optim.epochs", "1", "--eval.plots", "false"]
    with caplog.at_level("WARNING"):
        run(recipe, inputs, tmp_path / "skip", *common)
    assert "skipped 2 bad file(s)" in caplog.text and "does_not_exist.jpg" in caplog.text
    assert (
        json.loads((tmp_path / "skip" / "train_results.json").read_text())["num_captioned_images"]
        == len(entries) - 2
    )
    with pytest.raises(Exception, match=r"does_not_exist.jpg"):
        run(recipe, inputs, tmp_path / "error", *common, "--captions.on_bad_image", "error")
    with pytest.raises(ConfigError, match=r"Did you mean 'captions\.mode'"):
        run(recipe, inputs, tmp_path / "typo", "--captions.mdoe", "text")
