"""The ``README.md`` dataset card written into every SynthPeds output folder."""

from __future__ import annotations

from typing import Any

from .cameras import domain_style
from .presets import PRESETS

_LAYOUT_TEXT = {
    "market": "Market-1501 style (`bounding_box_train/`, `query/`, `bounding_box_test/`; "
    "`PPPP_cCsS_FFFFFF_BB.jpg`), with `0000` distractors and `-1` junk in the gallery.",
    "ltcc": "LTCC style clothes change: `train/`, `query/`, `test/` with `PPP_O_cC_FFFFFF.png` "
    "(`O` = outfit = clothes id); `info/` lists the test identities with and without a change.",
    "sysu_mm01": "SYSU-MM01 style visible-infrared: `cam1..cam6/PPPP/NNNN.jpg`, cameras 3 and 6 "
    "infrared (grey intensity images), `exp/{train,val,test}_id.txt`.",
    "mlr_cuhk03": "MLR-CUHK03 style cross-resolution: Market-style folders; camera-1 images (all "
    "queries) are downscaled by 2, 3 or 4, camera-2 images (the gallery) are full size.",
    "captions": "Single-camera captioned set (CUHK-PEDES JSON `reid_raw.json` + `imgs/`): each "
    "identity is seen by one camera; 1-2 captions per image.",
    "pretrain": "Image-caption pairs (CUHK-PEDES JSON) for pretraining a tiny CLIP; identities "
    "disjoint from every Re-ID split.",
}

_LOADERS = {
    "market": 'domains = load_synthpeds_domains(root)  # {"synthpeds_d0": DatasetDict, ...}',
    "ltcc": 'ltcc = load_reid_dataset("ltcc", root / "ltcc", protocol="clothes_changing")',
    "sysu_mm01": 'sysu = load_reid_dataset("sysu_mm01", root / "sysu_mm01", mode="all")',
    "mlr_cuhk03": 'mlr = load_reid_dataset("mlr_cuhk03", root / "mlr_cuhk03")',
    "captions": 'captions = load_reid_dataset("captions", root / "captions")',
    "pretrain": 'pretrain = load_reid_dataset("captions", root / "pretrain")',
}


def _captioned_flags(meta: dict[str, Any]) -> str:
    flags = ""
    if "captioned_styles" in meta:
        flags += f" --captioned-styles {meta['captioned_styles']}"
    if "captioned_identities" in meta:
        flags += f" --captioned-identities {meta['captioned_identities']}"
    return flags


def _captioned_section(meta: dict[str, Any]) -> list[str]:
    """The card's section on a captioned set made with non-default options (none otherwise: a
    default run's card is the one it had before the options existed)."""
    if not set(meta) & {"captioned_styles", "captioned_identities"}:
        return []
    identities = meta.get("captioned_identities", meta["preset_settings"]["caption_ids"])
    sources = len(meta["source_domains"]) * meta["preset_settings"]["train_ids"]
    preset = PRESETS.get(meta["preset"])
    default = f"the `{meta['preset']}` preset has {preset.caption_ids}; " if preset is not None else ""
    lines = [
        "## Single-camera captioned set",
        "",
        f"- identities: {identities} (`--captioned-identities`; {default}the source domains hold "
        f"{sources} training identities)",
    ]
    places = meta.get("captioned_places")
    if meta.get("captioned_styles") == "diverse" and places:
        bases = ", ".join(f"{name} {count}" for name, count in places["bases"].items())
        lines += [
            "- camera styles: **diverse** (`--captioned-styles diverse`). Every identity is filmed by a camera "
            f"of its own ({places['places']} cameras), at a place of its own: one of the designed styles other "
            f"than the held-out domain's ({', '.join(places['allowed_bases'])}; drawn: {bases}) with every "
            f"photometric, sensor and scene range moved independently by up to {places['place_shift']} of "
            "its width (+0.1), its colours, textures, viewpoint mix and occlusion redrawn. No camera is drawn "
            f"from the held-out domain's style distribution ({places['held_out_style']}): each lies at least "
            f"{places['held_out_margin']} from it (style distance: the norm of the excess beyond its ranges, "
            f"in units of the designed styles' span; here min {places['min_held_out_distance']}, median "
            f"{places['median_held_out_distance']}). The people and their image counts are those of the "
            "default (`sources`) set; `synthpeds_meta.json` records every camera's place.",
        ]
    else:
        lines.append(
            "- camera styles: `sources` (9 cameras drawn from the source domains' styles; "
            "`--captioned-styles diverse` gives every identity a camera at a place of its own)"
        )
    return [*lines, ""]


def dataset_card(meta: dict[str, Any]) -> str:
    """Markdown dataset card (with Hub YAML front matter) describing the run in ``meta``.

    The card does not name the output folder, so it is identical wherever the run is written.
    """
    diverse = meta.get("captioned_styles") == "diverse"
    lines = [
        "---",
        "license: mit",
        "pretty_name: SynthPeds",
        "tags: [person-re-identification, synthetic, image-text]",
        "task_categories: [image-feature-extraction]",
        "---",
        "",
        "# SynthPeds",
        "",
        "Procedurally rendered pedestrian crops written by `hf_reid.data.synthetic` "
        f"(`hf-reid synth --preset {meta['preset']} --seed {meta['seed']}{_captioned_flags(meta)}`), in the "
        "layouts of the real "
        "Re-ID datasets so that the real loading code reads them. The same seed gives byte-identical files.",
        "",
        f"- image size: {meta['image_size'][0]}x{meta['image_size'][1]} (height x width)",
        f"- images: {meta['num_images']}",
        f"- domains: {', '.join(meta['domains'])}; **held-out target domain: `{meta['held_out_domain']}`** "
        + (
            "(its camera styles are used by no other folder: LTCC, SYSU-MM01, MLR-CUHK03 and the pretraining "
            "set draw cameras from the source domains only, the diverse captioned set from places of its own)"
            if diverse
            else "(its camera styles are used by no other folder: LTCC, SYSU-MM01, MLR-CUHK03, the captioned and "
            "pretraining sets draw cameras from the source domains only)"
        ),
        "",
        "## Folders",
        "",
        "| folder | layout | train | query | gallery | val | test |",
        "|---|---|---|---|---|---|---|",
    ]
    for dataset, counts in meta["counts"].items():
        layout = "market" if dataset.startswith("synthpeds_d") else dataset
        row = [str(counts.get(split, "")) for split in ("train", "query", "gallery", "val", "test")]
        lines.append(f"| `{dataset}/` | {layout} | " + " | ".join(row) + " |")
    lines += ["", "## Layouts", ""]
    lines += [f"- **{name}**: {_LAYOUT_TEXT[name]}" for name in meta["layouts"]]
    lines += ["", "## Domain styles", "", "| domain | style | description |", "|---|---|---|"]
    for index, dataset in enumerate(meta["domains"]):
        style = domain_style(index)
        lines.append(f"| `{dataset}` | {style.name} | {style.description} |")
    lines += ["", *_captioned_section(meta)]
    lines += [
        "## Identities",
        "",
        "Each identity copies the attribute vector of a randomly drawn real Market-1501 identity "
        "(27 attributes, so their joint distribution is real) and adds details no attribute names: body "
        "shape, skin and hair tone, exact garment shades, clothing pattern, shoes, accessory colours and "
        "placement, gait. Attribute-identical identities exist and differ only in those details.",
        "",
        "## Loading",
        "",
        "```python",
        "from pathlib import Path",
        "",
        "from hf_reid.data import load_reid_dataset, load_synthpeds_domains",
        "",
        'root = Path("path/to/this/folder")',
    ]
    lines += [_LOADERS[name] for name in meta["layouts"]]
    lines += [
        "```",
        "",
        "`synthpeds_meta.json` holds the ground truth of every image (pid, camera, clothes id, "
        "modality, captions, attributes, camera style, viewpoint).",
        "",
        "## Citation",
        "",
        'Attributes are drawn from the Market-1501 attribute annotations: Lin et al., "Improving Person '
        'Re-identification by Attribute and Identity Learning", Pattern Recognition 2019; Zheng et al., '
        '"Scalable Person Re-identification: A Benchmark", ICCV 2015.',
        "",
    ]
    return "\n".join(lines)
