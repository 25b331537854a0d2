"""Protocol-1 sets of generalisable Re-ID: the small test sets VIPeR, PRID2011, GRID and QMUL
iLIDS, and the training-only source CUHK02.

Domain-generalisation protocol 1 (used by CLIP-FGDI and the methods it compares with) trains on
Market-1501 + CUHK02 + CUHK03 + CUHK-SYSU and tests on VIPeR, PRID, GRID and iLIDS. The four test
sets are small, so the field reports each as the mean over **10 random splits** of its
identities into a training half and a test half (torchreid writes the splits to a json file the
first time; CLIP-FGDI's code evaluates one of them, ``split_id=9``). Here the splits are a pure
function of the data and the split number, so anyone gets the same ones:

- the candidate identities (those that can be queried: seen by both the query and the gallery
  side) are sorted, ``numpy.random.RandomState(t).permutation`` orders them for split ``t`` (the
  legacy generator's stream is frozen across numpy versions), and the first ``n - n // 2`` (the
  larger half: VIPeR 316, PRID 100, GRID 125, iLIDS 60, the counts torchreid uses) are the
  test identities;
- GRID's release ships its 10 partitions in ``features_and_partitions.mat``; they are used when
  the file is there (``partitions="auto"``), read with ``scipy.io.loadmat`` (no pickle).

Layouts as distributed (``data_dir`` is the folder named first)::

    VIPeR/cam_a/000_45.bmp, cam_b/000_90.bmp      <person>_<viewing angle>; one image per person
                                                  and camera, 632 people, the number pairs them
    prid_2011/single_shot/cam_a/person_0001.png   385 people in cam_a, 749 in cam_b; persons
             /single_shot/cam_b/person_0001.png   0001-0200 are the same people in both cameras,
                                                  higher numbers are different people per camera
    underground_reid/probe/0001_1_25004_107_32_130.jpeg      <person>_<camera 1-8>_...; 250 probes
                    /gallery/0000_3_...jpeg                  1,025: the 250 partners + 775 people
                    /features_and_partitions.mat             of person 0000 (not in the probe)
    i-LIDS_Pedestrian/Persons/0001001.jpg         <person:4><image:3>; 476 images of 119 people
    Dataset/P1 .. P5/cam1, cam2/<person>_<n>.png  CUHK02: 5 camera pairs, persons numbered per
                                                  pair (971, 306, 107, 193, 239: 1,816 people)

What the splits hold (``split_id=None``, the default):

- ``query`` and ``gallery`` are the **pools** every split draws from: every image that can be a
  query (VIPeR and PRID: cam_a; GRID: the probe folder; iLIDS: every image) and every image that
  can be in a gallery (VIPeR and PRID: cam_b; GRID: the gallery folder with its distractors;
  iLIDS: every image). ``evaluation_protocol()`` returns the ``random_splits`` protocol, whose
  ``select_trial`` picks the rows of split ``t`` from these pools, so features are extracted once;
- ``train`` holds every usable image (distractors excepted): these sets serve as training sources
  too (fast-reid's domain-generalisation pool uses them so). It overlaps the pools; never train
  on it and evaluate on the same set. Recipes' ``combine_all`` would add the pools once more, so
  use these layouts as sources without it.

``split_id=t`` (0..9) keeps only split ``t``: its queries and gallery, and as ``train`` every image
of the identities outside them, for in-domain training on one split; the protocol then has one
trial. CUHK02 has ``train`` only: all five camera pairs, as protocol 1 trains on them.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from ..protocols import EvalProtocol, TrialRows, TrialSelector
from .base import (
    ImageRecord,
    ReidBuilder,
    ReidBuilderConfig,
    ReidDataError,
    SplitScan,
    list_images,
    require_dir,
    require_file,
)

logger = logging.getLogger(__name__)

NUM_SPLITS = 10
"""Protocol-1 test sets are reported as the mean over random splits 0..9."""

PRID_CAM_A_ONLY_OFFSET = 1000
"""PRID2011 numbers the people seen by one camera only from 201 in *each* camera, so the same
number means two different people; cam_a-only people get pid ``1000 + number``."""

GRID_PARTITIONS_FILE = "features_and_partitions.mat"
GRID_NUM_CAMERAS = 8
CUHK02_PAIRS = ("P1", "P2", "P3", "P4", "P5")
CUHK02_PAIR_OFFSET = 10_000
"""CUHK02 numbers people per camera pair; pid = pair number (1-5) * 10,000 + the file's number."""

_IMAGE = r"\.(?:bmp|png|jpe?g)$"
VIPER_PATTERN = re.compile(r"^(?P<pid>\d+)_(?P<angle>\d+)" + _IMAGE, re.IGNORECASE)
PRID_PATTERN = re.compile(r"^person_(?P<pid>\d+)" + _IMAGE, re.IGNORECASE)
GRID_PATTERN = re.compile(r"^(?P<pid>\d+)_(?P<cam>\d+)_[^.]*" + _IMAGE, re.IGNORECASE)
ILIDS_PATTERN = re.compile(r"^(?P<pid>\d{4})(?P<index>\d{3})" + _IMAGE, re.IGNORECASE)
CUHK02_PATTERN = re.compile(r"^(?P<pid>\d+)_[^.]*" + _IMAGE, re.IGNORECASE)


# --- the splits ---------------------------------------------------------------------------------


def draw_test_ids(ids: Sequence[int], trial: int) -> tuple[list[int], np.random.RandomState]:
    """The test identities of random split ``trial``: the larger half (``n - n // 2``) of the
    sorted ``ids`` in the order of ``numpy.random.RandomState(trial).permutation``, returned
    sorted, with the generator for any further draw of the split."""
    ordered = sorted(int(i) for i in ids)
    rng = np.random.RandomState(trial)
    order = rng.permutation(len(ordered))
    n_test = len(ordered) - len(ordered) // 2
    return sorted(ordered[i] for i in order[:n_test]), rng


def paired_trial(
    query: TrialRows,
    gallery: TrialRows,
    trial: int,
    *,
    train_ids: Sequence[frozenset[int]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of split ``trial`` for a set whose query and gallery pools come from different
    cameras (VIPeR, PRID, GRID).

    Candidates are the identities (other than 0) in both pools. The test identities are drawn
    with :func:`draw_test_ids`, or, with ``train_ids`` (GRID's shipped partitions), are the
    candidates outside ``train_ids[trial]``. Queries: the query-pool rows of the test
    identities. Gallery: the gallery-pool rows of the test identities plus every gallery row
    whose identity is no candidate (GRID's distractors, PRID's cam_b-only people), which no
    split trains on.
    """
    q_pids = np.asarray(query["pids"], dtype=np.int64)
    g_pids = np.asarray(gallery["pids"], dtype=np.int64)
    candidates = sorted((set(q_pids.tolist()) & set(g_pids.tolist())) - {0})
    if train_ids is None:
        test, _ = draw_test_ids(candidates, trial)
    else:
        test = sorted(set(candidates) - set(train_ids[trial]))
    q_idx = np.flatnonzero(np.isin(q_pids, test))
    g_idx = np.flatnonzero(np.isin(g_pids, test) | ~np.isin(g_pids, candidates))
    return q_idx, g_idx


def two_image_trial(query: TrialRows, gallery: TrialRows, trial: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of split ``trial`` for QMUL iLIDS, whose query and gallery pools are the same images.

    Candidates are the identities with at least two images. For each test identity (from
    :func:`draw_test_ids`, in ascending order) the same generator then picks two of its images
    (file names sorted; ``rng.choice(n, 2, replace=False)``): the first is the query, the second
    the gallery entry, so every query has exactly one true match and never meets itself.
    """
    q_pids = np.asarray(query["pids"], dtype=np.int64).tolist()
    q_paths = [str(path) for path in query["paths"]]
    g_row = {str(path): row for row, path in enumerate(gallery["paths"])}
    images: dict[int, list[int]] = defaultdict(list)
    for row, (pid, path) in enumerate(zip(q_pids, q_paths)):
        if path in g_row:
            images[pid].append(row)
    candidates = [pid for pid, rows in images.items() if len(rows) >= 2]
    test, rng = draw_test_ids(candidates, trial)
    q_idx, g_idx = [], []
    for pid in test:
        rows = sorted(images[pid], key=lambda row: q_paths[row])
        first, second = rng.choice(len(rows), 2, replace=False)
        q_idx.append(rows[first])
        g_idx.append(g_row[q_paths[rows[second]]])
    return np.asarray(q_idx, dtype=np.int64), np.asarray(g_idx, dtype=np.int64)


def read_grid_partitions(path: Path) -> list[frozenset[int]]:
    """The training identities of GRID's 10 partitions, from the release's
    ``features_and_partitions.mat`` (``trainIdxAll{t}.personIdx``, person numbers 1-250; the
    field is read by name, else as the struct's third field, where torchreid reads it)."""
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path))
    except Exception as err:  # scipy raises several types for unreadable or v7.3 (HDF5) files
        raise ReidDataError(
            f"grid: {path}: cannot be read as a MATLAB file ({type(err).__name__}: {err}). "
            "Pass partitions='random' to use seeded random splits instead."
        ) from None
    if "trainIdxAll" not in mat:
        raise ReidDataError(
            f"grid: {path}: has no field 'trainIdxAll' (the release's 10 training partitions); "
            f"fields found: {sorted(k for k in mat if not k.startswith('__'))}."
        )
    cells = np.asarray(mat["trainIdxAll"], dtype=object).ravel()
    if len(cells) < NUM_SPLITS:
        raise ReidDataError(
            f"grid: {path}: field 'trainIdxAll' holds {len(cells)} partitions; {NUM_SPLITS} are needed."
        )
    partitions = []
    for trial in range(NUM_SPLITS):
        try:
            record = np.asarray(cells[trial]).ravel()[0]
            names = record.dtype.names or ()
            value = record["personIdx"] if "personIdx" in names else record[2]
            ids = np.asarray(value).ravel().astype(np.int64)
        except (IndexError, KeyError, TypeError, ValueError) as err:
            raise ReidDataError(
                f"grid: {path}: field trainIdxAll{{{trial + 1}}}.personIdx cannot be read "
                f"({type(err).__name__}: {err})."
            ) from None
        partitions.append(frozenset(ids.tolist()))
    return partitions


# --- the shared builder ---------------------------------------------------------------------------


@dataclass
class RandomSplitsConfig(ReidBuilderConfig):
    """Options of the Protocol-1 test sets."""

    split_id: int | None = None
    """``None``: query/gallery are the pools of all 10 random splits (the ``random_splits``
    protocol selects each split's rows) and train holds every image. ``0``..``9``: the rows of
    that split only, and train = the identities outside it."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.split_id is not None and not 0 <= self.split_id < NUM_SPLITS:
            raise ValueError(
                f"{type(self).__name__}: option split_id={self.split_id!r} is invalid; expected None "
                f"or 0..{NUM_SPLITS - 1}."
            )


class RandomSplitsBuilder(ReidBuilder):
    """A small test set reported as the mean over 10 random splits (see the module doc).

    Subclasses implement ``_scan`` (returning ``train``, ``query`` and ``gallery`` pools) and set
    ``SPLIT_RULE`` (one sentence for the protocol description); ``CROSS_CAMERA`` says whether the
    Market-1501 same-camera rule applies.
    """

    BUILDER_CONFIG_CLASS = RandomSplitsConfig
    config: RandomSplitsConfig

    CROSS_CAMERA: ClassVar[bool] = True
    SPLIT_RULE: ClassVar[str] = ""

    def trial_selector(self) -> TrialSelector:
        """``select_trial`` of the ``random_splits`` protocol (picklable: a module function)."""
        return paired_trial

    def _rows(self, records: Sequence[ImageRecord]) -> dict[str, np.ndarray]:
        return {
            "pids": np.asarray([r.pid for r in records], dtype=np.int64),
            "camids": np.asarray([r.camid for r in records], dtype=np.int64),
            "clothes_ids": np.asarray([r.clothes_id for r in records], dtype=np.int64),
            "paths": np.asarray([self.relative(r.path) for r in records], dtype=object),
        }

    def _select(self, splits: dict[str, list[ImageRecord]]) -> dict[str, list[ImageRecord]]:
        """With ``split_id``: that split's queries and gallery, and the other identities as train."""
        split_id = self.config.split_id
        if split_id is None:
            return splits
        pool_q, pool_g = splits["query"], splits["gallery"]
        q_idx, g_idx = self.trial_selector()(self._rows(pool_q), self._rows(pool_g), split_id)
        query = [pool_q[i] for i in q_idx]
        gallery = [pool_g[i] for i in g_idx]
        held_out = {r.pid for r in query} | {r.pid for r in gallery}
        train = [r for r in splits["train"] if r.pid not in held_out]
        logger.info(
            "%s split %d: %d queries, %d gallery images, %d training images of %d identities.",
            self.LAYOUT_NAME,
            split_id,
            len(query),
            len(gallery),
            len(train),
            len({r.pid for r in train}),
        )
        return {"train": train, "query": query, "gallery": gallery}

    def evaluation_protocol(self, splits: Mapping[str, Any] | None = None) -> EvalProtocol:
        """``random_splits``: the mean over splits 0..9 drawn from the pools, or (``split_id``
        given) the one split that was loaded."""
        rule = f"{self.PRETTY_NAME or self.LAYOUT_NAME}: {self.SPLIT_RULE}"
        if self.config.split_id is not None:
            return EvalProtocol(
                "random_splits",
                f"{rule} Split {self.config.split_id} only.",
                cross_camera=self.CROSS_CAMERA,
            )
        return EvalProtocol(
            "random_splits",
            f"{rule} Mean over random splits 0..{NUM_SPLITS - 1}.",
            cross_camera=self.CROSS_CAMERA,
            num_trials=NUM_SPLITS,
            select_trial=self.trial_selector(),
        )

    # --- helpers for _scan ----------------------------------------------------------------------

    def _parse(self, scan: SplitScan, path: Path, pattern: re.Pattern[str], example: str) -> re.Match | None:
        match = pattern.match(path.name)
        if match is None:
            scan.bad.append(
                (path, f"file name does not follow the {self.PRETTY_NAME} scheme (e.g. {example})")
            )
        return match

    def _one_per_person(self, seen: dict[int, Path], pid: int, path: Path, where: str) -> None:
        """Raise when a camera holds two images of one person (these sets have one)."""
        if pid in seen:
            raise ReidDataError(
                f"{self.LAYOUT_NAME}: {self.relative(seen[pid])} and {self.relative(path)} are both person "
                f"{pid} in {where}; {self.PRETTY_NAME} has one image per person and camera."
            )
        seen[pid] = path


def _pools(root: Path, query_source: Path, gallery_source: Path) -> dict[str, SplitScan]:
    return {
        "train": SplitScan(source=root),
        "query": SplitScan(source=query_source),
        "gallery": SplitScan(source=gallery_source),
    }


# --- VIPeR ----------------------------------------------------------------------------------------


class Viper(RandomSplitsBuilder):
    """VIPeR (Gray et al., PETS 2007): 632 people, one image in each of two cameras."""

    LAYOUT_NAME = "viper"
    PRETTY_NAME = "VIPeR"
    DESCRIPTION = (
        "VIPeR: 632 pedestrians, each seen once by two outdoor cameras (cam_a, cam_b) under large "
        "changes of viewpoint and lighting; 1,264 images of 128x48."
    )
    HOMEPAGE = "https://vision.soe.ucsc.edu/node/178"
    LICENSE = "Research use only; see the VIPeR terms."
    CITATION = """@inproceedings{gray2007evaluating,
  title={Evaluating Appearance Models for Recognition, Reacquisition, and Tracking},
  author={Gray, Douglas and Brennan, Shane and Tao, Hai},
  booktitle={IEEE International Workshop on Performance Evaluation for Tracking and Surveillance (PETS)},
  year={2007}
}"""
    SPLIT_RULE = (
        "each random split tests on half of the 632 people (316): their cam_a images are the queries "
        "and their cam_b images the gallery."
    )
    EVALUATION = (
        "VIPeR, 10 random splits: half of the people (316) per split; cam_a queries against the cam_b "
        "images of the same people. Report the mean over splits 0-9."
    )

    def _scan(self, root: Path) -> dict[str, SplitScan]:
        hint = "A VIPeR folder holds cam_a/ and cam_b/ (e.g. cam_a/000_45.bmp)."
        cam_a = require_dir(root / "cam_a", self.LAYOUT_NAME, "the cam_a folder", hint=hint)
        cam_b = require_dir(root / "cam_b", self.LAYOUT_NAME, "the cam_b folder", hint=hint)
        scans = _pools(root, cam_a, cam_b)
        for camid, (folder, pool) in enumerate(((cam_a, scans["query"]), (cam_b, scans["gallery"]))):
            seen: dict[int, Path] = {}
            for path in list_images(folder, pool):
                match = self._parse(scans["train"], path, VIPER_PATTERN, "000_45.bmp")
                if match is None:
                    continue
                pid = int(match.group("pid")) + 1  # VIPeR numbers from 000; pid 0 means distractor here
                self._one_per_person(seen, pid, path, folder.name)
                record = ImageRecord(path=path, pid=pid, camid=camid)
                scans["train"].records.append(record)
                pool.records.append(record)
        _log_unpaired(self.LAYOUT_NAME, scans["query"].records, scans["gallery"].records)
        return scans


def _log_unpaired(layout: str, query: list[ImageRecord], gallery: list[ImageRecord]) -> None:
    unpaired = {r.pid for r in query} ^ {r.pid for r in gallery}
    if unpaired:
        logger.warning(
            "%s: %d person(s) have an image in only one camera (e.g. pid %d); they are never queried.",
            layout,
            len(unpaired),
            min(unpaired),
        )


# --- PRID2011 (single shot) -----------------------------------------------------------------------


@dataclass
class PridConfig(RandomSplitsConfig):
    """Options of PRID2011 (single shot)."""

    num_shared_ids: int = 200
    """Persons 1..N appear in both cameras (200 in PRID2011); higher numbers are different people
    in cam_a and cam_b."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_shared_ids < 1:
            raise ValueError(f"PridConfig: option num_shared_ids={self.num_shared_ids!r} must be >= 1.")


class Prid(RandomSplitsBuilder):
    """PRID2011 single shot (Hirzer et al., SCIA 2011): 385 people in cam_a, 749 in cam_b, 200 in both."""

    BUILDER_CONFIG_CLASS = PridConfig
    config: PridConfig

    LAYOUT_NAME = "prid"
    PRETTY_NAME = "PRID2011"
    DESCRIPTION = (
        "PRID2011 (single shot): one image per person from each of two non-overlapping outdoor "
        "cameras; 385 people in camera A, 749 in camera B, the first 200 of them in both."
    )
    HOMEPAGE = "https://www.tugraz.at/institute/icg/research/team-bischof/lrs/downloads/PRID11/"
    LICENSE = "Research use only; see the PRID2011 terms."
    CITATION = """@inproceedings{hirzer2011person,
  title={Person Re-Identification by Descriptive and Discriminative Classification},
  author={Hirzer, Martin and Beleznai, Csaba and Roth, Peter M. and Bischof, Horst},
  booktitle={Scandinavian Conference on Image Analysis (SCIA)},
  year={2011}
}"""
    SPLIT_RULE = (
        "each random split tests on half of the 200 people seen by both cameras (100): their cam_a "
        "images are the queries; the gallery is their cam_b images plus the cam_b images of the 549 "
        "people only cam_b saw (torchreid's single-shot protocol)."
    )
    EVALUATION = (
        "PRID2011 single shot, 10 random splits: 100 of the 200 people seen by both cameras per split; "
        "cam_a queries against a cam_b gallery of those people plus the 549 cam_b-only people as "
        "distractors. Report the mean over splits 0-9."
    )

    def _scan(self, root: Path) -> dict[str, SplitScan]:
        hint = "A PRID2011 folder (prid_2011) holds single_shot/cam_a and single_shot/cam_b."
        single = require_dir(root / "single_shot", self.LAYOUT_NAME, "the single_shot folder", hint=hint)
        cam_a = require_dir(single / "cam_a", self.LAYOUT_NAME, "the single_shot/cam_a folder", hint=hint)
        cam_b = require_dir(single / "cam_b", self.LAYOUT_NAME, "the single_shot/cam_b folder", hint=hint)
        scans = _pools(root, cam_a, cam_b)
        shared = self.config.num_shared_ids
        for camid, folder in enumerate((cam_a, cam_b)):
            seen: dict[int, Path] = {}
            for path in list_images(folder, scans["train"]):
                match = self._parse(scans["train"], path, PRID_PATTERN, "person_0001.png")
                if match is None:
                    continue
                number = int(match.group("pid"))
                if number < 1:
                    scans["train"].bad.append((path, "person numbers start at 1 (person_0001.png)"))
                    continue
                self._one_per_person(seen, number, path, f"single_shot/{folder.name}")
                if camid == 0:
                    pid = number if number <= shared else PRID_CAM_A_ONLY_OFFSET + number
                    pool = scans["query"] if number <= shared else None  # cam_a-only: no true match
                else:
                    pid, pool = number, scans["gallery"]
                record = ImageRecord(path=path, pid=pid, camid=camid)
                scans["train"].records.append(record)
                if pool is not None:
                    pool.records.append(record)
        missing = sorted({r.pid for r in scans["query"].records} - {r.pid for r in scans["gallery"].records})
        if missing:
            logger.warning(
                "prid: %d of the %d shared people have no cam_b image (e.g. person %d); they are never queried.",
                len(missing),
                shared,
                missing[0],
            )
        return scans


# --- GRID -----------------------------------------------------------------------------------------


@dataclass
class GridConfig(RandomSplitsConfig):
    """Options of GRID."""

    partitions: Literal["auto", "file", "random"] = "auto"
    """Where the 10 splits come from: ``file``: the release's ``features_and_partitions.mat``
    (``trainIdxAll``); ``random``: seeded random halves like the other sets; ``auto``: the file
    when it is there, else random (with a warning)."""


class Grid(RandomSplitsBuilder):
    """QMUL GRID (Loy et al., CVPR 2009): 250 probe/gallery pairs and 775 gallery distractors, 8 cameras."""

    BUILDER_CONFIG_CLASS = GridConfig
    config: GridConfig

    LAYOUT_NAME = "grid"
    PRETTY_NAME = "GRID"
    DESCRIPTION = (
        "QMUL underground Re-ID (GRID): 8 disjoint cameras of a busy underground station; 250 people "
        "with one probe and one gallery image each, and 775 more gallery images of other people."
    )
    HOMEPAGE = "https://personal.ie.cuhk.edu.hk/~ccloy/downloads_qmul_underground_reid.html"
    LICENSE = "Research use only; see the QMUL underground Re-ID terms."
    CITATION = """@inproceedings{loy2009multi,
  title={Multi-Camera Activity Correlation Analysis},
  author={Loy, Chen Change and Xiang, Tao and Gong, Shaogang},
  booktitle={IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  year={2009}
}"""
    SPLIT_RULE = (
        "each split tests on 125 of the 250 people (the release's partitions, or random halves): their "
        "probe images are the queries; the gallery is their gallery images plus the 775 distractors."
    )
    EVALUATION = (
        "GRID, 10 splits (the release's features_and_partitions.mat, or seeded random halves): 125 "
        "probe queries against 125 true matches plus 775 distractors (900 gallery images). Report the "
        "mean over splits 0-9."
    )

    @property
    def partitions_file(self) -> Path:
        return self.root / GRID_PARTITIONS_FILE

    def uses_partitions_file(self) -> bool:
        """Whether the splits come from ``features_and_partitions.mat`` (else seeded random halves)."""
        mode = self.config.partitions
        return mode == "file" or (mode == "auto" and self.partitions_file.is_file())

    def train_partitions(self) -> list[frozenset[int]] | None:
        """The training identities of each shipped partition, or ``None`` for random splits."""
        if not self.uses_partitions_file():
            if self.config.partitions == "auto":
                logger.warning(
                    "grid: %s not found: using seeded random splits instead of the release's partitions.",
                    self.partitions_file,
                )
            return None
        require_file(self.partitions_file, self.LAYOUT_NAME, "the partition file")
        return read_grid_partitions(self.partitions_file)

    def trial_selector(self) -> TrialSelector:
        partitions = self.train_partitions()
        if partitions is None:
            return paired_trial
        return functools.partial(paired_trial, train_ids=partitions)

    def evaluation_protocol(self, splits: Mapping[str, Any] | None = None) -> EvalProtocol:
        """``random_splits``, saying where the splits come from."""
        protocol = super().evaluation_protocol(splits)
        source = (
            f"the release's {GRID_PARTITIONS_FILE}" if self.uses_partitions_file() else "seeded random halves"
        )
        return dataclasses.replace(protocol, description=f"{protocol.description} Splits: {source}.")

    def _scan(self, root: Path) -> dict[str, SplitScan]:
        hint = "A GRID folder (underground_reid) holds probe/, gallery/ and features_and_partitions.mat."
        probe = require_dir(root / "probe", self.LAYOUT_NAME, "the probe folder", hint=hint)
        gallery = require_dir(root / "gallery", self.LAYOUT_NAME, "the gallery folder", hint=hint)
        scans = _pools(root, probe, gallery)
        for folder, pool in ((probe, scans["query"]), (gallery, scans["gallery"])):
            for path in list_images(folder, pool):
                match = self._parse(pool, path, GRID_PATTERN, "0001_1_25004_107_32_130.jpeg")
                if match is None:
                    continue
                pid, camera = int(match.group("pid")), int(match.group("cam"))
                if not 1 <= camera <= GRID_NUM_CAMERAS:
                    raise ReidDataError(
                        f"grid {folder.name}: {self.relative(path)}: camera {camera} is unknown (GRID has "
                        f"cameras 1..{GRID_NUM_CAMERAS}, the second field of the name)."
                    )
                if pid == 0 and pool is scans["query"]:
                    pool.distractors_dropped += 1
                    continue
                record = ImageRecord(path=path, pid=pid, camid=camera - 1)
                pool.records.append(record)
                if pid != 0:  # the distractors are negatives only
                    scans["train"].records.append(record)
        partitions = self.train_partitions()
        if partitions is not None:
            self._check_partitions(partitions, {r.pid for r in scans["query"].records})
        return scans

    def _check_partitions(self, partitions: list[frozenset[int]], probe_ids: set[int]) -> None:
        for trial, train in enumerate(partitions):
            unknown = sorted(train - probe_ids)
            if unknown:
                raise ReidDataError(
                    f"grid: {self.partitions_file}: field trainIdxAll{{{trial + 1}}}.personIdx lists "
                    f"persons {unknown[:5]} that have no probe image in {self.root / 'probe'}."
                )
            if not probe_ids - train:
                raise ReidDataError(
                    f"grid: {self.partitions_file}: field trainIdxAll{{{trial + 1}}}.personIdx leaves no "
                    "test person."
                )


# --- QMUL iLIDS -----------------------------------------------------------------------------------


class Ilids(RandomSplitsBuilder):
    """QMUL iLIDS (Zheng et al., BMVC 2009): 476 images of 119 people from an airport hall."""

    LAYOUT_NAME = "ilids"
    PRETTY_NAME = "QMUL iLIDS"
    CROSS_CAMERA = False
    DESCRIPTION = (
        "QMUL iLIDS (i-LIDS Pedestrian): 476 images of 119 people in the arrival hall of an airport, "
        "from the i-LIDS multi-camera tracking scenario; cameras are not labelled."
    )
    HOMEPAGE = "https://www.eecs.qmul.ac.uk/~jason/data/i-LIDS_Pedestrian.tgz"
    LICENSE = "Research use only; see the i-LIDS terms."
    CITATION = """@inproceedings{zheng2009associating,
  title={Associating Groups of People},
  author={Zheng, Wei-Shi and Gong, Shaogang and Xiang, Tao},
  booktitle={British Machine Vision Conference (BMVC)},
  year={2009}
}"""
    SPLIT_RULE = (
        "each random split tests on 60 of the 119 people; for each, two of its images are drawn, one "
        "query and one gallery image (torchreid's protocol). Cameras are unknown, so every gallery "
        "image of the query's identity is a match."
    )
    EVALUATION = (
        "QMUL iLIDS, 10 random splits: 60 test people per split, one query and one gallery image each "
        "(drawn with the split's seed); no camera rule. Report the mean over splits 0-9."
    )

    def trial_selector(self) -> TrialSelector:
        return two_image_trial

    def _scan(self, root: Path) -> dict[str, SplitScan]:
        hint = "A QMUL iLIDS folder (i-LIDS_Pedestrian) holds Persons/0001001.jpg ..."
        persons = require_dir(root / "Persons", self.LAYOUT_NAME, "the Persons folder", hint=hint)
        scans = _pools(root, persons, persons)
        for path in list_images(persons, scans["train"]):
            match = self._parse(scans["train"], path, ILIDS_PATTERN, "0001001.jpg")
            if match is None:
                continue
            pid = int(match.group("pid"))
            if pid == 0:
                scans["train"].bad.append((path, "person numbers start at 0001"))
                continue
            record = ImageRecord(path=path, pid=pid, camid=0)
            for scan in scans.values():
                scan.records.append(record)
        counts: dict[int, int] = defaultdict(int)
        for record in scans["train"].records:
            counts[record.pid] += 1
        single = sorted(pid for pid, n in counts.items() if n < 2)
        if single:
            logger.warning(
                "ilids: %d person(s) have a single image (e.g. %d); they are never queried.",
                len(single),
                single[0],
            )
        return scans


# --- CUHK02 -----------------------------------------------------------------------------------------


class Cuhk02(ReidBuilder):
    """CUHK02 (Li and Wang, CVPR 2013): 1,816 people, 5 camera pairs; a training-only source."""

    LAYOUT_NAME = "cuhk02"
    PRETTY_NAME = "CUHK02"
    DESCRIPTION = (
        "CUHK02: 7,264 images of 1,816 people on a university campus, seen by five pairs of "
        "disjoint cameras (P1-P5: 971, 306, 107, 193 and 239 people), two images per camera; used "
        "as a training-only source (domain-generalisation protocol 1)."
    )
    HOMEPAGE = "https://www.ee.cuhk.edu.hk/~xgwang/CUHK_identification.html"
    LICENSE = "Research use only; see the CUHK terms."
    CITATION = """@inproceedings{li2013locally,
  title={Locally Aligned Feature Transforms across Views},
  author={Li, Wei and Wang, Xiaogang},
  booktitle={IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  year={2013}
}"""
    EVALUATION = "Training-only source (all five camera pairs): there is no query/gallery split."

    def _scan(self, root: Path) -> dict[str, SplitScan]:
        hint = "A CUHK02 folder (Dataset) holds P1 .. P5, each with cam1/ and cam2/."
        scan = SplitScan(source=root)
        for pair_number, pair in enumerate(CUHK02_PAIRS, start=1):
            pair_dir = require_dir(root / pair, self.LAYOUT_NAME, f"the camera pair folder {pair}", hint=hint)
            for cam_number in (1, 2):
                folder = require_dir(
                    pair_dir / f"cam{cam_number}",
                    self.LAYOUT_NAME,
                    f"the folder {pair}/cam{cam_number}",
                    hint,
                )
                camid = 2 * (pair_number - 1) + cam_number - 1
                for path in list_images(folder, scan):
                    match = CUHK02_PATTERN.match(path.name)
                    if match is None:
                        scan.bad.append(
                            (
                                path,
                                "file name does not follow the CUHK02 scheme (<person>_<n>.png, e.g. 0001_1.png)",
                            )
                        )
                        continue
                    number = int(match.group("pid"))
                    if number >= CUHK02_PAIR_OFFSET:
                        raise ReidDataError(
                            f"cuhk02: {self.relative(path)}: person number {number} is too large "
                            f"(at most {CUHK02_PAIR_OFFSET - 1} per camera pair)."
                        )
                    pid = pair_number * CUHK02_PAIR_OFFSET + number
                    scan.records.append(ImageRecord(path=path, pid=pid, camid=camid))
        return {"train": scan}
