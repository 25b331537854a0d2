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

Inputs are checked as they arrive, because the Arrow columns behind ``add_batch`` would silently
truncate a float identity (1.7 -> 1): identities and cameras must be whole numbers (integer
arrays, or floats such as 3.0; anything else raises naming the argument), and every embedding
must have the size of the first one (a batch of another size raises at once, naming both sizes).
"""

from __future__ import annotations

from typing import Any

import datasets
import evaluate
import numpy as np
import torch

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


def integer_ids(values: Any, name: str) -> np.ndarray | None:
    """``values`` (identities or cameras, 1-D) as int64, or ``None`` when ``values`` is ``None``.

    Integer arrays pass; floats must be whole numbers (3.0), since Arrow would truncate 1.7 to
    1 and merge two identities without a word.

    Raises:
        ValueError: naming ``name`` and the first offending entry: a float that is not a whole
            number (or NaN, inf, outside int64), or not a 1-D sequence.
        TypeError: naming ``name``: strings, booleans or other non-numbers.
    """
    if values is None:
        return None
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        array = np.asarray(values)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"`{name}` must be a 1-D sequence of integers.") from None
    if array.ndim != 1:
        raise ValueError(f"`{name}` must be a 1-D sequence of integers, got shape {array.shape}.")
    if array.dtype.kind == "i" or (array.dtype.kind == "u" and array.itemsize < 8):
        return array.astype(np.int64)
    if array.dtype.kind == "u":
        if array.size and int(array.max()) > np.iinfo(np.int64).max:
            raise ValueError(f"`{name}` holds values above the int64 range (max {int(array.max())}).")
        return array.astype(np.int64)
    if array.dtype.kind == "f":
        whole = np.isfinite(array) & (np.abs(array) < 2.0**63)
        whole[whole] = array[whole] == np.round(array[whole])
        if not whole.all():
            index = int(np.argmin(whole))
            raise ValueError(
                f"`{name}` must hold integers; entry {index} is {array[index].item()!r}, not a whole number "
                "(ReidMetric does not round identities or cameras)."
            )
        return array.astype(np.int64)
    kind = "booleans" if array.dtype.kind == "b" else f"{array.dtype} values"
    raise TypeError(
        f"`{name}` must hold integers, got {kind}; map identity or camera names to integers first, "
        "e.g. np.unique(names, return_inverse=True)[1]."
    )


def embedding_sizes(predictions: Any) -> set[int]:
    """The sizes of the embeddings in a batch (2-D array or tensor, or a list of vectors).

    Raises:
        ValueError: naming ``predictions``, when it is not one vector per query.
    """
    shape = getattr(predictions, "shape", None)
    if shape is not None:
        if len(shape) != 2:
            raise ValueError(
                f"`predictions` must be one embedding vector per query (2-D), got shape {tuple(shape)}."
            )
        return {int(shape[1])} if shape[0] else set()
    sizes = set()
    for index, row in enumerate(predictions):
        try:
            sizes.add(len(row))
        except TypeError:
            raise ValueError(
                f"`predictions` must be one embedding vector per query; entry {index} is {row!r:.60}."
            ) from None
    return sizes


class ReidMetric(evaluate.Metric):
    """CMC / mAP / mINP of query embeddings against a gallery (see the module docstring)."""

    _embedding_size: int | None = None
    """Size of the embeddings added since the last ``compute`` (set by the first batch)."""

    def add_batch(self, *, predictions=None, references=None, **kwargs) -> None:
        """Check a batch (whole-number identities and cameras, embeddings of one size), then add it."""
        if predictions is not None:
            self._check_sizes(embedding_sizes(predictions))
        references = integer_ids(references, "references")
        if kwargs.get("query_camids") is not None:
            kwargs["query_camids"] = integer_ids(kwargs["query_camids"], "query_camids")
        super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs) -> None:
        """Check one query (as :meth:`add_batch` does), then add it."""
        if prediction is not None:
            self._check_sizes(embedding_sizes([prediction]))
        if reference is not None:
            reference = int(integer_ids([reference], "reference")[0])
        if kwargs.get("query_camids") is not None:
            kwargs["query_camids"] = int(integer_ids([kwargs["query_camids"]], "query_camids")[0])
        super().add(prediction=prediction, reference=reference, **kwargs)

    def compute(self, *, predictions=None, references=None, **kwargs) -> dict | None:
        """As ``evaluate.Metric.compute``; the next batches may then have another embedding size."""
        try:
            return super().compute(predictions=predictions, references=references, **kwargs)
        finally:
            self._embedding_size = None

    def _check_sizes(self, sizes: set[int]) -> None:
        if len(sizes) > 1:
            raise ValueError(
                f"`predictions`: the embeddings of this batch have different sizes {sorted(sizes)}; every "
                "embedding must have the same size."
            )
        if not sizes:
            return
        (size,) = sizes
        if self._embedding_size is None:
            self._embedding_size = size
        elif size != self._embedding_size:
            raise ValueError(
                f"`predictions`: this batch's embeddings have {size} values but the earlier batches' have "
                f"{self._embedding_size}; every embedding must come from the same model and pooling."
            )

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
        sizes = embedding_sizes(predictions)
        if len(sizes) > 1:  # batches gathered from processes or runs with other models
            raise ValueError(
                f"`predictions`: the query embeddings have different sizes {sorted(sizes)}; every "
                "embedding must come from the same model and pooling."
            )
        query = np.asarray(predictions, dtype=np.float32)
        gallery = gallery_embeddings
        if not hasattr(gallery, "shape"):
            try:
                gallery = np.asarray(gallery, dtype=np.float32)
            except (TypeError, ValueError):
                raise ValueError(
                    "`gallery_embeddings` must be a (num_gallery, dim) array of numbers, one row per image."
                ) from None
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
            integer_ids(references, "references"),
            integer_ids(gallery_pids, "gallery_pids"),
            integer_ids(query_camids, "query_camids"),
            integer_ids(gallery_camids, "gallery_camids"),
            max_rank,
            cross_camera=query_camids is not None,
            single_gallery_shot=single_gallery_shot,
            seed=seed,
            q_clothes_ids=integer_ids(query_clothes_ids, "query_clothes_ids"),
            g_clothes_ids=integer_ids(gallery_clothes_ids, "gallery_clothes_ids"),
            clothes_changing=clothes_changing,
            camera_groups=camera_groups,
        )
        output: dict = result.to_dict()
        output["num_valid_queries"] = result.num_valid_queries
        output["num_invalid_queries"] = result.num_invalid_queries
        if return_cmc:
            output["cmc"] = result.cmc.tolist()
        return output
