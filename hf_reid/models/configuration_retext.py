"""Configuration of the ReText model (Mamedov et al., 2026) on top of ``transformers.CLIPModel``.

ReText trains one image encoder on two kinds of data at once: labelled multi-camera Re-ID images
(identity and triplet losses, as CLIP-ReID's stage 2 without prompts) and single-camera images
with captions (identity-aware image-text matching, a structure-preserving loss against a momentum
image encoder, and text-guided reconstruction of masked patches). Every number that changes what
the model computes is a typed field here, validated at construction: a wrong type raises a
``StrictDataclassError`` and a wrong value a ``ValueError``, both naming the field. Training
hyper-parameters (learning rates, epochs, batch mixture) belong to the recipe config.
"""

from typing import Any, ClassVar

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .clip_backbone import patch_grid
from .configuration_reid_base import ReIDConfig

_FIELDS_IN_ERRORS = "ReTextConfig"

RECONSTRUCTION_HEAD_REQUIRED = ("in_channels", "out_channels", "patch_size", "caption_channels")
"""Keys of ``reconstruction_head`` fixed by the backbone (checked, not free to choose)."""


def default_reconstruction_head(
    vision_width: int, patch_size: int, num_channels: int, text_width: int, grid_height: int
) -> dict[str, Any]:
    """A small ``PixArtTransformer2DModel`` config for the reconstruction head, sized from the
    backbone: one token per patch of the Re-ID grid (``patch_size=1``; the input channels are the
    vision width), ``num_channels * p * p`` outputs per token (the pixels of its patch), 4 blocks
    of width ``64 * max(1, vision_width // 128)`` (384 for ViT-B/16, 64 for SynthCLIP; MAE's
    decoder is likewise much narrower than its encoder), cross-attending to the text tokens."""
    heads = max(1, vision_width // 128)
    return {
        "num_attention_heads": heads,
        "attention_head_dim": 64,
        "num_layers": 4,
        "in_channels": vision_width,
        "out_channels": num_channels * patch_size * patch_size,
        "patch_size": 1,
        "sample_size": grid_height,
        "interpolation_scale": 1,
        "cross_attention_dim": heads * 64,
        "caption_channels": text_width,
        "norm_num_groups": 1,
        "use_additional_conditions": False,
    }


@strict
class ReTextConfig(ReIDConfig):
    r"""Configuration of :class:`ReTextModel`: the shared Re-ID fields of :class:`ReIDConfig` (CLIP,
    input grid, the multi-camera identity heads, ID + triplet losses; documented there) and
    ReText's own. ``num_classes`` counts the multi-camera identities only: the captioned ones need
    no classifier.

    Args:
        text_config (`PreTrainedConfig` or `dict`, *optional*):
            Config of another text encoder, any ``AutoModel`` (a dict needs its ``model_type``,
            default ``"bert"``), e.g. ``bert-base-uncased`` as in the paper. ``None`` (default)
            uses CLIP's own text tower and text projection.
        momentum (`float`, defaults to 0.995):
            EMA coefficient ``m`` of the momentum image encoder: ``xi <- m xi + (1 - m) theta``
            after every optimizer step (``ReTextModel.momentum_update``).
        matching_loss_weight (`float`, defaults to 1.0):
            Weight of the identity-aware matching loss (``0`` switches it off).
        matching_temperature (`float`, defaults to 0.02):
            Temperature of the cosine similarities of the matching loss (IRRA's 1/50).
        structure_loss_weight (`float`, defaults to 1.0):
            Weight of the structure-preserving loss (``0`` switches it off and the momentum
            encoder is not run).
        structure_temperature (`float`, defaults to 0.1):
            Temperature of the intra-modal similarities of the structure-preserving loss.
        reconstruction_loss_weight (`float`, defaults to 1.0):
            Weight of the masked-patch reconstruction loss (``0`` switches it off and the
            reconstruction head is not run).
        mask_ratio (`float`, defaults to 0.75):
            Fraction of the patches of each captioned image hidden from the encoder (MAE's
            default); in (0, 1).
        reconstruction_head (`dict`, *optional*):
            Config of the ``diffusers.PixArtTransformer2DModel`` that reconstructs the masked
            patches. Missing keys come from :func:`default_reconstruction_head` (built from the
            backbone sizes); ``in_channels``, ``out_channels``, ``patch_size`` and
            ``caption_channels`` are fixed by the backbone and checked.
        max_text_length (`int`, defaults to 77):
            Longest tokenised caption (the tokenizer truncates to it); at most the text encoder's
            ``max_position_embeddings``.
    """

    model_type = "retext"
    sub_configs_defaults: ClassVar[dict[str, SubConfigSpec]] = {
        **ReIDConfig.sub_configs_defaults,
        "text_config": SubConfigSpec(AutoConfig, model_type="bert", optional=True),
    }
    loss_weight_fields: ClassVar[tuple[str, ...]] = (
        "id_loss_weight",
        "triplet_loss_weight",
        "matching_loss_weight",
        "structure_loss_weight",
        "reconstruction_loss_weight",
    )

    text_config: dict | PreTrainedConfig | None = None
    momentum: float | int = 0.995
    matching_loss_weight: float | int = 1.0
    matching_temperature: float | int = 0.02
    structure_loss_weight: float | int = 1.0
    structure_temperature: float | int = 0.1
    reconstruction_loss_weight: float | int = 1.0
    mask_ratio: float | int = 0.75
    reconstruction_head: dict | None = None
    max_text_length: int = 77

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.reconstruction_head = self._complete_reconstruction_head(self.reconstruction_head)

    @property
    def text_width(self) -> int:
        """Hidden size of the text encoder (its token states feed the reconstruction head)."""
        text = self.text_config if self.text_config is not None else self.clip_config.text_config
        return text.hidden_size

    @property
    def grid(self) -> tuple[int, int]:
        """Rows and columns of the patch grid the vision tower sees."""
        patch = self.clip_config.vision_config.patch_size
        return patch_grid(self.image_size, patch, self.stride_size or (patch, patch))

    def _check_values(self) -> None:
        super()._check_values()
        if self.text_config is not None and hasattr(self.text_config, "vision_config"):
            raise ValueError(
                f"{_FIELDS_IN_ERRORS}.text_config is a {type(self.text_config).__name__} (an image-text model); "
                "it must be a text encoder's config. Leave it None to use CLIP's own text tower."
            )
        if not 0 <= self.momentum <= 1:
            raise ValueError(f"{_FIELDS_IN_ERRORS}.momentum must be in [0, 1], got {self.momentum}.")
        for name in ("matching_temperature", "structure_temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{_FIELDS_IN_ERRORS}.{name} must be > 0, got {getattr(self, name)}.")
        if not 0 < self.mask_ratio < 1:
            raise ValueError(
                f"{_FIELDS_IN_ERRORS}.mask_ratio must be in (0, 1) (some patches hidden, some visible), got "
                f"{self.mask_ratio}."
            )
        if self.grid[0] * self.grid[1] < 2:
            raise ValueError(
                f"{_FIELDS_IN_ERRORS}.image_size {self.image_size} gives a single patch: nothing to mask."
            )
        text = self.text_config if self.text_config is not None else self.clip_config.text_config
        limit = getattr(text, "max_position_embeddings", None)
        if self.max_text_length < 1 or (limit is not None and self.max_text_length > limit):
            raise ValueError(
                f"{_FIELDS_IN_ERRORS}.max_text_length must be in [1, {limit}] (the text encoder's "
                f"max_position_embeddings), got {self.max_text_length}."
            )

    def _complete_reconstruction_head(self, head: dict | None) -> dict[str, Any]:
        vision = self.clip_config.vision_config
        default = default_reconstruction_head(
            vision.hidden_size, vision.patch_size, vision.num_channels, self.text_width, self.grid[0]
        )
        head = {**default, **(head or {})}
        for key in RECONSTRUCTION_HEAD_REQUIRED:
            if head[key] != default[key]:
                raise ValueError(
                    f"{_FIELDS_IN_ERRORS}.reconstruction_head[{key!r}] must be {default[key]} for this backbone "
                    f"(vision width {vision.hidden_size}, {vision.patch_size}-pixel patches, text width "
                    f"{self.text_width}), got {head[key]!r}; leave it out to have it filled in."
                )
        inner = head["num_attention_heads"] * head["attention_head_dim"]
        if head["cross_attention_dim"] != inner:
            raise ValueError(
                f"{_FIELDS_IN_ERRORS}.reconstruction_head['cross_attention_dim'] must equal num_attention_heads * "
                f"attention_head_dim = {inner} (the text tokens are projected to the head's width), got "
                f"{head['cross_attention_dim']!r}."
            )
        return head


__all__ = ["ReTextConfig", "default_reconstruction_head"]
