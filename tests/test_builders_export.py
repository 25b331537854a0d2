"""Converting a layout to a saved or pushed dataset: images embedded, card written, Hub mocked."""

from __future__ import annotations

import re
import runpy
import shutil
import sys
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers_data import make_market
from huggingface_hub import DatasetCard, HfApi
from huggingface_hub.hf_api import RepoUrl

from hf_reid.data import reid_layout_names
from hf_reid.data.export import run_converter

SCRIPTS = Path(__file__).resolve().parents[1] / "dataset_scripts"
SPEC = {"train": [(1, 1), (1, 2), (4, 3)], "query": [(2, 1)], "gallery": [(2, 2), (3, 3), (0, 4), (-1, 1)]}


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A Market fixture and the pixels of every non-junk image, read before any conversion."""
    root = tmp_path / "src"
    expected = make_market(root, SPEC)
    from PIL import Image

    pixels = {rel: np.asarray(Image.open(root / rel)) for rows in expected.values() for rel in rows}
    return root, pixels


def assert_same_images(splits: datasets.DatasetDict, pixels: dict[str, np.ndarray]) -> None:
    seen = 0
    for dataset in splits.values():
        for row in dataset:
            assert np.array_equal(np.asarray(row["image"]), pixels[row["path"]])
            seen += 1
    assert seen == len(pixels)


def test_save_to_disk_embeds_images(source, tmp_path: Path) -> None:
    root, pixels = source
    out = run_converter(
        "market1501", [str(root), "--out", str(tmp_path / "arrow"), "--cache-dir", str(tmp_path / "c")]
    )
    shutil.rmtree(root)
    shutil.rmtree(tmp_path / "c")
    splits = datasets.load_from_disk(out)
    assert list(splits) == ["train", "query", "gallery"]
    assert_same_images(splits, pixels)
    card = DatasetCard.load(Path(out) / "README.md")
    assert "zheng2015scalable" in card.text
    assert "| gallery | 3 | 3 | 3 |" in card.text  # pids 2, 3, 0 on cameras 2, 3, 4 (junk dropped)


def test_parquet_folder_embeds_images_and_loads_both_ways(source, tmp_path: Path) -> None:
    root, pixels = source
    out = Path(
        run_converter(
            "market1501",
            [
                str(root),
                "--out",
                str(tmp_path / "pq"),
                "--format",
                "parquet",
                "--cache-dir",
                str(tmp_path / "c"),
            ],
        )
    )
    shutil.rmtree(root)
    files = sorted(p.name for p in (out / "data").iterdir())
    assert files == [f"{s}-00000-of-00001.parquet" for s in ("gallery", "query", "train")]
    image_column = pq.read_table(out / "data" / "train-00000-of-00001.parquet").column("image").to_pylist()
    assert all(cell["bytes"] for cell in image_column)

    data_files = {s: str(out / "data" / f"{s}-*.parquet") for s in ("train", "query", "gallery")}
    by_files = datasets.load_dataset("parquet", data_files=data_files, cache_dir=str(tmp_path / "hf"))
    assert_same_images(by_files, pixels)
    by_folder = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf2"))
    assert list(by_folder) == ["train", "query", "gallery"]
    assert by_folder["query"].features == by_files["query"].features
    assert DatasetCard.load(out / "README.md").data.configs[0]["config_name"] == "default"


def test_push_uploads_one_private_parquet_commit(source, tmp_path: Path, monkeypatch) -> None:
    root, pixels = source
    calls = {}

    def fake_create_repo(self, repo_id, **kwargs):
        calls["create_repo"] = (repo_id, kwargs)
        return RepoUrl(f"https://huggingface.co/datasets/{repo_id}")

    def fake_upload_folder(self, *, repo_id, folder_path, **kwargs):
        folder = Path(folder_path)
        calls["upload"] = (repo_id, kwargs)
        calls["files"] = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        calls["readme"] = (folder / "README.md").read_text()
        calls["rows"] = sum(pq.read_table(p).num_rows for p in (folder / "data").glob("*.parquet"))
        calls["bytes"] = all(
            c["bytes"]
            for p in (folder / "data").glob("*.parquet")
            for c in pq.read_table(p).column("image").to_pylist()
        )
        return type("Commit", (), {"commit_url": f"https://huggingface.co/datasets/{repo_id}/commit/abc"})()

    monkeypatch.setattr(HfApi, "create_repo", fake_create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", fake_upload_folder)
    url = run_converter(
        "market1501", [str(root), "--push-to-hub", "me/market", "--cache-dir", str(tmp_path / "c")]
    )
    assert url.endswith("/commit/abc")
    repo_id, create_kwargs = calls["create_repo"]
    assert (
        repo_id == "me/market"
        and create_kwargs["private"] is True
        and create_kwargs["repo_type"] == "dataset"
    )
    assert calls["upload"][1]["repo_type"] == "dataset"
    assert calls["upload"][1]["delete_patterns"] == ["data/*.parquet"]
    assert calls["files"] == ["README.md"] + [
        f"data/{s}-00000-of-00001.parquet" for s in ("gallery", "query", "train")
    ]
    assert calls["rows"] == len(pixels) and calls["bytes"]
    assert 'load_dataset("me/market")' in calls["readme"]


def test_every_layout_has_a_thin_converter_script() -> None:
    scripts = {p.stem.removeprefix("convert_"): p for p in SCRIPTS.glob("convert_*.py")}
    assert set(scripts) == set(reid_layout_names()) - {"toy_layout"}
    for name, path in scripts.items():
        text = path.read_text()
        assert re.findall(r'run_converter\("([a-z0-9_]+)"', text) == [name]
        assert len(text.splitlines()) < 30


def test_converter_script_runs_and_options_map_to_flags(tmp_path: Path, monkeypatch, capsys) -> None:
    root = tmp_path / "cuhk03-np"
    make_market(
        root / "detected",
        {"train": [(1, 1)], "query": [(2, 1)], "gallery": [(2, 2)]},
        name=lambda p, c, f: f"{p:04d}_c{c}_{f + 1}.png",
    )
    argv = [
        "convert_cuhk03_np.py",
        str(root),
        "--out",
        str(tmp_path / "out"),
        "--cache-dir",
        str(tmp_path / "c"),
    ]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(ValueError, match="choose the box set explicitly"):
        runpy.run_path(str(SCRIPTS / "convert_cuhk03_np.py"), run_name="__main__")
    monkeypatch.setattr(sys, "argv", [*argv, "--no-labeled"])
    runpy.run_path(str(SCRIPTS / "convert_cuhk03_np.py"), run_name="__main__")
    assert capsys.readouterr().out.strip() == str(tmp_path / "out")
    splits = datasets.load_from_disk(str(tmp_path / "out"))
    assert list(splits["gallery"]["path"]) == ["detected/bounding_box_test/0002_c2_1.png"]
