"""CLIP-ReID (Li, Sun, Li, AAAI 2023) as a ``transformers`` model.

``CLIPReIDModel`` holds a CLIP (vision tower on a native Re-ID grid, optional SIE), the two
BNNecks and identity classifiers, and the per-identity prompt learner. It serves both training
stages of the paper:

* stage 1 (prompts; encoders frozen): :meth:`CLIPReIDModel.get_image_features` once over the
  training set, then :meth:`CLIPReIDModel.prompt_loss` per batch of cached features;
* stage 2 (image encoder; text side frozen): :meth:`CLIPReIDModel.compute_text_features` once,
  then ``model(pixel_values, labels=..., text_features=...)`` gives the loss
  ``w_id * [CE(x12) + CE(xproj)] + w_tri * [Tri(x11) + Tri(x12) + Tri(xproj)] + w_i2t * CE(xproj T^T)``.

At inference ``model(pixel_values).embeddings`` (or :meth:`get_image_embeddings`) is the
retrieval feature ``cat[x12, xproj]`` before or after the BNNecks, L2-normalised or not, as the
config says. This file and its siblings are copied next to the weights by ``save_pretrained``,
so a saved model loads with ``AutoModel.from_pretrained(folder, trust_remote_code=True)``
without hf_reid installed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Literal

import torch
from transformers import AutoTokenizer
from transformers import initialization as init
from transformers.utils import ModelOutput

from .clip_backbone import CameraEmbedding, ReIDCLIPBackbone, end_of_text_position
from .configuration_clip_reid import CLIPReIDConfig
from .losses import Gather, cross_entropy_label_smooth, image_text_supcon
from .modeling_reid_base import ReIDPreTrainedModel
from .prompt_learner import PromptLearner
from .reid_heads import CLIPReIDHead

logger = logging.getLogger(__name__)

_SHAPE_FIELDS = ("num_classes", "image_size", "stride_size", "use_sie", "num_cameras", "num_prompt_tokens")
"""Config fields that change parameter shapes: a checkpoint loads only with the same values."""


def _shape_signature(config: CLIPReIDConfig) -> dict:
    """What the parameter shapes of a model built from ``config`` depend on."""
    patch = config.clip_config.vision_config.patch_size
    return {
        "num_classes": config.num_classes,
        "image_size": tuple(config.image_size),
        "stride_size": tuple(config.stride_size or (patch, patch)),
        "num_cameras": config.num_cameras if config.use_sie else 0,
        "num_prompt_tokens": config.num_prompt_tokens,
    }


@dataclass
class CLIPReIDOutput(ModelOutput):
    """Output of :class:`CLIPReIDModel`.

    Args:
        loss: Weighted total loss (when ``labels`` are given).
        id_loss: Sum of the label-smoothed identity CEs of both classifiers (unweighted).
        triplet_loss: Sum of the batch-hard triplet losses on x11, x12 and xproj (unweighted).
        i2t_loss: Label-smoothed CE of ``xproj @ text_features.T`` (unweighted; when
            ``text_features`` are given).
        embeddings: Retrieval feature (B, width + proj).
        logits: Identity logits of the classifier on BNNeck(x12).
        logits_projected: Identity logits of the classifier on BNNeck(xproj).
        i2t_logits: ``xproj @ text_features.T`` (when ``text_features`` are given).
        image_features: ``xproj``, the projected CLS (the CLIP image feature).
        pooled_features: ``x12``, CLS after the post-layernorm.
        intermediate_features: ``x11``, CLS after the second-to-last block.
        last_hidden_state: All tokens after the last block, before the post-layernorm.
        pooler_output: ``embeddings`` again, under the name ``transformers``' image-feature-extraction
            pipeline returns with ``pool=True`` (set by :class:`~.modeling_reid_base.ReIDPreTrainedModel`'s
            forward hook, after the other fields: tuple indices are those without it).
    """

    loss: torch.Tensor | None = None
    id_loss: torch.Tensor | None = None
    triplet_loss: torch.Tensor | None = None
    i2t_loss: torch.Tensor | None = None
    embeddings: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    logits_projected: torch.Tensor | None = None
    i2t_logits: torch.Tensor | None = None
    image_features: torch.Tensor | None = None
    pooled_features: torch.Tensor | None = None
    intermediate_features: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None


@dataclass
class CLIPReIDPromptOutput(ModelOutput):
    """Output of :meth:`CLIPReIDModel.prompt_loss` (stage 1)."""

    loss: torch.Tensor | None = None
    i2t_loss: torch.Tensor | None = None
    t2i_loss: torch.Tensor | None = None
    text_features: torch.Tensor | None = None


def _checkpoint_tokenizer(name_or_path: str | os.PathLike):
    """The tokenizer stored with a CLIP checkpoint, or ``None`` if it has none.

    transformers 5 builds an empty tokenizer (special tokens only) for a folder without tokenizer
    files instead of failing, so a local folder must hold the files and any tokenizer must have
    more than the 256 byte-level base tokens to count.
    """
    if os.path.isdir(name_or_path) and not any(
        os.path.isfile(os.path.join(name_or_path, f)) for f in ("tokenizer.json", "vocab.json")
    ):
        return None
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError, TypeError):
        return None
    return tokenizer if len(tokenizer) > 256 else None


def prompt_tokenizer(clip_name_or_path, tokenizer, *, needed: bool, what: str):
    """The tokenizer that tokenises a model's prompt templates: ``tokenizer``, else the one stored
    with the CLIP checkpoint, else ``None`` when the config's built-in token ids will do
    (``needed=False``); otherwise an error naming ``what`` is to be tokenised."""
    if tokenizer is None:
        tokenizer = _checkpoint_tokenizer(clip_name_or_path)
    if tokenizer is None and needed:
        raise ValueError(
            f"no tokenizer found in {str(clip_name_or_path)!r} to tokenise {what}; pass tokenizer=... "
            "(hf_reid.tokenization.load_clip_tokenizer() gives the OpenAI CLIP tokenizer)."
        )
    return tokenizer


class CLIPReIDModel(ReIDPreTrainedModel):
    """CLIP-ReID: CLIP backbone + BNNecks + identity classifiers + identity prompt learner."""

    config_class = CLIPReIDConfig
    config: CLIPReIDConfig
    base_model_prefix = "clip_reid"

    def __init__(self, config: CLIPReIDConfig):
        super().__init__(config)
        self.backbone = ReIDCLIPBackbone(
            config.clip_config,
            config.image_size,
            config.stride_size,
            num_cameras=config.num_cameras if config.use_sie else 0,
            sie_coe=config.sie_coe,
        )
        self.head = CLIPReIDHead(self.backbone.vision_width, self.backbone.projection_dim, config.num_classes)
        self.prompt_learner = PromptLearner(
            config.num_classes,
            config.num_prompt_tokens,
            self.backbone.text_width,
            config.prompt_token_ids,
            config.prompt_context_start,
        )
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module):
        """CLIP's own modules are initialised by CLIP's ``_init_weights``; this covers the Re-ID parts
        with CLIP-ReID's initialisation."""
        if isinstance(module, CameraEmbedding):
            init.trunc_normal_(module.weight, std=0.02)
        elif isinstance(module, PromptLearner):
            init.normal_(module.context, std=0.02)
        else:
            super()._init_weights(module)

    # ------------------------------------------------------------------ construction / loading

    @classmethod
    def _config_from_clip(cls, clip, clip_name_or_path, tokenizer=None, **config_kwargs):
        """``from_clip_pretrained(..., tokenizer=None)``: the prompt template is tokenised with
        ``tokenizer``, else with the tokenizer stored in the CLIP folder, else the built-in ids of
        the default template (OpenAI CLIP vocabulary) are used."""
        config, _ = super()._config_from_clip(clip, clip_name_or_path, **config_kwargs)
        tokenizer = prompt_tokenizer(
            clip_name_or_path,
            tokenizer,
            needed=config.prompt_token_ids is None,
            what=f"prompt_template {config.prompt_template!r}",
        )
        if tokenizer is not None:
            config.set_prompt_template(tokenizer)
        return config, None

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """``PreTrainedModel.from_pretrained`` with clear errors when the requested configuration
        cannot hold the checkpoint (another number of identities, another input size, a plain
        CLIP checkpoint)."""
        if pretrained_model_name_or_path is not None and not kwargs.get("ignore_mismatched_sizes", False):
            cls._check_checkpoint_fits(pretrained_model_name_or_path, kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    @classmethod
    def _check_checkpoint_fits(cls, path, kwargs: dict) -> None:
        hub_keys = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")
        hub_kwargs = {k: kwargs[k] for k in hub_keys if k in kwargs}
        try:
            saved, _ = CLIPReIDConfig.get_config_dict(path, **hub_kwargs)
        except (OSError, ValueError):
            return  # let from_pretrained report what is missing
        if saved.get("model_type") != CLIPReIDConfig.model_type:
            if saved.get("model_type") == "clip":
                raise ValueError(
                    f"{path!r} is a plain CLIP checkpoint; start a Re-ID model from it with "
                    "CLIPReIDModel.from_clip_pretrained(path, num_classes=..., image_size=...)."
                )
            return
        stored = CLIPReIDConfig(**{k: v for k, v in saved.items() if k != "model_type"})
        requested = kwargs.get("config")
        if not isinstance(requested, CLIPReIDConfig):
            overrides = {name: kwargs[name] for name in _SHAPE_FIELDS if name in kwargs}
            if not overrides:
                return
            requested = CLIPReIDConfig(
                **{**{k: v for k, v in saved.items() if k != "model_type"}, **overrides}
            )
        have, want = _shape_signature(stored), _shape_signature(requested)
        for name in have:
            if have[name] != want[name]:
                raise ValueError(cls._mismatch_message(path, name, have[name], want[name]))

    @staticmethod
    def _mismatch_message(path, name: str, have, value) -> str:
        if name == "num_classes":
            return (
                f"checkpoint {str(path)!r} was trained with num_classes={have} identities, but "
                f"num_classes={value} was requested. Its classifiers and identity prompts have one row per "
                "identity. Load it with its own num_classes to extract features, or pass "
                "ignore_mismatched_sizes=True to keep the backbone and re-initialise the per-identity "
                "parts for training on another identity set."
            )
        return (
            f"checkpoint {str(path)!r} has {name}={have!r}, but {name}={value!r} was requested; this changes "
            f"parameter shapes. Load it with {name}={have!r}."
        )

    # ------------------------------------------------------------------ features

    @property
    def eot_position(self) -> int:
        """Position of the end-of-text token in the prompt template (where CLIP pools)."""
        ids = self.config.prompt_token_ids
        if ids is None:
            raise ValueError(
                "config.prompt_token_ids is not set; call config.set_prompt_template(tokenizer)."
            )
        return end_of_text_position(ids, self.config.clip_config.text_config.eos_token_id)

    def get_image_features(
        self, pixel_values: torch.Tensor, camids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Projected CLS feature ``xproj`` (B, proj): what stage 1 caches and compares with text."""
        return self.backbone.encode_image(pixel_values, camids).projected

    def encode_prompts(self, labels: torch.Tensor) -> torch.Tensor:
        """Text features (B, proj) of the identity prompts of ``labels``. Gradient reaches the
        prompt tokens (and the text tower only if it is trainable)."""
        prompts = self.prompt_learner(labels, self.backbone.token_embedding)
        return self.backbone.encode_text_embeddings(prompts, self.eot_position)

    @torch.no_grad()
    def compute_text_features(self, batch_size: int = 64) -> torch.Tensor:
        """Text features of all ``num_classes`` identities (num_classes, proj), for stage 2."""
        device = self.prompt_learner.context.device
        labels = torch.arange(self.config.num_classes, device=device)
        return torch.cat([self.encode_prompts(chunk) for chunk in labels.split(batch_size)], dim=0)

    def prompt_loss(self, image_features: torch.Tensor, labels: torch.Tensor) -> CLIPReIDPromptOutput:
        """Stage-1 loss ``L_i2t + L_t2i`` (SupCon, raw dot products, temperature 1) between cached
        ``image_features`` (B, proj) and the prompts of ``labels``."""
        text_features = self.encode_prompts(labels)
        i2t, t2i = image_text_supcon(image_features.to(text_features.dtype), text_features, labels)
        return CLIPReIDPromptOutput(loss=i2t + t2i, i2t_loss=i2t, t2i_loss=t2i, text_features=text_features)

    def set_trainable(self, stage: Literal["prompts", "image", "all"]) -> None:
        """Set ``requires_grad`` for a CLIP-ReID stage (without LoRA; peft manages its own).

        ``"prompts"``: only the identity prompt tokens (stage 1). ``"image"``: the vision tower,
        visual projection, SIE, BNNecks and classifiers (stage 2; text tower and prompts frozen).
        ``"all"``: everything. BNNeck biases stay frozen in every stage.
        """
        if stage not in ("prompts", "image", "all"):
            raise ValueError(f"stage must be 'prompts', 'image' or 'all', got {stage!r}.")
        self.requires_grad_(stage == "all")
        if stage == "prompts":
            self.prompt_learner.context.requires_grad_(True)
        elif stage == "image":
            self.backbone.clip.vision_model.requires_grad_(True)
            self.backbone.clip.visual_projection.requires_grad_(True)
            if self.backbone.camera_embedding is not None:
                self.backbone.camera_embedding.requires_grad_(True)
            self.head.requires_grad_(True)
        self.head.bottleneck.bias.requires_grad_(False)
        self.head.bottleneck_proj.bias.requires_grad_(False)

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        camids: torch.Tensor | None = None,
        text_features: torch.Tensor | None = None,
        return_loss: bool | None = None,
        feature_gather: Gather | None = None,
    ) -> CLIPReIDOutput:
        r"""
        Args:
            pixel_values: Images (B, 3, H, W) at ``config.image_size``, normalised by the model's
                image processor.
            labels: Identity indices (B,) in ``[0, num_classes)``; with them the loss is computed.
            camids: 0-based camera indices (B,), used by SIE (ignored without SIE).
            text_features: Frozen text features of all identities (num_classes, proj) from
                :meth:`compute_text_features`; adds the image-to-text CE (stage 2).
            return_loss: ``False`` skips the loss even with labels; ``True`` requires labels.
            feature_gather: All-gather for the triplet mining across processes (see
                :func:`~.losses.batch_hard_triplet`).
        """
        features = self.backbone.encode_image(pixel_values, camids)
        head = self.head(features.pooled, features.projected)
        i2t_logits = None
        if text_features is not None:
            if text_features.shape != (self.config.num_classes, features.projected.shape[1]):
                raise ValueError(
                    f"text_features must be (num_classes={self.config.num_classes}, "
                    f"{features.projected.shape[1]}), got {tuple(text_features.shape)}; compute them with "
                    "model.compute_text_features()."
                )
            i2t_logits = features.projected @ text_features.to(features.projected.dtype).t()

        if return_loss and labels is None:
            raise ValueError("return_loss=True needs labels.")
        loss = id_loss = triplet_loss = i2t_loss = None
        if labels is not None and return_loss is not False:
            self.check_labels(labels)
            id_loss, triplet_loss, loss = self.identity_losses(features, head, labels, feature_gather)
            if i2t_logits is not None:
                i2t_loss = cross_entropy_label_smooth(i2t_logits, labels, self.config.label_smoothing)
                loss = loss + self.config.i2t_loss_weight * i2t_loss

        return CLIPReIDOutput(
            loss=loss,
            id_loss=id_loss,
            triplet_loss=triplet_loss,
            i2t_loss=i2t_loss,
            embeddings=self._retrieval_embeddings(features, head),
            logits=head.logits,
            logits_projected=head.logits_projected,
            i2t_logits=i2t_logits,
            image_features=features.projected,
            pooled_features=features.pooled,
            intermediate_features=features.intermediate,
            last_hidden_state=features.last_hidden_state,
        )


__all__ = ["CLIPReIDModel", "CLIPReIDOutput", "CLIPReIDPromptOutput"]
