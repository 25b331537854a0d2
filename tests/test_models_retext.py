"""ReText: its three text losses against naive references, the model's forward, gradients and
momentum encoder, the untouched diffusers head, round trips (hf_reid, remote code in a clean
interpreter, the standalone diffusers head, a BERT text encoder), clear errors, and a tiny
learning check."""

import json
import math
import os
import textwrap

import numpy as np
import pytest
import torch
from diffusers import PixArtTransformer2DModel
from helpers_models import (
    CLIP_BOS_TOKEN_ID,
    CLIP_EOS_TOKEN_ID,
    TINY_IMAGE_SIZE,
    make_tiny_clip,
    pk_labels,
    random_pixels,
    run_without_hf_reid,
    save_tiny_clip,
    tiny_clip_config,
)
from transformers import AutoModel, BertConfig, BertModel

from hf_reid.models import ReTextConfig, ReTextModel
from hf_reid.models.clip_backbone import POSITION_TABLE_KEY
from hf_reid.models.losses import (
    identity_matching_loss,
    image_patches,
    masked_patch_reconstruction_loss,
    structure_preserving_loss,
)


def tiny_bert_config() -> BertConfig:
    return BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=80,
    )


def make_retext(seed: int = 0, num_classes: int = 4, **config_kwargs) -> ReTextModel:
    """A tiny ReText with random weights everywhere (eval mode); 2-block reconstruction head."""
    torch.manual_seed(seed)
    head = config_kwargs.pop("reconstruction_head", {"num_layers": 2})
    config = ReTextConfig(
        clip_config=tiny_clip_config(),
        num_classes=num_classes,
        image_size=TINY_IMAGE_SIZE,
        reconstruction_head=head,
        **config_kwargs,
    )
    return ReTextModel(config).eval()


def captions(batch: int, seed: int = 0, vocab: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token ids (B, 12) with CLIP's start and end tokens (or BERT-like ids below ``vocab``)
    and 2-4 padding tokens at the end; the attention mask marks the real tokens."""
    generator = torch.Generator().manual_seed(seed)
    length = 12
    if vocab is None:
        ids = torch.randint(300, 40000, (batch, length), generator=generator)
        ids[:, 0] = CLIP_BOS_TOKEN_ID
    else:
        ids = torch.randint(5, vocab, (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.long)
    for row in range(batch):
        end = length - 2 - row % 3
        if vocab is None:
            ids[row, end - 1 :] = CLIP_EOS_TOKEN_ID
        mask[row, end:] = 0
    return ids, mask


def step_inputs(batch: int = 8, seed: int = 0, vocab: int | None = None) -> dict:
    ids, mask = captions(batch, seed, vocab)
    return {
        "pixel_values": random_pixels(batch, seed=seed),
        "labels": pk_labels(batch // 2, 2),
        "caption_pixel_values": random_pixels(batch, seed=seed + 100),
        "input_ids": ids,
        "attention_mask": mask,
        "caption_labels": pk_labels(batch // 2, 2),
    }


@pytest.fixture(scope="module")
def model():
    return make_retext()


# ------------------------------------------------------------------------------- loss functions


def test_identity_matching_loss_equals_an_explicit_loop():
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    text = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    tau, eps = 0.1, 1e-8

    def cos(a, b):
        return float(a @ b / (a.norm() * b.norm()))

    expected = 0.0
    for anchors, candidates in ((image, text), (text, image)):
        for i in range(6):
            scores = [math.exp(cos(anchors[i], candidates[j]) / tau) for j in range(6)]
            positives = sum(int(labels[j] == labels[i]) for j in range(6))
            for j in range(6):
                p = scores[j] / sum(scores)
                q = (labels[j] == labels[i]).item() / positives
                expected += p * (math.log(p) - math.log(q + eps)) / 6
    loss = identity_matching_loss(image, text, labels, temperature=tau, epsilon=eps)
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    # Features aligned identity by identity give a much smaller loss.
    aligned = torch.nn.functional.one_hot(labels, 5).double()
    assert identity_matching_loss(aligned, aligned, labels, temperature=tau) < 0.01 * loss


def test_structure_loss_is_zero_for_equal_structures_and_equals_a_loop_otherwise():
    generator = torch.Generator().manual_seed(1)
    image = torch.randn(5, 4, generator=generator, dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(4, 4, generator=generator, dtype=torch.float64))
    # A rotation keeps every cosine, so the structures coincide.
    assert structure_preserving_loss(image, image @ rotation, image * 3.0).abs().item() < 1e-12

    text = torch.randn(5, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    online = image.clone().requires_grad_(True)
    momentum = torch.randn(5, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    tau = 0.1
    loss = structure_preserving_loss(online, text, momentum, temperature=tau)

    def rows(features):
        unit = torch.nn.functional.normalize(features.detach(), dim=1)
        sims = (unit @ unit.t() / tau).tolist()
        out = []
        for i in range(5):
            others = [math.exp(sims[i][j]) for j in range(5) if j != i]
            out.append([v / sum(others) for v in others])
        return out

    def kl(p_rows, q_rows):
        return sum(p * math.log(p / q) for p_r, q_r in zip(p_rows, q_rows) for p, q in zip(p_r, q_r)) / 5

    expected = kl(rows(online), rows(text)) + kl(rows(text), rows(momentum))
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    assert loss.item() > 0
    loss.backward()
    assert momentum.grad is None  # stop-gradient target
    assert online.grad.abs().sum() > 0 and text.grad.abs().sum() > 0


def test_image_patches_follow_the_patch_embedding_order():
    pixels = torch.arange(2 * 3 * 8 * 12, dtype=torch.float32).reshape(2, 3, 8, 12)
    patches = image_patches(pixels, 4)
    assert patches.shape == (2, 2 * 3, 3 * 16)
    # Patch 4 = row 1, column 1 (3 columns), each as (C, p, p) flattened.
    torch.testing.assert_close(patches[1, 4], pixels[1, :, 4:8, 4:8].reshape(-1))
    assert image_patches(pixels, 4, stride=2).shape == (2, 3 * 5, 48)


def test_reconstruction_loss_counts_only_masked_patches():
    generator = torch.Generator().manual_seed(2)
    target = torch.randn(2, 5, 12, generator=generator, dtype=torch.float64)
    prediction = torch.randn(2, 5, 12, generator=generator, dtype=torch.float64)
    mask = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 1, 1]], dtype=torch.bool)
    loss = masked_patch_reconstruction_loss(prediction, target, mask)
    changed = prediction.clone()
    changed[~mask] += 100.0  # visible patches do not count
    assert masked_patch_reconstruction_loss(changed, target, mask).item() == pytest.approx(loss.item())
    normalised = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    errors = [((prediction[b, n] - normalised[b, n]) ** 2).mean().item() for b, n in mask.nonzero().tolist()]
    assert loss.item() == pytest.approx(sum(errors) / len(errors), rel=1e-9)
    raw = masked_patch_reconstruction_loss(prediction, target, mask, norm_pix=False)
    assert raw.item() == pytest.approx(((prediction - target) ** 2).mean(-1)[mask].mean().item(), rel=1e-9)
    with pytest.raises(ValueError, match="no masked patch"):
        masked_patch_reconstruction_loss(prediction, target, torch.zeros_like(mask))


# ------------------------------------------------------------------------------- model


def test_forward_gives_every_loss_and_shapes(model):
    out = model(**step_inputs())
    for name in ("id_loss", "triplet_loss", "matching_loss", "structure_loss", "reconstruction_loss"):
        assert getattr(out, name).ndim == 0 and torch.isfinite(getattr(out, name)), name
    cfg = model.config
    expected = (
        cfg.id_loss_weight * out.id_loss
        + cfg.triplet_loss_weight * out.triplet_loss
        + out.matching_loss
        + out.structure_loss
        + out.reconstruction_loss
    )
    torch.testing.assert_close(out.loss, expected)
    assert out.embeddings.shape == (8, 64 + 32) and out.logits.shape == (8, 4)
    assert out.image_text_logits.shape == (8, 8) and out.text_embeds.shape == (8, 32)
    assert out.reconstruction.shape == (8, 8 * 4, 3 * 16 * 16)
    # round(0.75 * 32) = 24 masked patches per image.
    assert out.mask.shape == (8, 32) and out.mask.sum(1).tolist() == [24] * 8
    torch.testing.assert_close(out.embeddings, model.get_image_embeddings(step_inputs()["pixel_values"]))
    image_only = model(pixel_values=random_pixels(2))
    assert image_only.loss is None and image_only.reconstruction is None


def test_weight_zero_losses_are_none_and_their_modules_do_not_run():
    model = make_retext(matching_loss_weight=0.0, structure_loss_weight=0, reconstruction_loss_weight=0.0)
    calls = []
    for name in ("text_model", "momentum_encoder", "reconstruction_head"):
        getattr(model, name).register_forward_hook(lambda *_, name=name: calls.append(name))
    inputs = step_inputs()
    inputs.pop("caption_labels")
    out = model(**inputs)
    assert out.matching_loss is None and out.structure_loss is None and out.reconstruction_loss is None
    assert calls == [] and out.id_loss is not None
    assert not any(p.requires_grad for p in model.text_model.parameters())
    assert not model.mask_token.requires_grad

    only_rec = make_retext(matching_loss_weight=0, structure_loss_weight=0)
    only_rec.text_model.register_forward_hook(lambda *_: calls.append("text_model"))
    only_rec.momentum_encoder.register_forward_hook(lambda *_: calls.append("momentum_encoder"))
    out = only_rec(**inputs)
    assert calls == ["text_model"] and out.reconstruction_loss is not None
    assert out.matching_loss is None and out.structure_loss is None and out.image_text_logits is None


def _grads(model, loss):
    model.zero_grad()
    loss.backward()
    return {n: p.grad is not None and p.grad.abs().sum().item() > 0 for n, p in model.named_parameters()}


def test_gradients_reach_the_parts_each_loss_trains():
    model = make_retext().train()
    out = model(**step_inputs())
    grads = _grads(model, out.reconstruction_loss)
    vision = "backbone.clip.vision_model.encoder.layers.0.self_attn.q_proj.weight"
    assert grads[vision] and grads["mask_token"] and grads["reconstruction_head.proj_out.weight"]
    assert grads["text_model.encoder.layers.0.self_attn.q_proj.weight"]  # through the cross-attention
    assert not grads["head.classifier.weight"] and not grads["text_projection.weight"]

    out = model(**step_inputs())
    grads = _grads(model, out.matching_loss)
    assert grads[vision] and grads["text_projection.weight"] and grads["text_model.final_layer_norm.weight"]
    assert not grads["mask_token"] and not grads["reconstruction_head.proj_out.weight"]

    out = model(**step_inputs())
    grads = _grads(model, out.loss)
    assert not any(v for n, v in grads.items() if n.startswith("momentum_encoder."))
    assert all(not p.requires_grad for p in model.momentum_encoder.parameters())
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(grads[n] for n in trainable), [n for n in trainable if not grads[n]]  # DDP-safe


def test_momentum_encoder_starts_equal_and_follows_by_ema():
    model = make_retext()
    pixels = random_pixels(3, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(
            model.momentum_encoder(pixels), model.backbone.encode_image(pixels).projected, rtol=0, atol=0
        )
        online = model.backbone.clip.visual_projection.weight
        target = model.momentum_encoder.projection.weight
        before = target.clone()
        online.add_(torch.randn_like(online))
        model.momentum_update()
        torch.testing.assert_close(target, 0.995 * before + 0.005 * online, rtol=1e-6, atol=1e-7)
        layer = "encoder.layers.1.mlp.fc2.weight"
        online_layer = model.backbone.clip.vision_model.get_parameter(layer)
        target_layer = model.momentum_encoder.vision.get_parameter(layer)
        online_layer.mul_(2.0)
        start = target_layer.clone()
        model.momentum_update(momentum=0.9)
        torch.testing.assert_close(target_layer, 0.9 * start + 0.1 * online_layer, rtol=1e-6, atol=1e-7)


def test_post_init_keeps_the_diffusers_initialisation():
    config = make_retext().config
    torch.manual_seed(3)
    alone = PixArtTransformer2DModel.from_config(config.reconstruction_head)
    torch.manual_seed(3)
    model = ReTextModel(config)
    ours = model.reconstruction_head.state_dict()
    for key, value in alone.state_dict().items():
        torch.testing.assert_close(ours[key], value, rtol=0, atol=0, msg=key)
    assert model.mask_token.std().item() == pytest.approx(0.02, rel=0.5)


def test_from_clip_pretrained_copies_clip_into_both_encoders(tmp_path):
    clip_dir = save_tiny_clip(tmp_path / "clip", seed=4, with_tokenizer=False)
    model = ReTextModel.from_clip_pretrained(str(clip_dir), num_classes=3, image_size=TINY_IMAGE_SIZE)
    clip = make_tiny_clip(seed=4)
    ours = model.backbone.clip.state_dict()
    for key, value in clip.state_dict().items():
        if key.startswith(("text_model.", "text_projection.")):
            mine = model.state_dict()[key]
        elif key == POSITION_TABLE_KEY:
            assert ours[key].shape == (1 + 8 * 4, 64)
            continue
        else:
            mine = ours[key]
        torch.testing.assert_close(mine, value, rtol=0, atol=0, msg=key)
    for name, value in model.momentum_encoder.vision.state_dict().items():
        torch.testing.assert_close(value, model.backbone.clip.vision_model.state_dict()[name], rtol=0, atol=0)
    ids, mask = captions(3)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(
            clip.get_text_features(input_ids=ids, attention_mask=mask).pooler_output, dim=1
        )
        torch.testing.assert_close(model.get_text_features(ids, mask), expected)
    assert model.head.classifier.weight.shape == (3, 64)


@pytest.fixture(scope="module")
def trained_folder(tmp_path_factory):
    """A tiny ReText after one training step (BN statistics, momentum encoder and every
    trainable parameter moved), saved."""
    model = make_retext(seed=1).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(**step_inputs()).loss.backward()
    optimizer.step()
    model.momentum_update()
    folder = tmp_path_factory.mktemp("retext")
    model.eval().save_pretrained(folder)
    return folder, model


def test_automodel_reload_gives_identical_model(trained_folder):
    folder, model = trained_folder
    reloaded = AutoModel.from_pretrained(folder)
    assert type(reloaded) is ReTextModel
    ours = model.state_dict()
    for key, value in reloaded.state_dict().items():
        torch.testing.assert_close(value, ours[key], rtol=0, atol=0, msg=key)
    pixels = random_pixels(4, seed=7)
    ids, mask = captions(4, seed=7)
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded.get_image_embeddings(pixels), model.get_image_embeddings(pixels), rtol=0, atol=0
        )
        torch.testing.assert_close(
            reloaded.get_text_features(ids, mask), model.get_text_features(ids, mask), rtol=0, atol=0
        )
    assert not any(p.requires_grad for p in reloaded.momentum_encoder.parameters())
    assert not reloaded.head.bottleneck.bias.requires_grad
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_retext.ReTextModel"
    assert {"modeling_retext.py", "configuration_retext.py", "losses.py", "clip_backbone.py"} <= set(
        os.listdir(folder)
    )


def test_reconstruction_head_folder_loads_alone_with_diffusers(trained_folder, tmp_path):
    folder, model = trained_folder
    assert sorted(os.listdir(folder / "reconstruction_head")) == [
        "config.json",
        "diffusion_pytorch_model.safetensors",
    ]
    head = PixArtTransformer2DModel.from_pretrained(folder / "reconstruction_head")
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 64, 8, 4, generator=generator)
    text = torch.randn(2, 5, 64, generator=generator)
    kwargs = {
        "encoder_hidden_states": text,
        "timestep": torch.zeros(2, dtype=torch.long),
        "added_cond_kwargs": {"resolution": None, "aspect_ratio": None},
    }
    with torch.no_grad():
        torch.testing.assert_close(
            head(hidden, **kwargs).sample, model.reconstruction_head(hidden, **kwargs).sample, rtol=0, atol=0
        )
    model.save_pretrained(tmp_path / "no_head", save_reconstruction_head=False)
    assert not (tmp_path / "no_head" / "reconstruction_head").exists()


CLEAN_LOAD = textwrap.dedent(
    """
    from transformers import AutoModel

    model = AutoModel.from_pretrained(folder, trust_remote_code=True)
    pixels = torch.from_numpy(np.load(f"{out}/pixels.npy"))
    ids = torch.from_numpy(np.load(f"{out}/ids.npy"))
    mask = torch.from_numpy(np.load(f"{out}/mask.npy"))
    with torch.no_grad():
        np.save(f"{out}/remote_embeddings.npy", model.get_image_embeddings(pixels).numpy())
        np.save(f"{out}/remote_text.npy", model.get_text_features(ids, mask).numpy())
    print("CLASS", type(model).__module__)
    """
)


def test_remote_code_in_a_clean_interpreter_gives_identical_embeddings(trained_folder, tmp_path):
    folder, model = trained_folder
    pixels = random_pixels(3, seed=9)
    ids, mask = captions(3, seed=9)
    np.save(tmp_path / "pixels.npy", pixels.numpy())
    np.save(tmp_path / "ids.npy", ids.numpy())
    np.save(tmp_path / "mask.npy", mask.numpy())
    result = run_without_hf_reid(CLEAN_LOAD, folder, tmp_path)
    assert "CLASS transformers_modules." in result.stdout
    with torch.no_grad():
        np.testing.assert_array_equal(
            np.load(tmp_path / "remote_embeddings.npy"), model.get_image_embeddings(pixels).numpy()
        )
        np.testing.assert_array_equal(
            np.load(tmp_path / "remote_text.npy"), model.get_text_features(ids, mask).numpy()
        )


def test_bert_text_encoder_builds_runs_and_round_trips(tmp_path):
    model = make_retext(text_config=tiny_bert_config().to_dict())
    assert isinstance(model.text_model, BertModel)
    assert model.config.reconstruction_head["caption_channels"] == 32
    assert not any(n.startswith("backbone.clip.text_") for n, _ in model.named_parameters())
    inputs = step_inputs(vocab=100)
    model.train()
    out = model(**inputs)
    grads = _grads(model, out.loss)
    assert grads["text_model.encoder.layer.0.attention.self.query.weight"] and grads["text_projection.weight"]
    model.eval().save_pretrained(tmp_path / "bert_retext")
    reloaded = AutoModel.from_pretrained(tmp_path / "bert_retext")
    assert isinstance(reloaded.text_model, BertModel)
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded.get_text_features(inputs["input_ids"], inputs["attention_mask"]),
            model.get_text_features(inputs["input_ids"], inputs["attention_mask"]),
            rtol=0,
            atol=0,
        )

    # from_clip_pretrained with a separate text encoder checkpoint.
    torch.manual_seed(5)
    bert = BertModel(tiny_bert_config())
    bert.save_pretrained(tmp_path / "bert")
    clip_dir = save_tiny_clip(tmp_path / "clip", with_tokenizer=False)
    built = ReTextModel.from_clip_pretrained(
        str(clip_dir),
        num_classes=2,
        image_size=TINY_IMAGE_SIZE,
        text_encoder_name_or_path=str(tmp_path / "bert"),
    )
    for key, value in bert.state_dict().items():
        torch.testing.assert_close(built.text_model.state_dict()[key], value, rtol=0, atol=0, msg=key)


def test_bad_inputs_give_clear_errors(model):
    inputs = step_inputs(4)
    with pytest.raises(ValueError, match=r"256x128 \(HxW\) but this model takes 128x64"):
        model(pixel_values=random_pixels(2, image_size=(256, 128)))
    with pytest.raises(ValueError, match=r"256x128 \(HxW\) but this model takes 128x64"):
        model(**{**inputs, "caption_pixel_values": random_pixels(4, image_size=(256, 128))})
    with pytest.raises(ValueError, match=r"labels must be identity indices in \[0, 4\).*\[0, 9\]"):
        model(**{**inputs, "labels": torch.tensor([0, 1, 2, 9])})
    with pytest.raises(ValueError, match="pass input_ids"):
        model(**{**inputs, "input_ids": None})
    with pytest.raises(ValueError, match="needs caption_labels"):
        model(**{**inputs, "caption_labels": None})
    with pytest.raises(ValueError, match="max_length=77"):
        model.get_text_features(torch.full((2, 80), 5))
    with pytest.raises(ValueError, match="needs pixel_values"):
        model()
    with pytest.raises(ValueError, match=r"ReTextConfig.mask_ratio must be in \(0, 1\)"):
        ReTextConfig(clip_config=tiny_clip_config(), image_size=TINY_IMAGE_SIZE, mask_ratio=1.0)
    with pytest.raises(ValueError, match=r"reconstruction_head\['in_channels'\] must be 64"):
        ReTextConfig(
            clip_config=tiny_clip_config(), image_size=TINY_IMAGE_SIZE, reconstruction_head={"in_channels": 8}
        )
    with pytest.raises(ValueError, match="did you mean 'momentum'"):
        ReTextConfig(clip_config=tiny_clip_config(), image_size=TINY_IMAGE_SIZE, momentun=0.9)


def test_a_few_steps_reduce_the_reconstruction_loss():
    """Images whose patches share one (normalised) pattern, with captions: 20 steps of the
    reconstruction loss alone must clearly reduce it. One thread: with ops this small a second,
    busy core only adds waiting."""
    model = make_retext(seed=2, matching_loss_weight=0, structure_loss_weight=0).train()
    generator = torch.Generator().manual_seed(0)
    ramp = torch.linspace(-1, 1, 16)
    pattern = ramp[:, None] * ramp[None, :]  # one 16x16 pattern, tiled, scaled per image
    pixels = pattern.repeat(8, 4)[None, None] * torch.rand(4, 3, 1, 1, generator=generator) * 2
    ids, mask = captions(4)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    losses = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(20):
            out = model(caption_pixel_values=pixels, input_ids=ids, attention_mask=mask)
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
            losses.append(out.reconstruction_loss.item())
    finally:
        torch.set_num_threads(threads)
    assert sum(losses[-3:]) < 0.3 * sum(losses[:3]), losses
