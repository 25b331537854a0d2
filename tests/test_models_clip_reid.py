"""CLIP-ReID model: backbone adapter, prompt text forward, heads, losses wiring, config checks."""

import math

import pytest
import torch
from helpers_models import (
    TINY_IMAGE_SIZE,
    make_tiny_clip,
    make_tiny_reid_model,
    pk_labels,
    random_pixels,
    tiny_clip_config,
)
from huggingface_hub.errors import StrictDataclassError

from hf_reid.models import CLIPReIDConfig, CLIPReIDModel
from hf_reid.models.clip_backbone import resize_position_table
from hf_reid.models.configuration_clip_reid import DEFAULT_PROMPT_TOKEN_IDS
from hf_reid.tokenization import load_clip_tokenizer


def reid_from_clip(clip, **config):
    """A CLIP-ReID model holding ``clip``'s weights (position table resized), built in memory."""
    model = CLIPReIDModel(
        CLIPReIDConfig(clip_config=clip.config, num_classes=5, image_size=TINY_IMAGE_SIZE, **config)
    )
    model.backbone.load_clip_weights(clip, model.config.pos_interpolation)
    return model.eval()


@pytest.fixture(scope="module")
def clip():
    return make_tiny_clip(seed=1)


# --------------------------------------------------------------------------- backbone


def test_native_grid_equals_clip_with_interpolated_positions(clip):
    """The bicubic resize done once equals what transformers' interpolate_pos_encoding computes
    on every call, and the three features are CLIP's own tensors."""
    model = reid_from_clip(clip)
    pixels = random_pixels(3)
    with torch.no_grad():
        features = model.backbone.encode_image(pixels)
        reference = clip.vision_model(
            pixel_values=pixels, interpolate_pos_encoding=True, output_hidden_states=True
        )
        projected = clip.get_image_features(pixel_values=pixels, interpolate_pos_encoding=True).pooler_output
    assert features.last_hidden_state.shape == (3, 1 + 8 * 4, 64)
    torch.testing.assert_close(features.pooled, reference.pooler_output, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(features.projected, projected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(features.intermediate, reference.hidden_states[-2][:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(features.last_hidden_state, reference.last_hidden_state, atol=1e-5, rtol=1e-5)


def test_bilinear_halving_of_columns_averages_neighbours():
    """Downscaling an 8x8 table to 8x4 bilinearly (align_corners=False) samples halfway
    between columns 2j and 2j+1, i.e. averages them; CLS is kept."""
    table = torch.randn(1 + 64, 3, dtype=torch.float64)
    resized = resize_position_table(table, (8, 4), mode="bilinear")
    grid = table[1:].reshape(8, 8, 3)
    expected = (grid[:, 0::2] + grid[:, 1::2]) / 2
    torch.testing.assert_close(resized[1:].reshape(8, 4, 3), expected)
    torch.testing.assert_close(resized[0], table[0])
    assert not torch.allclose(resize_position_table(table, (8, 4), mode="bicubic"), resized)
    torch.testing.assert_close(resize_position_table(table, (8, 8)), table)


def test_overlapping_patches_use_the_stride(clip):
    model = reid_from_clip(clip, stride_size=12)
    embeddings = model.backbone.clip.vision_model.embeddings
    # (128 - 16) // 12 + 1 = 10 rows, (64 - 16) // 12 + 1 = 5 columns
    assert embeddings.grid == (10, 5)
    pixels = random_pixels(2)
    with torch.no_grad():
        tokens = embeddings(pixels) - embeddings.position_embedding(embeddings.position_ids)
    weight = clip.vision_model.embeddings.patch_embedding.weight  # the CLIP kernel, reused as is
    window = pixels[:, :, 12:28, 24:40]  # row 1, column 2 -> token 1 + 1 * 5 + 2
    expected = torch.einsum("bchw,dchw->bd", window, weight)
    torch.testing.assert_close(tokens[:, 1 + 5 + 2], expected, atol=1e-5, rtol=1e-5)
    assert model.backbone.encode_image(pixels).last_hidden_state.shape[1] == 1 + 50


def test_sie_offsets_only_the_cls_token():
    model = make_tiny_reid_model(use_sie=True, num_cameras=3, sie_coe=2.0)
    embeddings, sie = model.backbone.clip.vision_model.embeddings, model.backbone.camera_embedding
    pixels, camids = random_pixels(3), torch.tensor([2, 0, 1])
    with torch.no_grad():
        delta = embeddings(pixels, cls_offset=sie(camids)) - embeddings(pixels)
        with_cams = model.get_image_embeddings(pixels, camids)
        without = model.get_image_embeddings(pixels)
    torch.testing.assert_close(delta[:, 0], 2.0 * sie.weight[camids].detach())
    assert delta[:, 1:].abs().max() == 0
    assert not torch.allclose(with_cams, without)
    with pytest.raises(ValueError, match=r"camids must be in \[0, 3\)"):
        model.get_image_embeddings(pixels, torch.tensor([0, 3, 1]))


def test_images_of_the_wrong_size_are_rejected():
    model = make_tiny_reid_model()
    with pytest.raises(ValueError, match=r"256x128 \(HxW\) but this model takes 128x64.*image processor"):
        model(random_pixels(1, image_size=(256, 128)))
    with pytest.raises(ValueError, match=r"shape \(batch, 3, height, width\)"):
        model(torch.randn(1, 1, *TINY_IMAGE_SIZE))


# --------------------------------------------------------------------------- prompts


@pytest.mark.parametrize("legacy_eos", [False, True])
def test_prompt_forward_equals_clip_text_features(legacy_eos):
    """With every identity's tokens set to the embedding of the word "x", the learned-prompt text
    forward must equal CLIP's own text forward of the tokenised template (both EOS rules)."""
    model = make_tiny_reid_model(num_classes=3, legacy_eos=legacy_eos)
    clip = model.backbone.clip
    ids = torch.tensor([DEFAULT_PROMPT_TOKEN_IDS])
    x_token = clip.text_model.embeddings.token_embedding.weight[DEFAULT_PROMPT_TOKEN_IDS[5]]
    with torch.no_grad():
        model.prompt_learner.context.copy_(x_token.expand_as(model.prompt_learner.context))
        expected = clip.get_text_features(input_ids=ids).pooler_output
        # the tokenizer pads to 77 in CLIP-ReID; padding after EOT must not matter
        padded = torch.tensor([DEFAULT_PROMPT_TOKEN_IDS + [49407] * 65])
        expected_padded = clip.get_text_features(input_ids=padded).pooler_output
        features = model.compute_text_features(batch_size=2)
    torch.testing.assert_close(features, expected.expand(3, -1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(expected_padded, expected, atol=1e-5, rtol=1e-5)


def test_prompt_gradient_reaches_only_the_batch_identity_tokens():
    model = make_tiny_reid_model(num_classes=5)
    model.set_trainable("prompts")
    model.encode_prompts(torch.tensor([1, 3, 3])).pow(2).sum().backward()
    grad = model.prompt_learner.context.grad
    assert grad[[1, 3]].abs().sum() > 0
    assert grad[[0, 2, 4]].abs().sum() == 0
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["prompt_learner.context"]


def test_set_prompt_template_with_the_shipped_tokenizer():
    tokenizer = load_clip_tokenizer()
    config = CLIPReIDConfig(clip_config=tiny_clip_config())
    config.set_prompt_template(tokenizer, "A photo of a X X X X person.")
    assert config.prompt_token_ids == DEFAULT_PROMPT_TOKEN_IDS  # the built-in default is right
    assert config.prompt_context_start == 5
    config.set_prompt_template(tokenizer, "A photo of a X X X X person from X dataset.")
    assert config.prompt_context_start == 5 and config.prompt_token_ids[-1] == 49407
    with pytest.raises(ValueError, match="no 4 consecutive 'X' words"):
        config.set_prompt_template(tokenizer, "A photo of a X person.")


def test_prompts_without_token_ids_explain_the_fix():
    model = make_tiny_reid_model(prompt_template="A photo of a X X X X vehicle.")
    with pytest.raises(ValueError, match="set_prompt_template"):
        model.encode_prompts(torch.tensor([0]))


# --------------------------------------------------------------------------- model


@pytest.mark.parametrize(
    ("neck_feat", "feature_norm"), [("before", True), ("before", False), ("after", True)]
)
def test_embeddings_follow_the_config(neck_feat, feature_norm):
    model = make_tiny_reid_model(neck_feat=neck_feat, feature_norm=feature_norm)
    with torch.no_grad():
        out = model(random_pixels(4))
        head = model.head(out.pooled_features, out.image_features)
    if neck_feat == "before":
        expected = torch.cat([out.pooled_features, out.image_features], dim=1)
    else:
        expected = torch.cat([head.neck_features, head.neck_projected], dim=1)
    norms = out.embeddings.norm(dim=1)
    if feature_norm:
        expected = expected / expected.norm(dim=1, keepdim=True)
        torch.testing.assert_close(norms, torch.ones(4))
    else:
        assert (norms - 1).abs().min() > 1e-3
    torch.testing.assert_close(out.embeddings, expected)
    torch.testing.assert_close(model.get_image_embeddings(random_pixels(4)), out.embeddings)


def smoothed_ce(logits, labels, eps=0.1):
    classes = logits.shape[1]
    target = torch.full_like(logits, eps / classes)
    target[torch.arange(len(labels)), labels] += 1 - eps
    return -(target * logits.log_softmax(1)).sum(1).mean()


def hard_triplet(features, labels, margin=0.3):
    losses = []
    for i in range(len(labels)):
        dist = [math.dist(features[i].tolist(), f.tolist()) for f in features]
        pos = max(d for d, y in zip(dist, labels) if y == labels[i])
        neg = min(d for d, y in zip(dist, labels) if y != labels[i])
        losses.append(max(0.0, pos - neg + margin))
    return sum(losses) / len(losses)


def test_stage2_loss_is_the_weighted_clip_reid_sum():
    model = make_tiny_reid_model(
        num_classes=4, id_loss_weight=0.5, triplet_loss_weight=2.0, i2t_loss_weight=3.0
    )
    model.train()
    labels = pk_labels(4, 2)
    text = model.compute_text_features()
    out = model(random_pixels(8), labels=labels, text_features=text)
    id_loss = smoothed_ce(out.logits, labels) + smoothed_ce(out.logits_projected, labels)
    triplet = sum(
        hard_triplet(f.detach(), labels.tolist())
        for f in (out.intermediate_features, out.pooled_features, out.image_features)
    )
    i2t = smoothed_ce(out.image_features @ text.t(), labels)
    assert out.id_loss.item() == pytest.approx(id_loss.item(), rel=1e-5)
    assert out.triplet_loss.item() == pytest.approx(triplet, rel=1e-4)
    assert out.i2t_loss.item() == pytest.approx(i2t.item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(0.5 * id_loss.item() + 2.0 * triplet + 3.0 * i2t.item(), rel=1e-4)
    without_text = model(random_pixels(8), labels=labels)
    assert without_text.i2t_loss is None and without_text.i2t_logits is None
    assert model(random_pixels(8), labels=labels, return_loss=False).loss is None


def test_stage2_training_reduces_the_loss():
    torch.manual_seed(0)
    model = make_tiny_reid_model(num_classes=4)
    model.set_trainable("image")
    pixels, labels = random_pixels(8, seed=1), pk_labels(4, 2)
    text = model.compute_text_features()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    losses = []
    for _ in range(8):
        loss = model(pixels, labels=labels, text_features=text).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_trainable_parameters_per_stage():
    model = make_tiny_reid_model(use_sie=True, num_cameras=2)
    model.set_trainable("image")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert "backbone.camera_embedding.weight" in trainable
    assert "backbone.clip.visual_projection.weight" in trainable
    assert "head.classifier.weight" in trainable and "head.bottleneck.weight" in trainable
    assert "head.bottleneck.bias" not in trainable  # BNNeck shift stays frozen
    assert not any(n.startswith(("backbone.clip.text_model", "prompt_learner")) for n in trainable)
    assert "backbone.clip.text_projection.weight" not in trainable
    with pytest.raises(ValueError, match="stage must be"):
        model.set_trainable("text")


def test_bad_labels_and_text_features_are_rejected():
    model = make_tiny_reid_model(num_classes=4)
    with pytest.raises(ValueError, match=r"labels must be identity indices in \[0, 4\)"):
        model(random_pixels(2), labels=torch.tensor([0, 4]))
    with pytest.raises(ValueError, match=r"text_features must be \(num_classes=4, 32\)"):
        model(random_pixels(2), text_features=torch.randn(5, 32))
    with pytest.raises(ValueError, match="return_loss=True needs labels"):
        model(random_pixels(2), return_loss=True)


def test_prompt_loss_is_i2t_plus_t2i():
    model = make_tiny_reid_model(num_classes=4)
    image = torch.randn(6, 32)
    labels = torch.tensor([0, 1, 1, 2, 3, 3])
    out = model.prompt_loss(image, labels)
    assert out.loss.item() == pytest.approx(out.i2t_loss.item() + out.t2i_loss.item())
    assert out.text_features.shape == (6, 32)


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"feature_norm": "no"}, StrictDataclassError, "feature_norm"),
        ({"num_classes": "751"}, StrictDataclassError, "num_classes"),
        ({"neck_feat": "middle"}, StrictDataclassError, "neck_feat"),
        ({"num_classes": 0}, ValueError, "num_classes must be >= 1"),
        ({"label_smoothing": 1.5}, ValueError, "label_smoothing"),
        ({"stride_size": 20}, ValueError, "stride_size"),
        ({"image_size": (128,)}, ValueError, "image_size must be two positive ints"),
        ({"num_prompt_tokens": 3}, ValueError, "num_prompt_tokens=3 must match"),
        ({"triplet_margin": -0.1}, ValueError, "triplet_margin"),
        ({"num_clases": 5}, ValueError, "did you mean 'num_classes'"),
    ],
)
def test_config_rejects_bad_values(kwargs, error, match):
    with pytest.raises(error, match=match):
        CLIPReIDConfig(clip_config=tiny_clip_config(), **kwargs)


def test_config_soft_margin_and_defaults():
    config = CLIPReIDConfig(clip_config=tiny_clip_config(), triplet_margin=None, stride_size=[12, 12])
    assert config.triplet_margin is None and config.stride_size == (12, 12)
    assert config.image_size == (256, 128) and config.pos_interpolation == "bicubic"
    assert config.prompt_token_ids == DEFAULT_PROMPT_TOKEN_IDS


def test_activation_checkpointing_recomputes_layers_with_the_same_gradients():
    model = make_tiny_reid_model(num_classes=4).train()
    pixels, labels = random_pixels(8), pk_labels(4, 2)
    layer = model.backbone.clip.vision_model.encoder.layers[0]
    calls = []
    # fc1 (not the whole MLP: recomputation stops early once fc2's input is rebuilt)
    layer.mlp.fc1.register_forward_hook(lambda *args: calls.append(1))
    model(pixels, labels=labels).loss.backward()
    plain = layer.mlp.fc1.weight.grad.clone()
    model.zero_grad()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    calls.clear()
    model(pixels, labels=labels).loss.backward()
    assert len(calls) == 2  # forward, then recomputed during backward
    torch.testing.assert_close(layer.mlp.fc1.weight.grad, plain)
