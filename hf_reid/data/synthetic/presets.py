"""SynthPeds size presets: ``tiny`` (tests), ``default`` (quickstart), ``full`` (benchmarks)."""

from __future__ import annotations

from dataclasses import dataclass

IntRange = tuple[int, int]


@dataclass(frozen=True)
class SynthPedsPreset:
    """How many identities, cameras and images each layout gets (ranges are inclusive).

    Market-style domains: ``train_ids`` + ``test_ids`` identities per domain, each seen by
    ``cameras_per_identity`` of the domain's ``cameras_per_domain`` cameras with
    ``images_per_camera`` images each; up to ``queries_per_identity`` queries per test identity
    (one per camera); ``distractors`` (pid 0000) and ``junk`` (pid -1) gallery images per domain.
    """

    name: str
    num_domains: int
    cameras_per_domain: int
    train_ids: int
    test_ids: int
    cameras_per_identity: IntRange
    images_per_camera: IntRange
    queries_per_identity: int
    distractors: int
    junk: int
    ltcc_ids: IntRange
    """(train, test) identities of the clothes-changing set."""
    ltcc_outfits: IntRange
    ltcc_images_per_outfit: IntRange
    sysu_ids: tuple[int, int, int]
    """(train, val, test) identities of the visible-infrared set."""
    sysu_images_per_camera: IntRange
    mlr_ids: IntRange
    """(train, test) identities of the cross-resolution set."""
    mlr_images_per_camera: IntRange
    caption_ids: int
    caption_images: IntRange
    pretrain_ids: int
    pretrain_images: IntRange


PRESETS: dict[str, SynthPedsPreset] = {
    "tiny": SynthPedsPreset(
        name="tiny",
        num_domains=3,
        cameras_per_domain=4,
        train_ids=16,
        test_ids=16,
        cameras_per_identity=(2, 3),
        images_per_camera=(1, 2),
        queries_per_identity=2,
        distractors=4,
        junk=2,
        ltcc_ids=(10, 8),
        ltcc_outfits=(1, 3),
        ltcc_images_per_outfit=(3, 5),
        sysu_ids=(12, 2, 8),
        sysu_images_per_camera=(1, 2),
        mlr_ids=(12, 8),
        mlr_images_per_camera=(1, 3),
        caption_ids=50,
        caption_images=(2, 4),
        pretrain_ids=150,
        pretrain_images=(2, 3),
    ),
    "default": SynthPedsPreset(
        name="default",
        num_domains=4,
        cameras_per_domain=6,
        train_ids=120,
        test_ids=120,
        cameras_per_identity=(2, 5),
        images_per_camera=(1, 3),
        queries_per_identity=3,
        distractors=40,
        junk=20,
        ltcc_ids=(50, 40),
        ltcc_outfits=(1, 4),
        ltcc_images_per_outfit=(4, 8),
        sysu_ids=(80, 10, 30),
        sysu_images_per_camera=(2, 4),
        mlr_ids=(100, 60),
        mlr_images_per_camera=(2, 4),
        caption_ids=400,
        caption_images=(3, 5),
        pretrain_ids=1200,
        pretrain_images=(2, 4),
    ),
    "full": SynthPedsPreset(
        name="full",
        num_domains=5,
        cameras_per_domain=6,
        train_ids=400,
        test_ids=400,
        cameras_per_identity=(2, 6),
        images_per_camera=(1, 4),
        queries_per_identity=3,
        distractors=150,
        junk=60,
        ltcc_ids=(77, 75),
        ltcc_outfits=(1, 5),
        ltcc_images_per_outfit=(4, 10),
        sysu_ids=(200, 40, 96),
        sysu_images_per_camera=(2, 6),
        mlr_ids=(600, 100),
        mlr_images_per_camera=(2, 5),
        caption_ids=2000,
        caption_images=(3, 6),
        pretrain_ids=5000,
        pretrain_images=(2, 4),
    ),
}
"""The built-in presets, by name."""


def get_preset(name: str | SynthPedsPreset) -> SynthPedsPreset:
    """The preset called ``name`` (a :class:`SynthPedsPreset` passes through)."""
    if isinstance(name, SynthPedsPreset):
        return name
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown SynthPeds preset {name!r}; choose one of {sorted(PRESETS)}") from None
