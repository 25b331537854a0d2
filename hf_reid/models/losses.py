"""The losses of CLIP-ReID and its descendants, as pure functions plus thin ``nn.Module`` wrappers.

All follow the reference implementations exactly (checked against torchreid's
``CrossEntropyLoss``/``TripletLoss`` and CLIP-ReID's ``TripletLoss``/``SupConLoss`` on random
inputs, see tests/test_losses.py):

* :func:`cross_entropy_label_smooth`: targets ``(1 - eps) * onehot + eps / C``;
* :func:`batch_hard_triplet`: Euclidean distances of the *raw* features, hardest positive and
  hardest negative per anchor, hinge with a margin or the soft margin ``log(1 + exp(d_ap - d_an))``;
* :func:`supcon_loss`: supervised contrastive loss between two sets (image->text, text->image),
  on raw dot products with temperature 1 (no normalisation, no logit scale);
* :func:`image_to_text_ce`: label-smoothed cross-entropy of raw image-text dot products against
  the text features of all identities (CLIP-ReID stage 2).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

Gather = Callable[[torch.Tensor], torch.Tensor]
"""Concatenates a tensor from all processes along dim 0 (same order for every tensor)."""


def cross_entropy_label_smooth(
    logits: torch.Tensor, labels: torch.Tensor, epsilon: float = 0.1
) -> torch.Tensor:
    """Mean over the batch of ``-sum_k q_k log softmax(logits)_k`` with ``q = (1-eps) onehot + eps/C``."""
    return F.cross_entropy(logits, labels.long(), label_smoothing=float(epsilon))


def pairwise_euclidean(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Euclidean distances (M, N) between rows of ``x`` (M, D) and ``y`` (N, D).

    Computed as ``sqrt(clamp(|x|^2 + |y|^2 - 2 x.y, 1e-12))`` like the references, so a point's
    distance to itself is 1e-6, not 0.
    """
    squared = x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1).unsqueeze(0) - 2.0 * (x @ y.t())
    return squared.clamp(min=1e-12).sqrt()


def batch_hard_triplet(
    features: torch.Tensor,
    labels: torch.Tensor,
    margin: float | None = 0.3,
    normalize: bool = False,
    gather: Gather | None = None,
) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans et al., 2017), averaged over the anchors in ``features``.

    Args:
        features: (B, D) anchor features, not normalised unless ``normalize``.
        labels: (B,) identities.
        margin: Hinge margin ``max(0, d_ap - d_an + margin)``; ``None`` selects the soft margin
            ``log(1 + exp(d_ap - d_an))``.
        normalize: L2-normalise the features first.
        gather: Optional all-gather (e.g. from the trainer, ``accelerator.gather`` or a
            differentiable ``torch.distributed.nn`` all-gather) applied to features and labels;
            the hardest positive and negative of each local anchor are then mined among the
            features of all processes, so the mean over processes equals the loss on the global
            batch. With a non-differentiable gather, other processes' features act as constants.

    An anchor's own feature counts as a positive (distance 1e-6), as in the references; an anchor
    with no negative in the batch contributes zero.
    """
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        raise ValueError(
            f"batch_hard_triplet needs features (B, D) and labels (B,), got {tuple(features.shape)} "
            f"and {tuple(labels.shape)}."
        )
    if normalize:
        features = F.normalize(features, dim=1)
    candidates, candidate_labels = features, labels
    if gather is not None:
        candidates, candidate_labels = gather(features), gather(labels)
    dist = pairwise_euclidean(features, candidates)
    same = labels.unsqueeze(1) == candidate_labels.unsqueeze(0)
    hardest_positive = dist.masked_fill(~same, float("-inf")).amax(dim=1)
    hardest_negative = dist.masked_fill(same, float("inf")).amin(dim=1)
    gap = hardest_positive - hardest_negative
    if margin is None:
        return F.softplus(gap).mean()
    return F.relu(gap + margin).mean()


def supcon_loss(
    anchors: torch.Tensor,
    anchor_labels: torch.Tensor,
    candidates: torch.Tensor,
    candidate_labels: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Supervised contrastive loss from ``anchors`` to ``candidates`` (CLIP-ReID's SupConLoss).

    ``-mean_i (1/|P(i)|) sum_{j in P(i)} log softmax_j(a_i . b_j / T)`` with
    ``P(i) = {j : candidate_labels[j] == anchor_labels[i]}``, on raw (unnormalised) features.
    Stage 1 uses ``supcon_loss(v, y, t, y) + supcon_loss(t, y, v, y)`` (i2t + t2i). Anchors
    without any positive candidate are left out of the mean (the reference would give NaN).
    """
    logits = (anchors @ candidates.t()) / temperature
    # half-precision logits (autocast) are promoted: the log-sum-exp over a batch needs float32
    log_prob = logits.to(torch.promote_types(logits.dtype, torch.float32)).log_softmax(dim=1)
    positives = (anchor_labels.unsqueeze(1) == candidate_labels.unsqueeze(0)).to(log_prob.dtype)
    count = positives.sum(dim=1)
    mean_log_prob = (positives * log_prob).sum(dim=1) / count.clamp(min=1.0)
    return -mean_log_prob.sum() / (count > 0).sum().clamp(min=1)


def image_text_supcon(
    image_features: torch.Tensor, text_features: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP-ReID stage-1 losses ``(L_i2t, L_t2i)`` for paired image and text features of ``labels``."""
    return (
        supcon_loss(image_features, labels, text_features, labels),
        supcon_loss(text_features, labels, image_features, labels),
    )


def image_to_text_ce(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    labels: torch.Tensor,
    epsilon: float = 0.1,
) -> torch.Tensor:
    """Label-smoothed CE of ``image_features @ text_features.T`` (raw dot products, temperature 1),
    where ``text_features`` holds one row per identity (CLIP-ReID stage 2)."""
    if text_features.ndim != 2 or text_features.shape[1] != image_features.shape[1]:
        raise ValueError(
            f"text_features must be (num_classes, {image_features.shape[1]}) to match the image "
            f"features, got {tuple(text_features.shape)}."
        )
    logits = image_features @ text_features.to(image_features.dtype).t()
    return cross_entropy_label_smooth(logits, labels, epsilon)


class CrossEntropyLabelSmooth(nn.Module):
    """Module form of :func:`cross_entropy_label_smooth`."""

    def __init__(self, epsilon: float = 0.1):
        super().__init__()
        self.epsilon = epsilon

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return cross_entropy_label_smooth(logits, labels, self.epsilon)


class TripletLoss(nn.Module):
    """Module form of :func:`batch_hard_triplet` (``margin=None``: soft margin)."""

    def __init__(self, margin: float | None = 0.3, normalize: bool = False):
        super().__init__()
        self.margin = margin
        self.normalize = normalize

    def forward(
        self, features: torch.Tensor, labels: torch.Tensor, gather: Gather | None = None
    ) -> torch.Tensor:
        return batch_hard_triplet(features, labels, self.margin, self.normalize, gather)


class SupConLoss(nn.Module):
    """Module form of :func:`supcon_loss`."""

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        self.temperature = temperature

    def forward(
        self,
        anchors: torch.Tensor,
        anchor_labels: torch.Tensor,
        candidates: torch.Tensor,
        candidate_labels: torch.Tensor,
    ) -> torch.Tensor:
        return supcon_loss(anchors, anchor_labels, candidates, candidate_labels, self.temperature)


__all__ = [
    "CrossEntropyLabelSmooth",
    "Gather",
    "SupConLoss",
    "TripletLoss",
    "batch_hard_triplet",
    "cross_entropy_label_smooth",
    "image_text_supcon",
    "image_to_text_ce",
    "pairwise_euclidean",
    "supcon_loss",
]
