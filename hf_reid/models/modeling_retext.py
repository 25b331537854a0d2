"""ReText (Mamedov, Kvanchiani, Konushin, Konushin, 2026) as a ``transformers`` model.

ReText trains a Re-ID image encoder on labelled multi-camera images and, at the same time, on
single-camera images with captions. Only the paper's abstract could be read; the losses follow
our reconstruction (docs/METHODS.md §4.3). :class:`ReTextModel` holds:

* the image encoder: CLIP's vision tower on a native Re-ID grid (:class:`ReIDCLIPBackbone`) with
  CLIP-ReID's BNNecks and identity classifiers; the retrieval embedding is CLIP-ReID's
  ``cat[x12, xproj]``, so results compare directly with CLIP-ReID;
* a momentum (EMA) copy of the vision tower and visual projection, frozen, updated by
  :meth:`ReTextModel.momentum_update` after every optimizer step (kept in the checkpoint so a
  resumed run continues exactly);
* a text encoder: CLIP's text tower and text projection, or any ``AutoModel`` text encoder
  (``config.text_config``, e.g. BERT as in the paper) with a linear projection to the joint space;
* a reconstruction head, a ``diffusers.PixArtTransformer2DModel`` (a DiT with cross-attention):
  the visible patch tokens of a masked captioned image, with a learned mask token at the masked
  positions, cross-attend to the caption's token states and predict the pixels of every patch.

One forward takes both batches of a training step (one call per step, as DDP needs)::

    out = model(pixel_values=multi["pixel_values"], labels=multi["labels"],
                caption_pixel_values=cap["pixel_values"], input_ids=cap["input_ids"],
                attention_mask=cap["attention_mask"], caption_labels=cap["labels"])
    out.loss.backward(); optimizer.step(); model.momentum_update()

``loss = w_id [CE(x12) + CE(xproj)] + w_tri [Tri(x11) + Tri(x12) + Tri(xproj)]
+ w_match L_match + w_struct L_struct + w_rec L_rec``; a caption loss whose weight is 0 is not
computed and the modules only it needs are not run. At inference ``model.get_image_embeddings``
gives the retrieval feature. This file and its siblings are copied next to the weights by
``save_pretrained``, so a saved model loads with ``AutoModel.from_pretrained(folder,
trust_remote_code=True)`` without hf_reid installed.

Why a PixArt DiT and not a UNet for the head: on the token grid (8x4 at 128x64 with 16-pixel
patches) a 4-block PixArt with patch size 1 is a plain transformer decoder with cross-attention,
the MAE-style decoder the method calls for, and it takes non-square grids as they are (its sincos
position table is recomputed for the grid). Measured on 2 CPU threads, forward + backward of the
head alone at batch 32 with SynthCLIP widths (128-wide tokens, 64 caption tokens, 768 outputs per
token): the default PixArt (1 head x 64, 4 blocks, 0.38M parameters) 70 ms; the smallest useful
``UNet2DConditionModel`` (blocks 64/128/128, cross-attention in two, 7.2M parameters) 285 ms,
and its convolutions over a 8x4 grid downsample it to 2x1. A whole ReText step (32 multi-camera
+ 32 captioned images, SynthCLIP) takes about 0.35 s, of which 0.2 s is the reconstruction branch
(caption encoding, encoder on the visible quarter, head). The timestep is fixed at 0: the head is
a single-step reconstructor, not a diffusion model.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from diffusers import PixArtTransformer2DModel
from diffusers.models.embeddings import PatchEmbed, get_2d_sincos_pos_embed
from torch import nn
from torch.nn import functional as F
from transformers import AutoModel, CLIPModel, CLIPTextModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .clip_backbone import ReIDCLIPBackbone
from .configuration_retext import ReTextConfig
from .losses import (
    Gather,
    identity_matching_loss,
    image_patches,
    masked_patch_reconstruction_loss,
    structure_preserving_loss,
)
from .modeling_reid_base import ReIDPreTrainedModel
from .reid_heads import CLIPReIDHead

RECONSTRUCTION_HEAD_FOLDER = "reconstruction_head"
"""Subfolder of a saved ReText model holding the reconstruction head as a standalone diffusers model."""


@dataclass
class ReTextOutput(ModelOutput):
    """Output of :class:`ReTextModel`. Losses are unweighted; fields of a part that did not run
    (no multi-camera batch, no caption batch, a loss switched off) are ``None``.

    Args:
        loss: Weighted total loss.
        id_loss: Sum of the label-smoothed identity CEs of both classifiers (multi-camera batch).
        triplet_loss: Sum of the batch-hard triplet losses on x11, x12 and xproj.
        matching_loss: Identity-aware matching loss (image->text + text->image) of the caption batch.
        structure_loss: Structure-preserving loss of the caption batch.
        reconstruction_loss: MSE on the normalised pixels of the masked patches.
        embeddings: Retrieval feature of the multi-camera images (B, width + proj).
        logits: Identity logits of the classifier on BNNeck(x12).
        logits_projected: Identity logits of the classifier on BNNeck(xproj).
        image_features: ``xproj`` of the multi-camera images.
        pooled_features: ``x12`` of the multi-camera images.
        intermediate_features: ``x11`` of the multi-camera images.
        caption_image_embeds: Normalised joint-space features of the caption images (Bc, proj).
        text_embeds: Normalised joint-space features of the captions (Bc, proj).
        image_text_logits: ``caption_image_embeds @ text_embeds.T / matching_temperature``.
        reconstruction: Predicted (normalised) pixels of every patch (Bc, N, 3 * p * p).
        mask: (Bc, N), true at the patches hidden from the encoder.
    """

    loss: torch.Tensor | None = None
    id_loss: torch.Tensor | None = None
    triplet_loss: torch.Tensor | None = None
    matching_loss: torch.Tensor | None = None
    structure_loss: torch.Tensor | None = None
    reconstruction_loss: torch.Tensor | None = None
    embeddings: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    logits_projected: torch.Tensor | None = None
    image_features: torch.Tensor | None = None
    pooled_features: torch.Tensor | None = None
    intermediate_features: torch.Tensor | None = None
    caption_image_embeds: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    image_text_logits: torch.Tensor | None = None
    reconstruction: torch.Tensor | None = None
    mask: torch.Tensor | None = None


class TextFeatures(NamedTuple):
    """What the text encoder gives for a batch of captions."""

    projected: torch.Tensor
    """Joint-space feature (B, proj), not normalised: CLIP's pooled end-of-text state or the text
    model's pooled output (BERT: its pooler on [CLS]), through the text projection."""
    token_states: torch.Tensor
    """Last hidden states of all tokens (B, L, text width), the reconstruction head's context."""


class JointProjection(nn.Linear):
    """Bias-free linear map from the text encoder's pooled feature to the joint image-text space."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features, bias=False)


class MomentumImageEncoder(nn.Module):
    """A frozen copy of the vision tower and visual projection, updated as an EMA of the online ones."""

    def __init__(self, vision: nn.Module, projection: nn.Module):
        super().__init__()
        self.vision = copy.deepcopy(vision)
        self.projection = copy.deepcopy(projection)
        self.requires_grad_(False)

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected CLS feature ``xproj`` (B, proj), computed as the online encoder does."""
        return self.projection(self.vision(pixel_values=pixel_values).pooler_output)


class ReTextModel(ReIDPreTrainedModel):
    """ReText: a Re-ID image encoder trained with image-text matching and text-guided reconstruction."""

    config_class = ReTextConfig
    config: ReTextConfig
    base_model_prefix = "retext"
    _no_split_modules: ClassVar[list[str]] = [*ReIDPreTrainedModel._no_split_modules, "BasicTransformerBlock"]

    def __init__(self, config: ReTextConfig):
        super().__init__(config)
        # Built first, so that it starts exactly as a head built alone from the same seed would.
        self.reconstruction_head = PixArtTransformer2DModel.from_config(config.reconstruction_head)
        for module in self.reconstruction_head.modules():
            # diffusers initialised it; transformers' post_init must not (HF_NOTES §3.4). The patch
            # embedding is left to _init_weights, which only refills its fixed sincos table.
            if not isinstance(module, PatchEmbed):
                module._is_hf_initialized = True
        self.backbone = ReIDCLIPBackbone(
            config.clip_config, config.image_size, config.stride_size, text_tower=False
        )
        self.head = CLIPReIDHead(self.backbone.vision_width, self.backbone.projection_dim, config.num_classes)
        if config.text_config is None:
            self.text_model = CLIPTextModel._from_config(config.clip_config.text_config)
        else:
            self.text_model = AutoModel.from_config(config.text_config)
        self.text_projection = JointProjection(config.text_width, self.backbone.projection_dim)
        self.mask_token = nn.Parameter(torch.zeros(self.backbone.vision_width))
        self.momentum_encoder = MomentumImageEncoder(
            self.backbone.clip.vision_model, self.backbone.clip.visual_projection
        )
        self.post_init()
        self.reset_momentum_encoder()
        self.set_trainable()

    @torch.no_grad()
    def _init_weights(self, module):
        """CLIP's, the text model's and diffusers' modules keep their own initialisation; this
        covers the Re-ID heads (CLIP-ReID's init), the text projection (CLIP's), the mask token
        (MAE's) and the reconstruction head's sincos position table: a non-persistent buffer, not
        in the checkpoint, so ``from_pretrained`` must recompute it as diffusers does."""
        if isinstance(module, PatchEmbed):
            table = module.pos_embed
            if table is not None and module.pos_embed_max_size is None:
                sincos = get_2d_sincos_pos_embed(
                    table.shape[-1],
                    math.isqrt(table.shape[1]),
                    base_size=module.base_size,
                    interpolation_scale=module.interpolation_scale,
                    output_type="pt",
                )
                init.copy_(table, sincos.float().unsqueeze(0))
        elif isinstance(module, JointProjection):
            factor = self.config.clip_config.initializer_factor
            init.normal_(module.weight, std=module.in_features**-0.5 * factor)
        elif isinstance(module, ReTextModel):
            init.normal_(module.mask_token, std=0.02)
        else:
            super()._init_weights(module)

    # ------------------------------------------------------------------ construction / saving

    @classmethod
    def _config_from_clip(cls, clip, clip_name_or_path, text_encoder_name_or_path=None, **config_kwargs):
        """``from_clip_pretrained(..., text_encoder_name_or_path=None)``: with a text encoder (any
        ``AutoModel``, e.g. ``bert-base-uncased``) its weights become the text encoder, with a
        fresh projection to the joint space; otherwise CLIP's text tower and projection are used.
        The momentum encoder starts equal to the online one."""
        text_encoder = None
        if text_encoder_name_or_path is not None:
            text_encoder = AutoModel.from_pretrained(text_encoder_name_or_path)
            config_kwargs["text_config"] = copy.deepcopy(text_encoder.config)
        config, _ = super()._config_from_clip(clip, clip_name_or_path, **config_kwargs)
        return config, text_encoder

    def _init_from_clip(self, clip: CLIPModel, text_encoder: nn.Module | None) -> None:
        super()._init_from_clip(clip, None)
        if text_encoder is None:
            self.text_model.load_state_dict(clip.text_model.state_dict())
            self.text_projection.load_state_dict(clip.text_projection.state_dict())
        else:
            self.text_model.load_state_dict(text_encoder.state_dict())
        self.reset_momentum_encoder()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """``PreTrainedModel.from_pretrained``, then :meth:`set_trainable`: loading replaces the
        parameters, which resets their ``requires_grad`` (the momentum encoder would otherwise be
        trainable after a reload)."""
        loaded = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        (loaded[0] if isinstance(loaded, tuple) else loaded).set_trainable()
        return loaded

    def save_pretrained(
        self, save_directory: str | os.PathLike, *args, save_reconstruction_head: bool = True, **kwargs
    ) -> None:
        """``PreTrainedModel.save_pretrained``, plus (``save_reconstruction_head=True``) the
        reconstruction head as a standalone diffusers model in ``reconstruction_head/``
        (``PixArtTransformer2DModel.from_pretrained(folder, subfolder="reconstruction_head")``).
        ``from_pretrained`` of the main folder reads only the files at its top level."""
        if save_reconstruction_head and kwargs.get("is_main_process", True):
            # Written first, so that push_to_hub=True uploads it with the rest.
            self.reconstruction_head.save_pretrained(os.path.join(save_directory, RECONSTRUCTION_HEAD_FOLDER))
        super().save_pretrained(save_directory, *args, **kwargs)

    # ------------------------------------------------------------------ momentum encoder

    def _momentum_pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(momentum, online) parameter pairs, matched by name."""
        online = {
            **{f"vision.{k}": v for k, v in self.backbone.clip.vision_model.named_parameters()},
            **{f"projection.{k}": v for k, v in self.backbone.clip.visual_projection.named_parameters()},
        }
        pairs = []
        for name, target in self.momentum_encoder.named_parameters():
            if name not in online or online[name].shape != target.shape:
                raise ValueError(
                    f"the online vision tower has no parameter matching momentum_encoder.{name}; a wrapped "
                    "(e.g. LoRA) vision tower must be merged before the momentum encoder can follow it."
                )
            pairs.append((target, online[name]))
        return pairs

    @torch.no_grad()
    def reset_momentum_encoder(self) -> None:
        """Copy the online vision tower and projection into the momentum encoder."""
        for target, source in self._momentum_pairs():
            target.copy_(source)

    @torch.no_grad()
    def momentum_update(self, momentum: float | None = None) -> None:
        """EMA step ``xi <- m xi + (1 - m) theta`` of the momentum encoder towards the online vision
        tower and projection (``m = config.momentum`` unless given). Call it after every
        optimizer step."""
        m = self.config.momentum if momentum is None else float(momentum)
        for target, source in self._momentum_pairs():
            target.lerp_(source.detach().to(target.dtype), 1.0 - m)

    def set_trainable(self, text: bool | None = None, reconstruction: bool | None = None) -> None:
        """Set ``requires_grad`` (without LoRA; peft manages its own).

        The image encoder and the Re-ID heads always train. ``text`` (the text model and
        projection) and ``reconstruction`` (the reconstruction head and the mask token) default to
        training exactly when a loss that reaches them has a weight > 0, so that under DDP every
        trainable parameter gets a gradient. Always frozen: the momentum encoder, CLIP's unused
        logit scale (the temperatures are config values) and the BNNeck biases. Called by
        ``__init__``.
        """
        cfg = self.config
        if reconstruction is None:
            reconstruction = cfg.reconstruction_loss_weight > 0
        if text is None:
            text = (
                max(cfg.matching_loss_weight, cfg.structure_loss_weight, cfg.reconstruction_loss_weight) > 0
            )
        self.requires_grad_(True)
        self.text_model.requires_grad_(text)
        self.text_projection.requires_grad_(text)
        self.reconstruction_head.requires_grad_(reconstruction)
        self.mask_token.requires_grad_(reconstruction)
        self.momentum_encoder.requires_grad_(False)
        self.backbone.clip.logit_scale.requires_grad_(False)
        self.head.bottleneck.bias.requires_grad_(False)
        self.head.bottleneck_proj.bias.requires_grad_(False)

    # ------------------------------------------------------------------ features

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """L2-normalised joint-space image feature (normalised ``xproj``, B x proj), comparable with
        :meth:`get_text_features` by dot product (= cosine)."""
        return F.normalize(self.backbone.encode_image(pixel_values).projected, dim=1)

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> TextFeatures:
        """Projected (not normalised) caption feature and the token states of the text encoder."""
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be (batch, length), got {tuple(input_ids.shape)}.")
        if input_ids.shape[1] > self.config.max_text_length:
            raise ValueError(
                f"input_ids have {input_ids.shape[1]} tokens, more than config.max_text_length="
                f"{self.config.max_text_length}; tokenise with truncation=True, max_length={self.config.max_text_length}."
            )
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask {tuple(attention_mask.shape)} must have the shape of input_ids "
                f"{tuple(input_ids.shape)}."
            )
        output = self.text_model(input_ids=input_ids, attention_mask=attention_mask)
        pooled = getattr(output, "pooler_output", None)
        if pooled is None:
            pooled = output.last_hidden_state[:, 0]
        return TextFeatures(self.text_projection(pooled), output.last_hidden_state)

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """L2-normalised joint-space caption feature (B, proj)."""
        return F.normalize(self.encode_text(input_ids, attention_mask).projected, dim=1)

    # ------------------------------------------------------------------ text-based person search

    @property
    def has_trained_caption_path(self) -> bool:
        """True when an image–text alignment loss (matching or structure) has a weight > 0: they
        train the joint space of :meth:`get_image_features` and :meth:`get_text_features`. (A
        recipe run with ``captions.mode`` ``none`` or ``identities`` keeps the weights but never
        trains them; its ``train_results.json`` records ``caption_mode``, which
        ``hf_reid.search`` checks.)"""
        return self.config.matching_loss_weight > 0 or self.config.structure_loss_weight > 0

    def get_joint_image_embeddings(
        self, pixel_values: torch.Tensor, camids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """:meth:`get_image_features` (normalised ``xproj``, the feature the matching loss trains);
        ``camids`` are ignored (ReText has no SIE)."""
        return self.get_image_features(pixel_values)

    def _untrained_caption_path(self, allow_untrained: bool) -> None:
        """:meth:`get_text_embeddings` is refused (``ValueError``) without ``allow_untrained`` when no
        alignment loss trained the space; with it, ReText's own text tower is used without a
        warning."""
        if not allow_untrained:
            raise ValueError(
                "this ReTextModel was configured without image–text alignment (matching_loss_weight = "
                "structure_loss_weight = 0): no caption loss trained its text–image space. Pass "
                "allow_untrained=True to use it anyway."
            )

    def _text_encoder(self) -> tuple[int, Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]]:
        """:meth:`get_text_embeddings` embeds with :meth:`get_text_features` (L2-normalised (B, proj),
        compared with :meth:`get_joint_image_embeddings` by dot product), texts tokenised with the
        model's ``tokenizer`` and truncated to ``config.max_text_length``."""
        return self.config.max_text_length, self.get_text_features

    # ------------------------------------------------------------------ reconstruction

    @property
    def num_patches(self) -> int:
        grid = self.backbone.clip.vision_model.embeddings.grid
        return grid[0] * grid[1]

    def random_patch_mask(self, batch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
        """(B, N) boolean mask, true at ``round(mask_ratio * N)`` random patches of each image
        (at least one hidden and one visible), drawn independently per image (MAE's shuffle)."""
        n = self.num_patches
        num_masked = min(max(round(self.config.mask_ratio * n), 1), n - 1)
        order = torch.rand(batch_size, n, device=device).argsort(dim=1)
        mask = torch.zeros(batch_size, n, dtype=torch.bool, device=device)
        return mask.scatter_(1, order[:, :num_masked], True)

    def reconstruct(
        self,
        pixel_values: torch.Tensor,
        text_states: torch.Tensor,
        text_attention_mask: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Text-guided reconstruction of masked patches: ``(prediction (B, N, 3 p p), mask (B, N))``.

        The online image encoder sees only the visible patches (``mask`` false; a random mask of
        ``config.mask_ratio`` if not given, the same count per image); their output tokens go
        back to their places on the patch grid, a learned mask token fills the others, and the
        reconstruction head predicts every patch's normalised pixels, cross-attending to the
        caption's ``text_states`` (padding excluded by ``text_attention_mask``).
        """
        batch_size = pixel_values.shape[0]
        if mask is None:
            mask = self.random_patch_mask(batch_size, pixel_values.device)
        n = self.num_patches
        if mask.shape != (batch_size, n):
            raise ValueError(f"mask must be (batch={batch_size}, patches={n}), got {tuple(mask.shape)}.")
        num_visible = (~mask).sum(dim=1)
        if int(num_visible.min()) != int(num_visible.max()) or int(num_visible.min()) == 0:
            raise ValueError("mask must leave the same number (>= 1) of visible patches in every image.")
        visible = (~mask).nonzero()[:, 1].view(batch_size, -1)
        tokens = self.backbone.encode_visible_patches(pixel_values, visible)[:, 1:]
        width = tokens.shape[-1]
        grid_tokens = self.mask_token.to(tokens.dtype).expand(batch_size, n, width)
        grid_tokens = grid_tokens.scatter(1, visible.unsqueeze(-1).expand(-1, -1, width), tokens)
        rows, cols = self.backbone.clip.vision_model.embeddings.grid
        hidden = grid_tokens.transpose(1, 2).reshape(batch_size, width, rows, cols)
        output = self.reconstruction_head(
            hidden_states=hidden,
            encoder_hidden_states=text_states,
            encoder_attention_mask=text_attention_mask,
            timestep=torch.zeros(batch_size, dtype=torch.long, device=hidden.device),
            added_cond_kwargs={"resolution": None, "aspect_ratio": None},
        ).sample
        return output.flatten(2).transpose(1, 2), mask

    # ------------------------------------------------------------------ forward

    def _check_caption_batch(
        self,
        caption_pixel_values: torch.Tensor,
        input_ids: torch.Tensor | None,
        caption_labels: torch.Tensor | None,
        compute_loss: bool,
    ) -> None:
        batch_size = caption_pixel_values.shape[0]
        if input_ids is None:
            raise ValueError(
                "caption_pixel_values need their captions: pass input_ids (and attention_mask) from the "
                "text encoder's tokenizer (hf_reid.data.CaptionCollator gives them)."
            )
        if input_ids.ndim != 2 or input_ids.shape[0] != batch_size:
            raise ValueError(
                f"input_ids must be (caption batch={batch_size}, length), got {tuple(input_ids.shape)}."
            )
        if compute_loss and self.config.matching_loss_weight > 0:
            if caption_labels is None:
                raise ValueError(
                    "the identity-aware matching loss needs caption_labels (the identity of each captioned "
                    "image); pass them, or set matching_loss_weight=0."
                )
            if caption_labels.shape != (batch_size,):
                raise ValueError(
                    f"caption_labels must be ({batch_size},), one per caption image, got "
                    f"{tuple(caption_labels.shape)}."
                )

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        camids: torch.Tensor | None = None,
        caption_pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        caption_labels: torch.Tensor | None = None,
        return_loss: bool | None = None,
        feature_gather: Gather | None = None,
    ) -> ReTextOutput:
        r"""
        Args:
            pixel_values: Multi-camera images (B, 3, H, W) at ``config.image_size``.
            labels: Their identities (B,) in ``[0, num_classes)``; with them the Re-ID losses
                are computed.
            camids: Accepted for the common Re-ID interface and ignored (ReText has no SIE).
            caption_pixel_values: Single-camera captioned images (Bc, 3, H, W).
            input_ids: Their tokenised captions (Bc, L), required with ``caption_pixel_values``.
            attention_mask: (Bc, L), 1 at real tokens (default: all ones).
            caption_labels: Identities of the captioned images (Bc,), a label space of their own;
                required by the matching loss.
            return_loss: ``False`` skips every loss; ``True`` requires labels or a caption batch.
            feature_gather: All-gather for the triplet mining across processes (see
                :func:`~.losses.batch_hard_triplet`). The caption losses are per process (as IRRA).
        """
        if pixel_values is None and caption_pixel_values is None:
            raise ValueError(
                "ReTextModel needs pixel_values (multi-camera images), caption_pixel_values, or both."
            )
        if return_loss and labels is None and caption_pixel_values is None:
            raise ValueError("return_loss=True needs labels or a caption batch.")
        compute_loss = return_loss is not False
        cfg = self.config
        out: dict[str, torch.Tensor] = {}
        weighted = []

        if pixel_values is not None:
            features = self.backbone.encode_image(pixel_values)
            head = self.head(features.pooled, features.projected)
            out["embeddings"] = self._retrieval_embeddings(features, head)
            out.update(logits=head.logits, logits_projected=head.logits_projected)
            out.update(
                image_features=features.projected,
                pooled_features=features.pooled,
                intermediate_features=features.intermediate,
            )
            if labels is not None and compute_loss:
                self.check_labels(labels, pixel_values.shape[0])
                out["id_loss"], out["triplet_loss"], reid_loss = self.identity_losses(
                    features, head, labels, feature_gather
                )
                weighted.append(reid_loss)

        align = cfg.matching_loss_weight > 0 or cfg.structure_loss_weight > 0
        rebuild = cfg.reconstruction_loss_weight > 0
        if caption_pixel_values is not None and (align or rebuild):
            self._check_caption_batch(caption_pixel_values, input_ids, caption_labels, compute_loss)
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            text = self.encode_text(input_ids, attention_mask)
            if align:
                image_projected = self.backbone.encode_image(caption_pixel_values).projected
                out["caption_image_embeds"] = F.normalize(image_projected, dim=1)
                out["text_embeds"] = F.normalize(text.projected, dim=1)
                out["image_text_logits"] = (
                    out["caption_image_embeds"] @ out["text_embeds"].t() / cfg.matching_temperature
                )
                if compute_loss and cfg.matching_loss_weight > 0:
                    out["matching_loss"] = identity_matching_loss(
                        image_projected, text.projected, caption_labels, cfg.matching_temperature
                    )
                    weighted.append(cfg.matching_loss_weight * out["matching_loss"])
                if compute_loss and cfg.structure_loss_weight > 0:
                    momentum_projected = self.momentum_encoder(caption_pixel_values)
                    out["structure_loss"] = structure_preserving_loss(
                        image_projected, text.projected, momentum_projected, cfg.structure_temperature
                    )
                    weighted.append(cfg.structure_loss_weight * out["structure_loss"])
            if rebuild:
                out["reconstruction"], out["mask"] = self.reconstruct(
                    caption_pixel_values, text.token_states, attention_mask
                )
                if compute_loss:
                    embeddings = self.backbone.clip.vision_model.embeddings
                    target = image_patches(
                        caption_pixel_values, embeddings.patch_size, embeddings.stride_size
                    )
                    out["reconstruction_loss"] = masked_patch_reconstruction_loss(
                        out["reconstruction"], target, out["mask"]
                    )
                    weighted.append(cfg.reconstruction_loss_weight * out["reconstruction_loss"])

        if weighted:
            out["loss"] = sum(weighted)
        return ReTextOutput(**out)


__all__ = ["RECONSTRUCTION_HEAD_FOLDER", "ReTextModel", "ReTextOutput", "TextFeatures"]
