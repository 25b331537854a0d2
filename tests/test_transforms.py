"""Batched torch transforms: equality with the CLIP image processor and augmentation statistics."""

import colorsys
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from hf_reid.data.transforms import (
    ReidTestTransform,
    ReidTrainTransform,
    ReidTransformConfig,
    color_jitter,
    random_erasing,
    random_flip_and_crop,
    random_grayscale,
)


def random_images(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)) for shape in shapes]


def test_test_transform_equals_clip_image_processor():
    logging.getLogger("transformers").setLevel(logging.ERROR)  # the "no torchvision, using PIL" notice
    from transformers import CLIPImageProcessor

    images = random_images([(128, 64, 3), (300, 97, 3), (256, 128, 3), (40, 200, 3), (61, 33)])
    for (height, width), mean, std in (
        ((256, 128), [0.5] * 3, [0.5] * 3),
        ((96, 48), [0.48, 0.46, 0.41], [0.27, 0.26, 0.28]),
    ):
        processor = CLIPImageProcessor(
            size={"height": height, "width": width}, do_center_crop=False, image_mean=mean, image_std=std
        )
        expected = processor(images=images, return_tensors="pt")["pixel_values"]
        config = ReidTransformConfig.from_image_processor(processor)
        assert (config.height, config.width, config.interpolation) == (height, width, "bicubic")
        got = ReidTestTransform(config)(images)
        assert got.dtype == torch.float32 and got.shape == expected.shape
        assert torch.allclose(got, expected, atol=1e-5, rtol=0)


def test_train_transform_without_augmentation_equals_test_transform():
    images = random_images([(128, 64, 3)] * 4)
    plain = ReidTransformConfig(height=64, width=32, flip_p=0, pad=0, random_erasing_p=0)
    assert torch.equal(ReidTrainTransform(plain)(images), ReidTestTransform(plain)(images))


def test_train_transform_is_reproducible_under_a_seeded_generator():
    images = random_images([(128, 64, 3)] * 8, seed=1)
    config = ReidTransformConfig(
        height=64,
        width=32,
        color_jitter_p=0.5,
        brightness=0.2,
        hue=0.1,
        grayscale_p=0.3,
        random_erasing_p=0.5,
    )
    transform = ReidTrainTransform(config)
    first = transform(images, generator=torch.Generator().manual_seed(3))
    again = transform(images, generator=torch.Generator().manual_seed(3))
    other = transform(images, generator=torch.Generator().manual_seed(4))
    assert first.shape == (8, 3, 64, 32) and first.is_contiguous()
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_flip_probability():
    x = torch.rand(1000, 3, 4, 5)
    out = random_flip_and_crop(x, flip_p=0.5, pad=0, generator=torch.Generator().manual_seed(0))
    same = (out == x).flatten(1).all(1)
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    assert (same ^ flipped).all()  # every image is either untouched or mirrored
    assert 0.43 < flipped.float().mean() < 0.57


def shifted(image, dy, dx):
    """Reference: zero-pad by |shift| with numpy and cut the window, output (r, c) = input (r+dy, c+dx)."""
    pad = max(abs(dy), abs(dx))
    padded = np.pad(image, ((0, 0), (pad, pad), (pad, pad)))
    height, width = image.shape[1:]
    return padded[:, pad + dy : pad + dy + height, pad + dx : pad + dx + width]


def test_pad_and_random_crop_is_a_uniform_zero_filled_shift():
    pad = 2
    x = (torch.arange(3 * 6 * 5, dtype=torch.float32) + 1).view(1, 3, 6, 5).repeat(500, 1, 1, 1)
    out = random_flip_and_crop(x, flip_p=0.0, pad=pad, generator=torch.Generator().manual_seed(1)).numpy()
    image = x[0].numpy()
    references = {
        (dy, dx): shifted(image, dy, dx) for dy in range(-pad, pad + 1) for dx in range(-pad, pad + 1)
    }
    found = []
    for crop in out:
        matches = [shift for shift, ref in references.items() if np.array_equal(crop, ref)]
        assert len(matches) == 1
        found.append(matches[0])
    counts = np.array([[found.count((dy, dx)) for dx in range(-pad, pad + 1)] for dy in range(-pad, pad + 1)])
    assert (counts > 0).all()  # all 25 offsets occur
    for marginal in (counts.sum(0), counts.sum(1)):
        assert (np.abs(marginal / 500 - 0.2) < 0.07).all()


def test_random_erasing_boxes_and_pixel_noise():
    n, height, width = 2000, 32, 32
    x = torch.zeros(n, 3, height, width)
    out = random_erasing(x.clone(), p=0.5, generator=torch.Generator().manual_seed(2))
    mask = (out != 0).any(1)  # noise is never exactly 0
    erased = mask.flatten(1).any(1)
    assert 0.46 < erased.float().mean() < 0.54
    areas = []
    for box in mask[erased]:
        rows, cols = torch.nonzero(box.any(1)).squeeze(1), torch.nonzero(box.any(0)).squeeze(1)
        h, w = len(rows), len(cols)
        assert rows[-1] - rows[0] + 1 == h and cols[-1] - cols[0] + 1 == w
        assert box.sum() == h * w  # a full rectangle
        assert h < height and w < width
        areas.append(h * w / (height * width))
        # rounding h and w allows a little slack around the aspect range [0.3, 1/0.3]
        assert 0.3 * 0.6 < h / w < 1 / (0.3 * 0.6)
    areas = np.array(areas)
    assert areas.min() >= 0.01 and areas.max() <= 0.4
    assert 0.13 < areas.mean() < 0.2  # uniform area in [0.02, 1/3] has mean 0.177
    values = out[mask[:, None].expand_as(out)]
    assert abs(values.mean()) < 0.02 and abs(values.std() - 1) < 0.02
    # the three channels get independent noise
    assert not torch.equal(out[:, 0][mask], out[:, 1][mask])


def test_brightness_contrast_and_saturation_factors_stay_in_range():
    generator = torch.Generator().manual_seed(5)
    x = 0.1 + 0.4 * torch.rand(300, 3, 6, 4, generator=generator)  # no clipping for factors < 2
    out = color_jitter(x.clone(), p=1.0, brightness=(0.7, 1.3), generator=generator)
    factor = (out / x).flatten(1)
    assert torch.allclose(factor, factor[:, :1].expand_as(factor), atol=1e-5)
    assert factor.min() >= 0.7 and factor.max() <= 1.3
    assert factor.min() < 0.75 and factor.max() > 1.25
    luma = 0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    mean = luma.mean(dim=(1, 2)).view(-1, 1, 1, 1)
    out = color_jitter(x.clone(), p=1.0, contrast=(0.8, 1.2), generator=generator)
    factor = ((out - mean) / (x - mean)).flatten(1)
    assert torch.allclose(factor.median(1).values, factor.mean(1), atol=1e-3)
    assert factor.median(1).values.min() >= 0.8 - 1e-4 and factor.median(1).values.max() <= 1.2 + 1e-4
    out = color_jitter(x.clone(), p=1.0, saturation=(0.5, 1.5), generator=generator)
    factor = ((out - luma[:, None]) / (x - luma[:, None])).flatten(1)
    assert factor.median(1).values.min() >= 0.5 - 1e-3 and factor.median(1).values.max() <= 1.5 + 1e-3
    changed = (
        (color_jitter(x.clone(), p=0.3, brightness=(0.5, 0.6), generator=generator) != x).flatten(1).any(1)
    )
    assert 0.2 < changed.float().mean() < 0.4


def test_hue_shift_rotates_hue_and_keeps_saturation_and_value():
    generator = torch.Generator().manual_seed(6)
    x = torch.rand(50, 3, 3, 3, generator=generator)
    out = color_jitter(x.clone(), p=1.0, hue=(-0.1, 0.1), generator=generator)
    shifts = []
    for before, after in zip(x, out):
        pixel_shifts = []
        for rgb_in, rgb_out in zip(before.reshape(3, -1).T.tolist(), after.reshape(3, -1).T.tolist()):
            h0, s0, v0 = colorsys.rgb_to_hsv(*rgb_in)
            h1, s1, v1 = colorsys.rgb_to_hsv(*rgb_out)
            assert abs(s0 - s1) < 1e-4 and abs(v0 - v1) < 1e-4
            pixel_shifts.append((h1 - h0 + 0.5) % 1.0 - 0.5)
        assert max(pixel_shifts) - min(pixel_shifts) < 1e-3  # one shift per image
        shifts.append(pixel_shifts[0])
    assert -0.1 - 1e-4 <= min(shifts) < -0.07 and 0.07 < max(shifts) <= 0.1 + 1e-4


def test_uint8_jitter_matches_float_jitter_up_to_rounding():
    x = torch.randint(0, 256, (20, 3, 5, 4), dtype=torch.uint8)
    settings = dict(p=1.0, brightness=(0.8, 1.2), contrast=(0.9, 1.1), hue=(-0.05, 0.05))
    as_uint8 = color_jitter(x.clone(), generator=torch.Generator().manual_seed(7), **settings)
    as_float = color_jitter(x.float() / 255, generator=torch.Generator().manual_seed(7), **settings)
    assert as_uint8.dtype == torch.uint8
    assert (as_uint8.float() - as_float * 255).abs().max() <= 0.5 + 1e-3


def test_grayscale_makes_channels_equal_luma():
    x = torch.randint(0, 256, (400, 3, 4, 4), dtype=torch.uint8)
    out = random_grayscale(x.clone(), p=0.5, generator=torch.Generator().manual_seed(8))
    gray = (out[:, 0] == out[:, 1]).flatten(1).all(1) & (out[:, 1] == out[:, 2]).flatten(1).all(1)
    assert 0.42 < gray.float().mean() < 0.58
    rgb = x[gray].numpy().astype(np.float64)
    luma = np.round(0.2989 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2])
    assert np.abs(out[gray][:, 0].numpy() - luma).max() <= 1
    assert torch.equal(out[~gray], x[~gray])


def test_config_rejects_bad_values_by_name():
    with pytest.raises(ValueError, match="flip_p"):
        ReidTransformConfig(flip_p=1.5)
    with pytest.raises(ValueError, match="hue"):
        ReidTransformConfig(hue=0.7)
    with pytest.raises(ValueError, match="interpolation"):
        ReidTransformConfig(interpolation="cubic")
    with pytest.raises(ValueError, match="brightness"):
        ReidTransformConfig(brightness=(1.2, 0.8))
