"""Re-ID evaluation: CMC / mAP / mINP, distances, re-ranking, query expansion, retrieval,
the ``evaluate`` metric and plots.

``ReidMetric`` (imports ``evaluate``) and the plotting functions (import ``matplotlib``) are
loaded on first use, so ``from hf_reid.metrics import evaluate_rank`` stays light.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .distance import compute_distance_matrix
from .query_expansion import average_query_expansion
from .rank import RankResult, evaluate_rank
from .rerank import re_ranking, re_ranking_features
from .retrieval import GalleryIndex

if TYPE_CHECKING:
    from .evaluate_metric import ReidMetric
    from .plots import plot_cmc, plot_ranked_list

_LAZY = {"ReidMetric": ".evaluate_metric", "plot_cmc": ".plots", "plot_ranked_list": ".plots"}

__all__ = [
    "GalleryIndex",
    "RankResult",
    "ReidMetric",
    "average_query_expansion",
    "compute_distance_matrix",
    "evaluate_rank",
    "plot_cmc",
    "plot_ranked_list",
    "re_ranking",
    "re_ranking_features",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
