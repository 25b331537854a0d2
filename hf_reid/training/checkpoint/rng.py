"""Random states of a process (python, numpy, torch, cuda / xpu) as JSON values.

Every process writes its own ``random_states_<rank>.json``; restoring them makes a resumed run
draw the same numbers as an uninterrupted one. JSON replaces Accelerate's pickled RNG files.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator

from .errors import CheckpointError
from .log import logger

_RNG_DEVICES = ("cuda", "xpu")


def _rng_state(accelerator: Accelerator) -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    bit_generator, key, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "step": int(getattr(accelerator, "step", 0)),
        "python": {"version": version, "state": list(internal), "gauss_next": gauss},
        "numpy": {
            "bit_generator": bit_generator,
            "key": [int(k) for k in key],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state().numpy().tobytes().hex(),
    }
    for name in _RNG_DEVICES:
        module = getattr(torch, name, None)
        if module is not None and module.is_available():
            state[name] = [s.cpu().numpy().tobytes().hex() for s in module.get_rng_state_all()]
    return state


def _set_rng_state(accelerator: Accelerator, state: Any, source: Path) -> None:
    def as_bytes(text: str) -> torch.Tensor:
        return torch.frombuffer(bytearray.fromhex(text), dtype=torch.uint8).clone()

    try:
        python, numpy_state = state["python"], state["numpy"]
        python_state = (python["version"], tuple(python["state"]), python["gauss_next"])
        numpy_tuple = (
            numpy_state["bit_generator"],
            np.asarray(numpy_state["key"], dtype=np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
        torch_state = as_bytes(state["torch"])
        devices = {name: [as_bytes(s) for s in state[name]] for name in _RNG_DEVICES if name in state}
        random.setstate(python_state)
        np.random.set_state(numpy_tuple)
        torch.set_rng_state(torch_state)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{source} is not a valid RNG state ({type(err).__name__}: {err}).") from err
    for name, states in devices.items():
        module = getattr(torch, name, None)
        if module is None or not module.is_available():
            logger.warning("%s holds %s RNG states, but %s is not available here.", source, name, name)
            continue
        if len(states) != module.device_count():
            logger.warning(
                "%s holds %d %s RNG states, this process sees %d device(s): not restored.",
                source,
                len(states),
                name,
                module.device_count(),
            )
            continue
        module.set_rng_state_all(states)
    if isinstance(state.get("step"), int):
        accelerator.step = state["step"]
