"""CUHK03 layouts: CUHK03-NP (labeled or detected boxes) and MLR-CUHK03 (low-resolution queries).

Both are distributed as Market-style split folders of PNG crops named ``PPPP_cC_N.png`` with
two cameras (the two views of each CUHK03 camera pair).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..protocols import EvalProtocol
from .base import ReidDataError, require_dir
from .market import MARKET_FOLDERS, MarketStyleBuilder, MarketStyleConfig

CUHK03_CITATION = """@inproceedings{li2014deepreid,
  title={DeepReID: Deep Filter Pairing Neural Network for Person Re-identification},
  author={Li, Wei and Zhao, Rui and Xiao, Tong and Wang, Xiaogang},
  booktitle={IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  year={2014}
}"""


@dataclass
class Cuhk03NpConfig(MarketStyleConfig):
    """Options of CUHK03-NP. ``labeled`` has no default: the two box sets give different
    results, and toolkits disagree on which one is the default (torchreid: detected, fast-reid:
    labeled), so the choice must be written down."""

    labeled: bool | None = None
    """``True``: the hand-drawn boxes (``labeled/``); ``False``: the DPM detections (``detected/``)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.labeled is None:
            raise ValueError(
                "cuhk03_np: choose the box set explicitly: labeled=True (hand-labelled boxes, "
                "folder labeled/) or labeled=False (DPM-detected boxes, folder detected/). "
                "There is no default because published results use both."
            )


class Cuhk03Np(MarketStyleBuilder):
    """CUHK03 under the new protocol of Zhong et al. (CVPR 2017): 767 training identities and
    700 test identities, as distributed in the CUHK03-NP release.

    ``data_dir`` is the ``cuhk03-np`` folder holding ``labeled/`` and ``detected/``, each with
    ``bounding_box_train``, ``query`` and ``bounding_box_test``. Evaluate with the Market
    protocol (the single-gallery-shot CUHK03 metric belongs to the old 20-split protocol).
    """

    BUILDER_CONFIG_CLASS = Cuhk03NpConfig
    config: Cuhk03NpConfig

    LAYOUT_NAME = "cuhk03_np"
    PRETTY_NAME = "CUHK03-NP"
    FILENAME_PATTERN = re.compile(r"^(?P<pid>-1|\d+)_c(?P<cam>\d+)_\d+\.(?:png|jpe?g)$", re.IGNORECASE)
    FILENAME_EXAMPLE = "0003_c1_22.png"
    DEFAULT_NUM_CAMERAS = 2
    HAS_DISTRACTORS = False
    DESCRIPTION = (
        "CUHK03-NP: CUHK03 (1,467 identities, 2 views each, CUHK campus) re-split by Zhong et al. "
        "into 767 training and 700 test identities, with hand-labelled or DPM-detected boxes."
    )
    HOMEPAGE = "https://github.com/zhunzhong07/person-re-ranking/tree/master/CUHK03-NP"
    LICENSE = "Research use only; see the CUHK03 terms."
    CITATION = (
        CUHK03_CITATION
        + """
@inproceedings{zhong2017re,
  title={Re-ranking Person Re-identification with k-reciprocal Encoding},
  author={Zhong, Zhun and Zheng, Liang and Cao, Donglin and Li, Shaozi},
  booktitle={IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  year={2017}
}"""
    )

    @property
    def box_set(self) -> str:
        return "labeled" if self.config.labeled else "detected"

    def split_root(self, root: Path) -> Path:
        nested = root / self.box_set
        if nested.is_dir():
            return nested
        if (root / MARKET_FOLDERS["train"]).is_dir():
            if root.name in ("labeled", "detected") and root.name != self.box_set:
                raise ReidDataError(
                    f"cuhk03_np: data_dir {root} holds the {root.name} boxes but labeled="
                    f"{self.config.labeled} asks for the {self.box_set} ones; pass the cuhk03-np "
                    "folder itself, or the matching labeled=... value."
                )
            return root
        return require_dir(nested, self.LAYOUT_NAME, f"the {self.box_set} box folder")


class MlrCuhk03(MarketStyleBuilder):
    """MLR-CUHK03 (multiple low resolutions): CUHK03 with each query downscaled by a factor of
    2, 3 or 4, the gallery at full resolution (Jiao et al., AAAI 2018).

    Market-style split folders; file names only need to start with ``<pid>_c<camera>``, so both
    the CUHK03-style names of the release and Market-style names (SynthPeds) are read. Any
    number of cameras is accepted unless ``num_cameras`` is given (the release has 2).
    """

    LAYOUT_NAME = "mlr_cuhk03"
    PRETTY_NAME = "MLR-CUHK03"
    FILENAME_PATTERN = re.compile(
        r"^(?P<pid>-1|\d+)_c(?P<cam>\d+)(?:[_s][^/]*)?\.(?:png|jpe?g|bmp)$", re.IGNORECASE
    )
    FILENAME_EXAMPLE = "0003_c1_22.png"
    DEFAULT_NUM_CAMERAS = None
    HAS_DISTRACTORS = True
    EVALUATION = (
        "Market-1501 protocol with low-resolution queries (downscaled by 2, 3 or 4) against a "
        "full-resolution gallery: gallery images of the query's identity and camera are excluded."
    )

    def evaluation_protocol(self, splits: Mapping[str, Any] | None = None) -> EvalProtocol:
        """Low-resolution queries against the full-resolution gallery, Market-1501 junk rule."""
        return EvalProtocol("low_resolution", self.EVALUATION)

    DESCRIPTION = (
        "MLR-CUHK03: cross-resolution person re-identification on CUHK03; queries are "
        "downscaled by 2, 3 or 4 while gallery images keep their full resolution."
    )
    HOMEPAGE = "https://github.com/zqpang/RLIM"
    LICENSE = "Research use only; see the CUHK03 terms."
    CITATION = (
        CUHK03_CITATION
        + """
@inproceedings{jiao2018deep,
  title={Deep Low-Resolution Person Re-Identification},
  author={Jiao, Jiening and Zheng, Wei-Shi and Wu, Ancong and Zhu, Xiatian and Gong, Shaogang},
  booktitle={AAAI Conference on Artificial Intelligence},
  year={2018}
}"""
    )
