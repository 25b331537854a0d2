"""Pickle-free encodings of state dicts as JSON values plus a dict of tensors.

Two encodings, each with its reader:

* recipe state (:func:`_split_tensors` / :func:`_join_tensors`): nested dicts with string keys;
  every tensor is stored under its path and replaced by a reference; anything JSON cannot hold
  is refused with the path that holds it;
* exact state dicts of schedulers and registered objects (:func:`_encode` / :func:`_decode`):
  tuples stay tuples and dicts may have non-string keys, as ``load_state_dict`` expects them back.

The tensors go to a safetensors file next to the JSON; nothing is pickled.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .errors import CheckpointError

_TENSOR_KEY = "__tensor__"


def _split_tensors(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """``value`` with every tensor moved into ``tensors`` (under its path) and replaced by a
    reference; raises ``TypeError`` naming the path for anything JSON cannot hold."""
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu().contiguous()
        return {_TENSOR_KEY: path}
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str) or "/" in key:
                raise TypeError(f"recipe state {path!r}: keys must be strings without '/', got {key!r}.")
            out[key] = _split_tensors(item, f"{path}/{key}", tensors)
        return out
    if isinstance(value, (list, tuple)):
        return [_split_tensors(item, f"{path}/{i}", tensors) for i, item in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(
        f"recipe state {path!r} holds a {type(value).__name__}; state_dict() may hold only tensors, "
        "numbers, strings, booleans, None and lists / dicts of them (checkpoints pickle nothing)."
    )


def _join_tensors(value: Any, tensors: Mapping[str, torch.Tensor], source: str) -> Any:
    if isinstance(value, dict):
        if set(value) == {_TENSOR_KEY}:
            key = value[_TENSOR_KEY]
            if key not in tensors:
                raise CheckpointError(f"{source}: tensor {key!r} is missing from the .safetensors file.")
            return tensors[key]
        return {k: _join_tensors(v, tensors, source) for k, v in value.items()}
    if isinstance(value, list):
        return [_join_tensors(v, tensors, source) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# Exact JSON of state dicts (schedulers, registered objects): tuples stay tuples, dicts may have
# non-string keys, tensors go to a safetensors file. Anything else is refused at save time.
# ---------------------------------------------------------------------------------------------
_TUPLE_KEY = "__tuple__"
_ITEMS_KEY = "__items__"
_TAGS = {_TENSOR_KEY, _TUPLE_KEY, _ITEMS_KEY}


def _encode(value: Any, where: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = value.detach().cpu().contiguous()
        return {_TENSOR_KEY: name}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, tuple):
        return {_TUPLE_KEY: [_encode(v, f"{where}[{i}]", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{where}[{i}]", tensors) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        if all(isinstance(k, str) for k in value) and not _TAGS & set(value):
            return {k: _encode(v, f"{where}[{k!r}]", tensors) for k, v in value.items()}
        return {
            _ITEMS_KEY: [
                [_encode(k, f"{where} key", tensors), _encode(v, f"{where}[{k!r}]", tensors)]
                for k, v in value.items()
            ]
        }
    raise TypeError(
        f"{where} holds a {type(value).__name__}; checkpoints store state dicts of tensors, numbers, "
        "strings, booleans, None and lists / tuples / dicts of them (nothing is pickled)."
    )


def _decode(value: Any, tensors: Mapping[str, torch.Tensor], source: str) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors, source) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {_TENSOR_KEY}:
        if value[_TENSOR_KEY] not in tensors:
            raise CheckpointError(
                f"{source}: tensor {value[_TENSOR_KEY]!r} is missing from its .safetensors."
            )
        return tensors[value[_TENSOR_KEY]]
    if set(value) == {_TUPLE_KEY}:
        return tuple(_decode(v, tensors, source) for v in value[_TUPLE_KEY])
    if set(value) == {_ITEMS_KEY}:
        items = value[_ITEMS_KEY]
        if not isinstance(items, list) or not all(isinstance(i, list) and len(i) == 2 for i in items):
            raise CheckpointError(f"{source}: malformed {_ITEMS_KEY} entry.")
        return {_decode(k, tensors, source): _decode(v, tensors, source) for k, v in items}
    return {k: _decode(v, tensors, source) for k, v in value.items()}
