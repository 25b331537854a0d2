"""CLIP-FGDI's augmentations in the batched torch transforms: AugMix, instance normalisation,
grayscale and colour jitter settings, and the guarantee that the new options change nothing
while they are off."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from hf_reid.data import transforms as T
from hf_reid.data.transforms import (
    AUGMIX_OPS,
    ReidTestTransform,
    ReidTrainTransform,
    ReidTransformConfig,
    augmix,
    augmix_mixing_weights,
    color_jitter,
    instance_normalize,
    random_grayscale,
)

FGDI = dict(
    height=32,
    width=16,
    grayscale_p=0.1,
    pad=2,
    flip_p=0.4,
    color_jitter_p=0.1,
    brightness=0.15,
    contrast=0.1,
    saturation=0.05,
    hue=0.05,
    jitter_after_crop=True,
    augmix_p=0.6,
    random_erasing_p=0.0,
    normalization="instance",
)


def random_batch(n=8, height=24, width=12, seed=0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, height, width), generator=torch.Generator().manual_seed(seed)).to(
        torch.uint8
    )


def pil_batch(x: torch.Tensor, fn) -> torch.Tensor:
    """Apply a PIL function to every image of a uint8 batch."""
    images = [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in x]
    return torch.from_numpy(np.stack([np.asarray(fn(image)) for image in images])).permute(0, 3, 1, 2)


# --- AugMix -----------------------------------------------------------------------------------


def test_augmix_keeps_shape_dtype_and_range():
    x = random_batch(16)
    out = augmix(x.clone(), p=1.0, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert not torch.equal(out, x)
    as_float = augmix(
        x.float() / 255, p=1.0, severity=3, depth=-1, generator=torch.Generator().manual_seed(0)
    )
    assert as_float.dtype == torch.float32 and as_float.shape == x.shape
    assert as_float.min() >= 0.0 and as_float.max() <= 1.0
    levels = as_float * 255  # float input is worked on as 8-bit levels, as the PIL reference does
    assert torch.allclose(levels, levels.round(), atol=1e-3)


def test_augmix_p0_is_identity_and_p_is_per_image():
    x = random_batch(8)
    generator = torch.Generator().manual_seed(1)
    assert torch.equal(augmix(x.clone(), p=0.0, generator=generator), x)
    x = random_batch(400, 8, 4, seed=2)
    out = augmix(x.clone(), p=0.5, alpha=1.0, generator=torch.Generator().manual_seed(2))
    changed = (out != x).flatten(1).any(1).float().mean()
    assert 0.35 < changed < 0.6  # a chosen image can come out unchanged (e.g. a Beta draw near 0)


def test_augmix_same_seed_same_output():
    x = random_batch(12)
    settings = dict(p=0.7, width=3, depth=-1, severity=3, alpha=1.0)
    first = augmix(x.clone(), generator=torch.Generator().manual_seed(5), **settings)
    again = augmix(x.clone(), generator=torch.Generator().manual_seed(5), **settings)
    other = augmix(x.clone(), generator=torch.Generator().manual_seed(6), **settings)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_augmix_mixing_weights_sum_to_one():
    for alpha in (0.1, 1.0):
        weights, blend = augmix_mixing_weights(500, 3, alpha, torch.Generator().manual_seed(3))
        assert weights.shape == (500, 3) and blend.shape == (500,)
        assert torch.allclose(weights.sum(1), torch.ones(500), atol=1e-5)
        assert weights.min() >= 0 and blend.min() >= 0 and blend.max() <= 1
    # small concentration puts the mass on one chain and on the ends of the blend
    weights, blend = augmix_mixing_weights(2000, 3, 0.1, torch.Generator().manual_seed(4))
    assert weights.max(1).values.median() > 0.95
    assert ((blend < 0.05) | (blend > 0.95)).float().mean() > 0.5
    weights, blend = augmix_mixing_weights(2000, 3, 1.0, torch.Generator().manual_seed(4))
    assert abs(weights.mean() - 1 / 3) < 0.02 and abs(blend.mean() - 0.5) < 0.03
    again = augmix_mixing_weights(2000, 3, 1.0, torch.Generator().manual_seed(4))
    assert torch.equal(weights, again[0]) and torch.equal(blend, again[1])


def test_augmix_is_a_convex_mixture():
    """An image every operation leaves unchanged comes out unchanged, whatever the weights:
    the chain weights sum to 1 and the blend is convex."""
    gray = torch.full((32, 3, 10, 6), 128, dtype=torch.uint8)  # 128 survives 4-bit posterize
    colour_ops = ("autocontrast", "equalize", "posterize", "solarize")
    out = augmix(gray.clone(), p=1.0, ops=colour_ops, alpha=1.0, generator=torch.Generator().manual_seed(7))
    assert torch.equal(out, gray)
    black = torch.zeros(32, 3, 10, 6, dtype=torch.uint8)  # every operation, geometric ones too
    assert torch.equal(
        augmix(black.clone(), p=1.0, alpha=1.0, generator=torch.Generator().manual_seed(7)), black
    )


def test_augmix_colour_operations_equal_pil():
    x = random_batch(6, 20, 12, seed=8)
    x[1] = x[1] // 4 + 60  # low contrast
    x[2] = 7  # constant
    levels = x.float()
    assert torch.equal(T._autocontrast(levels), pil_batch(x, ImageOps.autocontrast).float())
    assert torch.equal(T._equalize(levels), pil_batch(x, ImageOps.equalize).float())
    for bits in (1, 4, 8):
        expected = pil_batch(x, lambda image, bits=bits: ImageOps.posterize(image, bits)).float()
        assert torch.equal(T._posterize(levels, torch.full((6,), bits)), expected)
    for threshold in (100, 231, 254):
        expected = pil_batch(
            x, lambda image, threshold=threshold: ImageOps.solarize(image, threshold)
        ).float()
        assert torch.equal(T._solarize(levels, torch.full((6,), threshold)), expected)


@pytest.mark.parametrize("op", ["translate_x", "translate_y", "rotate", "shear_x", "shear_y"])
def test_augmix_geometric_operations_follow_pil_affine(op):
    x = random_batch(4, 40, 24, seed=9)
    for sign in (1.0, -1.0):
        matrices = T._affine_matrices(op, torch.full((4,), 10.0), torch.full((4,), sign), 40, 24)
        coefficients = tuple(matrices[0].tolist())
        expected = pil_batch(
            x,
            lambda image, coefficients=coefficients: image.transform(
                image.size, Image.Transform.AFFINE, coefficients, resample=Image.Resampling.BILINEAR
            ),
        ).float()
        difference = (T._affine(x.float(), matrices) - expected).abs()
        assert difference.max() <= (0 if op.startswith("translate") else 1)
    if op == "rotate":  # severity 10 rotates by 30 degrees, counter-clockwise like Image.rotate
        matrices = T._affine_matrices(op, torch.full((4,), 10.0), torch.ones(4), 40, 24)
        expected = pil_batch(x, lambda image: image.rotate(30, resample=Image.Resampling.BILINEAR)).float()
        assert (T._affine(x.float(), matrices) - expected).abs().max() <= 1


def test_augmix_severity_one_magnitudes():
    """At severity 1 (levels in [0.1, 1]) the reference rotates by at most 2 degrees, shears by at
    most 0.03, translates by at most size/30 pixels, posterizes to 4 bits, solarizes above 230."""
    level = torch.linspace(0.1, 0.999, 50)  # uniform in [0.1, 1)
    sign = torch.ones(50)
    rotation = T._affine_matrices("rotate", level, sign, 224, 224)
    degrees = torch.rad2deg(torch.atan2(rotation[:, 3], rotation[:, 0]))
    assert set(degrees.round().tolist()) == {0.0, 1.0, 2.0}
    assert T._affine_matrices("shear_x", level, sign, 224, 224)[:, 1].max() <= 0.03 + 1e-9
    assert set(T._affine_matrices("translate_x", level, sign, 224, 224)[:, 2].tolist()) <= set(range(8))
    assert set(T._affine_matrices("translate_y", level, -sign, 256, 128)[:, 5].tolist()) <= {
        -v for v in range(9)
    }
    x = torch.arange(256.0).view(1, 1, 16, 16).expand(50, 3, 16, 16)
    assert torch.equal(T._augmix_op("posterize", x, level, sign), T._posterize(x, torch.full((50,), 4)))
    solarized = T._augmix_op("solarize", x, level, sign)
    assert torch.equal(solarized[:, :, x[0, 0] < 231], x[:, :, x[0, 0] < 231])


def test_augmix_config_is_validated_by_name():
    with pytest.raises(ValueError, match="augmix_p"):
        ReidTransformConfig(augmix_p=1.5)
    with pytest.raises(ValueError, match="augmix_ops"):
        ReidTransformConfig(augmix_ops=("color",))
    with pytest.raises(ValueError, match="augmix_severity"):
        ReidTransformConfig(augmix_severity=0)
    with pytest.raises(ValueError, match="augmix_alpha"):
        ReidTransformConfig(augmix_alpha=0.0)
    with pytest.raises(ValueError, match="normalization"):
        ReidTransformConfig(normalization="batch")
    assert ReidTransformConfig(augmix_ops=["rotate"]).augmix_ops == ("rotate",)
    assert set(AUGMIX_OPS) == {
        "autocontrast", "equalize", "posterize", "rotate", "solarize",
        "shear_x", "shear_y", "translate_x", "translate_y",
    }  # fmt: skip


# --- instance normalisation -------------------------------------------------------------------


def test_instance_norm_gives_zero_mean_unit_std_per_image_and_channel():
    x = random_batch(6, 32, 16, seed=10)
    x[0] = x[0] // 8  # dark, low-contrast image
    out = instance_normalize(x)
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert out.mean(dim=(2, 3)).abs().max() < 1e-5
    std = out.std(dim=(2, 3), correction=0)
    assert (std[1:] - 1).abs().max() < 1e-3
    assert (std[0] - 1).abs().max() < 1e-2  # eps (1e-5) weighs on the dark image's small variance
    reference = torch.nn.InstanceNorm2d(3)(x.float() / 255)
    assert torch.allclose(out, reference, atol=1e-5)
    assert torch.equal(
        instance_normalize(torch.full((1, 3, 4, 4), 9, dtype=torch.uint8)), torch.zeros(1, 3, 4, 4)
    )


def test_instance_norm_in_test_and_train_transforms():
    images = [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in random_batch(4, 64, 32, seed=11)]
    config = ReidTransformConfig(height=32, width=16, normalization="instance")
    test = ReidTestTransform(config)(images)
    assert test.mean(dim=(2, 3)).abs().max() < 1e-5
    assert (test.std(dim=(2, 3), correction=0) - 1).abs().max() < 1e-3
    plain = ReidTransformConfig(
        height=32, width=16, normalization="instance", flip_p=0, pad=0, random_erasing_p=0
    )
    assert torch.equal(ReidTrainTransform(plain)(images), ReidTestTransform(plain)(images))
    train = ReidTrainTransform(config)(images, generator=torch.Generator().manual_seed(0))
    assert train.shape == (4, 3, 32, 16) and torch.isfinite(train).all()


# --- grayscale and colour jitter ------------------------------------------------------------------


def test_grayscale_p1_makes_channels_equal():
    out = random_grayscale(random_batch(10), p=1.0, generator=torch.Generator().manual_seed(12))
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])


def test_jitter_p0_is_identity():
    x = random_batch(10)
    strengths = dict(brightness=(0.85, 1.15), contrast=(0.9, 1.1), saturation=(0.95, 1.05), hue=(-0.05, 0.05))
    assert torch.equal(
        color_jitter(x.clone(), p=0.0, generator=torch.Generator().manual_seed(13), **strengths), x
    )
    images = [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in x]
    off = ReidTransformConfig(height=24, width=12, color_jitter_p=0.0, brightness=0.15, hue=0.05)
    plain = ReidTransformConfig(height=24, width=12)
    assert torch.equal(
        ReidTrainTransform(off)(images, generator=torch.Generator().manual_seed(14)),
        ReidTrainTransform(plain)(images, generator=torch.Generator().manual_seed(14)),
    )


def test_jitter_after_crop_jitters_the_padding():
    x = torch.full((64, 3, 8, 8), 200, dtype=torch.uint8)
    base = dict(height=8, width=8, pad=3, flip_p=0.0, color_jitter_p=1.0, contrast=(0.5, 0.5))
    plain = dict(random_erasing_p=0.0, mean=(0.0,) * 3, std=(1.0,) * 3)
    before = ReidTrainTransform(ReidTransformConfig(**base, **plain))(
        x, generator=torch.Generator().manual_seed(15)
    )
    after = ReidTrainTransform(ReidTransformConfig(**base, **plain, jitter_after_crop=True))(
        x, generator=torch.Generator().manual_seed(15)
    )
    assert before.min() == 0.0  # padding stays black when the jitter comes first
    assert after[after < 100 / 255].min() > 0.0  # the contrast blend lifts the padded border


# --- the whole pipeline -------------------------------------------------------------------------


def test_new_options_off_leave_the_default_pipeline_unchanged():
    """Explicitly-off new options give the very same output as a config without them: no draw
    is added while an option is off."""
    images = [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in random_batch(8, 40, 20, seed=16)]
    settings = dict(height=32, width=16, color_jitter_p=0.5, brightness=0.2, grayscale_p=0.3)
    default = ReidTrainTransform(ReidTransformConfig(**settings))
    off = ReidTrainTransform(
        ReidTransformConfig(**settings, augmix_p=0.0, augmix_severity=5, normalization="mean_std")
    )
    for seed in range(3):
        assert torch.equal(
            default(images, generator=torch.Generator().manual_seed(seed)),
            off(images, generator=torch.Generator().manual_seed(seed)),
        )


def test_clip_fgdi_pipeline_is_reproducible_and_instance_normalised():
    images = [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in random_batch(16, 40, 20, seed=17)]
    transform = ReidTrainTransform(ReidTransformConfig(**FGDI))
    first = transform(images, generator=torch.Generator().manual_seed(1))
    again = transform(images, generator=torch.Generator().manual_seed(1))
    other = transform(images, generator=torch.Generator().manual_seed(2))
    assert first.shape == (16, 3, 32, 16) and first.is_contiguous()
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert first.mean(dim=(2, 3)).abs().max() < 1e-4
