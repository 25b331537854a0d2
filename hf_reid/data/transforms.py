"""Train and test image transforms for Re-ID, in torch (no torchvision), batched.

Resizing is done per image with PIL, exactly as the model's ``CLIPImageProcessor`` does at test
time (PIL resize to H×W, then rescale by 1/255 and normalise), so training and evaluation see
the same pixels. Everything after the resize runs on the whole batch at once, with random
parameters drawn per sample, because per-image Python loops are what makes augmentation slow.

Train pipeline (CLIP-ReID §0.3 by default; ReText adds grayscale and colour jitter; CLIP-FGDI
adds AugMix and instance normalisation):
resize → random grayscale → colour jitter → horizontal flip → pad + random crop → AugMix →
normalise (mean/std or per-image instance norm) → random erasing. Up to the normalisation the
batch stays uint8 (colour operations convert the chosen images to float and round back, as the
same operations on PIL images do), which keeps the memory traffic low. By default the colour
jitter comes before padding so that the padding stays black (``jitter_after_crop=True`` moves it
after the crop, where torchvision pipelines such as CLIP-FGDI's list it), and the erasing comes
after normalisation, as timm's ``RandomErasing(mode="pixel")`` does (the erased box is filled with
standard-normal noise, per pixel and channel, in normalised units).

AugMix (Hendrycks et al., ICLR 2020) is implemented on the batch in torch: see :func:`augmix` for
the operations and how they map to the PIL reference. Every new option defaults to off, and an
option that is off draws no random numbers, so the default pipeline is unchanged draw for draw.

All random draws come from the optional ``generator`` argument (a ``torch.Generator``), so a seeded
generator reproduces a batch exactly; without one, torch's global RNG is used (which DataLoader
workers seed differently per worker). The batch functions below modify their input in place
where they can (the transforms own the batch they work on) and return it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import get_worker_info

__all__ = [
    "AUGMIX_OPS",
    "ReidTestTransform",
    "ReidTrainTransform",
    "ReidTransformConfig",
    "augmix",
    "augmix_mixing_weights",
    "color_jitter",
    "instance_normalize",
    "normalize",
    "random_erasing",
    "random_flip_and_crop",
    "random_grayscale",
    "resize_images",
    "rgb_to_grayscale",
]

_RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale

AUGMIX_OPS = (
    "autocontrast",
    "equalize",
    "posterize",
    "rotate",
    "solarize",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
)
"""The operations of the AugMix reference (``augmentations.augmentations``, which fast-reid's
AugMix also uses): the reference leaves out colour, contrast, brightness and sharpness because
they overlap the ImageNet-C corruptions AugMix is evaluated on; they also overlap the separate
colour jitter here."""

NORMALIZATIONS = ("mean_std", "instance")
INSTANCE_NORM_EPS = 1e-5
"""``nn.InstanceNorm2d``'s default epsilon, added to the (biased) per-channel variance."""

Range = tuple[float, float]


def _factor_range(value: float | Sequence[float], name: str) -> Range:
    """A jitter strength ``b`` means factors in ``[max(0, 1-b), 1+b]``; a pair is used as is."""
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"ReidTransformConfig.{name} must be >= 0, got {value}.")
        return (max(0.0, 1.0 - value), 1.0 + value)
    low, high = (float(v) for v in value)
    if not 0 <= low <= high:
        raise ValueError(f"ReidTransformConfig.{name} range must satisfy 0 <= low <= high, got {value}.")
    return (low, high)


def _hue_range(value: float | Sequence[float]) -> Range:
    """A hue strength ``h`` means shifts in ``[-h, h]`` (fractions of a full turn, at most 0.5)."""
    low, high = (
        (-float(value), float(value)) if isinstance(value, (int, float)) else (float(v) for v in value)
    )
    if not -0.5 <= low <= high <= 0.5:
        raise ValueError(f"ReidTransformConfig.hue must lie in [-0.5, 0.5] (a shift range), got {value}.")
    return (low, high)


@dataclass
class ReidTransformConfig:
    """Settings of :class:`ReidTrainTransform` and :class:`ReidTestTransform`.

    The defaults are CLIP-ReID's ViT recipe: 256×128 bicubic, mean = std = 0.5, flip 0.5,
    pad 10 + random crop, random erasing 0.5 (timm pixel mode), no colour jitter or grayscale.
    Take ``height``/``width``/``mean``/``std``/``interpolation`` from the model's image processor
    with :meth:`from_image_processor` so that training matches evaluation.

    Colour jitter follows torchvision's ``ColorJitter`` (applied as a whole with probability
    ``color_jitter_p``): ``brightness``/``contrast``/``saturation`` are a strength ``b`` (factor
    drawn from ``[max(0, 1-b), 1+b]``) or an explicit ``(low, high)`` factor range; ``hue`` is
    a strength ``h`` (shift drawn from ``[-h, h]`` of a full turn) or a ``(low, high)`` range.
    Unlike torchvision the four adjustments run in a fixed order (brightness, contrast,
    saturation, hue) rather than a random one.

    AugMix (off by default, ``augmix_p=0``): with probability ``augmix_p`` per image,
    ``augmix_width`` chains of ``augmix_depth`` operations (``<= 0``: a random depth 1..3 per
    chain) from ``augmix_ops`` at ``augmix_severity`` (1..10) are mixed with Dirichlet weights
    and blended with the image by a Beta draw, both of concentration ``augmix_alpha`` (see
    :func:`augmix`). ``normalization="instance"`` standardises every image and channel on its
    own (``nn.InstanceNorm2d(3)`` without affine, after rescaling to [0, 1]) instead of using
    ``mean``/``std``; it applies to the train and the test transform.

    CLIP-FGDI's training pipeline (its code, 224x224 input) is::

        ReidTransformConfig(height=224, width=224, grayscale_p=0.1, pad=10, flip_p=0.4,
                            color_jitter_p=0.1, brightness=0.15, contrast=0.1, saturation=0.05,
                            hue=0.05, jitter_after_crop=True, augmix_p=0.6, random_erasing_p=0.0,
                            normalization="instance")

    (flip and crop commute; grayscale commutes with the zero padding, so its position does not
    matter either.)
    """

    height: int = 256
    width: int = 128
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    interpolation: str = "bicubic"
    flip_p: float = 0.5
    pad: int = 10
    random_erasing_p: float = 0.5
    erasing_area: tuple[float, float] = (0.02, 1 / 3)
    erasing_aspect: tuple[float, float] = (0.3, 1 / 0.3)
    color_jitter_p: float = 0.0
    brightness: float | tuple[float, float] = 0.0
    contrast: float | tuple[float, float] = 0.0
    saturation: float | tuple[float, float] = 0.0
    hue: float | tuple[float, float] = 0.0
    grayscale_p: float = 0.0
    jitter_after_crop: bool = False
    """Apply the colour jitter after flip/pad/crop (so the padded border is jittered too), as
    CLIP-FGDI's torchvision pipeline orders it; ``False`` keeps it before (the border stays black)."""
    augmix_p: float = 0.0
    augmix_width: int = 3
    augmix_depth: int = 1
    augmix_severity: int = 1
    augmix_alpha: float = 0.1
    """Dirichlet/Beta concentration of the AugMix mixing weights. 0.1 is fast-reid's default
    (``aug_prob_coeff``), whose width 3 / depth 1 / severity 1 defaults are the values CLIP-FGDI
    states; the AugMix paper uses 1.0."""
    augmix_ops: tuple[str, ...] = AUGMIX_OPS
    normalization: Literal["mean_std", "instance"] = "mean_std"

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise ValueError(
                f"ReidTransformConfig height/width must be positive, got {self.height}x{self.width}."
            )
        self.mean, self.std = tuple(float(m) for m in self.mean), tuple(float(s) for s in self.std)
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(
                f"ReidTransformConfig mean/std need 3 values (RGB) with std > 0, got {self.mean} / {self.std}."
            )
        if self.interpolation not in _RESAMPLING:
            raise ValueError(
                f"ReidTransformConfig.interpolation {self.interpolation!r} is not one of {sorted(_RESAMPLING)}."
            )
        for name in ("flip_p", "random_erasing_p", "color_jitter_p", "grayscale_p", "augmix_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(
                    f"ReidTransformConfig.{name} is a probability in [0, 1], got {getattr(self, name)}."
                )
        if self.pad < 0:
            raise ValueError(f"ReidTransformConfig.pad must be >= 0, got {self.pad}.")
        area_low, area_high = self.erasing_area
        aspect_low, aspect_high = self.erasing_aspect
        if not 0 < area_low <= area_high <= 1 or not 0 < aspect_low <= aspect_high:
            raise ValueError(
                "ReidTransformConfig.erasing_area must satisfy 0 < low <= high <= 1 and erasing_aspect "
                f"0 < low <= high, got {self.erasing_area} / {self.erasing_aspect}."
            )
        self.jitter_ranges()  # validates the four settings
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"ReidTransformConfig.normalization {self.normalization!r} is not one of {list(NORMALIZATIONS)}."
            )
        self.augmix_ops = tuple(self.augmix_ops)
        unknown = sorted(set(self.augmix_ops) - set(AUGMIX_OPS))
        if not self.augmix_ops or unknown:
            raise ValueError(
                f"ReidTransformConfig.augmix_ops must be a non-empty subset of {list(AUGMIX_OPS)}, "
                f"got {list(self.augmix_ops)}."
            )
        if self.augmix_width < 1:
            raise ValueError(f"ReidTransformConfig.augmix_width must be >= 1, got {self.augmix_width}.")
        if not 1 <= self.augmix_severity <= 10:
            raise ValueError(
                f"ReidTransformConfig.augmix_severity must lie in 1..10, got {self.augmix_severity}."
            )
        if not self.augmix_alpha > 0:
            raise ValueError(f"ReidTransformConfig.augmix_alpha must be > 0, got {self.augmix_alpha}.")

    def jitter_ranges(self) -> dict[str, Range]:
        """The colour-jitter settings as explicit ranges: factors for brightness, contrast and
        saturation, a shift for hue."""
        ranges = {
            name: _factor_range(getattr(self, name), name)
            for name in ("brightness", "contrast", "saturation")
        }
        ranges["hue"] = _hue_range(self.hue)
        return ranges

    @property
    def resample(self) -> Image.Resampling:
        return _RESAMPLING[self.interpolation]

    @classmethod
    def from_image_processor(cls, processor: Any, **overrides: Any) -> ReidTransformConfig:
        """Take size, normalisation and interpolation from a ``transformers`` image processor.

        ``processor.size`` must be ``{"height": H, "width": W}`` (Re-ID crops are not square and
        are not centre-cropped); the augmentation settings come from ``overrides``.
        """
        size = dict(processor.size or {})
        if "height" not in size or "width" not in size:
            raise ValueError(
                f"The image processor's size is {size}; Re-ID needs an explicit "
                '`size={"height": H, "width": W}` with do_center_crop=False.'
            )
        names = {v: k for k, v in _RESAMPLING.items()}
        values: dict[str, Any] = {
            "height": size["height"],
            "width": size["width"],
            "mean": tuple(processor.image_mean),
            "std": tuple(processor.image_std),
            "interpolation": "bicubic"
            if processor.resample is None
            else names.get(Image.Resampling(int(processor.resample)), "bicubic"),
        }
        values.update(overrides)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TypeError(f"ReidTransformConfig has no field(s) {unknown}; known: {sorted(known)}.")
        return cls(**values)


def _to_pil(image: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
        if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
            image = image.transpose(1, 2, 0)
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise TypeError(f"Images given as arrays must be uint8 (0-255), got {array.dtype}.")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return Image.fromarray(array).convert("RGB")


def resize_images(images: Sequence[Any], height: int, width: int, resample: Image.Resampling) -> torch.Tensor:
    """Resize images to ``height``×``width`` with PIL and stack them into a uint8 (B, 3, H, W) tensor.

    Accepts PIL images (any mode; converted to RGB like the image processor does) and uint8
    arrays / tensors in HWC or CHW order. Each image is transposed straight into a preallocated
    contiguous NCHW buffer (numpy's transposing copy of uint8 is much cheaper than torch's
    channels-last to NCHW conversion of the float batch later).
    """
    if len(images) == 0:
        raise ValueError("resize_images got an empty batch.")
    batch = np.empty((len(images), 3, height, width), dtype=np.uint8)
    for i, image in enumerate(images):
        pil = _to_pil(image)
        if pil.size != (width, height):
            pil = pil.resize((width, height), resample=resample)
        batch[i] = np.asarray(pil).transpose(2, 0, 1)
    return torch.from_numpy(batch)


def _as_batch(images: Any, config: ReidTransformConfig, copy: bool = False) -> torch.Tensor:
    """Images (list, or uint8 / [0, 1] float batch tensor) -> (B, 3, H, W) uint8 or float tensor.

    ``copy=True`` guarantees a tensor the caller may modify in place (never the one passed in).
    """
    if not isinstance(images, torch.Tensor):
        return resize_images(images, config.height, config.width, config.resample)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"Expected an image batch of shape (B, 3, H, W), got {tuple(images.shape)}.")
    if tuple(images.shape[-2:]) == (config.height, config.width):
        images = images if images.dtype == torch.uint8 else images.float()
        return images.clone() if copy else images
    if images.dtype != torch.uint8:
        raise ValueError(
            f"Float batches must already be {config.height}x{config.width}, got {tuple(images.shape[-2:])}; "
            "pass PIL images or uint8 tensors to have them resized."
        )
    return resize_images(list(images), config.height, config.width, config.resample)


def _to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] or float [0, 1] -> float [0, 1]."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def _from_unit(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """float [0, 1] -> ``dtype``, rounding to the nearest level for uint8 (as PIL-based transforms do)."""
    return x.mul(255.0).round_().clamp_(0, 255).to(torch.uint8) if dtype == torch.uint8 else x


def _empty_batch(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """``torch.empty``, but in shared memory inside a DataLoader worker.

    A worker sends its batch to the training process through shared memory; a tensor that is not
    there yet is copied into it first (25 MB for 64 images of 256x128). Allocating it there from
    the start, as ``default_collate`` does, saves that copy (about 5% of the worker's CPU time).
    """
    if get_worker_info() is None:
        return torch.empty(tuple(shape), dtype=dtype)
    prototype = torch.empty(0, dtype=dtype)
    storage = prototype._typed_storage()._new_shared(math.prod(shape), device=prototype.device)
    return prototype.new(storage).view(tuple(shape))


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Rescale (uint8 by 1/255) and normalise ``(x - mean) / std`` per channel.

    Returns a new contiguous float32 batch; the two steps are fused into one multiply-add
    (equal to the separate steps up to float rounding, ~1e-7).
    """
    scale = 1.0 / 255.0 if x.dtype == torch.uint8 else 1.0
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    out = _empty_batch(x.shape, torch.float32).copy_(x)
    return out.mul_(scale / std_t).sub_(mean_t / std_t)


def instance_normalize(x: torch.Tensor, eps: float = INSTANCE_NORM_EPS) -> torch.Tensor:
    """Standardise every image and channel on its own: ``(x - mean) / sqrt(var + eps)``.

    Equals ``nn.InstanceNorm2d(3)`` (no affine, biased variance) applied to the [0, 1] tensor
    (uint8 input is rescaled by 1/255 first, as ``ToTensor`` does, so that ``eps`` has the same
    weight). CLIP-FGDI normalises this way instead of with a dataset mean/std, at train and test
    time. Returns a new contiguous float32 batch; a constant channel becomes 0.
    """
    out = _empty_batch(x.shape, torch.float32).copy_(x)
    if x.dtype == torch.uint8:
        out.mul_(1.0 / 255.0)
    var, mean = torch.var_mean(out, dim=(2, 3), correction=0, keepdim=True)
    return out.sub_(mean).div_(var.add_(eps).sqrt_())


def rgb_to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma of a float RGB (B, 3, H, W) batch as (B, 1, H, W)."""
    r, g, b = x.unbind(1)
    return (_GRAY_WEIGHTS[0] * r + _GRAY_WEIGHTS[1] * g + _GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _uniform(low: float, high: float, n: int, generator: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def random_grayscale(x: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each image, with probability ``p``, by its luma in all three channels (in place).

    ``x`` is uint8 (0-255) or float (0-1); uint8 luma is rounded, as PIL's ``convert("L")``.
    Returns ``x``.
    """
    chosen = torch.nonzero(torch.rand(x.shape[0], generator=generator) < p).squeeze(1)
    if len(chosen) > 0:
        gray = rgb_to_grayscale(_to_unit(x[chosen]).contiguous())
        x[chosen] = _from_unit(gray, x.dtype).expand(-1, 3, -1, -1)
    return x


def _rgb_to_hsv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Float RGB (B, 3, H, W) in [0, 1] -> hue in [0, 1), saturation, value, each (B, H, W).

    Written with masks and arithmetic rather than nested ``torch.where`` calls, which are several
    times slower on CPU. Grey pixels (max == min) get hue 0.
    """
    r, g, b = x.unbind(1)
    value = x.amax(1)
    chroma = value - x.amin(1)
    saturation = chroma / value.clamp_min(1e-12)
    is_r = value == r
    is_g = (value == g) & ~is_r
    is_b = ~(is_r | is_g)
    hue = is_r * (g - b) + is_g * (2.0 * chroma + b - r) + is_b * (4.0 * chroma + r - g)
    hue = hue / (6.0 * chroma.clamp_min(1e-12))
    return hue - hue.floor(), saturation, value


def _hsv_to_rgb(hue: torch.Tensor, saturation: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_rgb_to_hsv` (``hue`` in [0, 1)): each channel is
    ``V - V*S*clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + 6*H) mod 6``, ``n = 5, 3, 1`` for R, G, B."""
    channels = []
    chroma = value * saturation
    for n in (5.0, 3.0, 1.0):
        k = hue * 6.0 + n
        k = k - 6.0 * (k >= 6.0)
        channels.append(value - chroma * torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0))
    return torch.stack(channels, 1)


def color_jitter(
    x: torch.Tensor,
    p: float,
    brightness: Range = (1.0, 1.0),
    contrast: Range = (1.0, 1.0),
    saturation: Range = (1.0, 1.0),
    hue: Range = (0.0, 0.0),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """torchvision-style colour jitter, applied to each image with probability ``p``.

    Factors are drawn per image: brightness scales, contrast blends with the image's mean luma,
    saturation blends with the per-pixel luma, hue rotates the HSV hue; results are clamped to
    the valid range. ``x`` is uint8 (0-255; results are rounded, as jitter on PIL images is) or
    float (0-1); it is modified in place and returned.
    """
    chosen = torch.nonzero(torch.rand(x.shape[0], generator=generator) < p).squeeze(1)
    n = len(chosen)
    if n == 0:
        return x
    sub = _to_unit(x[chosen]).contiguous()
    view = (n, 1, 1, 1)
    if brightness != (1.0, 1.0):
        sub = (sub * _uniform(*brightness, n, generator).view(view)).clamp_(0.0, 1.0)
    if contrast != (1.0, 1.0):
        factor = _uniform(*contrast, n, generator).view(view)
        mean = rgb_to_grayscale(sub).mean(dim=(1, 2, 3), keepdim=True)
        sub = (factor * sub + (1.0 - factor) * mean).clamp_(0.0, 1.0)
    if saturation != (1.0, 1.0):
        factor = _uniform(*saturation, n, generator).view(view)
        sub = (factor * sub + (1.0 - factor) * rgb_to_grayscale(sub)).clamp_(0.0, 1.0)
    if hue != (0.0, 0.0):
        shift = _uniform(*hue, n, generator).view(n, 1, 1)
        h, s, v = _rgb_to_hsv(sub)
        h = h + shift
        sub = _hsv_to_rgb(h - h.floor(), s, v)
    x[chosen] = _from_unit(sub, x.dtype)
    return x


def random_flip_and_crop(
    x: torch.Tensor, flip_p: float, pad: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Horizontal flip with probability ``flip_p``, then zero-pad by ``pad`` and crop back at random.

    Equals torchvision's ``RandomHorizontalFlip(flip_p)`` -> ``Pad(pad)`` -> ``RandomCrop((H, W))``
    per image (crop offsets uniform in ``[0, 2*pad]``). The parameters are drawn for the whole
    batch at once; the work is one shifted rectangle copy per image, which is several times faster
    on CPU than a batched gather or ``where``. Works on any dtype and returns a new tensor.
    """
    batch, _, height, width = x.shape
    flips = (torch.rand(batch, generator=generator) < flip_p).tolist()
    shifts = (torch.randint(0, 2 * pad + 1, (batch, 2), generator=generator) - pad).tolist()
    out = torch.zeros_like(x) if pad > 0 else torch.empty_like(x)
    for i, (flip, (dy, dx)) in enumerate(zip(flips, shifts)):
        image = x[i].flip(-1) if flip else x[i]
        # Output pixel (r, c) shows input pixel (r + dy, c + dx); zero where that is outside the image.
        out[i, :, max(0, -dy) : height - max(0, dy), max(0, -dx) : width - max(0, dx)] = image[
            :, max(0, dy) : height - max(0, -dy), max(0, dx) : width - max(0, -dx)
        ]
    return out


def random_erasing(
    x: torch.Tensor,
    p: float,
    area: tuple[float, float] = (0.02, 1 / 3),
    aspect: tuple[float, float] = (0.3, 1 / 0.3),
    generator: torch.Generator | None = None,
    attempts: int = 10,
) -> torch.Tensor:
    """timm ``RandomErasing(mode="pixel", max_count=1)`` on a normalised float batch, in place.

    With probability ``p`` per image, one box of ``area`` fraction (uniform) and aspect ratio
    ``h/w`` (log-uniform in ``aspect``) is filled with standard-normal noise per pixel and
    channel. As in timm, up to ``attempts`` boxes are drawn and the first that fits strictly
    inside the image is used; if none fits the image is left as is. The box parameters are drawn
    for the whole batch at once; only the (cheap) fills loop over the erased images.
    """
    batch, channels, height, width = x.shape
    chosen = torch.nonzero(torch.rand(batch, generator=generator) < p).squeeze(1)
    n = len(chosen)
    if n == 0:
        return x
    target = _uniform(*area, n * attempts, generator).view(n, attempts) * (height * width)
    ratio = torch.exp(_uniform(math.log(aspect[0]), math.log(aspect[1]), n * attempts, generator)).view(
        n, attempts
    )
    box_h = torch.round(torch.sqrt(target * ratio)).long()
    box_w = torch.round(torch.sqrt(target / ratio)).long()
    fits = (box_h < height) & (box_w < width)
    first = fits.float().argmax(1)  # the first attempt that fits
    keep = fits.any(1)
    chosen, first = chosen[keep], first[keep]
    box_h, box_w = box_h[keep, first], box_w[keep, first]
    top = (torch.rand(len(chosen), generator=generator) * (height - box_h + 1)).long()
    left = (torch.rand(len(chosen), generator=generator) * (width - box_w + 1)).long()
    sizes = (channels * box_h * box_w).tolist()
    noise = torch.randn(sum(sizes), generator=generator, dtype=x.dtype).split(sizes)
    boxes = zip(chosen.tolist(), top.tolist(), left.tolist(), box_h.tolist(), box_w.tolist(), noise)
    for index, y0, x0, h, w, values in boxes:
        x[index, :, y0 : y0 + h, x0 : x0 + w] = values.view(channels, h, w)
    return x


# --- AugMix ------------------------------------------------------------------------------------
# The operations work on float batches holding 8-bit levels (integer values in [0, 255]), the
# values the PIL images of the reference hold; every operation returns such levels again.


def _autocontrast(x: torch.Tensor) -> torch.Tensor:
    """``ImageOps.autocontrast`` (no cutoff): stretch each channel's [min, max] to [0, 255]
    (PIL's lookup table truncates); a constant channel is left as is."""
    n, channels, height, width = x.shape
    levels = x.reshape(n * channels, height * width).long()
    low = levels.amin(1, keepdim=True).numpy().astype(np.float64)
    high = levels.amax(1, keepdim=True).numpy().astype(np.float64)
    # PIL's table, with its double-precision rounding (numpy divides exactly; torch's scalar /
    # tensor does not, which moves a few levels): int(level * scale + offset), clamped.
    scale = 255.0 / np.maximum(high - low, 1.0)
    offset = -low * scale
    lut = np.clip(np.floor(np.arange(256.0) * scale + offset), 0.0, 255.0)
    lut = np.where(high > low, lut, np.arange(256.0))
    return torch.from_numpy(lut).gather(1, levels).to(x.dtype).view(n, channels, height, width)


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """``ImageOps.equalize`` per channel, with PIL's lookup table: ``step = (pixels - count of the
    highest level present) // 255``; level i maps to ``(step // 2 + pixels below i) // step``;
    a channel with ``step == 0`` (nearly constant) is left as is."""
    n, channels, height, width = x.shape
    levels = x.reshape(n * channels, height * width).long()
    hist = torch.zeros(n * channels, 256, dtype=torch.long).scatter_add_(1, levels, torch.ones_like(levels))
    last = 255 - (hist.flip(1) > 0).long().argmax(1, keepdim=True)
    step = (height * width - hist.gather(1, last)) // 255
    below = hist.cumsum(1) - hist
    lut = ((step // 2 + below) // step.clamp_min(1)).clamp_(0, 255)
    lut = torch.where(step > 0, lut, torch.arange(256).expand_as(lut))
    return lut.gather(1, levels).to(x.dtype).view(n, channels, height, width)


def _posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """``ImageOps.posterize``: keep the top ``bits`` bits of each level (``bits`` per image)."""
    size = torch.pow(2.0, 8 - bits.to(x.dtype)).view(-1, 1, 1, 1)
    return (x / size).floor_().mul_(size)


def _solarize(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """``ImageOps.solarize``: invert the levels at or above ``threshold`` (per image)."""
    return torch.where(x >= threshold.to(x.dtype).view(-1, 1, 1, 1), 255.0 - x, x)


def _affine(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """PIL's ``Image.transform(size, AFFINE, (a, b, c, d, e, f), BILINEAR)`` on a batch.

    ``matrix`` is (N, 6): output point (u, v) samples the input at ``(a*u + b*v + c, d*u + e*v +
    f)`` in PIL's continuous coordinates (origin at the top-left corner, pixel centres at +0.5).
    As in PIL, a point inside the image is interpolated bilinearly with the border pixels
    replicated, and a point outside it reads 0 (black fill); the result is rounded to levels.
    """
    n, _, height, width = x.shape
    u = torch.arange(width, dtype=x.dtype) + 0.5
    v = torch.arange(height, dtype=x.dtype) + 0.5
    a, b, c, d, e, f = (matrix[:, i].to(x.dtype).view(n, 1, 1) for i in range(6))
    grid_u = a * u.view(1, 1, width) + b * v.view(1, height, 1) + c
    grid_v = d * u.view(1, 1, width) + e * v.view(1, height, 1) + f
    # grid_sample with align_corners=False: -1 and 1 are the outer edges of the border pixels.
    grid = torch.stack((grid_u * (2.0 / width) - 1.0, grid_v * (2.0 / height) - 1.0), dim=-1)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    inside = (grid_u >= 0) & (grid_u < width) & (grid_v >= 0) & (grid_v < height)
    return out.mul_(inside.unsqueeze(1)).round_().clamp_(0.0, 255.0)


def _affine_matrices(
    op: str, level: torch.Tensor, sign: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """(N, 6) PIL affine coefficients of a geometric AugMix operation at ``level`` (in [0.1, 10]),
    with the reference's magnitudes: rotate by ``int(level * 3)`` degrees about the centre, shear
    by ``level * 0.03``, translate by ``int(level * size / 30)`` pixels, each with a random sign."""
    n = len(level)
    one, zero = torch.ones(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    level, sign = level.double(), sign.double()
    if op == "rotate":
        theta = torch.deg2rad(torch.floor(level * 30 / 10) * sign)
        cos, sin = torch.cos(theta), torch.sin(theta)
        # Image.rotate: counter-clockwise about the centre, i.e. sampling at the point rotated back
        cu, cv = width / 2.0, height / 2.0
        return torch.stack((cos, -sin, cu - cos * cu + sin * cv, sin, cos, cv - sin * cu - cos * cv), dim=1)
    if op == "shear_x":
        return torch.stack((one, level * 0.3 / 10 * sign, zero, zero, one, zero), dim=1)
    if op == "shear_y":
        return torch.stack((one, zero, zero, level * 0.3 / 10 * sign, one, zero), dim=1)
    if op == "translate_x":
        return torch.stack((one, zero, torch.floor(level * width / 3 / 10) * sign, zero, one, zero), dim=1)
    if op == "translate_y":
        return torch.stack((one, zero, zero, zero, one, torch.floor(level * height / 3 / 10) * sign), dim=1)
    raise ValueError(f"{op!r} is not a geometric AugMix operation.")


def _augmix_op(op: str, x: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """One AugMix operation on a (N, 3, H, W) batch of levels, one ``level``/``sign`` per image."""
    if op == "autocontrast":
        return _autocontrast(x)
    if op == "equalize":
        return _equalize(x)
    if op == "posterize":
        return _posterize(x, 4 - torch.floor(level * 4 / 10))
    if op == "solarize":
        return _solarize(x, 256 - torch.floor(level * 256 / 10))
    return _affine(x, _affine_matrices(op, level, sign, x.shape[2], x.shape[3]))


def augmix_mixing_weights(
    n: int, width: int, alpha: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """AugMix's mixing weights for ``n`` images: chain weights ``w`` (n, width) ~ Dirichlet(alpha)
    (each row sums to 1) and the blend ``m`` (n,) ~ Beta(alpha, alpha).

    torch's Dirichlet and Beta samplers take no ``generator``, so one seed is drawn from
    ``generator`` and the samples come from ``numpy.random.default_rng(seed)``: reproducible
    under the same generator state, like every other draw here. A row whose Gamma draws all
    underflow to 0 (possible only for tiny ``alpha``) gets equal weights.
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet([alpha] * width, size=n)
    blend = rng.beta(alpha, alpha, size=n)
    bad = ~np.isfinite(weights).all(1)
    weights[bad] = 1.0 / width
    return torch.from_numpy(weights).float(), torch.from_numpy(np.nan_to_num(blend, nan=0.5)).float()


def augmix(
    x: torch.Tensor,
    p: float,
    width: int = 3,
    depth: int = 1,
    severity: int = 1,
    alpha: float = 0.1,
    ops: Sequence[str] = AUGMIX_OPS,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """AugMix (Hendrycks et al., ICLR 2020), applied to each image with probability ``p``, in place.

    For a chosen image ``x``: ``width`` chains each apply ``depth`` operations (``depth <= 0``:
    a random depth 1..3 per chain and image) drawn uniformly from ``ops``, each at a level drawn
    uniformly from [0.1, ``severity``]; the chains are mixed with Dirichlet(``alpha``) weights
    and the result is blended with ``x`` by m ~ Beta(``alpha``, ``alpha``):
    ``(1 - m) * x + m * sum_i w_i * chain_i`` (rounded to 8-bit levels; fast-reid truncates).
    Probability, width 3, depth 1 and severity 1 are fast-reid's AugMix defaults, which
    CLIP-FGDI uses with p = 0.6.

    The operations are the reference's PIL-free-able set :data:`AUGMIX_OPS` in torch, on the
    whole batch: ``autocontrast``, ``equalize``, ``posterize`` (4 - int(level*0.4) bits) and
    ``solarize`` (threshold 256 - int(level*25.6)) reproduce PIL's ``ImageOps`` exactly;
    ``rotate`` (int(level*3) degrees), ``shear_x``/``shear_y`` (level*0.03) and
    ``translate_x``/``translate_y`` (int(level*size/30) pixels of the image's width/height;
    the reference uses a square size) follow PIL's affine transform with bilinear sampling and
    black fill (translations match PIL exactly; rotation and shear differ from it by at most one
    level, from float rounding).

    ``x`` is uint8 (0-255) or float (0-1; it is quantised to 8-bit levels, as the PIL images of
    the reference are). Random draws, all from ``generator``: which images (one uniform per
    image), then per chain its depth (if random) and per step the operation, level and sign of
    every chosen image, then the mixing weights (:func:`augmix_mixing_weights`).
    """
    chosen = torch.nonzero(torch.rand(x.shape[0], generator=generator) < p).squeeze(1)
    n = len(chosen)
    if n == 0:
        return x
    ops = tuple(ops)
    geometric = [
        i for i, op in enumerate(ops) if op not in ("autocontrast", "equalize", "posterize", "solarize")
    ]
    image = _to_unit(x[chosen]).mul_(255.0).round_()
    steps = depth if depth > 0 else 3
    chains = []
    for _ in range(width):
        chain = image.clone()
        chain_depth = torch.full((n,), depth) if depth > 0 else torch.randint(1, 4, (n,), generator=generator)
        for step in range(steps):
            op_index = torch.randint(0, len(ops), (n,), generator=generator)
            level = 0.1 + (severity - 0.1) * torch.rand(n, generator=generator)
            sign = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
            op_index[chain_depth <= step] = -1  # chains shorter than this step are done
            for k, op in enumerate(ops):
                if k in geometric:
                    continue
                rows = torch.nonzero(op_index == k).squeeze(1)
                if len(rows):
                    chain[rows] = _augmix_op(op, chain[rows], level[rows], sign[rows])
            rows = torch.nonzero(torch.isin(op_index, torch.tensor(geometric, dtype=torch.long))).squeeze(1)
            if len(rows):
                # one grid_sample for every geometric operation of this step
                h, w = chain.shape[2], chain.shape[3]
                matrices = torch.empty(len(rows), 6, dtype=torch.float64)
                for k in geometric:
                    mask = op_index[rows] == k
                    if mask.any():
                        sub = rows[mask]
                        matrices[mask] = _affine_matrices(ops[k], level[sub], sign[sub], h, w)
                chain[rows] = _affine(chain[rows], matrices)
        chains.append(chain)
    weights, blend = augmix_mixing_weights(n, width, alpha, generator)
    mix = torch.zeros_like(image)
    for i, chain in enumerate(chains):
        mix.add_(chain * weights[:, i].view(n, 1, 1, 1))
    m = blend.view(n, 1, 1, 1)
    mixed = ((1.0 - m) * image + m * mix).div_(255.0).clamp_(0.0, 1.0)
    x[chosen] = (
        _from_unit(mixed, x.dtype) if x.dtype == torch.uint8 else mixed.mul_(255.0).round_().div_(255.0)
    )
    return x


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Run the block with one intra-op torch thread, then restore the previous count.

    The transforms are many small tensor operations, for which intra-op threads only add
    synchronisation: on a busy 2-core machine a batch of 64 took 150-800 ms with 2 threads and
    20-25 ms with 1. DataLoader workers already use one thread; this makes ``num_workers=0``
    (collation in the training process) just as fast. Switching costs about 15 us.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class ReidTestTransform:
    """Evaluation transform: PIL resize to H×W, rescale to [0, 1], normalise.

    Gives the same pixels as ``CLIPImageProcessor(size={"height": H, "width": W},
    do_center_crop=False, image_mean=mean, image_std=std)``. With
    ``normalization="instance"`` each image is standardised on its own instead
    (:func:`instance_normalize`), which no ``CLIPImageProcessor`` setting expresses.
    """

    def __init__(self, config: ReidTransformConfig | None = None):
        self.config = config or ReidTransformConfig()

    def __call__(self, images: Any, generator: torch.Generator | None = None) -> torch.Tensor:
        """``images``: a list of PIL images / uint8 arrays, or a (B, 3, H, W) uint8 or [0, 1] float batch."""
        with _one_torch_thread():
            return self._normalize(_as_batch(images, self.config))

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Mean/std normalisation, or per-image instance normalisation (``normalization``)."""
        if self.config.normalization == "instance":
            return instance_normalize(x)
        return normalize(x, self.config.mean, self.config.std)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


class ReidTrainTransform(ReidTestTransform):
    """Training transform: the test transform plus batched random augmentation (see the module doc)."""

    def __init__(self, config: ReidTransformConfig | None = None):
        super().__init__(config)
        self._jitter_ranges = self.config.jitter_ranges()

    def __call__(self, images: Any, generator: torch.Generator | None = None) -> torch.Tensor:
        with _one_torch_thread():
            return self._augment(images, generator)

    def _augment(self, images: Any, generator: torch.Generator | None) -> torch.Tensor:
        config = self.config
        x = _as_batch(images, config, copy=True)
        x = random_grayscale(x, config.grayscale_p, generator)
        if config.color_jitter_p > 0 and not config.jitter_after_crop:
            x = self._jitter(x, generator)
        if config.flip_p > 0 or config.pad > 0:
            x = random_flip_and_crop(x, config.flip_p, config.pad, generator)
        if config.color_jitter_p > 0 and config.jitter_after_crop:
            x = self._jitter(x, generator)
        if config.augmix_p > 0:
            x = augmix(
                x,
                config.augmix_p,
                config.augmix_width,
                config.augmix_depth,
                config.augmix_severity,
                config.augmix_alpha,
                config.augmix_ops,
                generator,
            )
        x = self._normalize(x)
        if config.random_erasing_p > 0:
            x = random_erasing(
                x, config.random_erasing_p, config.erasing_area, config.erasing_aspect, generator
            )
        return x

    def _jitter(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        ranges = self._jitter_ranges
        return color_jitter(
            x,
            self.config.color_jitter_p,
            ranges["brightness"],
            ranges["contrast"],
            ranges["saturation"],
            ranges["hue"],
            generator,
        )
