"""Does ITKM's premise hold on SynthPeds? Unsupervised training only helps when its pseudo-labels
are good enough; this separates "the training machinery does not learn" from "the pseudo-labels
are too noisy to learn from".

    python benchmarks/itkm_premise.py                  # stage I only, 6 epochs, seed 0
    python benchmarks/itkm_premise.py --epochs 12 --seeds 0 1

Rows (the ITKM recipe, stage I alone — image encoder + scenario embedding with the cluster
memory, re-labelled every epoch — same budget for every row):

- **zero-shot**: no training;
- **pseudo-labels**: the recipe as shipped (Jaccard distance + DBSCAN per scenario / modality);
- **oracle labels**: the same stage with the clustering replaced by the true identities (per
  scenario and, in visible-infrared, per modality, as the clustering groups them) — the labels a
  perfect clustering would give. This row reads identity labels: it is a diagnostic, not ITKM.

If the oracle row beats zero-shot and the pseudo-label row does not, the memory loss, the
sampler and the evaluation work and the pseudo-labels are what stops learning. Prints a markdown
table of mAP / Rank-1 per scenario and protocol and the first / last pseudo-label ARI.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "recipes"))


def oracle_labels(true_ids: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """One label per (true identity, clustering group), numbered 0..n-1."""
    keys = np.stack([np.asarray(groups, dtype=np.int64), np.asarray(true_ids, dtype=np.int64)], axis=1)
    return np.unique(keys, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)


def run(variant: str, seed: int, epochs: int, output_dir: Path, extra: list[str]) -> dict:
    """One recipe run in this process; ``variant`` is zero-shot, pseudo or oracle; ``extra`` are
    recipe overrides (the run folder's name records them)."""
    import itkm

    tag = "_".join(a.lstrip("-").replace(".", "-") for a in extra)
    folder = output_dir / f"{variant}_e{epochs}_seed{seed}{'_' + tag if tag else ''}"
    results_file = folder / "eval_results.json"
    if results_file.is_file():
        return json.loads((folder / "premise.json").read_text())
    captured: dict[str, np.ndarray] = {}
    hide, assign = itkm.hide_identities, itkm.assign_pseudo_labels

    def hide_and_keep(train):
        rows, true_ids = hide(train)
        captured["true_ids"] = true_ids
        return rows, true_ids

    def assign_oracle(features, groups, **_):
        return oracle_labels(captured["true_ids"], groups), {}

    itkm.hide_identities = hide_and_keep
    if variant == "oracle":
        itkm.assign_pseudo_labels = assign_oracle
    stage1 = 0 if variant == "zero-shot" else epochs
    argv = [
        "--output_dir", str(folder), "--seed", str(seed), "--stage1.epochs", str(stage1),
        "--stage2.epochs", "0", "--stage3.epochs", "0", *extra,
    ]  # fmt: skip
    start = time.perf_counter()
    try:
        results = itkm.main(argv)
    finally:
        itkm.hide_identities, itkm.assign_pseudo_labels = hide, assign
    history = json.loads((folder / "pseudo_labels.json").read_text()) if variant != "zero-shot" else []
    summary = {
        "results": {name: {k: m[k] for k in ("mAP", "rank-1")} for name, m in results.items()},
        "ari": [{s: q["ari"] for s, q in h["scenarios"].items()} for h in history],
        "seconds": time.perf_counter() - start,
    }
    (folder / "premise.json").write_text(json.dumps(summary, indent=1))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=6, help="stage-I epochs of the trained rows")
    parser.add_argument("--output_dir", type=Path, default=ROOT / "runs" / "itkm_premise")
    parser.add_argument("--variants", nargs="+", default=["zero-shot", "pseudo", "oracle"])
    args, extra = parser.parse_known_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    rows = {v: [run(v, s, args.epochs, args.output_dir, extra) for s in args.seeds] for v in args.variants}
    names = list(rows[args.variants[0]][0]["results"])
    print(f"ITKM stage I alone, {args.epochs} epochs, seeds {args.seeds} {' '.join(extra)}: mAP / R1 (%)\n")
    print("| row | " + " | ".join(n.replace("SynthPeds ", "") for n in names) + " | ARI first → last | s |")
    print("|---|" + "---|" * (len(names) + 2))
    for variant, runs in rows.items():
        cells = []
        for name in names:
            m = np.array([[r["results"][name]["mAP"], r["results"][name]["rank-1"]] for r in runs]) * 100
            cells.append(f"{m[:, 0].mean():.1f} / {m[:, 1].mean():.1f}")
        ari = runs[0]["ari"]
        trend = " ; ".join(f"{s} {ari[0][s]:.2f}→{ari[-1][s]:.2f}" for s in ari[0]) if ari else "–"
        seconds = np.mean([r["seconds"] for r in runs])
        print(f"| {variant} | " + " | ".join(cells) + f" | {trend} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
