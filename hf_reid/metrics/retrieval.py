"""Exact top-k search of a gallery, for galleries too large for a full distance matrix.

Two backends return the same neighbours: ``"torch"`` (chunked brute force on CPU or GPU, ties
broken by gallery index) and ``"faiss"`` (``faiss-cpu``'s flat indexes, the optional ``faiss``
extra: ``pip install "hf-reid[faiss]"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from ._inputs import ArrayLike, float_matrix, resolve_device
from ._select import smallest_k
from .distance import Metric, check_metric, pairwise_block, prepare_features

__all__ = ["GalleryIndex"]

_CHUNK_ELEMENTS = 1 << 23


class GalleryIndex:
    """An exact nearest-neighbour index over gallery embeddings.

    Args:
        embeddings: ``(G, dim)`` gallery embeddings.
        ids: optional labels of the gallery entries (pids, paths, ...), returned by ``lookup``.
        metric: ``"cosine"`` (1 - cosine similarity), ``"euclidean"`` or ``"sqeuclidean"``.
        backend: ``"torch"`` or ``"faiss"``.
        device: torch backend only: where the gallery lives and the search runs.
        chunk_size: torch backend only: queries searched at once (default: about 8M distances).

    Example:
        ```python
        index = GalleryIndex(gallery_embeddings, ids=gallery_paths)
        distances, indices = index.search(query_embeddings, top_k=10)
        best_paths = index.lookup(indices)
        ```
    """

    def __init__(
        self,
        embeddings: ArrayLike,
        ids: Sequence[Any] | np.ndarray | None = None,
        metric: Metric = "cosine",
        backend: Literal["torch", "faiss"] = "torch",
        *,
        device: str | torch.device | None = None,
        chunk_size: int | None = None,
    ):
        check_metric(metric)
        if backend not in ("torch", "faiss"):
            raise ValueError(f"Unknown backend {backend!r}; choose 'torch' or 'faiss'.")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"`chunk_size` must be positive, got {chunk_size}.")
        self.metric = metric
        self.backend = backend
        self.chunk_size = chunk_size
        self.device = resolve_device(device, embeddings) if backend == "torch" else torch.device("cpu")
        self.dim: int | None = None
        self._gallery: torch.Tensor | None = None
        self._gallery_sq: torch.Tensor | None = None
        self._faiss_index = None
        self._ids: list[Any] | None = [] if ids is not None else None
        self.add(embeddings, ids)

    def __len__(self) -> int:
        if self._faiss_index is not None:
            return int(self._faiss_index.ntotal)
        return 0 if self._gallery is None else self._gallery.shape[0]

    @property
    def ids(self) -> np.ndarray | None:
        """Labels of the gallery entries in index order, if given."""
        return None if self._ids is None else _object_array(self._ids)

    def add(self, embeddings: ArrayLike, ids: Sequence[Any] | np.ndarray | None = None) -> None:
        """Append gallery embeddings (and their ids, if the index was built with ids)."""
        features = float_matrix(embeddings, "embeddings")
        if self.dim is not None and features.shape[1] != self.dim:
            raise ValueError(
                f"`embeddings` have {features.shape[1]} features per row but the index has {self.dim}."
            )
        if (ids is None) != (self._ids is None):
            raise ValueError("Pass `ids` with every batch of embeddings or with none of them.")
        if ids is not None:
            if len(ids) != features.shape[0]:
                raise ValueError(
                    f"`ids` has {len(ids)} entries but `embeddings` has {features.shape[0]} rows."
                )
            self._ids.extend(list(ids))
        self.dim = features.shape[1]
        if self.backend == "faiss":
            self._faiss_add(features)
            return
        features, sq_norms = prepare_features(features.to(self.device), self.metric)
        if self._gallery is None:
            self._gallery, self._gallery_sq = features, sq_norms
        else:
            self._gallery = torch.cat([self._gallery, features.to(self._gallery.dtype)])
            if sq_norms is not None:
                self._gallery_sq = torch.cat([self._gallery_sq, sq_norms.to(self._gallery_sq.dtype)])

    def search(self, queries: ArrayLike, top_k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The ``top_k`` nearest gallery entries of every query, nearest first.

        Args:
            queries: ``(num_queries, dim)`` query embeddings.
            top_k: neighbours per query, clipped to the gallery size.

        Returns:
            ``(distances, indices)``, numpy arrays of shape ``(num_queries, k)``: float32
            distances in the index's metric and int64 positions in the gallery.
        """
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise ValueError(f"`top_k` must be a positive integer, got {top_k!r}.")
        query = float_matrix(queries, "queries")
        if query.shape[1] != self.dim:
            raise ValueError(
                f"`queries` have {query.shape[1]} features per row but the index has {self.dim}."
            )
        k = min(int(top_k), len(self))
        if self.backend == "faiss":
            return self._faiss_search(query, k)
        query = query.to(device=self.device, dtype=self._gallery.dtype)
        step = self.chunk_size or max(1, _CHUNK_ELEMENTS // len(self))
        distances = np.empty((query.shape[0], k), dtype=np.float32)
        indices = np.empty((query.shape[0], k), dtype=np.int64)
        for start in range(0, query.shape[0], step):
            block, block_sq = prepare_features(query[start : start + step], self.metric)
            dist = pairwise_block(block, block_sq, self._gallery, self._gallery_sq, self.metric)
            top_d, top_i = smallest_k(dist, k)
            distances[start : start + step] = top_d.float().cpu().numpy()
            indices[start : start + step] = top_i.cpu().numpy()
        return distances, indices

    def lookup(self, indices: ArrayLike) -> np.ndarray:
        """The ids of gallery positions ``indices`` (any shape), as an object array."""
        if self._ids is None:
            raise ValueError("This index was built without `ids`; use the indices themselves.")
        return self.ids[np.asarray(indices)]

    def _faiss_add(self, features: torch.Tensor) -> None:
        faiss = _import_faiss()
        vectors = np.ascontiguousarray(features.detach().cpu().numpy(), dtype=np.float32)
        if self.metric == "cosine":
            faiss.normalize_L2(vectors)
        if self._faiss_index is None:
            self._faiss_index = (
                faiss.IndexFlatIP(vectors.shape[1])
                if self.metric == "cosine"
                else faiss.IndexFlatL2(vectors.shape[1])
            )
        self._faiss_index.add(vectors)

    def _faiss_search(self, query: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        faiss = _import_faiss()
        vectors = np.ascontiguousarray(query.detach().cpu().numpy(), dtype=np.float32)
        if self.metric == "cosine":
            faiss.normalize_L2(vectors)
        scores, indices = self._faiss_index.search(vectors, k)
        if self.metric == "cosine":
            distances = 1.0 - scores
        elif self.metric == "euclidean":
            distances = np.sqrt(np.maximum(scores, 0.0))
        else:
            distances = scores
        return distances.astype(np.float32), indices.astype(np.int64)


def _import_faiss():
    try:
        import faiss
    except ImportError as error:
        raise ImportError(
            "GalleryIndex(backend='faiss') needs faiss: pip install 'hf-reid[faiss]' (or faiss-cpu); "
            "backend='torch' gives the same results without it."
        ) from error
    return faiss


def _object_array(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out
