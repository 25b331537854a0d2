"""CLIP-FGDI's model: config validation, the gradient-reversal layer against autograd of a hand-written
reference, the guidance loss moving features the way its sign says, the instance normalisation
being the code's, the stage losses training exactly their parameters, round trips (hf_reid and
remote code in an interpreter where hf_reid cannot be imported) and LoRA adapters."""

from __future__ import annotations

import os
import textwrap

import numpy as np
import pytest
import torch
from helpers_models import (
    pk_labels,
    random_pixels,
    run_without_hf_reid,
    tiny_clip_config,
    tiny_image_processor,
)
from huggingface_hub.errors import StrictDataclassError
from PIL import Image
from torch.nn import functional as F
from transformers import AutoModel

from hf_reid.models import CLIPFGDIConfig, CLIPFGDIModel, build_reid_image_processor
from hf_reid.models.lora import LoraSettings, apply_lora, load_lora_adapter, merge_lora, save_lora_adapter
from hf_reid.models.modeling_clip_fgdi import guidance_loss, reverse_gradient
from hf_reid.tokenization import load_clip_tokenizer

IMAGE_SIZE = (128, 64)
LABEL_DOMAINS = torch.tensor([0, 0, 1, 1])
"""The source domain of each of the 4 identities of the tiny models."""


def make_model(seed: int = 0, **config_kwargs) -> CLIPFGDIModel:
    """A tiny CLIP-FGDI (4 identities, 2 domains) with random weights, in eval mode."""
    torch.manual_seed(seed)
    config = CLIPFGDIConfig(
        clip_config=tiny_clip_config(),
        num_classes=4,
        num_domains=2,
        image_size=IMAGE_SIZE,
        **config_kwargs,
    )
    return CLIPFGDIModel(config).eval()


def text_tables(model: CLIPFGDIModel) -> tuple[torch.Tensor, torch.Tensor]:
    return model.compute_text_features(), model.compute_text_features(domains=LABEL_DOMAINS)


def stage3_loss(model, pixels: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    invariant, relevant = text_tables(base)
    return model(
        pixel_values=pixels, labels=labels, text_features=invariant, relevant_text_features=relevant
    ).loss


# ------------------------------------------------------------------------------------------------
# Config
# ------------------------------------------------------------------------------------------------
def test_defaults_are_the_codes():
    config = CLIPFGDIConfig()
    assert config.image_size == (224, 224) and config.triplet_margin is None and not config.feature_norm
    assert (config.id_loss_weight, config.grl_lambda, config.domain_loss_weight, config.apn_weight) == (
        1.0,
        0.1,
        0.01,
        0.1,
    )
    assert (config.apn_sign, config.input_norm, config.neck_feat) == ("paper", "instance", "before")
    # the stored default token ids are what the shipped OpenAI CLIP tokenizer gives
    tokenized = CLIPFGDIConfig().set_prompt_templates(load_clip_tokenizer())
    assert tokenized.prompt_token_ids == config.prompt_token_ids
    assert tokenized.domain_prompt_token_ids == config.domain_prompt_token_ids
    assert (tokenized.prompt_context_start, tokenized.domain_context_start) == (5, 11)
    assert CLIPFGDIConfig(image_size=(256, 128)).image_size == (256, 128)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"apn_weight": 1.5}, r"CLIPFGDIConfig\.apn_weight"),
        ({"num_domains": 0}, r"CLIPFGDIConfig\.num_domains must be >= 1"),
        ({"grl_lambda": -0.1}, r"CLIPFGDIConfig\.grl_lambda must be >= 0"),
        ({"domain_loss_weight": -1.0}, r"CLIPFGDIConfig\.domain_loss_weight must be >= 0"),
        ({"domain_classifier_hidden_size": 0}, r"CLIPFGDIConfig\.domain_classifier_hidden_size"),
        ({"apn_sign": "reversed"}, "apn_sign"),
        ({"input_norm": "batch"}, "input_norm"),
        ({"num_domain": 3}, r"no field 'num_domain'; did you mean 'num_domains'"),
        ({"domain_context_start": 6}, r"CLIPFGDIConfig\.domain_context_start=6 must come after"),
        ({"domain_context_start": 12}, r"CLIPFGDIConfig\.domain_context_start=12 points at token 14876"),
        (
            {"domain_prompt_token_ids": None, "prompt_token_ids": [49406, 343, 49407]},
            "domain_prompt_token_ids",
        ),
    ],
)
def test_config_errors_name_the_field(kwargs, match):
    if "domain_context_start" in kwargs:
        kwargs = {
            "prompt_token_ids": CLIPFGDIConfig().prompt_token_ids,
            "domain_prompt_token_ids": CLIPFGDIConfig().domain_prompt_token_ids,
            "prompt_context_start": 5,
            **kwargs,
        }
    with pytest.raises((ValueError, StrictDataclassError), match=match):
        CLIPFGDIConfig(**kwargs)


def test_templates_without_a_domain_slot_are_refused():
    tokenizer = load_clip_tokenizer()
    with pytest.raises(ValueError, match=r"domain_prompt_template .* after the identity tokens"):
        CLIPFGDIConfig().set_prompt_templates(tokenizer, domain_template="A photo of a X X X X person.")
    with pytest.raises(ValueError, match="both templates must start with the same words"):
        CLIPFGDIConfig().set_prompt_templates(
            tokenizer, domain_template="A photo of X X X X person from X set."
        )
    vehicle = CLIPFGDIConfig().set_prompt_templates(
        tokenizer, "A photo of a X X X X vehicle.", "A photo of a X X X X vehicle seen by X camera."
    )
    assert vehicle.domain_prompt_token_ids[vehicle.domain_context_start] == vehicle.prompt_token_ids[5]


# ------------------------------------------------------------------------------------------------
# Gradient reversal
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("epsilon", [0.1, 1.0, 0.0])
def test_gradient_reversal_is_identity_forward_and_negated_scaled_gradient(epsilon):
    generator = torch.Generator().manual_seed(0)
    weights = torch.randn(5, 3, generator=generator)
    start = torch.randn(4, 5, generator=generator)

    def loss_of(features):  # any smooth function of the features
        return (features @ weights).tanh().pow(2).sum() + features.pow(3).mean()

    reference = start.clone().requires_grad_(True)
    loss_of(reference).backward()
    reversed_input = start.clone().requires_grad_(True)
    through = reverse_gradient(reversed_input, epsilon)
    torch.testing.assert_close(through, start, rtol=0, atol=0)
    loss_of(through).backward()
    torch.testing.assert_close(reversed_input.grad, -epsilon * reference.grad, rtol=1e-6, atol=0)


def test_invariant_prompts_get_the_reversed_domain_gradient_and_the_classifier_the_plain_one():
    """The domain term of stage II-a reaches the identity tokens as -grl_lambda times the gradient
    it would give without the reversal, and the domain classifier unchanged."""
    model = make_model(grl_lambda=0.3, domain_loss_weight=1.0).train()
    model.set_trainable("invariant_prompts")
    labels, domains = pk_labels(4, 2), LABEL_DOMAINS[pk_labels(4, 2)]
    features = torch.randn(8, 32, generator=torch.Generator().manual_seed(1))

    out = model.invariant_prompt_loss(features, labels, domains)
    assert out.domain_logits.shape == (8, 2)
    out.domain_loss.backward()
    reversed_prompts = model.prompt_learner.context.grad.clone()
    reversed_classifier = model.invariant_domain_classifier.fc1.weight.grad.clone()
    model.zero_grad()
    # hand-written reference: the same classifier on the same text features, no reversal
    plain = model.invariant_domain_classifier(model.encode_invariant_prompts(labels))
    F.cross_entropy(plain, domains).backward()
    assert reversed_prompts.abs().sum() > 0
    # equal up to float rounding (the two backward passes may sum in another order across threads)
    scale = float(model.prompt_learner.context.grad.abs().max())
    torch.testing.assert_close(
        reversed_prompts, -0.3 * model.prompt_learner.context.grad, rtol=1e-4, atol=1e-5 * scale
    )
    torch.testing.assert_close(reversed_classifier, model.invariant_domain_classifier.fc1.weight.grad)


def test_relevant_prompts_train_the_domain_tokens_only():
    model = make_model().train()
    model.set_trainable("domain_prompts")
    labels = pk_labels(4, 2)
    features = torch.randn(8, 32, generator=torch.Generator().manual_seed(2))
    out = model.relevant_prompt_loss(features, labels, LABEL_DOMAINS[labels])
    out.loss.backward()
    assert model.prompt_learner.context.grad is None  # identity tokens detached
    assert model.domain_prompt.context.grad.abs().sum() > 0
    assert model.relevant_domain_classifier.fc1.weight.grad.abs().sum() > 0
    # the domain classifier sees detached features: the domain term does not reach the tokens
    token_grad = model.domain_prompt.context.grad.clone()
    model.zero_grad()
    model.relevant_prompt_loss(features, labels, LABEL_DOMAINS[labels]).i2t_loss.backward()
    i2t_only = model.domain_prompt.context.grad.clone()
    model.zero_grad()
    model.relevant_prompt_loss(features, labels, LABEL_DOMAINS[labels]).t2i_loss.backward()
    torch.testing.assert_close(token_grad, i2t_only + model.domain_prompt.context.grad, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"domain labels must be in \[0, 2\)"):
        model.relevant_prompt_loss(features, labels, torch.full((8,), 2))


# ------------------------------------------------------------------------------------------------
# The guidance loss: a toy where the right direction is known
# ------------------------------------------------------------------------------------------------
def cosines(v: torch.Tensor, invariant: torch.Tensor, relevant: torch.Tensor) -> tuple[float, float]:
    return (
        float(F.cosine_similarity(v, invariant, dim=1).mean()),
        float(F.cosine_similarity(v, relevant, dim=1).mean()),
    )


@pytest.mark.parametrize(("sign", "towards_invariant"), [("paper", True), ("code", False)])
def test_one_step_of_the_guidance_loss_on_a_feature(sign, towards_invariant):
    """One gradient step on L_apn alone: with the paper's sign the image feature turns towards
    the invariant prompt and away from the relevant one; with the code's sign the other way."""
    generator = torch.Generator().manual_seed(0)
    invariant, relevant = torch.randn(6, 16, generator=generator), torch.randn(6, 16, generator=generator)
    v = torch.randn(6, 16, generator=generator).requires_grad_(True)
    before = cosines(v.detach(), invariant, relevant)
    guidance_loss(v, invariant, relevant, sign).backward()
    with torch.no_grad():
        v -= 0.5 * v.grad
    after = cosines(v.detach(), invariant, relevant)
    moved_invariant, moved_relevant = after[0] - before[0], after[1] - before[1]
    if towards_invariant:
        assert moved_invariant > 0 > moved_relevant, (before, after)
    else:
        assert moved_invariant < 0 < moved_relevant, (before, after)


@pytest.mark.parametrize(("sign", "towards_invariant"), [("paper", True), ("code", False)])
def test_one_step_of_stage3_moves_the_image_encoder_the_way_the_sign_says(sign, towards_invariant):
    """The same through the model: stage III with beta = 1 and no ID / triplet loss is the guidance
    loss alone; one SGD step on the image encoder moves the images' features as the sign says."""
    model = make_model(apn_sign=sign, apn_weight=1.0, id_loss_weight=0.0, triplet_loss_weight=0.0).train()
    model.set_trainable("image")
    generator = torch.Generator().manual_seed(3)
    invariant, relevant = torch.randn(4, 32, generator=generator), torch.randn(4, 32, generator=generator)
    pixels, labels = random_pixels(8, seed=4), pk_labels(4, 2)
    with torch.no_grad():
        before = cosines(model.get_image_features(pixels), invariant[labels], relevant[labels])
    out = model(pixels, labels=labels, text_features=invariant, relevant_text_features=relevant)
    torch.testing.assert_close(out.loss, out.apn_loss)
    out.loss.backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05).step()
    with torch.no_grad():
        after = cosines(model.get_image_features(pixels), invariant[labels], relevant[labels])
    moved_invariant, moved_relevant = after[0] - before[0], after[1] - before[1]
    if towards_invariant:
        assert moved_invariant > 0 > moved_relevant, (before, after)
    else:
        assert moved_invariant < 0 < moved_relevant, (before, after)


def test_stage_losses_compose_as_the_method_says():
    model = make_model(apn_weight=0.25).train()
    pixels, labels = random_pixels(8, seed=5), pk_labels(4, 2)
    stage1 = model(pixels, labels=labels)
    assert stage1.i2t_loss is None and stage1.apn_loss is None
    torch.testing.assert_close(stage1.loss, stage1.id_loss + stage1.triplet_loss)
    invariant, relevant = text_tables(model)
    stage3 = model(pixels, labels=labels, text_features=invariant, relevant_text_features=relevant)
    torch.testing.assert_close(
        stage3.loss, stage3.id_loss + stage3.triplet_loss + 0.75 * stage3.i2t_loss + 0.25 * stage3.apn_loss
    )
    with pytest.raises(ValueError, match=r"apn_weight=0\.25 > 0 needs relevant_text_features"):
        model(pixels, labels=labels, text_features=invariant)
    with pytest.raises(ValueError, match="relevant_text_features need text_features"):
        model(pixels, labels=labels, relevant_text_features=relevant)
    with pytest.raises(ValueError, match=r"text_features must be \(num_classes=4, 32\)"):
        model(pixels, labels=labels, text_features=invariant[:3], relevant_text_features=relevant)


# ------------------------------------------------------------------------------------------------
# Instance normalisation
# ------------------------------------------------------------------------------------------------
def test_instance_norm_of_the_processor_output_is_the_codes_input():
    """The code normalises the raw [0, 1] tensor with nn.InstanceNorm2d(3); the model does it on the
    processor's mean/std output. Instance norm removes any per-channel affine map, so both give
    the same embeddings (up to the weight of eps, whose relative size changes by std**2)."""
    instance = make_model(seed=6, input_norm="instance")
    mean_std = make_model(seed=7, input_norm="mean_std")
    mean_std.load_state_dict(instance.state_dict())
    rng = np.random.RandomState(0)
    images = [Image.fromarray(rng.randint(0, 255, (160, 70, 3), dtype=np.uint8)) for _ in range(3)]
    processed = tiny_image_processor(IMAGE_SIZE)(images=images, return_tensors="pt")["pixel_values"]
    raw = build_reid_image_processor(IMAGE_SIZE, image_mean=(0.0,) * 3, image_std=(1.0,) * 3)(
        images=images, return_tensors="pt"
    )["pixel_values"]
    assert raw.min() >= 0 and raw.max() <= 1
    code_input = torch.nn.InstanceNorm2d(3)(raw)
    with torch.no_grad():
        ours = instance.get_image_embeddings(processed)
        code = mean_std.get_image_embeddings(code_input)
        torch.testing.assert_close(ours, code, rtol=1e-3, atol=1e-4)
        # any per-channel affine change of the input (a camera's colour cast) leaves them unchanged
        scale, shift = (
            torch.tensor([0.5, 2.0, 1.3]).view(1, 3, 1, 1),
            torch.tensor([0.2, -0.4, 0.0]).view(1, 3, 1, 1),
        )
        torch.testing.assert_close(
            instance.get_image_embeddings(processed * scale + shift), ours, rtol=1e-3, atol=1e-4
        )
        assert not torch.allclose(mean_std.get_image_embeddings(processed), code, atol=1e-2)


# ------------------------------------------------------------------------------------------------
# Round trips and LoRA
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_folder(tmp_path_factory):
    """A tiny CLIP-FGDI after a stage-III step and a step of each prompt stage (BN statistics,
    prompts, domain tokens and classifiers all moved), saved with its processor and tokenizer."""
    folder = tmp_path_factory.mktemp("clip_fgdi")
    model = make_model(seed=8).train()
    labels = pk_labels(4, 2)
    features = torch.randn(8, 32, generator=torch.Generator().manual_seed(9))
    for stage in ("invariant_prompts", "domain_prompts", "image"):
        model.set_trainable(stage)
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
        if stage == "invariant_prompts":
            loss = model.invariant_prompt_loss(features, labels, LABEL_DOMAINS[labels]).loss
        elif stage == "domain_prompts":
            loss = model.relevant_prompt_loss(features, labels, LABEL_DOMAINS[labels]).loss
        else:
            loss = stage3_loss(model, random_pixels(8), labels)
        loss.backward()
        optimizer.step()
    model.eval().save_pretrained(folder)
    tiny_image_processor(IMAGE_SIZE).save_pretrained(folder)
    load_clip_tokenizer().save_pretrained(folder)
    return folder, model


def test_automodel_reload_with_hf_reid_gives_identical_outputs(trained_folder):
    folder, model = trained_folder
    reloaded = AutoModel.from_pretrained(folder)
    assert type(reloaded) is CLIPFGDIModel and reloaded.config.num_domains == 2
    pixels = random_pixels(4, seed=10)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixels).embeddings, model(pixels).embeddings, rtol=0, atol=0)
        for mine, theirs in zip(text_tables(reloaded), text_tables(model)):
            torch.testing.assert_close(mine, theirs, rtol=0, atol=0)
    assert {"modeling_clip_fgdi.py", "configuration_clip_fgdi.py", "prompt_learner.py"} <= set(
        os.listdir(folder)
    )


REMOTE_LOAD = textwrap.dedent(
    """
    from transformers import AutoModel

    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    pixels = torch.from_numpy(np.load(f"{out}/pixels.npy"))
    with torch.no_grad():
        np.save(f"{out}/embeddings.npy", model.get_image_embeddings(pixels).numpy())
        np.save(f"{out}/relevant.npy", model.compute_text_features(domains=torch.tensor([0, 0, 1, 1])).numpy())
    print("CLASS", type(model).__module__, type(model).__name__)
    """
)


def test_remote_code_without_hf_reid_gives_identical_outputs(trained_folder, tmp_path):
    folder, model = trained_folder
    pixels = random_pixels(3, seed=11)
    np.save(tmp_path / "pixels.npy", pixels.numpy())
    result = run_without_hf_reid(REMOTE_LOAD, folder, tmp_path)
    assert "CLASS transformers_modules." in result.stdout and "CLIPFGDIModel" in result.stdout
    with torch.no_grad():
        np.testing.assert_array_equal(
            np.load(tmp_path / "embeddings.npy"), model.get_image_embeddings(pixels).numpy()
        )
        np.testing.assert_array_equal(np.load(tmp_path / "relevant.npy"), text_tables(model)[1].numpy())


def test_lora_adapter_trains_round_trips_and_merges(trained_folder, tmp_path):
    folder, _ = trained_folder
    peft_model = apply_lora(
        CLIPFGDIModel.from_pretrained(folder), LoraSettings(rank=4, projections=("q", "v"))
    )
    trainable = [name for name, p in peft_model.named_parameters() if p.requires_grad]
    assert all(("lora_" in n) or ("modules_to_save" in n) for n in trainable)
    assert any(".vision_model." in n and "lora_" in n for n in trainable)
    pixels, labels = random_pixels(4, seed=12), pk_labels(2, 2)
    with torch.no_grad():
        before = peft_model.get_base_model().get_image_embeddings(pixels)
    peft_model.train()
    optimizer = torch.optim.Adam([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        loss = stage3_loss(peft_model, random_pixels(8, seed=13), pk_labels(4, 2))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    peft_model.eval()
    with torch.no_grad():
        adapted = peft_model(pixel_values=pixels, labels=labels).embeddings
    assert (adapted - before).abs().max() > 1e-4

    adapter = save_lora_adapter(peft_model, tmp_path / "adapter")
    reloaded = load_lora_adapter(CLIPFGDIModel.from_pretrained(folder), adapter).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values=pixels).embeddings, adapted, rtol=0, atol=0)
    merged = merge_lora(reloaded)
    assert type(merged) is CLIPFGDIModel
    merged.save_pretrained(tmp_path / "merged")
    exported = AutoModel.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        torch.testing.assert_close(exported.get_image_embeddings(pixels), adapted, rtol=1e-4, atol=1e-5)
