"""The ranking metrics computed straight from their definition, for checking the fast kernel.

:func:`hf_reid.metrics.evaluate_rank` never sorts a gallery row (it counts negatives between
positives, see ``rank.py``). This module does what the definition says — a stable sort of every
row (ties in gallery order), junk removed, positions of the positives — in plain NumPy, one query
at a time. It is slow (a full sort per query) and is used by the tests and by
``benchmarks/eval_speed.py`` to show that the fast path gives the same numbers.
"""

from __future__ import annotations

import numpy as np

__all__ = ["rank_by_sorting"]


def rank_by_sorting(
    distmat: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, junk: np.ndarray, max_rank: int = 50
) -> tuple[np.ndarray, float, float, int]:
    """CMC (ranks 1..``max_rank``), mAP, mINP and the number of valid queries.

    Args:
        distmat: ``(Q, G)`` distances (smaller is closer).
        q_pids, g_pids: identities of the queries and gallery entries.
        junk: ``(Q, G)`` boolean, the entries removed from each query's ranked list (Market-1501:
            same identity and same camera).
        max_rank: length of the CMC curve.

    Queries without a positive left are not valid and are skipped, as in every anchor.
    """
    hits = np.zeros(max_rank)
    aps, inps = [], []
    for i in range(distmat.shape[0]):
        order = np.argsort(distmat[i], kind="stable")
        good = (g_pids[order] == q_pids[i])[~junk[i][order]]
        if not good.any():
            continue
        positions = np.flatnonzero(good) + 1
        aps.append(np.mean(np.arange(1, len(positions) + 1) / positions))
        inps.append(len(positions) / positions[-1])
        if positions[0] <= max_rank:
            hits[positions[0] - 1 :] += 1
    if not aps:
        raise ValueError("No query has a positive in the gallery after junk removal.")
    return hits / len(aps), float(np.mean(aps)), float(np.mean(inps)), len(aps)
