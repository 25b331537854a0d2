"""Configuration of ITKM (Pang et al., AAAI 2026: image-text knowledge modeling for unsupervised
multi-scenario Re-ID) on top of CLIP-ReID's configuration.

ITKM is CLIP-ReID without identity labels: the identity prompts are prompts per *pseudo-label*
(re-made by clustering), and CLIP-ReID's camera embedding (SIE) is a *scenario* embedding — one
learnable vector per training scenario (low resolution, clothes change, visible-infrared), added
to the CLS token with coefficient ``sie_coe`` and known at train and test time. So the config is
CLIP-ReID's with ``use_sie`` on by default, ``num_cameras`` counting scenarios (``num_scenarios``
reads it), ``num_classes`` counting pseudo-labels (resized when the clusters change), and the
fields of the cluster memory and of the multi-scenario separation loss. Only the paper's abstract
could be read; docs/METHODS.md §3.3 and docs/ITKM.md say which parts are our reconstruction.
"""

from typing import ClassVar

from huggingface_hub.dataclasses import strict

from .configuration_clip_reid import CLIPReIDConfig


@strict
class ITKMConfig(CLIPReIDConfig):
    r"""Configuration of :class:`ITKMModel`: CLIP-ReID's fields (see :class:`CLIPReIDConfig`;
    ``num_cameras`` is the number of scenarios, ``sie_coe`` the scenario-embedding coefficient
    λ_s, ``num_classes`` the number of pseudo-labels) and these.

    Args:
        memory_temperature (`float`, defaults to 0.05):
            Temperature τ of the cluster-memory contrastive loss ``CE(f · Mᵀ / τ, y)`` (CCLNet 0.05).
        memory_momentum (`float`, defaults to 0.1):
            Momentum μ of the memory update ``m_y ← μ m_y + (1 − μ) f`` (CCLNet's fast update).
        memory_loss_weight (`float`, defaults to 1.0):
            Weight of the cluster-memory loss.
        text_temperature (`float`, defaults to 0.05):
            Temperature of the stage-III image-to-text CE on cosine similarities (text features are
            re-estimated from image centroids by the dynamic update, so both sides are normalised).
        separation_margin (`float`, defaults to 0.1):
            Margin m of the multi-scenario separation hinge ``max(0, cos(t_i, t_j) − m)`` between
            text features of pseudo-labels of different scenarios.
        separation_loss_weight (`float`, defaults to 1.0):
            Weight λ_sep of the separation loss in stage II (0 switches it off).
    """

    model_type = "itkm"
    loss_weight_fields: ClassVar[tuple[str, ...]] = (
        "id_loss_weight",
        "triplet_loss_weight",
        "i2t_loss_weight",
        "sie_coe",
        "memory_loss_weight",
        "separation_loss_weight",
    )

    use_sie: bool = True
    num_cameras: int = 3
    sie_coe: float | int = 1.0
    feature_norm: bool = True
    memory_temperature: float | int = 0.05
    memory_momentum: float | int = 0.1
    memory_loss_weight: float | int = 1.0
    text_temperature: float | int = 0.05
    separation_margin: float | int = 0.1
    separation_loss_weight: float | int = 1.0

    @property
    def num_scenarios(self) -> int:
        """Scenarios the model was trained on (rows of the scenario embedding; 0 without it)."""
        return self.num_cameras if self.use_sie else 0

    def _check_values(self) -> None:
        super()._check_values()
        owner = type(self).__name__
        for name in ("memory_temperature", "text_temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{owner}.{name} must be > 0, got {getattr(self, name)}.")
        if not 0 <= self.memory_momentum < 1:
            raise ValueError(f"{owner}.memory_momentum must be in [0, 1), got {self.memory_momentum}.")
        if not -1 <= self.separation_margin <= 1:
            raise ValueError(f"{owner}.separation_margin must be in [-1, 1], got {self.separation_margin}.")


__all__ = ["ITKMConfig"]
