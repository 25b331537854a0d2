"""SynthCLIP: the tiny CLIP shipped with hf_reid, pretrained on SynthPeds image–caption pairs.

It is the CPU stand-in for ``openai/clip-vit-base-patch16`` in every ``*_synthpeds.yaml`` config
(``model.clip_name_or_path: synthclip``). It is a standard ``CLIPModel`` folder (fp16 weights,
loaded as float32), so it also loads with ``CLIPModel.from_pretrained(SYNTHCLIP_DIR)`` and
through ``CLIPReIDModel.from_clip_pretrained(SYNTHCLIP_DIR, ...)`` like any CLIP checkpoint.
``make synthclip`` re-trains it with ``recipes/pretrain_clip.py``; its model card (README.md in
the folder) records the recipe, seed, data and zero-shot results.
"""

from __future__ import annotations

from pathlib import Path

from transformers import CLIPModel

SYNTHCLIP_NAME = "synthclip"
"""The special value of ``model.clip_name_or_path`` that selects the shipped SynthCLIP."""

SYNTHCLIP_DIR = Path(__file__).resolve().parent / "assets" / "synthclip"
"""Folder of the shipped SynthCLIP (config, fp16 safetensors, tokenizer, image processor, card)."""


def synthclip_path() -> str:
    """The shipped SynthCLIP folder; a clear error if it is missing from this installation."""
    if not (SYNTHCLIP_DIR / "config.json").is_file():
        raise FileNotFoundError(
            f"SynthCLIP is not in {SYNTHCLIP_DIR}: re-train it with `make synthclip`, or point "
            "model.clip_name_or_path at another CLIP checkpoint (e.g. openai/clip-vit-base-patch16)."
        )
    return str(SYNTHCLIP_DIR)


def resolve_clip_path(name_or_path: str) -> str:
    """``"synthclip"`` -> the shipped SynthCLIP folder; any other Hub id or folder unchanged.

    This is how every ``*_synthpeds.yaml`` config names its starting CLIP
    (``model.clip_name_or_path: synthclip``) wherever hf_reid is installed.
    """
    return synthclip_path() if name_or_path == SYNTHCLIP_NAME else name_or_path


def load_synthclip(**kwargs) -> CLIPModel:
    """``CLIPModel.from_pretrained`` on the shipped SynthCLIP (float32, eval mode)."""
    return CLIPModel.from_pretrained(synthclip_path(), **kwargs).eval()


__all__ = ["SYNTHCLIP_DIR", "SYNTHCLIP_NAME", "load_synthclip", "resolve_clip_path", "synthclip_path"]
