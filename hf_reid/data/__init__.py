"""Re-ID data: builders for the real dataset layouts, the SynthPeds benchmark, samplers,
transforms and collators. Every split follows :data:`hf_reid.data.features.REID_FEATURES`."""

from .features import COLUMNS, MODALITIES, NO_CLOTHES_ID, REID_FEATURES

__all__ = ["COLUMNS", "MODALITIES", "NO_CLOTHES_ID", "REID_FEATURES"]

# --- builders (hf_reid/data/layouts/, loading.py, export.py) ---
from .export import push_reid_dataset, reid_dataset_card, save_reid_dataset
from .layouts import SYSU_MM01_CAMERA_GROUPS, ReidBuilder, ReidBuilderConfig, ReidDataError
from .loading import (
    get_reid_layout,
    load_reid_dataset,
    load_synthpeds_domains,
    register_reid_layout,
    reid_layout_names,
    reid_layout_options,
)
from .protocols import NO_CAMERAS, STANDARD, EvalProtocol

__all__ += [
    "NO_CAMERAS",
    "STANDARD",
    "SYSU_MM01_CAMERA_GROUPS",
    "EvalProtocol",
    "ReidBuilder",
    "ReidBuilderConfig",
    "ReidDataError",
    "get_reid_layout",
    "load_reid_dataset",
    "load_synthpeds_domains",
    "push_reid_dataset",
    "register_reid_layout",
    "reid_dataset_card",
    "reid_layout_names",
    "reid_layout_options",
    "save_reid_dataset",
]
# --- synthetic (hf_reid/data/synthetic/) ---
from .synthetic import SynthPedsSummary, generate_synthpeds  # noqa: E402

__all__ += ["SynthPedsSummary", "generate_synthpeds"]
# --- sampling and transforms (samplers.py, transforms.py, collate.py) ---
from .collate import ReidCollator, decode_image  # noqa: E402
from .labels import concatenate_sources, domain_index, relabel  # noqa: E402
from .samplers import MixedPKSampler, PKSampler  # noqa: E402
from .text import CaptionCollator, CaptionStatistics, caption_statistics  # noqa: E402
from .transforms import ReidTestTransform, ReidTrainTransform, ReidTransformConfig  # noqa: E402

__all__ += [
    "CaptionCollator",
    "CaptionStatistics",
    "MixedPKSampler",
    "PKSampler",
    "ReidCollator",
    "ReidTestTransform",
    "ReidTrainTransform",
    "ReidTransformConfig",
    "caption_statistics",
    "concatenate_sources",
    "decode_image",
    "domain_index",
    "relabel",
]
