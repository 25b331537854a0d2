"""A contact sheet of a SynthPeds run: what each domain and scenario looks like, at a glance.

Rows: random gallery crops of every Market-style domain; one identity across the cameras of the
first domain; one LTCC identity in each of its outfits; SYSU-MM01 identities in visible and
infrared cameras; MLR-CUHK03 low-resolution queries next to their full-resolution gallery
images; for a ``diverse`` captioned set, one image of each of several identities, each filmed by
its own camera at a place of its own (two rows). Rows whose layout was not written are left out.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .metadata import read_meta

_GAP = 2


def _row_domain(records: list[dict], rng: np.random.Generator, n: int) -> list[dict]:
    people = [r for r in records if r["split"] == "gallery" and r["pid"] > 0]
    return [people[i] for i in rng.choice(len(people), size=min(n, len(people)), replace=False)]


def _row_identity(records: list[dict], n: int) -> list[dict]:
    by_identity = defaultdict(list)
    for r in records:
        if r["pid"] > 0:
            by_identity[r["identity"]].append(r)
    best = max(by_identity.values(), key=lambda rs: (len({r["camid"] for r in rs}), len(rs)))
    return sorted(best, key=lambda r: r["camid"])[:n]


def _row_pairs(groups: list[list[dict]], n: int) -> list[dict]:
    row: list[dict] = []
    for group in groups:
        if len(row) + len(group) > n:
            break
        row.extend(group)
    return row


def save_preview(out_dir: str | Path, path: str | Path, per_row: int = 12, seed: int = 0) -> Path:
    """Write a PNG contact sheet of the SynthPeds run in ``out_dir`` to ``path``."""
    out_dir = Path(out_dir)
    meta = read_meta(out_dir)
    height, width = meta["image_size"]
    rng = np.random.default_rng(seed)
    by_dataset = defaultdict(list)
    for record in meta["images"]:
        by_dataset[record["dataset"]].append(record)

    rows: list[tuple[str, list[dict]]] = []
    for domain in meta["domains"]:
        if domain in by_dataset:
            tag = " (held out)" if domain == meta["held_out_domain"] else ""
            rows.append((f"{domain}{tag}", _row_domain(by_dataset[domain], rng, per_row)))
    if meta["domains"][0] in by_dataset:
        rows.append(("one identity, all cameras", _row_identity(by_dataset[meta["domains"][0]], per_row)))
    if "ltcc" in by_dataset:
        outfits = defaultdict(dict)
        for r in by_dataset["ltcc"]:
            outfits[r["identity"]].setdefault(r["clothes_id"], r)
        groups = [list(o.values()) for o in outfits.values() if len(o) > 1]
        rows.append(("ltcc: clothes change", _row_pairs(groups, per_row)))
    if "sysu_mm01" in by_dataset:
        views = defaultdict(dict)
        for r in by_dataset["sysu_mm01"]:
            views[r["pid"]].setdefault(r["modality"], r)
        groups = [[v["visible"], v["infrared"]] for v in views.values() if len(v) == 2]
        rows.append(("sysu_mm01: visible | infrared", _row_pairs(groups, per_row)))
    if "mlr_cuhk03" in by_dataset:
        views = defaultdict(dict)
        for r in by_dataset["mlr_cuhk03"]:
            views[r["pid"]].setdefault(r["split"], r)
        groups = [[v["query"], v["gallery"]] for v in views.values() if {"query", "gallery"} <= set(v)]
        rows.append(("mlr_cuhk03: low-res query | gallery", _row_pairs(groups, per_row)))
    if meta.get("captioned_styles") == "diverse" and "captions" in by_dataset:
        first = {}
        for r in by_dataset["captions"]:
            first.setdefault(r["pid"], r)
        people = list(first.values())
        picked = [
            people[i] for i in np.linspace(0, len(people) - 1, min(2 * per_row, len(people))).astype(int)
        ]
        rows.append(("captions (diverse): one identity per camera, each at its own place", picked[:per_row]))
        if len(picked) > per_row:
            rows.append(("captions (diverse), more places", picked[per_row:]))

    label_h = 12
    sheet = Image.new("RGB", (per_row * (width + _GAP), len(rows) * (height + _GAP + label_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for y, (label, records) in enumerate(rows):
        top = y * (height + _GAP + label_h)
        draw.text((2, top), label, fill=(0, 0, 0))
        for x, record in enumerate(records):
            image = Image.open(out_dir / record["path"]).convert("RGB")
            if image.size != (width, height):
                image = image.resize((width, height), Image.Resampling.NEAREST)
            sheet.paste(image, (x * (width + _GAP), top + label_h))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
