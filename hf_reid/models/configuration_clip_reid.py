"""Configuration of the CLIP-ReID model (Li et al., AAAI 2023) on top of ``transformers.CLIPModel``.

Every number CLIP-ReID reads from its yacs config that changes what the model computes is a typed
field here, validated at construction: a wrong type raises a ``StrictDataclassError`` and a wrong
value a ``ValueError``, both naming the field. Training hyper-parameters (learning rates, epochs)
belong to the recipe config, not here.
"""

from typing import Any, ClassVar

from huggingface_hub.dataclasses import strict

from .configuration_reid_base import ReIDConfig

DEFAULT_PROMPT_TEMPLATE = "A photo of a X X X X person."
"""CLIP-ReID's person template; each ``X`` is one learnable token of the identity."""

DEFAULT_PROMPT_TOKEN_IDS = [49406, 320, 1125, 539, 320, 343, 343, 343, 343, 2533, 269, 49407]
"""The default template tokenised by the OpenAI CLIP tokenizer (shipped in hf_reid/assets):
``<|startoftext|> a photo of a x x x x person . <|endoftext|>`` (CLIPTokenizer lower-cases).
Stored so that a model can be built, and loaded through remote code, without a tokenizer."""

DEFAULT_PROMPT_CONTEXT_START = 5
"""Index of the first ``X`` of the default template in :data:`DEFAULT_PROMPT_TOKEN_IDS`."""


@strict
class CLIPReIDConfig(ReIDConfig):
    r"""Configuration of :class:`CLIPReIDModel`: the shared Re-ID fields of :class:`ReIDConfig`
    (CLIP, input grid, heads, ID + triplet losses; documented there) and CLIP-ReID's own.

    Args:
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
        i2t_loss_weight (`float`, defaults to 1.0):
            Weight of the image-to-text cross-entropy against all identities' text features.
    """

    model_type = "clip_reid"
    loss_weight_fields: ClassVar[tuple[str, ...]] = (
        "id_loss_weight",
        "triplet_loss_weight",
        "i2t_loss_weight",
        "sie_coe",
    )

    use_sie: bool = False
    num_cameras: int = 6
    sie_coe: float | int = 3.0
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    num_prompt_tokens: int = 4
    prompt_token_ids: list[int] | None = None
    prompt_context_start: int | None = None
    i2t_loss_weight: float | int = 1.0

    def _prepare_fields(self) -> None:
        if self.prompt_token_ids is None and self.prompt_template == DEFAULT_PROMPT_TEMPLATE:
            self.prompt_token_ids = list(DEFAULT_PROMPT_TOKEN_IDS)
            self.prompt_context_start = DEFAULT_PROMPT_CONTEXT_START

    def _check_values(self) -> None:
        super()._check_values()
        owner = type(self).__name__
        if self.use_sie and self.num_cameras < 1:
            raise ValueError(f"{owner}.num_cameras must be >= 1 when use_sie=True, got {self.num_cameras}.")
        if self.num_prompt_tokens < 1:
            raise ValueError(f"{owner}.num_prompt_tokens must be >= 1, got {self.num_prompt_tokens}.")
        self._check_prompt_ids()

    def _check_prompt_ids(self) -> None:
        ids, start, n = self.prompt_token_ids, self.prompt_context_start, self.num_prompt_tokens
        if ids is None:
            return  # set later with set_prompt_template; the prompt learner says so if it is used first
        text = self.clip_config.text_config
        where = f"{type(self).__name__}.prompt_token_ids"
        if start is None:
            raise ValueError(f"{type(self).__name__}.prompt_context_start is required with {where}.")
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
                f"{type(self).__name__}.prompt_context_start={start} leaves no room for {n} prompt tokens "
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
