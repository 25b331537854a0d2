"""How well do SynthCLIP's zero-shot features cluster into identities, per SynthPeds scenario, for
several k-reciprocal / DBSCAN settings? The table behind ``cluster:`` in itkm_synthpeds.yaml.

    python benchmarks/itkm_cluster_settings.py [--root data/synthpeds]

Clusters every scenario's training images on its own (visible and infrared apart), as the ITKM
recipe's first re-clustering does, and prints clusters, outlier share and NMI per scenario for
k1 in {10, 20, 30} and eps in {0.3, ..., 0.6} (k2 = 6, min_samples = 4). It reads the true
identities to score the clusterings: a choice made with it is a validation-set choice.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from datasets import Image
from torch.utils.data import DataLoader

from hf_reid.data import ReidCollator, ReidTestTransform, ReidTransformConfig, load_reid_dataset
from hf_reid.models import ITKMModel, build_reid_image_processor
from hf_reid.synthclip import resolve_clip_path
from hf_reid.tokenization import load_tokenizer
from hf_reid.training.pseudo_labels import assign_pseudo_labels, pseudo_label_quality

SCENARIOS = ("ltcc", "sysu_mm01", "mlr_cuhk03")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root", type=Path, default=Path("data/synthpeds"), help="a SynthPeds run with the scenarios"
    )
    args = parser.parse_args()
    path = resolve_clip_path("synthclip")
    model = ITKMModel.from_clip_pretrained(
        path, num_classes=1, image_size=(128, 64), tokenizer=load_tokenizer(path), use_sie=False
    ).eval()
    transform = ReidTestTransform(
        ReidTransformConfig.from_image_processor(build_reid_image_processor((128, 64)))
    )
    features, ids, groups = [], [], []
    for scenario, name in enumerate(SCENARIOS):
        train = load_reid_dataset(name, args.root / name)["train"].cast_column("image", Image(decode=False))
        loader = DataLoader(
            train, batch_size=256, collate_fn=ReidCollator(transform, columns=["pids", "modalities"])
        )
        for batch in loader:
            with torch.no_grad():
                features.append(model.get_image_features(batch["pixel_values"]))
            ids += (batch["pids"] + scenario * 1_000_000).tolist()
            modality = batch["modalities"] if name == "sysu_mm01" else torch.zeros_like(batch["modalities"])
            groups += (scenario * 2 + modality).tolist()
    feats, true_ids, group_ids = torch.cat(features), np.array(ids), np.array(groups)
    print("| k1 | eps | " + " | ".join(f"{s}: clusters, outliers, NMI" for s in SCENARIOS) + " |")
    print("|---|---|" + "---|" * len(SCENARIOS))
    for k1 in (10, 20, 30):
        for eps in (0.3, 0.4, 0.5, 0.6):
            labels, _ = assign_pseudo_labels(feats, group_ids, k1=k1, k2=6, eps=eps, min_samples=4)
            quality = pseudo_label_quality(labels, true_ids, group_ids // 2)
            cells = [
                f"{q['num_clusters']}, {100 * q['outlier_share']:.0f}%, {q['nmi']:.2f}"
                for q in quality.values()
            ]
            print(f"| {k1} | {eps} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
