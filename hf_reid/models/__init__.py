"""Models that travel to the Hub with their checkpoints.

This folder is FLAT on purpose: ``save_pretrained`` copies a model's defining file and every
sibling it reaches through relative imports, so a saved model loads with
``trust_remote_code=True`` where hf_reid is not installed. Files here import siblings
relatively (``from .reid_heads import BNNeck``) and never ``import hf_reid``.

Importing this package registers the models with the ``transformers`` Auto classes, so
``AutoModel.from_pretrained(folder)`` returns hf_reid's classes when hf_reid is imported, and
marks them for ``register_for_auto_class`` so that ``save_pretrained`` writes their code next
to the weights.
"""

from transformers import AutoConfig, AutoModel

from .configuration_clip_fgdi import CLIPFGDIConfig
from .configuration_clip_reid import DEFAULT_PROMPT_TEMPLATE, CLIPReIDConfig
from .configuration_itkm import ITKMConfig
from .configuration_reid_base import ReIDConfig
from .configuration_retext import ReTextConfig
from .image_processing_reid import build_reid_image_processor
from .modeling_clip_fgdi import CLIPFGDIModel, CLIPFGDIOutput, CLIPFGDIPromptOutput
from .modeling_clip_reid import CLIPReIDModel, CLIPReIDOutput, CLIPReIDPromptOutput
from .modeling_itkm import ITKMModel, ITKMOutput
from .modeling_reid_base import ReIDPreTrainedModel
from .modeling_retext import ReTextModel, ReTextOutput

MODELS = (
    (CLIPReIDConfig, CLIPReIDModel),
    (ReTextConfig, ReTextModel),
    (ITKMConfig, ITKMModel),
    (CLIPFGDIConfig, CLIPFGDIModel),
)
"""Every hf_reid model, registered with the Auto classes below."""

for _config_class, _model_class in MODELS:
    AutoConfig.register(_config_class.model_type, _config_class, exist_ok=True)
    AutoModel.register(_config_class, _model_class, exist_ok=True)
    _config_class.register_for_auto_class()
    _model_class.register_for_auto_class("AutoModel")

__all__ = [
    "DEFAULT_PROMPT_TEMPLATE",
    "MODELS",
    "CLIPFGDIConfig",
    "CLIPFGDIModel",
    "CLIPFGDIOutput",
    "CLIPFGDIPromptOutput",
    "CLIPReIDConfig",
    "CLIPReIDModel",
    "CLIPReIDOutput",
    "CLIPReIDPromptOutput",
    "ITKMConfig",
    "ITKMModel",
    "ITKMOutput",
    "ReIDConfig",
    "ReIDPreTrainedModel",
    "ReTextConfig",
    "ReTextModel",
    "ReTextOutput",
    "build_reid_image_processor",
]
