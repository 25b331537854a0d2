"""Text-based person search on SynthPeds' held-out captioned identities: text -> image R@1/5/10, mAP.

    python benchmarks/text_search.py                 # trains missing runs (OMP_NUM_THREADS=1), prints the table
    python benchmarks/text_search.py --no-train      # only the runs already under runs/

The test set is a SynthPeds ``captions`` layout rendered with another seed (``--seed``, default 1)
into its own folder (``--data``): identities that no model here saw, neither SynthCLIP's
pretraining (seed 1000) nor ReText's captioned training set (seed 0).
Every caption is a query; the gallery is every image of the set; a hit is an image of the caption's
identity (the CUHK-PEDES convention), scored with ``hf_reid.metrics.evaluate_rank`` without
cameras (every image of the identity counts). Rows:

- **SynthCLIP zero-shot**: the shipped tiny CLIP, no Re-ID training;
- **ReText**: ``recipes/retext.py`` with its default config (``runs/retext``); the joint space is
  its normalised ``xproj`` and text projection, trained by the image-text matching loss;
- **CLIP-ReID**, **CLIP-FGDI**, **ITKM**: their default recipes (``runs/clip_reid``,
  ``runs/clip_fgdi``, ``runs/itkm``). They train no caption path (identity prompts only; the
  text tower is SynthCLIP's, frozen), so ``get_text_embeddings`` refuses them; the row measures
  what that frozen text tower gives against their fine-tuned ``xproj`` (``allow_untrained=True``)
  to show why.

Chance: the expected R@k and mAP of a uniformly random ranking, per query, averaged
(R@1 = mean share of the gallery that is the caption's identity; for one relevant image of N it
would be 1/N).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

RUNS = {  # row: (run folder, recipe)
    "CLIP-ReID": ("clip_reid", "recipes/clip_reid.py"),
    "ReText": ("retext", "recipes/retext.py"),
    "CLIP-FGDI": ("clip_fgdi", "recipes/clip_fgdi.py"),
    "ITKM": ("itkm", "recipes/itkm.py"),
}


def heldout_captions(folder: Path, seed: int):
    """The held-out captioned set (generated into ``folder`` when missing)."""
    from hf_reid.data import load_reid_dataset
    from hf_reid.data.synthetic import generate_synthpeds

    if not (folder / "captions" / "reid_raw.json").is_file():
        generate_synthpeds(folder, preset="default", seed=seed, layouts="captions", num_workers=1)
    return load_reid_dataset("captions", folder / "captions")["train"]


def chance(gallery_pids: np.ndarray, query_pids: np.ndarray, ks=(1, 5, 10)) -> dict[str, float]:
    """Expected R@k and AP of a uniformly random ranking, averaged over the queries."""
    n = len(gallery_pids)
    harmonic = sum(1.0 / i for i in range(1, n + 1))
    values, counts = np.unique(gallery_pids, return_counts=True)
    relevant = dict(zip(values.tolist(), counts.tolist(), strict=True))
    out = {f"R@{k}": 0.0 for k in ks} | {"mAP": 0.0}
    for pid in query_pids.tolist():
        r = relevant[pid]
        for k in ks:  # 1 - C(n - r, k) / C(n, k)
            out[f"R@{k}"] += 1.0 - math.comb(n - r, k) / math.comb(n, k)
        out["mAP"] += ((n - r) * harmonic / n + r - 1) / (n - 1)
    return {key: value / len(query_pids) for key, value in out.items()}


def text_to_image(model, dataset, index):
    """R@1/5/10 and mAP of every caption against the index's joint-space gallery, and the caption
    embeddings."""
    from hf_reid.metrics import evaluate_rank

    pids = np.asarray(dataset["pid"])
    texts = [c for caps in dataset["captions"] for c in caps]
    text_pids = np.asarray([p for p, caps in zip(pids, dataset["captions"], strict=True) for _ in caps])
    with warnings.catch_warnings():  # the warning of allow_untrained_text: expected here
        warnings.simplefilter("ignore", UserWarning)
        text_embeddings = model.embed_texts(texts)
    scores = text_embeddings @ index.embeddings["joint"].T
    result = evaluate_rank((1.0 - scores).numpy(), text_pids, pids, None, None, cross_camera=False).to_dict()
    metrics = {
        "R@1": result["rank-1"],
        "R@5": result["rank-5"],
        "R@10": result["rank-10"],
        "mAP": result["mAP"],
    }
    return metrics, text_embeddings


def train(folder: str, recipe: str) -> float:
    command = [sys.executable, recipe, "--train.progress_bar", "false"]
    print(f"training: OMP_NUM_THREADS=1 {' '.join(command[1:])}  (-> runs/{folder})", flush=True)
    start = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def budget(run: Path) -> str:
    """Training time of a run from its ``train_results.json``."""
    try:
        seconds = json.loads((run / "train_results.json").read_text())["total_seconds"]
    except (OSError, ValueError, KeyError):
        return "–"
    return f"{seconds / 60:.1f} min"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "synthpeds_text_search")
    parser.add_argument(
        "--seed", type=int, default=1, help="SynthPeds seed of the held-out set (not 0 or 1000)"
    )
    parser.add_argument("--runs", type=Path, default=ROOT / "runs")
    parser.add_argument("--no-train", action="store_true", help="skip methods whose run is missing")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    if args.seed in (0, 1000):
        parser.error("--seed 0 is ReText's captioned training set and 1000 SynthCLIP's pretraining set")

    import torch

    from hf_reid.search import SearchIndex, SearchModel

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    start = time.perf_counter()
    dataset = heldout_captions(args.data, args.seed)
    pids = np.asarray(dataset["pid"])
    text_pids = np.asarray([p for p, caps in zip(pids, dataset["captions"], strict=True) for _ in caps])

    rows: dict[str, dict] = {}
    model = SearchModel.load("synthclip")
    metrics, synthclip_texts = text_to_image(
        model, dataset, SearchIndex.from_dataset(model, dataset, ("joint",))
    )
    rows["SynthCLIP zero-shot"] = {
        "path": "CLIP text tower (contrastive pretraining)",
        "budget": "none (pretrained only)",
        **metrics,
    }
    for name, (folder, recipe) in RUNS.items():
        run = args.runs / folder
        if not (run / "config.json").is_file():
            if args.no_train:
                rows[name] = {"path": f"not trained: OMP_NUM_THREADS=1 python {recipe}", "budget": "–"}
                continue
            train(folder, recipe)
        model = SearchModel.load(run, allow_untrained_text=True)
        index = SearchIndex.from_dataset(model, dataset, spaces=("joint",))
        metrics, texts = text_to_image(model, dataset, index)
        if model.has_trained_caption_path:
            path = "trained (image-text matching on captions)"
        else:  # measured through the text tower the method keeps frozen (allow_untrained_text)
            same = torch.allclose(texts, synthclip_texts, atol=1e-5)
            tower = "SynthCLIP's text tower, frozen" if same else "its text tower (not SynthCLIP's)"
            path = f"none, refused; measured with {tower}"
        rows[name] = {"path": path, "budget": f"{recipe} default, {budget(run)}", **metrics}

    rows["chance (random ranking)"] = {"path": "–", "budget": "–", **chance(pids, text_pids)}
    identities = len(set(pids.tolist()))
    print(
        f"\nText -> image on SynthPeds held-out captioned identities (captions layout, seed {args.seed}: "
        f"{len(text_pids)} captions of {identities} identities, gallery {len(pids)} images; %)\n"
    )
    print("| model | caption path | training | R@1 | R@5 | R@10 | mAP |")
    print("|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        cells = [f"{100 * row[k]:.1f}" if k in row else "–" for k in ("R@1", "R@5", "R@10", "mAP")]
        if name.startswith("chance"):
            cells = [f"{100 * row[k]:.2f}" for k in ("R@1", "R@5", "R@10", "mAP")]
        print(f"| {name} | {row['path']} | {row['budget']} | {' | '.join(cells)} |")
    print(f"\n({time.perf_counter() - start:.0f} s; 1/gallery size = {100 / len(pids):.3f} %)")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
