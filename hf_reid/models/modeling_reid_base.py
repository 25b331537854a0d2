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
* :meth:`get_text_embeddings` and :meth:`get_joint_image_embeddings`: text-based person search
  in the image–text space (refused, with the reason, where no caption loss trained that space:
  :attr:`has_trained_caption_path`);
* :meth:`check_labels` and :meth:`identity_losses`: the label check and the ID + triplet loss
  composition of CLIP-ReID's stage 2, which every method trains its image encoder with;
* :meth:`get_image_processor` and :meth:`save_pretrained`: a saved model folder always holds the
  model's image processor (``preprocessor_config.json``), so ``AutoImageProcessor`` and
  ``pipeline("image-feature-extraction", model=folder)`` load from it;
* ``pooler_output``: every forward output also carries the retrieval embedding under the name
  ``transformers``' feature-extraction pipeline reads (``pipeline(..., pool=True)``).

This file travels with every saved model, so it imports siblings relatively and nothing from
hf_reid.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, NamedTuple

import torch
from transformers import CLIPModel, PreTrainedModel
from transformers.utils import ModelOutput

from .clip_backbone import ReIDImageFeatures
from .configuration_reid_base import ReIDConfig
from .image_processing_reid import build_reid_image_processor
from .losses import Gather, batch_hard_triplet, cross_entropy_label_smooth
from .reid_heads import ReIDHeadOutput, init_reid_head_module, retrieval_embeddings

_HUB_KWARGS = ("repo_id", "commit_message", "commit_description", "private", "revision", "create_pr", "tags")
"""``save_pretrained(push_to_hub=True)`` options that go to ``push_to_hub``."""


def add_pooler_output(module: torch.nn.Module, args: Any, output: Any) -> Any:
    """Forward hook of every hf_reid model: ``output.pooler_output = output.embeddings`` (the
    retrieval embedding), appended after the fields already set, so tuple indices stay as they
    were. ``transformers``' image-feature-extraction pipeline returns it with ``pool=True``."""
    if (
        isinstance(output, ModelOutput)
        and output.get("embeddings") is not None
        and "pooler_output" not in output
    ):
        output["pooler_output"] = output["embeddings"]
    return output


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

    def __init__(self, config: ReIDConfig, *inputs: Any, **kwargs: Any):
        super().__init__(config, *inputs, **kwargs)
        self.register_forward_hook(add_pooler_output)

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

    # ------------------------------------------------------------------ text-based person search

    @property
    def has_trained_caption_path(self) -> bool:
        """Whether a caption loss trained this model's image–text space, so that
        :meth:`get_text_embeddings` can rank images by a description. ``False`` here: CLIP-ReID,
        CLIP-FGDI and ITKM learn identity prompts, never captions; their text tower is the starting
        CLIP's, frozen, while Re-ID training moves the image tower away from it (on SynthPeds their
        caption-to-image R@1 falls well below the starting CLIP's zero-shot one; docs/SEARCH.md).
        ReText overrides it (its image–text matching loss trains the space)."""
        return False

    def get_joint_image_embeddings(
        self, pixel_values: torch.Tensor, camids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """L2-normalised image features (B, proj) in the space of :meth:`get_text_embeddings`: the
        normalised projected CLS ``xproj`` (``get_image_features``), the feature the image–text
        losses compare with text, not the Re-ID embedding of :meth:`get_image_embeddings`.
        ``camids`` are used by models with SIE only."""
        kwargs = {}
        if camids is not None and getattr(self.backbone, "camera_embedding", None) is not None:
            kwargs["camids"] = camids
        return torch.nn.functional.normalize(self.get_image_features(pixel_values, **kwargs), dim=-1)

    def get_text_embeddings(
        self,
        texts: str | Sequence[str] | None = None,
        *,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        tokenizer: Any = None,
        allow_untrained: bool = False,
    ) -> torch.Tensor:
        """L2-normalised caption embeddings (B, proj), compared with
        :meth:`get_joint_image_embeddings` by dot product (= cosine): text-based person search.

        Give ``texts`` with the model's ``tokenizer`` (the one saved with it), or ``input_ids``
        (and ``attention_mask``). A model without a trained caption path
        (:attr:`has_trained_caption_path` false: CLIP-ReID, CLIP-FGDI, ITKM) raises ``ValueError``
        saying so; ``allow_untrained=True`` returns its frozen CLIP text tower's embeddings anyway,
        with a warning (measured on SynthPeds in docs/SEARCH.md: above chance, below the starting
        CLIP's zero-shot). A method overrides the parts that differ: :meth:`_untrained_caption_path`
        (the refusal) and :meth:`_text_encoder` (the encoder and its longest input; ReText's own).
        """
        if not self.has_trained_caption_path:
            self._untrained_caption_path(allow_untrained)
        max_length, encode = self._text_encoder()
        input_ids, attention_mask = text_inputs(
            texts, input_ids, attention_mask, tokenizer, max_length, self.device
        )
        return encode(input_ids, attention_mask)

    def _untrained_caption_path(self, allow_untrained: bool) -> None:
        """What :meth:`get_text_embeddings` does for a model without a trained caption path: raise
        ``ValueError`` with the reason, or (``allow_untrained``) warn that the frozen CLIP text
        tower's embeddings come anyway. A method whose text tower is not the frozen CLIP one
        overrides it (ReText)."""
        name = type(self).__name__
        if not allow_untrained:
            raise ValueError(
                f"{name} has no trained caption path: its training learns identity prompts, never "
                "captions, and keeps the starting CLIP's text tower frozen while the image tower moves "
                "away from it, so caption scores rank worse than the starting CLIP's zero-shot ones "
                "(docs/SEARCH.md). Search by text with a ReText model or with the starting CLIP "
                "(e.g. `hf-reid search synthclip ...`), or pass allow_untrained=True to use this "
                "model's frozen text tower anyway."
            )
        warnings.warn(
            f"{name}: text embeddings from the frozen CLIP text tower, which no caption loss aligned "
            "with this model's image tower (allow_untrained=True); expect worse ranking than the "
            "starting CLIP zero-shot.",
            UserWarning,
            stacklevel=3,
        )

    def _text_encoder(self) -> tuple[int, Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]]:
        """The text encoder of :meth:`get_text_embeddings`: its longest input (tokens) and
        ``(input_ids, attention_mask) -> L2-normalised (B, proj)``. Here the CLIP text tower's
        projected feature (``ValueError`` for a model built without it); a method with a text
        encoder of its own overrides it (ReText)."""
        clip = self.backbone.clip
        if getattr(clip, "text_model", None) is None:
            raise ValueError(
                f"{type(self).__name__} has no text tower (built with text_tower=False): it cannot embed text."
            )

        def encode(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
            output = clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
            features = output if isinstance(output, torch.Tensor) else output.pooler_output
            return torch.nn.functional.normalize(features, dim=-1)

        return clip.config.text_config.max_position_embeddings, encode

    # ------------------------------------------------------------------ image processor, saving

    def get_image_processor(self) -> Any:
        """The image processor of this model (what ``save_pretrained`` writes next to the weights):
        convert to RGB, resize to ``config.image_size`` (H, W; bicubic, no crop), rescale to
        [0, 1] and normalise with the Re-ID mean = std = 0.5 that every hf_reid recipe trains
        with (a ``CLIPImageProcessor``; see :func:`~.image_processing_reid.build_reid_image_processor`).

        A model that standardises each image itself (CLIP-FGDI's ``input_norm="instance"``) does
        that inside its forward: the processor does not, and its per-channel ``(x - mean) / std``
        is removed again by the model's per-image, per-channel standardisation, so only the resize
        and the [0, 1] rescale matter for such a model."""
        return build_reid_image_processor(tuple(self.config.image_size))

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        is_main_process: bool = True,
        state_dict: dict | None = None,
        push_to_hub: bool = False,
        **kwargs: Any,
    ) -> None:
        """``PreTrainedModel.save_pretrained``, plus the model's image processor
        (``preprocessor_config.json``, :meth:`get_image_processor`), so that the folder loads with
        ``AutoImageProcessor.from_pretrained(folder)`` and ``pipeline("image-feature-extraction",
        model=folder)``. It replaces a ``preprocessor_config.json`` already in the folder: save a
        custom processor after the model. With ``push_to_hub=True`` the processor is uploaded with
        the model (one commit, through :meth:`push_to_hub`)."""
        hub_kwargs = {key: kwargs.pop(key) for key in _HUB_KWARGS if key in kwargs}
        super().save_pretrained(
            save_directory, is_main_process=is_main_process, state_dict=state_dict, **kwargs
        )
        if not is_main_process:
            return
        self.get_image_processor().save_pretrained(save_directory)
        if push_to_hub:
            repo_id = hub_kwargs.pop("repo_id", None) or os.path.basename(os.path.normpath(save_directory))
            self.push_to_hub(repo_id, token=kwargs.get("token"), **hub_kwargs)

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


def text_inputs(
    texts: str | Sequence[str] | None,
    input_ids: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    tokenizer: Any,
    max_length: int,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(input_ids, attention_mask)`` for :meth:`ReIDPreTrainedModel.get_text_embeddings`: ``texts``
    tokenised with ``tokenizer`` (padded, truncated to ``max_length``), or the given ids, on ``device``."""
    if (texts is None) == (input_ids is None):
        raise ValueError("give either texts (with their tokenizer) or input_ids, not both or neither.")
    if texts is not None:
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError("texts must be a non-empty string or list of strings.")
        if tokenizer is None:
            raise ValueError(
                "texts need the model's tokenizer: pass tokenizer=AutoTokenizer.from_pretrained(model folder) "
                "(or input_ids instead of texts)."
            )
        tokens = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        input_ids, attention_mask = tokens["input_ids"], tokens.get("attention_mask")
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be (batch, length), got {tuple(input_ids.shape)}.")
    if device is not None:
        input_ids = input_ids.to(device)
        attention_mask = attention_mask.to(device) if attention_mask is not None else None
    return input_ids, attention_mask


__all__ = ["IdentityLosses", "ReIDPreTrainedModel", "text_inputs"]
