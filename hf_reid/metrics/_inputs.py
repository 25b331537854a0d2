"""Input checks shared by the metrics: every public function turns numpy arrays, torch tensors or
lists into tensors here, so that bad input fails early with a message that names the argument."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

ArrayLike = Any
"""numpy array, torch tensor (any device) or nested list."""

NUMERIC_KINDS = "biufc"
"""numpy dtype kinds the metrics accept: bool, signed and unsigned integers, floats, complex (the
last is then refused by the float or integer check, with its own message)."""

_KIND_NAMES = {
    "U": "strings",
    "S": "byte strings",
    "O": "Python objects",
    "V": "structured records",
    "M": "datetimes",
    "m": "time deltas",
}


def _not_numeric(name: str, dtype: np.dtype) -> TypeError:
    what = _KIND_NAMES.get(dtype.kind, "non-numeric values")
    return TypeError(
        f"`{name}` holds {what} (dtype {dtype}); pass numbers. Identities or cameras given as names "
        "must be mapped to integers first, e.g. np.unique(names, return_inverse=True)[1]."
    )


def resolve_device(device: str | torch.device | None, *tensors: Any) -> torch.device:
    """The device to compute on: ``device`` if given, else the device of the first torch tensor
    among ``tensors``, else the CPU."""
    if device is not None:
        return torch.device(device)
    for tensor in tensors:
        if isinstance(tensor, torch.Tensor):
            return tensor.device
    return torch.device("cpu")


def as_tensor(value: ArrayLike, name: str) -> torch.Tensor:
    """``value`` as a tensor without copying numpy arrays or moving tensors."""
    if isinstance(value, torch.Tensor):
        return value
    if not isinstance(value, np.ndarray):
        try:
            value = np.asarray(value)
        except (TypeError, ValueError, OverflowError) as error:
            raise TypeError(
                f"`{name}` must be a numpy array, a torch tensor or a (nested) list of numbers of one shape."
            ) from error
    if value.dtype.kind not in NUMERIC_KINDS:
        raise _not_numeric(name, value.dtype)
    if not value.dtype.isnative:  # big-endian data (e.g. read from a file): torch needs native order
        value = value.astype(value.dtype.newbyteorder("="))
    if value.dtype.kind == "u" and value.itemsize == 8:  # torch barely supports uint64: use int64
        if value.size and int(value.max()) > np.iinfo(np.int64).max:
            raise ValueError(f"`{name}` holds values above the int64 range (max {int(value.max())}).")
        value = value.astype(np.int64)
    try:
        return torch.from_numpy(np.ascontiguousarray(value))
    except (TypeError, ValueError) as error:
        raise TypeError(f"`{name}` (dtype {value.dtype}) cannot be turned into a tensor: {error}") from None


def float_matrix(
    value: ArrayLike, name: str, *, check_finite: bool = True, widen: bool = True
) -> torch.Tensor:
    """A non-empty 2-D floating-point tensor.

    float16 and bfloat16 are widened to float32 unless ``widen=False`` (callers that work in chunks
    widen each chunk instead, to avoid a full copy)."""
    tensor = as_tensor(value, name)
    if tensor.ndim != 2:
        raise ValueError(f"`{name}` must be 2-D, got shape {tuple(tensor.shape)}.")
    if not tensor.dtype.is_floating_point:
        raise TypeError(
            f"`{name}` must be a floating-point array, got {tensor.dtype}; convert it with .astype(np.float32)."
        )
    if tensor.shape[0] == 0 or tensor.shape[1] == 0:
        raise ValueError(
            f"`{name}` is empty (shape {tuple(tensor.shape)}); it needs at least one row and column."
        )
    if widen and tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.float()
    if check_finite:
        check_all_finite(tensor, name)
    return tensor


def check_all_finite(tensor: torch.Tensor, name: str, row_offset: int = 0) -> None:
    """Raise if ``tensor`` holds NaN or inf, saying where the first one is.

    Works in chunks of rows so that a large matrix needs no full-size boolean copy.
    ``row_offset`` is added to the reported row when ``tensor`` is itself a chunk."""
    step = max(1, (1 << 24) // max(1, tensor[0].numel())) if tensor.ndim > 1 else tensor.shape[0] or 1
    for start in range(0, tensor.shape[0], step):
        finite = torch.isfinite(tensor[start : start + step])
        if not bool(finite.all()):
            first = (~finite).nonzero()[0].tolist()
            first[0] += row_offset + start
            raise ValueError(
                f"`{name}` contains NaN or infinite values, the first at index {tuple(first)}; "
                "fix or drop those rows first."
            )


def int_vector(value: ArrayLike, name: str, length: int | None = None) -> torch.Tensor:
    """A 1-D int64 tensor; integral floats are rejected so that mixed-up arguments fail loudly."""
    tensor = as_tensor(value, name)
    if tensor.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D, got shape {tuple(tensor.shape)}.")
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex:
        raise TypeError(
            f"`{name}` must hold integers, got {tensor.dtype}; convert it with .astype(np.int64)."
        )
    if length is not None and tensor.shape[0] != length:
        raise ValueError(f"`{name}` has {tensor.shape[0]} entries but {length} are expected.")
    return tensor.long()
