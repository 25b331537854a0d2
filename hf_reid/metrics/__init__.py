"""Re-ID evaluation: CMC / mAP / mINP, distances, re-ranking, query expansion, retrieval,
the ``evaluate`` metric and plots.

``ReidMetric`` (imports ``evaluate``) and the plotting functions (import ``matplotlib``) are
loaded on first use, so ``from hf_reid.metrics import evaluate_rank`` stays light.

The ``evaluate`` metric loads from any working directory with :func:`load_reid_metric` (or
``evaluate.load(REID_METRIC)``: :data:`REID_METRIC` is the absolute path of its folder).
"""

from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .distance import compute_distance_matrix
from .query_expansion import average_query_expansion
from .rank import RankResult, evaluate_rank
from .rerank import re_ranking, re_ranking_features
from .retrieval import GalleryIndex, HNSWParams, IVFParams

if TYPE_CHECKING:
    from .evaluate_metric import ReidMetric
    from .plots import plot_cmc, plot_ranked_list

_LAZY = {"ReidMetric": ".evaluate_metric", "plot_cmc": ".plots", "plot_ranked_list": ".plots"}

REID_METRIC: str = str(Path(__file__).resolve().parent / "reid_metric")
"""Absolute path of the ``evaluate`` metric folder: ``evaluate.load(REID_METRIC)`` works from any
working directory, offline (the folder's loader imports :class:`ReidMetric` from hf_reid)."""


def load_reid_metric(config_name: str | None = None, **kwargs: Any):
    """``evaluate.load(REID_METRIC, config_name, **kwargs)``: the Re-ID ranking metric as an
    ``evaluate`` module (``config_name="with_camids"`` streams query camera ids with the
    predictions; see :class:`ReidMetric` for the inputs)."""
    import evaluate

    return evaluate.load(REID_METRIC, config_name, **kwargs)


__all__ = [
    "REID_METRIC",
    "GalleryIndex",
    "HNSWParams",
    "IVFParams",
    "RankResult",
    "ReidMetric",
    "average_query_expansion",
    "compute_distance_matrix",
    "evaluate_rank",
    "load_reid_metric",
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
