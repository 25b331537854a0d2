"""Plans of the SynthPeds layouts: which identity, outfit, camera and file name every image gets.

Planning is cheap and runs in one process; rendering (:mod:`.writers`) then turns each
:class:`ImagePlan` into a file. Every layout draws its own identities from a disjoint ``uid``
range, so no identity appears in two layouts (and the pretraining identities are disjoint from
every Re-ID split). The last Market-style domain, ``synthpeds_d{K-1}``, is the *held-out* target
domain: its camera styles are used by no other layout; LTCC, SYSU-MM01, MLR-CUHK03, the captioned
set and the pretraining set draw their cameras from the other (source) domains only (the
``diverse`` captioned set from places of its own, kept away from the held-out style).

Layout names (``layouts=`` / ``--layouts``):

- ``market``: ``synthpeds_d0`` .. ``synthpeds_d{K-1}``, Market-1501 style, with pid ``0000``
  distractors and ``-1`` junk in the gallery.
- ``ltcc``: clothes change; ``PPP_O_cC_FFFFFF.png`` with the outfit (clothes id) ``O``.
- ``sysu_mm01``: visible-infrared; cameras 3 and 6 are infrared (grey intensity images).
- ``mlr_cuhk03``: cross-resolution; camera-1 images are downscaled by 2, 3 or 4 (all queries).
- ``captions``: single-camera captioned set (CUHK-PEDES JSON), one camera per identity. Its
  camera styles (``captioned_styles``): ``sources`` (the default) draws its 9 cameras from the
  source domains' styles; ``diverse`` films every identity with a camera of its own, at a place of
  its own (:func:`~.cameras.place_cameras`: a designed style other than the held-out domain's,
  moved; never the held-out domain's style distribution).
- ``pretrain``: caption JSON for pretraining a tiny CLIP, many identities and cameras.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from .cameras import (
    CameraStyle,
    DomainStyle,
    camera_keys,
    domain_cameras,
    draw_viewpoint,
    mixture_cameras,
    place_cameras,
    sample_camera,
)
from .captions import caption_image
from .identities import Identity, make_identity
from .presets import IntRange, SynthPedsPreset
from .seeding import int_seed, rng_for

LAYOUT_NAMES: tuple[str, ...] = ("market", "ltcc", "sysu_mm01", "mlr_cuhk03", "captions", "pretrain")
"""Layouts SynthPeds can write, in writing order."""

UID_BASES = {
    "ltcc": 101_000_000,
    "sysu_mm01": 102_000_000,
    "mlr_cuhk03": 103_000_000,
    "captions": 104_000_000,
    "pretrain": 105_000_000,
}
"""First identity uid of each non-domain layout; domain ``k`` starts at ``(k + 1) * 1_000_000``."""

MAX_DOMAINS = 99
SYSU_INFRARED_CAMERAS = (3, 6)
CAPTION_CAMERAS = 9
CAPTIONED_STYLES: tuple[str, ...] = ("sources", "diverse")
"""Camera styles of the single-camera captioned set (``captioned_styles=`` / ``--captioned-styles``):
``sources``, 9 cameras drawn from the source domains' styles (the default, as before the option
existed); ``diverse``, one camera per identity at a place of its own, never the held-out style."""
MAX_CAPTIONED_IDENTITIES = 999_999
"""Captioned identities take the uids ``UID_BASES["captions"] + pid``; more would reach the
pretraining set's."""


@dataclass(frozen=True)
class ImagePlan:
    """One image to render: where it goes and everything its label and pixels depend on."""

    path: str
    dataset: str
    layout: str
    split: str
    pid: int
    camid: int
    clothes_id: int
    modality: str
    identity: int
    outfit: int
    camera: str
    view: str
    seed: int
    lowres: int = 1
    junk: bool = False
    captions: tuple[str, ...] = ()


@dataclass
class LayoutPlan:
    """Everything one dataset folder needs: images, their identities and cameras, text files."""

    dataset: str
    layout: str
    images: list[ImagePlan] = field(default_factory=list)
    identities: dict[int, Identity] = field(default_factory=dict)
    cameras: dict[str, CameraStyle] = field(default_factory=dict)
    text_files: dict[str, str] = field(default_factory=dict)
    style_domains: tuple[int, ...] = ()
    places: dict[str, DomainStyle] = field(default_factory=dict)
    """Camera key -> the place it films (``diverse`` captioned set only; see ``place_cameras``)."""
    held_out: int | None = None
    """The held-out domain the places keep away from (``diverse`` captioned set only)."""


def domain_name(index: int) -> str:
    """Folder name of Market-style domain ``index``."""
    return f"synthpeds_d{index}"


def _randint(rng: np.random.Generator, r: IntRange) -> int:
    return int(rng.integers(r[0], r[1] + 1))


class _Planner:
    """Shared bookkeeping: frame counters, per-image seeds and viewpoints."""

    def __init__(self, seed: int, plan: LayoutPlan):
        self.seed, self.plan = seed, plan
        self.rng = rng_for(seed, "plan", plan.dataset)
        self.frames: dict[tuple[int, int], int] = {}

    def frame(self, cam: int, seq: int = 1) -> int:
        value = self.frames.get((cam, seq), int(self.rng.integers(100, 2000))) + int(
            self.rng.integers(25, 400)
        )
        self.frames[(cam, seq)] = value
        return value

    def identity(self, uid: int, num_outfits: int = 1) -> Identity:
        ident = make_identity(self.seed, uid, num_outfits)
        self.plan.identities[uid] = ident
        return ident

    def view(self, camera: CameraStyle) -> str:
        """A viewpoint drawn from the camera's viewpoint mix."""
        return draw_viewpoint(camera, self.rng)

    def add(self, camera: CameraStyle, view: str | None = None, **fields) -> ImagePlan:
        index = len(self.plan.images)
        view = view or self.view(camera)
        image = ImagePlan(
            dataset=self.plan.dataset,
            layout=self.plan.layout,
            camera=camera.key,
            view=view,
            seed=int_seed(self.seed, "image", self.plan.dataset, index),
            modality=camera.modality,
            **fields,
        )
        self.plan.images.append(image)
        return image


def _market_name(pid: int, cam: int, seq: int, frame: int, box: int) -> str:
    prefix = "-1" if pid < 0 else f"{pid:04d}"
    return f"{prefix}_c{cam}s{seq}_{frame:06d}_{box:02d}.jpg"


def plan_market_domain(seed: int, preset: SynthPedsPreset, index: int) -> LayoutPlan:
    """Domain ``index`` as a Market-1501 folder (``bounding_box_train``, ``query``, ``bounding_box_test``)."""
    dataset = domain_name(index)
    plan = LayoutPlan(dataset=dataset, layout="market", style_domains=(index,))
    cameras = domain_cameras(seed, dataset, index, preset.cameras_per_domain)
    plan.cameras = {c.key: c for c in cameras}
    p = _Planner(seed, plan)
    rng = p.rng
    num_ids = preset.train_ids + preset.test_ids
    pids = rng.permutation(np.arange(1, num_ids + 1))
    train_pids = set(pids[: preset.train_ids].tolist())
    base_uid = (index + 1) * 1_000_000
    lo, hi = preset.cameras_per_identity
    hi = min(hi, len(cameras))

    def shots(ident: Identity, pid: int, split: str, cams: list[int], folder: str) -> list[ImagePlan]:
        out = []
        for cam in cams:
            for _ in range(_randint(rng, preset.images_per_camera)):
                seq = int(rng.integers(1, 7))
                name = _market_name(pid, cam, seq, p.frame(cam, seq), int(rng.integers(0, 4)))
                out.append(
                    p.add(
                        cameras[cam - 1],
                        path=f"{dataset}/{folder}/{name}",
                        split=split,
                        pid=pid,
                        camid=cam - 1,
                        clothes_id=-1,
                        identity=ident.uid,
                        outfit=0,
                    )
                )
        return out

    for pid in sorted(pids.tolist()):
        ident = p.identity(base_uid + pid)
        cams = sorted(
            rng.choice(np.arange(1, len(cameras) + 1), size=_randint(rng, (lo, hi)), replace=False).tolist()
        )
        if pid in train_pids:
            shots(ident, pid, "train", cams, "bounding_box_train")
            continue
        # Queries: one image from each of up to `queries_per_identity` cameras, leaving at least
        # one camera wholly in the gallery so that every query has a cross-camera match.
        query_cams = rng.choice(cams, size=min(preset.queries_per_identity, len(cams) - 1), replace=False)
        for cam in sorted(query_cams.tolist()):
            shots(ident, pid, "query", [cam], "query")
        shots(ident, pid, "gallery", cams, "bounding_box_test")

    # Distractors (pid 0000): people outside the test set; junk (-1): bad detections.
    for k in range(preset.distractors):
        ident = p.identity(base_uid + num_ids + 1 + k)
        cam = int(rng.integers(1, len(cameras) + 1))
        name = _market_name(0, cam, 1, p.frame(cam, 1), 0)
        p.add(
            cameras[cam - 1],
            path=f"{dataset}/bounding_box_test/{name}",
            split="gallery",
            pid=0,
            camid=cam - 1,
            clothes_id=-1,
            identity=ident.uid,
            outfit=0,
        )
    for k in range(preset.junk):
        ident = p.identity(base_uid + num_ids + 1 + preset.distractors + k)
        cam = int(rng.integers(1, len(cameras) + 1))
        name = _market_name(-1, cam, 1, p.frame(cam, 1), 0)
        p.add(
            cameras[cam - 1],
            path=f"{dataset}/bounding_box_test/{name}",
            split="gallery",
            pid=-1,
            camid=cam - 1,
            clothes_id=-1,
            identity=ident.uid,
            outfit=0,
            junk=True,
        )
    return plan


def plan_ltcc(seed: int, preset: SynthPedsPreset, sources: list[int]) -> LayoutPlan:
    """Clothes change in the LTCC layout: several outfits per identity, 12 indoor cameras."""
    dataset = "ltcc"
    plan = LayoutPlan(dataset=dataset, layout="ltcc", style_domains=tuple(sources))
    cameras = mixture_cameras(seed, dataset, sources, 12)
    plan.cameras = {c.key: c for c in cameras}
    p = _Planner(seed, plan)
    rng = p.rng
    n_train, n_test = preset.ltcc_ids
    pids = list(range(1, n_train + n_test + 1))
    test_pids = set(rng.choice(pids, size=n_test, replace=False).tolist())
    changing, unchanging = [], []
    for pid in pids:
        outfits = _randint(rng, preset.ltcc_outfits)
        ident = p.identity(UID_BASES["ltcc"] + pid, outfits)
        test = pid in test_pids
        if test:
            (changing if outfits > 1 else unchanging).append(pid)
        for outfit in range(outfits):
            cams = rng.choice(np.arange(1, 13), size=int(rng.integers(2, 5)), replace=False).tolist()
            count = _randint(rng, preset.ltcc_images_per_outfit)
            shots = [int(cams[k % len(cams)]) for k in range(count)]
            query_index = int(rng.integers(count)) if test else -1
            for k, cam in enumerate(shots):
                split = "train" if not test else ("query" if k == query_index else "gallery")
                folder = {"train": "train", "query": "query", "gallery": "test"}[split]
                name = f"{pid:03d}_{outfit + 1}_c{cam}_{p.frame(cam):06d}.png"
                p.add(
                    cameras[cam - 1],
                    path=f"{dataset}/{folder}/{name}",
                    split=split,
                    pid=pid,
                    camid=cam - 1,
                    clothes_id=outfit + 1,
                    identity=ident.uid,
                    outfit=outfit,
                )
    plan.text_files = {
        f"{dataset}/info/cloth-change_id_test.txt": "".join(f"{pid}\n" for pid in sorted(changing)),
        f"{dataset}/info/cloth-unchange_id_test.txt": "".join(f"{pid}\n" for pid in sorted(unchanging)),
    }
    return plan


def plan_sysu_mm01(seed: int, preset: SynthPedsPreset, sources: list[int]) -> LayoutPlan:
    """Visible-infrared in the SYSU-MM01 layout: indoor cams 1-3, outdoor cams 4-6; 3 and 6 infrared."""
    dataset = "sysu_mm01"
    plan = LayoutPlan(dataset=dataset, layout="sysu_mm01", style_domains=tuple(sources))
    site_rng = rng_for(seed, "sysu-sites")
    indoor, outdoor = (int(site_rng.choice(sources)) for _ in range(2))
    cameras = [
        sample_camera(
            seed,
            f"{dataset}/c{c}",
            indoor if c <= 3 else outdoor,
            "infrared" if c in SYSU_INFRARED_CAMERAS else "visible",
        )
        for c in range(1, 7)
    ]
    plan.cameras = {c.key: c for c in cameras}
    p = _Planner(seed, plan)
    rng = p.rng
    n_train, n_val, n_test = preset.sysu_ids
    pids = rng.permutation(np.arange(1, n_train + n_val + n_test + 1)).tolist()
    split_of = {pid: "train" for pid in pids[:n_train]}
    split_of.update({pid: "val" for pid in pids[n_train : n_train + n_val]})
    split_of.update({pid: "test" for pid in pids[n_train + n_val :]})
    for pid in sorted(pids):
        ident = p.identity(UID_BASES["sysu_mm01"] + pid)
        cams = [c for c in range(1, 7) if rng.random() < 0.75]
        # Every identity is seen indoors by a visible camera (indoor search needs it) and by an
        # infrared camera (the queries).
        if not {1, 2} & set(cams):
            cams.append(int(rng.choice((1, 2))))
        if not set(SYSU_INFRARED_CAMERAS) & set(cams):
            cams.append(int(rng.choice(SYSU_INFRARED_CAMERAS)))
        for cam in sorted(cams):
            for n in range(1, _randint(rng, preset.sysu_images_per_camera) + 1):
                p.add(
                    cameras[cam - 1],
                    path=f"{dataset}/cam{cam}/{pid:04d}/{n:04d}.jpg",
                    split=split_of[pid],
                    pid=pid,
                    camid=cam - 1,
                    clothes_id=-1,
                    identity=ident.uid,
                    outfit=0,
                )
    for split in ("train", "val", "test"):
        ids = sorted(pid for pid, s in split_of.items() if s == split)
        plan.text_files[f"{dataset}/exp/{split}_id.txt"] = ",".join(str(pid) for pid in ids) + "\n"
    return plan


def plan_mlr_cuhk03(seed: int, preset: SynthPedsPreset, sources: list[int]) -> LayoutPlan:
    """Cross-resolution (MLR-CUHK03 style): camera 1 low resolution, camera 2 full resolution."""
    dataset = "mlr_cuhk03"
    plan = LayoutPlan(dataset=dataset, layout="mlr_cuhk03", style_domains=tuple(sources))
    cameras = mixture_cameras(seed, dataset, sources, 2)
    plan.cameras = {c.key: c for c in cameras}
    p = _Planner(seed, plan)
    rng = p.rng
    n_train, n_test = preset.mlr_ids
    pids = rng.permutation(np.arange(1, n_train + n_test + 1))
    train = set(pids[:n_train].tolist())
    for pid in sorted(pids.tolist()):
        ident = p.identity(UID_BASES["mlr_cuhk03"] + pid)
        for cam in (1, 2):
            count = _randint(rng, preset.mlr_images_per_camera)
            if pid in train:
                split, folder = "train", "bounding_box_train"
            elif cam == 1:
                split, folder, count = "query", "query", 1
            else:
                split, folder = "gallery", "bounding_box_test"
            for _ in range(count):
                name = _market_name(pid, cam, 1, p.frame(cam), 0)
                lowres = int(rng.choice((2, 3, 4))) if cam == 1 else 1
                p.add(
                    cameras[cam - 1],
                    path=f"{dataset}/{folder}/{name}",
                    split=split,
                    pid=pid,
                    camid=cam - 1,
                    clothes_id=-1,
                    identity=ident.uid,
                    outfit=0,
                    lowres=lowres,
                )
    return plan


def _plan_captioned(
    seed: int, dataset: str, ids: int, images: IntRange, sources: list[int], single_camera: bool
) -> LayoutPlan:
    """The captioned sets drawn from the source domains' styles (``captions`` with ``sources``
    styles, ``pretrain``): 9 cameras; each identity keeps its home camera (``single_camera``) or
    every image draws one."""
    plan = LayoutPlan(dataset=dataset, layout=dataset, style_domains=tuple(sources))
    cameras = mixture_cameras(seed, dataset, sources, CAPTION_CAMERAS)

    def pick_camera(rng: np.random.Generator, pid: int, home: int) -> int:
        return home if single_camera else int(rng.integers(1, CAPTION_CAMERAS + 1))

    return _plan_captioned_images(seed, plan, cameras, ids, images, pick_camera)


def _plan_diverse_captions(seed: int, ids: int, images: IntRange, held_out: int) -> LayoutPlan:
    """The ``diverse`` captioned set: identity ``pid`` filmed only by camera ``pid`` at a place of
    its own. It draws the planning numbers of the ``sources`` set in the same order (the unused
    home camera included), so both hold the same people with the same number of images each; the
    cameras (and so the viewpoints and captions that depend on them) differ."""
    dataset = "captions"
    plan = LayoutPlan(dataset=dataset, layout=dataset, held_out=held_out)
    cameras, plan.places = place_cameras(seed, camera_keys(dataset, ids), held_out)
    plan.style_domains = tuple(sorted({c.style_domain for c in cameras}))
    return _plan_captioned_images(seed, plan, cameras, ids, images, lambda rng, pid, home: pid)


def _plan_captioned_images(
    seed: int,
    plan: LayoutPlan,
    cameras: list[CameraStyle],
    ids: int,
    images: IntRange,
    pick_camera: Callable[[np.random.Generator, int, int], int],
) -> LayoutPlan:
    """Fill ``plan`` (a captioned set) with identities ``1..ids``, a number of images each drawn
    from ``images``, and its CUHK-PEDES style ``reid_raw.json``. Every identity draws a home camera
    (in 1..9) first, drawn even where ``pick_camera(rng, pid, home)`` (the camera number of each
    image, an index into ``cameras`` from 1) does not use it, so every captioned set draws its
    planning numbers in the same order."""
    dataset = plan.dataset
    plan.cameras = {c.key: c for c in cameras}
    p = _Planner(seed, plan)
    rng = p.rng
    entries = []
    for pid in range(1, ids + 1):
        ident = p.identity(UID_BASES[dataset] + pid)
        home = int(rng.integers(1, CAPTION_CAMERAS + 1))
        for _ in range(_randint(rng, images)):
            cam = pick_camera(rng, pid, home)
            name = _market_name(pid, cam, 1, p.frame(cam), 0)
            camera = cameras[cam - 1]
            view = p.view(camera)
            captions = tuple(
                caption_image(ident, 0, rng_for(seed, "caption", dataset, len(plan.images)), view)
            )
            p.add(
                camera,
                view=view,
                path=f"{dataset}/imgs/{name}",
                split="train",
                pid=pid,
                camid=cam - 1,
                clothes_id=-1,
                identity=ident.uid,
                outfit=0,
                captions=captions,
            )
            entries.append(
                {"id": pid, "file_path": f"imgs/{name}", "captions": list(captions), "split": "train"}
            )
    plan.text_files[f"{dataset}/reid_raw.json"] = json.dumps(entries, indent=1) + "\n"
    return plan


def plan_captions(
    seed: int,
    preset: SynthPedsPreset,
    sources: list[int],
    styles: str = "sources",
    held_out: int | None = None,
) -> LayoutPlan:
    """Single-camera captioned set: each identity seen by one camera, 1-2 captions per image;
    ``preset.caption_ids`` identities. ``styles`` (:data:`CAPTIONED_STYLES`): ``sources`` draws 9
    cameras from the source domains' styles; ``diverse`` gives every identity a camera of its own
    at a place of its own, kept away from the style of domain ``held_out`` (default: the domain
    after the last source)."""
    check_captioned(styles, None)
    if styles == "diverse":
        held_out = max(sources) + 1 if held_out is None else held_out
        return _plan_diverse_captions(seed, preset.caption_ids, preset.caption_images, held_out)
    return _plan_captioned(
        seed, "captions", preset.caption_ids, preset.caption_images, sources, single_camera=True
    )


def check_captioned(styles: str, identities: int | None) -> None:
    """Raise ``ValueError`` naming a ``captioned_styles`` / ``captioned_identities`` value that is
    not allowed."""
    if styles not in CAPTIONED_STYLES:
        raise ValueError(f"captioned_styles must be one of {list(CAPTIONED_STYLES)}, got {styles!r}")
    if identities is not None and (
        isinstance(identities, bool)
        or not isinstance(identities, (int, np.integer))
        or not 1 <= identities <= MAX_CAPTIONED_IDENTITIES
    ):
        raise ValueError(
            f"captioned_identities must be an integer in 1..{MAX_CAPTIONED_IDENTITIES}, got {identities!r}"
        )


def plan_pretrain(seed: int, preset: SynthPedsPreset, sources: list[int]) -> LayoutPlan:
    """Image-caption pairs for pretraining a tiny CLIP (identities disjoint from every Re-ID split)."""
    return _plan_captioned(
        seed, "pretrain", preset.pretrain_ids, preset.pretrain_images, sources, single_camera=False
    )


def resolve_layouts(layouts: Iterable[str] | str | None) -> tuple[str, ...]:
    """Validate ``layouts`` (names or a comma-separated string); ``None`` means all."""
    if layouts is None:
        return LAYOUT_NAMES
    if isinstance(layouts, str):
        layouts = [name.strip() for name in layouts.split(",") if name.strip()]
    chosen = list(dict.fromkeys(layouts))
    unknown = [name for name in chosen if name not in LAYOUT_NAMES]
    if unknown or not chosen:
        raise ValueError(
            f"unknown SynthPeds layout(s) {unknown or chosen!r}; choose from {list(LAYOUT_NAMES)}"
        )
    return tuple(name for name in LAYOUT_NAMES if name in chosen)


def plan_synthpeds(
    seed: int,
    preset: SynthPedsPreset,
    layouts: Iterable[str] | None = None,
    captioned_styles: str = "sources",
) -> list[LayoutPlan]:
    """Plan every requested layout of a run (deterministic in ``seed``); ``captioned_styles``
    (:data:`CAPTIONED_STYLES`) chooses the captioned set's cameras (its size is
    ``preset.caption_ids``)."""
    chosen = resolve_layouts(layouts)
    check_captioned(captioned_styles, None)
    if not 2 <= preset.num_domains <= MAX_DOMAINS:
        raise ValueError(
            f"preset {preset.name}: num_domains must be in 2..{MAX_DOMAINS} (the last one is held out), "
            f"got {preset.num_domains}"
        )
    sources = list(range(preset.num_domains - 1))
    plans: list[LayoutPlan] = []
    if "market" in chosen:
        plans.extend(plan_market_domain(seed, preset, k) for k in range(preset.num_domains))
    planners = {
        "ltcc": plan_ltcc,
        "sysu_mm01": plan_sysu_mm01,
        "mlr_cuhk03": plan_mlr_cuhk03,
        "captions": lambda seed, preset, sources: plan_captions(
            seed, preset, sources, captioned_styles, held_out=preset.num_domains - 1
        ),
        "pretrain": plan_pretrain,
    }
    plans.extend(planners[name](seed, preset, sources) for name in chosen if name != "market")
    return plans
