"""``load_reid_dataset``: the one entry point that reads any Re-ID layout into a ``DatasetDict``.

    >>> from hf_reid.data import load_reid_dataset
    >>> splits = load_reid_dataset("market1501", "/data/Market-1501-v15.09.15")
    >>> splits["query"][0]["pid"], splits["query"][0]["camid"]

Layouts are looked up by name in a registry that starts with hf_reid's own
(:data:`hf_reid.data.layouts.BUILTIN_LAYOUTS`) and grows with :func:`register_reid_layout`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Literal

import datasets

from .features import REID_FEATURES
from .layouts import BUILTIN_LAYOUTS, ReidBuilder
from .layouts.base import ReidDataError, layout_option_names
from .synthetic.manifest import MANIFEST_FILE, complete_domains, run_problem

logger = logging.getLogger(__name__)

_LAYOUTS: dict[str, type[ReidBuilder]] = dict(BUILTIN_LAYOUTS)


def register_reid_layout(name: str, builder_class: type[ReidBuilder], *, overwrite: bool = False) -> None:
    """Make ``load_reid_dataset(name, ...)`` read a layout of your own.

    ``builder_class`` subclasses :class:`hf_reid.data.layouts.ReidBuilder` (it implements
    ``_scan`` and, optionally, ``_select``), so it yields exactly ``REID_FEATURES`` and gets the
    bad-input checks and caching of the built-in layouts.
    """
    if not (isinstance(builder_class, type) and issubclass(builder_class, ReidBuilder)):
        raise TypeError(
            f"register_reid_layout({name!r}, ...): {builder_class!r} must be a subclass of "
            "hf_reid.data.layouts.ReidBuilder."
        )
    if name in _LAYOUTS and _LAYOUTS[name] is not builder_class and not overwrite:
        raise ValueError(
            f"register_reid_layout: the name {name!r} is taken by {_LAYOUTS[name].__name__}; "
            "pick another name or pass overwrite=True."
        )
    _LAYOUTS[name] = builder_class


def reid_layout_names() -> list[str]:
    """Names ``load_reid_dataset`` accepts."""
    return sorted(_LAYOUTS)


def get_reid_layout(name: str) -> type[ReidBuilder]:
    """The builder class registered as ``name``; raises ``ValueError`` listing the valid names."""
    try:
        return _LAYOUTS[name]
    except KeyError:
        raise ValueError(
            f"Unknown Re-ID layout {name!r}. Valid names: {', '.join(reid_layout_names())}."
        ) from None


def reid_layout_options(name: str) -> list[str]:
    """Options ``load_reid_dataset(name, ...)`` accepts for the layout ``name``."""
    return layout_option_names(get_reid_layout(name).BUILDER_CONFIG_CLASS)


def load_reid_dataset(
    name: str,
    data_dir: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    on_bad_image: Literal["error", "skip"] = "error",
    **options: Any,
) -> datasets.DatasetDict:
    """Read the Re-ID dataset in ``data_dir`` laid out as ``name`` into a ``DatasetDict``.

    Args:
        name: a layout name: market1501, dukemtmc, msmt17, cuhk03_np, cuhk_sysu, sysu_mm01, ltcc,
            mlr_cuhk03, captions, custom, synthpeds, or one added with :func:`register_reid_layout`.
        data_dir: the dataset folder (see docs/DATASETS.md for what each layout expects).
        cache_dir: where the Arrow cache goes (default: the ``datasets`` cache). The cache key
            includes a fingerprint of ``data_dir``, so edited data is re-read.
        on_bad_image: ``"error"`` raises on unreadable images and unparsable file names, naming
            them; ``"skip"`` leaves them out with a warning that counts and names them.
        **options: the layout's typed options, e.g. ``labeled=True`` (cuhk03_np),
            ``msmt_version="v2"`` (msmt17), ``mode="indoor"`` (sysu_mm01); unknown names raise
            with the list of valid ones.

    Returns:
        ``DatasetDict`` with ``train``, ``query`` and ``gallery`` (train only for cuhk_sysu and
        captions) and exactly the columns of :data:`hf_reid.data.REID_FEATURES`. Its attribute
        ``protocol`` is the layout's :class:`~hf_reid.data.protocols.EvalProtocol` under these
        options: how recipe evaluation ranks the query against the gallery (it is not kept by
        ``DatasetDict`` methods that return a new dict, such as ``map``).
    """
    builder_class = get_reid_layout(name)
    valid = layout_option_names(builder_class.BUILDER_CONFIG_CLASS)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"Unknown option(s) for the {name!r} layout: {', '.join(unknown)}. Valid options: {', '.join(valid)}."
        )
    # Pass every option, defaults included: datasets keys the cache on the keyword arguments
    # given, so an explicit default and an omitted one must not build two caches.
    defaults = {
        f.name: f.default
        for f in dataclasses.fields(builder_class.BUILDER_CONFIG_CLASS)
        if f.name in valid and f.default is not dataclasses.MISSING
    }
    builder = builder_class(
        data_dir=os.fspath(data_dir),
        cache_dir=os.fspath(cache_dir) if cache_dir is not None else None,
        **{**defaults, **options, "on_bad_image": on_bad_image},
    )
    builder.download_and_prepare()
    splits = builder.as_dataset()
    for split, dataset in splits.items():
        if dataset.features != REID_FEATURES:
            raise TypeError(
                f"Layout {name!r} ({builder_class.__name__}) produced split {split!r} with columns "
                f"{dataset.features} instead of hf_reid.data.REID_FEATURES."
            )
    splits.protocol = builder.evaluation_protocol(splits)
    return splits


def load_synthpeds_domains(
    root: str | os.PathLike,
    domains: list[str] | None = None,
    **kwargs: Any,
) -> dict[str, datasets.DatasetDict]:
    """Read several SynthPeds domains (``<root>/synthpeds_d0``, ...) at once.

    Returns ``{domain folder name: DatasetDict}`` in sorted order; ``domains`` picks a subset by
    folder name. Keyword arguments go to :func:`load_reid_dataset`. Pids restart in every domain,
    so pool training splits with ``hf_reid.data.concatenate_sources``, which relabels them.

    Only a complete run is read: ``root`` must hold a complete ``synthpeds_manifest.json`` (or,
    for a run of an earlier hf_reid, ``synthpeds_meta.json``), and only the domains it lists are
    available. Otherwise :class:`~hf_reid.data.ReidDataError` names ``root`` and the command
    that regenerates it (an interrupted generation is never read).
    """
    root = Path(root)
    on_disk = sorted(p.name for p in root.glob("synthpeds_d*") if p.is_dir())
    problem = run_problem(root) if on_disk or (root / MANIFEST_FILE).is_file() else None
    if problem is not None:
        raise ReidDataError(
            f"load_synthpeds_domains: {root} does not hold a complete SynthPeds run: {problem[0]}."
        )
    listed = complete_domains(root) if on_disk else None
    available = on_disk if listed is None else [d for d in on_disk if d in listed]
    if not available:
        raise FileNotFoundError(
            f"load_synthpeds_domains: no synthpeds_d* folders in {root}; write them with `hf-reid synth`."
        )
    chosen = available if domains is None else list(domains)
    missing = [d for d in chosen if d not in available]
    if missing:
        raise FileNotFoundError(
            f"load_synthpeds_domains: {root} has no domain(s) {missing}; available: {available}."
        )
    return {domain: load_reid_dataset("synthpeds", root / domain, **kwargs) for domain in chosen}
