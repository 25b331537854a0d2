"""The image processor of hf_reid models: resize to the model's H x W and normalise.

A stock ``CLIPImageProcessor`` configured for Re-ID is all that is needed, so that is what this
builds rather than a new class: it saves its size and normalisation to
``preprocessor_config.json`` and ``AutoImageProcessor.from_pretrained(folder)`` reloads it with
nothing but ``transformers`` installed (no remote code). The differences from CLIP's defaults:
resize straight to (H, W) instead of shortest-edge + centre crop (a pedestrian crop must not lose
its head and feet), and Re-ID normalisation (CLIP-ReID's ViT uses mean = std = 0.5).

The PIL backend is used (``CLIPImageProcessorPil``), whose bicubic resize is the one the
test-time transforms use; where torchvision is installed ``AutoImageProcessor`` picks the
torchvision backend unless called with ``backend="pil"`` (results agree to ~1/255).
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers.models.clip import CLIPImageProcessorPil

REID_IMAGE_MEAN = (0.5, 0.5, 0.5)
REID_IMAGE_STD = (0.5, 0.5, 0.5)
BICUBIC = 3
"""PIL's code for bicubic resampling (``PIL.Image.Resampling.BICUBIC``)."""


def build_reid_image_processor(
    image_size: Sequence[int] = (256, 128),
    image_mean: Sequence[float] = REID_IMAGE_MEAN,
    image_std: Sequence[float] = REID_IMAGE_STD,
    resample: int = BICUBIC,
) -> CLIPImageProcessorPil:
    """An image processor that converts to RGB, resizes to ``image_size`` (H, W) with
    ``resample``, rescales to [0, 1] and normalises with ``image_mean``/``image_std``."""
    if len(image_size) != 2 or not all(isinstance(v, int) and v > 0 for v in image_size):
        raise ValueError(f"image_size must be (height, width) positive ints, got {image_size!r}.")
    if len(image_mean) != 3 or len(image_std) != 3 or not all(s > 0 for s in image_std):
        raise ValueError(
            f"image_mean and image_std must have 3 values (std > 0), got {image_mean!r}, {image_std!r}."
        )
    size = {"height": int(image_size[0]), "width": int(image_size[1])}
    return CLIPImageProcessorPil(
        do_resize=True,
        size=size,
        resample=resample,
        do_center_crop=False,
        crop_size=dict(size),
        do_rescale=True,
        do_normalize=True,
        image_mean=[float(m) for m in image_mean],
        image_std=[float(s) for s in image_std],
        do_convert_rgb=True,
    )


__all__ = ["REID_IMAGE_MEAN", "REID_IMAGE_STD", "build_reid_image_processor"]
