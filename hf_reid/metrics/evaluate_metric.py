"""The Re-ID ranking metric as an ``evaluate.Metric``.

Query embeddings and pids go through ``add_batch`` (so evaluation can stream over batches or be
gathered across processes); the gallery, whose size differs from the queries', is passed to
``compute``. The numbers are those of [`evaluate_rank`] on [`compute_distance_matrix`].

Two configurations:

- ``"default"``: ``add_batch(predictions=query_embeddings, references=query_pids)`` and
  ``compute(query_camids=..., gallery_embeddings=..., gallery_pids=..., gallery_camids=...)``.
- ``"with_camids"``: the query cameras are streamed too:
  ``add_batch(predictions=..., references=..., query_camids=...)``.

Example:
    ```python
    metric = ReidMetric()  # or evaluate.load("<hf_reid>/metrics/reid_metric")
    for batch in query_batches:
        metric.add_batch(predictions=batch["embeddings"], references=batch["pid"])
    metric.compute(query_camids=q_cams, gallery_embeddings=g_emb, gallery_pids=g_pids, gallery_camids=g_cams)
    # {'rank-1': ..., 'rank-5': ..., 'rank-10': ..., 'mAP': ..., 'mINP': ..., 'num_valid_queries': ..., ...}
    ```
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

from .distance import compute_distance_matrix
from .rank import evaluate_rank
from .rerank import re_ranking_features

__all__ = ["ReidMetric"]

_DESCRIPTION = """\
Person re-identification ranking metrics under the Market-1501 protocol: CMC (rank-k matching
rate), mAP and mINP. Same-identity same-camera gallery entries are ignored per query, queries
without a true match are skipped (and counted), ties are broken by gallery index. Optional
k-reciprocal re-ranking, clothes-changing and camera-group protocols.
"""

_CITATION = """\
@inproceedings{zheng2015scalable,
  title={Scalable Person Re-identification: A Benchmark},
  author={Zheng, Liang and Shen, Liyue and Tian, Lu and Wang, Shengjin and Wang, Jingdong and Tian, Qi},
  booktitle={ICCV},
  year={2015}
}
@article{ye2021deep,
  title={Deep Learning for Person Re-identification: A Survey and Outlook},
  author={Ye, Mang and Shen, Jianbing and Lin, Gaojie and Xiang, Tao and Shao, Ling and Hoi, Steven C. H.},
  journal={IEEE TPAMI},
  year={2021}
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: query embeddings, one float vector per query.
    references: query identities (int).
    query_camids: query cameras (int); in the "with_camids" configuration a streamed column.
    gallery_embeddings: (num_gallery, dim) gallery embeddings.
    gallery_pids: gallery identities.
    gallery_camids: gallery cameras. Leave both camera arguments out for data without cameras
        (no gallery entry is then excluded; see evaluate_rank(cross_camera=False)).
    metric: "cosine" (default), "euclidean" or "sqeuclidean".
    max_rank: length of the CMC curve (default 50).
    re_rank: apply k-reciprocal re-ranking with k1, k2, lambda_value (default 20, 6, 0.3) on
        the re_rank_metric distance (default "euclidean": Zhong et al.'s formulation); `metric`
        is then not used.
    single_gallery_shot, seed, query_clothes_ids, gallery_clothes_ids, clothes_changing,
    camera_groups: as in hf_reid.metrics.evaluate_rank.
    return_cmc: also return the whole CMC curve as a list under "cmc".
Returns:
    rank-1, rank-5, rank-10, mAP, mINP (floats in [0, 1]), num_valid_queries, num_invalid_queries.
"""


class ReidMetric(evaluate.Metric):
    """CMC / mAP / mINP of query embeddings against a gallery (see the module docstring)."""

    def _info(self) -> evaluate.MetricInfo:
        columns = {
            "predictions": datasets.Sequence(datasets.Value("float32")),
            "references": datasets.Value("int64"),
        }
        if self.config_name == "with_camids":
            columns["query_camids"] = datasets.Value("int64")
        elif self.config_name != "default":
            raise ValueError(
                f"Unknown ReidMetric configuration {self.config_name!r}; use 'default' or 'with_camids'."
            )
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(columns),
        )

    def _compute(
        self,
        predictions,
        references,
        query_camids=None,
        gallery_embeddings=None,
        gallery_pids=None,
        gallery_camids=None,
        metric: str = "cosine",
        max_rank: int = 50,
        re_rank: bool = False,
        k1: int = 20,
        k2: int = 6,
        lambda_value: float = 0.3,
        re_rank_metric: str = "euclidean",
        single_gallery_shot: bool = False,
        seed: int = 0,
        query_clothes_ids=None,
        gallery_clothes_ids=None,
        clothes_changing: bool = False,
        camera_groups=None,
        return_cmc: bool = False,
    ) -> dict:
        if gallery_embeddings is None or gallery_pids is None:
            raise ValueError("ReidMetric.compute needs `gallery_embeddings` and `gallery_pids`.")
        if (query_camids is None) != (gallery_camids is None):
            raise ValueError(
                "Pass both `query_camids` and `gallery_camids` (standard protocol) or neither (data "
                "without cameras)."
            )
        query = np.asarray(predictions, dtype=np.float32)
        gallery = gallery_embeddings
        if not hasattr(gallery, "shape"):
            gallery = np.asarray(gallery, dtype=np.float32)
        if query.ndim != 2:
            raise ValueError(
                f"`predictions` must be one embedding vector per query, got shape {query.shape}."
            )
        if re_rank:
            distmat = re_ranking_features(query, gallery, k1, k2, lambda_value, metric=re_rank_metric)
        else:
            distmat = compute_distance_matrix(query, gallery, metric=metric)
        result = evaluate_rank(
            distmat,
            np.asarray(references),
            gallery_pids,
            query_camids,
            gallery_camids,
            max_rank,
            cross_camera=query_camids is not None,
            single_gallery_shot=single_gallery_shot,
            seed=seed,
            q_clothes_ids=query_clothes_ids,
            g_clothes_ids=gallery_clothes_ids,
            clothes_changing=clothes_changing,
            camera_groups=camera_groups,
        )
        output: dict = result.to_dict()
        output["num_valid_queries"] = result.num_valid_queries
        output["num_invalid_queries"] = result.num_invalid_queries
        if return_cmc:
            output["cmc"] = result.cmc.tolist()
        return output
