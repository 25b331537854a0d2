"""The cluster memory of unsupervised Re-ID (Cluster-Contrast; CCLNet and ITKM after it).

After every re-clustering the memory holds one L2-normalised centroid per pseudo-label; every
training image then pulls its feature towards its cluster's entry and away from the other
clusters of its scenario (``CE(f · Mᵀ / τ, y)``, :meth:`hf_reid.models.ITKMModel.forward`), and
after each optimizer step the entries of the batch's clusters move towards the new features:
``m_y ← normalize(μ m_y + (1 − μ) f)``, one image after another as Cluster-Contrast does.

The memory changes at every step, so it is recipe state: checkpointed with the model
(``state_dict`` holds tensors only) and restored on resume.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.nn import functional as F

__all__ = ["ClusterMemory", "cluster_centroids"]


def cluster_centroids(
    features: torch.Tensor, labels: torch.Tensor, num_labels: int | None = None
) -> torch.Tensor:
    """L2-normalised mean of the L2-normalised features of each label ``0..C-1`` (outliers, label
    -1, are left out): ``(C, D)``."""
    keep = labels >= 0
    num = int(labels.max()) + 1 if num_labels is None else num_labels
    unit = F.normalize(features[keep].float(), dim=1)
    sums = torch.zeros(num, features.shape[1]).index_add_(0, labels[keep].long(), unit)
    return F.normalize(sums, dim=1)


class ClusterMemory:
    """One normalised feature per pseudo-label and the scenario each belongs to.

    Args:
        momentum: μ of the update ``m_y ← normalize(μ m_y + (1 − μ) f)``.
    """

    def __init__(self, momentum: float = 0.1):
        if not 0 <= momentum < 1:
            raise ValueError(f"ClusterMemory: momentum must be in [0, 1), got {momentum}.")
        self.momentum = float(momentum)
        self.features = torch.empty(0, 0)
        self.scenarios = torch.empty(0, dtype=torch.long)

    def __len__(self) -> int:
        return self.features.shape[0]

    @torch.no_grad()
    def reset(self, features: torch.Tensor, labels: torch.Tensor, scenarios: torch.Tensor) -> None:
        """Fill the memory with the centroids of ``labels`` (N,) over ``features`` (N, D); each
        entry's scenario is that of its members (``scenarios`` (N,)), which must agree."""
        labels, scenarios = labels.long().cpu(), scenarios.long().cpu()
        keep = labels >= 0
        if not bool(keep.any()):
            raise ValueError("ClusterMemory.reset: every sample is an outlier; there is no cluster to hold.")
        num = int(labels.max()) + 1
        self.features = cluster_centroids(features.cpu(), labels, num)
        owner = torch.full((num,), -1, dtype=torch.long)
        owner[labels[keep]] = scenarios[keep]
        mixed = (owner[labels[keep]] != scenarios[keep]).nonzero()
        if len(mixed):
            raise ValueError(
                f"ClusterMemory.reset: cluster {int(labels[keep][mixed[0, 0]])} has members of several "
                "scenarios; cluster every scenario on its own."
            )
        self.scenarios = owner

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Move the entries of ``labels`` towards ``features`` (B, D), image by image."""
        unit = F.normalize(features.detach().float().cpu(), dim=1)
        for feature, label in zip(unit, labels.long().cpu().tolist(), strict=True):
            if label >= 0:
                entry = self.momentum * self.features[label] + (1.0 - self.momentum) * feature
                self.features[label] = entry / entry.norm().clamp_min(1e-12)

    def state_dict(self) -> dict[str, Any]:
        return {
            "features": self.features.clone(),
            "scenarios": self.scenarios.clone(),
            "momentum": self.momentum,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.features = state["features"].clone().float()
        self.scenarios = state["scenarios"].clone().long()
        self.momentum = float(state["momentum"])
