"""Contiguous training labels for Re-ID splits, alone or pooled from several sources.

Classifier heads need labels ``0 .. C-1``, while Re-ID pids are sparse (Market-1501 train pids
run from 2 to 1500) and repeat across datasets (pid 2 of Market and pid 2 of DukeMTMC are
different people). :func:`relabel` maps one split's pids to contiguous labels;
:func:`concatenate_sources` pools several splits, numbering each source's identities after the
previous source's so that labels never collide, and records where each row came from.

Only the label columns are read (``dataset[column]`` does not decode images), so both are quick
on large splits.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
from datasets import Dataset, DatasetDict, Value, concatenate_datasets

logger = logging.getLogger(__name__)

__all__ = ["concatenate_sources", "domain_index", "relabel"]


def _column(dataset: Dataset, column: str, where: str) -> np.ndarray:
    if not isinstance(dataset, Dataset):
        hint = " (pick a split, e.g. dataset['train'])" if isinstance(dataset, DatasetDict) else ""
        raise TypeError(f"{where}: expected a datasets.Dataset, got {type(dataset).__name__}{hint}.")
    if column not in dataset.column_names:
        raise KeyError(f"{where}: no column {column!r}; the dataset has {dataset.column_names}.")
    return np.asarray(dataset[column])


def _with_column(dataset: Dataset, name: str, values: np.ndarray) -> Dataset:
    """Add (or replace) an int64 column."""
    if name in dataset.column_names:
        dataset = dataset.remove_columns(name)
    return dataset.add_column(name, values.astype(np.int64), feature=Value("int64"))


def relabel(dataset: Dataset, column: str = "pid", out_column: str = "label") -> tuple[Dataset, dict]:
    """Add ``out_column`` holding contiguous labels ``0 .. C-1`` for the values of ``column``.

    Labels follow the sorted order of the distinct values, so the result does not depend on row
    order. Returns the new dataset and the mapping ``{value: label}`` (needed to map predictions
    back to pids). An existing ``out_column`` is replaced.
    """
    values = _column(dataset, column, "relabel")
    unique, labels = np.unique(values, return_inverse=True)
    mapping = {value.item() if hasattr(value, "item") else value: i for i, value in enumerate(unique)}
    logger.info(
        "relabel: %d rows, %d distinct %r values -> %r 0..%d",
        len(values),
        len(unique),
        column,
        out_column,
        len(unique) - 1,
    )
    return _with_column(dataset, out_column, labels), mapping


def concatenate_sources(
    datasets: Mapping[str, Dataset],
    column: str = "pid",
    out_column: str = "label",
    source_column: str = "source",
) -> Dataset:
    """Pool several training splits with globally unique contiguous labels.

    Source ``i`` (in the mapping's order) gets labels ``offset_i .. offset_i + C_i - 1`` where
    ``offset_i`` is the number of identities of the sources before it, so equal pids of different
    sources never share a label. Every row also gets ``source_column`` = ``i``; the ``domain``
    string column of the Re-ID schema is kept as it is. Use :class:`~hf_reid.data.samplers.MixedPKSampler`
    with ``source_index=dataset["source"]`` to draw fixed shares per source.
    """
    if not isinstance(datasets, Mapping) or not datasets:
        raise ValueError("concatenate_sources expects a non-empty {name: Dataset} mapping.")
    parts, offset = [], 0
    for index, (name, dataset) in enumerate(datasets.items()):
        values = _column(dataset, column, f"concatenate_sources[{name!r}]")
        if len(values) == 0:
            raise ValueError(f"concatenate_sources: source {name!r} is empty.")
        _, labels = np.unique(values, return_inverse=True)
        part = _with_column(dataset, out_column, labels + offset)
        part = _with_column(part, source_column, np.full(len(values), index))
        logger.info("concatenate_sources: %r -> labels %d..%d", name, offset, offset + labels.max())
        offset += int(labels.max()) + 1
        parts.append(part)
    reference = parts[0].features
    for name, part in zip(datasets, parts):
        if part.features != reference:
            raise ValueError(
                f"concatenate_sources: source {name!r} has features {part.features}, which differ from "
                f"{next(iter(datasets))!r}'s {reference}; cast both to hf_reid.data.REID_FEATURES first."
            )
    return concatenate_datasets(parts)


def domain_index(dataset: Dataset, column: str = "domain") -> dict[str, int]:
    """``{domain name: index}`` over the sorted distinct values of ``column`` (for the collator)."""
    return {
        str(value): i
        for i, value in enumerate(sorted(set(_column(dataset, column, "domain_index").tolist())))
    }
