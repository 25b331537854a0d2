"""What every hf_reid Re-ID model shares, written once.

:class:`ReIDPreTrainedModel` is the pretrained base of the CLIP-based Re-ID models (as
``CLIPPreTrainedModel`` is for ``transformers``' CLIP family). A method's model subclasses it,
builds its modules in ``__init__`` (a ``backbone`` — :class:`~.clip_backbone.ReIDCLIPBackbone` —
and a ``head`` — :class:`~.reid_heads.CLIPReIDHead` — at least) and inherits:

* the class attributes transformers reads (input name, attention back-ends, no-split modules);
* :meth:`from_clip_pretrained`: a model from any CLIP checkpoint, every CLIP weight copied and the
  square position table resized once to the Re-ID grid; two hooks (:meth:`_config_from_clip`,
  :meth:`_init_from_clip`) let a method add what it needs (a tokenizer, another text encoder);
* :meth:`get_image_embeddings`: the retrieval feature ``cat[x12, xproj]`` before or after the
  BNNecks, normalised as the config says;
* :meth:`check_labels` and :meth:`identity_losses`: the label check and the ID + triplet loss
  composition of CLIP-ReID's stage 2, which every method trains its image encoder with.

This file travels with every saved model, so it imports siblings relatively and nothing from
hf_reid.
"""

from __future__ import annotations

import copy
import os
from typing import Any, ClassVar, NamedTuple

import torch
from transformers import CLIPModel, PreTrainedModel

from .clip_backbone import ReIDImageFeatures
from .configuration_reid_base import ReIDConfig
from .losses import Gather, batch_hard_triplet, cross_entropy_label_smooth
from .reid_heads import ReIDHeadOutput, init_reid_head_module, retrieval_embeddings


class IdentityLosses(NamedTuple):
    """The unweighted Re-ID loss terms of a labelled batch and their weighted sum."""

    id_loss: torch.Tensor
    """Sum of the label-smoothed identity CEs of both classifiers (on BNNeck(x12), BNNeck(xproj))."""
    triplet_loss: torch.Tensor
    """Sum of the batch-hard triplet losses on x11, x12 and xproj."""
    weighted: torch.Tensor
    """``id_loss_weight * id_loss + triplet_loss_weight * triplet_loss``."""


class ReIDPreTrainedModel(PreTrainedModel):
    """Base class of the hf_reid Re-ID models: a CLIP backbone on a native Re-ID grid, BNNeck
    identity heads, and what a method adds on top."""

    config_class = ReIDConfig
    config: ReIDConfig
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _no_split_modules: ClassVar[list[str]] = [
        "CLIPEncoderLayer",
        "CLIPTextEmbeddings",
        "ReIDCLIPVisionEmbeddings",
    ]

    @torch.no_grad()
    def _init_weights(self, module):
        """CLIP's own modules keep CLIP's initialisation; the Re-ID heads get CLIP-ReID's.
        Subclasses handle their own modules first and call this for the rest."""
        init_reid_head_module(module)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_clip_pretrained(
        cls,
        clip_name_or_path: str | os.PathLike,
        num_classes: int,
        image_size: tuple[int, int] = (256, 128),
        clip_kwargs: dict | None = None,
        **kwargs: Any,
    ) -> ReIDPreTrainedModel:
        """Build the model from any CLIP checkpoint (a Hub id such as
        ``openai/clip-vit-base-patch16`` or a local folder).

        Every CLIP weight is copied, the square vision position table resized once to the
        Re-ID grid (``config.pos_interpolation``); the Re-ID parts are freshly initialised.
        ``clip_kwargs`` go to ``CLIPModel.from_pretrained`` (e.g. ``revision``); the other
        keyword arguments are config fields, or options of the method's
        :meth:`_config_from_clip` (e.g. CLIP-ReID's ``tokenizer``).
        """
        clip = CLIPModel.from_pretrained(clip_name_or_path, **(clip_kwargs or {}))
        config, extras = cls._config_from_clip(
            clip, clip_name_or_path, num_classes=num_classes, image_size=image_size, **kwargs
        )
        model = cls(config)
        model._init_from_clip(clip, extras)
        return model

    @classmethod
    def _config_from_clip(
        cls, clip: CLIPModel, clip_name_or_path: str | os.PathLike, **config_kwargs: Any
    ) -> tuple[ReIDConfig, Any]:
        """The config of a model built on ``clip`` and what :meth:`_init_from_clip` needs
        besides the CLIP weights (nothing here)."""
        return cls.config_class(clip_config=copy.deepcopy(clip.config), **config_kwargs), None

    def _init_from_clip(self, clip: CLIPModel, extras: Any) -> None:
        """Copy the CLIP weights into the freshly built model."""
        self.backbone.load_clip_weights(clip, self.config.pos_interpolation)

    # ------------------------------------------------------------------ features

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def _retrieval_embeddings(self, features: ReIDImageFeatures, head: ReIDHeadOutput | None) -> torch.Tensor:
        return retrieval_embeddings(
            features.pooled,
            features.projected,
            self.head,
            head,
            self.config.neck_feat,
            self.config.feature_norm,
        )

    def get_image_embeddings(
        self, pixel_values: torch.Tensor, camids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Retrieval embeddings (B, width + proj) of ``pixel_values``: ``cat[x12, xproj]`` before
        or after the BNNecks and normalised as the config says (the ``embeddings`` field of the
        forward, without computing logits). ``camids`` are used by models with SIE."""
        return self._retrieval_embeddings(self.backbone.encode_image(pixel_values, camids), None)

    # ------------------------------------------------------------------ losses

    def check_labels(self, labels: torch.Tensor, batch_size: int | None = None) -> None:
        """Raise ``ValueError`` unless ``labels`` are identity indices in ``[0, num_classes)``
        (and, with ``batch_size``, one per image)."""
        if batch_size is not None and labels.shape != (batch_size,):
            raise ValueError(f"labels must be ({batch_size},), one per image, got {tuple(labels.shape)}.")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.config.num_classes):
            raise ValueError(
                f"labels must be identity indices in [0, {self.config.num_classes}) (config.num_classes); "
                f"got values in [{int(labels.min())}, {int(labels.max())}]. Relabel pids to 0..num_classes-1."
            )

    def identity_losses(
        self,
        features: ReIDImageFeatures,
        head: ReIDHeadOutput,
        labels: torch.Tensor,
        feature_gather: Gather | None = None,
    ) -> IdentityLosses:
        """CLIP-ReID's stage-2 Re-ID losses: label-smoothed CE of both classifiers and batch-hard
        triplet on x11, x12 and xproj (``feature_gather`` mines across processes)."""
        cfg = self.config
        eps = cfg.label_smoothing
        id_loss = cross_entropy_label_smooth(head.logits, labels, eps) + cross_entropy_label_smooth(
            head.logits_projected, labels, eps
        )
        triplet_loss = sum(
            batch_hard_triplet(f, labels, margin=cfg.triplet_margin, gather=feature_gather)
            for f in (features.intermediate, features.pooled, features.projected)
        )
        weighted = cfg.id_loss_weight * id_loss + cfg.triplet_loss_weight * triplet_loss
        return IdentityLosses(id_loss, triplet_loss, weighted)


__all__ = ["IdentityLosses", "ReIDPreTrainedModel"]
