"""Tiny CLIP and CLIP-ReID factories for tests (random init, CPU-fast).

The tiny CLIP has the real OpenAI CLIP vocabulary (49,408 tokens) and special-token ids, so the
shipped tokenizer and the default prompt ids work exactly as with ``openai/clip-vit-base-patch16``;
everything else is small: 64-wide towers, 2 layers, 16-pixel patches, projection 32. Its
"pretrained" square vision grid is 8x8 (128x128 images), so a Re-ID model on 128x64 input
exercises the one-time resize of the position table to an 8x4 grid.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel

from hf_reid.models import CLIPReIDConfig, CLIPReIDModel, build_reid_image_processor
from hf_reid.tokenization import load_clip_tokenizer

TINY_IMAGE_SIZE = (128, 64)
"""(H, W) of the tiny Re-ID models."""

CLIP_EOS_TOKEN_ID = 49407
CLIP_BOS_TOKEN_ID = 49406


def tiny_clip_config(
    width: int = 64, layers: int = 2, projection_dim: int = 32, legacy_eos: bool = False
) -> CLIPConfig:
    """A tiny CLIP config. ``legacy_eos`` sets ``eos_token_id=2`` like the OpenAI releases (the
    text tower then pools at the largest token id rather than the first end-of-text token)."""
    text = dict(
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=4,
        vocab_size=49408,
        max_position_embeddings=77,
        bos_token_id=CLIP_BOS_TOKEN_ID,
        eos_token_id=2 if legacy_eos else CLIP_EOS_TOKEN_ID,
        pad_token_id=CLIP_EOS_TOKEN_ID,
        projection_dim=projection_dim,
    )
    vision = dict(
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=4,
        image_size=128,
        patch_size=16,
        projection_dim=projection_dim,
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)


def make_tiny_clip(seed: int = 0, **config_kwargs) -> CLIPModel:
    """A randomly initialised tiny ``CLIPModel`` (deterministic for a given ``seed``)."""
    torch.manual_seed(seed)
    return CLIPModel(tiny_clip_config(**config_kwargs)).eval()


def save_tiny_clip(folder: str | Path, seed: int = 0, with_tokenizer: bool = True, **config_kwargs) -> Path:
    """Write a tiny CLIP checkpoint folder like an OpenAI release (weights, config, tokenizer)."""
    folder = Path(folder)
    make_tiny_clip(seed, **config_kwargs).save_pretrained(folder)
    if with_tokenizer:
        load_clip_tokenizer().save_pretrained(folder)
    return folder


def make_tiny_reid_model(
    num_classes: int = 6, seed: int = 0, image_size: tuple[int, int] = TINY_IMAGE_SIZE, **config_kwargs
) -> CLIPReIDModel:
    """A tiny ``CLIPReIDModel`` with random weights everywhere (eval mode)."""
    torch.manual_seed(seed)
    legacy_eos = config_kwargs.pop("legacy_eos", False)
    config = CLIPReIDConfig(
        clip_config=tiny_clip_config(legacy_eos=legacy_eos),
        num_classes=num_classes,
        image_size=image_size,
        **config_kwargs,
    )
    return CLIPReIDModel(config).eval()


def save_tiny_reid_model(folder: str | Path, model: CLIPReIDModel | None = None, **model_kwargs) -> Path:
    """Save a tiny CLIP-ReID model (``model`` or a new one) with its image processor and the
    shipped tokenizer, the way a training run's output folder holds them."""
    folder = Path(folder)
    model = model if model is not None else make_tiny_reid_model(**model_kwargs)
    model.save_pretrained(folder)
    tiny_image_processor(tuple(model.config.image_size)).save_pretrained(folder)
    load_clip_tokenizer().save_pretrained(folder)
    return folder


def tiny_image_processor(image_size: tuple[int, int] = TINY_IMAGE_SIZE):
    return build_reid_image_processor(image_size)


def random_pixels(batch: int, image_size: tuple[int, int] = TINY_IMAGE_SIZE, seed: int = 0) -> torch.Tensor:
    """Normalised-looking random images (B, 3, H, W)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *image_size, generator=generator)


def pk_labels(num_ids: int, per_id: int) -> torch.Tensor:
    """Labels of a PK batch: ``num_ids`` identities with ``per_id`` images each."""
    return torch.arange(num_ids).repeat_interleave(per_id)


CLEAN_PREAMBLE = textwrap.dedent(
    """
    import sys

    class BlockHfReid:
        def find_spec(self, name, path=None, target=None):
            if name == "hf_reid" or name.startswith("hf_reid."):
                raise ImportError("hf_reid must not be imported here")
            return None

    sys.meta_path.insert(0, BlockHfReid())
    import numpy as np
    import torch

    folder, out = sys.argv[1], sys.argv[2]
    torch.set_num_threads(int(sys.argv[3]))  # same reduction order as the parent process
    """
)
"""What :func:`run_without_hf_reid` runs before a script: any import of hf_reid refused, then
``sys``, ``np``, ``torch``, ``folder`` (the saved model) and ``out`` (the work folder) defined."""
CLEAN_EPILOGUE = '\nprint("HF_REID_LOADED", any(m.startswith("hf_reid") for m in sys.modules))\n'


def run_without_hf_reid(script: str, folder: Path, workdir: Path) -> subprocess.CompletedProcess:
    """Run ``script`` in a fresh interpreter that does not see this checkout (empty
    ``PYTHONPATH``, run from ``workdir``, a remote-code cache of its own, any import of hf_reid
    refused), as a user with only ``transformers`` installed would load a saved model; the
    script starts after :data:`CLEAN_PREAMBLE` (``folder``, ``out`` = ``workdir``, ``np`` and
    ``torch``, the parent's thread count). Asserts that it exits 0 and that no hf_reid module was
    loaded; returns the finished process (``stdout``: what the script printed)."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_MODULES_CACHE": str(workdir / "modules"),
        "PYTHONPATH": "",
    }
    code = CLEAN_PREAMBLE + textwrap.dedent(script) + CLEAN_EPILOGUE
    command = [sys.executable, "-c", code, str(folder), str(workdir), str(torch.get_num_threads())]
    result = subprocess.run(command, capture_output=True, text=True, cwd=workdir, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "HF_REID_LOADED False" in result.stdout, result.stdout[-3000:]
    return result
