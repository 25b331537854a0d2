"""Market-1501-style layouts: Market-1501, DukeMTMC-reID and SynthPeds domains.

All three keep one folder per split (``bounding_box_train``, ``query``, ``bounding_box_test``)
and encode identity and camera in the file name (see docs/LAYOUTS.md). Junk (pid -1) is
dropped; distractors (pid 0) stay in the gallery as negatives and are dropped, with a warning,
anywhere else. CUHK03-NP and MLR-CUHK03 reuse :class:`MarketStyleBuilder` (cuhk03.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..synthetic.manifest import domain_problem
from .base import (
    ImageRecord,
    ReidBuilder,
    ReidBuilderConfig,
    ReidDataError,
    SplitScan,
    list_images,
    require_dir,
)

MARKET_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
"""Split name -> folder name, shared by every Market-style layout."""


@dataclass
class MarketStyleConfig(ReidBuilderConfig):
    """Options of the Market-style layouts."""

    num_cameras: int | None = None
    """Highest camera number allowed in file names (``c1`` .. ``cN``); defaults to the layout's
    own count (Market-1501: 6, DukeMTMC-reID: 8). A file with another camera raises."""


class MarketStyleBuilder(ReidBuilder):
    """A layout of three split folders whose file names start with ``<pid>_c<camera>``."""

    BUILDER_CONFIG_CLASS = MarketStyleConfig
    config: MarketStyleConfig

    FILENAME_PATTERN: ClassVar[re.Pattern[str]]
    """Full-name regex with the named groups ``pid`` and ``cam`` (1-based)."""
    FILENAME_EXAMPLE: ClassVar[str] = ""
    DEFAULT_NUM_CAMERAS: ClassVar[int | None] = None
    HAS_DISTRACTORS: ClassVar[bool] = True
    """Whether pid 0 means "distractor" (Market-1501) rather than an ordinary identity."""

    @property
    def num_cameras(self) -> int | None:
        return self.config.num_cameras if self.config.num_cameras is not None else self.DEFAULT_NUM_CAMERAS

    def split_root(self, root: Path) -> Path:
        """The folder holding the three split folders (CUHK03-NP picks a sub-folder)."""
        return root

    def _scan(self, root: Path) -> dict[str, SplitScan]:
        base = self.split_root(root)
        scans = {}
        for split, folder_name in MARKET_FOLDERS.items():
            folder = require_dir(
                base / folder_name,
                self.LAYOUT_NAME,
                f"the {split} folder",
                hint=f"A {self.LAYOUT_NAME} folder holds {', '.join(MARKET_FOLDERS.values())}.",
            )
            scan = SplitScan(source=folder)
            for path in list_images(folder, scan):
                self._add_file(scan, path, split)
            scans[split] = scan
        return scans

    def _add_file(self, scan: SplitScan, path: Path, split: str) -> None:
        """Parse one file name into a record of ``scan``.

        Junk (pid -1) is counted and dropped; distractors (pid 0, where ``HAS_DISTRACTORS``) are
        kept only in the gallery; an unparsable name is a skippable problem; a camera outside
        ``1..num_cameras`` raises, since it means the folder is not this layout.
        """
        match = self.FILENAME_PATTERN.match(path.name)
        if match is None:
            reason = f"file name does not follow the {self.LAYOUT_NAME} scheme (e.g. {self.FILENAME_EXAMPLE})"
            scan.bad.append((path, reason))
            return
        pid = int(match.group("pid"))
        camera = int(match.group("cam"))
        if pid == -1:
            scan.junk += 1
            return
        if self.HAS_DISTRACTORS and pid == 0 and split not in self.GALLERY_SPLITS:
            scan.distractors_dropped += 1
            return
        limit = self.num_cameras
        if camera < 1 or (limit is not None and camera > limit):
            expected = f"c1..c{limit}" if limit is not None else "c1 or higher"
            raise ReidDataError(
                f"{self.LAYOUT_NAME} {split}: {self.relative(path)}: camera c{camera} is unknown (this "
                f"layout has cameras {expected}). If the folder is another dataset, load it with its "
                "own layout; if it really has more cameras, pass num_cameras=..."
            )
        scan.records.append(ImageRecord(path=path, pid=pid, camid=camera - 1))


class Market1501(MarketStyleBuilder):
    """Market-1501 (Zheng et al., ICCV 2015): 1,501 identities, 6 cameras.

    ``data_dir`` is the extracted ``Market-1501-v15.09.15`` folder. Names:
    ``PPPP_cCsS_FFFFFF_BB.jpg`` (pid, camera, sequence, frame, box).
    """

    LAYOUT_NAME = "market1501"
    PRETTY_NAME = "Market-1501"
    FILENAME_PATTERN = re.compile(
        r"^(?P<pid>-1|\d+)_c(?P<cam>\d+)s\d+_\d+_\d+\.(?:jpe?g|png)$", re.IGNORECASE
    )
    FILENAME_EXAMPLE = "0002_c1s1_000451_03.jpg"
    DEFAULT_NUM_CAMERAS = 6
    DESCRIPTION = (
        "Market-1501: 32,668 boxes of 1,501 identities seen by 6 cameras in front of a supermarket "
        "at Tsinghua University; 751 identities for training, 750 for testing, plus distractors."
    )
    HOMEPAGE = "https://zheng-lab-anu.github.io/Project/project_reid.html"
    LICENSE = "Research use only; see the Market-1501 terms."
    CITATION = """@inproceedings{zheng2015scalable,
  title={Scalable Person Re-identification: A Benchmark},
  author={Zheng, Liang and Shen, Liyue and Tian, Lu and Wang, Shengjin and Wang, Jingdong and Tian, Qi},
  booktitle={IEEE International Conference on Computer Vision (ICCV)},
  year={2015}
}"""


class DukeMtmcReid(MarketStyleBuilder):
    """DukeMTMC-reID (Zheng et al., ICCV 2017): 1,404 identities plus distractors, 8 cameras.

    ``data_dir`` is the extracted ``DukeMTMC-reID`` folder. Names: ``PPPP_cC_fFFFFFFF.jpg``.
    """

    LAYOUT_NAME = "dukemtmc"
    PRETTY_NAME = "DukeMTMC-reID"
    FILENAME_PATTERN = re.compile(r"^(?P<pid>-1|\d+)_c(?P<cam>\d+)_f\d+\.(?:jpe?g|png)$", re.IGNORECASE)
    FILENAME_EXAMPLE = "0001_c2_f0046182.jpg"
    DEFAULT_NUM_CAMERAS = 8
    DESCRIPTION = (
        "DukeMTMC-reID: 36,411 boxes of 1,812 identities from 8 cameras on the Duke University "
        "campus; 702 identities for training, 702 for testing plus 408 gallery-only distractors."
    )
    HOMEPAGE = "https://github.com/layumi/DukeMTMC-reID_evaluation"
    LICENSE = "The DukeMTMC data has been withdrawn by its authors; check your right to use it."
    CITATION = """@inproceedings{zheng2017unlabeled,
  title={Unlabeled Samples Generated by GAN Improve the Person Re-identification Baseline in vitro},
  author={Zheng, Zhedong and Zheng, Liang and Yang, Yi},
  booktitle={IEEE International Conference on Computer Vision (ICCV)},
  year={2017}
}
@inproceedings{ristani2016performance,
  title={Performance Measures and a Data Set for Multi-Target, Multi-Camera Tracking},
  author={Ristani, Ergys and Solera, Francesco and Zou, Roger and Cucchiara, Rita and Tomasi, Carlo},
  booktitle={European Conference on Computer Vision Workshops},
  year={2016}
}"""


class SynthPeds(MarketStyleBuilder):
    """One SynthPeds domain (``<out>/synthpeds_dK``), written in the Market-1501 scheme.

    The ``domain`` column defaults to the folder name, so several domains concatenate into one
    multi-domain set. Any number of cameras is accepted unless ``num_cameras`` is given.

    Only a complete domain loads: the run folder (``data_dir``'s parent) must hold a complete
    ``synthpeds_manifest.json`` listing the domain (or, for folders written by hf_reid before
    manifests, ``synthpeds_meta.json``). Anything else, such as the folders a generation killed
    half-way leaves, raises :class:`ReidDataError` naming the folder and the command that
    regenerates it, whatever ``on_bad_image`` says: missing images would not show as bad files.
    """

    LAYOUT_NAME = "synthpeds"
    PRETTY_NAME = "SynthPeds"
    FILENAME_PATTERN = Market1501.FILENAME_PATTERN
    FILENAME_EXAMPLE = Market1501.FILENAME_EXAMPLE
    DEFAULT_NUM_CAMERAS = None
    DESCRIPTION = (
        "SynthPeds: procedurally rendered pedestrian crops (hf_reid's synthetic Re-ID benchmark), "
        "one Market-1501-style folder per domain."
    )
    HOMEPAGE = "https://github.com/hf-reid/hf_reid"
    LICENSE = "mit"
    CITATION = ""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        problem = domain_problem(self.root)
        if problem is not None:
            raise ReidDataError(f"synthpeds: {self.root} is not a complete SynthPeds domain: {problem}.")

    @property
    def domain(self) -> str:
        return self.config.domain or self.root.name
