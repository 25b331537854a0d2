"""SYSU-MM01: visible-infrared Re-ID with the standard protocol of Wu et al. (ICCV 2017).

Layout::

    <data_dir>/cam1 .. cam6/<pid:04d>/<n:04d>.jpg    cams 1, 2, 4, 5 visible; 3, 6 infrared
    <data_dir>/exp/train_id.txt, val_id.txt, test_id.txt    comma-separated pids on one line

Protocol (as the public evaluation code applies it):

- train: every image, both modalities, of the training ids (``train_id.txt`` plus
  ``val_id.txt``: the usual 395 training identities; ``combine_val=False`` keeps only the 296
  of ``train_id.txt``);
- query: every infrared image (cams 3 and 6) of the test ids, in both search modes;
- gallery: visible images of the test ids from cams 1, 2, 4, 5 (``mode="all"``) or 1, 2
  (``mode="indoor"``), one random image per identity and camera (``gallery_shot="single"``)
  or ten (``"multi"``; all of them where a camera has fewer), drawn with
  ``random.Random(trial)`` over identities in ascending order, cameras in ascending order and
  file names sorted, which reproduces the widely used ``random.seed(trial);
  random.choice(...)`` single-shot draw. Report the mean over ``trial`` 0..9.
  ``gallery_shot="all"`` keeps every such image (not a published protocol; for checks).

Camera 2 and camera 3 share a location. ``evaluate_rank(..., camera_groups=SYSU_MM01_CAMERA_GROUPS)``
treats them as one camera, so camera-3 queries ignore same-identity camera-2 gallery images.
(The widely used public evaluation code removes *every* camera-2 gallery image for camera-3
queries, negatives included, although its comment describes the same-identity rule.) Visible
and infrared images never share a camera, so the same-camera rule removes nothing else.
"""

from __future__ import annotations

import logging
import random
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from ..protocols import EvalProtocol
from .base import (
    ImageRecord,
    ReidBuilder,
    ReidBuilderConfig,
    ReidDataError,
    SplitScan,
    is_number,
    list_images,
    modality_index,
    require_dir,
    require_file,
)

logger = logging.getLogger(__name__)

SYSU_MM01_CAMERAS = (1, 2, 3, 4, 5, 6)
SYSU_MM01_INFRARED_CAMERAS = (3, 6)
SYSU_MM01_GALLERY_CAMERAS = {"all": (1, 2, 4, 5), "indoor": (1, 2)}
SYSU_MM01_CAMERA_GROUPS: Mapping[int, int] = MappingProxyType({0: 0, 1: 1, 2: 1, 3: 3, 4: 4, 5: 5})
"""0-based camid -> location group for ``evaluate_rank(camera_groups=...)``: cameras 2 and 3
(camids 1 and 2) share a location, every other camera is its own group."""
MULTI_SHOT_SIZE = 10
NUM_TRIALS = 10
"""SYSU-MM01 results are the mean over gallery draws with trial 0..9."""

_CAMERA_FOLDER = re.compile(r"^cam(\d+)$")


@dataclass
class SysuMm01Config(ReidBuilderConfig):
    """Options of SYSU-MM01 (the evaluation protocol)."""

    mode: Literal["all", "indoor"] = "all"
    """All-search (gallery from cams 1, 2, 4, 5) or indoor-search (cams 1, 2)."""
    gallery_shot: Literal["single", "multi", "all"] = "single"
    """One (``single``) or ten (``multi``) gallery images per identity and camera; ``all`` keeps
    every visible test image of the mode's cameras (not a published protocol: for checks)."""
    trial: int = 0
    """Seed of the gallery draw; results are reported as the mean over trials 0..9."""
    combine_val: bool = True
    """Train on ``train_id.txt`` + ``val_id.txt`` (the standard 395 identities)."""


def read_id_list(path: Path) -> list[int]:
    """Identities of a SYSU-MM01 ``exp/*_id.txt`` file (comma- or whitespace-separated)."""
    require_file(path, SysuMm01.LAYOUT_NAME, "the identity list")
    tokens = [token for token in re.split(r"[,\s]+", path.read_text()) if token]
    ids = []
    for token in tokens:
        if not is_number(token):
            raise ReidDataError(
                f"sysu_mm01: {path}: {token!r} is not an identity number (expected e.g. 1,2,4,5,...)."
            )
        ids.append(int(token))
    if not ids:
        raise ReidDataError(f"sysu_mm01: {path} lists no identities.")
    return ids


class SysuMm01(ReidBuilder):
    """SYSU-MM01 (Wu et al., ICCV 2017): 491 identities, 4 visible and 2 infrared cameras."""

    BUILDER_CONFIG_CLASS = SysuMm01Config
    config: SysuMm01Config

    LAYOUT_NAME = "sysu_mm01"
    PRETTY_NAME = "SYSU-MM01"
    DESCRIPTION = (
        "SYSU-MM01: 491 identities seen by four visible (RGB) cameras and two near-infrared "
        "cameras, indoors and outdoors; infrared queries are matched against a visible gallery."
    )
    HOMEPAGE = "https://github.com/wuancong/SYSU-MM01"
    LICENSE = "Research use only; see the SYSU-MM01 agreement."
    CITATION = """@inproceedings{wu2017rgb,
  title={RGB-Infrared Cross-Modality Person Re-Identification},
  author={Wu, Ancong and Zheng, Wei-Shi and Yu, Hong-Xing and Gong, Shaogang and Lai, Jianhuang},
  booktitle={IEEE International Conference on Computer Vision (ICCV)},
  year={2017}
}"""

    EVALUATION = (
        "SYSU-MM01 protocol (Wu et al., ICCV 2017): infrared queries against a visible gallery; for "
        "camera-3 queries, same-identity gallery images of camera 2 (same location) are excluded "
        "(evaluate_rank(camera_groups=SYSU_MM01_CAMERA_GROUPS)). Report the mean over trial=0..9."
    )

    def _scan(self, root: Path) -> dict[str, SplitScan]:
        exp = require_dir(
            root / "exp", self.LAYOUT_NAME, "the protocol folder (exp/ with train_id.txt, test_id.txt)"
        )
        train_ids = set(read_id_list(exp / "train_id.txt"))
        if self.config.combine_val:
            train_ids |= set(read_id_list(exp / "val_id.txt"))
        test_ids = set(read_id_list(exp / "test_id.txt"))
        overlap = train_ids & test_ids
        if overlap:
            raise ReidDataError(
                f"sysu_mm01: {exp}: identities {sorted(overlap)[:5]} are listed for both training and test."
            )

        for child in sorted(root.iterdir()):
            match = _CAMERA_FOLDER.match(child.name)
            if child.is_dir() and match and int(match.group(1)) not in SYSU_MM01_CAMERAS:
                raise ReidDataError(
                    f"sysu_mm01: {child}: camera {match.group(1)} is unknown (SYSU-MM01 has cam1..cam6)."
                )
        gallery_cameras = SYSU_MM01_GALLERY_CAMERAS[self.config.mode]
        scans = {
            "train": SplitScan(source=root),
            "query": SplitScan(source=root),
            "gallery": SplitScan(source=root),
        }
        ignored = 0
        for camera in SYSU_MM01_CAMERAS:
            camera_dir = require_dir(root / f"cam{camera}", self.LAYOUT_NAME, f"camera folder cam{camera}")
            infrared = camera in SYSU_MM01_INFRARED_CAMERAS
            modality = modality_index("infrared" if infrared else "visible")
            for person_dir in sorted(p for p in camera_dir.iterdir() if p.is_dir()):
                if not is_number(person_dir.name):
                    scans["train"].bad.append(
                        (person_dir, "folder name is not an identity number (e.g. 0001)")
                    )
                    continue
                pid = int(person_dir.name)
                if pid in train_ids:
                    scan = scans["train"]
                elif pid in test_ids and infrared:
                    scan = scans["query"]
                elif pid in test_ids and camera in gallery_cameras:
                    scan = scans["gallery"]
                else:
                    ignored += 1
                    continue
                for path in list_images(person_dir, scan):
                    scan.records.append(ImageRecord(path=path, pid=pid, camid=camera - 1, modality=modality))
        if ignored:
            logger.debug("sysu_mm01: %d identity folders are outside this protocol's lists.", ignored)
        return scans

    def _select(self, splits: dict[str, list[ImageRecord]]) -> dict[str, list[ImageRecord]]:
        """Draw the gallery: per test identity and visible camera, one or ten images (or all)."""
        if self.config.gallery_shot == "all":
            return splits
        records = splits["gallery"]
        picked = draw_gallery(
            [r.pid for r in records],
            [r.camid for r in records],
            [r.path.name for r in records],
            self.config.gallery_shot,
            self.config.trial,
        )
        gallery = [records[i] for i in picked]
        logger.info(
            "sysu_mm01: %s-search %s-shot gallery, trial %d: %d of %d visible test images.",
            self.config.mode,
            self.config.gallery_shot,
            self.config.trial,
            len(gallery),
            len(records),
        )
        return {"train": splits["train"], "query": splits["query"], "gallery": gallery}

    def evaluation_protocol(self, splits: Mapping[str, Any] | None = None) -> EvalProtocol:
        """All-search or indoor-search with camera groups; the single- and multi-shot galleries
        are reported as the mean over ``NUM_TRIALS`` draws (trials 0..9), which recipe evaluation
        takes from the full gallery pool (``gallery_shot="all"``) with :func:`draw_gallery`."""
        mode, shot = self.config.mode, self.config.gallery_shot
        sampled = shot != "all"

        def select_trial(query: Any, gallery: Any, trial: int) -> tuple[np.ndarray, np.ndarray]:
            names = [str(path).replace("\\", "/").rsplit("/", 1)[-1] for path in gallery["paths"]]
            picked = draw_gallery(gallery["pids"], gallery["camids"], names, shot, trial)
            return np.arange(len(query["pids"])), np.asarray(picked)

        return EvalProtocol(
            f"{mode}_search",
            f"SYSU-MM01 {mode}-search, {shot}-shot gallery: infrared queries against visible images; "
            "cameras 2 and 3 share a location"
            + (f"; mean over {NUM_TRIALS} random gallery draws." if sampled else "."),
            camera_groups=SYSU_MM01_CAMERA_GROUPS,
            num_trials=NUM_TRIALS if sampled else 1,
            select_trial=select_trial if sampled else None,
            pool_options={"gallery_shot": "all"} if sampled else {},
        )


def draw_gallery(
    pids: Sequence[int], camids: Sequence[int], names: Sequence[str], shot: str, trial: int
) -> list[int]:
    """Indices of the SYSU-MM01 gallery of ``trial``: per identity and camera (both ascending),
    one (``single``) or up to ten (``multi``) images drawn with ``random.Random(trial)`` from the
    file names in sorted order; this reproduces the public code's ``random.seed(trial)`` draw."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, key in enumerate(zip(pids, camids)):
        groups[(int(key[0]), int(key[1]))].append(index)
    rng = random.Random(trial)
    picked: list[int] = []
    for key in sorted(groups):
        candidates = sorted(groups[key], key=lambda i: names[i])
        if shot == "single":
            picked.append(rng.choice(candidates))
        else:
            chosen = rng.sample(candidates, min(MULTI_SHOT_SIZE, len(candidates)))
            picked.extend(sorted(chosen, key=lambda i: names[i]))
    return picked
