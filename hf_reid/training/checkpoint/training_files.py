"""The files of the objects an Accelerator prepared: models, optimizers, schedulers and
registered objects, the fp16 gradient scaler, and the RNG state of every process.

Used instead of Accelerate's ``save_state`` / ``load_state``, which pickle schedulers and
registered objects: weights go to safetensors, optimizer states to ``torch.save`` files read
back with ``weights_only=True``, the rest to JSON (:mod:`.codec`, :mod:`.rng`). Loading reads
only files the verified checksum list holds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType

from .codec import _decode, _encode
from .errors import CheckpointError
from .file_io import _load_safetensors, _read_json, _write_json
from .integrity import _listed
from .layout import SCALER_NAME, SCHEDULERS_NAME, _indexed
from .log import logger
from .rng import _rng_state, _set_rng_state


def _check_supported(accelerator: Accelerator) -> None:
    if accelerator.distributed_type in (
        DistributedType.DEEPSPEED,
        DistributedType.FSDP,
        DistributedType.MEGATRON_LM,
        DistributedType.XLA,
    ):
        raise NotImplementedError(
            f"hf_reid checkpoints support single-process and DDP runs, not {accelerator.distributed_type}."
        )
    if getattr(accelerator.dataloader_config, "use_stateful_dataloader", False):
        raise NotImplementedError("hf_reid checkpoints do not store stateful dataloaders' state.")


def _objects_state(accelerator: Accelerator) -> dict[str, Any]:
    return {
        "schedulers": [s.state_dict() for s in accelerator._schedulers],
        "registered": [obj.state_dict() for obj in accelerator._custom_objects],
    }


def _save_training_files(accelerator: Accelerator, folder: Path) -> None:
    """Write models, optimizers, schedulers, the grad scaler (main process) and this process's
    RNG state into ``folder``. Every process calls it."""
    from safetensors.torch import save_file, save_model

    _write_json(folder / f"random_states_{accelerator.process_index}.json", _rng_state(accelerator))
    if not accelerator.is_main_process:
        return
    for i, model in enumerate(accelerator._models):
        save_model(accelerator.unwrap_model(model), str(folder / _indexed("model", i, ".safetensors")))
    for i, optimizer in enumerate(accelerator._optimizers):
        torch.save(optimizer.state_dict(), folder / _indexed("optimizer", i, ".pt"))
    objects = _objects_state(accelerator)
    if objects["schedulers"] or objects["registered"]:
        tensors: dict[str, torch.Tensor] = {}
        encoded = {
            kind: [_encode(s, f"{kind}[{i}].state_dict()", tensors) for i, s in enumerate(states)]
            for kind, states in objects.items()
        }
        save_file(tensors, str(folder / f"{SCHEDULERS_NAME}.safetensors"))
        _write_json(folder / f"{SCHEDULERS_NAME}.json", encoded)
    if accelerator.scaler is not None:
        _write_json(folder / SCALER_NAME, _encode(accelerator.scaler.state_dict(), "grad scaler", {}))


def _load_training_files(accelerator: Accelerator, folder: Path, manifest: Mapping[str, Any]) -> None:
    """Restore what :func:`_save_training_files` wrote into the prepared objects of this run."""
    from safetensors.torch import load_model

    for i, model in enumerate(accelerator._models):
        path = _listed(
            folder, _indexed("model", i, ".safetensors"), manifest, f"weights of prepared model {i}"
        )
        try:
            load_model(accelerator.unwrap_model(model), str(path), strict=True, device="cpu")
        except Exception as err:  # SafetensorError (not a safetensors file), RuntimeError (keys, shapes)
            raise CheckpointError(f"{path} cannot be loaded into prepared model {i}: {err}") from err
    for i, optimizer in enumerate(accelerator._optimizers):
        path = _listed(folder, _indexed("optimizer", i, ".pt"), manifest, f"state of prepared optimizer {i}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # UnpicklingError: an object that is not tensors and containers
            found = re.search(r"WeightsUnpickler error: ([^\n]*?\.)(?: |$)", str(err))
            detail = found.group(1) if found else f"{type(err).__name__}: {str(err).splitlines()[0]}"
            raise CheckpointError(
                f"{path} is not an optimizer state of tensors and plain containers ({detail}); it is not "
                "unpickled."
            ) from err
        try:
            optimizer.load_state_dict(state)
        except Exception as err:
            raise CheckpointError(f"{path} does not fit prepared optimizer {i}: {err}") from err
    wanted = {"schedulers": accelerator._schedulers, "registered": accelerator._custom_objects}
    if any(wanted.values()):
        source = _listed(folder, f"{SCHEDULERS_NAME}.json", manifest, "scheduler states")
        tensors = _load_safetensors(
            _listed(folder, f"{SCHEDULERS_NAME}.safetensors", manifest, "scheduler tensors")
        )
        states = _decode(_read_json(source), tensors, str(source))
        for kind, objects in wanted.items():
            saved = states.get(kind) if isinstance(states, dict) else None
            if not isinstance(saved, list) or len(saved) < len(objects):
                raise CheckpointError(
                    f"{source} holds {len(saved) if isinstance(saved, list) else 'no'} {kind} state(s), "
                    f"this run has {len(objects)}."
                )
            for obj, state in zip(objects, saved):
                try:
                    obj.load_state_dict(state)
                except Exception as err:
                    raise CheckpointError(
                        f"{source}: a {kind} state does not fit {type(obj).__name__}: {err}"
                    ) from err
    if accelerator.scaler is not None:
        source = _listed(folder, SCALER_NAME, manifest, "fp16 gradient scaler state")
        accelerator.scaler.load_state_dict(_decode(_read_json(source), {}, str(source)))
    name = f"random_states_{accelerator.process_index}.json"
    if name in manifest:
        _set_rng_state(accelerator, _read_json(folder / name), folder / name)
    else:
        logger.warning(
            "%s holds no RNG state for process %d; its random stream is not restored.",
            folder,
            accelerator.process_index,
        )
