"""The end-of-training retrieval evaluation: metrics, ``eval_results.json`` and plots.

:func:`evaluate_retrieval` takes query and gallery features (e.g. from
:func:`~hf_reid.training.features.extract_features`), compares them the way the method's paper
does (``normalize``/``metric`` are config fields that really take effect), ranks the gallery
with :mod:`hf_reid.metrics` and writes the results and plots into the run folder. The metrics
module is imported when called, not when this module is imported.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

__all__ = ["EVAL_RESULTS_NAME", "evaluate_domains", "evaluate_protocol", "evaluate_retrieval"]

logger = logging.getLogger(__name__)

EVAL_RESULTS_NAME = "eval_results.json"
CMC_PLOT_NAME = "cmc.png"
RANKED_LIST_PLOT_NAME = "ranked_list.png"


def _split(side: torch.Tensor | Mapping[str, Any], prefix: str, metadata: dict[str, Any]) -> torch.Tensor:
    """Features of one side; metadata found in an ``extract_features`` dict goes to ``metadata``."""
    if isinstance(side, Mapping):
        if "features" not in side:
            raise KeyError(f"evaluate_retrieval: the {prefix} dict has no 'features' ({sorted(side)}).")
        for key in ("pids", "camids", "clothes_ids", "paths"):
            if key in side:
                metadata.setdefault(f"{prefix}_{key}", side[key])
        side = side["features"]
    if not isinstance(side, torch.Tensor):
        side = torch.as_tensor(np.asarray(side))
    if side.ndim != 2:
        raise ValueError(
            f"evaluate_retrieval: {prefix} features must be (N, D), got shape {tuple(side.shape)}."
        )
    return side.detach().float().cpu()


def _ids(metadata: Mapping[str, Any], key: str, length: int) -> np.ndarray:
    if key not in metadata:
        raise KeyError(f"evaluate_retrieval: metadata needs '{key}' (have {sorted(metadata)}).")
    value = metadata[key]
    array = value.cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if array.shape != (length,):
        raise ValueError(
            f"evaluate_retrieval: metadata '{key}' has shape {array.shape}, expected ({length},)."
        )
    return array


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def evaluate_retrieval(
    query_feats: torch.Tensor | Mapping[str, Any],
    gallery_feats: torch.Tensor | Mapping[str, Any],
    metadata: Mapping[str, Any] | None = None,
    *,
    metric: str = "euclidean",
    normalize: bool = True,
    max_rank: int = 50,
    output_dir: str | os.PathLike | None = None,
    accelerator: Accelerator | None = None,
    rank_kwargs: Mapping[str, Any] | None = None,
    plots: bool = True,
    ranked_list_queries: int = 8,
    ranked_list_top_k: int = 10,
    image_root: str | os.PathLike | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Rank the gallery for every query and report CMC / mAP / mINP.

    Args:
        query_feats, gallery_feats: ``(N, D)`` feature tensors, or the dicts returned by
            ``extract_features`` (their ``pids``, ``camids``, ``clothes_ids`` and ``paths`` then
            fill the metadata).
        metadata: ``q_pids``, ``g_pids``, ``q_camids``, ``g_camids`` (required) and optionally
            ``q_clothes_ids``, ``g_clothes_ids``, ``q_paths``, ``g_paths``; overrides the dicts.
        metric: distance passed to ``hf_reid.metrics.compute_distance_matrix``.
        normalize: L2-normalise the features first (CLIP-ReID: yes; CLIP-FGDI: no).
        max_rank: length of the CMC curve.
        output_dir: where to write ``eval_results.json``, ``cmc.png`` and (when image paths are
            known) ``ranked_list.png``; main process only.
        accelerator: when given, the metrics are computed on the main process and sent to all.
        rank_kwargs: protocol options for ``evaluate_rank`` (``clothes_changing=True``,
            ``camera_groups=...``, ``cross_camera=False``...). With ``clothes_changing`` the
            clothes ids are passed as well.
        plots: write the plots.
        image_root: folder the ``paths`` are relative to, for the ranked-list grid.
        extra: additional entries for ``eval_results.json`` (dataset name, epoch...).

    Returns:
        ``RankResult.to_dict()`` plus the full ``cmc`` curve, ``num_valid_queries``, ``metric``,
        ``normalize``, ``num_query``, ``num_gallery`` and ``extra``; identical on every process.
    """
    meta: dict[str, Any] = {}
    query = _split(query_feats, "q", meta)
    gallery = _split(gallery_feats, "g", meta)
    meta.update(metadata or {})
    if query.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"evaluate_retrieval: query features are {query.shape[1]}-d, gallery features {gallery.shape[1]}-d."
        )
    is_main = accelerator is None or accelerator.is_main_process
    results: dict[str, Any] | None = None
    if is_main:
        results = _compute(
            query,
            gallery,
            meta,
            metric=metric,
            normalize=normalize,
            max_rank=max_rank,
            output_dir=output_dir,
            rank_kwargs=dict(rank_kwargs or {}),
            plots=plots,
            ranked_list_queries=ranked_list_queries,
            ranked_list_top_k=ranked_list_top_k,
            image_root=image_root,
            extra=dict(extra or {}),
        )
    if accelerator is not None and accelerator.num_processes > 1:
        results = broadcast_object_list([results], from_process=0)[0]
    assert results is not None
    return results


def _compute(
    query: torch.Tensor,
    gallery: torch.Tensor,
    meta: Mapping[str, Any],
    *,
    metric: str,
    normalize: bool,
    max_rank: int,
    output_dir: str | os.PathLike | None,
    rank_kwargs: dict[str, Any],
    plots: bool,
    ranked_list_queries: int,
    ranked_list_top_k: int,
    image_root: str | os.PathLike | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    from hf_reid import metrics as reid_metrics  # lazy: metrics may pull in plotting libraries

    q_pids = _ids(meta, "q_pids", len(query))
    g_pids = _ids(meta, "g_pids", len(gallery))
    q_camids = _ids(meta, "q_camids", len(query))
    g_camids = _ids(meta, "g_camids", len(gallery))
    if rank_kwargs.get("clothes_changing"):
        rank_kwargs.setdefault("q_clothes_ids", _ids(meta, "q_clothes_ids", len(query)))
        rank_kwargs.setdefault("g_clothes_ids", _ids(meta, "g_clothes_ids", len(gallery)))
    if normalize:
        query, gallery = F.normalize(query, dim=1), F.normalize(gallery, dim=1)

    distmat = reid_metrics.compute_distance_matrix(query, gallery, metric)
    result = reid_metrics.evaluate_rank(
        distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank, **rank_kwargs
    )
    results = _jsonable(result.to_dict())
    for attribute in ("cmc", "num_valid_queries", "num_invalid_queries"):  # the full curve, for later plots
        if hasattr(result, attribute):
            results.setdefault(attribute, _jsonable(getattr(result, attribute)))
    results.update(
        {
            "metric": metric,
            "normalize": normalize,
            "num_query": len(query),
            "num_gallery": len(gallery),
            **_jsonable(extra),
        }
    )
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / EVAL_RESULTS_NAME).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        logger.info("Wrote %s", out / EVAL_RESULTS_NAME)
        if plots:
            reid_metrics.plot_cmc(result, out / CMC_PLOT_NAME)
            if "q_paths" in meta and "g_paths" in meta:
                _plot_ranked_list(
                    reid_metrics,
                    distmat,
                    meta,
                    (q_pids, g_pids, q_camids, g_camids),
                    out / RANKED_LIST_PLOT_NAME,
                    num_queries=ranked_list_queries,
                    top_k=ranked_list_top_k,
                    image_root=image_root,
                    cross_camera=rank_kwargs.get("cross_camera", True),
                )
    return results


def _plot_ranked_list(
    reid_metrics: Any,
    distmat: Any,
    meta: Mapping[str, Any],
    ids: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    path: Path,
    *,
    num_queries: int,
    top_k: int,
    image_root: str | os.PathLike | None,
    cross_camera: bool,
) -> None:
    """Draw the top-k of evenly spread queries, with the protocol's junk (same pid and camera)
    removed as in the metrics. An unreadable image only costs the plot, with a warning."""
    q_pids, g_pids, q_camids, g_camids = ids
    distances = distmat.cpu().numpy() if isinstance(distmat, torch.Tensor) else np.asarray(distmat)
    num_query = distances.shape[0]
    chosen = np.unique(np.linspace(0, num_query - 1, num=min(num_queries, num_query)).round().astype(int))
    orders = []
    for i in chosen:
        order = np.argsort(distances[i], kind="stable")
        if cross_camera:
            order = order[~((g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i]))]
        orders.append(order)
    top_k = min(top_k, *(len(order) for order in orders))
    if top_k < 1:
        logger.warning("No ranked-list plot: the gallery has no valid entry for the chosen queries.")
        return
    ranked = np.stack([order[:top_k] for order in orders])
    root = Path(image_root) if image_root is not None else None
    q_paths, g_paths = list(meta["q_paths"]), list(meta["g_paths"])
    try:
        reid_metrics.plot_ranked_list(
            [root / q_paths[i] if root else q_paths[i] for i in chosen],
            [root / p if root else p for p in g_paths],
            ranked,
            g_pids[ranked] == q_pids[chosen][:, None],
            path,
            top_k=top_k,
            distances=np.take_along_axis(distances[chosen], ranked, axis=1),
        )
    except (OSError, ValueError) as error:
        logger.warning(
            "Could not draw %s (%s); pass image_root= the folder the paths are relative to.", path, error
        )


def evaluate_domains(
    eval_sets: Sequence[Any],
    embed: Callable[[dict], torch.Tensor],
    *,
    model: torch.nn.Module,
    transform: Any,
    data_args: Any,
    eval_args: Any,
    normalize: bool,
    output_dir: str | os.PathLike,
    accelerator: Accelerator,
    progress_bar: bool = True,
) -> dict[str, dict[str, Any]]:
    """Embed the query and gallery of every evaluation set and rank them under its protocol.

    Args:
        eval_sets: :class:`~hf_reid.training.reid_data.EvalSet` s (``load_data(...).eval_sets``);
            each carries its :class:`~hf_reid.data.protocols.EvalProtocol`.
        embed: ``batch -> features`` (the batch has ``pixel_values``, ``pids``, ``camids``,
            ``clothes_ids``).
        model: the model ``embed`` uses (put in eval mode while embedding).
        transform: the test-time transform of the model's image processor.
        data_args / eval_args: the recipe's ``DataArgs`` and ``EvalArgs``.
        normalize: L2-normalise features before comparing them (as the method's paper does).
        output_dir: the run folder; each set writes ``eval/<name>/`` (results and plots).

    Returns:
        ``{name: metrics}`` (what the recipe writes to ``eval_results.json``). Every entry records
        ``protocol`` and ``num_trials``; a protocol of several trials (random gallery draws or
        splits) reports the mean of every metric over the trials, its standard deviation as
        ``<metric>_std``, and each trial's numbers under ``trials``. The features are extracted
        once; each trial ranks a selection of them.
    """
    from .features import extract_features
    from .reid_data import eval_loader

    results: dict[str, dict[str, Any]] = {}
    for eval_set in eval_sets:
        sides = []
        for split in (eval_set.query, eval_set.gallery):
            loader = accelerator.prepare(eval_loader(split, transform, data_args))
            sides.append(
                extract_features(
                    embed,
                    loader,
                    accelerator,
                    model=model,
                    metadata_keys=["pids", "camids", "clothes_ids", "paths"],
                    desc=f"Embedding {eval_set.name}",
                    progress_bar=progress_bar,
                )
            )
        results[eval_set.name] = evaluate_protocol(
            sides[0],
            sides[1],
            eval_set.protocol,
            metric=eval_args.metric,
            normalize=normalize,
            max_rank=eval_args.max_rank,
            output_dir=Path(output_dir) / "eval" / eval_set.name.replace(" ", "_"),
            accelerator=accelerator,
            plots=eval_args.plots,
            ranked_list_queries=eval_args.ranked_list_queries,
            image_root=eval_set.image_root,
            extra={"dataset": eval_set.name},
        )
        result = results[eval_set.name]
        spread = (
            f" (mean of {result['num_trials']} trials, std {100 * result['mAP_std']:.1f} / "
            f"{100 * result['rank-1_std']:.1f})"
            if result["num_trials"] > 1
            else ""
        )
        logger.info(
            "%s [%s]: mAP %.1f%%, rank-1 %.1f%%%s",
            eval_set.name,
            result["protocol"],
            100 * result["mAP"],
            100 * result["rank-1"],
            spread,
        )
    return results


def _take(side: Mapping[str, Any], index: np.ndarray) -> dict[str, Any]:
    """The rows ``index`` of an ``extract_features`` dict (features and metadata)."""
    rows = torch.as_tensor(index, dtype=torch.long)
    out: dict[str, Any] = {}
    for key, value in side.items():
        if isinstance(value, torch.Tensor):
            out[key] = value[rows]
        elif isinstance(value, (list, tuple)):
            out[key] = [value[i] for i in index.tolist()]
        else:
            out[key] = value
    return out


def _trial_rows(side: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The metadata a protocol's ``select_trial`` reads (numpy arrays)."""
    rows = {}
    for key in ("pids", "camids", "clothes_ids", "paths"):
        if key in side:
            value = side[key]
            rows[key] = value.cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    return rows


def evaluate_protocol(
    query: Mapping[str, Any],
    gallery: Mapping[str, Any],
    protocol: Any,
    *,
    output_dir: str | os.PathLike | None = None,
    accelerator: Accelerator | None = None,
    extra: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """:func:`evaluate_retrieval` under an :class:`~hf_reid.data.protocols.EvalProtocol`.

    ``query`` / ``gallery`` are ``extract_features`` dicts of the pools. One trial ranks them
    with the protocol's rule; several trials rank each trial's selection and report the mean,
    ``<metric>_std`` (population standard deviation over trials) and ``trials``. The plots show
    trial 0. Other keyword arguments go to :func:`evaluate_retrieval`.
    """
    extra = {**(extra or {}), "protocol": protocol.name, "num_trials": protocol.num_trials}
    rank_kwargs = protocol.rank_kwargs()
    if protocol.num_trials == 1 and protocol.select_trial is None:
        return evaluate_retrieval(
            query, gallery, rank_kwargs=rank_kwargs, output_dir=output_dir, accelerator=accelerator,
            extra=extra, **kwargs,
        )  # fmt: skip
    q_rows, g_rows = _trial_rows(query), _trial_rows(gallery)
    trials = []
    for trial in range(protocol.num_trials):
        q_idx, g_idx = protocol.trial_indices(q_rows, g_rows, trial)
        trials.append(
            evaluate_retrieval(  # trial 0 writes the plots; its eval_results.json is replaced below
                _take(query, q_idx),
                _take(gallery, g_idx),
                rank_kwargs=rank_kwargs,
                output_dir=output_dir if trial == 0 else None,
                accelerator=accelerator,
                extra={**extra, "trial": trial},
                **kwargs,
            )
        )
    results = {k: v for k, v in trials[0].items() if k != "trial"}
    for key, value in list(results.items()):
        if isinstance(value, float):
            values = np.array([t[key] for t in trials], dtype=np.float64)
            results[key] = float(values.mean())
            results[f"{key}_std"] = float(values.std())
    results["cmc"] = np.mean([t["cmc"] for t in trials], axis=0).tolist()
    results["num_query"] = [t["num_query"] for t in trials]
    results["num_gallery"] = [t["num_gallery"] for t in trials]
    results["trials"] = [{k: v for k, v in t.items() if isinstance(v, float) or k == "trial"} for t in trials]
    if output_dir is not None and (accelerator is None or accelerator.is_main_process):
        path = Path(output_dir) / EVAL_RESULTS_NAME
        path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results
