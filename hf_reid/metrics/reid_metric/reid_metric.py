"""Loader of the Re-ID ranking metric for ``evaluate.load``.

``evaluate.load("<path to hf_reid>/metrics/reid_metric")`` works offline. This file is not
self-contained: it imports ``hf_reid`` (``pip install hf-reid``), so the loaded metric is exactly
``hf_reid.metrics.ReidMetric`` and gives identical numbers. See that class for the inputs.
"""

from hf_reid.metrics.evaluate_metric import ReidMetric

__all__ = ["ReidMetric"]
