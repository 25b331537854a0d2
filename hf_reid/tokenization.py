"""The OpenAI CLIP tokenizer, shipped with hf_reid for offline use.

``hf_reid/assets/clip_tokenizer`` holds the genuine OpenAI CLIP BPE tokenizer (49,408 tokens,
MIT licence, see ``hf_reid/assets/README.md``), the one every OpenAI CLIP checkpoint uses, so
prompts tokenise exactly as with ``openai/clip-vit-base-patch16`` without any download.
"""

from __future__ import annotations

from pathlib import Path

from transformers import CLIPTokenizer

CLIP_TOKENIZER_DIR = Path(__file__).resolve().parent / "assets" / "clip_tokenizer"
"""Folder of the shipped tokenizer (``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json``)."""


def load_clip_tokenizer(**kwargs) -> CLIPTokenizer:
    """Load the shipped OpenAI CLIP tokenizer; ``kwargs`` go to ``CLIPTokenizer.from_pretrained``."""
    if not (CLIP_TOKENIZER_DIR / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"the shipped CLIP tokenizer is missing from {CLIP_TOKENIZER_DIR} (tokenizer.json); "
            "reinstall hf_reid (package data hf_reid/assets/**)."
        )
    return CLIPTokenizer.from_pretrained(str(CLIP_TOKENIZER_DIR), **kwargs)


__all__ = ["CLIP_TOKENIZER_DIR", "load_clip_tokenizer"]
