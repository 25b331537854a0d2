"""The OpenAI CLIP tokenizer, shipped with hf_reid for offline use.

``hf_reid/assets/clip_tokenizer`` holds the genuine OpenAI CLIP BPE tokenizer (49,408 tokens,
MIT licence, see ``hf_reid/assets/README.md``), the one every OpenAI CLIP checkpoint uses, so
prompts tokenise exactly as with ``openai/clip-vit-base-patch16`` without any download.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from transformers import AutoTokenizer, CLIPTokenizer

logger = logging.getLogger(__name__)

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


def load_tokenizer(name_or_path: str | os.PathLike):
    """The tokenizer saved with a checkpoint, else the OpenAI CLIP tokenizer shipped with hf_reid.

    transformers 5 builds an empty tokenizer (the 256 byte-level tokens only) for a folder without
    tokenizer files instead of failing, so a folder must hold the files and the tokenizer must have
    more than 256 tokens to count.
    """
    name_or_path = str(name_or_path)
    has_files = not os.path.isdir(name_or_path) or any(
        os.path.isfile(os.path.join(name_or_path, f)) for f in ("tokenizer.json", "vocab.json")
    )
    if has_files:
        try:
            tokenizer = AutoTokenizer.from_pretrained(name_or_path)
            if len(tokenizer) > 256:
                return tokenizer
        except (OSError, ValueError, TypeError):
            pass
    logger.info("No tokenizer in %s; using the OpenAI CLIP tokenizer shipped with hf_reid.", name_or_path)
    return load_clip_tokenizer()


__all__ = ["CLIP_TOKENIZER_DIR", "load_clip_tokenizer", "load_tokenizer"]
