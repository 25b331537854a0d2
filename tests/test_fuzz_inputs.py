"""Property-based fuzzing of the input parsers (issue #16): every layout's file-name and list
parser, the caption JSON reader and the metric inputs see arbitrary input and answer with
nothing but the documented errors, each with a message, or with rows that fit the schema.

What "documented" means per entry point:

- layouts (``load_reid_dataset``): :class:`~hf_reid.data.ReidDataError` (bad data, naming the
  file) or ``FileNotFoundError`` (a missing folder or list file); anything they accept must
  encode into ``REID_FEATURES`` (Arrow), i.e. the whole ``load_reid_dataset`` path works. The
  builders are driven without the Arrow cache (``_split_generators`` then the rows through
  ``Dataset.from_list``), which is what ``load_reid_dataset`` does, minus the disk cache.
- ``evaluate_rank`` and ``compute_distance_matrix``: ``ValueError`` or ``TypeError``; results
  they return are finite and in range.

Runs are derandomized (the same examples every run, about 20 s on 2 cores). For a deeper,
random search set ``HF_REID_FUZZ_EXAMPLES`` (e.g. 2000): examples per test, fresh each run.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import datasets
import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from hf_reid.data import REID_FEATURES, ReidDataError
from hf_reid.data.loading import get_reid_layout
from hf_reid.metrics import compute_distance_matrix, evaluate_rank

_DEEP = int(os.environ.get("HF_REID_FUZZ_EXAMPLES", "0"))


def fuzz(examples: int) -> settings:
    """Bounded, reproducible fuzzing; ``HF_REID_FUZZ_EXAMPLES`` turns on a deep random search."""
    return settings(
        max_examples=_DEEP or examples,
        deadline=None,
        derandomize=not _DEEP,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 32), (120, 60, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


IMAGE = _png()
LAYOUT_ERRORS = (ReidDataError, FileNotFoundError)

KNOWN_INT_PARSE: set[str] = set()
"""Layouts whose number parsing may still end in a plain ``int()`` ``ValueError`` that names no
file (empty: every layout tests numbers with ``is_number``, ASCII digits only; each fuzzer keeps an
``@example`` with ``"²"``, which ``str.isdigit`` accepts and ``int`` refuses)."""


def _known(layout: str, err: Exception) -> bool:
    return (
        layout in KNOWN_INT_PARSE
        and type(err) is ValueError
        and str(err).startswith("invalid literal for int()")
    )


# -- strategies ---------------------------------------------------------------------------------


def _fits(name: str) -> bool:
    encoded = os.fsencode(name)
    return name not in (".", "..") and b"/" not in encoded and b"\0" not in encoded and len(encoded) <= 200


unicode_names = st.text(
    st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)), min_size=1, max_size=40
)
byte_names = st.binary(min_size=1, max_size=40).map(
    lambda raw: os.fsdecode(raw.replace(b"/", b"_").replace(b"\0", b"_"))  # undecodable bytes -> surrogates
)
EXTENSIONS = "(jpg|JPG|jpeg|png|PNG|bmp|webp|gif|txt)"


def names(*patterns: str) -> st.SearchStrategy[str]:
    """File names: near-valid ones of the layout (``\\d`` draws any Unicode digit, counts up to 22
    digits overflow int64), arbitrary Unicode text and arbitrary bytes."""
    near = [st.from_regex(rf"{p}\.{EXTENSIONS}", fullmatch=True) for p in patterns]
    return st.one_of(*near, unicode_names, byte_names).filter(_fits)


KINDS = ("image", "image", "image", "empty", "garbage", "tiny", "folder", "broken_link", "loop")
entry_kinds = st.sampled_from(KINDS)


def put(folder: Path, name: str, kind: str) -> None:
    """Create ``folder/name`` as an entry of ``kind`` (an image, junk, a folder or a bad link)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if os.path.lexists(path):
        return
    if kind == "image":
        path.write_bytes(IMAGE)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(b"\x89PNG not really")
    elif kind == "tiny":
        Image.new("RGB", (1, 1)).save(path, format="PNG")
    elif kind == "folder":
        path.mkdir()
    elif kind == "broken_link":
        os.symlink(folder / "does-not-exist.jpg", path)
    else:
        os.symlink(path.name, path)


def run_layout(layout: str, root: Path, **options) -> None:
    """Read ``root`` as ``layout`` in both bad-image modes; only documented errors may escape, and
    what is read must encode into ``REID_FEATURES``."""
    builder_class = get_reid_layout(layout)
    for mode in ("error", "skip"):
        try:
            builder = builder_class(
                data_dir=str(root), cache_dir=str(root.parent / "cache"), on_bad_image=mode, **options
            )
            generators = builder._split_generators(None)
        except LAYOUT_ERRORS as err:
            assert str(err), f"{type(err).__name__} without a message"
            event(f"{mode}: {type(err).__name__}")
            continue
        except ValueError as err:
            if not _known(layout, err):
                raise
            event(f"{mode}: known int() ValueError")
            continue
        event(f"{mode}: read")
        for generator in generators:
            rows = [row for _, row in builder._generate_examples(**generator.gen_kwargs)]
            assert rows
            datasets.Dataset.from_list(rows, features=REID_FEATURES)  # what Arrow writing needs


@pytest.fixture(autouse=True, scope="module")
def _quiet():
    datasets.disable_progress_bars()
    yield
    datasets.enable_progress_bars()


# -- folder-of-images layouts ---------------------------------------------------------------------

MARKET_FOLDERS = ("bounding_box_train", "query", "bounding_box_test")
FOLDER_LAYOUTS = {
    # layout: (skeleton {folder: [valid names]}, name patterns, options)
    "market1501": (
        {"bounding_box_train": ["0001_c1s1_000001_00.jpg"], "query": ["0002_c1s1_000002_00.jpg"]}
        | {"bounding_box_test": ["0002_c2s1_000003_00.jpg"]},
        [r"(-1|\d{1,22})_c\d{1,22}s\d{1,3}_\d{1,8}_\d{1,3}"],
        {},
    ),
    "dukemtmc": (
        {"bounding_box_train": ["0001_c1_f0000001.jpg"], "query": ["0002_c1_f0000002.jpg"]}
        | {"bounding_box_test": ["0002_c2_f0000003.jpg"]},
        [r"(-1|\d{1,22})_c\d{1,22}_f\d{1,8}"],
        {},
    ),
    "cuhk03_np": (
        {
            f"labeled/{folder}": [name]
            for folder, name in zip(MARKET_FOLDERS, ["0001_c1_1.png", "0002_c1_1.png", "0002_c2_2.png"])
        },
        [r"(-1|\d{1,22})_c\d{1,22}_\d{1,5}"],
        {"labeled": True},
    ),
    "mlr_cuhk03": (
        {
            folder: [name]
            for folder, name in zip(MARKET_FOLDERS, ["0001_c1_1.png", "0002_c1_1.png", "0002_c2_2.png"])
        },
        [r"(-1|\d{1,22})_c\d{1,22}_\d{1,5}"],
        {},
    ),
    "ltcc": (
        {"train": ["001_1_c1_000001.png"], "query": ["002_1_c1_000002.png"], "test": ["002_2_c2_000003.png"]},
        [r"\d{1,22}_\d{1,22}_c\d{1,22}_\d{1,8}"],
        {},
    ),
    "cuhk_sysu": ({"cropped_images": ["p0001_s0001.jpg"]}, [r"p\d{1,22}_s\d{1,8}(_\d{1,3})?"], {}),
}


@pytest.mark.parametrize("layout", sorted(FOLDER_LAYOUTS))
def test_folder_layouts_take_any_file_name(layout: str) -> None:
    skeleton, patterns, options = FOLDER_LAYOUTS[layout]
    folders = sorted(skeleton)

    @fuzz(25)
    @given(
        st.lists(st.tuples(st.sampled_from(folders), names(*patterns), entry_kinds), min_size=1, max_size=4)
    )
    def check(entries) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "data"
            for folder, valid in skeleton.items():
                for name in valid:
                    put(root / folder, name, "image")
            for folder, name, kind in entries:
                put(root / folder, name, kind)
            run_layout(layout, root, **options)

    check()


# -- MSMT17 list files --------------------------------------------------------------------------

MSMT_NAME = "0000_000_01_0303morning_0015_0.jpg"
list_lines = st.one_of(
    st.from_regex(
        r"[0-9]{1,4}/\d{1,6}_\d{1,4}_\d{1,22}_[a-z0-9]{0,12}_\d{1,4}_\d\.(jpg|png) -?\d{1,22}", fullmatch=True
    ),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=60),
)


@fuzz(40)
@given(
    st.sampled_from(["list_train.txt", "list_query.txt", "list_gallery.txt"]),
    st.one_of(
        st.lists(list_lines, max_size=4).map(lambda ls: "\n".join(ls).encode()), st.binary(max_size=80)
    ),
)
@example("list_query.txt", b"0001/0001_000_02_0303morning_0015_0.jpg \xc2\xb2")  # pid "²"
def test_msmt17_list_files_take_any_content(list_name: str, extra: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "MSMT17_V1"
        for split, pid in (("train", 0), ("test", 1), ("test", 1)):
            put(root / split / f"{pid:04d}", MSMT_NAME.replace("_01_", f"_0{pid + 1}_"), "image")
        lists = {
            "list_train.txt": f"0000/{MSMT_NAME} 0\n",
            "list_val.txt": "",
            "list_query.txt": "0001/" + MSMT_NAME.replace("_01_", "_02_") + " 1\n",
            "list_gallery.txt": "0001/" + MSMT_NAME.replace("_01_", "_02_") + " 1\n",
        }
        for name, text in lists.items():
            data = text.encode() + (extra if name == list_name else b"")
            (root / name).write_bytes(data)
        run_layout("msmt17", root.parent)


# -- SYSU-MM01: identity folders and id lists ----------------------------------------------------


def _sysu(root: Path) -> None:
    (root / "exp").mkdir(parents=True)
    (root / "exp" / "train_id.txt").write_text("1")
    (root / "exp" / "val_id.txt").write_text("3")
    (root / "exp" / "test_id.txt").write_text("2")
    for camera in range(1, 7):
        for pid in (1, 2):
            put(root / f"cam{camera}" / f"{pid:04d}", "0001.jpg", "image")


@fuzz(30)
@given(
    st.integers(1, 6),
    st.one_of(st.from_regex(r"\d{1,22}", fullmatch=True), unicode_names, byte_names).filter(_fits),
    names(r"\d{1,6}"),
    entry_kinds,
)
@example(1, "²", "0001.jpg", "image")
def test_sysu_mm01_takes_any_folder_and_file_name(camera: int, person: str, name: str, kind: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "sysu"
        _sysu(root)
        put(root / f"cam{camera}" / person, name, kind)
        run_layout("sysu_mm01", root, gallery_shot="all")


@fuzz(25)
@given(
    st.sampled_from(["train_id.txt", "val_id.txt", "test_id.txt"]),
    st.one_of(
        st.from_regex(r"(\d{1,22}[, \n]{1,2}){0,3}\d{1,22}", fullmatch=True).map(lambda t: t.encode()),
        st.binary(max_size=40),
    ),
)
@example("test_id.txt", "2,²".encode())
def test_sysu_mm01_id_lists_take_any_content(list_name: str, content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "sysu"
        _sysu(root)
        (root / "exp" / list_name).write_bytes(content)
        run_layout("sysu_mm01", root, gallery_shot="all")


# -- custom: identity folders, camera pattern, CSV -----------------------------------------------


@fuzz(30)
@given(
    st.one_of(st.from_regex(r"-?\d{1,22}", fullmatch=True), unicode_names, byte_names).filter(_fits),
    names(r"\w{0,6}_c\d{1,22}_\w{0,4}"),
    entry_kinds,
    st.booleans(),
)
@example("²", "x_c1_1.jpg", "image", False)
@example("3", "x_c²_1.jpg", "image", True)
def test_custom_folders_take_any_identity_and_file_name(
    identity: str, name: str, kind: str, cameras: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "custom"
        for pid in ("1", "2"):
            put(root / pid, "x_c1_1.jpg", "image")
        put(root / identity, name, kind)
        run_layout("custom", root, **({"camera_pattern": r"_c(\d+)"} if cameras else {}))


csv_cells = st.one_of(
    st.from_regex(r"-?\d{1,22}", fullmatch=True),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
)


@fuzz(40)
@given(
    st.lists(st.tuples(csv_cells, csv_cells, csv_cells, csv_cells), max_size=3),
    st.one_of(st.none(), st.binary(max_size=40)),
)
@example([("imgs/a.jpg", "²", "0", "")], None)
def test_custom_csv_takes_any_cells(rows, raw: bytes | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "custom"
        put(root / "imgs", "a.jpg", "image")
        put(root / "imgs", "b.jpg", "image")
        lines = ["path,pid,camid,clothes_id", "imgs/a.jpg,1,0,", "imgs/b.jpg,2,1,"]
        lines += [",".join(json.dumps(c) if "," in c or '"' in c else c for c in row) for row in rows]
        data = "\n".join(lines).encode("utf-8", "surrogatepass")
        (root / "data.csv").write_bytes(data if raw is None else data + b"\n" + raw)
        run_layout("custom", root, csv_file="data.csv")


# -- caption JSON ---------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
caption_texts = st.text(st.characters(categories=["Cs", "L", "Nd", "Zs", "Po"]), max_size=12)
"""Caption text, lone surrogates included (JSON escapes them; Arrow cannot encode them)."""
entry_values = {
    "id": st.one_of(st.integers(), st.from_regex(r"-?\d{1,25}", fullmatch=True), json_values),
    "file_path": st.one_of(
        st.sampled_from(["0001_c1_000001.jpg", "imgs/0001_c1_000001.jpg"]),
        names(r"\d{1,4}_c\d{1,22}"),
        json_values,
    ),
    "captions": st.one_of(st.lists(caption_texts, max_size=2), caption_texts, json_values),
    "split": st.one_of(st.sampled_from(["train", "test"]), json_values),
}
plausible_entries = st.fixed_dictionaries(
    {
        "id": st.one_of(st.integers(-1, 3), st.from_regex(r"-?[0-9]{1,3}", fullmatch=True)),
        "file_path": st.sampled_from(["0001_c1_000001.jpg", "imgs/0001_c1_000001.jpg", "0002_c9_000001.jpg"]),
        "captions": st.one_of(st.lists(caption_texts, max_size=2), caption_texts, st.none()),
    },
    optional={"split": st.sampled_from(["train", "test"])},
)
"""Entries that are nearly right, so the fuzzer reaches past the structural checks."""
entries = st.lists(
    st.one_of(plausible_entries, st.fixed_dictionaries({}, optional=entry_values), json_values),
    min_size=0,
    max_size=3,
)


@fuzz(80)
@given(
    st.one_of(
        st.lists(plausible_entries, min_size=1, max_size=3).map(lambda e: json.dumps(e).encode()),
        st.lists(plausible_entries, min_size=1, max_size=3).map(
            lambda e: json.dumps(e, ensure_ascii=False).encode("utf-8", "surrogatepass")  # raw surrogates
        ),
        entries.map(lambda e: json.dumps(e).encode()),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=60),
        st.integers(1, 3000).map(lambda depth: b"[" * depth + b"]" * depth),
    )
)
def test_caption_json_reader_takes_any_content(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "captions"
        put(root / "imgs", "0001_c1_000001.jpg", "image")
        (root / "reid_raw.json").write_bytes(content)
        run_layout("captions", root)


# -- metric inputs --------------------------------------------------------------------------------

DTYPES = [
    "float16",
    "float32",
    "float64",
    "int8",
    "int64",
    "uint8",
    "uint64",
    "bool",
    "complex64",
    "U2",
    "S2",
]
arrays = st.sampled_from(DTYPES).flatmap(
    lambda dtype: hnp.arrays(
        np.dtype(dtype), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)
    )
)
loose = st.one_of(
    arrays,
    st.lists(st.one_of(st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=2)), max_size=5),
    st.lists(st.lists(st.floats(), max_size=3), max_size=3),
    st.none(),
    st.just("abc"),
)
METRIC_ERRORS = (ValueError, TypeError)


def _documented(call) -> object | None:
    try:
        result = call()
    except METRIC_ERRORS as err:
        assert str(err), f"{type(err).__name__} without a message"
        event(type(err).__name__)
        return None
    event("answered")
    return result


@fuzz(150)
@given(
    st.one_of(
        hnp.arrays(
            np.float32, st.tuples(st.integers(1, 4), st.integers(1, 6)), elements=st.floats(0, 4, width=32)
        ),
        arrays,
    ),
    loose,
    loose,
    loose,
    loose,
    st.booleans(),
)
def test_evaluate_rank_takes_any_input(distmat, q_pids, g_pids, q_camids, g_camids, cross_camera) -> None:
    result = _documented(
        lambda: evaluate_rank(
            distmat, q_pids, g_pids, q_camids, g_camids, max_rank=5, cross_camera=cross_camera
        )
    )
    if result is not None:
        assert np.all((result.cmc >= 0) & (result.cmc <= 1))
        assert 0 <= result.mAP <= 1 and 0 <= result.mINP <= 1


@st.composite
def _pid_arrays(draw):
    """Valid shapes with arbitrary ids (any integer dtype, duplicates, negatives)."""
    num_query, num_gallery = draw(st.integers(1, 4)), draw(st.integers(1, 6))
    ids = st.sampled_from(["int8", "int32", "int64", "uint8"]).flatmap(
        lambda dtype: hnp.arrays(np.dtype(dtype), 1, elements=st.integers(0, 3))
    )
    distmat = draw(hnp.arrays(np.float64, (num_query, num_gallery), elements=st.floats(0, 2)))
    column = lambda n: np.concatenate([draw(ids) for _ in range(n)]).astype(np.int64)  # noqa: E731
    return distmat, column(num_query), column(num_gallery), column(num_query), column(num_gallery)


@fuzz(100)
@given(_pid_arrays(), st.booleans())
def test_evaluate_rank_on_valid_shapes_answers_or_says_no_query_matches(inputs, cross_camera) -> None:
    distmat, q_pids, g_pids, q_cams, g_cams = inputs
    try:
        result = evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=3, cross_camera=cross_camera)
    except ValueError as err:
        assert "no query" in str(err).lower() or "match" in str(err).lower(), str(err)
        return
    assert result.num_valid_queries + result.num_invalid_queries == len(q_pids)
    assert np.all(np.diff(result.cmc) >= 0) and 0 <= result.mAP <= 1


floats_2d = st.integers(1, 4).flatmap(
    lambda dim: st.tuples(
        hnp.arrays(np.float32, st.tuples(st.integers(1, 3), st.just(dim))),
        hnp.arrays(st.sampled_from([np.float16, np.float64]), st.tuples(st.integers(1, 3), st.just(dim))),
    )
)


@fuzz(120)
@given(
    st.one_of(arrays, loose),
    st.one_of(arrays, loose),
    st.sampled_from(["cosine", "euclidean", "sqeuclidean", "manhattan", ""]),
)
def test_compute_distance_matrix_takes_any_input(q, g, metric) -> None:
    distances = _documented(lambda: compute_distance_matrix(q, g, metric=metric))
    if distances is not None:
        distances = np.asarray(distances)
        assert distances.shape == (np.asarray(q).shape[0], np.asarray(g).shape[0])
        assert np.all(np.isfinite(distances))


@fuzz(80)
@given(floats_2d, st.sampled_from(["cosine", "euclidean", "sqeuclidean"]))
def test_compute_distance_matrix_on_float_features_answers_or_names_nan(features, metric) -> None:
    """Any float values (NaN, inf, huge, subnormal): a matrix of the right shape, or an error
    naming the input (NaN and inf are refused)."""
    q, g = features
    distances = _documented(lambda: compute_distance_matrix(q, g, metric=metric))
    if distances is not None:
        assert distances.shape == (q.shape[0], g.shape[0])
