"""Bad input: every kind gives an error naming the file and the problem, or, with
``on_bad_image="skip"`` where skipping makes sense, a warning with the count and the names."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from helpers_data import make_market, market_name, write_image
from PIL import ImageFile

from hf_reid.data import ReidDataError, load_reid_dataset

GOOD = {"train": [(1, 1), (1, 2)], "query": [(2, 1)], "gallery": [(2, 2), (3, 3)]}


@pytest.fixture
def market(tmp_path: Path) -> Path:
    root = tmp_path / "market"
    make_market(root, GOOD)
    return root


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def big_jpeg(path: Path) -> Path:
    """A noisy JPEG large enough that cutting it in half leaves a decodable header."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 255, (128, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)
    return path


def test_truncated_jpeg_is_named_or_skipped_with_a_count(market: Path, tmp_path: Path, caplog) -> None:
    bad = big_jpeg(market / "bounding_box_test" / market_name(4, 1, 50))
    truncate(bad)
    with pytest.raises(ReidDataError) as err:
        load_reid_dataset("market1501", market, cache_dir=tmp_path / "c")
    message = str(err.value)
    assert f"bounding_box_test/{bad.name}" in message and "truncated" in message
    assert "on_bad_image='skip'" in message

    with caplog.at_level(logging.WARNING, logger="hf_reid"):
        splits = load_reid_dataset("market1501", market, cache_dir=tmp_path / "c", on_bad_image="skip")
    assert "gallery: skipped 1 bad file(s)" in caplog.text and bad.name in caplog.text
    assert bad.name not in " ".join(splits["gallery"]["path"])
    assert len(splits["gallery"]) == len(GOOD["gallery"])


def test_truncated_jpeg_is_caught_even_when_pil_tolerates_truncation(
    market: Path, tmp_path: Path, monkeypatch
) -> None:
    bad = big_jpeg(market / "query" / market_name(5, 2, 60))
    truncate(bad)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ReidDataError, match=f"query/{bad.name}: not a readable image"):
        load_reid_dataset("market1501", market, cache_dir=tmp_path / "c")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored


def test_zero_byte_file(market: Path, tmp_path: Path, caplog) -> None:
    empty = market / "bounding_box_train" / market_name(9, 3, 70)
    empty.write_bytes(b"")
    with pytest.raises(ReidDataError, match=rf"bounding_box_train/{empty.name}: empty file \(0 bytes\)"):
        load_reid_dataset("market1501", market, cache_dir=tmp_path / "c")
    with caplog.at_level(logging.WARNING, logger="hf_reid"):
        splits = load_reid_dataset("market1501", market, cache_dir=tmp_path / "c", on_bad_image="skip")
    assert "train: skipped 1 bad file(s)" in caplog.text
    assert 9 not in splits["train"]["pid"]


def test_file_name_that_does_not_parse(market: Path, tmp_path: Path, caplog) -> None:
    odd = write_image(market / "query" / "person_12_cam1.jpg")
    with pytest.raises(
        ReidDataError, match=r"query/person_12_cam1.jpg: file name does not follow the market1501 scheme"
    ):
        load_reid_dataset("market1501", market, cache_dir=tmp_path / "c")
    with caplog.at_level(logging.WARNING, logger="hf_reid"):
        splits = load_reid_dataset("market1501", market, cache_dir=tmp_path / "c", on_bad_image="skip")
    assert "query: skipped 1 bad file(s): query/person_12_cam1.jpg" in caplog.text
    assert odd.name not in " ".join(splits["query"]["path"])


def test_many_bad_files_are_counted_and_the_first_few_named(market: Path, tmp_path: Path, caplog) -> None:
    for index in range(8):
        (market / "bounding_box_test" / market_name(20 + index, 1, index)).write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="hf_reid"):
        load_reid_dataset("market1501", market, cache_dir=tmp_path / "c", on_bad_image="skip")
    assert "skipped 8 bad file(s)" in caplog.text and "(and 3 more)" in caplog.text


def test_unknown_camera_raises_even_when_skipping(market: Path, tmp_path: Path) -> None:
    write_image(market / "bounding_box_test" / market_name(4, 9, 80))
    for policy in ("error", "skip"):
        with pytest.raises(
            ReidDataError, match=r"bounding_box_test/0004_c9s1_000080_00.jpg: camera c9 is unknown .*c1..c6"
        ):
            load_reid_dataset("market1501", market, cache_dir=tmp_path / "c", on_bad_image=policy)
    splits = load_reid_dataset("market1501", market, cache_dir=tmp_path / "c", num_cameras=9)
    assert 8 in splits["gallery"]["camid"]


def test_empty_split(market: Path, tmp_path: Path) -> None:
    for path in (market / "query").iterdir():
        path.unlink()
    with pytest.raises(ReidDataError, match=r"market1501 query: split is empty: no usable images in .*query"):
        load_reid_dataset("market1501", market, cache_dir=tmp_path / "c")


def test_split_whose_every_file_was_skipped_is_still_an_error(market: Path, tmp_path: Path) -> None:
    for path in (market / "query").iterdir():
        path.write_bytes(b"")
    with pytest.raises(ReidDataError, match="every file in it was bad and skipped"):
        load_reid_dataset("market1501", market, cache_dir=tmp_path / "c", on_bad_image="skip")


def test_missing_folder(market: Path, tmp_path: Path) -> None:
    (market / "bounding_box_test").rename(market / "gallery_elsewhere")
    with pytest.raises(
        FileNotFoundError, match=r"the gallery folder not found: expected the folder .*bounding_box_test"
    ):
        load_reid_dataset("market1501", market, cache_dir=tmp_path / "c")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_reid_dataset("market1501", tmp_path / "nowhere", cache_dir=tmp_path / "c")


def test_data_dir_one_level_too_high_gets_a_hint(tmp_path: Path) -> None:
    make_market(tmp_path / "downloads" / "Market-1501-v15.09.15", GOOD)
    with pytest.raises(
        FileNotFoundError, match=r"one level down, in .*Market-1501-v15.09.15: pass data_dir="
    ):
        load_reid_dataset("market1501", tmp_path / "downloads", cache_dir=tmp_path / "c")


def test_msmt17_list_problems_name_the_list_file_and_line(tmp_path: Path) -> None:
    root = tmp_path / "MSMT17_V1"
    write_image(root / "train" / "0000" / "0000_000_01_0303morning_0000_0.jpg")
    write_image(root / "test" / "0001" / "0001_000_02_0303morning_0000_0.jpg")
    (root / "list_train.txt").write_text("0000/0000_000_01_0303morning_0000_0.jpg 0\n")
    (root / "list_query.txt").write_text("0001/0001_000_02_0303morning_0000_0.jpg 1\n")
    (root / "list_gallery.txt").write_text(
        "0001/0001_000_02_0303morning_0000_0.jpg 1\n0001/0001_001_03_0303morning_0001_0.jpg 1\n"
    )
    with pytest.raises(
        ReidDataError, match=r"test/0001/0001_001_03_0303morning_0001_0.jpg: file does not exist"
    ):
        load_reid_dataset("msmt17", root, cache_dir=tmp_path / "c")
    (root / "list_gallery.txt").write_text("0001/0001_000_02_0303morning_0000_0.jpg\n")
    with pytest.raises(ReidDataError, match=r"list_gallery.txt line 1: expected '<image path> <pid>'"):
        load_reid_dataset("msmt17", root, cache_dir=tmp_path / "c")
    (root / "list_gallery.txt").write_text("0001/0001_000_16_0303morning_0000_0.jpg 1\n")
    with pytest.raises(ReidDataError, match=r"camera 16 is unknown \(MSMT17 has cameras 1..15\)"):
        load_reid_dataset("msmt17", root, cache_dir=tmp_path / "c")


def test_sysu_mm01_unknown_camera_folder_and_missing_id_list(tmp_path: Path) -> None:
    root = tmp_path / "SYSU-MM01"
    for camera in range(1, 8):
        write_image(root / f"cam{camera}" / "0001" / "0001.jpg")
    (root / "exp").mkdir()
    (root / "exp" / "train_id.txt").write_text("1")
    with pytest.raises(FileNotFoundError, match=r"exp/val_id.txt"):
        load_reid_dataset("sysu_mm01", root, cache_dir=tmp_path / "c")
    (root / "exp" / "val_id.txt").write_text("2")
    (root / "exp" / "test_id.txt").write_text("3,x")
    with pytest.raises(ReidDataError, match=r"test_id.txt: 'x' is not an identity number"):
        load_reid_dataset("sysu_mm01", root, cache_dir=tmp_path / "c")
    (root / "exp" / "test_id.txt").write_text("3")
    with pytest.raises(ReidDataError, match=r"cam7: camera 7 is unknown \(SYSU-MM01 has cam1..cam6\)"):
        load_reid_dataset("sysu_mm01", root, cache_dir=tmp_path / "c")


def test_caption_json_problems_name_the_file(tmp_path: Path) -> None:
    root = tmp_path / "caps"
    write_image(root / "imgs" / "a.jpg")
    (root / "reid_raw.json").write_text('[{"id": 1,')
    with pytest.raises(ReidDataError, match=r"reid_raw.json is not valid JSON"):
        load_reid_dataset("captions", root, cache_dir=tmp_path / "c")
    (root / "reid_raw.json").write_text('[{"id": "one", "file_path": "a.jpg", "captions": ["x"]}]')
    with pytest.raises(ReidDataError, match=r"entry 0: field 'id' must be an integer identity, got 'one'"):
        load_reid_dataset("captions", root, cache_dir=tmp_path / "c")
    (root / "reid_raw.json").write_text('[{"id": 1, "file_path": "missing.jpg", "captions": ["x"]}]')
    with pytest.raises(ReidDataError, match=r"missing.jpg: file does not exist"):
        load_reid_dataset("captions", root, cache_dir=tmp_path / "c")


def test_custom_csv_without_required_columns(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    write_image(root / "a.jpg")
    (root / "labels.csv").write_text("file,person\na.jpg,1\n")
    with pytest.raises(
        ReidDataError,
        match=r"labels.csv needs a header row with the columns path,pid .*missing \['path', 'pid'\]",
    ):
        load_reid_dataset("custom", root, cache_dir=tmp_path / "c", csv_file="labels.csv")
