"""Configuration of the CLIP-ReID model (Li et al., AAAI 2023) on top of ``transformers.CLIPModel``.

Every number CLIP-ReID reads from its yacs config that changes what the model computes is a typed
field here, validated at construction: a wrong type raises a ``StrictDataclassError`` and a wrong
value a ``ValueError``, both naming the field. Training hyper-parameters (learning rates, epochs)
belong to the recipe config, not here.
"""

import difflib
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from huggingface_hub.dataclasses import strict
from transformers import CLIPConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

DEFAULT_PROMPT_TEMPLATE = "A photo of a X X X X person."
"""CLIP-ReID's person template; each ``X`` is one learnable token of the identity."""

DEFAULT_PROMPT_TOKEN_IDS = [49406, 320, 1125, 539, 320, 343, 343, 343, 343, 2533, 269, 49407]
"""The default template tokenised by the OpenAI CLIP tokenizer (shipped in hf_reid/assets):
``<|startoftext|> a photo of a x x x x person . <|endoftext|>`` (CLIPTokenizer lower-cases).
Stored so that a model can be built, and loaded through remote code, without a tokenizer."""

DEFAULT_PROMPT_CONTEXT_START = 5
"""Index of the first ``X`` of the default template in :data:`DEFAULT_PROMPT_TOKEN_IDS`."""

_FIELDS_IN_ERRORS = "CLIPReIDConfig"


def _pair(name: str, value: Any, owner: str = _FIELDS_IN_ERRORS) -> tuple[int, int]:
    """``value`` as an (H, W) pair of positive ints; ``int`` means a square pair. Errors name
    ``owner.name``."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (
        not isinstance(value, Sequence)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ValueError(f"{owner}.{name} must be two positive ints (height, width), got {value!r}.")
    return int(value[0]), int(value[1])


def _reject_near_misses(owner: str, kwargs: dict[str, Any], fields: Sequence[str]) -> None:
    """Extra keyword arguments are kept as attributes (transformers convention, needed for
    backward compatibility); but one that is a near-miss of a field is almost surely a typo
    that would silently be ignored, so it is rejected."""
    for key in kwargs:
        close = difflib.get_close_matches(key, fields, n=1, cutoff=0.85)
        if close:
            raise ValueError(f"{owner} has no field {key!r}; did you mean {close[0]!r}?")


def _check_vision_geometry(
    owner: str, clip_config: CLIPConfig, image_size: tuple[int, int], stride_size: tuple[int, int] | None
) -> None:
    """The input size and patch stride must fit the vision tower's patch size."""
    patch = clip_config.vision_config.patch_size
    if not isinstance(patch, int):
        raise ValueError(f"{owner}.clip_config.vision_config.patch_size must be an int, got {patch!r}.")
    stride = stride_size or (patch, patch)
    if any(s > patch for s in stride):
        raise ValueError(
            f"{owner}.stride_size {stride} is larger than the patch size {patch}: pixels "
            "between patches would be skipped. Use a stride <= the patch size."
        )
    if any(s < patch for s in image_size):
        raise ValueError(f"{owner}.image_size {image_size} is smaller than one {patch}x{patch} patch.")


@strict
class CLIPReIDConfig(PreTrainedConfig):
    r"""Configuration of :class:`CLIPReIDModel`.

    Args:
        clip_config (`CLIPConfig` or `dict`, *optional*):
            The CLIP the model is built on. Defaults to a ViT-B/16 shaped CLIP (random weights; use
            ``CLIPReIDModel.from_clip_pretrained`` to start from a pretrained one).
        image_size (`tuple[int, int]`, defaults to `(256, 128)`):
            Input height and width. The vision tower runs natively on this size: its position
            table holds one entry per patch of this grid, resized once from the pretrained square
            table (see ``pos_interpolation``).
        stride_size (`int` or `tuple[int, int]`, *optional*):
            Stride of the patch embedding. ``None`` means the patch size (no overlap); CLIP-ReID's
            overlapping-patches variant (OLP) uses 12 with 16-pixel patches (a 21x10 grid at 256x128).
        pos_interpolation (`"bicubic"` or `"bilinear"`, defaults to `"bicubic"`):
            How the pretrained square position table is resized to the Re-ID grid, once, when
            starting from a CLIP checkpoint. The original CLIP-ReID code uses bilinear; bicubic is
            what ``transformers`` uses for ``interpolate_pos_encoding``. Set ``"bilinear"`` to
            reproduce the original exactly.
        num_classes (`int`, defaults to 751):
            Number of training identities: rows of both classifiers and of the prompt learner.
        use_sie (`bool`, defaults to `False`):
            Side Information Embedding: add ``sie_coe * E[camid]`` to the CLS token before the
            position embedding.
        num_cameras (`int`, defaults to 6):
            Rows of the SIE table (used only with ``use_sie``).
        sie_coe (`float`, defaults to 3.0):
            SIE coefficient (CLIP-ReID's config default; its README's SIE+OLP run uses 1.0).
        prompt_template (`str`):
            Text template with ``num_prompt_tokens`` consecutive placeholder words.
        num_prompt_tokens (`int`, defaults to 4):
            Learnable tokens per identity.
        prompt_token_ids (`list[int]`, *optional*):
            The template tokenised with the model's tokenizer (start and end tokens included).
            Filled in for the default template; for another template call
            :meth:`set_prompt_template` with the tokenizer.
        prompt_context_start (`int`, *optional*):
            Index in ``prompt_token_ids`` of the first placeholder token.
        neck_feat (`"before"` or `"after"`, defaults to `"before"`):
            Whether the retrieval embedding is taken before or after the BNNecks.
        feature_norm (`bool`, defaults to `True`):
            Whether ``embeddings`` are L2-normalised (CLIP-ReID evaluates normalised features,
            CLIP-FGDI raw ones).
        id_loss_weight (`float`, defaults to 0.25):
            Weight of the summed identity cross-entropies of the two classifiers.
        triplet_loss_weight (`float`, defaults to 1.0):
            Weight of the summed batch-hard triplet losses on the three image features.
        i2t_loss_weight (`float`, defaults to 1.0):
            Weight of the image-to-text cross-entropy against all identities' text features.
        triplet_margin (`float`, *optional*, defaults to 0.3):
            Triplet margin; ``None`` selects the soft-margin triplet ``log(1 + exp(d_ap - d_an))``.
        label_smoothing (`float`, defaults to 0.1):
            Label smoothing of the identity and image-to-text cross-entropies.
    """

    model_type = "clip_reid"
    sub_configs_defaults: ClassVar[dict[str, SubConfigSpec]] = {
        "clip_config": SubConfigSpec(CLIPConfig, init_kwargs={"vision_config": {"patch_size": 16}})
    }

    clip_config: dict | CLIPConfig | None = None
    image_size: list[int] | tuple[int, ...] = (256, 128)
    stride_size: int | list[int] | tuple[int, ...] | None = None
    pos_interpolation: Literal["bicubic", "bilinear"] = "bicubic"
    num_classes: int = 751
    use_sie: bool = False
    num_cameras: int = 6
    sie_coe: float | int = 3.0
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    num_prompt_tokens: int = 4
    prompt_token_ids: list[int] | None = None
    prompt_context_start: int | None = None
    neck_feat: Literal["before", "after"] = "before"
    feature_norm: bool = True
    id_loss_weight: float | int = 0.25
    triplet_loss_weight: float | int = 1.0
    i2t_loss_weight: float | int = 1.0
    triplet_margin: float | int | None = 0.3
    label_smoothing: float | int = 0.1

    def __post_init__(self, **kwargs):
        self._reject_misspelled_fields(kwargs)
        self.image_size = _pair("image_size", self.image_size)
        if self.stride_size is not None:
            self.stride_size = _pair("stride_size", self.stride_size)
        if self.prompt_token_ids is None and self.prompt_template == DEFAULT_PROMPT_TEMPLATE:
            self.prompt_token_ids = list(DEFAULT_PROMPT_TOKEN_IDS)
            self.prompt_context_start = DEFAULT_PROMPT_CONTEXT_START
        super().__post_init__(**kwargs)
        self._check_values()

    @classmethod
    def _reject_misspelled_fields(cls, kwargs: dict[str, Any]) -> None:
        """Reject an extra keyword that is a near-miss of a field (a typo kept silently otherwise)."""
        fields = [
            "clip_config", "image_size", "stride_size", "pos_interpolation", "num_classes", "use_sie",
            "num_cameras", "sie_coe", "prompt_template", "num_prompt_tokens", "prompt_token_ids",
            "prompt_context_start", "neck_feat", "feature_norm", "id_loss_weight", "triplet_loss_weight",
            "i2t_loss_weight", "triplet_margin", "label_smoothing",
        ]  # fmt: skip
        _reject_near_misses(_FIELDS_IN_ERRORS, kwargs, fields)

    def _check_values(self) -> None:
        _check_vision_geometry(_FIELDS_IN_ERRORS, self.clip_config, self.image_size, self.stride_size)
        if self.num_classes < 1:
            raise ValueError(f"{_FIELDS_IN_ERRORS}.num_classes must be >= 1, got {self.num_classes}.")
        if self.use_sie and self.num_cameras < 1:
            raise ValueError(
                f"{_FIELDS_IN_ERRORS}.num_cameras must be >= 1 when use_sie=True, got {self.num_cameras}."
            )
        if self.num_prompt_tokens < 1:
            raise ValueError(
                f"{_FIELDS_IN_ERRORS}.num_prompt_tokens must be >= 1, got {self.num_prompt_tokens}."
            )
        for name in ("id_loss_weight", "triplet_loss_weight", "i2t_loss_weight", "sie_coe"):
            if getattr(self, name) < 0:
                raise ValueError(f"{_FIELDS_IN_ERRORS}.{name} must be >= 0, got {getattr(self, name)}.")
        if self.triplet_margin is not None and self.triplet_margin < 0:
            raise ValueError(
                f"{_FIELDS_IN_ERRORS}.triplet_margin must be >= 0 or None (soft margin), got {self.triplet_margin}."
            )
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(
                f"{_FIELDS_IN_ERRORS}.label_smoothing must be in [0, 1), got {self.label_smoothing}."
            )
        self._check_prompt_ids()

    def _check_prompt_ids(self) -> None:
        ids, start, n = self.prompt_token_ids, self.prompt_context_start, self.num_prompt_tokens
        if ids is None:
            return  # set later with set_prompt_template; the prompt learner says so if it is used first
        text = self.clip_config.text_config
        where = f"{_FIELDS_IN_ERRORS}.prompt_token_ids"
        if start is None:
            raise ValueError(f"{_FIELDS_IN_ERRORS}.prompt_context_start is required with {where}.")
        if len(ids) > text.max_position_embeddings:
            raise ValueError(
                f"{where} has {len(ids)} tokens, more than the text tower's "
                f"max_position_embeddings={text.max_position_embeddings}."
            )
        if any(not 0 <= i < text.vocab_size for i in ids):
            raise ValueError(
                f"{where} has ids outside the text vocabulary (vocab_size={text.vocab_size}); tokenise the "
                "template with the model's own tokenizer: config.set_prompt_template(tokenizer)."
            )
        if not 0 < start <= len(ids) - n - 1:
            raise ValueError(
                f"{_FIELDS_IN_ERRORS}.prompt_context_start={start} leaves no room for {n} prompt tokens "
                f"between the start token and the end of the {len(ids)}-token template."
            )
        slot = ids[start : start + n]
        if len(set(slot)) != 1 or ids[start - 1] == slot[0] or ids[start + n] == slot[0]:
            raise ValueError(
                f"{where}[{start}:{start + n}] must be a run of exactly {n} placeholder tokens, got "
                f"{ids[start - 1 : start + n + 1]} around it; num_prompt_tokens={n} must match the placeholders of "
                f"prompt_template {self.prompt_template!r}."
            )

    def set_prompt_template(
        self, tokenizer: Any, template: str | None = None, placeholder: str = "X"
    ) -> "CLIPReIDConfig":
        """Tokenise ``template`` (default: ``self.prompt_template``) with ``tokenizer`` and store
        the token ids and the position of the learnable tokens.

        The learnable tokens go where the first run of ``num_prompt_tokens`` consecutive
        ``placeholder`` words is (so a later ``X``, as in CLIP-FGDI's domain prompt, stays free).
        Returns ``self``.
        """
        template = self.prompt_template if template is None else template
        ids = list(tokenizer(template)["input_ids"])
        marker = tokenizer(placeholder, add_special_tokens=False)["input_ids"]
        if len(marker) != 1:
            raise ValueError(
                f"placeholder {placeholder!r} is {len(marker)} tokens for this tokenizer; use a word that "
                "is a single token."
            )
        n = self.num_prompt_tokens
        run = [marker[0]] * n
        starts = [i for i in range(len(ids) - n + 1) if ids[i : i + n] == run]
        if not starts:
            raise ValueError(
                f"prompt_template {template!r} has no {n} consecutive {placeholder!r} words "
                f"(num_prompt_tokens={n})."
            )
        self.prompt_template = template
        self.prompt_token_ids = ids
        self.prompt_context_start = starts[0]
        self._check_prompt_ids()
        return self


__all__ = ["DEFAULT_PROMPT_TEMPLATE", "DEFAULT_PROMPT_TOKEN_IDS", "CLIPReIDConfig"]
