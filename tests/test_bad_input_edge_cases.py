"""Issue #16, point 7: the smaller bad inputs each get a named error or a counted skip.

Loading: symbolic link loops and broken links, folders named ``*.jpg``, ``.webp`` files, images
below the minimum size, labels too large for the columns, file names that are not UTF-8. Caption
JSON: non-UTF-8 bytes, entries without captions. Metrics: string pids, float pids and
embeddings of different sizes in ``ReidMetric``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_data import make_market, market_name, write_image

from hf_reid.data import ReidDataError, load_reid_dataset
from hf_reid.data.layouts.base import MIN_IMAGE_SIZE
from hf_reid.metrics import ReidMetric, compute_distance_matrix, evaluate_rank

GOOD = {"train": [(1, 1), (1, 2)], "query": [(2, 1)], "gallery": [(2, 2), (3, 3)]}


@pytest.fixture
def market(tmp_path: Path) -> Path:
    root = tmp_path / "market"
    make_market(root, GOOD)
    return root


def load(root: Path, tmp_path: Path, **kwargs):
    return load_reid_dataset("market1501", root, cache_dir=tmp_path / "cache", **kwargs)


def skipped(caplog, tmp_path: Path, root: Path, split: str, count: int) -> dict:
    """Load with on_bad_image="skip"; check the warning counts ``count`` bad files of ``split``."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="hf_reid"):
        splits = load(root, tmp_path, on_bad_image="skip")
    assert f"market1501 {split}: skipped {count} bad file(s)" in caplog.text
    return splits


# -- loading ------------------------------------------------------------------------------------


def test_symlink_loop_is_a_bad_file_not_an_abort(market: Path, tmp_path: Path, caplog) -> None:
    loop = market / "query" / market_name(9, 1, 90)
    os.symlink(loop.name, loop)
    with pytest.raises(ReidDataError, match=rf"query/{loop.name}: cannot be read \(Too many levels"):
        load(market, tmp_path)
    splits = skipped(caplog, tmp_path, market, "query", 1)
    assert len(splits["query"]) == len(GOOD["query"])


def test_entries_that_look_like_images_but_are_not_are_named_and_counted(
    market: Path, tmp_path: Path, caplog
) -> None:
    """Broken symbolic links, folders named *.jpg and .webp files were passed over uncounted."""
    gallery = market / "bounding_box_test"
    broken = gallery / market_name(7, 1, 91)
    os.symlink(tmp_path / "gone.jpg", broken)
    folder = gallery / market_name(7, 2, 92)
    folder.mkdir()
    webp = write_image(gallery / market_name(7, 3, 93).replace(".jpg", ".webp"))
    with pytest.raises(ReidDataError, match=r"3 bad file\(s\)") as err:
        load(market, tmp_path)
    message = str(err.value)
    assert (
        f"{broken.name}: broken symbolic link (its target {tmp_path / 'gone.jpg'} does not exist)" in message
    )
    assert f"{folder.name}: a folder, not an image file" in message
    assert f"{webp.name}: image format .webp is not read by hf_reid layouts" in message
    splits = skipped(caplog, tmp_path, market, "gallery", 3)
    assert len(splits["gallery"]) == len(GOOD["gallery"])


def test_files_that_are_not_images_are_counted_and_named_in_the_log(
    market: Path, tmp_path: Path, caplog
) -> None:
    (market / "query" / "Thumbs.db").write_bytes(b"x")
    (market / "query" / "notes.txt").write_text("x")
    with caplog.at_level(logging.INFO, logger="hf_reid"):
        load(market, tmp_path)
    assert "market1501 query: ignored 2 file(s) that are not images (" in caplog.text
    assert "Thumbs.db" in caplog.text and "notes.txt" in caplog.text


@pytest.mark.parametrize(
    ("width", "height"), [(1, 1), (MIN_IMAGE_SIZE[1] - 1, 64), (32, MIN_IMAGE_SIZE[0] - 1)]
)
def test_images_below_the_minimum_size_are_bad(market: Path, tmp_path: Path, caplog, width, height) -> None:
    small = write_image(market / "query" / market_name(9, 1, 94), size=(width, height))
    with pytest.raises(
        ReidDataError, match=rf"{small.name}: image is {width}x{height} px .*smaller than the minimum"
    ):
        load(market, tmp_path)
    skipped(caplog, tmp_path, market, "query", 1)


def test_an_image_of_exactly_the_minimum_size_is_accepted(market: Path, tmp_path: Path) -> None:
    height, width = MIN_IMAGE_SIZE
    write_image(market / "query" / market_name(9, 1, 95), size=(width, height))
    assert len(load(market, tmp_path)["query"]) == len(GOOD["query"]) + 1


def test_a_pid_too_large_for_the_column_is_a_bad_file(market: Path, tmp_path: Path, caplog) -> None:
    huge = write_image(market / "bounding_box_train" / f"{'9' * 25}_c1s1_000001_00.jpg")
    with pytest.raises(ReidDataError, match=rf"{huge.name}: pid 9+ does not fit in a 64-bit integer"):
        load(market, tmp_path)
    skipped(caplog, tmp_path, market, "train", 1)


def test_a_file_name_that_is_not_utf8_is_a_bad_file(tmp_path: Path, caplog) -> None:
    """Layouts with free file names (here: custom, a folder per identity) used to crash while
    writing the Arrow files, naming nothing."""
    root = tmp_path / "custom"
    for pid in (1, 2):
        write_image(root / str(pid) / "a.jpg")
    bad = os.fsencode(root / "1") + b"/caf\xe9.jpg"
    write_image(root / "1" / "tmp.jpg").rename(os.fsdecode(bad))
    with pytest.raises(ReidDataError, match=r"1/caf\\udce9\.jpg: file name is not valid UTF-8"):
        load_reid_dataset("custom", root, cache_dir=tmp_path / "cache")
    with caplog.at_level(logging.WARNING, logger="hf_reid"):
        splits = load_reid_dataset("custom", root, cache_dir=tmp_path / "cache", on_bad_image="skip")
    assert "custom train: skipped 1 bad file(s)" in caplog.text
    assert sorted(splits["train"]["path"]) == ["1/a.jpg", "2/a.jpg"]


# -- caption JSON -------------------------------------------------------------------------------


@pytest.fixture
def captions(tmp_path: Path) -> Path:
    root = tmp_path / "captions"
    for pid in (1, 2, 3):
        write_image(root / "imgs" / f"{pid:04d}_c1_000001.jpg")
    return root


def write_entries(root: Path, *extra: dict) -> None:
    entries = [{"id": 1, "file_path": "0001_c1_000001.jpg", "captions": ["a man in red"], "split": "train"}]
    (root / "reid_raw.json").write_text(json.dumps([*entries, *extra]))


def test_caption_json_that_is_not_utf8_names_the_file(captions: Path, tmp_path: Path) -> None:
    (captions / "reid_raw.json").write_bytes(
        b'[{"id": 1, "file_path": "0001_c1_000001.jpg", "captions": ["a caf\xe9 owner"]}]'
    )
    with pytest.raises(ReidDataError, match="is not UTF-8 text: byte 0xe9 at offset 65") as err:
        load_reid_dataset("captions", captions, cache_dir=tmp_path / "cache")
    assert str(captions / "reid_raw.json") in str(err.value)


def test_caption_json_with_a_utf8_byte_order_mark_is_read(captions: Path, tmp_path: Path) -> None:
    write_entries(captions)
    data = (captions / "reid_raw.json").read_bytes()
    (captions / "reid_raw.json").write_bytes(b"\xef\xbb\xbf" + data)
    assert len(load_reid_dataset("captions", captions, cache_dir=tmp_path / "cache")["train"]) == 1


@pytest.mark.parametrize("captions_value", ["missing", None, [], ["", "  "]])
def test_caption_entry_without_captions_is_skipped_and_counted(
    captions: Path, tmp_path: Path, caplog, captions_value
) -> None:
    entry = {"id": 2, "file_path": "0002_c1_000001.jpg", "split": "train"}
    if captions_value != "missing":
        entry["captions"] = captions_value
    write_entries(captions, entry)
    with pytest.raises(ReidDataError, match=r"0002_c1_000001\.jpg: entry 1 has no non-empty caption"):
        load_reid_dataset("captions", captions, cache_dir=tmp_path / "cache")
    with caplog.at_level(logging.WARNING, logger="hf_reid"):
        splits = load_reid_dataset("captions", captions, cache_dir=tmp_path / "cache", on_bad_image="skip")
    assert "captions train: skipped 1 bad file(s)" in caplog.text
    assert splits["train"]["pid"] == [1]


def test_caption_field_missing_from_every_entry_is_a_mapping_error(captions: Path, tmp_path: Path) -> None:
    (captions / "reid_raw.json").write_text(
        json.dumps([{"id": 1, "file_path": "0001_c1_000001.jpg", "text": "a"}])
    )
    with pytest.raises(ReidDataError, match=r"no entry of .* has the field 'captions'.*captions_field="):
        load_reid_dataset("captions", captions, cache_dir=tmp_path / "cache", on_bad_image="skip")


def test_caption_that_is_not_valid_unicode_is_a_bad_entry(captions: Path, tmp_path: Path, caplog) -> None:
    (captions / "reid_raw.json").write_text(
        '[{"id": 1, "file_path": "0001_c1_000001.jpg", "captions": ["ok"]},'
        ' {"id": 2, "file_path": "0002_c1_000001.jpg", "captions": ["bad \\ud800"]}]'
    )
    with pytest.raises(ReidDataError, match="a caption is not valid Unicode text"):
        load_reid_dataset("captions", captions, cache_dir=tmp_path / "cache")
    with caplog.at_level(logging.WARNING, logger="hf_reid"):
        splits = load_reid_dataset("captions", captions, cache_dir=tmp_path / "cache", on_bad_image="skip")
    assert splits["train"]["pid"] == [1]


def test_caption_pid_given_as_a_superscript_digit_is_named(captions: Path, tmp_path: Path) -> None:
    write_entries(captions, {"id": "²", "file_path": "0002_c1_000001.jpg", "captions": ["x"]})
    with pytest.raises(ReidDataError, match="entry 1: field 'id' must be an integer identity, got '²'"):
        load_reid_dataset("captions", captions, cache_dir=tmp_path / "cache")


# -- metrics ------------------------------------------------------------------------------------


@pytest.mark.parametrize("pids", [np.array(["a", "b", "c"]), np.array([b"a", b"b", b"c"]), ["a", "b", "c"]])
def test_evaluate_rank_names_string_pids(pids) -> None:
    distmat = np.random.default_rng(0).random((3, 4)).astype(np.float32)
    with pytest.raises(TypeError, match=r"`q_pids` holds (byte )?strings.*map.*to integers"):
        evaluate_rank(distmat, pids, np.arange(4), np.zeros(3, int), np.ones(4, int))
    with pytest.raises(TypeError, match="`g_pids`"):
        evaluate_rank(distmat.T, np.arange(4), pids, np.zeros(4, int), np.ones(3, int))


def test_compute_distance_matrix_names_non_numeric_features() -> None:
    with pytest.raises(TypeError, match="`g` holds strings"):
        compute_distance_matrix(np.ones((2, 3), np.float32), np.array([["a", "b", "c"]]))


def test_big_endian_features_are_read() -> None:
    query = np.arange(6, dtype=">f4").reshape(2, 3)
    assert np.allclose(
        compute_distance_matrix(query, query), compute_distance_matrix(query.astype("<f4"), query)
    )


@pytest.fixture
def metric_data() -> dict:
    rng = np.random.default_rng(0)
    pids = np.arange(6) % 3
    return {
        "query": rng.normal(size=(6, 8)).astype(np.float32),
        "q_pids": pids,
        "q_cams": np.zeros(6, np.int64),
        "gallery": rng.normal(size=(9, 8)).astype(np.float32),
        "g_pids": np.arange(9) % 3,
        "g_cams": np.ones(9, np.int64),
    }


def gallery_kwargs(data: dict) -> dict:
    return {
        "query_camids": data["q_cams"],
        "gallery_embeddings": data["gallery"],
        "gallery_pids": data["g_pids"],
        "gallery_camids": data["g_cams"],
    }


def test_reid_metric_rejects_float_pids_that_are_not_whole(metric_data: dict) -> None:
    metric = ReidMetric()
    with pytest.raises(
        ValueError, match=r"`references` must hold integers; entry 2 is 1\.7, not a whole number"
    ):
        metric.add_batch(predictions=metric_data["query"][:3], references=[0.0, 1.0, 1.7])
    with pytest.raises(ValueError, match="`reference` must hold integers"):
        metric.add(prediction=metric_data["query"][0], reference=2.5)
    with pytest.raises(ValueError, match="`gallery_pids` must hold integers"):
        ReidMetric().compute(
            predictions=metric_data["query"],
            references=metric_data["q_pids"],
            **{**gallery_kwargs(metric_data), "gallery_pids": metric_data["g_pids"] + 0.5},
        )
    with pytest.raises(TypeError, match="`references` must hold integers, got booleans"):
        metric.add_batch(predictions=metric_data["query"][:2], references=[True, False])


def test_reid_metric_accepts_whole_float_pids_with_the_same_result(metric_data: dict) -> None:
    as_ints = ReidMetric().compute(
        predictions=metric_data["query"], references=metric_data["q_pids"], **gallery_kwargs(metric_data)
    )
    as_floats = ReidMetric().compute(
        predictions=torch.from_numpy(metric_data["query"]),
        references=metric_data["q_pids"].astype(np.float32),
        **{**gallery_kwargs(metric_data), "gallery_pids": metric_data["g_pids"].astype(np.float64)},
    )
    assert as_floats == as_ints


def test_reid_metric_names_embeddings_of_another_size(metric_data: dict) -> None:
    metric = ReidMetric()
    metric.add_batch(predictions=metric_data["query"][:3], references=metric_data["q_pids"][:3])
    with pytest.raises(
        ValueError, match="this batch's embeddings have 5 values but the earlier batches' have 8"
    ):
        metric.add_batch(predictions=metric_data["query"][3:, :5], references=metric_data["q_pids"][3:])
    with pytest.raises(ValueError, match=r"different sizes \[2, 8\]"):
        metric.add_batch(predictions=[[0.0] * 8, [0.0, 1.0]], references=[0, 1])
    # the rejected batches were not added: the metric still computes on the good one
    metric.add_batch(predictions=metric_data["query"][3:], references=metric_data["q_pids"][3:])
    result = metric.compute(**gallery_kwargs(metric_data))
    assert result["num_valid_queries"] + result["num_invalid_queries"] == 6
    metric.add_batch(predictions=metric_data["query"][:, :4], references=metric_data["q_pids"])  # new round
