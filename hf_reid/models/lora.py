"""LoRA for hf_reid's CLIP models through peft, as a typed config choice.

:class:`LoraSettings` says which towers (vision, text), which projections of each transformer
block (q, k, v, out of the attention; fc1, fc2 of the MLP), the rank, alpha and dropout. It
becomes a peft ``LoraConfig`` whose ``target_modules`` is a regex over the CLIP module names, so
one tower can be adapted without the other. The Re-ID parts CLIP does not have (BNNecks and
classifiers, prompts, SIE) are trained in full and stored in the adapter (``modules_to_save``), so
an adapter plus the base model it was trained from is a complete Re-ID model.

Typical use (stage 2)::

    model = CLIPReIDModel.from_pretrained(base_dir)            # or from_clip_pretrained(...)
    peft_model = apply_lora(model, LoraSettings(rank=16))
    ... train ...
    save_lora_adapter(peft_model, adapter_dir)
    peft_model = load_lora_adapter(CLIPReIDModel.from_pretrained(base_dir), adapter_dir)
    merge_lora(peft_model).save_pretrained(export_dir)         # plain model, no peft needed

This module is not imported by the modeling files, so checkpoints do not need peft to load.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from .reid_heads import BNNeck

TOWER_MODULES = {"vision": "vision_model", "text": "text_model"}
"""LoRA tower name -> CLIP submodule name."""

PROJECTION_MODULES = {
    "q": "self_attn.q_proj",
    "k": "self_attn.k_proj",
    "v": "self_attn.v_proj",
    "out": "self_attn.out_proj",
    "fc1": "mlp.fc1",
    "fc2": "mlp.fc2",
}
"""LoRA projection name -> linear layer inside a CLIP encoder block."""

REID_MODULES = ("head", "prompt_learner", "camera_embedding")
"""Re-ID modules trained in full alongside LoRA and saved in the adapter (those the model has)."""


@dataclass(frozen=True)
class LoraSettings:
    """Which parts of CLIP get LoRA, and how.

    Args:
        towers: Any of ``"vision"``, ``"text"``.
        projections: Any of ``"q"``, ``"k"``, ``"v"``, ``"out"``, ``"fc1"``, ``"fc2"``.
        rank: LoRA rank ``r``.
        alpha: LoRA scaling numerator (the update is scaled by ``alpha / rank``).
        dropout: Dropout on the LoRA branch input.
        modules_to_save: Non-CLIP modules trained in full and stored in the adapter.
    """

    towers: tuple[str, ...] = ("vision",)
    projections: tuple[str, ...] = ("q", "k", "v", "out")
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    modules_to_save: tuple[str, ...] = REID_MODULES

    def __post_init__(self):
        for name in ("towers", "projections", "modules_to_save"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise TypeError(f"LoraSettings.{name} must be a list of names, got {value!r}.")
            object.__setattr__(self, name, tuple(value))
        _check_names("towers", self.towers, TOWER_MODULES)
        _check_names("projections", self.projections, PROJECTION_MODULES)
        if not self.towers or not self.projections:
            raise ValueError("LoraSettings.towers and LoraSettings.projections must not be empty.")
        if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 1:
            raise ValueError(f"LoraSettings.rank must be an int >= 1, got {self.rank!r}.")
        if not isinstance(self.alpha, (int, float)) or isinstance(self.alpha, bool) or self.alpha <= 0:
            raise ValueError(f"LoraSettings.alpha must be a number > 0, got {self.alpha!r}.")
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"LoraSettings.dropout must be in [0, 1), got {self.dropout!r}.")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LoraSettings:
        """Build from a plain mapping (e.g. the ``lora:`` section of a recipe YAML); unknown keys
        are rejected by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown LoRA setting(s) {unknown}; known: {sorted(known)}.")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @property
    def target_regex(self) -> str:
        """Regex (full match) of the linear layers that get LoRA."""
        towers = "|".join(TOWER_MODULES[t] for t in self.towers)
        projections = "|".join(re.escape(PROJECTION_MODULES[p]) for p in self.projections)
        return rf".*\b({towers})\.encoder\.layers\.\d+\.({projections})"

    def to_peft_config(self, model: nn.Module | None = None) -> LoraConfig:
        """The peft ``LoraConfig``; with ``model``, ``modules_to_save`` keeps only modules it has."""
        keep = list(self.modules_to_save)
        if model is not None:
            names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
            keep = [m for m in keep if m in names]
        return LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,
            lora_dropout=float(self.dropout),
            target_modules=self.target_regex,
            modules_to_save=keep or None,
        )


def _check_names(field: str, values: tuple[str, ...], allowed: dict[str, str]) -> None:
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ValueError(f"LoraSettings.{field} has unknown name(s) {bad}; choose from {sorted(allowed)}.")


def _freeze_bnneck_biases(model: nn.Module) -> None:
    # peft's full copies of modules_to_save are made trainable; the BNNeck shift stays frozen.
    for module in model.modules():
        if isinstance(module, BNNeck):
            module.bias.requires_grad_(False)


def apply_lora(model: nn.Module, settings: LoraSettings) -> PeftModel:
    """Wrap ``model`` with LoRA per ``settings``; only LoRA weights and the Re-ID modules train."""
    peft_model = get_peft_model(model, settings.to_peft_config(model))
    _freeze_bnneck_biases(peft_model)
    return peft_model


def save_lora_adapter(peft_model: PeftModel, folder: str | os.PathLike) -> Path:
    """Save the adapter (LoRA weights + Re-ID modules) to ``folder``.

    A base model loaded from a local folder is recorded by its absolute path, so the adapter
    still finds it from another working directory. The adapter's ``auto_mapping`` names
    ``transformers.AutoModel`` (:func:`hf_reid.hub.set_adapter_auto_mapping`), so that
    ``peft.AutoPeftModel.from_pretrained(folder)`` loads it, with hf_reid imported or, with
    ``trust_remote_code=True``, without it.
    """
    from ..hub import set_adapter_auto_mapping

    config = peft_model.peft_config[peft_model.active_adapter]
    base = config.base_model_name_or_path
    if base and os.path.isdir(base):
        config.base_model_name_or_path = os.path.abspath(base)
    peft_model.save_pretrained(folder)
    set_adapter_auto_mapping(folder)
    return Path(folder)


def load_lora_adapter(
    base_model: nn.Module, folder: str | os.PathLike, is_trainable: bool = False
) -> PeftModel:
    """Put the adapter saved in ``folder`` on ``base_model`` (the model it was trained from)."""
    if not (Path(folder) / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{folder} has no adapter_config.json; is it a LoRA adapter folder?")
    peft_model = PeftModel.from_pretrained(base_model, str(folder), is_trainable=is_trainable)
    _freeze_bnneck_biases(peft_model)
    return peft_model


def merge_lora(peft_model: PeftModel) -> nn.Module:
    """Fold the LoRA weights into the base weights and return the plain model (for export)."""
    return peft_model.merge_and_unload()


__all__ = [
    "PROJECTION_MODULES",
    "TOWER_MODULES",
    "LoraSettings",
    "apply_lora",
    "load_lora_adapter",
    "merge_lora",
    "save_lora_adapter",
]
