"""How hard is SynthPeds? mAP and Rank-1 of feature-free baselines, as a markdown table.

    python benchmarks/synthpeds_difficulty.py --preset default

Rows (each averaged over the Market-style domains ``synthpeds_d*`` unless said otherwise):

- **random features**: the chance floor.
- **colour histogram, in-domain**: HSV histograms (8x4x4 bins) of the upper and lower halves of
  the crop, Hellinger-normalised, Euclidean distance; each domain's query against its gallery.
- **colour histogram, cross-domain style**: the same, but every query is re-rendered by the
  generator with the cameras of the next domain (same identity, pid and camera index), so query
  and gallery come from different domain styles. This is what a style shift alone does to a
  feature that does not learn.
- **histogram + LDA, trained in-domain**: a linear projection (shrinkage LDA on the identities of
  the domain's train split) on top of the histogram; a minimal *trained* model.
- **histogram + LDA, sources -> held-out**: the LDA trained on the train splits of the source
  domains and tested on the held-out domain (the generalisation protocol).
- **attribute oracle**: each image's feature is its identity's true 27-attribute vector (with a
  tiny random jitter to break ties): the ceiling of matching by attributes alone (< 1 because
  attribute-identical identities exist).

Images are read with ``hf_reid.data.load_reid_dataset`` (the real builders) and scored with
``hf_reid.metrics.evaluate_rank`` (Market-1501 protocol: same pid and camera excluded).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from hf_reid.data import load_reid_dataset
from hf_reid.data.synthetic import (
    META_FILE,
    PedestrianRenderer,
    attribute_vector,
    generate_synthpeds,
    make_identity,
    read_meta,
    sample_camera,
)
from hf_reid.data.synthetic.attributes import ATTRIBUTE_NAMES
from hf_reid.metrics import evaluate_rank

logger = logging.getLogger("synthpeds_difficulty")

HSV_BINS = (8, 4, 4)


def color_histogram(image: Image.Image) -> np.ndarray:
    """Hellinger-normalised HSV histograms of the upper and lower halves of a crop."""
    hsv = np.asarray(image.convert("RGB").convert("HSV"))
    bins = np.asarray(HSV_BINS)
    q = (hsv.astype(np.int64) * bins // 256).clip(0, bins - 1)
    codes = (q[..., 0] * bins[1] + q[..., 1]) * bins[2] + q[..., 2]
    half = codes.shape[0] // 2
    parts = []
    for part in (codes[:half], codes[half:]):
        hist = np.bincount(part.ravel(), minlength=int(np.prod(bins))).astype(np.float64)
        parts.append(np.sqrt(hist / hist.sum()))
    return np.concatenate(parts)


def euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(d, 0.0))


def score(q: np.ndarray, g: np.ndarray, qi: dict, gi: dict) -> tuple[float, float]:
    result = evaluate_rank(euclidean(q, g), qi["pid"], gi["pid"], qi["camid"], gi["camid"], max_rank=10)
    return float(result.mAP), float(result.cmc[0])


def read_split(split) -> dict:
    """Histograms, pids, cameras and paths of one split of a DatasetDict."""
    feats = np.stack([color_histogram(image) for image in split["image"]])
    return {
        "hist": feats,
        "pid": np.asarray(split["pid"]),
        "camid": np.asarray(split["camid"]),
        "path": list(split["path"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="default", choices=["tiny", "default", "full"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="a SynthPeds folder to use (generated there if it holds no run)",
    )
    parser.add_argument("--num-workers", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    with tempfile.TemporaryDirectory() as tmp:
        root = args.data or Path(tmp) / "synthpeds"
        if not (root / META_FILE).is_file():
            generate_synthpeds(
                root, args.preset, seed=args.seed, layouts=["market"], num_workers=args.num_workers
            )
        meta = read_meta(root)
        rows = evaluate(root, meta)
    print(
        f"SynthPeds difficulty (preset {meta['preset']}, seed {meta['seed']}, {meta['image_size'][0]}x{meta['image_size'][1]})\n"
    )
    print("| features | protocol | mAP | Rank-1 |")
    print("|---|---|---|---|")
    for name, protocol, m, r1 in rows:
        print(f"| {name} | {protocol} | {100 * m:.1f} | {100 * r1:.1f} |")
    return 0


def evaluate(root: Path, meta: dict) -> list[tuple[str, str, float, float]]:
    domains, held_out = meta["domains"], meta["held_out_domain"]
    seed = meta["seed"]
    by_path = {record["path"]: record for record in meta["images"]}
    renderer = PedestrianRenderer(tuple(meta["image_size"]), seed)
    rng = np.random.default_rng(0)
    data = {}
    for domain in domains:
        ds = load_reid_dataset("synthpeds", root / domain)
        data[domain] = {split: read_split(ds[split]) for split in ("train", "query", "gallery")}

    def attrs(split: dict, domain: str) -> np.ndarray:
        codes = [by_path[f"{domain}/{p}"]["attributes"] for p in split["path"]]
        vectors = np.stack([attribute_vector(dict(zip(ATTRIBUTE_NAMES, c))) for c in codes])
        return vectors + rng.normal(0.0, 1e-3, vectors.shape)

    results: dict[str, list[tuple[float, float]]] = {
        k: [] for k in ("random", "hist", "cross", "lda", "oracle")
    }
    for k, domain in enumerate(domains):
        q, g = data[domain]["query"], data[domain]["gallery"]
        results["random"].append(
            score(rng.normal(size=(len(q["pid"]), 128)), rng.normal(size=(len(g["pid"]), 128)), q, g)
        )
        results["hist"].append(score(q["hist"], g["hist"], q, g))
        results["oracle"].append(score(attrs(q, domain), attrs(g, domain), q, g))
        # Style shift: re-render the queries with the cameras of the next domain.
        other = (k + 1) % len(domains)
        shifted = []
        for index, path in enumerate(q["path"]):
            record = by_path[f"{domain}/{path}"]
            camera = sample_camera(seed, f"{domains[other]}/c{record['camid'] + 1}", other)
            ident = make_identity(seed, record["identity"])
            image_rng = np.random.default_rng([seed, k, index])
            image = renderer.render(ident, camera, image_rng, view=record["view"])
            shifted.append(color_histogram(image))
        results["cross"].append(score(np.stack(shifted), g["hist"], q, g))
        lda = _fit_lda([data[domain]["train"]])
        results["lda"].append(score(lda.transform(q["hist"]), lda.transform(g["hist"]), q, g))

    sources = [data[d]["train"] for d in domains if d != held_out]
    lda = _fit_lda(sources)
    q, g = data[held_out]["query"], data[held_out]["gallery"]
    dg = score(lda.transform(q["hist"]), lda.transform(g["hist"]), q, g)
    in_target = results["lda"][domains.index(held_out)]
    hist_target = results["hist"][domains.index(held_out)]

    def mean(values: list[tuple[float, float]]) -> tuple[float, float]:
        return float(np.mean([v[0] for v in values])), float(np.mean([v[1] for v in values]))

    return [
        ("random features", "in-domain", *mean(results["random"])),
        ("colour histogram", "in-domain", *mean(results["hist"])),
        (
            "colour histogram",
            "cross-domain style (queries re-rendered by another domain's cameras)",
            *mean(results["cross"]),
        ),
        ("colour histogram", f"in-domain, held-out domain {held_out} only", *hist_target),
        ("histogram + LDA", "trained in-domain", *mean(results["lda"])),
        ("histogram + LDA", f"trained in-domain on {held_out}", *in_target),
        (
            "histogram + LDA",
            f"trained on {', '.join(d for d in domains if d != held_out)} -> tested on {held_out}",
            *dg,
        ),
        ("attribute oracle", "in-domain", *mean(results["oracle"])),
    ]


def _fit_lda(splits: list[dict]) -> LinearDiscriminantAnalysis:
    x = np.concatenate([s["hist"] for s in splits])
    # Identities of different domains are different people: offset their pids.
    y = np.concatenate([s["pid"] + 100_000 * i for i, s in enumerate(splits)])
    return LinearDiscriminantAnalysis(solver="eigen", shrinkage=0.5).fit(x, y)


if __name__ == "__main__":
    sys.exit(main())
