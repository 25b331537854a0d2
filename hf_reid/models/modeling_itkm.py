"""ITKM (Pang et al., AAAI 2026) as a ``transformers`` model: CLIP-ReID without identity labels,
over several scenarios at once.

:class:`ITKMModel` is a :class:`~.modeling_clip_reid.CLIPReIDModel` whose identity prompts are
prompts per pseudo-label (resized with :meth:`ITKMModel.resize_identities` when the clusters
change) and whose camera embedding is a scenario embedding (``camids`` carry the scenario index,
at training and at test time). It adds the losses of the three stages (docs/METHODS.md §3.3, our
reconstruction where the paper is silent):

* stage I and III, :meth:`ITKMModel.forward` with ``memory``: the cluster-memory contrastive loss
  ``CE(f · Mᵀ / τ, y)`` over the clusters of the image's own scenario (``memory_scenarios``), on
  the L2-normalised projected feature ``f`` (``xproj``, the joint image-text space);
* stage II, :meth:`ITKMModel.prompt_loss` (CLIP-ReID's ``L_i2t + L_t2i``) plus
  :meth:`ITKMModel.separation_loss`, the multi-scenario separation hinge between text features
  of pseudo-labels of different scenarios;
* stage III, ``text_features`` in the forward: a cross-entropy of the cosine similarities between
  ``f`` and the text features of the image's scenario.

The identity classifiers of the CLIP-ReID head are not used (there are no identities) and stay
frozen; the retrieval embedding is ``cat[x12, xproj]`` before the BNNecks, L2-normalised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F
from transformers.utils import ModelOutput

from .configuration_itkm import ITKMConfig
from .modeling_clip_reid import CLIPReIDModel
from .prompt_learner import PromptLearner
from .reid_heads import CLIPReIDHead


@dataclass
class ITKMOutput(ModelOutput):
    """Output of :class:`ITKMModel`.

    Args:
        loss: Weighted total loss (when ``labels`` and a memory or text features are given).
        memory_loss: Cluster-memory contrastive loss (unweighted).
        i2t_loss: Image-to-text cross-entropy against the scenario's text features (unweighted).
        embeddings: Retrieval feature ``cat[x12, xproj]`` (B, width + proj).
        image_features: ``xproj``, the projected CLS (not normalised).
        memory_logits: ``normalize(xproj) · Mᵀ / τ`` with other scenarios' clusters at ``-inf``.
    """

    loss: torch.Tensor | None = None
    memory_loss: torch.Tensor | None = None
    i2t_loss: torch.Tensor | None = None
    embeddings: torch.Tensor | None = None
    image_features: torch.Tensor | None = None
    memory_logits: torch.Tensor | None = None


def scenario_logits(
    features: torch.Tensor,
    bank: torch.Tensor,
    temperature: float,
    scenario_ids: torch.Tensor | None,
    bank_scenarios: torch.Tensor | None,
) -> torch.Tensor:
    """Cosine similarities of normalised ``features`` (B, D) to the rows of ``bank`` (C, D) over
    ``temperature``; rows of other scenarios than each image's are ``-inf`` (never a negative)."""
    logits = F.normalize(features, dim=1) @ F.normalize(bank.to(features.dtype), dim=1).t() / temperature
    if scenario_ids is not None and bank_scenarios is not None:
        other = bank_scenarios.to(scenario_ids.device)[None, :] != scenario_ids[:, None]
        logits = logits.masked_fill(other, float("-inf"))
    return logits


class ITKMModel(CLIPReIDModel):
    """ITKM: CLIP with a scenario embedding, pseudo-label prompts and a cluster memory."""

    config_class = ITKMConfig
    config: ITKMConfig
    base_model_prefix = "itkm"

    def resize_identities(self, num_labels: int) -> None:
        """Make room for ``num_labels`` pseudo-labels: fresh prompt tokens (N(0, 0.02)) and head
        classifiers, ``config.num_classes`` updated. Called once the clusters are known."""
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}.")
        device = self.prompt_learner.context.device
        self.config.num_classes = int(num_labels)
        self.prompt_learner = PromptLearner(
            num_labels,
            self.config.num_prompt_tokens,
            self.backbone.text_width,
            self.config.prompt_token_ids,
            self.config.prompt_context_start,
        ).to(device)
        torch.nn.init.normal_(self.prompt_learner.context, std=0.02)
        head = CLIPReIDHead(self.backbone.vision_width, self.backbone.projection_dim, num_labels).to(device)
        head.bottleneck.load_state_dict(self.head.bottleneck.state_dict())
        head.bottleneck_proj.load_state_dict(self.head.bottleneck_proj.state_dict())
        self.head = head

    def set_trainable(self, stage: str) -> None:
        """``"prompts"``: the pseudo-label prompt tokens only (stage II). ``"image"``: the vision
        tower, projection and scenario embedding (stages I and III); the identity classifiers and
        BNNecks, unused without identities, stay frozen. ``"all"``: everything."""
        super().set_trainable(stage)
        if stage == "image":
            self.head.requires_grad_(False)

    def separation_loss(self, text_features: torch.Tensor, scenario_ids: torch.Tensor) -> torch.Tensor:
        """Multi-scenario separation hinge: the mean of ``max(0, cos(t_i, t_j) − m)`` over pairs of
        text features of pseudo-labels of *different* scenarios (0 when the batch has one)."""
        unit = F.normalize(text_features, dim=1)
        cosine = unit @ unit.t()
        across = scenario_ids[:, None] != scenario_ids[None, :]
        if not bool(across.any()):
            return cosine.sum() * 0.0
        return F.relu(cosine[across] - self.config.separation_margin).mean()

    def forward(
        self,
        pixel_values: torch.Tensor,
        camids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        memory_scenarios: torch.Tensor | None = None,
        text_features: torch.Tensor | None = None,
        text_scenarios: torch.Tensor | None = None,
        scenarios: torch.Tensor | None = None,
    ) -> ITKMOutput:
        r"""
        Args:
            pixel_values: Images (B, 3, H, W) at ``config.image_size``.
            camids: Scenario index of every image (B,), for the scenario embedding.
            labels: Pseudo-labels (B,) in ``[0, C)`` (rows of ``memory`` / ``text_features``).
            memory: Cluster memory (C, proj), one normalised centroid per pseudo-label.
            memory_scenarios: Scenario of every memory row (C,): an image competes only with its
                own scenario's clusters.
            text_features: Text features of the pseudo-labels (C, proj) for the stage-III
                image-to-text loss (with ``text_scenarios`` (C,) likewise).
            scenarios: Scenario of every image (B,) for the losses' "own scenario only" rule;
                defaults to ``camids``. Give it when the scenario embedding is off (``camids``
                ``None``): the rule must not depend on whether the embedding is used.
        """
        cfg = self.config
        features = self.backbone.encode_image(pixel_values, camids)
        scenarios = camids if scenarios is None else scenarios
        out: dict[str, torch.Tensor] = {
            "embeddings": self._retrieval_embeddings(features, None),
            "image_features": features.projected,
        }
        weighted = []
        if labels is not None and memory is not None:
            out["memory_logits"] = scenario_logits(
                features.projected, memory, cfg.memory_temperature, scenarios, memory_scenarios
            )
            out["memory_loss"] = F.cross_entropy(out["memory_logits"], labels)
            weighted.append(cfg.memory_loss_weight * out["memory_loss"])
        if labels is not None and text_features is not None:
            logits = scenario_logits(
                features.projected, text_features, cfg.text_temperature, scenarios, text_scenarios
            )
            out["i2t_loss"] = F.cross_entropy(logits, labels)
            weighted.append(cfg.i2t_loss_weight * out["i2t_loss"])
        if weighted:
            out["loss"] = sum(weighted)
        return ITKMOutput(**out)


__all__ = ["ITKMModel", "ITKMOutput", "scenario_logits"]
