"""``synthpeds_meta.json``: the ground truth of a SynthPeds run.

One record per image written: its path relative to the output folder, dataset folder, layout,
split, pid, camid (0-based), clothes_id, modality, domain (the value the builders put in the
``domain`` column: the dataset folder name), captions, the identity's 27 attribute codes (in
``attribute_names`` order), and the generator's hidden labels (identity uid, outfit, camera key,
camera style domain, viewpoint, low-resolution factor, junk flag). The header records the run
settings, the held-out domain and every camera's style domain.

A ``diverse`` captioned set (``captioned_styles``) adds, per camera, the place it films (its
moved ranges, the remaining style parameters and its :func:`~.cameras.style_distance` from the
held-out domain's style distribution) and a ``captioned_places`` summary to the header; a run
with the default options writes exactly what it wrote before those options existed.

Split values follow the folders: ``train`` / ``query`` / ``gallery`` for Market-style folders,
LTCC and MLR-CUHK03; ``train`` / ``val`` / ``test`` for SYSU-MM01 (the identity lists in
``exp/``; query and gallery are chosen at load time by the protocol); ``train`` for the caption
sets.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from .attributes import ATTRIBUTE_NAMES
from .cameras import (
    HELD_OUT_MARGIN,
    PLACE_SHIFT,
    STYLE_DIMENSIONS,
    CameraStyle,
    DomainStyle,
    domain_style,
    place_bases,
    style_distance,
)
from .layouts import LayoutPlan

META_FILE = "synthpeds_meta.json"
META_VERSION = 1


def build_meta(plans: list[LayoutPlan], settings: dict[str, Any]) -> dict[str, Any]:
    """The meta dict of a run (``settings``: seed, preset, image size, layouts, domains...)."""
    cameras = {}
    records = []
    for plan in plans:
        for key, camera in plan.cameras.items():
            cameras[key] = {
                "style_domain": camera.style_domain,
                "style": domain_style(camera.style_domain).name,
                "modality": camera.modality,
                "viewpoints": [round(v, 4) for v in camera.viewpoints],
                "gain": round(camera.gain, 4),
                "warmth": round(camera.warmth, 4),
                "blur": round(camera.blur, 4),
                "noise": round(camera.noise, 4),
                "resolution": round(camera.resolution, 4),
                "occlusion": camera.occlusion,
            }
            if key in plan.places:
                cameras[key].update(_place_record(camera, plan.places[key], plan.held_out))
        for image in plan.images:
            ident = plan.identities[image.identity]
            attributes = ident.attributes(image.outfit)
            records.append(
                {
                    "path": image.path,
                    "dataset": image.dataset,
                    "layout": image.layout,
                    "split": image.split,
                    "pid": image.pid,
                    "camid": image.camid,
                    "clothes_id": image.clothes_id,
                    "modality": image.modality,
                    "domain": image.dataset,
                    "captions": list(image.captions),
                    "attributes": [attributes[name] for name in ATTRIBUTE_NAMES],
                    "identity": image.identity,
                    "outfit": image.outfit,
                    "camera": image.camera,
                    "style_domain": plan.cameras[image.camera].style_domain,
                    "view": image.view,
                    "lowres": image.lowres,
                    "junk": image.junk,
                }
            )
    counts: dict[str, Counter] = {}
    for record in records:
        counts.setdefault(record["dataset"], Counter())[record["split"]] += 1
    places = _places_summary(plans, cameras)
    return {
        "generator": "hf_reid.data.synthetic",
        "version": META_VERSION,
        **settings,
        "attribute_names": list(ATTRIBUTE_NAMES),
        "counts": {dataset: dict(sorted(c.items())) for dataset, c in counts.items()},
        "num_images": len(records),
        **({"captioned_places": places} if places else {}),
        "cameras": cameras,
        "images": records,
    }


def _place_record(camera: CameraStyle, place: DomainStyle, held_out: int | None) -> dict[str, Any]:
    """What a ``diverse`` camera's meta entry adds: its place and where it lies."""
    record: dict[str, Any] = {
        "place": place.name,
        "gamma": round(camera.gamma, 4),
        "tint": round(camera.tint, 4),
        "saturation": round(camera.saturation, 4),
        "texture": camera.texture,
        "place_ranges": {name: [round(v, 4) for v in getattr(place, name)] for name in STYLE_DIMENSIONS},
    }
    if held_out is not None:
        record["held_out_distance"] = round(style_distance(camera, domain_style(held_out)), 4)
    return record


def _places_summary(plans: list[LayoutPlan], cameras: dict[str, dict]) -> dict[str, Any] | None:
    """The header's ``captioned_places``: the prior the places were drawn from, and what it gave."""
    plan = next((plan for plan in plans if plan.places), None)
    if plan is None:
        return None
    bases = Counter(domain_style(plan.cameras[key].style_domain).name for key in plan.places)
    distances = [cameras[key]["held_out_distance"] for key in plan.places]
    return {
        "dataset": plan.dataset,
        "places": len(plan.places),
        "held_out_style": domain_style(plan.held_out).name,
        "allowed_bases": [domain_style(k).name for k in place_bases(plan.held_out)],
        "bases": dict(sorted(bases.items())),
        "place_shift": PLACE_SHIFT,
        "held_out_margin": HELD_OUT_MARGIN,
        "min_held_out_distance": min(distances),
        "median_held_out_distance": round(float(np.median(distances)), 4),
    }


def write_meta(meta: dict[str, Any], out_dir: Path) -> Path:
    """Write ``meta`` to ``out_dir/synthpeds_meta.json`` (one image record per line)."""
    header = {key: value for key, value in meta.items() if key != "images"}
    lines = [json.dumps(record, separators=(",", ":")) for record in meta["images"]]
    text = json.dumps(header, indent=1)[:-2] + ',\n "images": [\n' + ",\n".join(lines) + "\n ]\n}\n"
    path = out_dir / META_FILE
    path.write_text(text, encoding="utf-8")
    return path


def read_meta(out_dir: str | Path) -> dict[str, Any]:
    """Read the meta file of a SynthPeds output folder.

    Raises:
        FileNotFoundError: naming the folder, when it holds no (complete) SynthPeds run.
    """
    path = Path(out_dir) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {out_dir} holds no complete SynthPeds run; write one with `hf-reid synth --out {out_dir}`."
        )
    return json.loads(path.read_text(encoding="utf-8"))


def preset_settings(preset: Any) -> dict[str, Any]:
    """A JSON-ready copy of a preset's fields."""
    return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(preset).items()}
