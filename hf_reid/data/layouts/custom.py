"""A user's own data: a folder per identity, or a CSV of ``path,pid[,camid][,clothes_id][,split]``.

Folder form::

    <data_dir>/<pid>/*.jpg                           everything is training data (see split rules)
    <data_dir>/{train,query,gallery}/<pid>/*.jpg     explicit splits (query and gallery together)

CSV form (``csv_file="labels.csv"``, paths relative to ``data_dir``)::

    path,pid,camid,split
    alice/001.jpg,alice,0,query

Identity names that are all integers are used as pids; otherwise pids are 0..N-1 in sorted name
order (the ``path`` column keeps the original name). ``camid`` is 0-based; without it, cameras
come from ``camera_pattern`` or are all 0.

Split rules: with ``num_test_ids=N`` and no explicit query/gallery, N identities (drawn with
``split_seed``) become test identities; ``num_query_per_id`` of each one's images form the query
and the rest the gallery. Test identities need at least ``num_query_per_id + 1`` images.

Without cameras, query and gallery images share camera 0, so the standard same-camera removal
would discard every true match: evaluate such data with ``cross_camera=False`` (see
docs/DATASETS.md).
"""

from __future__ import annotations

import csv
import logging
import random
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..features import NO_CLOTHES_ID
from ..protocols import NO_CAMERAS, STANDARD, EvalProtocol
from .base import (
    IMAGE_EXTENSIONS,
    ImageRecord,
    ReidBuilder,
    ReidBuilderConfig,
    ReidDataError,
    SplitScan,
    is_number,
    list_images,
    require_file,
)

logger = logging.getLogger(__name__)

SPLIT_FOLDERS = ("train", "query", "gallery")


@dataclass
class CustomConfig(ReidBuilderConfig):
    """Options of the custom layout."""

    csv_file: str | None = None
    """A CSV with a header row (``path,pid`` required; ``camid``, ``clothes_id``, ``split``
    optional), relative to ``data_dir``; ``None`` reads identity folders."""
    camera_pattern: str | None = None
    """Regex searched in each file name whose first group is the camera number (e.g.
    ``r"_c(\\d+)"``); used when there is no ``camid`` column."""
    camera_base: int = 1
    """The number ``camera_pattern`` gives the first camera (1: ``c1`` -> camid 0)."""
    num_test_ids: int = 0
    """Identities to hold out as query/gallery when the data has no explicit split."""
    num_query_per_id: int = 1
    split_seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.camera_pattern is not None:
            try:
                compiled = re.compile(self.camera_pattern)
            except re.error as err:
                raise ValueError(
                    f"custom: camera_pattern {self.camera_pattern!r} is not a valid regex: {err}."
                ) from err
            if compiled.groups < 1:
                raise ValueError(
                    f"custom: camera_pattern {self.camera_pattern!r} needs a group capturing the camera number."
                )
        if self.num_test_ids < 0 or self.num_query_per_id < 1:
            raise ValueError("custom: num_test_ids must be >= 0 and num_query_per_id >= 1.")


class Custom(ReidBuilder):
    """Your own person crops, from identity folders or a CSV."""

    BUILDER_CONFIG_CLASS = CustomConfig
    config: CustomConfig

    LAYOUT_NAME = "custom"
    PRETTY_NAME = "Custom Re-ID data"
    DESCRIPTION = "A user's own person crops, read with hf_reid's custom layout (identity folders or a CSV)."

    EVALUATION = (
        "Market-1501 protocol when the data has cameras. Without cameras every image has camid 0, "
        "so evaluate with cross_camera=False (every same-identity gallery image is a match)."
    )

    @property
    def domain(self) -> str:
        return self.config.domain or self.root.name

    def evaluation_protocol(self, splits: Mapping[str, Any] | None = None) -> EvalProtocol:
        """The Market-1501 protocol when the data has cameras; without cameras (no ``camid``
        column and no ``camera_pattern``, so every query and gallery image has camid 0) every
        same-identity gallery image is a match (:data:`~hf_reid.data.protocols.NO_CAMERAS`)."""
        if splits is not None and all(
            max(splits[name]["camid"], default=0) == 0 for name in ("query", "gallery") if name in splits
        ):
            return NO_CAMERAS
        return STANDARD

    # --- reading ------------------------------------------------------------------------------

    def _scan(self, root: Path) -> dict[str, SplitScan]:
        if self.config.csv_file is not None:
            scans = self._scan_csv(
                root, require_file(root / self.config.csv_file, self.LAYOUT_NAME, "the CSV file")
            )
        else:
            scans = self._scan_folders(root)
        if ("query" in scans) != ("gallery" in scans):
            have, missing = ("query", "gallery") if "query" in scans else ("gallery", "query")
            raise ReidDataError(
                f"custom: {root} has a {have} split but no {missing} split; give both or neither."
            )
        if self.config.num_test_ids and "query" in scans:
            raise ReidDataError(
                f"custom: {root} already has query/gallery splits; num_test_ids={self.config.num_test_ids} "
                "applies only to data without them."
            )
        return scans

    def _scan_folders(self, root: Path) -> dict[str, SplitScan]:
        split_dirs = {split: root / split for split in SPLIT_FOLDERS if (root / split).is_dir()}
        if not split_dirs:
            split_dirs = {"train": root}
        identity_dirs = {
            split: sorted(p for p in folder.iterdir() if p.is_dir()) for split, folder in split_dirs.items()
        }
        pid_of = self._pid_mapping(
            {d.name for dirs in identity_dirs.values() for d in dirs}, source=str(root)
        )
        scans = {}
        for split, folder in split_dirs.items():
            scan = SplitScan(source=folder)
            for stray in list_images(folder, scan):
                scan.bad.append(
                    (stray, "image is not inside an identity folder (<data_dir>/<pid>/image.jpg)")
                )
            for identity_dir in identity_dirs[split]:
                for path in list_images(identity_dir, scan):
                    self._add(scan, path, pid_of[identity_dir.name], camid=None, clothes_id=NO_CLOTHES_ID)
            scans[split] = scan
        return scans

    def _scan_csv(self, root: Path, csv_path: Path) -> dict[str, SplitScan]:
        with csv_path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            missing = {"path", "pid"} - set(columns)
            if missing:
                raise ReidDataError(
                    f"custom: {csv_path} needs a header row with the columns path,pid (optional camid, "
                    f"clothes_id, split); missing {sorted(missing)}, found {columns}."
                )
            rows = [
                ({k.strip(): (v or "").strip() for k, v in row.items() if k}, n)
                for n, row in enumerate(reader, start=2)
            ]
        pid_of = self._pid_mapping({row["pid"] for row, _ in rows}, source=str(csv_path))
        scans: dict[str, SplitScan] = {}
        for row, line in rows:
            split = row.get("split") or "train"
            if split not in SPLIT_FOLDERS:
                raise ReidDataError(
                    f"custom: {csv_path} line {line}: split {split!r} is not one of {list(SPLIT_FOLDERS)}."
                )
            if not row["path"] or not row["pid"]:
                raise ReidDataError(f"custom: {csv_path} line {line}: path and pid must not be empty.")
            camid = self._int_cell(row, "camid", csv_path, line)
            clothes_id = self._int_cell(row, "clothes_id", csv_path, line)
            scan = scans.setdefault(split, SplitScan(source=csv_path))
            path = Path(row["path"]) if Path(row["path"]).is_absolute() else root / row["path"]
            if not path.name.lower().endswith(IMAGE_EXTENSIONS):
                scan.bad.append((path, f"{csv_path.name} line {line}: not an image file name"))
                continue
            self._add(
                scan,
                path,
                pid_of[row["pid"]],
                camid=camid,
                clothes_id=NO_CLOTHES_ID if clothes_id is None else clothes_id,
            )
        return scans

    @staticmethod
    def _int_cell(row: dict[str, str], column: str, csv_path: Path, line: int) -> int | None:
        value = row.get(column, "")
        if value == "":
            return None
        if not is_number(value.lstrip("-")):
            raise ReidDataError(f"custom: {csv_path} line {line}: {column} {value!r} is not an integer.")
        return int(value)

    def _pid_mapping(self, names: set[str], source: str) -> dict[str, int]:
        """Identity name -> pid: the integer itself when every name is one, else sorted order."""
        if all(is_number(name.lstrip("-")) for name in names):
            return {name: int(name) for name in names}
        logger.info(
            "custom: identity names in %s are not all integers; assigned pids 0..%d in sorted name order.",
            source,
            len(names) - 1,
        )
        return {name: index for index, name in enumerate(sorted(names))}

    def _add(self, scan: SplitScan, path: Path, pid: int, *, camid: int | None, clothes_id: int) -> None:
        if pid == -1:
            scan.junk += 1
            return
        if camid is None:
            camid = 0
            if self.config.camera_pattern is not None:
                match = re.search(self.config.camera_pattern, path.name)
                if match is None or not is_number(match.group(1)):
                    scan.bad.append(
                        (
                            path,
                            f"camera_pattern {self.config.camera_pattern!r} finds no camera number in the name",
                        )
                    )
                    return
                camid = int(match.group(1)) - self.config.camera_base
                if camid < 0:
                    raise ReidDataError(
                        f"custom: {self.relative(path)}: camera {match.group(1)} is below camera_base={self.config.camera_base}."
                    )
        if camid < 0:
            raise ReidDataError(
                f"custom: {self.relative(path)}: camid {camid} is negative (camids are 0-based)."
            )
        scan.records.append(ImageRecord(path=path, pid=pid, camid=camid, clothes_id=clothes_id))

    # --- split rules --------------------------------------------------------------------------

    def _select(self, splits: dict[str, list[ImageRecord]]) -> dict[str, list[ImageRecord]]:
        if not self.config.num_test_ids:
            return splits
        by_pid: dict[int, list[ImageRecord]] = defaultdict(list)
        for record in splits["train"]:
            by_pid[record.pid].append(record)
        need = self.config.num_query_per_id + 1
        eligible = sorted(pid for pid, records in by_pid.items() if len(records) >= need)
        if len(eligible) < self.config.num_test_ids:
            raise ReidDataError(
                f"custom: num_test_ids={self.config.num_test_ids} but only {len(eligible)} identities in "
                f"{self.root} have the {need} images a test identity needs (query + gallery)."
            )
        rng = random.Random(self.config.split_seed)
        test_ids = set(rng.sample(eligible, self.config.num_test_ids))
        train, query, gallery = [], [], []
        for pid in sorted(by_pid):
            records = sorted(by_pid[pid], key=lambda r: str(r.path))
            if pid not in test_ids:
                train.extend(records)
                continue
            chosen = set(rng.sample(range(len(records)), self.config.num_query_per_id))
            for index, record in enumerate(records):
                (query if index in chosen else gallery).append(record)
        result = {"train": train, "query": query, "gallery": gallery}
        if not train:
            logger.info("custom: every identity was held out for testing; there is no train split.")
            del result["train"]
        return result
