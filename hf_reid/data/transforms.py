"""Train and test image transforms for Re-ID, in torch (no torchvision), batched.

Resizing is done per image with PIL, exactly as the model's ``CLIPImageProcessor`` does at test
time (PIL resize to H×W, then rescale by 1/255 and normalise), so training and evaluation see
the same pixels. Everything after the resize runs on the whole batch at once, with random
parameters drawn per sample, because per-image Python loops are what makes augmentation slow.

Train pipeline (CLIP-ReID §0.3 by default; ReText adds grayscale and colour jitter):
resize → random grayscale → colour jitter → horizontal flip → pad + random crop → normalise →
random erasing. Up to the normalisation the batch stays uint8 (colour operations convert the
chosen images to float and round back, as the same operations on PIL images do), which keeps the
memory traffic low. The colour operations come before padding so that the padding stays black,
and the erasing comes after normalisation, as timm's ``RandomErasing(mode="pixel")`` does (the
erased box is filled with standard-normal noise, per pixel and channel, in normalised units).

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
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import get_worker_info

__all__ = [
    "ReidTestTransform",
    "ReidTrainTransform",
    "ReidTransformConfig",
    "color_jitter",
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
        for name in ("flip_p", "random_erasing_p", "color_jitter_p", "grayscale_p"):
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
    do_center_crop=False, image_mean=mean, image_std=std)``.
    """

    def __init__(self, config: ReidTransformConfig | None = None):
        self.config = config or ReidTransformConfig()

    def __call__(self, images: Any, generator: torch.Generator | None = None) -> torch.Tensor:
        """``images``: a list of PIL images / uint8 arrays, or a (B, 3, H, W) uint8 or [0, 1] float batch."""
        with _one_torch_thread():
            return normalize(_as_batch(images, self.config), self.config.mean, self.config.std)

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
        if config.color_jitter_p > 0:
            ranges = self._jitter_ranges
            x = color_jitter(
                x,
                config.color_jitter_p,
                ranges["brightness"],
                ranges["contrast"],
                ranges["saturation"],
                ranges["hue"],
                generator,
            )
        if config.flip_p > 0 or config.pad > 0:
            x = random_flip_and_crop(x, config.flip_p, config.pad, generator)
        x = normalize(x, config.mean, config.std)
        if config.random_erasing_p > 0:
            x = random_erasing(
                x, config.random_erasing_p, config.erasing_area, config.erasing_aspect, generator
            )
        return x
