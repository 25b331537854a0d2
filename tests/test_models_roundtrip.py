"""Round trips of CLIP-ReID checkpoints: start from a CLIP folder, save, reload with hf_reid and
through remote code in a clean interpreter, processor and tokenizer from the same folder, and
clear errors for checkpoints that cannot fit the requested model."""

import json
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_models import (
    TINY_IMAGE_SIZE,
    make_tiny_clip,
    make_tiny_reid_model,
    pk_labels,
    random_pixels,
    run_without_hf_reid,
    save_tiny_clip,
    save_tiny_reid_model,
)
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

from hf_reid.models import CLIPReIDModel
from hf_reid.models.clip_backbone import POSITION_TABLE_KEY
from hf_reid.models.configuration_clip_reid import DEFAULT_PROMPT_TOKEN_IDS
from hf_reid.tokenization import load_clip_tokenizer

REAL_CROPS = Path("/work/shared/realdata/market1501_crops/query")


def crop_images() -> list[Image.Image]:
    """Two real Market-1501 crops when available, else two synthetic ones."""
    files = sorted(REAL_CROPS.glob("*.jpg")) if REAL_CROPS.is_dir() else []
    if files:
        return [Image.open(f).convert("RGB") for f in files[:2]]
    rng = np.random.RandomState(0)
    return [Image.fromarray(rng.randint(0, 255, (128, 64, 3), dtype=np.uint8)) for _ in range(2)]


@pytest.fixture(scope="module")
def trained_folder(tmp_path_factory):
    """A tiny CLIP-ReID with SIE after one training step (so BN statistics and every Re-ID
    parameter differ from their initial values), saved with its processor and tokenizer."""
    folder = tmp_path_factory.mktemp("clip_reid")
    model = make_tiny_reid_model(num_classes=4, use_sie=True, num_cameras=2)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    labels = pk_labels(4, 2)
    model(
        random_pixels(8), labels=labels, camids=labels % 2, text_features=model.compute_text_features()
    ).loss.backward()
    optimizer.step()
    return save_tiny_reid_model(folder, model.eval()), model


def test_from_clip_pretrained_copies_clip_and_resizes_positions(tmp_path):
    clip_dir = save_tiny_clip(tmp_path / "clip", seed=2)
    model = CLIPReIDModel.from_clip_pretrained(str(clip_dir), num_classes=3, image_size=TINY_IMAGE_SIZE)
    clip = make_tiny_clip(seed=2)
    ours = model.backbone.clip.state_dict()
    for key, value in clip.state_dict().items():
        if key != POSITION_TABLE_KEY:
            torch.testing.assert_close(ours[key], value, rtol=0, atol=0, msg=key)
    assert ours[POSITION_TABLE_KEY].shape == (1 + 8 * 4, 64)
    torch.testing.assert_close(ours[POSITION_TABLE_KEY][0], clip.state_dict()[POSITION_TABLE_KEY][0])
    assert model.config.prompt_token_ids == DEFAULT_PROMPT_TOKEN_IDS  # from the folder's tokenizer
    assert model.head.classifier.weight.shape == (3, 64)


def test_from_clip_pretrained_without_tokenizer_for_a_custom_template(tmp_path):
    clip_dir = save_tiny_clip(tmp_path / "clip", with_tokenizer=False)
    template = "A photo of a X X X X vehicle."
    with pytest.raises(ValueError, match="pass tokenizer="):
        CLIPReIDModel.from_clip_pretrained(
            str(clip_dir), num_classes=2, image_size=TINY_IMAGE_SIZE, prompt_template=template
        )
    model = CLIPReIDModel.from_clip_pretrained(
        str(clip_dir),
        num_classes=2,
        image_size=TINY_IMAGE_SIZE,
        prompt_template=template,
        tokenizer=load_clip_tokenizer(),
    )
    assert model.config.prompt_token_ids[9] != DEFAULT_PROMPT_TOKEN_IDS[9]  # "vehicle" not "person"
    assert model.compute_text_features().shape == (2, 32)


def test_automodel_reload_with_hf_reid_gives_identical_embeddings(trained_folder):
    folder, model = trained_folder
    pixels, camids = random_pixels(4, seed=7), torch.tensor([0, 1, 1, 0])
    reloaded = AutoModel.from_pretrained(folder)
    assert type(reloaded) is CLIPReIDModel
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(pixels, camids=camids).embeddings,
            model(pixels, camids=camids).embeddings,
            rtol=0,
            atol=0,
        )
        torch.testing.assert_close(
            reloaded.compute_text_features(), model.compute_text_features(), rtol=0, atol=0
        )
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_clip_reid.CLIPReIDModel"
    assert {"modeling_clip_reid.py", "configuration_clip_reid.py", "clip_backbone.py"} <= set(
        os.listdir(folder)
    )


def test_eager_attention_gives_the_same_embeddings(trained_folder):
    folder, model = trained_folder
    eager = CLIPReIDModel.from_pretrained(folder, attn_implementation="eager")
    assert eager.backbone.clip.vision_model.config._attn_implementation == "eager"
    assert model.backbone.clip.vision_model.config._attn_implementation == "sdpa"
    pixels = random_pixels(2, seed=8)
    with torch.no_grad():
        torch.testing.assert_close(
            eager.get_image_embeddings(pixels), model.get_image_embeddings(pixels), atol=1e-5, rtol=1e-5
        )


CLEAN_LOAD = textwrap.dedent(
    """
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(folder, trust_remote_code=True)
    processor = AutoImageProcessor.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    images = [Image.open(f"{out}/crop{i}.png") for i in range(2)]
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        embeddings = model.get_image_embeddings(pixels, torch.tensor([0, 1]))
    np.save(f"{out}/remote_pixels.npy", pixels.numpy())
    np.save(f"{out}/remote_embeddings.npy", embeddings.numpy())
    ids = tokenizer(model.config.prompt_template)["input_ids"]
    print("CLASS", type(model).__module__, "IDS_OK", ids == model.config.prompt_token_ids)
    """
)


def test_remote_code_in_a_clean_interpreter_gives_identical_embeddings(trained_folder, tmp_path):
    folder, model = trained_folder
    for i, image in enumerate(crop_images()):
        image.save(tmp_path / f"crop{i}.png")
    result = run_without_hf_reid(CLEAN_LOAD, folder, tmp_path)
    assert "CLASS transformers_modules." in result.stdout and "IDS_OK True" in result.stdout
    images = [Image.open(tmp_path / f"crop{i}.png") for i in range(2)]
    pixels = AutoImageProcessor.from_pretrained(folder)(images=images, return_tensors="pt")["pixel_values"]
    np.testing.assert_array_equal(np.load(tmp_path / "remote_pixels.npy"), pixels.numpy())
    with torch.no_grad():
        local = model.get_image_embeddings(pixels, torch.tensor([0, 1])).numpy()
    np.testing.assert_array_equal(np.load(tmp_path / "remote_embeddings.npy"), local)


def test_processor_resizes_and_normalises_like_the_test_transform(trained_folder):
    folder, _ = trained_folder
    processor = AutoImageProcessor.from_pretrained(folder)
    images = crop_images()
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (2, 3, *TINY_IMAGE_SIZE)
    height, width = TINY_IMAGE_SIZE
    expected = np.stack(
        [
            np.asarray(im.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
            for im in images
        ]
    )
    expected = (expected - 0.5) / 0.5
    np.testing.assert_allclose(pixels.permute(0, 2, 3, 1).numpy(), expected, atol=1e-6)
    saved = json.loads((folder / "preprocessor_config.json").read_text())
    assert saved["size"] == {"height": height, "width": width} and saved["do_center_crop"] is False
    assert saved["image_mean"] == [0.5] * 3 and saved["image_std"] == [0.5] * 3


def test_tokenizer_reloads_from_the_model_folder(trained_folder):
    folder, model = trained_folder
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer(model.config.prompt_template)["input_ids"] == model.config.prompt_token_ids
    assert len(tokenizer) == 49408 and tokenizer.eos_token_id == 49407


def test_checkpoint_with_another_number_of_identities(trained_folder):
    folder, model = trained_folder
    with pytest.raises(
        ValueError,
        match=r"num_classes=4 identities, but num_classes=7 was requested.*ignore_mismatched_sizes",
    ):
        CLIPReIDModel.from_pretrained(folder, num_classes=7)
    with pytest.raises(ValueError, match="num_classes=4 identities"):
        AutoModel.from_pretrained(folder, num_classes=7)
    with pytest.raises(ValueError, match=r"image_size=\(128, 64\).*image_size=\(256, 128\)"):
        CLIPReIDModel.from_pretrained(folder, image_size=(256, 128))
    # Values that leave every shape as saved are accepted (stride 16 = the patch size).
    assert CLIPReIDModel.from_pretrained(folder, num_classes=4, stride_size=16).num_classes == 4
    # Fine-tuning on another identity set: backbone kept, per-identity parts re-initialised.
    resized = CLIPReIDModel.from_pretrained(folder, num_classes=7, ignore_mismatched_sizes=True)
    assert resized.head.classifier.weight.shape == (7, 64)
    assert resized.prompt_learner.context.shape == (7, 4, 64)
    torch.testing.assert_close(
        resized.backbone.clip.visual_projection.weight,
        model.backbone.clip.visual_projection.weight,
        rtol=0,
        atol=0,
    )
    assert resized.head.classifier.weight.std().item() == pytest.approx(0.001, rel=0.3)


def test_plain_clip_checkpoint_points_to_from_clip_pretrained(tmp_path):
    clip_dir = save_tiny_clip(tmp_path / "clip", with_tokenizer=False)
    with pytest.raises(ValueError, match="from_clip_pretrained"):
        CLIPReIDModel.from_pretrained(clip_dir)
