"""The losses of CLIP-ReID and its descendants, as pure functions (modules hold no loss state).

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

ReText's three text losses (our reconstruction of the paper's named losses, see docs/METHODS.md §4.3):

* :func:`identity_matching_loss`: IRRA's similarity-distribution matching, cosine similarities
  over a temperature against the identity-uniform target distribution, image->text + text->image;
* :func:`structure_preserving_loss`: each modality's in-batch similarity structure is pulled
  towards the other's (stop-gradient targets, momentum image features as the image-side target);
* :func:`masked_patch_reconstruction_loss`: MAE's loss, MSE on per-patch normalised pixels of the
  masked patches only (targets from :func:`image_patches`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
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


def identity_matching_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 0.02,
    epsilon: float = 1e-8,
) -> torch.Tensor:
    """Identity-aware matching loss: IRRA's similarity-distribution matching (SDM), i2t + t2i.

    With ``s_ij = cos(v_i, t_j) / temperature`` for paired image and text features of ``labels``,
    ``p_i = softmax_j(s_ij)`` (image->text; text->image uses the transposed similarities) and the
    target ``q_ij = 1[y_i = y_j] / |{k : y_k = y_i}|`` (uniform over the identity's captions),
    the loss is ``mean_i KL(p_i || q_i) = mean_i sum_j p_ij (log p_ij - log(q_ij + epsilon))`` for
    each direction, summed. All captions of an identity count as matches, not only the image's
    own; ``epsilon`` keeps ``log q`` finite where ``q = 0`` (as in IRRA).
    """
    if image_features.shape != text_features.shape or labels.shape != image_features.shape[:1]:
        raise ValueError(
            f"identity_matching_loss needs paired features (B, D) and labels (B,), got "
            f"{tuple(image_features.shape)}, {tuple(text_features.shape)} and {tuple(labels.shape)}."
        )
    dtype = torch.promote_types(image_features.dtype, torch.float32)
    image = F.normalize(image_features.to(dtype), dim=1)
    text = F.normalize(text_features.to(dtype), dim=1)
    logits = image @ text.t() / temperature
    same = (labels.unsqueeze(1) == labels.unsqueeze(0)).to(dtype)
    log_target = (same / same.sum(dim=1, keepdim=True) + epsilon).log()
    loss = logits.new_zeros(())
    for direction in (logits, logits.t()):
        log_prob = direction.log_softmax(dim=1)
        loss = loss + (log_prob.exp() * (log_prob - log_target)).sum(dim=1).mean()
    return loss


def _off_diagonal_log_softmax(features: torch.Tensor, temperature: float) -> torch.Tensor:
    """Row-wise log-softmax of the in-batch cosine similarities over temperature, each row without
    its diagonal entry (an item's similarity to itself carries no structure): (B, B - 1)."""
    features = F.normalize(features.to(torch.promote_types(features.dtype, torch.float32)), dim=1)
    similarity = features @ features.t() / temperature
    size = similarity.shape[0]
    # Dropping the diagonal: the flattened matrix without its first entry, read in rows of B + 1,
    # has the diagonal entries in its last column.
    off_diagonal = similarity.flatten()[1:].view(size - 1, size + 1)[:, :-1].reshape(size, size - 1)
    return off_diagonal.log_softmax(dim=1)


def structure_preserving_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    momentum_image_features: torch.Tensor | None = None,
    temperature: float = 0.1,
) -> torch.Tensor:
    """Structure-preserving loss: the similarity structure of a batch is the same in both modalities.

    With ``P^vv_i = softmax_{j != i}(cos(v_i, v_j) / temperature)`` and likewise ``P^tt`` for the
    texts and ``P^mm`` for the momentum-encoder image features ``m`` (the diagonal left out),
    the loss is ``mean_i KL(P^vv_i || sg(P^tt_i)) + mean_i KL(P^tt_i || sg(P^mm_i))``, where
    ``KL(P || Q) = sum_j P_j (log P_j - log Q_j)`` and ``sg`` stops the gradient: the image encoder
    learns the text structure and the text encoder the (slowly moving, momentum) image structure,
    so neither modality can collapse the other's structure onto its own. Without
    ``momentum_image_features`` the detached ``image_features`` are the image-side target. It is
    zero exactly when the three structures coincide; a batch of fewer than two gives zero.
    """
    if image_features.shape != text_features.shape:
        raise ValueError(
            f"structure_preserving_loss needs paired features (B, D), got {tuple(image_features.shape)} "
            f"and {tuple(text_features.shape)}."
        )
    if momentum_image_features is None:
        momentum_image_features = image_features
    if momentum_image_features.shape[0] != image_features.shape[0]:
        raise ValueError(
            f"momentum_image_features must have the batch size {image_features.shape[0]}, got "
            f"{tuple(momentum_image_features.shape)}."
        )
    if image_features.shape[0] < 2:
        return (image_features.sum() + text_features.sum()) * 0.0
    log_vv = _off_diagonal_log_softmax(image_features, temperature)
    log_tt = _off_diagonal_log_softmax(text_features, temperature)
    log_mm = _off_diagonal_log_softmax(momentum_image_features.detach(), temperature)
    image_term = (log_vv.exp() * (log_vv - log_tt.detach())).sum(dim=1).mean()
    text_term = (log_tt.exp() * (log_tt - log_mm)).sum(dim=1).mean()
    return image_term + text_term


def image_patches(
    pixel_values: torch.Tensor, patch_size: int, stride: int | tuple[int, int] | None = None
) -> torch.Tensor:
    """The pixels of each patch a ViT with ``patch_size`` and ``stride`` embeds: (B, N, C * p * p),
    patches in raster order (as the patch embedding flattens them), each as (C, p, p) flattened."""
    stride = stride if stride is not None else patch_size
    return F.unfold(pixel_values, kernel_size=patch_size, stride=stride).transpose(1, 2)


def masked_patch_reconstruction_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    norm_pix: bool = True,
    epsilon: float = 1e-6,
) -> torch.Tensor:
    """MAE's reconstruction loss: mean squared error on the masked patches only.

    Args:
        prediction: Predicted patches (B, N, D).
        target: The true patches (B, N, D), e.g. from :func:`image_patches`.
        mask: (B, N), true where a patch was masked (hidden from the encoder). Visible patches
            do not count: reconstructing what the encoder saw teaches nothing.
        norm_pix: Normalise each target patch by its own mean and (unbiased) variance first,
            ``(x - mean) / sqrt(var + epsilon)`` (MAE's ``norm_pix_loss``, which the MAE paper
            found to give better representations).

    Returns ``sum_{b,n} mask_bn * mean_d (pred_bnd - target_bnd)^2 / sum_{b,n} mask_bn``.
    """
    if prediction.shape != target.shape or mask.shape != prediction.shape[:2]:
        raise ValueError(
            f"masked_patch_reconstruction_loss needs prediction and target (B, N, D) and mask (B, N), got "
            f"{tuple(prediction.shape)}, {tuple(target.shape)} and {tuple(mask.shape)}."
        )
    dtype = torch.promote_types(prediction.dtype, torch.float32)
    target = target.to(dtype)
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + epsilon).sqrt()
    mask = mask.to(dtype)
    if not mask.sum() > 0:
        raise ValueError("masked_patch_reconstruction_loss: the mask holds no masked patch.")
    per_patch = (prediction.to(dtype) - target).pow(2).mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum()


__all__ = [
    "Gather",
    "batch_hard_triplet",
    "cross_entropy_label_smooth",
    "identity_matching_loss",
    "image_patches",
    "image_text_supcon",
    "image_to_text_ce",
    "masked_patch_reconstruction_loss",
    "pairwise_euclidean",
    "structure_preserving_loss",
    "supcon_loss",
]
