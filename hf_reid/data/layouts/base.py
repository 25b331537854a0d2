"""Shared machinery of the Re-ID dataset builders.

Every layout (Market-1501, MSMT17, SYSU-MM01, ...) is a :class:`ReidBuilder`: a
``datasets.GeneratorBasedBuilder`` that is instantiated directly (datasets 5 runs no loading
scripts) and yields rows of :data:`hf_reid.data.REID_FEATURES`. A layout only says how to list
its files and parse their names (:meth:`ReidBuilder._scan`); this module does the rest the same
way for all of them:

- bad input is found in ``_split_generators`` (before any Arrow file is written, so errors reach
  the caller unwrapped) and either raised, naming the files and what is wrong, or skipped with a
  logged count when ``on_bad_image="skip"``;
- junk and distractor counts are logged, never dropped silently; so are files that are not
  images, and entries that look like images but cannot be (broken or looping symbolic links,
  folders named ``*.jpg``, image formats the layouts do not read) are bad files like the others;
- an image smaller than :data:`MIN_IMAGE_SIZE`, a label that does not fit the 64-bit columns
  and a name or caption that is not valid UTF-8 are bad files too (they would otherwise be
  accepted silently or crash while the Arrow files are written);
- the cache key includes a fingerprint of the data folder (names, sizes, modification times) and
  of the layout's source code, so a fixed file or a changed parser is never masked by a stale
  Arrow cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import logging
import os
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import datasets
from PIL import Image, ImageFile

from ..features import MODALITIES, NO_CLOTHES_ID, REID_FEATURES
from ..protocols import STANDARD, EvalProtocol

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
"""File suffixes (any case) that layouts treat as images; other files (``Thumbs.db``) are ignored
(counted and logged)."""

UNSUPPORTED_IMAGE_EXTENSIONS = (".webp", ".gif", ".tif", ".tiff", ".avif", ".heic", ".jp2")
"""Image formats the layouts do not read: such files are bad files (an error naming them, or
skipped and counted), never passed over silently. Not accepted because the published datasets
and the layouts' file-name schemes are JPEG/PNG, and Pillow reads several of them (WebP, AVIF)
only when built with the optional library, so a folder that loads on one machine would fail on
another; convert them to PNG or JPEG."""

MIN_IMAGE_SIZE = (8, 4)
"""Smallest (height, width) in pixels an image may have; smaller ones (a 1x1 placeholder, a
failed crop) are bad images. Real Re-ID crops are tens of pixels at the least."""

INT64_RANGE = (-(2**63), 2**63 - 1)
"""Range of the ``pid``, ``camid`` and ``clothes_id`` columns (``int64``)."""

MAX_LISTED = 5
"""How many offending files an error or warning names before it summarises the rest."""

BUILDER_CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(datasets.BuilderConfig))
"""Fields of ``datasets.BuilderConfig`` itself; they are not Re-ID layout options."""


class ReidDataError(ValueError):
    """Input a layout cannot read. The message names the file (or folder) and what is wrong."""


@dataclass
class ImageRecord:
    """One image found by a layout, before it becomes a row of ``REID_FEATURES``."""

    path: Path
    """Absolute path of the image file."""
    pid: int
    camid: int = 0
    clothes_id: int = NO_CLOTHES_ID
    modality: int = 0
    captions: tuple[str, ...] = ()


@dataclass
class SplitScan:
    """What a layout found for one split: usable records and the files it could not use."""

    source: Path
    """The folder or list file the split comes from (named in errors about the split)."""
    records: list[ImageRecord] = field(default_factory=list)
    bad: list[tuple[Path, str]] = field(default_factory=list)
    """Skippable problems (unparsable names, unreadable or missing images): (file, reason)."""
    junk: int = 0
    """Images with pid -1, dropped as the standard protocols do."""
    distractors_dropped: int = 0
    """Distractors (pid 0) found outside the gallery, where they cannot serve as negatives."""
    ignored: int = 0
    """Files that are not images (e.g. ``Thumbs.db``)."""
    ignored_names: list[str] = field(default_factory=list)
    """The first :data:`MAX_LISTED` of them, named in the log line."""


@dataclass
class ReidBuilderConfig(datasets.BuilderConfig):
    """Options every Re-ID layout accepts.

    Subclasses add typed fields for their own options; ``Literal`` and ``bool`` annotations are
    checked in :meth:`__post_init__`, so a wrong value fails when the builder is created.
    """

    on_bad_image: Literal["error", "skip"] = "error"
    """``"error"``: an unreadable image or unparsable file name raises, naming the files.
    ``"skip"``: such files are left out and a warning gives their count and first names."""
    validate_images: bool = True
    """Open and decode every image once while building (about 0.2 ms per 128x64 JPEG), so that
    truncated or corrupt files are caught here rather than in the middle of training. ``False``
    checks only that each file exists and is not empty."""
    domain: str | None = None
    """Value of the ``domain`` column; defaults to the layout's name (SynthPeds: folder name)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_config_types(self)


def is_number(text: str) -> bool:
    """``text`` is a non-empty run of ASCII digits (``str.isdigit`` also accepts ``"²"``, which
    ``int`` refuses)."""
    return text.isascii() and text.isdigit()


def layout_option_names(config_class: type[ReidBuilderConfig]) -> list[str]:
    """Names of the options a layout's config accepts (its fields minus datasets' own)."""
    return sorted(f.name for f in dataclasses.fields(config_class) if f.name not in BUILDER_CONFIG_FIELDS)


def check_config_types(config: ReidBuilderConfig) -> None:
    """Raise ``ValueError`` naming the option when a value does not match its annotation.

    Only the shapes the layout configs use are checked: ``Literal[...]``, ``bool``, ``int``,
    ``float``, ``str`` and their ``| None`` forms. Anything else is accepted as given.
    """
    hints = typing.get_type_hints(type(config))
    layout = type(config).__name__
    for name in layout_option_names(type(config)):
        value = getattr(config, name)
        expected = hints.get(name)
        if expected is None or _value_matches(value, expected):
            continue
        raise ValueError(
            f"{layout}: option {name}={value!r} is invalid; expected {_describe_type(expected)}."
        )


def _value_matches(value: Any, expected: Any) -> bool:
    origin = typing.get_origin(expected)
    if origin is Literal:
        return value in typing.get_args(expected)
    if origin in (typing.Union, types.UnionType):
        return any(_value_matches(value, arg) for arg in typing.get_args(expected))
    if expected is type(None):
        return value is None
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is str:
        return isinstance(value, str)
    return True


def _describe_type(expected: Any) -> str:
    origin = typing.get_origin(expected)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(expected))
    if typing.get_args(expected):
        return " or ".join(_describe_type(a) for a in typing.get_args(expected))
    return "None" if expected is type(None) else getattr(expected, "__name__", str(expected))


def image_problem(path: Path, *, decode: bool = True) -> str | None:
    """Why ``path`` is not a usable image, or ``None`` when it is.

    Checks existence and size; with ``decode`` it then opens and fully decodes the file with
    PIL, with truncated-image tolerance switched off for the duration so that a truncated JPEG
    is reported even when other code has set ``ImageFile.LOAD_TRUNCATED_IMAGES``, and rejects
    images smaller than :data:`MIN_IMAGE_SIZE`. A symbolic link loop or a name the system
    refuses is reported as unreadable, not raised.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "file does not exist"
    except (OSError, ValueError) as err:  # ValueError: a NUL byte in the name
        return f"cannot be read ({err})"
    if size == 0:
        return "empty file (0 bytes)"
    if not decode:
        return None
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(path) as image:
            image.load()
            width, height = image.size
    except Exception as err:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        return f"not a readable image ({type(err).__name__}: {err})"
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous
    min_height, min_width = MIN_IMAGE_SIZE
    if height < min_height or width < min_width:
        return (
            f"image is {width}x{height} px (width x height), smaller than the minimum "
            f"{min_width}x{min_height} px"
        )
    return None


def record_problem(record: ImageRecord, relative: str) -> str | None:
    """Why ``record`` (whose path relative to the dataset folder is ``relative``) cannot become a
    row, or ``None``: a label outside the ``int64`` columns, or text that is not valid UTF-8
    (Arrow would fail on it half-way through writing the split, naming nothing)."""
    low, high = INT64_RANGE
    for name in ("pid", "camid", "clothes_id"):
        value = getattr(record, name)
        if not low <= value <= high:
            return f"{name} {value} does not fit in a 64-bit integer"
    if not _is_utf8(relative):
        return "file name is not valid UTF-8; rename the file"
    if not all(_is_utf8(caption) for caption in record.captions):
        return "a caption is not valid Unicode text (it holds a lone surrogate)"
    return None


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown(text: str) -> str:
    """``text`` safe to print and log: undecodable bytes of file names appear as ``\\udcXX``."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def list_images(folder: Path, scan: SplitScan) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name.

    Nothing is passed over silently: an entry with an image suffix that is not a readable
    regular file (a broken symbolic link, a link loop, a folder or a device named ``*.jpg``) and
    a file in a format the layouts do not read (:data:`UNSUPPORTED_IMAGE_EXTENSIONS`, e.g.
    ``.webp``) go to ``scan.bad`` with the reason; other files are counted as ignored (and the
    first few named); sub-folders without an image suffix are left to the layout.
    """
    images = []
    with os.scandir(folder) as entries:
        for entry in entries:
            lower = entry.name.lower()
            path = Path(entry.path)
            if lower.endswith(IMAGE_EXTENSIONS):
                problem = _entry_problem(entry)
                if problem is None:
                    images.append(path)
                else:
                    scan.bad.append((path, problem))
            elif lower.endswith(UNSUPPORTED_IMAGE_EXTENSIONS):
                suffix = lower[lower.rindex(".") :]
                scan.bad.append(
                    (
                        path,
                        f"image format {suffix} is not read by hf_reid layouts (they read "
                        f"{', '.join(IMAGE_EXTENSIONS)}); convert it",
                    )
                )
            elif not _is_dir(entry):
                scan.ignored += 1
                if len(scan.ignored_names) < MAX_LISTED:
                    scan.ignored_names.append(shown(entry.name))
    return sorted(images, key=lambda p: p.name)


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _entry_problem(entry: os.DirEntry) -> str | None:
    """Why a directory entry with an image suffix is not an image file, or ``None``."""
    try:
        if entry.is_file():
            return None
        if entry.is_dir():
            return "a folder, not an image file"
    except OSError as err:  # ELOOP: a symbolic link loop; EACCES, ...
        return f"cannot be read ({err.strerror or err})"
    if entry.is_symlink():
        try:
            target = os.readlink(entry.path)
        except OSError:
            target = "?"
        return f"broken symbolic link (its target {shown(target)} does not exist)"
    return "not a regular file (a device, pipe or socket)"


def require_dir(path: Path, layout: str, what: str, hint: str = "") -> Path:
    """Return ``path`` if it is a folder, else raise ``FileNotFoundError`` saying what was expected.

    When a sub-folder of ``path``'s parent holds the expected folder one level down (the usual
    mistake of pointing ``data_dir`` one level too high), the error names that folder.
    """
    if path.is_dir():
        return path
    message = f"{layout}: {what} not found: expected the folder {path}."
    parent = path.parent
    if parent.is_dir():
        nested = sorted(p.parent for p in parent.glob(f"*/{path.name}") if p.is_dir())
        if nested:
            message += f" It exists one level down, in {nested[0]}: pass data_dir={str(nested[0])!r}."
    if hint:
        message += f" {hint}"
    raise FileNotFoundError(message)


def require_file(path: Path, layout: str, what: str) -> Path:
    """Return ``path`` if it is a file, else raise ``FileNotFoundError`` naming it."""
    if path.is_file():
        return path
    raise FileNotFoundError(f"{layout}: {what} not found: expected the file {path}.")


def fingerprint(data_dir: Path, builder_class: type) -> str:
    """A short hash of the data folder's tree and of the layout's source code (the cache key).

    File names, sizes and modification times are hashed (not contents): about 0.05 s per 10k
    files. Any added, removed, renamed or rewritten file, or an edit of the layout's code, gives
    a new key, so ``download_and_prepare`` rebuilds instead of returning stale rows.
    """
    digest = hashlib.sha256()
    for cls in builder_class.__mro__:
        if isinstance(cls, type) and issubclass(cls, ReidBuilder):
            try:
                source = inspect.getsourcefile(cls)
            except (OSError, TypeError):  # classes defined in a notebook or the REPL
                source = None
            if source and os.path.isfile(source):
                digest.update(Path(source).read_bytes())
            else:
                digest.update(cls.__qualname__.encode())
    for root, dirs, files in os.walk(data_dir):
        dirs.sort()
        rel_root = os.path.relpath(root, data_dir)
        for name in sorted(files):
            try:
                stat = os.stat(os.path.join(root, name))
            except OSError:
                continue
            # surrogatepass: names that are not UTF-8 (undecodable bytes) are hashed, not raised on
            digest.update(
                f"{rel_root}/{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode("utf-8", "surrogatepass")
            )
    return digest.hexdigest()[:16]


class ReidBuilder(datasets.GeneratorBasedBuilder):
    """Base class of every Re-ID layout builder.

    Subclasses set ``LAYOUT_NAME`` (the name ``load_reid_dataset`` knows them by), the dataset
    card facts (``DESCRIPTION``, ``CITATION``, ``HOMEPAGE``, ``LICENSE``), ``BUILDER_CONFIG_CLASS``
    and implement :meth:`_scan`; they may override :meth:`_select` to apply an evaluation
    protocol to the checked records.

    Usage (what ``load_reid_dataset`` does)::

        builder = Market1501(data_dir="/data/Market-1501-v15.09.15", cache_dir="~/.cache/reid")
        builder.download_and_prepare()
        splits = builder.as_dataset()  # DatasetDict(train, query, gallery)
    """

    VERSION = datasets.Version("1.0.0")
    BUILDER_CONFIG_CLASS = ReidBuilderConfig
    LAYOUT_NAME: ClassVar[str] = "reid"
    PRETTY_NAME: ClassVar[str] = ""
    """Human-readable dataset name for cards (defaults to ``LAYOUT_NAME``)."""
    DESCRIPTION: ClassVar[str] = ""
    CITATION: ClassVar[str] = ""
    HOMEPAGE: ClassVar[str] = ""
    LICENSE: ClassVar[str] = ""
    EVALUATION: ClassVar[str] = (
        "Market-1501 protocol: for each query, gallery images of the same identity and camera are "
        "excluded; CMC and mAP are averaged over queries that keep at least one true match."
    )
    """How the splits are evaluated (written into the dataset card)."""
    GALLERY_SPLITS: ClassVar[tuple[str, ...]] = ("gallery",)
    """Splits where distractors (pid 0, in layouts that have them) are kept as negatives."""

    config: ReidBuilderConfig

    def __init__(self, *args: Any, data_dir: str | os.PathLike | None = None, **kwargs: Any) -> None:
        if data_dir is None:
            raise ValueError(f"{self.LAYOUT_NAME}: data_dir is required (the folder the dataset lives in).")
        root = Path(os.path.abspath(os.path.expanduser(os.fspath(data_dir))))
        if not root.is_dir():
            raise FileNotFoundError(f"{self.LAYOUT_NAME}: data_dir {root} does not exist or is not a folder.")
        if kwargs.get("hash") is None:
            kwargs["hash"] = fingerprint(root, type(self))
        kwargs.setdefault("dataset_name", self.LAYOUT_NAME)
        super().__init__(*args, data_dir=str(root), **kwargs)

    # --- what a layout implements -------------------------------------------------------------

    def _scan(self, root: Path) -> dict[str, SplitScan]:
        """List the files of every split and parse their names (no image decoding here).

        Raise ``FileNotFoundError`` for missing folders or list files and
        :class:`ReidDataError` for problems that skipping cannot fix (an unknown camera, a
        malformed list file); record unparsable names and missing images in ``SplitScan.bad``.
        """
        raise NotImplementedError

    def _select(self, splits: dict[str, list[ImageRecord]]) -> dict[str, list[ImageRecord]]:
        """Apply the layout's protocol to checked records (e.g. SYSU-MM01's gallery sampling)."""
        return splits

    def evaluation_protocol(self, splits: Mapping[str, datasets.Dataset] | None = None) -> EvalProtocol:
        """How this layout's query and gallery are ranked, under the builder's options.

        ``splits`` (the loaded ``DatasetDict``) lets a layout decide from its data, e.g. a
        ``custom`` dataset without cameras. The default is the Market-1501 protocol.
        """
        return STANDARD

    # --- shared machinery ---------------------------------------------------------------------

    @property
    def root(self) -> Path:
        """The dataset folder (absolute)."""
        return Path(self.config.data_dir)

    @property
    def domain(self) -> str:
        """Value of the ``domain`` column."""
        return self.config.domain or self.LAYOUT_NAME

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=self.DESCRIPTION,
            citation=self.CITATION,
            homepage=self.HOMEPAGE,
            license=self.LICENSE,
            features=REID_FEATURES.copy(),
        )

    def _split_generators(self, dl_manager: Any) -> list[datasets.SplitGenerator]:
        try:
            scans = self._scan(self.root)
        except UnicodeDecodeError as err:  # a list, id or CSV file in another encoding
            raise ReidDataError(
                f"{self.LAYOUT_NAME}: a text file under {self.root} (a list, identity or CSV file) is not "
                f"UTF-8 text: byte 0x{err.object[err.start]:02x} at offset {err.start} ({err.reason}); "
                "save it as UTF-8."
            ) from err
        checked = {split: self._check_split(split, scan) for split, scan in scans.items()}
        selected = self._select(checked)
        generators = []
        for split, records in selected.items():
            if not records:
                raise ReidDataError(
                    f"{self.LAYOUT_NAME}: split '{split}' is empty after applying the protocol "
                    f"(source folder {scans[split].source if split in scans else self.root})."
                )
            generators.append(datasets.SplitGenerator(name=split, gen_kwargs={"records": records}))
        return generators

    def _generate_examples(self, records: list[ImageRecord]) -> Iterator[tuple[int, dict[str, Any]]]:
        domain = self.domain
        for index, record in enumerate(records):
            yield (
                index,
                {
                    "image": str(record.path),
                    "pid": record.pid,
                    "camid": record.camid,
                    "path": self.relative(record.path),
                    "domain": domain,
                    "clothes_id": record.clothes_id,
                    "modality": record.modality,
                    "captions": list(record.captions),
                },
            )

    def relative(self, path: Path) -> str:
        """``path`` relative to the dataset folder, with forward slashes (the ``path`` column)."""
        return Path(os.path.relpath(path, self.root)).as_posix()

    def _check_split(self, split: str, scan: SplitScan) -> list[ImageRecord]:
        """Validate images, then raise or skip the bad files of one split and log the counts."""
        where = f"{self.LAYOUT_NAME} {split}"
        if scan.junk:
            logger.info(
                "%s: dropped %d junk image(s) (pid -1), as the standard protocol does.", where, scan.junk
            )
        if scan.distractors_dropped:
            logger.warning(
                "%s: dropped %d distractor image(s) (pid 0): distractors only belong in the gallery.",
                where,
                scan.distractors_dropped,
            )
        if scan.ignored:
            more = ", ..." if scan.ignored > len(scan.ignored_names) else ""
            logger.info(
                "%s: ignored %d file(s) that are not images (%s%s).",
                where,
                scan.ignored,
                ", ".join(scan.ignored_names),
                more,
            )

        bad = list(scan.bad)
        records = []
        for record in scan.records:
            problem = record_problem(record, self.relative(record.path))
            if problem is None:
                problem = image_problem(record.path, decode=self.config.validate_images)
            if problem is None:
                records.append(record)
            else:
                bad.append((record.path, problem))
        if bad:
            bad.sort(key=lambda item: str(item[0]))
            listed = "; ".join(f"{shown(self.relative(p))}: {reason}" for p, reason in bad[:MAX_LISTED])
            more = f" (and {len(bad) - MAX_LISTED} more)" if len(bad) > MAX_LISTED else ""
            if self.config.on_bad_image == "error":
                raise ReidDataError(
                    f"{where}: {len(bad)} bad file(s) under {self.root}: {listed}{more}. "
                    "Fix or remove them, or pass on_bad_image='skip' to leave them out."
                )
            logger.warning("%s: skipped %d bad file(s): %s%s.", where, len(bad), listed, more)
        if not records:
            detail = " (every file in it was bad and skipped)" if bad else ""
            raise ReidDataError(f"{where}: split is empty: no usable images in {scan.source}{detail}.")
        return records


def modality_index(name: str) -> int:
    """Index of a modality name in the ``modality`` class label (``"infrared"`` -> 1)."""
    return MODALITIES.index(name)
