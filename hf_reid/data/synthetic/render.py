"""The procedural renderer: one pedestrian crop from an identity, an outfit and a camera.

Steps: crop the camera's scene; draw the figure as a label map at twice the output size (for
anti-aliasing); colour the labels (RGB, or near-infrared intensity for infrared cameras), add the
clothing pattern, body shading and fabric texture; add a ground shadow and, at the camera's rate,
an occluder; downsample; then apply the camera: sensor resolution, blur, saturation, white balance,
gain, gamma and noise. All randomness comes from the generator passed in, so an image is a pure
function of its inputs.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .backgrounds import render_background
from .cameras import VIEWPOINTS, CameraStyle, draw_viewpoint
from .figure import (
    BACKPACK,
    BAG,
    HAIR,
    HANDBAG,
    HAT,
    LOWER,
    NUM_LABELS,
    OCCLUDER,
    PATTERN,
    SHADOW,
    SHOES,
    SKIN,
    STRAP,
    UPPER,
    Placement,
    Pose,
    draw_figure,
)
from .identities import Garment, Identity
from .palette import sample_shade
from .seeding import rng_for

_SUPERSAMPLE = 2
_BANK = 512
_MASK_TABLE = [0] + [255] * 255
_PARTIAL_SHADE = 0.2
_PASSER_BY_COLORS = ("black", "white", "gray", "blue", "navy", "red", "beige", "green", "brown")


class PedestrianRenderer:
    """Renders SynthPeds crops of ``image_size`` (height, width) for run ``seed``.

    The renderer caches each camera's scene and a bank of smooth noise; both are deterministic in
    the seed, so renderers in different processes produce identical images.
    """

    def __init__(self, image_size: tuple[int, int] = (128, 64), seed: int = 0):
        height, width = image_size
        if height != 2 * width or height < 32:
            raise ValueError(
                f"image_size must be (height, width) with height = 2 * width >= 32, got {image_size}"
            )
        self.image_size = (int(height), int(width))
        self.canvas = (height * _SUPERSAMPLE, width * _SUPERSAMPLE)
        self.seed = seed
        self._scenes: dict[tuple[str, int, str], np.ndarray] = {}
        bank = rng_for(seed, "fabric-noise").standard_normal((_BANK // 4, _BANK // 4)).astype(np.float32)
        smooth = Image.fromarray(bank).resize((_BANK, _BANK), Image.Resampling.BILINEAR)
        self._fabric = np.asarray(smooth, dtype=np.float32)
        self._noise = rng_for(seed, "sensor-noise").standard_normal((_BANK, _BANK)).astype(np.float32)
        self._gammas: dict[float, np.ndarray] = {}

    def scene(self, camera: CameraStyle) -> np.ndarray:
        """The (cached) wide scene of ``camera`` at canvas height."""
        key = (camera.key, camera.background_seed, camera.modality)
        scene = self._scenes.get(key)
        if scene is None:
            h, w = self.canvas
            scene = (render_background(camera, h, 3 * w) * 255 + 0.5).astype(np.uint8)
            self._scenes[key] = scene
        return scene

    # -- figure -----------------------------------------------------------------------------------
    def _palette(
        self, ident: Identity, outfit_index: int, camera: CameraStyle, occluder: np.ndarray
    ) -> np.ndarray:
        outfit = ident.outfits[outfit_index]
        acc = ident.accessories
        infrared = camera.modality == "infrared"

        def value(g: Garment | None) -> np.ndarray:
            if g is None:
                return np.zeros(3, np.float32)
            return np.full(3, g.ir, np.float32) if infrared else np.asarray(g.rgb, np.float32)

        palette = np.zeros((NUM_LABELS, 3), np.float32)
        palette[SKIN] = value(ident.body.skin)
        palette[HAIR] = value(ident.body.hair)
        palette[UPPER] = value(outfit.upper)
        palette[PATTERN] = value(outfit.pattern_color)
        palette[LOWER] = value(outfit.lower)
        palette[SHOES] = value(outfit.shoes)
        palette[HAT] = value(acc.hat)
        palette[BACKPACK] = value(acc.backpack)
        palette[BAG] = value(acc.bag)
        palette[HANDBAG] = value(acc.handbag)
        palette[STRAP] = value(acc.bag) * 0.7
        palette[OCCLUDER] = occluder.mean() if infrared else occluder
        return palette

    def _pattern(self, labels: np.ndarray, ident: Identity, outfit_index: int, place: Placement) -> None:
        """Turn stripes or checks of the upper garment into the pattern label."""
        outfit = ident.outfits[outfit_index]
        if outfit.pattern not in ("stripes", "check"):
            return
        h, w = labels.shape
        period = max(3.0, outfit.pattern_period * place.height)
        if outfit.pattern == "check":
            rows = ((np.arange(h) - place.top) / period) % 1.0 < 0.2
            cols = ((np.arange(w) - place.cx) / period) % 1.0 < 0.2
            mask = rows[:, None] | cols[None, :]
        else:
            rows = ((np.arange(h) - place.top) / period) % 1.0 < 0.35
            mask = np.broadcast_to(rows[:, None], (h, w))
        labels[(labels == UPPER) & mask] = PATTERN

    def render(
        self,
        ident: Identity,
        camera: CameraStyle,
        rng: np.random.Generator,
        outfit: int = 0,
        junk: bool = False,
        view: str | None = None,
    ) -> Image.Image:
        """One crop of ``ident`` wearing ``outfit`` seen by ``camera``.

        Args:
            junk: render a bad detection (mostly background or a fragment of the person), as
                the ``-1`` junk images of Market-1501.
            view: "front", "back" or "side"; ``None`` draws one from the camera's viewpoint mix.

        Returns:
            An RGB image of ``image_size``; infrared cameras give a grey image (R = G = B).
        """
        hc, wc = self.canvas
        scene = self.scene(camera)
        x0 = int(rng.integers(0, scene.shape[1] - wc + 1))
        background = np.ascontiguousarray(scene[:, x0 : x0 + wc])

        if view is None:
            view = draw_viewpoint(camera, rng)
        elif view not in VIEWPOINTS:
            raise ValueError(f"view must be one of {VIEWPOINTS}, got {view!r}")
        pose = Pose(view=view, facing=int(rng.choice((-1, 1))), phase=float(rng.uniform(0, 2 * np.pi)))
        scale = float(rng.uniform(*camera.scale))
        height = scale * hc
        top = (hc - height) * float(rng.uniform(0.25, 0.75))
        cx = wc / 2 + float(rng.normal(0.0, 0.05)) * wc
        if junk:
            height *= float(rng.uniform(1.6, 2.6))
            top = -height * float(rng.uniform(0.0, 0.6))
            cx = wc * float(rng.choice((-0.35, 0.5, 1.35)))
        place = Placement(cx=cx, top=top, height=height)

        label_image = Image.new("L", (wc, hc), 0)
        draw = ImageDraw.Draw(label_image)
        foot = place.y(0.985)
        draw.ellipse(
            [cx - 0.16 * height, foot - 0.025 * height, cx + 0.16 * height, foot + 0.02 * height], fill=SHADOW
        )
        draw_figure(draw, ident, outfit, pose, place)
        occluder = self._occlude(draw, camera, rng)
        if ident.outfits[outfit].pattern in ("stripes", "check"):
            labels = np.array(label_image)
            self._pattern(labels, ident, outfit, place)
            label_image = Image.frombytes("L", (wc, hc), labels.tobytes())

        palette = self._palette(ident, outfit, camera, occluder)
        foot_row = int(np.clip(foot, 0, hc - 1))
        palette[SHADOW] = background[foot_row, :: max(1, wc // 16)].mean(axis=0) / 255.0 * 0.68
        lut = (np.clip(palette, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
        person = Image.frombytes("P", (wc, hc), label_image.tobytes())
        person.putpalette(lut.tobytes())
        person = person.convert("RGB")
        mask = label_image.point(_MASK_TABLE)
        canvas = Image.fromarray(background)
        canvas.paste(person, (0, 0), mask)
        canvas = canvas.reduce(_SUPERSAMPLE)
        cover = np.asarray(mask.reduce(_SUPERSAMPLE), dtype=np.float32) * (1.0 / 255.0)
        return self._camera(canvas, cover, camera, rng, cx / _SUPERSAMPLE, height / _SUPERSAMPLE)

    def _occlude(
        self, draw: ImageDraw.ImageDraw, camera: CameraStyle, rng: np.random.Generator
    ) -> np.ndarray:
        """Maybe draw an occluder (thing in front of the person); returns its colour."""
        hc, wc = self.canvas
        color = np.asarray(camera.accents[int(rng.integers(len(camera.accents)))], np.float32)
        color = np.clip(color * rng.uniform(0.7, 1.2), 0, 1)
        if rng.random() >= camera.occlusion:
            return color
        kind = rng.random()
        if kind < 0.45:  # car, bench, railing or counter at the bottom
            y = hc * rng.uniform(0.62, 0.85)
            x0, x1 = sorted(rng.uniform(-0.5, 1.5, 2) * wc)
            draw.rectangle([min(x0, 0.0), y, max(x1, wc), hc], fill=OCCLUDER)
        elif kind < 0.8:  # another pedestrian or a pillar at one side
            if rng.random() < 0.6:
                color = np.asarray(sample_shade(str(rng.choice(_PASSER_BY_COLORS)), rng), np.float32)
            width = wc * rng.uniform(0.2, 0.4)
            x = -width * 0.3 if rng.random() < 0.5 else wc - width * 0.7
            draw.rounded_rectangle(
                [x, hc * rng.uniform(-0.1, 0.3), x + width, hc * 1.1], radius=width / 3, fill=OCCLUDER
            )
        else:  # thin pole across the body
            width = wc * rng.uniform(0.06, 0.12)
            x = wc * rng.uniform(0.25, 0.75)
            draw.rectangle([x, 0, x + width, hc], fill=OCCLUDER)
        return color

    # -- camera -----------------------------------------------------------------------------------
    def _camera(
        self,
        canvas: Image.Image,
        cover: np.ndarray,
        camera: CameraStyle,
        rng: np.random.Generator,
        cx: float,
        height: float,
    ) -> Image.Image:
        """Body shading, then the camera: resolution, blur, colour, gain, gamma, noise."""
        h, w = self.image_size
        px = h / 128.0
        resolution = camera.resolution * float(rng.uniform(0.9, 1.1))
        if resolution > 1.05:
            small = (max(8, round(w / resolution)), max(16, round(h / resolution)))
            canvas = canvas.resize(small, Image.Resampling.BILINEAR).resize((w, h), Image.Resampling.BILINEAR)
        blur = camera.blur * px * float(rng.uniform(0.8, 1.2))
        if blur > 0.25:
            # A box filter with the variance of a Gaussian of sigma `blur` (3x cheaper).
            canvas = canvas.filter(
                ImageFilter.BoxBlur(radius=(float(np.sqrt(12.0 * blur * blur + 1.0)) - 1.0) / 2.0)
            )
        infrared = camera.modality == "infrared"
        x = np.asarray(canvas, dtype=np.float32)
        if infrared:
            x = x[..., :1]
        # Shading where the person is: a cylinder lit from the camera's side, brighter at the
        # top, with fabric texture (softened by the camera's blur).
        u = (np.arange(w, dtype=np.float32) + 0.5 - cx) / (0.16 * height)
        shade_x = np.clip(1.0 - 0.22 * u * u + 0.08 * camera.light * u, 0.6, 1.1)
        shade_y = np.linspace(1.06, 0.9, h, dtype=np.float32)
        oy, ox = int(rng.integers(0, _BANK - h)), int(rng.integers(0, _BANK - w))
        texture = (0.07 / (1.0 + blur)) * self._fabric[oy : oy + h, ox : ox + w]
        factor = 1.0 + cover * (shade_y[:, None] * shade_x[None, :] * (1.0 + texture) - 1.0)
        if rng.random() < _PARTIAL_SHADE:
            # A cast shadow (building, tree, awning) darkens one side of the crop.
            edge = (
                rng.uniform(0.2, 0.8) * w + rng.uniform(-1.0, 1.0) * 0.5 * w * np.linspace(-1, 1, h)[:, None]
            )
            ramp = np.clip((np.arange(w)[None, :] - edge) / (1.5 * px) + 0.5, 0.0, 1.0).astype(np.float32)
            side = ramp if rng.random() < 0.5 else 1.0 - ramp
            factor = factor * (1.0 - side * np.float32(rng.uniform(0.2, 0.45)))
        x = x * factor[..., None]
        # Colour: saturation, white balance and gain as one 3x3 matrix on 0..255 values.
        gain = camera.gain * float(rng.uniform(0.9, 1.1)) / 255.0
        if infrared:
            x = x * gain
        else:
            saturation = camera.saturation * float(rng.uniform(0.92, 1.08))
            warmth = camera.warmth + float(rng.normal(0.0, 0.05))
            tint = camera.tint + float(rng.normal(0.0, 0.03))
            luma = np.array([0.299, 0.587, 0.114], np.float32)
            mix = saturation * np.eye(3, dtype=np.float32) + (1.0 - saturation) * np.tile(luma, (3, 1))
            balance = np.array([1 + 0.2 * warmth, 1 + 0.12 * tint, 1 - 0.25 * warmth], np.float32)
            x = x @ (balance[:, None] * mix * gain).T
        levels = (np.clip(x, 0.0, 1.0) * 1023.0 + 0.5).astype(np.intp)
        x = self._gamma_lut(camera.gamma)[levels]
        channels = x.shape[2]
        oy, ox = int(rng.integers(0, _BANK - h)), int(rng.integers(0, _BANK - channels * w))
        x += self._noise[oy : oy + h, ox : ox + channels * w].reshape(h, w, channels) * (camera.noise * 255.0)
        out = (np.clip(x, 0.0, 255.0) + 0.5).astype(np.uint8)
        if infrared:
            return Image.fromarray(out[..., 0], mode="L").convert("RGB")
        return Image.fromarray(out, mode="RGB")

    def _gamma_lut(self, gamma: float) -> np.ndarray:
        key = round(gamma, 3)
        lut = self._gammas.get(key)
        if lut is None:
            lut = (np.linspace(0.0, 1.0, 1024, dtype=np.float32) ** key) * 255.0
            self._gammas[key] = lut
        return lut
