"""Feature extraction over a dataloader, across processes, with an on-disk cache.

:func:`extract_features` embeds every batch without gradients in eval mode and gathers the
results of all processes in dataset order (``gather_for_metrics`` drops the samples Accelerate
duplicates to even out the last batch). :func:`load_or_extract` caches the result in a file, as
CLIP-ReID's stage 1 does with the image features of the frozen encoder.
:class:`FeatureDataset` turns the result back into a dataset, e.g. to iterate cached features in
shuffled mini-batches.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from torch import nn
from tqdm.auto import tqdm

__all__ = ["FeatureDataset", "extract_features", "fingerprint", "load_or_extract"]

logger = logging.getLogger(__name__)

Features = dict[str, Any]
"""``{"features": Tensor (N, D), "pids": Tensor (N,), "camids": Tensor (N,), "paths": [str], ...}``"""


def _metadata_keys(batch: Mapping[str, Any], size: int, skip: str) -> list[str]:
    keys = []
    for key, value in batch.items():
        if key == skip:
            continue
        per_sample_tensor = isinstance(value, torch.Tensor) and value.ndim == 1 and value.shape[0] == size
        per_sample_strings = (
            isinstance(value, (list, tuple)) and len(value) == size and all(isinstance(v, str) for v in value)
        )
        if per_sample_tensor or per_sample_strings:
            keys.append(key)
    return keys


def extract_features(
    embed_fn: Callable[[Any], torch.Tensor],
    dataloader: Iterable[Mapping[str, Any]],
    accelerator: Accelerator,
    *,
    model: nn.Module | Sequence[nn.Module] | None = None,
    feature_key: str = "features",
    metadata_keys: Sequence[str] | None = None,
    to_cpu: bool = True,
    desc: str = "Extracting features",
    progress_bar: bool = True,
) -> Features:
    """Embed every batch and return the features with the batch metadata, from all processes.

    Args:
        embed_fn: ``batch -> Tensor (B, D)``, e.g.
            ``lambda b: model(pixel_values=b["pixel_values"]).embeddings``.
        dataloader: the prepared evaluation dataloader, yielding dict batches.
        accelerator: the run's Accelerator; every process must call this function.
        model: module(s) to put in eval mode while extracting (their mode is restored after);
            defaults to ``embed_fn`` when that is a module.
        feature_key: the key of the features in the result.
        metadata_keys: batch entries to return alongside; by default every 1-D tensor and every
            list of strings with one entry per sample (``pids``, ``camids``, ``paths``...).
        to_cpu: move the gathered tensors to the CPU (features as float32).

    Returns:
        ``{feature_key: Tensor (N, D), <metadata key>: Tensor (N,) or list}`` in dataset order.
    """
    modules: list[nn.Module]
    if model is None:
        modules = [embed_fn] if isinstance(embed_fn, nn.Module) else []
    else:
        modules = [model] if isinstance(model, nn.Module) else list(model)
    modes = [m.training for m in modules]
    chunks: dict[str, list[Any]] = {}
    try:
        for module in modules:
            module.eval()
        with torch.no_grad():
            bar = tqdm(
                desc=desc, disable=not (progress_bar and accelerator.is_local_main_process), leave=False
            )
            for batch in dataloader:
                embeddings = embed_fn(batch)
                if not isinstance(embeddings, torch.Tensor) or embeddings.ndim != 2:
                    raise TypeError(
                        f"extract_features: embed_fn must return a (batch, dim) tensor, got "
                        f"{type(embeddings).__name__} {getattr(embeddings, 'shape', '')}."
                    )
                keys = metadata_keys
                if keys is None:
                    keys = _metadata_keys(batch, embeddings.shape[0], feature_key)
                gathered = accelerator.gather_for_metrics(embeddings.contiguous())
                chunks.setdefault(feature_key, []).append(gathered.float().cpu() if to_cpu else gathered)
                for key in keys:
                    if key not in batch:
                        raise KeyError(
                            f"extract_features: metadata key '{key}' is not in the batch ({sorted(batch)})."
                        )
                    value = batch[key]
                    if isinstance(value, torch.Tensor):
                        value = accelerator.gather_for_metrics(value.contiguous())
                        value = value.cpu() if to_cpu else value
                    else:
                        value = list(accelerator.gather_for_metrics(list(value), use_gather_object=True))
                    chunks.setdefault(key, []).append(value)
                bar.update(1)
            bar.close()
    finally:
        for module, mode in zip(modules, modes):
            module.train(mode)
    if feature_key not in chunks:
        raise ValueError("extract_features: the dataloader yielded no batches.")
    result: Features = {}
    for key, parts in chunks.items():
        if isinstance(parts[0], torch.Tensor):
            result[key] = torch.cat(parts, dim=0)
        else:
            result[key] = [item for part in parts for item in part]
    return result


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts (configs, model names, dataset sizes...)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def load_or_extract(
    path: str | os.PathLike,
    extract: Callable[[], Features],
    accelerator: Accelerator,
    *,
    key: str,
) -> Features:
    """Load cached features from ``path`` if they were made with the same ``key``; else extract.

    ``extract`` (typically a call of :func:`extract_features`) runs on every process when the
    cache misses; the main process writes the result (to a temporary file, then renamed, so an
    interrupted write is never read back). ``key`` identifies what the features depend on, e.g.
    ``fingerprint(model_name, image_size, dataset_fingerprint)``; a different key re-extracts.
    ``path`` must be visible to every process.
    """
    path = Path(path)
    cached = None
    if path.is_file():
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # an unreadable cache is rebuilt, not fatal
            logger.warning("Feature cache %s is unreadable (%s); extracting again.", path, err)
        else:
            if isinstance(payload, dict) and payload.get("key") == key:
                cached = payload["features"]
            else:
                logger.info("Feature cache %s was made with another key; extracting again.", path)
    # Every process must take the same branch (extract() runs collectives).
    hits = gather_object([cached is not None])
    if all(hits):
        logger.info("Loaded cached features from %s.", path)
        return cached
    features = extract()
    if accelerator.is_main_process:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{path.name}")
        torch.save({"key": key, "features": features}, tmp)
        os.replace(tmp, path)
        logger.info("Cached features in %s.", path)
    accelerator.wait_for_everyone()
    return features


class FeatureDataset(torch.utils.data.Dataset):
    """A map-style dataset over equally long tensors/lists, yielding one dict per sample.

    ``DataLoader(FeatureDataset(cache), batch_size=64, shuffle=True)`` iterates cached features
    in shuffled mini-batches with the last partial batch kept (CLIP-ReID stage 1).
    """

    def __init__(self, columns: Mapping[str, Any]) -> None:
        lengths = {key: len(value) for key, value in columns.items()}
        if not lengths:
            raise ValueError("FeatureDataset needs at least one column.")
        if len(set(lengths.values())) != 1:
            raise ValueError(f"FeatureDataset columns have different lengths: {lengths}.")
        self.columns = dict(columns)
        self._length = next(iter(lengths.values()))

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {key: value[index] for key, value in self.columns.items()}
