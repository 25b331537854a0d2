"""SynthPeds identities: real attributes plus the details no attribute names.

Each identity copies the attribute vector of a real Market-1501 identity drawn at random (so the
joint distribution of gender, age, clothing, colours and bags is the real one), then draws hidden
details no attribute names: body shape, skin and hair tone, the exact shade of every garment,
the clothing pattern, shoes, accessory colours and placement, and gait. Attribute-identical
identities therefore stay distinguishable, but only by these finer cues.

Clothes change (LTCC-style data) gives an identity several outfits: the body, hair and
accessories stay, the clothing attributes come from another real identity of the same gender.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .attributes import (
    CLOTHING_ATTRIBUTES,
    YES,
    load_market_attributes,
    lower_color_names,
    upper_color_names,
)
from .palette import (
    ACCESSORY_COLORS,
    HAT_COLORS,
    OTHER_LOWER_COLORS,
    OTHER_UPPER_COLORS,
    RGB,
    SHOE_COLORS,
    clamp,
    sample_hair,
    sample_ir_reflectance,
    sample_shade,
    sample_skin,
)
from .seeding import rng_for

PATTERNS = ("plain", "stripes", "check", "logo")
PATTERN_PROBS = (0.58, 0.17, 0.10, 0.15)
LOWER_KINDS = {(2, 1): "trousers", (2, 2): "shorts", (1, 1): "long_skirt", (1, 2): "short_skirt"}
"""(clothes code, down code) -> what is drawn below the waist."""


@dataclass(frozen=True)
class Garment:
    """One coloured item: its colour name, exact shade and near-infrared intensity."""

    name: str
    rgb: RGB
    ir: float


@dataclass(frozen=True)
class Outfit:
    """What an identity wears in one session.

    ``attributes`` holds only the clothing attributes (``CLOTHING_ATTRIBUTES``); the pattern,
    exact shades and shoes are hidden details.
    """

    attributes: dict[str, int]
    upper: Garment
    long_sleeves: bool
    pattern: str
    pattern_color: Garment
    pattern_period: float
    lower: Garment
    lower_kind: str
    shoes: Garment


@dataclass(frozen=True)
class Body:
    """Hidden body details (all relative to the person's height)."""

    build: float
    head: float
    leg: float
    skin: Garment
    hair: Garment
    long_hair: bool
    hair_length: float
    stride: float
    arm_swing: float
    lean: float


@dataclass(frozen=True)
class Accessories:
    """Carried or worn items; ``None`` where the identity has none."""

    hat: Garment | None
    backpack: Garment | None
    backpack_size: float
    bag: Garment | None
    bag_side: int
    bag_height: float
    handbag: Garment | None
    handbag_side: int


@dataclass(frozen=True)
class Identity:
    """A synthetic person: real attributes (``base_attributes`` + outfit) and hidden details."""

    uid: int
    source_pid: str
    base_attributes: dict[str, int]
    body: Body
    accessories: Accessories
    outfits: tuple[Outfit, ...]

    def attributes(self, outfit: int = 0) -> dict[str, int]:
        """The full 27-attribute dict of this identity wearing outfit ``outfit``."""
        return {**self.base_attributes, **self.outfits[outfit].attributes}


def _garment(name: str, rng: np.random.Generator) -> Garment:
    rgb = sample_shade(name, rng)
    return Garment(name=name, rgb=rgb, ir=sample_ir_reflectance(rgb, rng))


def _make_outfit(codes: dict[str, int], rng: np.random.Generator) -> Outfit:
    """An outfit with the clothing attributes ``codes`` and freshly drawn hidden details."""
    uppers = upper_color_names(codes) or [str(rng.choice(OTHER_UPPER_COLORS))]
    lowers = lower_color_names(codes) or [str(rng.choice(OTHER_LOWER_COLORS))]
    upper = _garment(uppers[0], rng)
    pattern = str(rng.choice(PATTERNS, p=PATTERN_PROBS))
    if len(uppers) > 1:
        pattern_name = uppers[1]
        pattern = pattern if pattern != "plain" else "stripes"
    else:
        contrast = ("white", "black", "gray", "red", "blue", "yellow", "navy")
        pattern_name = str(rng.choice([c for c in contrast if c != uppers[0]]))
    return Outfit(
        attributes={name: codes[name] for name in CLOTHING_ATTRIBUTES},
        upper=upper,
        long_sleeves=codes["up"] == 1,
        pattern=pattern,
        pattern_color=_garment(pattern_name, rng),
        pattern_period=float(rng.uniform(0.025, 0.06)),
        lower=_garment(lowers[0], rng),
        lower_kind=LOWER_KINDS[(codes["clothes"], codes["down"])],
        shoes=_garment(str(rng.choice(SHOE_COLORS)), rng),
    )


def _outfit_signature(outfit: Outfit) -> tuple:
    return (outfit.upper.name, outfit.lower.name, outfit.lower_kind, outfit.long_sleeves)


@functools.lru_cache(maxsize=2)
def _rows_of_gender(gender: int) -> tuple[dict[str, int], ...]:
    return tuple(row for _, row in load_market_attributes() if row["gender"] == gender)


def make_identity(seed: int, uid: int, num_outfits: int = 1) -> Identity:
    """Identity ``uid`` of run ``seed`` (deterministic; independent of every other identity).

    Args:
        seed: the run seed.
        uid: a globally unique identity number (layouts use disjoint ranges).
        num_outfits: outfits to draw; outfit 0 is the real identity's clothing, the others
            take the clothing attributes of other real identities of the same gender, and
            differ from every earlier outfit in colour or garment type.
    """
    if num_outfits < 1:
        raise ValueError(f"num_outfits must be >= 1, got {num_outfits}")
    rng = rng_for(seed, "identity", uid)
    table = load_market_attributes()
    source_pid, codes = table[int(rng.integers(len(table)))]
    base = {name: value for name, value in codes.items() if name not in CLOTHING_ATTRIBUTES}
    female = codes["gender"] == 2
    old = codes["age"] == 4
    young = codes["age"] == 1

    skin = sample_skin(rng)
    hair = sample_hair(rng, old)
    body = Body(
        build=float(rng.uniform(0.96, 1.18) if female else rng.uniform(1.06, 1.34))
        * (0.92 if young else 1.0),
        head=float(rng.uniform(0.92, 1.1)) * (1.12 if young else 1.0),
        leg=float(rng.uniform(0.43, 0.5)),
        skin=Garment("skin", skin, clamp(rng.normal(0.78, 0.06), 0.55, 0.95)),
        hair=Garment("hair", hair, clamp(rng.normal(0.3, 0.1), 0.08, 0.6)),
        long_hair=codes["hair"] == 2,
        hair_length=float(rng.uniform(0.22, 0.4)),
        stride=float(rng.uniform(0.5, 1.2)),
        arm_swing=float(rng.uniform(0.3, 1.0)),
        lean=float(rng.normal(0.0, 0.015)),
    )
    accessories = Accessories(
        hat=_garment(str(rng.choice(HAT_COLORS)), rng) if codes["hat"] == YES else None,
        backpack=_garment(str(rng.choice(ACCESSORY_COLORS)), rng) if codes["backpack"] == YES else None,
        backpack_size=float(rng.uniform(0.8, 1.2)),
        bag=_garment(str(rng.choice(ACCESSORY_COLORS)), rng) if codes["bag"] == YES else None,
        bag_side=int(rng.choice((-1, 1))),
        bag_height=float(rng.uniform(0.42, 0.56)),
        handbag=_garment(str(rng.choice(ACCESSORY_COLORS)), rng) if codes["handbag"] == YES else None,
        handbag_side=int(rng.choice((-1, 1))),
    )

    outfits = [_make_outfit(codes, rng)]
    same_gender = _rows_of_gender(codes["gender"]) if num_outfits > 1 else ()
    while len(outfits) < num_outfits:
        for _ in range(20):
            candidate = _make_outfit(same_gender[int(rng.integers(len(same_gender)))], rng)
            if all(_outfit_signature(candidate) != _outfit_signature(o) for o in outfits):
                break
        outfits.append(candidate)
    return Identity(
        uid=uid,
        source_pid=source_pid,
        base_attributes=base,
        body=body,
        accessories=accessories,
        outfits=tuple(outfits),
    )
