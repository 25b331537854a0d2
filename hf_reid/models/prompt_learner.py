"""CoOp-style learnable identity prompts (CLIP-ReID's PromptLearner).

Each identity owns ``num_tokens`` learnable word embeddings that replace the placeholder words of
a fixed template ("A photo of a X X X X person."). The fixed words are looked up in CLIP's token
embedding at call time, detached, so they always match the text tower the model holds (also
right after its weights are loaded) and never receive gradient: only the identity tokens learn.
"""

from __future__ import annotations

import torch
from torch import nn


class PromptLearner(nn.Module):
    """Builds the prompt token embeddings of a batch of identities.

    Args:
        num_classes: Number of identities (rows of ``context``).
        num_tokens: Learnable tokens per identity.
        embed_dim: Width of the text tower's token embedding.
        token_ids: The template tokenised with the model's tokenizer (start/end tokens included),
            or ``None`` if not known yet (then calling the learner raises).
        context_start: Index of the first placeholder in ``token_ids``.
    """

    def __init__(
        self,
        num_classes: int,
        num_tokens: int,
        embed_dim: int,
        token_ids: list[int] | None,
        context_start: int | None,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.num_tokens = num_tokens
        self.token_ids = list(token_ids) if token_ids is not None else None
        self.context_start = context_start
        # CLIP-ReID's ``cls_ctx``: initialised N(0, 0.02) by the model's _init_weights.
        self.context = nn.Parameter(torch.empty(num_classes, num_tokens, embed_dim))

    def forward(self, labels: torch.Tensor, token_embedding: nn.Embedding) -> torch.Tensor:
        """Prompt embeddings (B, template length, embed_dim) for identity ``labels`` (B,)."""
        if self.token_ids is None or self.context_start is None:
            raise ValueError(
                "the prompt template has no token ids (config.prompt_token_ids is None). Tokenise it "
                "with the model's tokenizer: config.set_prompt_template(tokenizer), or pass "
                "tokenizer=... to CLIPReIDModel.from_clip_pretrained."
            )
        labels = labels.long()
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(
                f"identity labels must be in [0, {self.num_classes}) (config.num_classes); got values in "
                f"[{int(labels.min())}, {int(labels.max())}]. Relabel pids to 0..num_classes-1."
            )
        ids = torch.tensor(self.token_ids, device=token_embedding.weight.device)
        template = token_embedding(ids).detach()
        batch = labels.shape[0]
        start, end = self.context_start, self.context_start + self.num_tokens
        prefix = template[:start].expand(batch, -1, -1)
        suffix = template[end:].expand(batch, -1, -1)
        context = self.context[labels.to(self.context.device)].to(template.dtype)
        return torch.cat([prefix, context, suffix], dim=1)


__all__ = ["PromptLearner"]
