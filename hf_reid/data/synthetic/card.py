"""The ``README.md`` dataset card written into every SynthPeds output folder."""

from __future__ import annotations

from typing import Any

from .cameras import domain_style

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


def dataset_card(meta: dict[str, Any]) -> str:
    """Markdown dataset card (with Hub YAML front matter) describing the run in ``meta``.

    The card does not name the output folder, so it is identical wherever the run is written.
    """
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
        f"(`hf-reid synth --preset {meta['preset']} --seed {meta['seed']}`), in the layouts of the real "
        "Re-ID datasets so that the real loading code reads them. The same seed gives byte-identical files.",
        "",
        f"- image size: {meta['image_size'][0]}x{meta['image_size'][1]} (height x width)",
        f"- images: {meta['num_images']}",
        f"- domains: {', '.join(meta['domains'])}; **held-out target domain: `{meta['held_out_domain']}`** "
        "(its camera styles are used by no other folder: LTCC, SYSU-MM01, MLR-CUHK03, the captioned and "
        "pretraining sets draw cameras from the source domains only)",
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
    lines += [
        "",
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
