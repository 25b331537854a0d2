"""Collator: dataset rows -> a model batch (``pixel_values`` plus the Re-ID metadata tensors).

The collator is where images are decoded, so it works on rows of a dataset whose image column is
cast to ``Image(decode=False)`` (``{"bytes", "path"}`` dicts, decoded here with PIL) as well as on
already decoded PIL images, paths, bytes or uint8 arrays. Skipping the ``datasets`` decode step
matters: it builds a PIL object per row on the main process, while the collator decodes inside
the DataLoader workers (see ``benchmarks/pipeline_speed.py`` for the numbers).

Output keys (each only when its column is in the rows, unless asked for with ``columns``):

=============  ===============  ==================================================
key            row column       value
=============  ===============  ==================================================
pixel_values   image            float32 (B, 3, H, W), normalised by the transform
labels         label            int64 (B,), contiguous training labels
pids           pid              int64 (B,)
camids         camid            int64 (B,)
clothes_ids    clothes_id       int64 (B,)
modalities     modality         int64 (B,), 0 visible / 1 infrared
sources        source           int64 (B,), from ``concatenate_sources``
domains        domain           int64 (B,), names mapped through ``domain_to_index``
captions       captions         list[list[str]] (only when asked for)
=============  ===============  ==================================================

Reproducible augmentation (``seed=``): the random draws of a batch then come from a generator
seeded by ``(seed, epoch, the batch's images)``, so a batch gets the same augmentation whether it
is built in the training process or in any DataLoader worker, and whether its epoch runs from the
start or is resumed mid-way from a checkpoint (a shared random stream cannot give that: the
stream's position depends on how many batches were drawn before, and DataLoaders prefetch).
``set_epoch`` selects the epoch; :func:`hf_reid.training.set_sampler_epoch` (called by the
``StageRunner`` before every epoch) calls it on the DataLoader's ``collate_fn``.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

__all__ = ["ReidCollator", "decode_image"]

OUTPUT_COLUMNS: dict[str, str] = {
    "labels": "label",
    "pids": "pid",
    "camids": "camid",
    "clothes_ids": "clothes_id",
    "modalities": "modality",
    "sources": "source",
    "domains": "domain",
    "captions": "captions",
}
"""Output key -> dataset column."""

_DEFAULT_KEYS = ("labels", "pids", "camids", "clothes_ids", "modalities", "sources", "domains")


def decode_image(value: Any) -> Any:
    """Decode one image cell: ``{"bytes", "path"}`` dict, bytes, a path, or pass PIL / arrays through.

    Returns a PIL image (loaded, so that file handles are closed) or the array / tensor as given;
    the transform converts everything to RGB.
    """
    if isinstance(value, (Image.Image, np.ndarray, torch.Tensor)):
        return value
    source: Any = value
    if isinstance(value, Mapping):
        source = value.get("bytes") or value.get("path")
        if source is None:
            raise ValueError("Image cell has neither 'bytes' nor 'path'.")
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    elif not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"Cannot decode an image from a {type(value).__name__}.")
    image = Image.open(source)
    image.load()  # reads the pixels now (and closes a file Pillow opened itself)
    return image if image.mode == "RGB" else image.convert("RGB")


def _image_key(row: Mapping[str, Any], image_column: str) -> bytes:
    """Bytes that identify a row's image: its ``path`` column, else the cell's path or content."""
    path = row.get("path")
    if isinstance(path, str) and path:
        return path.encode()
    cell = row[image_column]
    if isinstance(cell, Mapping):
        if cell.get("path"):
            return str(cell["path"]).encode()
        cell = cell.get("bytes")
    if isinstance(cell, (bytes, bytearray)):
        return bytes(cell)
    if isinstance(cell, (str, os.PathLike)):
        return os.fspath(cell).encode()
    if isinstance(cell, Image.Image):
        return cell.tobytes()
    if isinstance(cell, torch.Tensor):
        cell = cell.detach().cpu().numpy()
    return np.ascontiguousarray(cell).tobytes()


class ReidCollator:
    """``collate_fn`` for Re-ID training and evaluation DataLoaders.

    Args:
        transform: called on the list of decoded images, returns the ``pixel_values`` batch,
            e.g. :class:`~hf_reid.data.transforms.ReidTrainTransform` or
            :class:`~hf_reid.data.transforms.ReidTestTransform`.
        columns: output keys to return besides ``pixel_values`` (see the module table; dataset
            column names such as ``"pid"`` are accepted too). ``None`` returns every key whose
            column is in the rows, except ``captions`` (ask for it explicitly) and ``domains``
            when the domains are strings and no ``domain_to_index`` is given. A requested key
            whose column is missing raises a ``KeyError``.
        image_column: the column holding the image.
        domain_to_index: maps ``domain`` strings to ints (e.g. :func:`~hf_reid.data.labels.domain_index`).
        generator: ``torch.Generator`` for the random augmentation, for reproducible
            single-process use; leave ``None`` with DataLoader workers (a generator would be
            copied into every worker, giving all of them the same random stream), and the
            workers' own seeded torch RNG is used.
        seed: derive each batch's random draws from ``(seed, epoch, the batch's images)`` instead
            (see the module docstring): reproducible with any number of workers and across a
            resume. Images are identified by the row's ``path`` column, else by their bytes or
            path. With ``persistent_workers=True`` the workers keep the epoch they started with.
    """

    def __init__(
        self,
        transform: Callable[..., torch.Tensor],
        columns: Sequence[str] | None = None,
        image_column: str = "image",
        domain_to_index: Mapping[str, int] | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ):
        if generator is not None and seed is not None:
            raise ValueError(
                "ReidCollator: pass either generator= (one random stream) or seed= (draws derived per "
                "batch), not both."
            )
        self.transform = transform
        self.image_column = image_column
        self.domain_to_index = dict(domain_to_index) if domain_to_index is not None else None
        self.generator = generator
        self.seed = None if seed is None else int(seed)
        self.epoch = 0
        self.columns: list[str] | None = None
        if columns is not None:
            by_column = {column: key for key, column in OUTPUT_COLUMNS.items()}
            unknown = [c for c in columns if c not in OUTPUT_COLUMNS and c not in by_column]
            if unknown:
                raise ValueError(
                    f"ReidCollator: unknown column(s) {unknown}; choose from {list(OUTPUT_COLUMNS)}."
                )
            self.columns = [c if c in OUTPUT_COLUMNS else by_column[c] for c in columns]

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentation the next batches get (used with ``seed``)."""
        self.epoch = int(epoch)

    def _batch_generator(self, rows: Sequence[Mapping[str, Any]]) -> torch.Generator:
        """A generator seeded by (seed, epoch, the identity of every image in the batch, in order)."""
        digest = hashlib.blake2b(f"{self.seed}:{self.epoch}:{len(rows)}".encode(), digest_size=8)
        for row in rows:
            digest.update(_image_key(row, self.image_column))
            digest.update(b"\0")
        return torch.Generator().manual_seed(int.from_bytes(digest.digest(), "little") & (2**63 - 1))

    def _keys(self, row: Mapping[str, Any]) -> list[str]:
        if self.columns is not None:
            missing = [k for k in self.columns if OUTPUT_COLUMNS[k] not in row]
            if missing:
                raise KeyError(
                    f"ReidCollator: rows have no column(s) {[OUTPUT_COLUMNS[k] for k in missing]} "
                    f"(for {missing}); row columns are {sorted(row)}."
                )
            return self.columns
        keys = [k for k in _DEFAULT_KEYS if OUTPUT_COLUMNS[k] in row]
        if "domains" in keys and self.domain_to_index is None and isinstance(row["domain"], str):
            keys.remove("domains")
        return keys

    def _domains(self, values: list[Any]) -> torch.Tensor:
        if self.domain_to_index is None:
            if any(isinstance(v, str) for v in values):
                raise ValueError(
                    "ReidCollator: the 'domain' column holds names; pass domain_to_index "
                    "(e.g. hf_reid.data.labels.domain_index(train)) to turn them into ints."
                )
            return torch.tensor(values, dtype=torch.long)
        try:
            return torch.tensor([self.domain_to_index[v] for v in values], dtype=torch.long)
        except KeyError as error:
            raise KeyError(
                f"ReidCollator: domain {error.args[0]!r} is not in domain_to_index {sorted(self.domain_to_index)}."
            ) from None

    def __call__(self, rows: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]]) -> dict[str, Any]:
        """Collate a list of rows (or a ``dataset[i:j]``-style dict of lists) into a batch."""
        if isinstance(rows, Mapping):
            names = list(rows)
            rows = [dict(zip(names, values)) for values in zip(*(rows[n] for n in names))]
        if len(rows) == 0:
            raise ValueError("ReidCollator got an empty batch.")
        if self.image_column not in rows[0]:
            raise KeyError(
                f"ReidCollator: rows have no image column {self.image_column!r}; columns are {sorted(rows[0])}."
            )
        images = []
        for position, row in enumerate(rows):
            try:
                images.append(decode_image(row[self.image_column]))
            except (OSError, TypeError, ValueError) as error:
                where = row.get("path") or f"row {position} of the batch"
                raise ValueError(f"ReidCollator: cannot decode the image of {where}: {error}") from error
        if self.seed is not None:
            pixel_values = self.transform(images, generator=self._batch_generator(rows))
        elif self.generator is not None:
            pixel_values = self.transform(images, generator=self.generator)
        else:
            pixel_values = self.transform(images)
        batch: dict[str, Any] = {"pixel_values": pixel_values}
        for key in self._keys(rows[0]):
            values = [row[OUTPUT_COLUMNS[key]] for row in rows]
            if key == "captions":
                batch[key] = [[v] if isinstance(v, str) else list(v or []) for v in values]
            elif key == "domains":
                batch[key] = self._domains(values)
            else:
                batch[key] = torch.tensor(values, dtype=torch.long)
        return batch
