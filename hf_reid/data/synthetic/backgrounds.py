"""Camera backgrounds: one wide scene per camera, from which each image crops a window.

A scene is a wall or vegetation band above a horizon and a ground plane below, textured after the
camera's style (windows, bricks, foliage, shop fronts, tiles or plain) and cluttered with poles,
signs and bins in the domain's accent colours. Images of one camera share the scene, so the
background is a camera cue, as in real Re-ID data.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .cameras import CameraStyle
from .palette import RGB

_SCENE_SATURATION = 0.55
_SCENE_CONTRAST = 0.8


def _rgb255(rgb: RGB | np.ndarray, scale: float = 1.0) -> tuple[int, int, int]:
    return tuple(int(min(max(float(c) * scale, 0.0), 1.0) * 255 + 0.5) for c in rgb)


def _jitter(rgb: RGB, rng: np.random.Generator, amount: float) -> np.ndarray:
    return np.clip(np.asarray(rgb) * rng.uniform(1 - amount, 1 + amount) + rng.normal(0, amount / 3, 3), 0, 1)


def _draw_wall(
    draw: ImageDraw.ImageDraw, camera: CameraStyle, rng: np.random.Generator, w: int, hy: int
) -> None:
    wall = np.asarray(camera.wall)
    texture = camera.texture
    if texture == "windows":
        cell_w, cell_h = int(rng.integers(w // 18, w // 9)), int(rng.integers(hy // 6, hy // 3))
        pad = max(2, cell_w // 5)
        glass = _jitter(wall * 0.55 + np.array([0.05, 0.08, 0.12]), rng, 0.1)
        for y in range(int(rng.integers(0, pad + 1)), hy - cell_h // 2, cell_h):
            for x in range(0, w, cell_w):
                if rng.random() < 0.85:
                    lit = rng.random() < 0.25
                    color = camera.accents[1] if lit and camera.wall[2] > camera.wall[0] else glass
                    draw.rectangle(
                        [x + pad, y + pad, x + cell_w - pad, y + cell_h - pad], fill=_rgb255(color)
                    )
    elif texture == "bricks":
        row = int(rng.integers(max(3, hy // 24), max(4, hy // 12)))
        mortar = _rgb255(wall, 0.8)
        for i, y in enumerate(range(0, hy, row)):
            draw.line([(0, y), (w, y)], fill=mortar, width=1)
            offset = (row if i % 2 else 0) + int(rng.integers(0, 2))
            for x in range(offset, w, 2 * row):
                draw.line([(x, y), (x, y + row)], fill=mortar, width=1)
    elif texture == "foliage":
        for _ in range(int(w * hy / 260)):
            cx, cy = rng.uniform(0, w), rng.uniform(-0.1 * hy, hy)
            r = rng.uniform(0.02, 0.08) * hy * 2
            color = _jitter(wall * rng.uniform(0.6, 1.3), rng, 0.15)
            draw.ellipse([cx - r, cy - r * 0.8, cx + r, cy + r * 0.8], fill=_rgb255(color))
        for _ in range(int(rng.integers(2, 6))):
            x = rng.uniform(0, w)
            tw = rng.uniform(0.01, 0.025) * w
            draw.rectangle([x, hy * rng.uniform(0.2, 0.6), x + tw, hy], fill=_rgb255((0.30, 0.22, 0.15)))
    elif texture == "storefront":
        x = 0
        while x < w:
            panel = int(rng.uniform(0.15, 0.4) * w)
            color = _jitter(camera.accents[int(rng.integers(len(camera.accents)))], rng, 0.15)
            top = int(hy * rng.uniform(0.05, 0.3))
            draw.rectangle([x + 2, top, x + panel - 2, hy], fill=_rgb255(color * 0.9))
            draw.rectangle([x + 4, top + 4, x + panel - 4, top + hy // 8], fill=_rgb255(color * 1.3))
            draw.rectangle([x + 6, top + hy // 6, x + panel - 6, hy - 2], fill=_rgb255(wall * 0.7 + 0.2))
            x += panel
    elif texture == "tiles":
        step = int(rng.integers(max(4, w // 40), max(5, w // 16)))
        line = _rgb255(wall, 0.88)
        for x in range(0, w, step):
            draw.line([(x, 0), (x, hy)], fill=line, width=1)
        for y in range(0, hy, step):
            draw.line([(0, y), (w, y)], fill=line, width=1)


def _draw_ground(
    draw: ImageDraw.ImageDraw, camera: CameraStyle, rng: np.random.Generator, w: int, h: int, hy: int
) -> None:
    ground = np.asarray(camera.ground)
    line = _rgb255(ground, 0.85)
    # Perspective lines: denser towards the horizon.
    y, step = float(hy), max(2.0, (h - hy) / 14)
    while y < h:
        draw.line([(0, int(y)), (w, int(y))], fill=line, width=1)
        y += step
        step *= 1.25
    if rng.random() < 0.5:
        vanish = rng.uniform(0.2, 0.8) * w
        for x in np.linspace(-w, 2 * w, int(rng.integers(6, 16))):
            draw.line([(vanish, hy), (x, h)], fill=line, width=1)


def _draw_clutter(
    draw: ImageDraw.ImageDraw, camera: CameraStyle, rng: np.random.Generator, w: int, h: int, hy: int
) -> None:
    for _ in range(int(camera.clutter * w / 40)):
        kind = rng.random()
        color = _rgb255(_jitter(camera.accents[int(rng.integers(len(camera.accents)))], rng, 0.15))
        x = rng.uniform(0, w)
        if kind < 0.4:  # pole
            pw = rng.uniform(0.004, 0.012) * w
            draw.rectangle(
                [x, hy * rng.uniform(0.0, 0.6), x + pw, hy + rng.uniform(0.05, 0.25) * (h - hy)], fill=color
            )
        elif kind < 0.7:  # sign or poster
            sw, sh = rng.uniform(0.02, 0.06) * w, rng.uniform(0.05, 0.15) * h
            y = hy * rng.uniform(0.2, 0.8)
            draw.rectangle([x, y, x + sw, y + sh], fill=color)
        else:  # bin, planter or bollard on the ground
            bw, bh = rng.uniform(0.015, 0.04) * w, rng.uniform(0.05, 0.12) * h
            y = hy + rng.uniform(0.0, 0.3) * (h - hy)
            draw.rectangle([x, y - bh, x + bw, y], fill=color)


def render_background(camera: CameraStyle, height: int, width: int) -> np.ndarray:
    """The scene of ``camera`` as a float32 ``(height, width, 3)`` array in [0, 1].

    Deterministic in ``camera.background_seed``. Infrared cameras get the scene's near-infrared
    look: intensity only, with vegetation bright (chlorophyll reflects NIR) and colours mapped
    to grey by something other than luminance.
    """
    rng = np.random.default_rng(camera.background_seed)
    hy = int(camera.horizon * height)
    image = Image.new("RGB", (width, height), _rgb255(camera.ground))
    draw = ImageDraw.Draw(image)
    # Wall band with a soft vertical gradient.
    wall = np.asarray(camera.wall)
    for y in range(0, hy, 4):
        draw.rectangle([0, y, width, y + 3], fill=_rgb255(wall * (1.05 - 0.15 * y / max(hy, 1))))
    _draw_wall(draw, camera, rng, width, hy)
    _draw_ground(draw, camera, rng, width, height, hy)
    _draw_clutter(draw, camera, rng, width, height, hy)
    image = image.filter(ImageFilter.GaussianBlur(radius=max(0.6, height / 256)))
    scene = np.asarray(image, dtype=np.float32) / 255.0
    # Scenery is duller than clothing: pull it halfway to grey and towards its mean.
    grey = scene @ np.array([0.299, 0.587, 0.114], np.float32)
    scene = grey[..., None] + _SCENE_SATURATION * (scene - grey[..., None])
    scene = scene.mean(axis=(0, 1)) + _SCENE_CONTRAST * (scene - scene.mean(axis=(0, 1)))
    if camera.modality == "infrared":
        r, g, b = scene[..., 0], scene[..., 1], scene[..., 2]
        lum = 0.299 * r + 0.587 * g + 0.114 * b
        ir = 0.12 + 0.45 * lum + 0.9 * np.clip(g - r, 0, None) + 0.35 * np.clip(r - b, 0, None)
        ir = np.clip(ir * rng.uniform(0.55, 0.8), 0.0, 1.0)
        scene = np.repeat(ir[..., None], 3, axis=2)
    return scene
