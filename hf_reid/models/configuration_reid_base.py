"""What every hf_reid Re-ID model configuration shares: the CLIP it is built on, the input grid,
the identity heads and the ID + triplet loss terms, validated once.

Each method's configuration (``configuration_<method>.py``) subclasses :class:`ReIDConfig`, adds
its own typed fields and extends :meth:`ReIDConfig._check_values`. A wrong type raises a
``StrictDataclassError`` and a wrong value a ``ValueError``, both naming the class and the field;
an unknown keyword that is a near-miss of a field (``num_clases``) is rejected as a typo.
Training hyper-parameters (learning rates, epochs) belong to the recipe config, not here.

A saved ``config.json`` holds no local path: the ``_name_or_path`` a sub-configuration records
(the CLIP the model started from) is kept when it is a Hub id and blanked when it is a folder on
this machine (:func:`portable_name_or_path`).

This file travels with every saved model (``save_pretrained`` copies the siblings a
configuration imports), so it imports nothing from hf_reid.
"""

import dataclasses
import difflib
import os
import re
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from huggingface_hub.dataclasses import strict
from transformers import CLIPConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

_PRETRAINED_FIELDS = frozenset(f.name for f in dataclasses.fields(PreTrainedConfig))
"""``PreTrainedConfig``'s own fields; a Re-ID configuration's fields are the others."""


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
"""A Hub repository id: ``name`` or ``namespace/name``."""


def portable_name_or_path(name_or_path: Any) -> str:
    """``name_or_path`` if it names a Hub repository (``openai/clip-vit-base-patch16``), else ``""``:
    an absolute path, a path starting with ``.`` or ``~``, or an existing folder here means nothing
    on another machine (and would publish this machine's folder layout)."""
    name = str(name_or_path or "")
    if _HUB_ID.fullmatch(name) and ".." not in name and not os.path.exists(name):
        return name
    return ""


def _drop_local_paths(values: dict[str, Any]) -> None:
    """Blank every local ``_name_or_path`` in a serialised (sub-)configuration, recursively."""
    for key, value in values.items():
        if key == "_name_or_path":
            values[key] = portable_name_or_path(value)
        elif isinstance(value, dict):
            _drop_local_paths(value)


def as_pair(name: str, value: Any, owner: str) -> tuple[int, int]:
    """``value`` as an (H, W) pair of positive ints; ``int`` means a square pair. Errors name
    ``owner.name``."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (
        not isinstance(value, Sequence)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ValueError(f"{owner}.{name} must be two positive ints (height, width), got {value!r}.")
    return int(value[0]), int(value[1])


def reject_near_misses(owner: str, kwargs: dict[str, Any], fields: Sequence[str]) -> None:
    """Extra keyword arguments are kept as attributes (transformers convention, needed for
    backward compatibility); but one that is a near-miss of a field is almost surely a typo
    that would silently be ignored, so it is rejected."""
    for key in kwargs:
        close = difflib.get_close_matches(key, fields, n=1, cutoff=0.85)
        if close:
            raise ValueError(f"{owner} has no field {key!r}; did you mean {close[0]!r}?")


def check_vision_geometry(
    owner: str, clip_config: CLIPConfig, image_size: tuple[int, int], stride_size: tuple[int, int] | None
) -> None:
    """The input size and patch stride must fit the vision tower's patch size."""
    patch = clip_config.vision_config.patch_size
    if not isinstance(patch, int):
        raise ValueError(f"{owner}.clip_config.vision_config.patch_size must be an int, got {patch!r}.")
    stride = stride_size or (patch, patch)
    if any(s > patch for s in stride):
        raise ValueError(
            f"{owner}.stride_size {stride} is larger than the patch size {patch}: pixels "
            "between patches would be skipped. Use a stride <= the patch size."
        )
    if any(s < patch for s in image_size):
        raise ValueError(f"{owner}.image_size {image_size} is smaller than one {patch}x{patch} patch.")


@strict
class ReIDConfig(PreTrainedConfig):
    r"""The fields every hf_reid Re-ID model has.

    Args:
        clip_config (`CLIPConfig` or `dict`, *optional*):
            The CLIP the model is built on. Defaults to a ViT-B/16 shaped CLIP (random weights;
            use the model's ``from_clip_pretrained`` to start from a pretrained one).
        image_size (`tuple[int, int]`, defaults to `(256, 128)`):
            Input height and width. The vision tower runs natively on this size: its position
            table holds one entry per patch of this grid, resized once from the pretrained square
            table (see ``pos_interpolation``).
        stride_size (`int` or `tuple[int, int]`, *optional*):
            Stride of the patch embedding. ``None`` means the patch size (no overlap); CLIP-ReID's
            overlapping-patches variant (OLP) uses 12 with 16-pixel patches (a 21x10 grid at 256x128).
        pos_interpolation (`"bicubic"` or `"bilinear"`, defaults to `"bicubic"`):
            How the pretrained square position table is resized to the Re-ID grid, once, when
            starting from a CLIP checkpoint. The original CLIP-ReID code uses bilinear; bicubic is
            what ``transformers`` uses for ``interpolate_pos_encoding``.
        num_classes (`int`, defaults to 751):
            Number of training identities: rows of the identity classifiers (and of any
            per-identity prompts).
        neck_feat (`"before"` or `"after"`, defaults to `"before"`):
            Whether the retrieval embedding ``cat[x12, xproj]`` is taken before or after the BNNecks.
        feature_norm (`bool`, defaults to `True`):
            Whether ``embeddings`` are L2-normalised (CLIP-ReID evaluates normalised features,
            CLIP-FGDI raw ones).
        id_loss_weight (`float`, defaults to 0.25):
            Weight of the summed label-smoothed identity cross-entropies of the two classifiers.
        triplet_loss_weight (`float`, defaults to 1.0):
            Weight of the summed batch-hard triplet losses on x11, x12 and xproj.
        triplet_margin (`float`, *optional*, defaults to 0.3):
            Triplet margin; ``None`` selects the soft-margin triplet ``log(1 + exp(d_ap - d_an))``.
        label_smoothing (`float`, defaults to 0.1):
            Label smoothing of the identity cross-entropies.
    """

    sub_configs_defaults: ClassVar[dict[str, SubConfigSpec]] = {
        "clip_config": SubConfigSpec(CLIPConfig, init_kwargs={"vision_config": {"patch_size": 16}})
    }
    loss_weight_fields: ClassVar[tuple[str, ...]] = ("id_loss_weight", "triplet_loss_weight")
    """Fields that must be >= 0 (subclasses add theirs)."""

    clip_config: dict | CLIPConfig | None = None
    image_size: list[int] | tuple[int, ...] = (256, 128)
    stride_size: int | list[int] | tuple[int, ...] | None = None
    pos_interpolation: Literal["bicubic", "bilinear"] = "bicubic"
    num_classes: int = 751
    neck_feat: Literal["before", "after"] = "before"
    feature_norm: bool = True
    id_loss_weight: float | int = 0.25
    triplet_loss_weight: float | int = 1.0
    triplet_margin: float | int | None = 0.3
    label_smoothing: float | int = 0.1

    def __post_init__(self, **kwargs):
        owner = type(self).__name__
        fields = [f.name for f in dataclasses.fields(self) if f.name not in _PRETRAINED_FIELDS]
        reject_near_misses(owner, kwargs, fields)
        self.image_size = as_pair("image_size", self.image_size, owner)
        if self.stride_size is not None:
            self.stride_size = as_pair("stride_size", self.stride_size, owner)
        self._prepare_fields()
        super().__post_init__(**kwargs)
        self._check_values()

    def to_dict(self) -> dict[str, Any]:
        """``PreTrainedConfig.to_dict`` with the sub-configurations' local paths blanked
        (:func:`portable_name_or_path`), so that ``config.json`` carries none. The model's own
        ``_name_or_path`` is left to transformers (which does not save it)."""
        output = super().to_dict()
        for key, value in output.items():
            if isinstance(value, dict) and isinstance(getattr(self, key, None), PreTrainedConfig):
                _drop_local_paths(value)
        return output

    def _prepare_fields(self) -> None:
        """Fill derived fields before the sub-configs are built (subclasses override)."""

    def _check_values(self) -> None:
        """Raise ``ValueError`` naming the field for any value out of range; subclasses extend it."""
        owner = type(self).__name__
        check_vision_geometry(owner, self.clip_config, self.image_size, self.stride_size)
        if self.num_classes < 1:
            raise ValueError(f"{owner}.num_classes must be >= 1, got {self.num_classes}.")
        for name in self.loss_weight_fields:
            if getattr(self, name) < 0:
                raise ValueError(f"{owner}.{name} must be >= 0, got {getattr(self, name)}.")
        if self.triplet_margin is not None and self.triplet_margin < 0:
            raise ValueError(
                f"{owner}.triplet_margin must be >= 0 or None (soft margin), got {self.triplet_margin}."
            )
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"{owner}.label_smoothing must be in [0, 1), got {self.label_smoothing}.")


__all__ = ["ReIDConfig", "as_pair", "check_vision_geometry", "portable_name_or_path", "reject_near_misses"]
