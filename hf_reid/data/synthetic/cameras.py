"""Camera and domain styles.

A *domain* is a distribution over camera styles (a site filmed by one operator's cameras): its
background palette and texture, illumination level, colour temperature and tint, saturation,
blur, sensor noise, sensor resolution, person scale, viewpoint mix and occlusion rate. A *camera*
is one concrete draw from that distribution; every image a camera takes jitters the camera's
values a little. Models trained on some domains and tested on another therefore meet a real
style shift, as between Market-1501, MSMT17 and CUHK03.

``DOMAIN_STYLES`` holds six hand-designed domains; domain ``k >= 6`` is a seeded perturbation of
domain ``k % 6``. SynthPeds holds out the last domain of a run (``synthpeds_d{K-1}``): its
styles appear in no other layout (see :mod:`hf_reid.data.synthetic.layouts`).

A *place* (:func:`place_style`) is a style distribution of its own, made for one camera of the
``diverse`` single-camera set: a designed style other than the held-out domain's, with every
photometric and scene range moved independently (web video from many places). :func:`style_distance`
measures how far a camera lies outside a style distribution; :func:`place_cameras` keeps only
places whose camera is at least :data:`HELD_OUT_MARGIN` away from the held-out domain's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .palette import RGB
from .seeding import int_seed, rng_for

Range = tuple[float, float]
VIEWPOINTS = ("front", "back", "side")
TEXTURES = ("windows", "bricks", "foliage", "storefront", "plain", "tiles")


@dataclass(frozen=True)
class DomainStyle:
    """The distribution a domain draws its cameras from (ranges are uniform bounds)."""

    name: str
    description: str
    walls: tuple[RGB, ...]
    grounds: tuple[RGB, ...]
    accents: tuple[RGB, ...]
    textures: tuple[str, ...]
    clutter: Range
    horizon: Range
    gain: Range
    gamma: Range
    warmth: Range
    tint: Range
    saturation: Range
    blur: Range
    noise: Range
    resolution: Range
    scale: Range
    occlusion: float
    view_prior: tuple[float, float, float]
    indoor: bool


@dataclass(frozen=True)
class CameraStyle:
    """One camera: a draw from a domain's :class:`DomainStyle`.

    ``blur`` is a Gaussian sigma in pixels of a 128-pixel-high crop (it scales with the crop);
    ``noise`` is the standard deviation of sensor noise on a 0..1 intensity scale;
    ``resolution`` is the sensor's downscale factor (1 = sharp); ``scale`` bounds the person's
    height as a fraction of the crop.
    """

    key: str
    style_domain: int
    modality: str
    background_seed: int
    wall: RGB
    ground: RGB
    accents: tuple[RGB, ...]
    texture: str
    clutter: float
    horizon: float
    gain: float
    gamma: float
    warmth: float
    tint: float
    saturation: float
    blur: float
    noise: float
    resolution: float
    scale: Range
    occlusion: float
    viewpoints: tuple[float, float, float]
    light: float


DOMAIN_STYLES: tuple[DomainStyle, ...] = (
    DomainStyle(
        name="campus",
        description="daylight campus: concrete and glass, neutral white balance, sharp",
        walls=((0.70, 0.70, 0.68), (0.78, 0.72, 0.60), (0.50, 0.58, 0.64), (0.62, 0.60, 0.58)),
        grounds=((0.55, 0.55, 0.53), (0.60, 0.42, 0.36), (0.48, 0.49, 0.50)),
        accents=((0.20, 0.35, 0.25), (0.75, 0.75, 0.78), (0.30, 0.30, 0.32), (0.55, 0.20, 0.18)),
        textures=("windows", "tiles", "bricks"),
        clutter=(0.3, 0.7),
        horizon=(0.50, 0.70),
        gain=(0.95, 1.12),
        gamma=(0.95, 1.05),
        warmth=(-0.25, 0.25),
        tint=(-0.10, 0.10),
        saturation=(0.85, 1.15),
        blur=(0.3, 0.8),
        noise=(0.008, 0.025),
        resolution=(1.0, 1.3),
        scale=(0.82, 0.97),
        occlusion=0.08,
        view_prior=(1.0, 1.0, 1.0),
        indoor=False,
    ),
    DomainStyle(
        name="park",
        description="park in warm afternoon light: foliage, dirt paths, saturated and bright",
        walls=((0.30, 0.45, 0.25), (0.40, 0.50, 0.30), (0.25, 0.36, 0.22), (0.55, 0.60, 0.45)),
        grounds=((0.50, 0.44, 0.34), (0.35, 0.50, 0.28), (0.58, 0.52, 0.42)),
        accents=((0.35, 0.25, 0.15), (0.20, 0.30, 0.15), (0.70, 0.65, 0.40), (0.45, 0.35, 0.25)),
        textures=("foliage", "foliage", "plain"),
        clutter=(0.3, 0.7),
        horizon=(0.45, 0.65),
        gain=(1.05, 1.25),
        gamma=(0.9, 1.0),
        warmth=(0.25, 0.60),
        tint=(-0.05, 0.08),
        saturation=(1.00, 1.25),
        blur=(0.5, 1.2),
        noise=(0.008, 0.03),
        resolution=(1.0, 1.5),
        scale=(0.78, 0.96),
        occlusion=0.15,
        view_prior=(1.0, 1.0, 2.0),
        indoor=False,
    ),
    DomainStyle(
        name="mall",
        description="indoor mall under fluorescent light: cream walls, shop fronts, greenish tint",
        walls=((0.85, 0.82, 0.72), (0.80, 0.78, 0.76), (0.70, 0.66, 0.58)),
        grounds=((0.75, 0.73, 0.70), (0.62, 0.58, 0.52), (0.80, 0.80, 0.82)),
        accents=((0.70, 0.30, 0.30), (0.30, 0.40, 0.70), (0.85, 0.70, 0.25), (0.25, 0.55, 0.45)),
        textures=("storefront", "tiles", "plain"),
        clutter=(0.3, 0.7),
        horizon=(0.55, 0.75),
        gain=(0.85, 1.05),
        gamma=(1.0, 1.1),
        warmth=(-0.10, 0.10),
        tint=(0.10, 0.30),
        saturation=(0.75, 0.95),
        blur=(0.4, 1.0),
        noise=(0.015, 0.04),
        resolution=(1.2, 1.8),
        scale=(0.76, 0.94),
        occlusion=0.25,
        view_prior=(2.0, 1.0, 1.0),
        indoor=True,
    ),
    DomainStyle(
        name="dusk",
        description="street at dusk: dark, cool blue light, lit windows, noisy and soft",
        walls=((0.30, 0.32, 0.40), (0.22, 0.24, 0.30), (0.40, 0.38, 0.42)),
        grounds=((0.25, 0.25, 0.28), (0.30, 0.29, 0.30), (0.20, 0.22, 0.26)),
        accents=((0.85, 0.72, 0.40), (0.90, 0.85, 0.60), (0.15, 0.15, 0.18), (0.60, 0.20, 0.20)),
        textures=("windows", "bricks", "plain"),
        clutter=(0.3, 0.8),
        horizon=(0.50, 0.70),
        gain=(0.50, 0.72),
        gamma=(1.1, 1.3),
        warmth=(-0.55, -0.25),
        tint=(-0.10, 0.05),
        saturation=(0.55, 0.80),
        blur=(0.8, 1.6),
        noise=(0.035, 0.07),
        resolution=(1.5, 2.4),
        scale=(0.80, 0.98),
        occlusion=0.15,
        view_prior=(1.0, 2.0, 1.0),
        indoor=False,
    ),
    DomainStyle(
        name="station",
        description="station CCTV: washed-out colour, high contrast, low resolution, side views",
        walls=((0.60, 0.62, 0.58), (0.52, 0.55, 0.56), (0.70, 0.70, 0.66)),
        grounds=((0.50, 0.50, 0.47), (0.42, 0.42, 0.40)),
        accents=((0.80, 0.75, 0.20), (0.20, 0.25, 0.50), (0.85, 0.85, 0.85), (0.35, 0.30, 0.28)),
        textures=("tiles", "plain", "storefront"),
        clutter=(0.4, 0.9),
        horizon=(0.55, 0.75),
        gain=(0.90, 1.10),
        gamma=(0.80, 0.95),
        warmth=(-0.05, 0.10),
        tint=(0.10, 0.25),
        saturation=(0.35, 0.60),
        blur=(0.5, 1.0),
        noise=(0.03, 0.06),
        resolution=(1.8, 2.6),
        scale=(0.78, 0.96),
        occlusion=0.20,
        view_prior=(0.7, 0.7, 2.5),
        indoor=True,
    ),
    DomainStyle(
        name="overcast",
        description="overcast winter plaza: pale surroundings, cold light, over-exposed",
        walls=((0.85, 0.87, 0.90), (0.75, 0.78, 0.82), (0.66, 0.68, 0.72)),
        grounds=((0.90, 0.90, 0.92), (0.78, 0.79, 0.80)),
        accents=((0.25, 0.25, 0.28), (0.55, 0.15, 0.15), (0.40, 0.45, 0.50), (0.20, 0.30, 0.20)),
        textures=("plain", "windows", "bricks"),
        clutter=(0.2, 0.6),
        horizon=(0.45, 0.65),
        gain=(1.15, 1.35),
        gamma=(0.9, 1.0),
        warmth=(-0.35, -0.10),
        tint=(-0.05, 0.05),
        saturation=(0.70, 0.90),
        blur=(0.3, 0.8),
        noise=(0.008, 0.025),
        resolution=(1.0, 1.4),
        scale=(0.85, 0.98),
        occlusion=0.05,
        view_prior=(1.0, 1.0, 1.0),
        indoor=False,
    ),
)


def domain_style(index: int) -> DomainStyle:
    """The style distribution of domain ``index`` (a perturbed copy beyond the six designed)."""
    if index < 0:
        raise ValueError(f"domain index must be >= 0, got {index}")
    base = DOMAIN_STYLES[index % len(DOMAIN_STYLES)]
    if index < len(DOMAIN_STYLES):
        return base
    rng = rng_for(0, "domain-variant", index)

    def shift(r: Range, amount: float) -> Range:
        d = rng.uniform(-amount, amount) * (r[1] - r[0] + 0.1)
        return (r[0] + d, r[1] + d)

    def recolor(colors: tuple[RGB, ...]) -> tuple[RGB, ...]:
        return tuple(tuple(float(np.clip(c + rng.normal(0, 0.08), 0, 1)) for c in rgb) for rgb in colors)

    return replace(
        base,
        name=f"{base.name}-{index // len(DOMAIN_STYLES)}",
        walls=recolor(base.walls),
        grounds=recolor(base.grounds),
        warmth=shift(base.warmth, 0.5),
        tint=shift(base.tint, 0.5),
        gain=shift(base.gain, 0.3),
    )


def _uniform(rng: np.random.Generator, r: Range) -> float:
    return float(rng.uniform(r[0], r[1]))


def _pick(rng: np.random.Generator, items: tuple) -> object:
    return items[int(rng.integers(len(items)))]


def sample_camera(
    seed: int, key: str, style_domain: int, modality: str = "visible", style: DomainStyle | None = None
) -> CameraStyle:
    """Draw camera ``key`` from the style of domain ``style_domain`` (deterministic per seed and key).

    ``modality="infrared"`` draws an IR camera: it renders near-infrared intensity, with its own
    gain, contrast and noise, on the same site as the domain's visible cameras.
    """
    if modality not in ("visible", "infrared"):
        raise ValueError(f"camera {key}: modality must be 'visible' or 'infrared', got {modality!r}")
    style = style or domain_style(style_domain)
    rng = rng_for(seed, "camera", key)
    prior = np.asarray(style.view_prior) * 1.2
    views = 0.15 / 3 + 0.85 * rng.dirichlet(prior)
    center = _uniform(rng, style.scale)
    half = 0.04
    camera = CameraStyle(
        key=key,
        style_domain=style_domain,
        modality=modality,
        background_seed=int_seed(seed, "background", key),
        wall=_pick(rng, style.walls),
        ground=_pick(rng, style.grounds),
        accents=style.accents,
        texture=str(_pick(rng, style.textures)),
        clutter=_uniform(rng, style.clutter),
        horizon=_uniform(rng, style.horizon),
        gain=_uniform(rng, style.gain),
        gamma=_uniform(rng, style.gamma),
        warmth=_uniform(rng, style.warmth),
        tint=_uniform(rng, style.tint),
        saturation=_uniform(rng, style.saturation),
        blur=_uniform(rng, style.blur),
        noise=_uniform(rng, style.noise),
        resolution=_uniform(rng, style.resolution),
        scale=(max(0.6, center - half), min(1.0, center + half)),
        occlusion=style.occlusion,
        viewpoints=tuple(float(v) for v in views / views.sum()),
        light=float(rng.uniform(-1.0, 1.0)),
    )
    if modality == "infrared":
        camera = replace(
            camera,
            gain=float(rng.uniform(0.85, 1.15)),
            gamma=float(rng.uniform(0.8, 1.1)),
            warmth=0.0,
            tint=0.0,
            saturation=0.0,
            noise=float(rng.uniform(0.03, 0.06)),
            blur=float(rng.uniform(0.6, 1.3)),
        )
    return camera


def draw_viewpoint(camera: CameraStyle, rng: np.random.Generator) -> str:
    """A viewpoint ("front", "back" or "side") drawn from the camera's viewpoint mix."""
    u = rng.random()
    front, back, _ = camera.viewpoints
    return VIEWPOINTS[0] if u < front else VIEWPOINTS[1] if u < front + back else VIEWPOINTS[2]


def camera_keys(dataset: str, num_cameras: int) -> list[str]:
    """Stable camera keys ``"<dataset>/c<k>"`` (1-based, like the file names)."""
    return [f"{dataset}/c{k}" for k in range(1, num_cameras + 1)]


def domain_cameras(seed: int, dataset: str, style_domain: int, num_cameras: int) -> list[CameraStyle]:
    """All visible cameras of a Market-style domain folder, drawn from one domain's style."""
    return [sample_camera(seed, key, style_domain) for key in camera_keys(dataset, num_cameras)]


def mixture_cameras(
    seed: int, dataset: str, style_domains: list[int], num_cameras: int, modalities: list[str] | None = None
) -> list[CameraStyle]:
    """Cameras each drawn from one of ``style_domains`` (chosen per camera, seeded).

    Used for the layouts that must not show the held-out domain's style (LTCC, SYSU-MM01,
    MLR-CUHK03, the captioned and pretraining sets).
    """
    if not style_domains:
        raise ValueError(f"{dataset}: need at least one source domain to draw camera styles from")
    modalities = modalities or ["visible"] * num_cameras
    cameras = []
    for key, modality in zip(camera_keys(dataset, num_cameras), modalities):
        rng = rng_for(seed, "camera-domain", key)
        cameras.append(sample_camera(seed, key, int(_pick(rng, tuple(style_domains))), modality))
    return cameras


# ------------------------------------------------------------------------------------------------
# Places: the broad style prior of the ``diverse`` single-camera set
# ------------------------------------------------------------------------------------------------
STYLE_DIMENSIONS: tuple[str, ...] = (
    "gain",
    "gamma",
    "warmth",
    "tint",
    "saturation",
    "blur",
    "noise",
    "resolution",
)
"""The photometric and sensor parameters of a camera that :func:`style_distance` compares."""

PLACE_SHIFT = 0.6
"""Each range of a place moves by up to ``PLACE_SHIFT`` x (its width + 0.1 x the designed styles'
span of that parameter), independently per parameter (``domain_style``'s variants move only
colours, warmth, tint and gain)."""

PLACE_BOUNDS: dict[str, Range] = {
    "gain": (0.40, 1.45),
    "gamma": (0.70, 1.40),
    "warmth": (-0.70, 0.70),
    "tint": (-0.20, 0.40),
    "saturation": (0.25, 1.35),
    "blur": (0.20, 2.00),
    "noise": (0.005, 0.08),
    "resolution": (1.00, 2.80),
    "scale": (0.70, 1.00),
    "clutter": (0.10, 0.95),
    "horizon": (0.40, 0.80),
}
"""How far a moved range may go (a shift that would leave them stops at the bound), so every place
renders plausibly; every designed range lies inside them."""

HELD_OUT_MARGIN = 0.15
"""The smallest :func:`style_distance` a ``diverse`` camera keeps from the held-out domain's
style distribution (in the default preset, the source domains' cameras lie 0.4 or more from the
held-out dusk style, median 0.73; the places, median 0.8)."""

MAX_PLACE_DRAWS = 100


def _designed_span(name: str) -> float:
    """How far the six designed styles' ranges of parameter ``name`` reach, together."""
    return max(getattr(s, name)[1] for s in DOMAIN_STYLES) - min(getattr(s, name)[0] for s in DOMAIN_STYLES)


STYLE_SPREAD: dict[str, float] = {name: _designed_span(name) for name in STYLE_DIMENSIONS}
"""The unit of :func:`style_distance` per parameter: how far the designed styles reach."""


def style_distance(camera: CameraStyle | dict, style: DomainStyle) -> float:
    """How far ``camera`` lies outside the style distribution ``style``: the Euclidean norm of its
    excess beyond each range of :data:`STYLE_DIMENSIONS`, each in units of :data:`STYLE_SPREAD`.

    0 for every camera drawn from ``style`` (:func:`sample_camera` draws each parameter inside its
    range); ``camera`` may be a :class:`CameraStyle` or a dict with those keys (a meta record).
    """
    total = 0.0
    for name in STYLE_DIMENSIONS:
        value = camera[name] if isinstance(camera, dict) else getattr(camera, name)
        lo, hi = getattr(style, name)
        excess = max(lo - value, value - hi, 0.0)
        total += (excess / STYLE_SPREAD[name]) ** 2
    return float(np.sqrt(total))


def place_bases(held_out: int) -> tuple[int, ...]:
    """The designed styles a place may start from: all six but the held-out domain's
    (``held_out % 6``: a held-out perturbed variant excludes its whole family)."""
    return tuple(k for k in range(len(DOMAIN_STYLES)) if k != held_out % len(DOMAIN_STYLES))


def place_style(seed: int, key: str, base: int, draw: int = 0) -> DomainStyle:
    """The style distribution of the place camera ``key`` films: designed style ``base`` with every
    range moved independently (:data:`PLACE_SHIFT`, clipped to :data:`PLACE_BOUNDS`), its colours
    redrawn around the base's, three of the six textures, its viewpoint mix and occlusion rate
    rescaled. Deterministic in ``(seed, key, draw)``."""
    style = DOMAIN_STYLES[base]
    rng = rng_for(seed, "place", key, draw)

    def move(name: str) -> Range:
        lo, hi = getattr(style, name)
        d = rng.uniform(-PLACE_SHIFT, PLACE_SHIFT) * (hi - lo + 0.1 * _designed_span(name))
        bound_lo, bound_hi = PLACE_BOUNDS[name]
        d = float(np.clip(d, bound_lo - lo, bound_hi - hi))  # the moved range stays inside the bounds
        return (lo + d, hi + d)

    def recolor(colors: tuple[RGB, ...]) -> tuple[RGB, ...]:
        return tuple(tuple(float(np.clip(c + rng.normal(0, 0.1), 0, 1)) for c in rgb) for rgb in colors)

    moved = {name: move(name) for name in (*STYLE_DIMENSIONS, "scale", "clutter", "horizon")}
    textures = tuple(str(t) for t in rng.choice(TEXTURES, size=3, replace=False))
    views = np.asarray(style.view_prior) * np.exp(rng.normal(0.0, 0.5, size=3))
    return replace(
        style,
        name=f"{style.name} place {key}",
        description=f"{style.name} moved: one place of the diverse single-camera set",
        walls=recolor(style.walls),
        grounds=recolor(style.grounds),
        accents=recolor(style.accents),
        textures=textures,
        occlusion=round(float(np.clip(style.occlusion * rng.uniform(0.5, 1.5), 0.02, 0.30)), 4),
        view_prior=tuple(float(v) for v in views),
        **moved,
    )


def place_cameras(
    seed: int, keys: list[str], held_out: int
) -> tuple[list[CameraStyle], dict[str, DomainStyle]]:
    """One camera per key, each filming a place of its own (:func:`place_style`): the base style
    drawn uniformly from :func:`place_bases`, the place redrawn (at most :data:`MAX_PLACE_DRAWS`
    times) until its camera lies at least :data:`HELD_OUT_MARGIN` from the held-out domain's style
    distribution. Returns the cameras and each key's place."""
    bases = place_bases(held_out)
    held_out_style = domain_style(held_out)
    cameras, places = [], {}
    for key in keys:
        base = int(_pick(rng_for(seed, "place-base", key), bases))
        for draw in range(MAX_PLACE_DRAWS):
            place = place_style(seed, key, base, draw)
            camera = sample_camera(seed, key, base, style=place)
            if style_distance(camera, held_out_style) >= HELD_OUT_MARGIN:
                break
        else:  # pragma: no cover - the margin is far below the typical distance
            raise RuntimeError(
                f"{key}: no place at {HELD_OUT_MARGIN} from {held_out_style.name} in {MAX_PLACE_DRAWS} draws"
            )
        cameras.append(camera)
        places[key] = place
    return cameras, places
