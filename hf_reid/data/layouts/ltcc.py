"""LTCC: long-term clothes-changing Re-ID (Qian et al., ACCV 2020).

Layout::

    <data_dir>/train/PPP_O_cC_FFFFFF.png     pid, outfit (clothes id), camera, frame
    <data_dir>/query/...
    <data_dir>/test/...                      the gallery
    <data_dir>/info/...                      optional id lists; not needed

``clothes_id`` is the outfit field (numbered within each identity). Protocols:

- ``standard``: every query; evaluation excludes same-identity gallery images of the query's
  camera (the Market rule);
- ``clothes_changing``: evaluation also excludes same-identity gallery images in the query's
  clothes (``evaluate_rank(..., clothes_changing=True)``), so only queries with a gallery image
  of the same identity in other clothes from another camera can be answered; the builder keeps
  exactly those queries (and logs how many it left out), as evaluation would skip the rest.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..protocols import STANDARD, EvalProtocol
from .base import (
    ImageRecord,
    ReidBuilder,
    ReidBuilderConfig,
    ReidDataError,
    SplitScan,
    list_images,
    require_dir,
)

logger = logging.getLogger(__name__)

LTCC_FOLDERS = {"train": "train", "query": "query", "gallery": "test"}
LTCC_NUM_CAMERAS = 12
LTCC_PATTERN = re.compile(r"^(?P<pid>\d+)_(?P<clothes>\d+)_c(?P<cam>\d+)_\d+\.(?:png|jpe?g)$", re.IGNORECASE)


@dataclass
class LtccConfig(ReidBuilderConfig):
    """Options of LTCC."""

    protocol: Literal["standard", "clothes_changing"] = "standard"
    num_cameras: int | None = LTCC_NUM_CAMERAS
    """Highest camera number allowed (LTCC: 12); ``None`` accepts any."""


class Ltcc(ReidBuilder):
    """LTCC: 152 identities in 478 outfits from 12 indoor cameras, 17,119 images."""

    BUILDER_CONFIG_CLASS = LtccConfig
    config: LtccConfig

    LAYOUT_NAME = "ltcc"
    PRETTY_NAME = "LTCC"
    DESCRIPTION = (
        "LTCC (Long-Term Cloth-Changing): 17,119 images of 152 identities wearing 478 different "
        "outfits, captured by 12 indoor cameras over two months; 77 training and 75 test identities."
    )
    HOMEPAGE = "https://naiq.github.io/LTCC_Perosn_ReID.html"
    LICENSE = "Research use only; see the LTCC agreement."
    CITATION = """@inproceedings{qian2020long,
  title={Long-Term Cloth-Changing Person Re-identification},
  author={Qian, Xuelin and Wang, Wenxuan and Zhang, Li and Zhu, Fangrui and Fu, Yanwei and Xiang, Tao and Jiang, Yu-Gang and Xue, Xiangyang},
  booktitle={Asian Conference on Computer Vision (ACCV)},
  year={2020}
}"""

    EVALUATION = (
        "Standard protocol: same-identity gallery images of the query's camera are excluded. "
        "Clothes-changing protocol: same-identity gallery images in the query's clothes are "
        "excluded as well (evaluate_rank(..., clothes_changing=True))."
    )

    def _scan(self, root: Path) -> dict[str, SplitScan]:
        scans = {}
        for split, folder_name in LTCC_FOLDERS.items():
            folder = require_dir(
                root / folder_name,
                self.LAYOUT_NAME,
                f"the {split} folder",
                hint="LTCC holds train/, query/ and test/.",
            )
            scan = SplitScan(source=folder)
            for path in list_images(folder, scan):
                match = LTCC_PATTERN.match(path.name)
                if match is None:
                    scan.bad.append(
                        (path, "file name does not follow the LTCC scheme (e.g. 094_1_c9_015861.png)")
                    )
                    continue
                camera = int(match.group("cam"))
                limit = self.config.num_cameras
                if camera < 1 or (limit is not None and camera > limit):
                    raise ReidDataError(
                        f"ltcc {split}: {self.relative(path)}: camera c{camera} is unknown (LTCC has cameras "
                        f"c1..c{limit}); pass num_cameras=... if this set really has more."
                    )
                scan.records.append(
                    ImageRecord(
                        path=path,
                        pid=int(match.group("pid")),
                        camid=camera - 1,
                        clothes_id=int(match.group("clothes")),
                    )
                )
            scans[split] = scan
        return scans

    def _select(self, splits: dict[str, list[ImageRecord]]) -> dict[str, list[ImageRecord]]:
        if self.config.protocol == "standard":
            return splits
        gallery_views: dict[int, set[tuple[int, int]]] = defaultdict(set)
        for record in splits["gallery"]:
            gallery_views[record.pid].add((record.camid, record.clothes_id))
        query = [
            record
            for record in splits["query"]
            if any(
                camid != record.camid and clothes != record.clothes_id
                for camid, clothes in gallery_views.get(record.pid, ())
            )
        ]
        left_out = len(splits["query"]) - len(query)
        if left_out:
            logger.info(
                "ltcc clothes_changing: kept %d of %d queries; %d have no gallery image of the same "
                "identity in other clothes from another camera, so evaluation could not score them.",
                len(query),
                len(splits["query"]),
                left_out,
            )
        return {**splits, "query": query}

    def evaluation_protocol(self, splits: Mapping[str, Any] | None = None) -> EvalProtocol:
        """``standard`` (same identity and camera excluded) or ``clothes_changing`` (same
        identity in the same clothes excluded as well; queries without such a match dropped)."""
        if self.config.protocol == "clothes_changing":
            return EvalProtocol(
                "clothes_changing",
                "LTCC clothes-changing protocol: gallery images of the query's identity from its camera "
                "or in its clothes are excluded.",
                clothes_changing=True,
            )
        return STANDARD
