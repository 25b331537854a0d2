"""Re-ID heads: BNNeck and bias-free identity classifiers (CLIP-ReID / "Bag of Tricks" style).

CLIP-ReID puts one BNNeck + classifier on the post-layernorm CLS feature and one on the projected
CLS feature. The BNNeck's shift is frozen at zero (only the scale learns), the classifiers have no
bias and start from N(0, 0.001). :func:`init_reid_head_module` applies that initialisation; the
models call it from their ``_init_weights``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F
from transformers import initialization as init


class BNNeck(nn.BatchNorm1d):
    """``BatchNorm1d`` whose bias is frozen (``requires_grad=False``) at its initial zero."""

    def __init__(self, num_features: int):
        super().__init__(num_features)
        self.bias.requires_grad_(False)


class IdentityClassifier(nn.Linear):
    """Bias-free linear layer from a feature to one logit per training identity."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__(in_features, num_classes, bias=False)


class ReIDHeadOutput(NamedTuple):
    neck_features: torch.Tensor
    """BNNeck of the post-layernorm CLS feature."""
    neck_projected: torch.Tensor
    """BNNeck of the projected CLS feature."""
    logits: torch.Tensor
    """Identity logits from ``neck_features`` (B, num_classes)."""
    logits_projected: torch.Tensor
    """Identity logits from ``neck_projected`` (B, num_classes)."""


class CLIPReIDHead(nn.Module):
    """The two BNNecks and the two identity classifiers of CLIP-ReID."""

    def __init__(self, feature_dim: int, projection_dim: int, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.bottleneck = BNNeck(feature_dim)
        self.bottleneck_proj = BNNeck(projection_dim)
        self.classifier = IdentityClassifier(feature_dim, num_classes)
        self.classifier_proj = IdentityClassifier(projection_dim, num_classes)

    def forward(self, features: torch.Tensor, projected: torch.Tensor) -> ReIDHeadOutput:
        neck_features = self.bottleneck(features)
        neck_projected = self.bottleneck_proj(projected)
        return ReIDHeadOutput(
            neck_features,
            neck_projected,
            self.classifier(neck_features),
            self.classifier_proj(neck_projected),
        )


def retrieval_embeddings(
    pooled: torch.Tensor,
    projected: torch.Tensor,
    head: CLIPReIDHead,
    head_output: ReIDHeadOutput | None = None,
    neck_feat: str = "before",
    normalize: bool = True,
) -> torch.Tensor:
    """CLIP-ReID's retrieval feature ``cat[x12, xproj]`` (B, width + proj), taken before or after
    the BNNecks (``neck_feat``) and L2-normalised or not. ``head_output`` avoids re-running the
    necks when the forward has them already."""
    if neck_feat == "after":
        head_output = head_output if head_output is not None else head(pooled, projected)
        embeddings = torch.cat([head_output.neck_features, head_output.neck_projected], dim=1)
    else:
        embeddings = torch.cat([pooled, projected], dim=1)
    return F.normalize(embeddings, dim=1) if normalize else embeddings


@torch.no_grad()
def init_reid_head_module(module: nn.Module) -> bool:
    """Initialise ``module`` if it is a BNNeck or an identity classifier; return whether it was.

    Uses ``transformers.initialization`` so that weights loaded by ``from_pretrained`` are never
    overwritten.
    """
    if isinstance(module, BNNeck):
        init.ones_(module.weight)
        init.zeros_(module.bias)
        init.zeros_(module.running_mean)
        init.ones_(module.running_var)
        init.zeros_(module.num_batches_tracked)
        return True
    if isinstance(module, IdentityClassifier):
        init.normal_(module.weight, mean=0.0, std=0.001)
        return True
    return False


__all__ = [
    "BNNeck",
    "CLIPReIDHead",
    "IdentityClassifier",
    "ReIDHeadOutput",
    "init_reid_head_module",
    "retrieval_embeddings",
]
