"""Re-ID data: builders for the real dataset layouts, the SynthPeds benchmark, samplers,
transforms and collators. Every split follows :data:`hf_reid.data.features.REID_FEATURES`."""

from .features import COLUMNS, MODALITIES, NO_CLOTHES_ID, REID_FEATURES

__all__ = ["COLUMNS", "MODALITIES", "NO_CLOTHES_ID", "REID_FEATURES"]

# --- builders (hf_reid/data/builders.py, layouts.py) ---
# --- synthetic (hf_reid/data/synthetic/) ---
# --- sampling and transforms (samplers.py, transforms.py, collate.py) ---
