"""The pedestrian figure: body parts drawn as a label map, one label per material.

The figure is drawn in person-relative coordinates (height 1, x = 0 at the body axis) and mapped
to pixels by a :class:`Placement`. Each pixel gets the label of the material on top (skin, hair,
upper and lower garment, shoes, hat, backpack, bag, handbag); :mod:`.render` colours the labels.
Viewpoint decides what is visible: the face and backpack straps from the front, the hair and
the whole backpack from behind, a profile with the bag at the side and a long stride from the
side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import ImageDraw

from .identities import Identity, Outfit

BACKGROUND, SKIN, HAIR, UPPER, PATTERN, LOWER, SHOES, HAT, BACKPACK, BAG, HANDBAG, STRAP, OCCLUDER, SHADOW = (
    range(14)
)
NUM_LABELS = 14
PERSON_LABELS = (SKIN, HAIR, UPPER, PATTERN, LOWER, SHOES, HAT, BACKPACK, BAG, HANDBAG, STRAP)


@dataclass(frozen=True)
class Placement:
    """Where the figure stands in the canvas: body axis ``cx``, head top ``top``, ``height`` in pixels."""

    cx: float
    top: float
    height: float

    def x(self, u: float) -> float:
        return self.cx + u * self.height

    def y(self, v: float) -> float:
        return self.top + v * self.height

    def pt(self, u: float, v: float) -> tuple[float, float]:
        return (self.cx + u * self.height, self.top + v * self.height)


@dataclass(frozen=True)
class Pose:
    """Per-image pose: viewpoint, walking direction (side view), gait phase."""

    view: str
    facing: int
    phase: float


class _Pen:
    """Draws labelled primitives in person coordinates."""

    def __init__(self, draw: ImageDraw.ImageDraw, place: Placement, mirror: int = 1):
        self.draw, self.p, self.m = draw, place, mirror

    def poly(self, points: list[tuple[float, float]], label: int) -> None:
        self.draw.polygon([self.p.pt(self.m * u, v) for u, v in points], fill=label)

    def ellipse(self, u: float, v: float, ru: float, rv: float, label: int) -> None:
        x0, y0 = self.p.pt(self.m * u - ru, v - rv)
        x1, y1 = self.p.pt(self.m * u + ru, v + rv)
        self.draw.ellipse([min(x0, x1), y0, max(x0, x1), y1], fill=label)

    def limb(self, a: tuple[float, float], b: tuple[float, float], wa: float, wb: float, label: int) -> None:
        """A tapered segment from ``a`` (width ``wa``) to ``b`` (width ``wb``) with a round joint at ``a``."""
        du, dv = b[0] - a[0], b[1] - a[1]
        n = math.hypot(du, dv) or 1.0
        nu, nv = -dv / n, du / n
        self.poly(
            [
                (a[0] + nu * wa / 2, a[1] + nv * wa / 2),
                (b[0] + nu * wb / 2, b[1] + nv * wb / 2),
                (b[0] - nu * wb / 2, b[1] - nv * wb / 2),
                (a[0] - nu * wa / 2, a[1] - nv * wa / 2),
            ],
            label,
        )
        self.ellipse(a[0], a[1], wa / 2, wa / 2, label)

    def line(self, a: tuple[float, float], b: tuple[float, float], width: float, label: int) -> None:
        self.limb(a, b, width, width, label)


def _legs(pen: _Pen, ident: Identity, outfit: Outfit, pose: Pose, side: bool) -> None:
    body = ident.body
    hip_y = 1.0 - body.leg - 0.04
    knee_y = hip_y + (0.96 - hip_y) * 0.48
    s = body.stride * math.sin(pose.phase)
    hw = 0.052 * body.build
    cover_to = {"trousers": 1.0, "shorts": 0.42, "long_skirt": 0.0, "short_skirt": 0.0}[outfit.lower_kind]
    for sign in (-1, 1):
        if side:
            foot_u = sign * 0.11 * s
            hip = (sign * 0.01, hip_y)
            knee = (foot_u * 0.45 + 0.015 * (1 + sign * s) / 2, knee_y)
            ankle = (foot_u, 0.955 - 0.02 * max(0.0, -sign * s))
        else:
            hip = (sign * hw, hip_y)
            knee = (sign * hw * 0.95, knee_y)
            ankle = (sign * hw * 0.9, 0.955 - 0.025 * max(0.0, sign * s))
        wa, wk, wf = 0.095 * body.build, 0.064 * body.build, 0.048 * body.build
        pen.limb(hip, knee, wa, wk, SKIN)
        pen.limb(knee, ankle, wk, wf, SKIN)
        if cover_to >= 1.0:
            pen.limb(hip, knee, wa + 0.008, wk + 0.008, LOWER)
            pen.limb(knee, ankle, wk + 0.008, wf + 0.01, LOWER)
        elif cover_to > 0.0:
            mid = (hip[0] + (knee[0] - hip[0]) * cover_to * 2, hip[1] + (knee[1] - hip[1]) * cover_to * 2)
            pen.limb(hip, mid, wa + 0.012, wa * 0.85 + 0.012, LOWER)
        foot_dir = pose.facing * 0.025 if side else 0.0
        pen.ellipse(ankle[0] + foot_dir, 0.975, 0.034 + abs(foot_dir), 0.022, SHOES)
    # Pelvis: joins the legs under the garment's waistband.
    top, bottom = (0.055 * body.build, 0.05) if side else (hw * 1.6, hw * 1.7)
    pen.poly(
        [(-top, hip_y - 0.06), (top, hip_y - 0.06), (bottom, hip_y + 0.035), (-bottom, hip_y + 0.035)], LOWER
    )


def _skirt(pen: _Pen, ident: Identity, outfit: Outfit) -> None:
    body = ident.body
    hip_y = 1.0 - body.leg - 0.04
    bottom = 0.86 if outfit.lower_kind == "long_skirt" else hip_y + 0.17
    top_w, bot_w = 0.098 * body.build, (0.165 if outfit.lower_kind == "long_skirt" else 0.145) * body.build
    pen.poly([(-top_w, hip_y - 0.07), (top_w, hip_y - 0.07), (bot_w, bottom), (-bot_w, bottom)], LOWER)


def _arm(
    pen: _Pen, ident: Identity, outfit: Outfit, shoulder: tuple[float, float], swing: float
) -> tuple[float, float]:
    body = ident.body
    elbow = (shoulder[0] + swing * 0.5, shoulder[1] + 0.16)
    wrist = (shoulder[0] + swing, shoulder[1] + 0.32)
    w0, w1, w2 = 0.056 * body.build, 0.046 * body.build, 0.036 * body.build
    upper_arm = UPPER if outfit.long_sleeves else SKIN
    pen.limb(shoulder, elbow, w0, w1, upper_arm)
    pen.limb(elbow, wrist, w1, w2, UPPER if outfit.long_sleeves else SKIN)
    if not outfit.long_sleeves:
        sleeve_end = (shoulder[0] + swing * 0.22, shoulder[1] + 0.075)
        pen.limb(shoulder, sleeve_end, w0 + 0.014, w0 + 0.01, UPPER)
    pen.ellipse(wrist[0], wrist[1] + 0.018, 0.02, 0.025, SKIN)
    return wrist


def _head(pen: _Pen, ident: Identity, pose: Pose, top_offset: float) -> None:
    body = ident.body
    r_u, r_v = 0.047 * body.head, 0.064 * body.head
    cy = top_offset + r_v
    pen.line((0.0, cy + r_v * 0.6), (0.0, cy + r_v + 0.04), 0.035 * body.build, SKIN)  # neck
    f = pose.facing
    if pose.view == "back":
        pen.ellipse(0.0, cy, r_u * 1.05, r_v * 1.02, HAIR)
    elif pose.view == "front":
        pen.ellipse(0.0, cy - 0.008, r_u * 1.08, r_v * 1.0, HAIR)
        pen.ellipse(0.0, cy + 0.012, r_u * 0.9, r_v * 0.86, SKIN)
    else:
        pen.ellipse(0.0, cy, r_u, r_v, SKIN)
        pen.ellipse(-f * 0.012, cy - 0.01, r_u * 0.95, r_v * 0.92, HAIR)
        pen.ellipse(f * 0.014, cy + 0.014, r_u * 0.72, r_v * 0.78, SKIN)
    hat = ident.accessories.hat
    if hat is not None:
        pen.poly(
            [
                (-r_u * 1.1, cy - r_v * 0.25),
                (r_u * 1.1, cy - r_v * 0.25),
                (r_u * 0.9, cy - r_v * 1.1),
                (-r_u * 0.9, cy - r_v * 1.1),
            ],
            HAT,
        )
        if pose.view == "side":
            pen.poly(
                [
                    (0.0, cy - r_v * 0.32),
                    (f * r_u * 1.9, cy - r_v * 0.28),
                    (f * r_u * 1.9, cy - r_v * 0.18),
                    (0.0, cy - r_v * 0.18),
                ],
                HAT,
            )
        elif pose.view == "front":
            pen.ellipse(0.0, cy - r_v * 0.3, r_u * 1.15, r_v * 0.14, HAT)


def _long_hair(pen: _Pen, ident: Identity, pose: Pose, top_offset: float, behind: bool) -> None:
    body = ident.body
    r_u, r_v = 0.047 * body.head, 0.064 * body.head
    cy = top_offset + r_v
    bottom = cy + body.hair_length
    if pose.view == "back" and not behind:
        pen.poly([(-r_u * 1.1, cy), (r_u * 1.1, cy), (r_u * 1.2, bottom), (-r_u * 1.2, bottom)], HAIR)
        pen.ellipse(0.0, bottom, r_u * 1.2, 0.02, HAIR)
    elif pose.view == "front" and behind:
        pen.poly(
            [(-r_u * 1.25, cy), (r_u * 1.25, cy), (r_u * 1.35, bottom - 0.04), (-r_u * 1.35, bottom - 0.04)],
            HAIR,
        )
    elif pose.view == "front":
        for s in (-1, 1):
            pen.poly(
                [
                    (s * r_u * 0.8, cy - 0.01),
                    (s * r_u * 1.15, cy - 0.01),
                    (s * r_u * 1.3, cy + body.hair_length * 0.55),
                    (s * r_u * 0.95, cy + body.hair_length * 0.55),
                ],
                HAIR,
            )
    elif pose.view == "side" and not behind:
        f = pose.facing
        pen.poly(
            [
                (-f * r_u * 1.0, cy - 0.01),
                (f * r_u * 0.1, cy - 0.01),
                (-f * r_u * 0.2, bottom),
                (-f * r_u * 1.2, bottom),
            ],
            HAIR,
        )


def draw_figure(
    draw: ImageDraw.ImageDraw, ident: Identity, outfit_index: int, pose: Pose, place: Placement
) -> None:
    """Draw identity ``ident`` wearing outfit ``outfit_index`` in ``pose`` at ``place`` into a label image."""
    outfit = ident.outfits[outfit_index]
    acc = ident.accessories
    body = ident.body
    side = pose.view == "side"
    # Seen from behind, the person's left is on the image's left: mirror lateral placements.
    mirror = -1 if pose.view == "back" else 1
    pen = _Pen(draw, place)
    lat = _Pen(draw, place, mirror)
    top = 0.0
    shoulder_y = top + 0.128 * body.head + 0.04
    hip_y = 1.0 - body.leg - 0.04
    sw = (0.125 if not side else 0.07) * body.build
    ww = (0.098 if not side else 0.066) * body.build
    lean = body.lean + (pose.facing * 0.015 if side else 0.0)
    swing = body.arm_swing * math.sin(pose.phase)

    # Items behind the body.
    if side and acc.backpack is None and acc.bag is not None and acc.bag_side != pose.facing:
        pen.poly(_bag_points(pose.facing * 0.02, acc.bag_height, 0.07), BAG)
    if pose.view == "front" and body.long_hair:
        _long_hair(pen, ident, pose, top, behind=True)
    if side and acc.handbag is not None and acc.handbag_side != pose.facing:
        _handbag(pen, (-0.07 * swing, shoulder_y + 0.33))

    # Legs and lower garment.
    if outfit.lower_kind in ("long_skirt", "short_skirt"):
        _legs(pen, ident, outfit, pose, side)
        _skirt(pen, ident, outfit)
    else:
        _legs(pen, ident, outfit, pose, side)

    # Torso (upper garment).
    pen.poly(
        [(-sw + lean, shoulder_y), (sw + lean, shoulder_y), (ww, hip_y + 0.02), (-ww, hip_y + 0.02)], UPPER
    )
    pen.ellipse(-sw + 0.02 + lean, shoulder_y + 0.025, 0.03, 0.028, UPPER)
    pen.ellipse(sw - 0.02 + lean, shoulder_y + 0.025, 0.03, 0.028, UPPER)
    if outfit.pattern == "logo" and pose.view == "front":
        pen.poly(
            [
                (-0.035, shoulder_y + 0.06),
                (0.035, shoulder_y + 0.06),
                (0.035, shoulder_y + 0.13),
                (-0.035, shoulder_y + 0.13),
            ],
            PATTERN,
        )

    # Arms.
    if side:
        wrist = _arm(pen, ident, outfit, (lean, shoulder_y + 0.01), -0.09 * swing)
        hand_items = [(wrist, pose.facing)]
    else:
        lw = _arm(pen, ident, outfit, (-sw - 0.012 + lean, shoulder_y + 0.012), -0.02 - 0.006 * swing)
        rw = _arm(pen, ident, outfit, (sw + 0.012 + lean, shoulder_y + 0.012), 0.02 - 0.006 * swing)
        hand_items = [(lw, -mirror), (rw, mirror)]

    # Long hair over the back (after the torso), then the backpack over the hair.
    if body.long_hair and pose.view != "front":
        _long_hair(pen, ident, pose, top, behind=False)
    if acc.backpack is not None:
        size = acc.backpack_size
        if pose.view == "back":
            pen.poly(
                [
                    (-0.085 * size, shoulder_y + 0.02),
                    (0.085 * size, shoulder_y + 0.02),
                    (0.09 * size, shoulder_y + 0.25 * size),
                    (-0.09 * size, shoulder_y + 0.25 * size),
                ],
                BACKPACK,
            )
        elif pose.view == "front":
            for s in (-1, 1):
                pen.line(
                    (s * (sw - 0.035), shoulder_y + 0.004),
                    (s * (ww - 0.01), shoulder_y + 0.2),
                    0.018,
                    BACKPACK,
                )
        else:
            b0 = -pose.facing * (sw - 0.01)
            b1 = b0 - pose.facing * 0.075 * size
            pen.poly(
                [
                    (b0, shoulder_y + 0.02),
                    (b1, shoulder_y + 0.04),
                    (b1, shoulder_y + 0.24 * size),
                    (b0, shoulder_y + 0.26 * size),
                ],
                BACKPACK,
            )
            pen.line(
                (lean, shoulder_y + 0.005), (lean + pose.facing * 0.01, shoulder_y + 0.18), 0.014, BACKPACK
            )

    # Shoulder bag: strap across the chest, bag at the hip.
    if acc.bag is not None:
        s = acc.bag_side
        if not side:
            lat.line(
                (-s * (sw - 0.03), shoulder_y + 0.003), (s * (ww + 0.01), acc.bag_height - 0.04), 0.014, STRAP
            )
            lat.poly(_bag_points(s * (ww + 0.045), acc.bag_height, 0.08), BAG)
        elif acc.bag_side == pose.facing or acc.backpack is not None:
            pen.line((lean, shoulder_y + 0.003), (0.0, acc.bag_height - 0.04), 0.014, STRAP)
            pen.poly(_bag_points(-pose.facing * 0.03, acc.bag_height, 0.09), BAG)

    # Handbag in one hand.
    if acc.handbag is not None:
        for wrist, s in hand_items:
            if (side and acc.handbag_side == pose.facing) or (not side and s == acc.handbag_side * mirror):
                _handbag(pen, wrist)

    _head(pen, ident, pose, top)
    if pose.view == "front" and body.long_hair:
        _long_hair(pen, ident, pose, top, behind=False)


def _bag_points(u: float, v: float, width: float) -> list[tuple[float, float]]:
    return [
        (u - width / 2, v - 0.045),
        (u + width / 2, v - 0.045),
        (u + width / 2, v + 0.055),
        (u - width / 2, v + 0.055),
    ]


def _handbag(pen: _Pen, wrist: tuple[float, float]) -> None:
    u, v = wrist[0], wrist[1] + 0.04
    pen.poly([(u - 0.035, v), (u + 0.035, v), (u + 0.045, v + 0.075), (u - 0.045, v + 0.075)], HANDBAG)
    pen.line((u - 0.018, v - 0.02), (u + 0.018, v - 0.02), 0.008, HANDBAG)
