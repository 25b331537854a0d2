"""ITKM's heterogeneous matching and dynamic text update (our reconstruction: the paper names
them, docs/METHODS.md §3.3 proposes the rules, docs/ITKM.md records the choices).

Within a scenario the images fall into *heterogeneous groups* that clustering separates although
they show the same people: visible vs infrared (SYSU-MM01), low vs full resolution (MLR-CUHK03),
and — lacking clothes labels — one camera vs another (LTCC). Two steps add positive pairs across
groups after every re-clustering:

* :func:`match_clusters` (cluster level): where a scenario was clustered per group, the clusters
  of two groups are paired by the Hungarian assignment on the cosine similarity of their
  centroids; pairs above ``threshold`` become one pseudo-label.
* :func:`match_instances` (instance level): mutual nearest neighbours across two groups of a
  scenario, above ``threshold``: an outlier whose partner is clustered joins that cluster.

:func:`update_text_features` keeps the stage-II text knowledge in step with re-made clusters.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from .cluster_memory import cluster_centroids

__all__ = ["compact_labels", "match_clusters", "match_instances", "update_text_features"]


def compact_labels(labels: np.ndarray) -> np.ndarray:
    """Renumber the non-negative labels to ``0..C-1`` in order of first value; -1 stays."""
    out = np.full_like(labels, -1)
    keep = labels >= 0
    _, out[keep] = np.unique(labels[keep], return_inverse=True)
    return out


def _pairs_of_groups(scenarios: np.ndarray, groups: np.ndarray):
    """(scenario, group a, group b) for every scenario with two or more heterogeneous groups."""
    for scenario in np.unique(scenarios):
        present = np.unique(groups[scenarios == scenario])
        for i, a in enumerate(present):
            for b in present[i + 1 :]:
                yield scenario, a, b


def match_clusters(
    features: torch.Tensor, labels: np.ndarray, scenarios: np.ndarray, groups: np.ndarray, threshold: float
) -> tuple[np.ndarray, int]:
    """Merge clusters of two heterogeneous groups paired by the Hungarian assignment on centroid
    cosine similarity, where the similarity exceeds ``threshold``. Only clusters that lie within
    one group take part (a scenario clustered across its groups has nothing to pair). Returns the
    compacted labels and the number of merged pairs."""
    from scipy.optimize import linear_sum_assignment

    labels = labels.copy()
    merged = 0
    centroids = cluster_centroids(features, torch.as_tensor(labels)).numpy() if (labels >= 0).any() else None
    for scenario, a, b in _pairs_of_groups(scenarios, groups):
        side = {}
        for group in (a, b):
            members = (scenarios == scenario) & (labels >= 0)
            clusters = np.unique(labels[members & (groups == group)])
            pure = [c for c in clusters if np.all(groups[labels == c] == group)]
            side[group] = np.array(pure, dtype=np.int64)
        if centroids is None or not len(side[a]) or not len(side[b]):
            continue
        similarity = centroids[side[a]] @ centroids[side[b]].T
        rows, cols = linear_sum_assignment(-similarity)
        for r, c in zip(rows, cols):
            if similarity[r, c] > threshold:
                labels[labels == side[b][c]] = side[a][r]
                merged += 1
    return compact_labels(labels), merged


def match_instances(
    features: torch.Tensor, labels: np.ndarray, scenarios: np.ndarray, groups: np.ndarray, threshold: float
) -> tuple[np.ndarray, int]:
    """Outliers join the cluster of their mutual nearest neighbour in another heterogeneous group
    of the same scenario when the cosine similarity exceeds ``threshold``. Returns the labels and
    the number of outliers that joined a cluster."""
    labels = labels.copy()
    unit = F.normalize(features.float(), dim=1)
    joined = 0
    for scenario, a, b in _pairs_of_groups(scenarios, groups):
        rows_a = np.flatnonzero((scenarios == scenario) & (groups == a))
        rows_b = np.flatnonzero((scenarios == scenario) & (groups == b))
        similarity = (unit[rows_a] @ unit[rows_b].t()).numpy()
        best_b, best_a = similarity.argmax(axis=1), similarity.argmax(axis=0)
        for i, j in enumerate(best_b):
            if best_a[j] != i or similarity[i, j] <= threshold:
                continue
            x, y = rows_a[i], rows_b[j]
            if labels[x] < 0 <= labels[y]:
                labels[x], joined = labels[y], joined + 1
            elif labels[y] < 0 <= labels[x]:
                labels[y], joined = labels[x], joined + 1
    return labels, joined


def update_text_features(
    old_text: torch.Tensor,
    old_labels: np.ndarray,
    new_labels: np.ndarray,
    features: torch.Tensor,
    mode: str,
    momentum: float,
) -> tuple[torch.Tensor, float]:
    """Text features for the new pseudo-labels from those of the old ones.

    Every new cluster is matched to the old label most of its members had (majority vote); then
    ``mode`` ``"ema"`` gives ``normalize(μ · t_old + (1 − μ) · c_new)`` (the text knowledge moved
    towards the new image centroid ``c_new``, both in CLIP's joint space), ``"static"`` the old
    text feature unchanged (the ablation without the dynamic update). A cluster without a match
    takes its image centroid. Returns ``(C_new, D)`` normalised text features and the share of
    new clusters that had a match.
    """
    if mode not in ("ema", "static"):
        raise ValueError(f"update_text_features: mode must be 'ema' or 'static', got {mode!r}.")
    centroids = cluster_centroids(features, torch.as_tensor(new_labels))
    old_unit = F.normalize(old_text.detach().float().cpu(), dim=1)
    out = centroids.clone()
    matched = 0
    for cluster in range(centroids.shape[0]):
        previous = old_labels[(new_labels == cluster) & (old_labels >= 0)]
        if not len(previous):
            continue
        vote = int(np.bincount(previous).argmax())
        if vote >= old_unit.shape[0]:
            continue
        matched += 1
        text = old_unit[vote]
        if mode == "ema":
            text = momentum * text + (1.0 - momentum) * centroids[cluster]
        out[cluster] = F.normalize(text, dim=0)
    return out, matched / max(1, centroids.shape[0])
