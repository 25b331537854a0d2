"""Colour names and the exact shades SynthPeds draws for them.

A colour name (what an attribute or a caption says, e.g. "blue") covers a region of HSV space;
each identity draws its own exact shade inside the region, so two "blue" shirts differ slightly,
as real ones do. Infrared reflectance is drawn per garment: dyes that look alike in RGB can look
very different under near-infrared light (and the other way round), so IR intensity is only
loosely tied to RGB luminance.
"""

from __future__ import annotations

import colorsys
import functools
import zlib

import numpy as np

RGB = tuple[float, float, float]

# name -> (hue range, saturation range, value range); hue in turns, may wrap below 0.
COLOR_REGIONS: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "black": ((0.0, 1.0), (0.0, 0.35), (0.07, 0.22)),
    "white": ((0.0, 1.0), (0.0, 0.08), (0.82, 0.97)),
    "gray": ((0.0, 1.0), (0.0, 0.10), (0.36, 0.66)),
    "red": ((-0.025, 0.02), (0.60, 0.92), (0.50, 0.88)),
    "pink": ((0.90, 0.98), (0.28, 0.60), (0.75, 0.96)),
    "purple": ((0.74, 0.86), (0.35, 0.70), (0.32, 0.70)),
    "yellow": ((0.12, 0.17), (0.60, 0.92), (0.75, 0.96)),
    "blue": ((0.56, 0.65), (0.45, 0.88), (0.28, 0.86)),
    "green": ((0.26, 0.42), (0.40, 0.80), (0.28, 0.70)),
    "brown": ((0.04, 0.10), (0.45, 0.78), (0.22, 0.50)),
    "orange": ((0.05, 0.09), (0.70, 0.92), (0.80, 0.96)),
    "beige": ((0.08, 0.13), (0.18, 0.36), (0.72, 0.90)),
    "khaki": ((0.11, 0.16), (0.30, 0.50), (0.50, 0.70)),
    "navy": ((0.60, 0.66), (0.55, 0.85), (0.16, 0.30)),
}
"""HSV regions of every colour name SynthPeds uses."""

OTHER_UPPER_COLORS = ("orange", "brown", "pink", "beige", "navy")
"""Names drawn for uppers whose real identity has no upper colour flag."""

OTHER_LOWER_COLORS = ("beige", "khaki", "navy", "red")
"""Names drawn for lowers whose real identity has no lower colour flag."""

SHOE_COLORS = ("black", "black", "black", "white", "white", "brown", "gray", "blue", "red")
ACCESSORY_COLORS = ("black", "black", "navy", "gray", "brown", "red", "blue", "beige", "green", "pink")
HAT_COLORS = ("black", "white", "navy", "beige", "red", "gray", "blue")


POPULAR_SHADES = 3
"""Real clothing colours cluster on a few popular dyes: each colour name has this many common
shades, drawn with probability ``POPULAR_SHARE``; other garments take any shade of the region."""
POPULAR_SHARE = 0.7


@functools.cache
def _popular_shades(name: str) -> tuple[tuple[float, float, float], ...]:
    (h0, h1), (s0, s1), (v0, v1) = COLOR_REGIONS[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    return tuple(
        (float(rng.uniform(h0, h1)), float(rng.uniform(s0, s1)), float(rng.uniform(v0, v1)))
        for _ in range(POPULAR_SHADES)
    )


def sample_shade(name: str, rng: np.random.Generator) -> RGB:
    """An exact RGB shade (floats in [0, 1]) of colour ``name``: usually near a popular shade."""
    try:
        (h0, h1), (s0, s1), (v0, v1) = COLOR_REGIONS[name]
    except KeyError:
        raise ValueError(f"unknown colour name {name!r}; known: {sorted(COLOR_REGIONS)}") from None
    if rng.random() < POPULAR_SHARE:
        h, s, v = _popular_shades(name)[int(rng.integers(POPULAR_SHADES))]
        h, s, v = h + rng.normal(0, 0.008), s + rng.normal(0, 0.03), v + rng.normal(0, 0.03)
    else:
        h, s, v = rng.uniform(h0, h1), rng.uniform(s0, s1), rng.uniform(v0, v1)
    rgb = colorsys.hsv_to_rgb(h % 1.0, clamp(s), clamp(v))
    return tuple(float(c) for c in rgb)


def clamp(value: float, low: float = 0.0, high: float = 1.0) -> float:
    """``value`` limited to [low, high] (a plain-float ``np.clip``, 20x faster on scalars)."""
    return min(max(float(value), low), high)


def luminance(rgb: RGB) -> float:
    """Rec. 601 luma of an RGB triple in [0, 1]."""
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def sample_ir_reflectance(rgb: RGB, rng: np.random.Generator, spread: float = 0.2) -> float:
    """Near-infrared intensity of a garment dyed ``rgb``: weakly tied to luminance.

    The material term (drawn once per garment) dominates, so black clothes can glow and white
    ones look mid-grey, as under real NIR surveillance cameras.
    """
    value = 0.32 + 0.35 * luminance(rgb) + 0.25 * rgb[0] * (1.0 - rgb[2]) + rng.normal(0.0, spread)
    return clamp(value, 0.05, 0.95)


def sample_skin(rng: np.random.Generator) -> RGB:
    """A skin tone between light and dark, with a little hue jitter."""
    t = rng.beta(2.0, 2.5)
    light, dark = np.array([0.96, 0.80, 0.69]), np.array([0.42, 0.28, 0.20])
    rgb = (1 - t) * light + t * dark + rng.normal(0.0, 0.02, 3)
    return tuple(float(c) for c in np.clip(rgb, 0.0, 1.0))


def sample_hair(rng: np.random.Generator, old: bool) -> RGB:
    """A hair tone: mostly black or dark brown; grey or white for old people."""
    if old and rng.random() < 0.7:
        v = rng.uniform(0.45, 0.8)
        return (v, v, v * 0.97)
    kind = rng.choice(4, p=[0.55, 0.25, 0.14, 0.06])
    base = [(0.06, 0.05, 0.05), (0.18, 0.12, 0.08), (0.33, 0.22, 0.13), (0.70, 0.58, 0.36)][kind]
    rgb = np.asarray(base) * rng.uniform(0.8, 1.2) + rng.normal(0.0, 0.015, 3)
    return tuple(float(c) for c in np.clip(rgb, 0.0, 1.0))
