"""LoRA through peft: targeting by tower and projection, training, adapter round trip, merge."""

import json

import pytest
import torch
from helpers_models import make_tiny_reid_model, pk_labels, random_pixels
from transformers import AutoModel

from hf_reid.models import CLIPReIDModel
from hf_reid.models.lora import LoraSettings, apply_lora, load_lora_adapter, merge_lora, save_lora_adapter


def lora_layers(model) -> list[str]:
    return sorted(
        name.removesuffix(".lora_A") for name, _ in model.named_modules() if name.endswith(".lora_A")
    )


@pytest.fixture
def base_folder(tmp_path):
    model = make_tiny_reid_model(num_classes=4, use_sie=True, num_cameras=2, seed=3)
    model.save_pretrained(tmp_path / "base")
    return tmp_path / "base"


@pytest.mark.parametrize(
    ("towers", "projections", "expected"),
    [
        (("vision",), ("q", "v"), {"vision_model": {"self_attn.q_proj", "self_attn.v_proj"}}),
        (("text",), ("fc1", "fc2"), {"text_model": {"mlp.fc1", "mlp.fc2"}}),
        (
            ("vision", "text"),
            ("out",),
            {"vision_model": {"self_attn.out_proj"}, "text_model": {"self_attn.out_proj"}},
        ),
    ],
)
def test_lora_targets_exactly_the_chosen_towers_and_projections(towers, projections, expected):
    model = apply_lora(make_tiny_reid_model(), LoraSettings(towers=towers, projections=projections, rank=2))
    found: dict[str, set[str]] = {}
    for name in lora_layers(model):
        tower = "vision_model" if ".vision_model." in name else "text_model"
        found.setdefault(tower, set()).add(name.split(".layers.")[1].split(".", 1)[1])
    assert found == expected
    assert len(lora_layers(model)) == 2 * sum(len(v) for v in expected.values())  # 2 blocks per tower


def test_lora_trains_adapter_and_reid_modules_only(base_folder):
    model = apply_lora(CLIPReIDModel.from_pretrained(base_folder), LoraSettings(rank=2))
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert all(("lora_" in n) or ("modules_to_save" in n) for n in trainable)
    assert any(".head.modules_to_save." in n for n in trainable)
    assert any(".camera_embedding.modules_to_save." in n for n in trainable)
    assert not any(n.endswith("bottleneck.bias") for n in trainable)  # BNNeck shift stays frozen


def train_steps(model, steps: int = 2):
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    labels = pk_labels(4, 2)
    for _ in range(steps):
        loss = model(pixel_values=random_pixels(8, seed=11), labels=labels, camids=labels % 2).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_adapter_round_trip_and_merge_give_the_adapter_output(base_folder, tmp_path):
    base = CLIPReIDModel.from_pretrained(base_folder)
    pixels, camids = random_pixels(4, seed=12), torch.tensor([0, 1, 0, 1])
    with torch.no_grad():
        before = base.get_image_embeddings(pixels, camids)
    peft_model = train_steps(apply_lora(base, LoraSettings(rank=4, projections=("q", "v", "fc1"))))
    with torch.no_grad():
        adapted = peft_model(pixel_values=pixels, camids=camids).embeddings
    assert (adapted - before).abs().max() > 1e-3  # the adapter changed the model

    adapter_dir = save_lora_adapter(peft_model, tmp_path / "adapter")
    assert json.loads((adapter_dir / "adapter_config.json").read_text())["r"] == 4
    reloaded = load_lora_adapter(CLIPReIDModel.from_pretrained(base_folder), adapter_dir)
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(pixel_values=pixels, camids=camids).embeddings, adapted, rtol=0, atol=0
        )

    merged = merge_lora(reloaded)
    assert type(merged) is CLIPReIDModel and not lora_layers(merged)
    with torch.no_grad():
        torch.testing.assert_close(merged.get_image_embeddings(pixels, camids), adapted, atol=1e-5, rtol=1e-5)
    merged.save_pretrained(tmp_path / "merged")
    exported = AutoModel.from_pretrained(tmp_path / "merged")
    with torch.no_grad():
        torch.testing.assert_close(
            exported.get_image_embeddings(pixels, camids),
            merged.get_image_embeddings(pixels, camids),
            rtol=0,
            atol=0,
        )


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"towers": ["audio"]}, r"towers has unknown name\(s\) \['audio'\]"),
        ({"projections": ["q", "query"]}, r"projections has unknown name\(s\) \['query'\]"),
        ({"rank": 0}, "rank must be an int >= 1"),
        ({"dropout": 1.0}, "dropout must be in"),
        ({"rnak": 4}, r"unknown LoRA setting\(s\) \['rnak'\]"),
    ],
)
def test_lora_settings_reject_bad_values(values, match):
    with pytest.raises(ValueError, match=match):
        LoraSettings.from_dict(values)


def test_lora_settings_from_yaml_like_dict():
    settings = LoraSettings.from_dict(
        {"towers": ["vision", "text"], "projections": ["q"], "rank": 4, "alpha": 8}
    )
    assert settings.towers == ("vision", "text") and settings.to_dict()["projections"] == ["q"]
    config = settings.to_peft_config(make_tiny_reid_model())  # no SIE: camera_embedding left out
    assert sorted(config.modules_to_save) == ["head", "prompt_learner"]
