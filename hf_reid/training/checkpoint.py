"""Crash-safe, pickle-free, checksummed training checkpoints that know their run.

Layout of a run's output folder::

    <output_dir>/checkpoints/checkpoint-<global_step>/
        model.safetensors, model_1.safetensors, ...   weights of every prepared model (unwrapped)
        optimizer.pt, optimizer_1.pt, ...             optimizer state_dict()s (torch.save; read back
                                                      with torch.load(weights_only=True))
        schedulers.json + schedulers.safetensors      state_dict()s of the prepared schedulers and of
                                                      the objects registered with
                                                      accelerator.register_for_checkpointing (the
                                                      runner's schedulers): JSON, tensors apart
        scaler.json                                   the fp16 gradient scaler (only with one)
        random_states_<rank>.json                     python / numpy / torch (/ cuda, xpu) RNG of
                                                      every process, written by that process
        recipe_state.json + recipe_state.safetensors  the recipe's own state objects (pseudo-labels,
                                                      a cluster memory): tensors in safetensors
        run.json                                      the run: seed and fingerprinted config
        checksums.json                                size and sha256 of every file above
        trainer_state.json                            stage, epoch, steps, run fingerprint, best
                                                      metric, log history; written last

Nothing in a checkpoint is a pickle that resume runs: weights and tensors are safetensors, the
rest is JSON, and the optimizer states (tensors keyed by parameter index) are read with
``torch.load(..., weights_only=True)``, which refuses any object but tensors and plain
containers. Accelerate's ``save_state`` / ``load_state`` are not used: they store the schedulers
and registered objects as pickles loaded with ``weights_only=False`` (``custom_checkpoint_*.pkl``)
and the RNG states as pickles (``random_states_*.pkl``). The data pipeline needs no state: the
samplers' order derives from (seed, epoch), which the runner sets every epoch.

Completeness and integrity: a checkpoint is written into a hidden ``.tmp-checkpoint-<step>``
folder; ``checksums.json`` is written once every other file is complete, then
``trainer_state.json``, and the folder is renamed into place (atomic). A crash never leaves a
``checkpoint-*`` folder without ``trainer_state.json``, and leftover temporary folders are
removed by the next save. Before a checkpoint is loaded every listed file is checked against its
size and sha256 (:func:`verify_checkpoint`); ``--resume`` (latest) skips a checkpoint that fails,
with a warning naming the file, and uses the previous one that passes.

Runs: every checkpoint records its run (:class:`RunIdentity`: the seed and the settings that
define the training; ``trainer_state.json`` holds its fingerprint, ``run.json`` the values).
:func:`prepare_run_folder` refuses to start a run in a folder holding another run's checkpoints
(unless asked to start over) and to resume from another run's checkpoint; retention and the
restore of earlier stages only ever consider the run's own checkpoints.

Retention: the newest ``total_limit`` checkpoints of the run are kept, plus the last checkpoint of
every finished stage (a resume into a later stage restores the state each earlier stage ended with).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, broadcast_object_list

from .config import ConfigError

__all__ = [
    "CHECKPOINTS_DIR",
    "CHECKSUMS_NAME",
    "RECIPE_STATE_NAME",
    "RUN_NAME",
    "TRAINER_STATE_NAME",
    "CheckpointError",
    "RunFolder",
    "RunIdentity",
    "RunMismatchError",
    "Stateful",
    "TrainerState",
    "find_latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "prepare_run_folder",
    "read_trainer_state",
    "resolve_resume_checkpoint",
    "save_checkpoint",
    "verify_checkpoint",
]

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
TRAINER_STATE_NAME = "trainer_state.json"
CHECKSUMS_NAME = "checksums.json"
RUN_NAME = "run.json"
RECIPE_STATE_NAME = "recipe_state"
"""Stem of the recipe-state files of a checkpoint (``.json`` and ``.safetensors``)."""
SCHEDULERS_NAME = "schedulers"
"""Stem of the scheduler / registered-object files of a checkpoint (``.json``, ``.safetensors``)."""
SCALER_NAME = "scaler.json"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)(?:-[A-Za-z0-9_.-]+)?$")
_TMP_PREFIX = ".tmp-"
_START_OVER = "--overwrite_output_dir true"


class CheckpointError(ValueError):
    """A checkpoint that is incomplete, corrupt or unreadable; the message names the file."""


class RunMismatchError(ConfigError):
    """A run folder or checkpoint that belongs to another run (another seed or config)."""


@runtime_checkable
class Stateful(Protocol):
    """A recipe's own training state (pseudo-labels, a cluster memory, ...) that checkpoints
    carry: ``state_dict()`` returns a nested dict of tensors, numbers, strings, booleans, ``None``
    and lists / dicts of them; ``load_state_dict`` takes it back. Nothing is pickled."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


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


# ---------------------------------------------------------------------------------------------
# Reading files of a checkpoint: every failure names the file.
# ---------------------------------------------------------------------------------------------
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CheckpointError(f"{path} is not readable JSON ({type(err).__name__}: {err}).") from err


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as err:  # SafetensorError, OSError: a truncated or foreign file
        raise CheckpointError(f"{path} is not a readable safetensors file ({err}).") from err


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def save_recipe_state(folder: str | os.PathLike, objects: Mapping[str, Stateful]) -> None:
    """Write the ``state_dict()`` of every object into ``folder/recipe_state.{json,safetensors}``."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    plain = {name: _split_tensors(obj.state_dict(), name, tensors) for name, obj in objects.items()}
    folder = Path(folder)
    save_file(tensors, str(folder / f"{RECIPE_STATE_NAME}.safetensors"))
    (folder / f"{RECIPE_STATE_NAME}.json").write_text(json.dumps(plain, indent=1) + "\n", encoding="utf-8")


def load_recipe_state(folder: str | os.PathLike, objects: Mapping[str, Stateful]) -> None:
    """Restore every object from ``folder`` (see :func:`save_recipe_state`); an object the
    checkpoint does not hold is an error naming it."""
    if not objects:
        return
    folder = Path(folder)
    source = folder / f"{RECIPE_STATE_NAME}.json"
    if not source.is_file():
        raise FileNotFoundError(
            f"{folder} holds no recipe state ({source.name}), but this run has state objects "
            f"{sorted(objects)}; was it written by another recipe?"
        )
    plain = _read_json(source)
    if not isinstance(plain, dict):
        raise CheckpointError(f"{source} must hold a JSON object, got {type(plain).__name__}.")
    tensors = _load_safetensors(folder / f"{RECIPE_STATE_NAME}.safetensors")
    missing = sorted(set(objects) - set(plain))
    if missing:
        raise ValueError(f"{source} has no state for {missing} (it has {sorted(plain)}).")
    for name, obj in objects.items():
        obj.load_state_dict(_join_tensors(plain[name], tensors, str(source)))


# ---------------------------------------------------------------------------------------------
# The run a checkpoint belongs to
# ---------------------------------------------------------------------------------------------
def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


@dataclass(frozen=True)
class RunIdentity:
    """What makes a run this run: its seed and the settings that define its training.

    ``config`` is any JSON-able mapping: a recipe passes its config without the fields that do
    not change the training (see :func:`~hf_reid.training.recipe_run.run_fingerprint_config`);
    a bare :class:`~hf_reid.training.loop.StageRunner` uses its stage names. The
    :attr:`fingerprint` is a hash of both; checkpoints record it in ``trainer_state.json`` and
    the values in ``run.json``.
    """

    seed: int | None
    config: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:  # canonical JSON values (tuples -> lists), so that a record read back compares equal
            plain = json.loads(json.dumps(dict(self.config)))
        except (TypeError, ValueError) as err:
            raise TypeError(f"RunIdentity: the run config must be JSON values ({err}).") from err
        object.__setattr__(self, "config", plain)

    @property
    def fingerprint(self) -> str:
        text = json.dumps({"seed": self.seed, "config": self.config}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "seed": self.seed, "config": self.config}

    @classmethod
    def from_dict(cls, data: Any, source: str = RUN_NAME) -> RunIdentity:
        if not isinstance(data, dict) or "seed" not in data or not isinstance(data.get("config"), dict):
            raise CheckpointError(f"{source} is not a run record (it needs 'seed' and 'config').")
        return cls(seed=data["seed"], config=data["config"])

    def differences(self, other: RunIdentity, limit: int = 5) -> list[str]:
        """``field: <self's value> -> <other's value>`` for every config field that differs
        (the first ``limit``, then a count); the seed is not among them."""
        mine, theirs = _flatten(self.config), _flatten(other.config)
        missing = object()
        diffs = [
            f"{key}: {_short(mine.get(key, missing))} -> {_short(theirs.get(key, missing))}"
            for key in sorted(set(mine) | set(theirs))
            if mine.get(key, missing) != theirs.get(key, missing)
        ]
        if len(diffs) > limit:
            diffs = [*diffs[:limit], f"and {len(diffs) - limit} more"]
        return diffs


def _short(value: Any) -> str:
    if not isinstance(value, (type(None), bool, int, float, str, list, dict)):
        return "(unset)"
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class TrainerState:
    """Where training stands; stored as ``trainer_state.json`` in every checkpoint.

    The RNG states are not in this file: every process writes its own
    (``random_states_<rank>.json``) next to it and :func:`load_checkpoint` restores them.
    """

    stage: str = ""
    """Name of the current (or last) stage."""
    stage_index: int = -1
    """Position of ``stage`` in the recipe's stage list."""
    epoch: int = 0
    """Epochs of the current stage that are finished."""
    batch_in_epoch: int = 0
    """Batches of the running epoch already trained (a resume skips them)."""
    stage_step: int = 0
    """Optimizer steps in the current stage."""
    global_step: int = 0
    """Optimizer steps over all stages; names the checkpoints."""
    stage_completed: bool = False
    """True once every epoch of ``stage`` ran."""
    epoch_offset: int = 0
    """Added to ``epoch`` for the data pipeline's epoch (sampler order, augmentation): a stage
    that continues another's optimizer and schedule goes on with that stage's epoch count."""
    best_metric: float | None = None
    """Best value of the stage's ``metric_for_best`` so far."""
    best_epoch: int | None = None
    """Epoch (1-based, within the stage) of ``best_metric``."""
    num_processes: int = 1
    """Processes of the run that wrote the checkpoint (resuming with another count is not bitwise)."""
    seed: int | None = None
    run_fingerprint: str | None = None
    """:attr:`RunIdentity.fingerprint` of the run that wrote the checkpoint (``None``: not recorded)."""
    log_history: list[dict[str, Any]] = field(default_factory=list)
    """Logged loss terms, learning rates and evaluation metrics, oldest first."""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = TRAINER_STATE_NAME) -> TrainerState:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{source} is not valid JSON: {err}") from err
        if not isinstance(data, dict):
            raise CheckpointError(f"{source} must hold a JSON object, got {type(data).__name__}.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(f"{source} has unknown fields {unknown}; was it written by another tool?")
        return cls(**data)


def _checkpoints_root(output_dir: str | os.PathLike) -> Path:
    """``output_dir/checkpoints``; also accepts that folder itself."""
    path = Path(output_dir)
    return path if path.name == CHECKPOINTS_DIR else path / CHECKPOINTS_DIR


def read_trainer_state(checkpoint: str | os.PathLike) -> TrainerState:
    """Read ``trainer_state.json`` of a checkpoint folder."""
    path = Path(checkpoint) / TRAINER_STATE_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{checkpoint} is not a complete hf_reid checkpoint: {TRAINER_STATE_NAME} is missing."
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not readable JSON ({type(err).__name__}: {err}).") from err
    return TrainerState.from_json(text, source=str(path))


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    """Log ``message`` as a warning the first time this process sees it."""
    if message not in _warned:
        _warned.add(message)
        logger.warning("%s", message)


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[Path, TrainerState]]:
    """Complete checkpoints of a run folder, oldest first (by global step, then stage).

    ``output_dir`` is the run folder (its ``checkpoints`` subfolder is listed) or a folder that
    holds ``checkpoint-*`` folders directly. A checkpoint is complete when its
    ``trainer_state.json`` is there and readable (the files are not checked here: see
    :func:`verify_checkpoint`); others are left out with a warning.
    """
    root = Path(output_dir)
    if (root / CHECKPOINTS_DIR).is_dir():
        root = root / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        if not child.is_dir() or not _CHECKPOINT_RE.match(child.name):
            continue
        if not (child / TRAINER_STATE_NAME).is_file():
            _warn_once(f"Ignoring incomplete checkpoint {child} (no {TRAINER_STATE_NAME}).")
            continue
        try:
            found.append((child, read_trainer_state(child)))
        except (CheckpointError, TypeError) as err:
            _warn_once(f"Ignoring checkpoint {child}: {err}")
    found.sort(key=lambda item: _order(item[1]))
    return found


def _order(state: TrainerState) -> tuple[int, int, bool]:
    return (state.global_step, state.stage_index, state.stage_completed)


def find_latest_checkpoint(output_dir: str | os.PathLike, *, verify: bool = False) -> str | None:
    """The newest complete checkpoint of a run (``output_dir`` or its ``checkpoints`` folder);
    with ``verify``, the newest that passes :func:`verify_checkpoint` (failures are warned)."""
    checkpoints = list_checkpoints(output_dir)
    if not verify:
        return str(checkpoints[-1][0]) if checkpoints else None
    for path, _ in reversed(checkpoints):
        try:
            verify_checkpoint(path)
        except CheckpointError as err:
            _warn_once(f"Skipping checkpoint {path}: {err}")
            continue
        return str(path)
    return None


# ---------------------------------------------------------------------------------------------
# Checksums
# ---------------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _write_checksums(folder: Path) -> None:
    """``checksums.json``: size and sha256 of every file of ``folder`` (all but itself and
    ``trainer_state.json``, which come after)."""
    files = {}
    for path in sorted(folder.iterdir()):
        if path.name in (CHECKSUMS_NAME, TRAINER_STATE_NAME) or not path.is_file():
            continue
        files[path.name] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    with open(folder / CHECKSUMS_NAME, "w", encoding="utf-8") as handle:
        handle.write(json.dumps({"algorithm": "sha256", "files": files}, indent=1) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


_verified: dict[str, tuple[tuple, CheckpointError | None]] = {}
"""Checkpoint folder -> (file sizes and mtimes, result of its last verification)."""


def _listing(folder: Path) -> tuple:
    try:
        return tuple(
            sorted(
                (e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(folder) if e.is_file()
            )
        )
    except OSError:
        return ()


def _manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """The files listed in ``checksums.json`` (``name -> {"size", "sha256"}``), checked for form."""
    path = folder / CHECKSUMS_NAME
    if not path.is_file():
        raise CheckpointError(
            f"{path} is missing: an incomplete checkpoint, or one written before checkpoints carried "
            "checksums (with Accelerate's pickle files, which resume no longer loads)."
        )
    data = _read_json(path)
    files = data.get("files") if isinstance(data, dict) else None
    if (
        not isinstance(files, dict)
        or data.get("algorithm") != "sha256"
        or not all(
            isinstance(name, str)
            and name == Path(name).name
            and name not in ("", ".", "..")
            and isinstance(entry, dict)
            and isinstance(entry.get("size"), int)
            and isinstance(entry.get("sha256"), str)
            for name, entry in files.items()
        )
    ):
        raise CheckpointError(f"{path} is not a checksum list of this folder's files; refusing to trust it.")
    return files


def verify_checkpoint(checkpoint: str | os.PathLike) -> TrainerState:
    """Check that ``checkpoint`` is complete and intact: ``trainer_state.json`` reads, and every
    file ``checksums.json`` lists is there with its size and sha256. Returns the trainer state;
    raises :class:`CheckpointError` (``FileNotFoundError`` for a folder without
    ``trainer_state.json``) naming the first file that fails.

    The result is remembered per folder while its files keep their sizes and times.
    """
    folder = Path(checkpoint)
    key = str(folder.resolve())
    listing = _listing(folder)
    cached = _verified.get(key)
    state = read_trainer_state(folder)  # FileNotFoundError: incomplete; read anew (callers change it)
    if cached is not None and cached[0] == listing:
        if cached[1] is not None:
            raise cached[1]
        return state
    try:
        for name, entry in _manifest(folder).items():
            path = folder / name
            if not path.is_file():
                raise CheckpointError(f"{path} is missing (listed in {CHECKSUMS_NAME}).")
            size = path.stat().st_size
            if size != entry["size"]:
                raise CheckpointError(
                    f"{path} has {size} bytes, {entry['size']} expected: the file is truncated or replaced."
                )
            if _sha256(path) != entry["sha256"]:
                raise CheckpointError(
                    f"{path} does not match its sha256 in {CHECKSUMS_NAME}: the file is corrupt."
                )
    except CheckpointError as err:
        _verified[key] = (listing, err)
        raise
    _verified[key] = (listing, None)
    return state


def _listed(folder: Path, name: str, manifest: Mapping[str, Any], what: str) -> Path:
    """``folder/name`` if the checksum list holds it; a named error otherwise (never reads a
    file that was not verified)."""
    if name not in manifest:
        raise CheckpointError(
            f"{folder} has no {name} ({what}); was it saved with other models, optimizers or "
            "schedulers prepared than this run has?"
        )
    return folder / name


# ---------------------------------------------------------------------------------------------
# Resume: which checkpoint, and whether it belongs to this run
# ---------------------------------------------------------------------------------------------
def resolve_resume_checkpoint(output_dir: str | os.PathLike, resume: str | None) -> str | None:
    """Turn a recipe's ``--resume`` value into a verified checkpoint folder (``None``: fresh run).

    ``"latest"`` picks the newest checkpoint in ``output_dir`` that passes
    :func:`verify_checkpoint`: a newer one that fails is skipped with a warning naming the file
    (a clear error when none passes; a fresh run when there is none at all). Any other value
    must be a checkpoint folder that passes; else the error names the file.
    """
    if resume is None:
        return None
    if resume == "latest":
        checkpoints = list_checkpoints(output_dir)
        if not checkpoints:
            logger.info("--resume: no checkpoint in %s yet; starting from scratch.", output_dir)
            return None
        problems = []
        for path, _ in reversed(checkpoints):
            try:
                verify_checkpoint(path)
            except (CheckpointError, FileNotFoundError) as err:
                _warn_once(f"--resume: skipping checkpoint {path}: {err} Trying the one before.")
                problems.append(str(err))
                continue
            if problems:
                _warn_once(f"--resume: using {path}, the newest checkpoint that passes its checks.")
            return str(path)
        raise CheckpointError(
            f"--resume: no checkpoint in {_checkpoints_root(output_dir)} passes its checks: "
            + " ".join(problems[:3])
            + (f" (and {len(problems) - 3} more)." if len(problems) > 3 else "")
            + f" Start over with {_START_OVER}, or resume from a checkpoint elsewhere (--resume=PATH)."
        )
    path = Path(resume)
    if not path.is_dir():
        raise FileNotFoundError(f"--resume: checkpoint folder {resume} does not exist.")
    read_trainer_state(path)  # an incomplete folder: FileNotFoundError naming trainer_state.json
    try:
        verify_checkpoint(path)
    except CheckpointError as err:
        raise CheckpointError(f"--resume: {err}") from err
    return str(path)


def _read_run(checkpoint: Path) -> RunIdentity | None:
    try:
        return RunIdentity.from_dict(_read_json(checkpoint / RUN_NAME), str(checkpoint / RUN_NAME))
    except (CheckpointError, FileNotFoundError, TypeError):
        return None


def _mismatch_details(checkpoint: Path, state: TrainerState, run: RunIdentity) -> str:
    """``that run has seed 0, this run has seed 1; the configs differ (...)`` for the run that
    wrote ``checkpoint`` (its ``run.json``; the seed in ``trainer_state.json`` without one)."""
    other = _read_run(checkpoint)
    seed = other.seed if other is not None else state.seed
    text = f"that run has seed {seed}, this run has seed {run.seed}"
    diffs = other.differences(run) if other is not None else []
    if diffs:
        text += "; the configs differ (that run -> this run): " + "; ".join(diffs)
    elif state.run_fingerprint is None:
        text += " (that run was written by an hf_reid that did not record its config)"
    elif seed == run.seed:
        text += "; the configs differ"
    return text


@dataclass
class RunFolder:
    """What :func:`prepare_run_folder` decided for a run folder."""

    resume: str | None
    """The verified checkpoint to resume from (``None``: a fresh run)."""
    stale: list[Path] = field(default_factory=list)
    """Checkpoints this run replaces: removed before it writes its first checkpoint."""


def prepare_run_folder(
    output_dir: str | os.PathLike,
    run: RunIdentity,
    *,
    resume: str | None,
    overwrite: bool = False,
    is_main_process: bool = True,
    log: bool = True,
) -> RunFolder:
    """Check that ``output_dir`` may hold this run's checkpoints, and what to resume from.

    * ``resume=None`` in a folder with another run's checkpoints (another fingerprint: seed or
      config): :class:`RunMismatchError` naming both seeds and the differing fields, unless
      ``overwrite`` (the recipes' ``--overwrite_output_dir true``), which deletes them (on the main
      process) now. Checkpoints of an identical run (same fingerprint) are replaced: this run
      reproduces them, so they are removed when it writes its first checkpoint (``stale``).
    * ``resume`` (``"latest"`` or a folder): the checkpoint is verified (see
      :func:`resolve_resume_checkpoint`) and must have this run's fingerprint; checkpoints of
      the run newer than it (a corrupt latest one that was skipped, or a later point of an
      explicit ``--resume=PATH``) are ``stale``: the resumed run writes its own.
    """
    root = _checkpoints_root(output_dir)
    if resume is not None and overwrite:
        raise RunMismatchError(
            "--resume continues the run in the output folder and --overwrite_output_dir deletes its "
            "checkpoints; pass one of them."
        )
    fingerprint = run.fingerprint
    resume_path = resolve_resume_checkpoint(output_dir, resume)
    if resume_path is not None:
        state = read_trainer_state(resume_path)
        if state.run_fingerprint is None:
            _warn_once(
                f"--resume: checkpoint {resume_path} does not record its run; it cannot be checked "
                "to belong to this run (seed and config)."
            )
        elif state.run_fingerprint != fingerprint:
            raise RunMismatchError(
                f"--resume: checkpoint {resume_path} belongs to another run: "
                f"{_mismatch_details(Path(resume_path), state, run)}. Resume with the run's own config "
                f"and seed (its config.yaml), or start over without --resume and with {_START_OVER}."
            )
    own = list_checkpoints(root)
    resumed_here = resume_path is not None and Path(resume_path).resolve().parent == root.resolve()
    if resumed_here:
        point = _order(read_trainer_state(resume_path))
        stale = [p for p, s in own if s.run_fingerprint == state.run_fingerprint and _order(s) > point]
        if stale and log:
            _warn_once(
                f"Resuming from {resume_path}: the newer checkpoint(s) {[p.name for p in stale]} of this "
                "run are replaced; they are removed when the resumed run writes its first checkpoint."
            )
        return RunFolder(resume_path, stale)
    others = [(p, s) for p, s in own if s.run_fingerprint != fingerprint]
    if others:
        if overwrite:
            _remove(root, own, is_main_process, f"{_START_OVER}: deleting the checkpoints of another run")
            return RunFolder(resume_path, [])
        path, state = others[-1]
        raise RunMismatchError(
            f"{root} holds checkpoints of another run (up to {path.name}): {_mismatch_details(path, state, run)}. "
            f"Resume that run with its own config and seed (--resume), write this one elsewhere "
            f"(--output_dir), or pass {_START_OVER} to delete those checkpoints and start over."
        )
    if own and overwrite:
        _remove(root, own, is_main_process, f"{_START_OVER}: deleting the earlier checkpoints")
        return RunFolder(resume_path, [])
    if own and log:
        _warn_once(
            f"{root} holds checkpoints of an identical run (same config and seed {run.seed}); this run "
            "starts from scratch and reproduces them: they are removed when it writes its first "
            "checkpoint. Stop it and pass --resume to continue that run instead."
        )
    return RunFolder(resume_path, [p for p, _ in own])


def _remove(
    root: Path, checkpoints: list[tuple[Path, TrainerState]], is_main_process: bool, why: str
) -> None:
    if not checkpoints:
        return
    _warn_once(f"{why} in {root}: {[p.name for p, _ in checkpoints]}.")
    if is_main_process:
        for path, _ in checkpoints:
            shutil.rmtree(path, ignore_errors=True)


def remove_checkpoints(paths: list[Path], why: str) -> None:
    """Delete checkpoint folders (main process only), logging ``why``."""
    existing = [p for p in paths if p.exists()]
    if existing:
        logger.warning("Removing checkpoint(s) %s: %s.", [str(p) for p in existing], why)
    for path in existing:
        shutil.rmtree(path, ignore_errors=True)


def _prune(root: Path, total_limit: int | None, fingerprint: str | None) -> None:
    """Keep the run's newest ``total_limit`` checkpoints and its stage ends; checkpoints of any
    other run are never touched."""
    checkpoints = [(p, s) for p, s in list_checkpoints(root) if s.run_fingerprint == fingerprint]
    if total_limit is None or len(checkpoints) <= total_limit:
        return
    keep = {path for path, _ in checkpoints[-total_limit:]} if total_limit > 0 else set()
    last_of_stage: dict[int, Path] = {}
    for path, state in checkpoints:
        if state.stage_completed:
            last_of_stage[state.stage_index] = path
    keep |= set(last_of_stage.values())
    for path, _ in checkpoints:
        if path not in keep:
            logger.info("Removing old checkpoint %s (total_limit=%d).", path, total_limit)
            shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# The files of a checkpoint
# ---------------------------------------------------------------------------------------------
def _indexed(stem: str, index: int, suffix: str) -> str:
    return f"{stem}{suffix}" if index == 0 else f"{stem}_{index}{suffix}"


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


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: str | os.PathLike,
    state: TrainerState,
    *,
    total_limit: int | None = None,
    recipe_state: Mapping[str, Stateful] | None = None,
    run: RunIdentity | None = None,
) -> str:
    """Save the full training state as ``checkpoints/checkpoint-<global_step>``, atomically.

    Every process must call this (each writes its RNG state). Returns the checkpoint folder. A
    folder of the same step from another stage (a stage without steps) gets the stage name as
    suffix. ``recipe_state`` objects (identical on every process) are written by the main
    process (:func:`save_recipe_state`). ``run`` is recorded (``run.json`` and the fingerprint in
    ``trainer_state.json``); retention then only counts and removes this run's checkpoints.
    """
    _check_supported(accelerator)
    if accelerator.project_configuration.automatic_checkpoint_naming:
        raise ValueError(
            "save_checkpoint names checkpoints itself; create the Accelerator without "
            "ProjectConfiguration(automatic_checkpoint_naming=True)."
        )
    if run is not None:
        state = dataclasses.replace(state, run_fingerprint=run.fingerprint)
    root = _checkpoints_root(output_dir)
    name = f"checkpoint-{state.global_step}"
    final = root / name
    if final.exists() and accelerator.is_main_process:
        try:
            existing = read_trainer_state(final) if (final / TRAINER_STATE_NAME).is_file() else None
        except CheckpointError:
            existing = None
        if existing is not None and existing.stage_index != state.stage_index:
            name = f"{name}-{state.stage}"
            final = root / name
    name = broadcast_object_list([name], from_process=0)[0]  # the main process decides the name
    final = root / name
    tmp = root / f"{_TMP_PREFIX}{name}"

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        for child in root.iterdir():  # leftovers of a crash during an earlier save
            if child.name.startswith(_TMP_PREFIX):
                shutil.rmtree(child, ignore_errors=True)
        tmp.mkdir()
    accelerator.wait_for_everyone()
    _save_training_files(accelerator, tmp)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if recipe_state:
            save_recipe_state(tmp, recipe_state)
        if run is not None:
            _write_json(tmp / RUN_NAME, run.to_dict())
        _write_checksums(tmp)
        state_path = tmp / TRAINER_STATE_NAME
        with open(state_path, "w", encoding="utf-8") as handle:
            handle.write(state.to_json())
            handle.flush()
            os.fsync(handle.fileno())
        if final.exists():  # re-saving a step (e.g. a stage end at a periodic step): swap
            trash = root / f"{_TMP_PREFIX}old-{name}"
            os.replace(final, trash)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _prune(root, total_limit, state.run_fingerprint)
        logger.info("Saved checkpoint %s (stage %s, epoch %d).", final, state.stage, state.epoch)
    accelerator.wait_for_everyone()
    return str(final)


def load_checkpoint(
    accelerator: Accelerator,
    checkpoint: str | os.PathLike,
    recipe_state: Mapping[str, Stateful] | None = None,
) -> TrainerState:
    """Verify ``checkpoint`` (:func:`verify_checkpoint`), then restore models, optimizers,
    schedulers and registered objects, the grad scaler, this process's RNG states and the
    recipe's state objects; return the trainer state stored with them.

    The prepared objects must be the ones the checkpoint was saved with, prepared in the same
    order (that is what a recipe re-run with the same config does). Only files the checksum list
    holds are read; a file that does not load is a :class:`CheckpointError` naming it.
    """
    _check_supported(accelerator)
    folder = Path(checkpoint)
    state = verify_checkpoint(folder)
    if state.num_processes != accelerator.num_processes:
        logger.warning(
            "Checkpoint %s was written by %d process(es), this run has %d: the data order and "
            "random streams differ, so the resumed run will not match an uninterrupted one.",
            checkpoint,
            state.num_processes,
            accelerator.num_processes,
        )
    manifest = _manifest(folder)
    _load_training_files(accelerator, folder, manifest)
    if recipe_state:
        if not {f"{RECIPE_STATE_NAME}.json", f"{RECIPE_STATE_NAME}.safetensors"} <= set(manifest):
            raise FileNotFoundError(
                f"{folder} holds no recipe state ({RECIPE_STATE_NAME}.json), but this run has state "
                f"objects {sorted(recipe_state)}; was it written by another recipe?"
            )
        load_recipe_state(folder, recipe_state)
    return state
