"""Configuration of the CLIP-FGDI model (Zhao, Qi, Geng, IEEE TIFS 2025) on top of ``transformers.CLIPModel``.

CLIP-FGDI learns, per training identity, a *domain-invariant* prompt ("A photo of a X X X X
person.", made invariant by a domain classifier behind a gradient-reversal layer) and a
*domain-relevant* prompt (the same identity tokens, frozen, plus a learnable token of the image's
source domain: "A photo of a X X X X person from X dataset."), then fine-tunes the image encoder
towards the first and away from the second. Every number of the method that changes what the
model computes is a typed field here, validated at construction: a wrong type raises a
``StrictDataclassError`` and a wrong value a ``ValueError``, both naming the field. Training
hyper-parameters (stage epochs, learning rates) belong to the recipe config.

The defaults are the authors' code (``Qi5Lei/CLIP-FGDI``, read for its numbers only; see
``docs/CLIP_FGDI.md``): 224x224 input, per-image instance normalisation, no SIE, identity loss
weight 1, soft-margin triplet, raw (unnormalised) retrieval features, GRL factor 0.1, domain-loss
weight 0.01, guidance weight 0.1. The guidance loss's direction defaults to the paper's
(``apn_sign="paper"``); ``"code"`` reproduces the released code, which has the opposite sign.
"""

from typing import Any, ClassVar, Literal

from huggingface_hub.dataclasses import strict

from .configuration_reid_base import ReIDConfig

DEFAULT_PROMPT_TEMPLATE = "A photo of a X X X X person."
"""The domain-invariant identity template (CLIP-ReID's); each ``X`` is one learnable token."""

DEFAULT_DOMAIN_PROMPT_TEMPLATE = "A photo of a X X X X person from X dataset."
"""The domain-relevant template: the identity's four tokens, then one learnable domain token."""

DEFAULT_PROMPT_TOKEN_IDS = [49406, 320, 1125, 539, 320, 343, 343, 343, 343, 2533, 269, 49407]
""":data:`DEFAULT_PROMPT_TEMPLATE` tokenised by the OpenAI CLIP tokenizer (shipped in hf_reid/assets):
``<|startoftext|> a photo of a x x x x person . <|endoftext|>``."""

DEFAULT_DOMAIN_PROMPT_TOKEN_IDS = [
    49406, 320, 1125, 539, 320, 343, 343, 343, 343, 2533, 633, 343, 14876, 1167, 269, 49407
]  # fmt: skip
""":data:`DEFAULT_DOMAIN_PROMPT_TEMPLATE` tokenised by the OpenAI CLIP tokenizer
(``... x x x x person from x data set . <|endoftext|>``). Stored, like the invariant ids, so that
a model can be built and loaded through remote code without a tokenizer."""

DEFAULT_PROMPT_CONTEXT_START = 5
"""Index of the first identity ``X`` in both default templates."""

DEFAULT_DOMAIN_CONTEXT_START = 11
"""Index of the domain ``X`` in :data:`DEFAULT_DOMAIN_PROMPT_TOKEN_IDS`."""


def placeholder_runs(ids: list[int], marker: int, length: int, start_from: int = 0) -> list[int]:
    """Start positions (>= ``start_from``) of maximal runs of exactly ``length`` ``marker`` tokens."""
    starts = []
    for i in range(start_from, len(ids) - length + 1):
        run = ids[i : i + length] == [marker] * length
        before_free = i == 0 or ids[i - 1] != marker
        after_free = i + length == len(ids) or ids[i + length] != marker
        if run and before_free and after_free:
            starts.append(i)
    return starts


@strict
class CLIPFGDIConfig(ReIDConfig):
    r"""Configuration of :class:`CLIPFGDIModel`: the shared Re-ID fields of :class:`ReIDConfig`
    (CLIP, input grid, heads, ID + triplet losses; documented there, with CLIP-FGDI's defaults
    below) and CLIP-FGDI's own.

    Defaults that differ from :class:`ReIDConfig`'s: ``image_size`` (224, 224) (the code's; 256x128
    works as well), ``id_loss_weight`` 1.0, ``triplet_margin`` ``None`` (soft margin),
    ``feature_norm`` ``False`` (the code evaluates raw ``cat[x12, xproj]`` features, taken before
    the BNNecks).

    Args:
        num_domains (`int`, defaults to 4):
            Number of source domains (training datasets): rows of the domain-token table and
            outputs of both domain classifiers. Domain labels are ``0..num_domains-1``.
        prompt_template (`str`):
            Domain-invariant template with ``num_prompt_tokens`` consecutive placeholder words.
        domain_prompt_template (`str`):
            Domain-relevant template: the same run of ``num_prompt_tokens`` placeholders, then,
            separated by at least one word, a run of ``num_domain_tokens`` placeholders.
        num_prompt_tokens (`int`, defaults to 4):
            Learnable tokens per identity (shared by both templates).
        num_domain_tokens (`int`, defaults to 1):
            Learnable tokens per domain (the code uses 1; the paper's figure draws several).
        prompt_token_ids, domain_prompt_token_ids (`list[int]`, *optional*):
            The templates tokenised with the model's tokenizer (start and end tokens included).
            Filled in for the default templates; for others call :meth:`set_prompt_templates`.
        prompt_context_start (`int`, *optional*):
            Index of the first identity placeholder, in both token-id lists (the templates must
            agree up to there).
        domain_context_start (`int`, *optional*):
            Index of the first domain placeholder in ``domain_prompt_token_ids``.
        domain_classifier_hidden_size (`int`, defaults to 128):
            Hidden width of the domain classifiers ``Linear -> BatchNorm -> ReLU -> Linear``.
        grl_lambda (`float`, defaults to 0.1):
            The gradient-reversal factor ``epsilon``: the invariant prompts receive ``-epsilon``
            times the domain classifier's gradient. ``0`` keeps the classifier training but takes
            the adversarial signal away from the prompts (the "no gradient reversal" ablation).
        domain_loss_weight (`float`, defaults to 0.01):
            ``omega``, weight of the domain cross-entropies of stages II-a and II-b.
        apn_weight (`float`, defaults to 0.1):
            ``beta`` in stage III: ``(1 - beta) * CE(v T_inv^T) + beta * L_apn``; in [0, 1].
        apn_sign (`"paper"` or `"code"`, defaults to `"paper"`):
            Direction of the guidance loss. ``"paper"``: ``softplus(cos(v, t_rel) - cos(v, t_inv))``
            pulls the image feature towards its identity's invariant prompt and pushes it from
            the relevant one, as the paper describes. ``"code"``: the released code's
            ``softplus(cos(v, t_inv) - cos(v, t_rel))``, the opposite.
        input_norm (`"instance"` or `"mean_std"`, defaults to `"instance"`):
            ``"instance"``: the model standardises every image and channel on its own before the
            vision tower (``(x - mean) / sqrt(var + 1e-5)`` over the pixels), as the code's
            ``nn.InstanceNorm2d(3)`` on the raw [0, 1] tensor does. The image processor's
            per-channel ``(x - mean_c) / std_c`` is an affine map per channel, which instance
            normalisation removes, so the processor's output gives the code's input (up to
            ``eps``, whose relative weight changes by ``std_c**2``). ``"mean_std"``: the pixels are
            used as the processor gives them.
    """

    model_type = "clip_fgdi"
    loss_weight_fields: ClassVar[tuple[str, ...]] = (
        "id_loss_weight",
        "triplet_loss_weight",
        "domain_loss_weight",
        "grl_lambda",
    )

    image_size: list[int] | tuple[int, ...] = (224, 224)
    feature_norm: bool = False
    id_loss_weight: float | int = 1.0
    triplet_margin: float | int | None = None
    num_domains: int = 4
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    domain_prompt_template: str = DEFAULT_DOMAIN_PROMPT_TEMPLATE
    num_prompt_tokens: int = 4
    num_domain_tokens: int = 1
    prompt_token_ids: list[int] | None = None
    domain_prompt_token_ids: list[int] | None = None
    prompt_context_start: int | None = None
    domain_context_start: int | None = None
    domain_classifier_hidden_size: int = 128
    grl_lambda: float | int = 0.1
    domain_loss_weight: float | int = 0.01
    apn_weight: float | int = 0.1
    apn_sign: Literal["paper", "code"] = "paper"
    input_norm: Literal["instance", "mean_std"] = "instance"

    def _prepare_fields(self) -> None:
        defaults = (
            self.prompt_template == DEFAULT_PROMPT_TEMPLATE
            and self.domain_prompt_template == DEFAULT_DOMAIN_PROMPT_TEMPLATE
            and self.num_prompt_tokens == 4
            and self.num_domain_tokens == 1
        )
        if self.prompt_token_ids is None and self.domain_prompt_token_ids is None and defaults:
            self.prompt_token_ids = list(DEFAULT_PROMPT_TOKEN_IDS)
            self.domain_prompt_token_ids = list(DEFAULT_DOMAIN_PROMPT_TOKEN_IDS)
            self.prompt_context_start = DEFAULT_PROMPT_CONTEXT_START
            self.domain_context_start = DEFAULT_DOMAIN_CONTEXT_START

    def _check_values(self) -> None:
        super()._check_values()
        owner = type(self).__name__
        for name in (
            "num_domains",
            "num_prompt_tokens",
            "num_domain_tokens",
            "domain_classifier_hidden_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{owner}.{name} must be >= 1, got {getattr(self, name)}.")
        if not 0 <= self.apn_weight <= 1:
            raise ValueError(
                f"{owner}.apn_weight (beta) must be in [0, 1]: stage III weighs the image-to-text loss by "
                f"1 - beta and the guidance loss by beta; got {self.apn_weight}."
            )
        self._check_prompt_ids()

    # ------------------------------------------------------------------ prompt templates

    def _check_slot(self, field: str, ids: list[int], start: int, length: int) -> None:
        owner = type(self).__name__
        if not 0 < start <= len(ids) - length - 1:
            raise ValueError(
                f"{owner}.{field}={start} leaves no room for {length} placeholder token(s) between the start "
                f"token and the end of the {len(ids)}-token template."
            )
        slot = ids[start : start + length]
        if len(set(slot)) != 1 or ids[start - 1] == slot[0] or ids[start + length] == slot[0]:
            raise ValueError(
                f"{owner}.{field}={start}: the template's tokens {ids[start - 1 : start + length + 1]} there are "
                f"not a run of exactly {length} placeholder token(s); the placeholders of the templates must "
                "match num_prompt_tokens / num_domain_tokens."
            )

    def _check_prompt_ids(self) -> None:
        owner = type(self).__name__
        ids, domain_ids = self.prompt_token_ids, self.domain_prompt_token_ids
        if ids is None and domain_ids is None:
            return  # set later with set_prompt_templates; the model says so if it is used first
        if ids is None or domain_ids is None:
            missing = "prompt_token_ids" if ids is None else "domain_prompt_token_ids"
            raise ValueError(
                f"{owner}.{missing} is None while the other template is tokenised; set both with "
                "config.set_prompt_templates(tokenizer)."
            )
        for name in ("prompt_context_start", "domain_context_start"):
            if getattr(self, name) is None:
                raise ValueError(f"{owner}.{name} is required with tokenised prompt templates.")
        text = self.clip_config.text_config
        for name, values in (("prompt_token_ids", ids), ("domain_prompt_token_ids", domain_ids)):
            if len(values) > text.max_position_embeddings:
                raise ValueError(
                    f"{owner}.{name} has {len(values)} tokens, more than the text tower's "
                    f"max_position_embeddings={text.max_position_embeddings}."
                )
            if any(not 0 <= i < text.vocab_size for i in values):
                raise ValueError(
                    f"{owner}.{name} has ids outside the text vocabulary (vocab_size={text.vocab_size}); "
                    "tokenise the templates with the model's own tokenizer: config.set_prompt_templates(tokenizer)."
                )
        start, n, m = self.prompt_context_start, self.num_prompt_tokens, self.num_domain_tokens
        self._check_slot("prompt_context_start", ids, start, n)
        self._check_slot("prompt_context_start", domain_ids, start, n)
        if ids[:start] != domain_ids[:start]:
            raise ValueError(
                f"{owner}.domain_prompt_token_ids must start like prompt_token_ids up to the identity tokens "
                f"(index {start}): {domain_ids[:start]} != {ids[:start]}."
            )
        if self.domain_context_start <= start + n:
            raise ValueError(
                f"{owner}.domain_context_start={self.domain_context_start} must come after the identity tokens "
                f"(indices {start}..{start + n - 1}) and at least one word after them."
            )
        self._check_slot("domain_context_start", domain_ids, self.domain_context_start, m)
        marker, slot = ids[start], domain_ids[self.domain_context_start]
        if slot != marker:
            raise ValueError(
                f"{owner}.domain_context_start={self.domain_context_start} points at token {slot}, not at the "
                f"placeholder token {marker} of the identity tokens; call config.set_prompt_templates(tokenizer)."
            )

    def set_prompt_templates(
        self,
        tokenizer: Any,
        template: str | None = None,
        domain_template: str | None = None,
        placeholder: str = "X",
    ) -> "CLIPFGDIConfig":
        """Tokenise both templates (default: the configured ones) with ``tokenizer`` and store
        their token ids and where the learnable tokens go: the identity tokens at the first run
        of ``num_prompt_tokens`` placeholders, the domain tokens at the first later run of
        ``num_domain_tokens``. Returns ``self``."""
        template = self.prompt_template if template is None else template
        domain_template = self.domain_prompt_template if domain_template is None else domain_template
        marker = tokenizer(placeholder, add_special_tokens=False)["input_ids"]
        if len(marker) != 1:
            raise ValueError(
                f"placeholder {placeholder!r} is {len(marker)} tokens for this tokenizer; use a word that "
                "is a single token."
            )
        ids = list(tokenizer(template)["input_ids"])
        domain_ids = list(tokenizer(domain_template)["input_ids"])
        n, m = self.num_prompt_tokens, self.num_domain_tokens
        starts = placeholder_runs(ids, marker[0], n)
        domain_starts = placeholder_runs(domain_ids, marker[0], n)
        if not starts:
            raise ValueError(
                f"prompt_template {template!r} has no run of exactly {n} {placeholder!r} words (num_prompt_tokens={n})."
            )
        if not domain_starts:
            raise ValueError(
                f"domain_prompt_template {domain_template!r} has no run of exactly {n} {placeholder!r} words "
                f"(num_prompt_tokens={n})."
            )
        slots = placeholder_runs(domain_ids, marker[0], m, start_from=domain_starts[0] + n + 1)
        if not slots:
            raise ValueError(
                f"domain_prompt_template {domain_template!r} has no run of exactly {m} {placeholder!r} word(s) "
                f"after the identity tokens for the domain token(s) (num_domain_tokens={m})."
            )
        if starts[0] != domain_starts[0]:
            raise ValueError(
                f"the identity placeholders are at token {starts[0]} of prompt_template but at token "
                f"{domain_starts[0]} of domain_prompt_template; both templates must start with the same words."
            )
        self.prompt_template, self.domain_prompt_template = template, domain_template
        self.prompt_token_ids, self.domain_prompt_token_ids = ids, domain_ids
        self.prompt_context_start, self.domain_context_start = starts[0], slots[0]
        self._check_prompt_ids()
        return self


__all__ = [
    "DEFAULT_DOMAIN_PROMPT_TEMPLATE",
    "DEFAULT_DOMAIN_PROMPT_TOKEN_IDS",
    "DEFAULT_PROMPT_TEMPLATE",
    "DEFAULT_PROMPT_TOKEN_IDS",
    "CLIPFGDIConfig",
]
