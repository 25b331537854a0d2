"""CLIP-FGDI (Zhao, Qi, Geng, IEEE TIFS 2025) as a ``transformers`` model.

``CLIPFGDIModel`` holds a CLIP (vision tower on a native Re-ID grid, no SIE), CLIP-ReID's two
BNNecks and identity classifiers, per-identity prompt tokens, one learnable token per source
domain and two domain classifiers. Written here from the method's description (``docs/CLIP_FGDI.md``
and ``docs/METHODS.md`` §2 of the project); the authors' code has no licence and none of it is
used. It serves the four training stages (``recipes/clip_fgdi.py`` runs them):

* stage I (adapt the image encoder): ``model(pixel_values, labels=...)``:
  ``w_id [CE(x12) + CE(xproj)] + w_tri [Tri(x11) + Tri(x12) + Tri(xproj)]`` with the soft-margin
  triplet (``triplet_margin=None``);
* stage II-a (domain-invariant identity prompts, on cached image features ``v``):
  :meth:`CLIPFGDIModel.invariant_prompt_loss`: ``L_i2t(v, t_inv) + L_t2i(t_inv, v)
  + omega CE(D_inv(GRL_eps(t_inv)), d)``. The gradient-reversal layer turns the classifier's
  gradient around (times ``eps``) on its way to the identity tokens, so they learn to *fool* the
  domain classifier while it learns to tell the domains apart;
* stage II-b (domain-relevant prompts): :meth:`CLIPFGDIModel.relevant_prompt_loss`:
  ``L_i2t(v, t_rel) + L_t2i(t_rel, v) + omega CE(D_rel(sg(t_rel)), d)``, where ``t_rel`` is the text
  feature of "A photo of a X X X X person from X dataset." with the identity's tokens *detached*
  and the domain's token learnable: only the domain tokens and ``D_rel`` learn;
* stage III (the final image encoder, text side frozen): ``model(pixel_values, labels=...,
  text_features=T_inv, relevant_text_features=T_rel)``: the stage-I losses
  ``+ (1 - beta) CE_ls(v T_inv^T, y) + beta L_apn(v, t_inv, t_rel)``, the guidance loss
  (:func:`guidance_loss`) pulling ``v`` towards its identity's invariant prompt and away from its
  relevant one (``apn_sign="paper"``) or the opposite (``"code"``, as the released code computes it).

Image features are raw (no L2 normalisation, no logit scale) in every loss, as in CLIP-ReID. With
``input_norm="instance"`` the model standardises each image and channel itself before the vision
tower, so a saved model gives the code's input from its image processor's output (see
:class:`~.configuration_clip_fgdi.CLIPFGDIConfig`). ``model(pixel_values).embeddings`` (or
:meth:`get_image_embeddings`) is the retrieval feature ``cat[x12, xproj]``, raw by default.
This file and its siblings are copied next to the weights by ``save_pretrained``, so a saved
model loads with ``AutoModel.from_pretrained(folder, trust_remote_code=True)`` without hf_reid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F
from transformers import initialization as init
from transformers.utils import ModelOutput

from .clip_backbone import ReIDCLIPBackbone, ReIDImageFeatures, end_of_text_position
from .configuration_clip_fgdi import CLIPFGDIConfig
from .losses import Gather, cross_entropy_label_smooth, image_text_supcon
from .modeling_clip_reid import CLIPReIDOutput, prompt_tokenizer
from .modeling_reid_base import ReIDPreTrainedModel
from .prompt_learner import PromptLearner
from .reid_heads import CLIPReIDHead

INSTANCE_NORM_EPS = 1e-5
"""``eps`` of the per-image instance normalisation (``nn.InstanceNorm2d``'s default, the code's)."""

STAGES = ("image", "invariant_prompts", "domain_prompts", "all")
"""What :meth:`CLIPFGDIModel.set_trainable` accepts."""


# ------------------------------------------------------------------------------------------------
# Gradient reversal and the guidance loss
# ------------------------------------------------------------------------------------------------
class GradientReversal(torch.autograd.Function):
    """Identity in the forward pass; the backward pass multiplies the gradient by ``-scale``
    (Ganin & Lempitsky, 2015). Use :func:`reverse_gradient`."""

    @staticmethod
    def forward(ctx, inputs: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = float(scale)
        return inputs.view_as(inputs)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad_output, None


def reverse_gradient(inputs: torch.Tensor, scale: float) -> torch.Tensor:
    """``inputs`` unchanged, but the gradient flowing back through it is ``-scale`` times the
    gradient it receives: what follows learns to minimise a loss, what precedes to maximise it."""
    return GradientReversal.apply(inputs, scale)


def guidance_loss(
    image_features: torch.Tensor,
    invariant_text: torch.Tensor,
    relevant_text: torch.Tensor,
    sign: Literal["paper", "code"] = "paper",
) -> torch.Tensor:
    """CLIP-FGDI's bidirectional guidance ``L_apn``, averaged over the batch.

    With ``a = cos(v, t_inv)`` (the image and its identity's domain-invariant prompt) and
    ``b = cos(v, t_rel)`` (its domain-relevant prompt), ``"paper"`` gives ``softplus(b - a)``:
    minimising it raises ``a`` and lowers ``b``, i.e. pulls the image feature towards the
    invariant prompt and pushes it from the relevant one, as the paper describes. ``"code"``
    gives ``softplus(a - b)``, what the released code computes (its ``cosine_dist`` returns a
    similarity that is then used as a distance), which pulls the other way.
    """
    if image_features.shape != invariant_text.shape or image_features.shape != relevant_text.shape:
        raise ValueError(
            f"guidance_loss needs image, invariant and relevant features of one shape (B, D), got "
            f"{tuple(image_features.shape)}, {tuple(invariant_text.shape)} and {tuple(relevant_text.shape)}."
        )
    if sign not in ("paper", "code"):
        raise ValueError(f"guidance_loss: sign must be 'paper' or 'code', got {sign!r}.")
    pull = F.cosine_similarity(image_features, invariant_text.to(image_features.dtype), dim=1)
    push = F.cosine_similarity(image_features, relevant_text.to(image_features.dtype), dim=1)
    gap = push - pull if sign == "paper" else pull - push
    return F.softplus(gap).mean()


# ------------------------------------------------------------------------------------------------
# Modules
# ------------------------------------------------------------------------------------------------
class DomainClassifier(nn.Module):
    """``Linear(proj, hidden) -> BatchNorm1d -> ReLU -> Linear(hidden, num_domains)`` on text
    features; returns logits (the code's log-softmax before its cross-entropy changes nothing:
    ``log_softmax`` is idempotent)."""

    def __init__(self, in_features: int, hidden_size: int, num_domains: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_size)
        self.norm = nn.BatchNorm1d(hidden_size)
        self.fc2 = nn.Linear(hidden_size, num_domains)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.norm(self.fc1(features))))


class DomainPromptLearner(nn.Module):
    """The domain-relevant prompts: the identity tokens given (detached by the caller) and
    ``num_tokens`` learnable tokens per source domain, in the domain template.

    Args:
        num_domains: Rows of ``context``.
        num_tokens: Learnable tokens per domain.
        embed_dim: Width of the text tower's token embedding.
        token_ids: The domain template tokenised (start/end tokens included), or ``None``.
        identity_start: Index of the first identity placeholder in ``token_ids``.
        num_identity_tokens: Identity tokens per prompt.
        domain_start: Index of the first domain placeholder in ``token_ids``.
    """

    def __init__(
        self,
        num_domains: int,
        num_tokens: int,
        embed_dim: int,
        token_ids: list[int] | None,
        identity_start: int | None,
        num_identity_tokens: int,
        domain_start: int | None,
    ):
        super().__init__()
        self.num_domains = num_domains
        self.num_tokens = num_tokens
        self.token_ids = list(token_ids) if token_ids is not None else None
        self.identity_start = identity_start
        self.num_identity_tokens = num_identity_tokens
        self.domain_start = domain_start
        # The code's ``dmctx``: initialised N(0, 0.02) by the model's _init_weights.
        self.context = nn.Parameter(torch.empty(num_domains, num_tokens, embed_dim))

    def forward(
        self, identity_context: torch.Tensor, domains: torch.Tensor, token_embedding: nn.Embedding
    ) -> torch.Tensor:
        """Prompt embeddings (B, template length, embed_dim) from the identity tokens
        ``identity_context`` (B, num_identity_tokens, embed_dim) and the ``domains`` (B,)."""
        if self.token_ids is None or self.identity_start is None or self.domain_start is None:
            raise ValueError(
                "the domain prompt template has no token ids (config.domain_prompt_token_ids is None). "
                "Tokenise it with the model's tokenizer: config.set_prompt_templates(tokenizer)."
            )
        domains = domains.long()
        if domains.shape != identity_context.shape[:1]:
            raise ValueError(
                f"domains must be ({identity_context.shape[0]},), one per prompt, got {tuple(domains.shape)}."
            )
        if domains.numel() and (int(domains.min()) < 0 or int(domains.max()) >= self.num_domains):
            raise ValueError(
                f"domain labels must be in [0, {self.num_domains}) (config.num_domains); got values in "
                f"[{int(domains.min())}, {int(domains.max())}]."
            )
        ids = torch.tensor(self.token_ids, device=token_embedding.weight.device)
        template = token_embedding(ids).detach()
        batch = identity_context.shape[0]
        start, end = self.identity_start, self.identity_start + self.num_identity_tokens
        domain_end = self.domain_start + self.num_tokens
        pieces = [
            template[:start].expand(batch, -1, -1),
            identity_context.to(template.dtype),
            template[end : self.domain_start].expand(batch, -1, -1),
            self.context[domains.to(self.context.device)].to(template.dtype),
            template[domain_end:].expand(batch, -1, -1),
        ]
        return torch.cat(pieces, dim=1)


# ------------------------------------------------------------------------------------------------
# Outputs
# ------------------------------------------------------------------------------------------------
@dataclass
class CLIPFGDIOutput(CLIPReIDOutput):
    """Output of :class:`CLIPFGDIModel`: the fields of :class:`~.modeling_clip_reid.CLIPReIDOutput`
    (``i2t_loss`` is the label-smoothed CE of ``xproj @ text_features.T`` against the invariant
    text features, stage III) and the guidance loss.

    Args:
        apn_loss: The guidance loss :func:`guidance_loss` (unweighted; with ``relevant_text_features``).
    """

    apn_loss: torch.Tensor | None = None


@dataclass
class CLIPFGDIPromptOutput(ModelOutput):
    """Output of :meth:`CLIPFGDIModel.invariant_prompt_loss` (stage II-a) and
    :meth:`CLIPFGDIModel.relevant_prompt_loss` (stage II-b).

    Args:
        loss: ``i2t_loss + t2i_loss + domain_loss_weight * domain_loss``.
        i2t_loss: SupCon image-to-text loss (raw dot products, temperature 1).
        t2i_loss: SupCon text-to-image loss.
        domain_loss: Cross-entropy of the stage's domain classifier (``None`` when
            ``domain_loss_weight`` is 0: then the classifier does not run).
        domain_logits: That classifier's logits (B, num_domains).
        text_features: The prompts' text features (B, proj).
    """

    loss: torch.Tensor | None = None
    i2t_loss: torch.Tensor | None = None
    t2i_loss: torch.Tensor | None = None
    domain_loss: torch.Tensor | None = None
    domain_logits: torch.Tensor | None = None
    text_features: torch.Tensor | None = None


# ------------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------------
class CLIPFGDIModel(ReIDPreTrainedModel):
    """CLIP-FGDI: CLIP backbone + BNNecks + identity classifiers + domain-invariant identity
    prompts + domain-relevant prompts (domain tokens) + two domain classifiers."""

    config_class = CLIPFGDIConfig
    config: CLIPFGDIConfig
    base_model_prefix = "clip_fgdi"

    def __init__(self, config: CLIPFGDIConfig):
        super().__init__(config)
        self.backbone = ReIDCLIPBackbone(config.clip_config, config.image_size, config.stride_size)
        self.head = CLIPReIDHead(self.backbone.vision_width, self.backbone.projection_dim, config.num_classes)
        self.prompt_learner = PromptLearner(
            config.num_classes,
            config.num_prompt_tokens,
            self.backbone.text_width,
            config.prompt_token_ids,
            config.prompt_context_start,
        )
        self.domain_prompt = DomainPromptLearner(
            config.num_domains,
            config.num_domain_tokens,
            self.backbone.text_width,
            config.domain_prompt_token_ids,
            config.prompt_context_start,
            config.num_prompt_tokens,
            config.domain_context_start,
        )
        projection = self.backbone.projection_dim
        hidden = config.domain_classifier_hidden_size
        self.invariant_domain_classifier = DomainClassifier(projection, hidden, config.num_domains)
        self.relevant_domain_classifier = DomainClassifier(projection, hidden, config.num_domains)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module):
        """CLIP's modules keep CLIP's initialisation; the Re-ID heads get CLIP-ReID's; prompt and
        domain tokens N(0, 0.02) (the code's); the domain classifiers PyTorch's defaults."""
        if isinstance(module, (PromptLearner, DomainPromptLearner)):
            init.normal_(module.context, std=0.02)
        elif isinstance(module, DomainClassifier):
            for linear in (module.fc1, module.fc2):
                init.kaiming_uniform_(linear.weight, a=math.sqrt(5))
                bound = 1.0 / math.sqrt(linear.in_features)
                init.uniform_(linear.bias, -bound, bound)
            init.ones_(module.norm.weight)
            init.zeros_(module.norm.bias)
            init.zeros_(module.norm.running_mean)
            init.ones_(module.norm.running_var)
            init.zeros_(module.norm.num_batches_tracked)
        else:
            super()._init_weights(module)

    @classmethod
    def _config_from_clip(cls, clip, clip_name_or_path, tokenizer=None, **config_kwargs):
        """``from_clip_pretrained(..., tokenizer=None)``: both templates are tokenised with
        ``tokenizer``, else with the tokenizer stored in the CLIP folder, else the built-in ids of
        the default templates (OpenAI CLIP vocabulary) are used."""
        config, _ = super()._config_from_clip(clip, clip_name_or_path, **config_kwargs)
        tokenizer = prompt_tokenizer(
            clip_name_or_path, tokenizer, needed=config.prompt_token_ids is None, what="the prompt templates"
        )
        if tokenizer is not None:
            config.set_prompt_templates(tokenizer)
        return config, None

    # ------------------------------------------------------------------ images

    def normalize_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The vision tower's input: ``pixel_values`` standardised per image and channel
        (``input_norm="instance"``), or unchanged (``"mean_std"``)."""
        if self.config.input_norm == "instance":
            if pixel_values.ndim != 4:
                raise ValueError(
                    f"pixel_values must have shape (batch, channels, height, width), got {tuple(pixel_values.shape)}."
                )
            return F.instance_norm(pixel_values, eps=INSTANCE_NORM_EPS)
        return pixel_values

    def encode_image(self, pixel_values: torch.Tensor) -> ReIDImageFeatures:
        """The three CLS features (x11, x12, xproj) of ``pixel_values`` after the input normalisation."""
        return self.backbone.encode_image(self.normalize_pixels(pixel_values))

    def get_image_embeddings(
        self, pixel_values: torch.Tensor, camids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Retrieval embeddings (B, width + proj): ``cat[x12, xproj]`` before or after the BNNecks,
        normalised as the config says (raw by default). ``camids`` are ignored (no SIE)."""
        return self._retrieval_embeddings(self.encode_image(pixel_values), None)

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected CLS feature ``xproj`` (B, proj): what stage II caches and compares with text."""
        return self.encode_image(pixel_values).projected

    # ------------------------------------------------------------------ text

    def _eot(self, ids: list[int] | None, field: str) -> int:
        if ids is None:
            raise ValueError(f"config.{field} is not set; call config.set_prompt_templates(tokenizer).")
        return end_of_text_position(ids, self.config.clip_config.text_config.eos_token_id)

    def encode_invariant_prompts(self, labels: torch.Tensor) -> torch.Tensor:
        """Text features (B, proj) of the domain-invariant prompts of identity ``labels``; gradient
        reaches the identity tokens. Each distinct identity of the batch is encoded once."""
        unique, inverse = torch.unique(labels.long(), return_inverse=True)
        prompts = self.prompt_learner(unique, self.backbone.token_embedding)
        eot = self._eot(self.config.prompt_token_ids, "prompt_token_ids")
        return self.backbone.encode_text_embeddings(prompts, eot)[inverse]

    def encode_relevant_prompts(self, labels: torch.Tensor, domains: torch.Tensor) -> torch.Tensor:
        """Text features (B, proj) of the domain-relevant prompts of identity ``labels`` in
        ``domains``. The identity tokens are detached: gradient reaches the domain tokens only.
        Each distinct (identity, domain) pair of the batch is encoded once."""
        labels, domains = labels.long(), torch.as_tensor(domains, device=labels.device).long()
        self.check_labels(labels)
        if domains.shape != labels.shape:
            raise ValueError(
                f"domains must be ({labels.shape[0]},), one per label, got {tuple(domains.shape)}."
            )
        pairs, inverse = torch.unique(torch.stack([labels, domains], dim=1), dim=0, return_inverse=True)
        identity = self.prompt_learner.context[pairs[:, 0].to(self.prompt_learner.context.device)].detach()
        prompts = self.domain_prompt(identity, pairs[:, 1], self.backbone.token_embedding)
        eot = self._eot(self.config.domain_prompt_token_ids, "domain_prompt_token_ids")
        return self.backbone.encode_text_embeddings(prompts, eot)[inverse]

    @torch.no_grad()
    def compute_text_features(
        self, domains: torch.Tensor | None = None, batch_size: int = 64
    ) -> torch.Tensor:
        """Text features of all ``num_classes`` identities (num_classes, proj), for stage III:
        the domain-invariant prompts, or with ``domains`` (num_classes,), the source domain of
        each identity, the domain-relevant ones."""
        device = self.prompt_learner.context.device
        labels = torch.arange(self.config.num_classes, device=device)
        if domains is None:
            return torch.cat([self.encode_invariant_prompts(chunk) for chunk in labels.split(batch_size)])
        domains = torch.as_tensor(domains, device=device)
        if domains.shape != labels.shape:
            raise ValueError(
                f"domains must give the domain of every identity, ({self.config.num_classes},), got "
                f"{tuple(domains.shape)}."
            )
        return torch.cat(
            [
                self.encode_relevant_prompts(chunk, domain_chunk)
                for chunk, domain_chunk in zip(labels.split(batch_size), domains.split(batch_size))
            ]
        )

    # ------------------------------------------------------------------ stage II losses

    def _prompt_output(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        labels: torch.Tensor,
        domains: torch.Tensor,
        classifier: DomainClassifier,
        classifier_input: torch.Tensor,
    ) -> CLIPFGDIPromptOutput:
        if image_features.shape != text_features.shape:
            raise ValueError(
                f"image_features must be (batch, {text_features.shape[1]}) like the prompts' text features, "
                f"got {tuple(image_features.shape)}."
            )
        i2t, t2i = image_text_supcon(image_features.to(text_features.dtype), text_features, labels)
        loss = i2t + t2i
        domain_loss = domain_logits = None
        if self.config.domain_loss_weight > 0:
            domain_logits = classifier(classifier_input)
            domain_loss = F.cross_entropy(domain_logits, domains.long().to(domain_logits.device))
            loss = loss + self.config.domain_loss_weight * domain_loss
        return CLIPFGDIPromptOutput(
            loss=loss,
            i2t_loss=i2t,
            t2i_loss=t2i,
            domain_loss=domain_loss,
            domain_logits=domain_logits,
            text_features=text_features,
        )

    def invariant_prompt_loss(
        self, image_features: torch.Tensor, labels: torch.Tensor, domains: torch.Tensor
    ) -> CLIPFGDIPromptOutput:
        """Stage II-a: ``L_i2t + L_t2i`` between cached ``image_features`` (B, proj) and the
        invariant prompts of ``labels``, plus ``omega CE(D_inv(GRL(t_inv)), domains)``: the domain
        classifier learns the images' source ``domains`` from the prompts' text features while the
        reversed gradient (times ``grl_lambda``) makes the identity tokens hide them."""
        text = self.encode_invariant_prompts(labels)
        return self._prompt_output(
            image_features,
            text,
            labels,
            domains,
            self.invariant_domain_classifier,
            reverse_gradient(text, self.config.grl_lambda),
        )

    def relevant_prompt_loss(
        self, image_features: torch.Tensor, labels: torch.Tensor, domains: torch.Tensor
    ) -> CLIPFGDIPromptOutput:
        """Stage II-b: ``L_i2t + L_t2i`` between cached ``image_features`` and the relevant prompts
        of ``labels`` in ``domains`` (identity tokens detached, so the domain tokens learn), plus
        ``omega CE(D_rel(sg(t_rel)), domains)``, which trains only the relevant domain classifier."""
        text = self.encode_relevant_prompts(labels, domains)
        return self._prompt_output(
            image_features, text, labels, domains, self.relevant_domain_classifier, text.detach()
        )

    # ------------------------------------------------------------------ training stages

    def set_trainable(self, stage: Literal["image", "invariant_prompts", "domain_prompts", "all"]) -> None:
        """Set ``requires_grad`` for a CLIP-FGDI stage (without LoRA; peft manages its own).

        ``"image"`` (stages I and III): the vision tower, visual projection, BNNecks and
        classifiers. ``"invariant_prompts"`` (II-a): the identity tokens and the invariant domain
        classifier. ``"domain_prompts"`` (II-b): the domain tokens and the relevant domain
        classifier. ``"all"``: everything but CLIP's unused logit scale. BNNeck biases stay frozen.
        """
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {list(STAGES)}, got {stage!r}.")
        self.requires_grad_(stage == "all")
        if stage == "image":
            self.backbone.clip.vision_model.requires_grad_(True)
            self.backbone.clip.visual_projection.requires_grad_(True)
            self.head.requires_grad_(True)
        elif stage == "invariant_prompts":
            self.prompt_learner.requires_grad_(True)
            self.invariant_domain_classifier.requires_grad_(True)
        elif stage == "domain_prompts":
            self.domain_prompt.requires_grad_(True)
            self.relevant_domain_classifier.requires_grad_(True)
        self.backbone.clip.logit_scale.requires_grad_(False)
        self.head.bottleneck.bias.requires_grad_(False)
        self.head.bottleneck_proj.bias.requires_grad_(False)

    # ------------------------------------------------------------------ forward

    def _check_text_table(self, table: torch.Tensor, name: str, dim: int) -> None:
        if table.shape != (self.config.num_classes, dim):
            raise ValueError(
                f"{name} must be (num_classes={self.config.num_classes}, {dim}), one row per identity, got "
                f"{tuple(table.shape)}; compute it with model.compute_text_features("
                f"{'domains=...' if name.startswith('relevant') else ''})."
            )

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        camids: torch.Tensor | None = None,
        text_features: torch.Tensor | None = None,
        relevant_text_features: torch.Tensor | None = None,
        return_loss: bool | None = None,
        feature_gather: Gather | None = None,
    ) -> CLIPFGDIOutput:
        r"""
        Args:
            pixel_values: Images (B, 3, H, W) at ``config.image_size`` from the model's image
                processor (standardised per image inside the model with ``input_norm="instance"``).
            labels: Identity indices (B,) in ``[0, num_classes)``; with them the loss is computed.
            camids: Accepted for the common Re-ID interface and ignored (CLIP-FGDI has no SIE).
            text_features: Frozen invariant text features of all identities (num_classes, proj)
                from :meth:`compute_text_features`; adds ``(1 - apn_weight)`` times the
                image-to-text CE (stage III).
            relevant_text_features: Frozen relevant text features of all identities, each in its
                own source domain (num_classes, proj), from ``compute_text_features(domains=...)``;
                with ``text_features``, adds ``apn_weight`` times the guidance loss. Required when
                ``text_features`` are given and ``apn_weight > 0``.
            return_loss: ``False`` skips the loss even with labels; ``True`` requires labels.
            feature_gather: All-gather for the triplet mining across processes (see
                :func:`~.losses.batch_hard_triplet`).
        """
        features = self.encode_image(pixel_values)
        head = self.head(features.pooled, features.projected)
        projected = features.projected
        dim = projected.shape[1]
        i2t_logits = None
        if text_features is not None:
            self._check_text_table(text_features, "text_features", dim)
            i2t_logits = projected @ text_features.to(projected.dtype).t()
        if relevant_text_features is not None:
            if text_features is None:
                raise ValueError(
                    "relevant_text_features need text_features (the invariant ones): the guidance loss "
                    "compares the image feature with both prompts of its identity."
                )
            self._check_text_table(relevant_text_features, "relevant_text_features", dim)

        if return_loss and labels is None:
            raise ValueError("return_loss=True needs labels.")
        loss = id_loss = triplet_loss = i2t_loss = apn_loss = None
        if labels is not None and return_loss is not False:
            self.check_labels(labels, pixel_values.shape[0])
            id_loss, triplet_loss, loss = self.identity_losses(features, head, labels, feature_gather)
            beta = self.config.apn_weight
            if i2t_logits is not None:
                i2t_loss = cross_entropy_label_smooth(i2t_logits, labels, self.config.label_smoothing)
                loss = loss + (1 - beta) * i2t_loss
                if relevant_text_features is not None:
                    index = labels.long().to(text_features.device)
                    apn_loss = guidance_loss(
                        projected, text_features[index], relevant_text_features[index], self.config.apn_sign
                    )
                    if beta > 0:
                        loss = loss + beta * apn_loss
                elif beta > 0:
                    raise ValueError(
                        f"config.apn_weight={beta} > 0 needs relevant_text_features (model.compute_text_features("
                        "domains=...)) for the guidance loss; pass them, or set apn_weight=0."
                    )

        return CLIPFGDIOutput(
            loss=loss,
            id_loss=id_loss,
            triplet_loss=triplet_loss,
            i2t_loss=i2t_loss,
            apn_loss=apn_loss,
            embeddings=self._retrieval_embeddings(features, head),
            logits=head.logits,
            logits_projected=head.logits_projected,
            i2t_logits=i2t_logits,
            image_features=projected,
            pooled_features=features.pooled,
            intermediate_features=features.intermediate,
            last_hidden_state=features.last_hidden_state,
        )


__all__ = [
    "CLIPFGDIModel",
    "CLIPFGDIOutput",
    "CLIPFGDIPromptOutput",
    "DomainClassifier",
    "DomainPromptLearner",
    "GradientReversal",
    "guidance_loss",
    "reverse_gradient",
]
