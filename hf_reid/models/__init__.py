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

from .configuration_clip_reid import DEFAULT_PROMPT_TEMPLATE, CLIPReIDConfig
from .configuration_retext import ReTextConfig
from .image_processing_reid import build_reid_image_processor
from .modeling_clip_reid import CLIPReIDModel, CLIPReIDOutput, CLIPReIDPromptOutput
from .modeling_retext import ReTextModel, ReTextOutput

AutoConfig.register(CLIPReIDConfig.model_type, CLIPReIDConfig, exist_ok=True)
AutoModel.register(CLIPReIDConfig, CLIPReIDModel, exist_ok=True)
CLIPReIDConfig.register_for_auto_class()
CLIPReIDModel.register_for_auto_class("AutoModel")
AutoConfig.register(ReTextConfig.model_type, ReTextConfig, exist_ok=True)
AutoModel.register(ReTextConfig, ReTextModel, exist_ok=True)
ReTextConfig.register_for_auto_class()
ReTextModel.register_for_auto_class("AutoModel")

__all__ = [
    "DEFAULT_PROMPT_TEMPLATE",
    "CLIPReIDConfig",
    "CLIPReIDModel",
    "CLIPReIDOutput",
    "CLIPReIDPromptOutput",
    "ReTextConfig",
    "ReTextModel",
    "ReTextOutput",
    "build_reid_image_processor",
]
