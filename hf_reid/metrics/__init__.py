"""Re-ID evaluation: CMC / mAP / mINP, distances, re-ranking, query expansion, retrieval,
the ``evaluate`` metric and plots."""
