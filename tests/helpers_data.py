"""Tiny on-disk Re-ID fixtures shared by the data tests: solid-colour images under real file names."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

MARKET_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


def write_image(path: Path, shade: int = 128, size: tuple[int, int] = (16, 32)) -> Path:
    """A small solid-colour image; the format follows the suffix (.jpg or .png)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (shade % 256, (shade * 3) % 256, (shade * 7) % 256)).save(path)
    return path


def market_name(pid: int, cam: int, frame: int) -> str:
    prefix = "-1" if pid == -1 else f"{pid:04d}"
    return f"{prefix}_c{cam}s1_{frame:06d}_00.jpg"


def make_market(
    root: Path, spec: dict[str, list[tuple[int, int]]], name=market_name
) -> dict[str, dict[str, tuple[int, int]]]:
    """Write a Market-style folder; returns {split: {relative path: (pid, camid 0-based)}} without junk."""
    expected: dict[str, dict[str, tuple[int, int]]] = {}
    for split, items in spec.items():
        expected[split] = {}
        for frame, (pid, cam) in enumerate(items):
            relative = f"{MARKET_FOLDERS[split]}/{name(pid, cam, frame)}"
            write_image(root / relative, shade=pid * 10 + cam)
            if pid != -1:
                expected[split][relative] = (pid, cam - 1)
    return expected
