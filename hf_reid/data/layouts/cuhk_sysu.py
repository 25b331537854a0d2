"""CUHK-SYSU person crops: a train-only source for multi-source and generalisable Re-ID.

Layout: ``<data_dir>/cropped_images/pXXXX_sYYYY_N.jpg`` (pid ``XXXX``, scene ``YYYY``), the
crops that torchreid and fast-reid prepare from the CUHK-SYSU person-search annotations. The
scenes are not cameras, so every image gets camera 0. There is no query/gallery split.
"""

from __future__ import annotations

import re
from pathlib import Path

from .base import ImageRecord, ReidBuilder, SplitScan, list_images, require_dir

CUHK_SYSU_PATTERN = re.compile(r"^p(?P<pid>\d+)_s\d+(?:_\d+)?\.(?:jpe?g|png)$", re.IGNORECASE)


class CuhkSysu(ReidBuilder):
    """CUHK-SYSU crops (Xiao et al., CVPR 2017): 11,934 identities, 34,574 crops; train only."""

    LAYOUT_NAME = "cuhk_sysu"
    PRETTY_NAME = "CUHK-SYSU"
    DESCRIPTION = (
        "CUHK-SYSU person crops: 34,574 boxes of 11,934 identities cut from street snaps and movie "
        "frames of the CUHK-SYSU person-search dataset; used as a training-only source."
    )
    HOMEPAGE = "http://www.ee.cuhk.edu.hk/~xgwang/PS/dataset.html"
    LICENSE = "Research use only; see the CUHK-SYSU terms."
    CITATION = """@inproceedings{xiao2017joint,
  title={Joint Detection and Identification Feature Learning for Person Search},
  author={Xiao, Tong and Li, Shuang and Wang, Bochao and Lin, Liang and Wang, Xiaogang},
  booktitle={IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  year={2017}
}"""

    EVALUATION = "Training-only source: there is no query/gallery split."

    def _scan(self, root: Path) -> dict[str, SplitScan]:
        folder = require_dir(
            root / "cropped_images",
            self.LAYOUT_NAME,
            "the crop folder",
            hint="Crop the person boxes first (torchreid and fast-reid write cropped_images/pXXXX_sYYYY_N.jpg).",
        )
        scan = SplitScan(source=folder)
        for path in list_images(folder, scan):
            match = CUHK_SYSU_PATTERN.match(path.name)
            if match is None:
                scan.bad.append(
                    (path, "file name does not follow the CUHK-SYSU crop scheme (e.g. p11422_s16929_1.jpg)")
                )
                continue
            scan.records.append(ImageRecord(path=path, pid=int(match.group("pid")), camid=0))
        return {"train": scan}
