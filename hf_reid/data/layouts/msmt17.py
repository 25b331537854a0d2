"""MSMT17 (V1 and V2), read through its list files.

Layout (``data_dir`` is the release folder, or a folder holding ``MSMT17_V1``/``MSMT17_V2``)::

    MSMT17_V1/train/0000/0000_000_01_0303morning_0015_0.jpg     V2: mask_train_v2/...
    MSMT17_V1/test/...                                          V2: mask_test_v2/...
    MSMT17_V1/list_train.txt, list_val.txt                      "<path under train/> <pid>"
    MSMT17_V1/list_query.txt, list_gallery.txt                  "<path under test/> <pid>"

The camera is the third ``_`` field of the file name (1..15). ``list_val.txt`` is a subset of
the training identities held out for validation; it joins the train split only with
``combine_val=True`` (published results on the standard protocol train on ``list_train.txt``
alone, although several CLIP-ReID-lineage codebases always merge it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .base import (
    ImageRecord,
    ReidBuilder,
    ReidBuilderConfig,
    ReidDataError,
    SplitScan,
    is_number,
    require_dir,
    require_file,
)

logger = logging.getLogger(__name__)

MSMT17_NUM_CAMERAS = 15
MSMT17_FOLDERS = {"v1": ("train", "test"), "v2": ("mask_train_v2", "mask_test_v2")}
"""Release -> (train folder, test folder)."""


@dataclass
class Msmt17Config(ReidBuilderConfig):
    """Options of MSMT17."""

    msmt_version: Literal["v1", "v2"] | None = None
    """Release to read: ``"v1"`` (original) or ``"v2"`` (faces blurred). ``None`` picks the one
    present on disk and raises if both are. (Not called ``version``: that name is the
    ``datasets`` config version.)"""
    combine_val: bool = False
    """Add ``list_val.txt`` to the train split."""


class Msmt17(ReidBuilder):
    """MSMT17 (Wei et al., CVPR 2018): 4,101 identities, 126,441 boxes, 15 cameras."""

    BUILDER_CONFIG_CLASS = Msmt17Config
    config: Msmt17Config

    LAYOUT_NAME = "msmt17"
    PRETTY_NAME = "MSMT17"
    DESCRIPTION = (
        "MSMT17: 126,441 boxes of 4,101 identities from 15 indoor and outdoor cameras of a "
        "university campus, four days of varied weather and lighting; 1,041 training identities "
        "(32,621 images) and 3,060 test identities (11,659 query, 82,161 gallery images)."
    )
    HOMEPAGE = "https://www.pkuvmc.com/dataset.html"
    LICENSE = "Research use only; see the MSMT17 release agreement."
    CITATION = """@inproceedings{wei2018person,
  title={Person Transfer GAN to Bridge Domain Gap for Person Re-Identification},
  author={Wei, Longhui and Zhang, Shiliang and Gao, Wen and Tian, Qi},
  booktitle={IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  year={2018}
}"""

    def _release_dir(self, root: Path) -> tuple[Path, str]:
        """The folder holding the list files, and the release it contains."""
        candidates = [root] + [root / name for name in ("MSMT17_V1", "MSMT17_V2", "MSMT17")]
        found = []
        for folder in candidates:
            for version, (train_name, _) in MSMT17_FOLDERS.items():
                if (folder / train_name).is_dir() and (folder / "list_train.txt").is_file():
                    found.append((folder, version))
        wanted = self.config.msmt_version
        if wanted is not None:
            found = [item for item in found if item[1] == wanted]
        if not found:
            train_names = " or ".join(f"{t}/" for t, _ in MSMT17_FOLDERS.values())
            what = f"MSMT17 {wanted.upper()}" if wanted else "an MSMT17 release"
            raise FileNotFoundError(
                f"msmt17: no {what} under {root}: expected {train_names} next to list_train.txt, "
                "either in data_dir itself or in data_dir/MSMT17_V1 or data_dir/MSMT17_V2."
            )
        versions = sorted({version for _, version in found})
        if len(versions) > 1:
            raise ReidDataError(
                f"msmt17: {root} holds both MSMT17 V1 and V2; pass msmt_version='v1' or 'v2'."
            )
        folder, version = found[0]
        logger.info("msmt17: reading MSMT17 %s from %s.", version.upper(), folder)
        return folder, version

    def _scan(self, root: Path) -> dict[str, SplitScan]:
        release, version = self._release_dir(root)
        train_name, test_name = MSMT17_FOLDERS[version]
        train_dir = require_dir(release / train_name, self.LAYOUT_NAME, "the train image folder")
        test_dir = require_dir(release / test_name, self.LAYOUT_NAME, "the test image folder")
        train = self._read_list(release / "list_train.txt", train_dir, "train")
        if self.config.combine_val:
            val = self._read_list(release / "list_val.txt", train_dir, "train")
            train.records.extend(val.records)
            train.bad.extend(val.bad)
        return {
            "train": train,
            "query": self._read_list(release / "list_query.txt", test_dir, "query"),
            "gallery": self._read_list(release / "list_gallery.txt", test_dir, "gallery"),
        }

    def _read_list(self, list_file: Path, image_dir: Path, split: str) -> SplitScan:
        """Parse ``"<relative path> <pid>"`` lines; the camera comes from the file name."""
        require_file(list_file, self.LAYOUT_NAME, f"the {split} list file")
        scan = SplitScan(source=list_file)
        for line_number, line in enumerate(list_file.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            fields = line.split()
            if len(fields) != 2 or not is_number(fields[1].lstrip("-")):
                raise ReidDataError(
                    f"msmt17: {list_file} line {line_number}: expected '<image path> <pid>', got {line!r}."
                )
            path = image_dir / fields[0]
            pid = int(fields[1])
            name_fields = path.name.split("_")
            if len(name_fields) < 3 or not is_number(name_fields[2]):
                scan.bad.append(
                    (
                        path,
                        "file name does not follow the MSMT17 scheme (e.g. 0000_000_01_0303morning_0015_0.jpg)",
                    )
                )
                continue
            camera = int(name_fields[2])
            if not 1 <= camera <= MSMT17_NUM_CAMERAS:
                raise ReidDataError(
                    f"msmt17 {split}: {self.relative(path)} ({list_file.name} line {line_number}): camera "
                    f"{camera} is unknown (MSMT17 has cameras 1..{MSMT17_NUM_CAMERAS})."
                )
            if pid == -1:
                scan.junk += 1
                continue
            scan.records.append(ImageRecord(path=path, pid=pid, camid=camera - 1))
        return scan
