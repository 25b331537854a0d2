"""Image-caption JSON in the CUHK-PEDES format (also SynthPeds' captioned single-camera set).

Layout::

    <data_dir>/reid_raw.json   [{"id": 12, "file_path": "imgs/0012_c1_000003.jpg",
                                 "captions": ["A young woman ...", "..."], "split": "train"}, ...]
    <data_dir>/imgs/...

Field names are options, so other caption files (e.g. the ReText-Captions JSON) map onto it.
``file_path`` is resolved against ``image_dir`` when given, else against ``data_dir`` and then
``data_dir/imgs`` (CUHK-PEDES writes paths relative to ``imgs/``). ``captions`` may be a list or
a single string. The camera is parsed from Market-scheme file names (``PPPP_cC...``) and is 0
otherwise (real CUHK-PEDES has no cameras). Everything read goes to the ``train`` split.

Empty or blank captions are dropped with a logged count; an entry left without any caption (an
empty list, ``null``, or no ``captions`` field at all) is a bad record, like a missing image: an
error naming it, or skipped and counted with ``on_bad_image="skip"``. When no entry has the
field, the field name is wrong and the error says how to map it. A file that is not UTF-8 (a
UTF-8 byte-order mark is accepted), not JSON, or not a list of objects raises
:class:`~.base.ReidDataError` naming the file (and the entry).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import ImageRecord, ReidBuilder, ReidBuilderConfig, ReidDataError, SplitScan, require_file

logger = logging.getLogger(__name__)

CAMERA_IN_NAME = re.compile(r"^-?\d+_c(?P<cam>\d+)")
INTEGER_TEXT = re.compile(r"-?[0-9]+")
"""A pid given as a string: ASCII digits only (``str.isdigit`` also accepts ``"²"``)."""


def read_caption_json(json_path: Path) -> Any:
    """The parsed content of a caption JSON file.

    Raises:
        ReidDataError: naming the file, when it cannot be read, is not UTF-8 text (with the
            offset of the first bad byte), is not valid JSON (with line and column) or is nested
            too deeply to parse.
    """
    try:
        text = json_path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ReidDataError(
            f"captions: {json_path} is not UTF-8 text: byte 0x{err.object[err.start]:02x} at offset "
            f"{err.start} ({err.reason}); save it as UTF-8."
        ) from None
    except OSError as err:
        raise ReidDataError(f"captions: {json_path} cannot be read ({err.strerror or err}).") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise ReidDataError(f"captions: {json_path} is nested too deeply to be a caption list.") from None
    except ValueError as err:  # json.JSONDecodeError, or an integer with too many digits
        raise ReidDataError(f"captions: {json_path} is not valid JSON: {err}.") from None


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long, or one the file system cannot encode
        return False


@dataclass
class CaptionsConfig(ReidBuilderConfig):
    """Options of the caption JSON layout."""

    json_file: str = "reid_raw.json"
    """The annotation file, relative to ``data_dir`` (or absolute)."""
    image_dir: str | None = None
    """Folder the image paths are relative to (relative to ``data_dir``); ``None``: try
    ``data_dir`` and then ``data_dir/imgs``."""
    id_field: str = "id"
    path_field: str = "file_path"
    captions_field: str = "captions"
    split_field: str = "split"
    keep_split: str | None = "train"
    """Read only entries whose ``split_field`` equals this (entries without the field are
    kept); ``None`` reads every entry. The others are counted in a log line."""
    camera_from_filename: bool = True
    """Parse the camera from Market-scheme file names; otherwise every image gets camera 0."""


class Captions(ReidBuilder):
    """Person images with free-text descriptions (CUHK-PEDES format); a train split only."""

    BUILDER_CONFIG_CLASS = CaptionsConfig
    config: CaptionsConfig

    LAYOUT_NAME = "captions"
    PRETTY_NAME = "Person captions"
    DESCRIPTION = (
        "Pedestrian images paired with natural-language descriptions, read from a CUHK-PEDES-style "
        "JSON list of {id, file_path, captions, split} entries."
    )
    HOMEPAGE = "https://github.com/ShuangLI59/Person-Search-with-Natural-Language-Description"
    LICENSE = "Depends on the caption source; CUHK-PEDES is for research use only."
    CITATION = """@inproceedings{li2017person,
  title={Person Search with Natural Language Description},
  author={Li, Shuang and Xiao, Tong and Li, Hongsheng and Zhou, Bolei and Yue, Dayu and Wang, Xiaogang},
  booktitle={IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  year={2017}
}"""

    EVALUATION = "Training data (image-text pairs): there is no query/gallery split."

    @property
    def domain(self) -> str:
        return self.config.domain or self.root.name

    def _image_bases(self, root: Path) -> list[Path]:
        if self.config.image_dir is not None:
            return [root / self.config.image_dir]
        return [root, root / "imgs"]

    def _scan(self, root: Path) -> dict[str, SplitScan]:
        json_path = require_file(root / self.config.json_file, self.LAYOUT_NAME, "the caption JSON")
        entries = read_caption_json(json_path)
        if not isinstance(entries, list):
            raise ReidDataError(
                f"captions: {json_path} must hold a JSON list of entries, got {type(entries).__name__}."
            )
        bases = self._image_bases(root)
        scan = SplitScan(source=json_path)
        other_splits = 0
        empty_captions = 0
        read = with_field = 0
        captions_field = self.config.captions_field
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise ReidDataError(f"captions: {json_path} entry {index} is not an object: {entry!r:.80}.")
            split = entry.get(self.config.split_field)
            if self.config.keep_split is not None and split is not None and split != self.config.keep_split:
                other_splits += 1
                continue
            read += 1
            pid = self._field(entry, self.config.id_field, json_path, index)
            file_path = self._field(entry, self.config.path_field, json_path, index)
            with_field += captions_field in entry
            captions = entry.get(captions_field)  # missing or null: no captions (a bad entry below)
            if captions is None:
                captions = []
            if isinstance(pid, str) and INTEGER_TEXT.fullmatch(pid.strip()):
                pid = int(pid)
            if not isinstance(pid, int) or isinstance(pid, bool):
                raise ReidDataError(
                    f"captions: {json_path} entry {index}: field '{self.config.id_field}' must be an "
                    f"integer identity, got {pid!r}."
                )
            if isinstance(captions, str):
                captions = [captions]
            if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
                raise ReidDataError(
                    f"captions: {json_path} entry {index}: field '{self.config.captions_field}' must be "
                    f"a string or a list of strings, got {captions!r:.80}."
                )
            if not isinstance(file_path, str) or not file_path or "\0" in file_path:
                raise ReidDataError(
                    f"captions: {json_path} entry {index}: field '{self.config.path_field}' must be a "
                    f"non-empty path, got {file_path!r:.120}."
                )
            candidates = [base / file_path for base in bases]
            path = next((c for c in candidates if _is_file(c)), candidates[0])
            camid = 0
            if self.config.camera_from_filename:
                match = CAMERA_IN_NAME.match(path.name)
                if match is not None:
                    camid = max(int(match.group("cam")) - 1, 0)
            kept = tuple(c.strip() for c in captions if c.strip())
            empty_captions += len(captions) - len(kept)
            if not kept:
                # An image without any text teaches the text tasks nothing: a bad entry (raises
                # under on_bad_image="error", left out with a count under "skip").
                missing = "" if captions_field in entry else f" (no field '{captions_field}')"
                scan.bad.append((path, f"entry {index} has no non-empty caption{missing}"))
                continue
            scan.records.append(ImageRecord(path=path, pid=pid, camid=camid, captions=kept))
        if read and not with_field:
            raise ReidDataError(
                f"captions: no entry of {json_path} has the field '{captions_field}' (fields of entry 0: "
                f"{sorted(map(str, entries[0]))}); map the field names with captions_field=."
            )
        if other_splits:
            logger.info(
                "captions: read %d entries of split '%s' from %s; left out %d entries of other splits.",
                len(scan.records),
                self.config.keep_split,
                json_path,
                other_splits,
            )
        if empty_captions:
            logger.warning(
                "captions: dropped %d empty caption(s) in %s (entries that kept another caption stay).",
                empty_captions,
                json_path,
            )
        return {"train": scan}

    def _field(self, entry: dict[str, Any], name: str, json_path: Path, index: int) -> Any:
        if name not in entry:
            raise ReidDataError(
                f"captions: {json_path} entry {index} has no field '{name}' (fields: {sorted(entry)}); "
                "map the field names with id_field=, path_field=, captions_field=."
            )
        return entry[name]
