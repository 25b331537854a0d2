"""Top-k search of a gallery, for galleries too large for a full distance matrix: exact, or
approximate (faiss IVF / HNSW) for galleries of millions of images.

Backends of :class:`GalleryIndex`:

- ``"torch"``: exact, chunked brute force on CPU or GPU, ties broken by gallery index. The
  distances are computed a block of queries x a block of gallery rows at a time (about 8M
  distances, 32 MB in float32) and the per-block top-k merged, so the memory beyond the gallery
  itself stays bounded whatever the gallery size.
- ``"faiss"``: exact, faiss's flat index (``IndexFlatIP`` / ``IndexFlatL2``): same neighbours.
- ``"ivf"``: approximate, a faiss inverted-file index (:class:`IVFParams`): k-means cells, a
  query scans the ``nprobe`` nearest cells. ``encoding="sq8"`` stores 1 byte per feature
  instead of 4.
- ``"hnsw"``: approximate, a faiss HNSW graph (:class:`HNSWParams`): fastest queries, slowest to
  build, more memory than the vectors alone.

faiss is the optional ``faiss`` extra: ``pip install "hf-reid[faiss]"``. ``"cosine"`` is searched
as inner product of L2-normalised vectors by every faiss backend.

An index is saved to a folder (:meth:`GalleryIndex.save`, :meth:`GalleryIndex.load`) without
pickle: ``gallery_index.json`` (metadata, ids), and ``embeddings.safetensors`` (torch backend) or
``index.faiss`` (faiss's own format).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ._inputs import ArrayLike, float_matrix, resolve_device
from ._select import smallest_k
from .distance import METRICS, Metric, check_metric, pairwise_block, prepare_features

__all__ = ["BACKENDS", "GalleryIndex", "HNSWParams", "IVFParams"]

Backend = Literal["torch", "faiss", "ivf", "hnsw"]
BACKENDS: tuple[str, ...] = ("torch", "faiss", "ivf", "hnsw")

_CHUNK_ELEMENTS = 1 << 23
"""Distances computed at once by the torch backend (32 MB in float32)."""
_GALLERY_CHUNK = 1 << 14
"""Gallery rows per block of the torch backend. At 16,384 x 512 queries a block is as fast per
distance as the whole gallery against 8 queries is slow (measured at 1M x 512 on 2 cores: 46 s
against 250 s per 1,000 queries); galleries up to this size are searched in one block."""
_ADD_CHUNK = 1 << 16
"""Rows copied (and normalised) at once when adding to a faiss index, so that adding a gallery
needs no second full-size copy and never modifies the caller's array."""

_META_FILE = "gallery_index.json"
_TORCH_FILE = "embeddings.safetensors"
_FAISS_FILE = "index.faiss"
_FORMAT = "hf_reid.GalleryIndex"
_VERSION = 1


def _check_int(name: str, value: Any, minimum: int = 1, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")


@dataclass(frozen=True)
class IVFParams:
    """Parameters of the ``"ivf"`` backend (a faiss ``IndexIVFFlat`` or ``IndexIVFScalarQuantizer``).

    The defaults were measured on clustered 1,000,000 x 512 galleries on 2 CPU cores
    (``benchmarks/gallery_search.py``, docs/SEARCH.md): about ``sqrt(G)`` cells (1,024) keep
    k-means training and adding to ~100 s; ``nprobe=32`` scans ~3 % of the gallery, 5-7x faster
    than exact search, with recall@10 1.00 when identities form appearance groups and 0.69 when
    they are spread uniformly (raise ``nprobe``: 64 gives 0.86 there).

    Args:
        nlist: number of k-means cells. Default: the power of two nearest ``sqrt(G)`` for the
            first batch of ``G`` embeddings (1,024 at 1M), at most ``G // 39`` (faiss's minimum of
            39 training points per cell), at least 1.
        nprobe: cells scanned per query (clipped to ``nlist``): higher is slower and more exact.
            Can be overridden per call of :meth:`GalleryIndex.search`.
        encoding: ``"flat"`` stores the float32 vectors (4 bytes per feature, distances exact
            within the scanned cells); ``"sq8"`` an 8-bit scalar quantisation (1 byte per
            feature, a quarter of the memory, slightly lower recall).
        train_size: embeddings sampled (without replacement, with ``seed``) from the first batch
            to train the cells; default ``min(G, 64 * nlist)``, which bounds the training cost
            whatever the gallery size. Must be at least ``nlist``.
        seed: seed of the training sample and of faiss's k-means initialisation.
    """

    nlist: int | None = None
    nprobe: int = 32
    encoding: Literal["flat", "sq8"] = "flat"
    train_size: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        _check_int("nlist", self.nlist, optional=True)
        _check_int("nprobe", self.nprobe)
        _check_int("train_size", self.train_size, optional=True)
        _check_int("seed", self.seed, minimum=0)
        if self.encoding not in ("flat", "sq8"):
            raise ValueError(f"Unknown IVF `encoding` {self.encoding!r}; choose 'flat' or 'sq8'.")
        if self.nlist is not None and self.train_size is not None and self.train_size < self.nlist:
            raise ValueError(f"`train_size` ({self.train_size}) must be at least `nlist` ({self.nlist}).")


@dataclass(frozen=True)
class HNSWParams:
    """Parameters of the ``"hnsw"`` backend (a faiss ``IndexHNSWFlat``).

    Args:
        m: graph neighbours per node (faiss's ``M``): more is more exact and bigger
            (about ``2 * m * 4`` bytes per vector on top of the vectors).
        ef_construction: candidate list while building: more is a better graph, slower build.
        ef_search: candidate list while searching (raised to ``top_k`` if lower): more is
            slower and more exact. Can be overridden per call of :meth:`GalleryIndex.search`.

    Building is multi-threaded and then not bit-reproducible (faiss inserts in parallel); the
    level assignment itself uses faiss's fixed seed.
    """

    m: int = 32
    ef_construction: int = 40
    ef_search: int = 64

    def __post_init__(self) -> None:
        _check_int("m", self.m, minimum=2)
        _check_int("ef_construction", self.ef_construction)
        _check_int("ef_search", self.ef_search)


class GalleryIndex:
    """A nearest-neighbour index over gallery embeddings: exact or approximate (faiss IVF, HNSW).

    Args:
        embeddings: ``(G, dim)`` gallery embeddings. For ``"ivf"`` this first batch also trains
            the cells (a sample of :attr:`IVFParams.train_size` rows), so it should be
            representative of the gallery.
        ids: optional labels of the gallery entries (pids, paths, ...), returned by ``lookup``.
        metric: ``"cosine"`` (1 - cosine similarity), ``"euclidean"`` or ``"sqeuclidean"``.
        backend: ``"torch"`` or ``"faiss"`` (exact), ``"ivf"`` or ``"hnsw"`` (approximate, faiss).
        params: :class:`IVFParams` for ``"ivf"``, :class:`HNSWParams` for ``"hnsw"`` (default:
            their defaults); ``None`` for the exact backends.
        device: torch backend only: where the gallery lives and the search runs.
        chunk_size: torch backend only: queries searched at once (default: 512, or about 8M
            distances over galleries up to 16,384 rows).
        gallery_chunk_size: torch backend only: gallery rows per block (default 16,384).

    Memory: :attr:`nbytes` is the index's own size (float32 vectors: ``G * dim * 4`` bytes,
    2.1 GB at 1M x 512; ``"ivf"`` with ``"sq8"``: about ``G * (dim + 8)``). The torch backend
    keeps its own (normalised, for cosine) copy of the gallery and needs about
    ``chunk_size * gallery_chunk_size * 4`` bytes (32 MB) more while searching.

    Example:
        ```python
        index = GalleryIndex(gallery_embeddings, ids=gallery_paths)
        distances, indices = index.search(query_embeddings, top_k=10)
        best_paths = index.lookup(indices)

        big = GalleryIndex(million_embeddings, backend="ivf", params=IVFParams(nprobe=32))
        big.save("gallery_index/")
        big = GalleryIndex.load("gallery_index/")
        ```
    """

    def __init__(
        self,
        embeddings: ArrayLike,
        ids: Sequence[Any] | np.ndarray | None = None,
        metric: Metric = "cosine",
        backend: Backend = "torch",
        *,
        params: IVFParams | HNSWParams | None = None,
        device: str | torch.device | None = None,
        chunk_size: int | None = None,
        gallery_chunk_size: int | None = None,
    ):
        self._setup(metric, backend, params, chunk_size, gallery_chunk_size)
        self.device = resolve_device(device, embeddings) if backend == "torch" else torch.device("cpu")
        self._ids: list[Any] | None = [] if ids is not None else None
        self.add(embeddings, ids)

    def _setup(
        self,
        metric: str,
        backend: str,
        params: IVFParams | HNSWParams | None,
        chunk_size: int | None,
        gallery_chunk_size: int | None,
    ) -> None:
        check_metric(metric)
        if backend not in BACKENDS:
            raise ValueError(f"Unknown backend {backend!r}; choose one of {list(BACKENDS)}.")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"`chunk_size` must be positive, got {chunk_size}.")
        if gallery_chunk_size is not None and gallery_chunk_size < 1:
            raise ValueError(f"`gallery_chunk_size` must be positive, got {gallery_chunk_size}.")
        expected = {"ivf": IVFParams, "hnsw": HNSWParams}.get(backend)
        if expected is None and params is not None:
            raise TypeError(f"backend={backend!r} is exact and takes no `params`, got {params!r}.")
        if expected is not None:
            if params is None:
                params = expected()
            elif not isinstance(params, expected):
                raise TypeError(
                    f"backend={backend!r} takes `params` of type {expected.__name__}, "
                    f"got {type(params).__name__}."
                )
        self.metric = metric
        self.backend = backend
        self.params = params
        self.chunk_size = chunk_size
        self.gallery_chunk_size = gallery_chunk_size
        self.dim: int | None = None
        self._gallery: torch.Tensor | None = None
        self._gallery_sq: torch.Tensor | None = None
        self._faiss_index = None

    def __len__(self) -> int:
        if self._faiss_index is not None:
            return int(self._faiss_index.ntotal)
        return 0 if self._gallery is None else self._gallery.shape[0]

    def __repr__(self) -> str:
        params = f", params={self.params}" if self.params is not None else ""
        return (
            f"GalleryIndex(size={len(self)}, dim={self.dim}, metric={self.metric!r}, "
            f"backend={self.backend!r}{params}, nbytes={self.nbytes})"
        )

    @property
    def approximate(self) -> bool:
        """Whether the backend may miss true neighbours (``"ivf"``, ``"hnsw"``)."""
        return self.backend in ("ivf", "hnsw")

    @property
    def ids(self) -> np.ndarray | None:
        """Labels of the gallery entries in index order, if given."""
        return None if self._ids is None else _object_array(self._ids)

    @property
    def nbytes(self) -> int:
        """Bytes the index holds in memory: vectors or codes, squared norms, IVF centroids and
        inverted-list ids, HNSW graph links. Not the ``ids`` nor Python or allocator overhead."""
        if self.backend == "torch":
            tensors = (self._gallery, self._gallery_sq)
            return sum(t.numel() * t.element_size() for t in tensors if t is not None)
        return _faiss_nbytes(self._faiss_index, self.backend)

    def add(self, embeddings: ArrayLike, ids: Sequence[Any] | np.ndarray | None = None) -> None:
        """Append gallery embeddings (and their ids, if the index was built with ids).

        The ``"ivf"`` backend trains its cells on the first batch; later batches are assigned to
        those cells."""
        features = float_matrix(embeddings, "embeddings")
        if self.dim is not None and features.shape[1] != self.dim:
            raise ValueError(
                f"`embeddings` have {features.shape[1]} features per row but the index has {self.dim}."
            )
        if (ids is None) != (self._ids is None):
            raise ValueError("Pass `ids` with every batch of embeddings or with none of them.")
        if ids is not None and len(ids) != features.shape[0]:
            raise ValueError(f"`ids` has {len(ids)} entries but `embeddings` has {features.shape[0]} rows.")
        if self.backend != "torch":
            self._faiss_add(features)
        else:
            self._torch_add(features)
        self.dim = features.shape[1]
        if ids is not None:
            self._ids.extend(list(ids))

    def search(
        self,
        queries: ArrayLike,
        top_k: int = 10,
        *,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``top_k`` nearest gallery entries of every query, nearest first.

        Args:
            queries: ``(num_queries, dim)`` query embeddings.
            top_k: neighbours per query, clipped to the gallery size.
            nprobe: ``"ivf"`` only: cells scanned for this call instead of ``params.nprobe``.
            ef_search: ``"hnsw"`` only: candidate list for this call instead of ``params.ef_search``.

        Returns:
            ``(distances, indices)``, numpy arrays of shape ``(num_queries, k)``: float32
            distances in the index's metric and int64 positions in the gallery. An approximate
            backend that finds fewer than ``k`` neighbours (few cells scanned) pads the row with
            index -1 and distance inf.
        """
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise ValueError(f"`top_k` must be a positive integer, got {top_k!r}.")
        if nprobe is not None:
            if self.backend != "ivf":
                raise ValueError(f"`nprobe` applies to backend='ivf', not {self.backend!r}.")
            _check_int("nprobe", nprobe)
        if ef_search is not None:
            if self.backend != "hnsw":
                raise ValueError(f"`ef_search` applies to backend='hnsw', not {self.backend!r}.")
            _check_int("ef_search", ef_search)
        query = float_matrix(queries, "queries")
        if query.shape[1] != self.dim:
            raise ValueError(
                f"`queries` have {query.shape[1]} features per row but the index has {self.dim}."
            )
        k = min(int(top_k), len(self))
        if self.backend != "torch":
            return self._faiss_search(query, k, nprobe, ef_search)
        return self._torch_search(query, k)

    def lookup(self, indices: ArrayLike) -> np.ndarray:
        """The ids of gallery positions ``indices`` (any shape), as an object array; ``None``
        where an index is -1 (no neighbour found by an approximate backend)."""
        if self._ids is None:
            raise ValueError("This index was built without `ids`; use the indices themselves.")
        positions = np.asarray(indices)
        missing = positions < 0
        if not missing.any():
            return self.ids[positions]
        if positions.ndim == 0:
            return None
        out = self.ids[np.where(missing, 0, positions)]
        out[missing] = None
        return out

    # ------------------------------------------------------------------ save / load

    def save(self, path: str | Path) -> Path:
        """Write the index to the folder ``path`` (created if needed) and return it.

        Files: ``gallery_index.json`` (format, version, metric, backend, params, dim, count,
        chunk sizes, ids and the data file's size), and ``embeddings.safetensors`` (torch
        backend: the prepared gallery, normalised for cosine, and its squared norms) or
        ``index.faiss`` (``faiss.write_index``). Nothing is pickled, so ids must be JSON values
        (strings, numbers, booleans, None); numpy scalars are converted.
        """
        folder = Path(path)
        ids = None if self._ids is None else _json_ids(self._ids)
        folder.mkdir(parents=True, exist_ok=True)
        if self.backend == "torch":
            from safetensors.torch import save_file

            tensors = {"gallery": self._gallery.detach().cpu().contiguous()}
            if self._gallery_sq is not None:
                tensors["gallery_sq"] = self._gallery_sq.detach().cpu().contiguous()
            data_file = folder / _TORCH_FILE
            save_file(tensors, str(data_file))
        else:
            data_file = folder / _FAISS_FILE
            _import_faiss().write_index(self._faiss_index, str(data_file))
        meta = {
            "format": _FORMAT,
            "version": _VERSION,
            "metric": self.metric,
            "backend": self.backend,
            "params": None if self.params is None else asdict(self.params),
            "dim": self.dim,
            "count": len(self),
            "chunk_size": self.chunk_size,
            "gallery_chunk_size": self.gallery_chunk_size,
            "data_file": data_file.name,
            "data_bytes": data_file.stat().st_size,
            "ids": ids,
        }
        (folder / _META_FILE).write_text(json.dumps(meta))
        return folder

    @classmethod
    def load(cls, path: str | Path, *, device: str | torch.device | None = None) -> GalleryIndex:
        """Read an index written by :meth:`save`.

        Args:
            path: the folder given to :meth:`save`.
            device: torch backend only: where to put the gallery (default CPU).

        Raises:
            FileNotFoundError: the folder, its ``gallery_index.json`` or its data file is missing
                (the message names the file).
            ValueError: a file is corrupt, truncated or inconsistent with the metadata (size,
                dimension, count, index type); the message names the file.
        """
        folder = Path(path)
        meta_file = folder / _META_FILE
        if not meta_file.is_file():
            raise FileNotFoundError(
                f"{meta_file} not found: {folder} is not a folder written by GalleryIndex.save."
            )
        try:
            meta = json.loads(meta_file.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{meta_file} is not valid JSON ({error}).") from None
        meta = _check_meta(meta, meta_file)
        data_file = folder / meta["data_file"]
        if not data_file.is_file():
            raise FileNotFoundError(f"{data_file} not found (listed in {meta_file}).")
        if data_file.stat().st_size != meta["data_bytes"]:
            raise ValueError(
                f"{data_file} has {data_file.stat().st_size} bytes but {meta_file} says {meta['data_bytes']}: "
                "the file is truncated or was replaced."
            )
        params_cls = {"ivf": IVFParams, "hnsw": HNSWParams}.get(meta["backend"])
        try:
            params = None if params_cls is None or meta["params"] is None else params_cls(**meta["params"])
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"{meta_file} has invalid `params` for backend {meta['backend']!r}: {error}"
            ) from None

        index = cls.__new__(cls)
        index._setup(meta["metric"], meta["backend"], params, meta["chunk_size"], meta["gallery_chunk_size"])
        index.dim = meta["dim"]
        index._ids = meta["ids"]
        dim, count = meta["dim"], meta["count"]
        if meta["backend"] == "torch":
            index.device = torch.device(device) if device is not None else torch.device("cpu")
            index._gallery, index._gallery_sq = _load_tensors(data_file, meta["metric"], dim, count)
            index._gallery = index._gallery.to(index.device)
            if index._gallery_sq is not None:
                index._gallery_sq = index._gallery_sq.to(index.device)
        else:
            index.device = torch.device("cpu")
            index._faiss_index = _read_faiss(data_file, meta["backend"], meta["metric"], dim, count)
        return index

    # ------------------------------------------------------------------ torch backend

    def _torch_add(self, features: torch.Tensor) -> None:
        features, sq_norms = prepare_features(features.to(self.device), self.metric)
        if self._gallery is None:
            self._gallery, self._gallery_sq = features, sq_norms
        else:
            self._gallery = torch.cat([self._gallery, features.to(self._gallery.dtype)])
            if sq_norms is not None:
                self._gallery_sq = torch.cat([self._gallery_sq, sq_norms.to(self._gallery_sq.dtype)])

    def _torch_search(self, query: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        query = query.to(device=self.device, dtype=self._gallery.dtype)
        size = len(self)
        g_step = self.gallery_chunk_size or _GALLERY_CHUNK
        q_step = self.chunk_size or max(1, _CHUNK_ELEMENTS // min(size, g_step))
        distances = np.empty((query.shape[0], k), dtype=np.float32)
        indices = np.empty((query.shape[0], k), dtype=np.int64)
        for start in range(0, query.shape[0], q_step):
            block, block_sq = prepare_features(query[start : start + q_step], self.metric)
            best_d = best_i = None
            for g_start in range(0, size, g_step):
                g_sq = None if self._gallery_sq is None else self._gallery_sq[g_start : g_start + g_step]
                dist = pairwise_block(
                    block, block_sq, self._gallery[g_start : g_start + g_step], g_sq, self.metric
                )
                top_d, top_i = smallest_k(dist, k)
                top_i += g_start
                if best_d is None:
                    best_d, best_i = top_d, top_i
                    continue
                # The kept neighbours all precede this block in the gallery and are ordered by
                # (distance, index), as is the block's top-k: in the concatenation, column order
                # among equal distances is gallery order, which smallest_k keeps.
                merged_d, merged_i = torch.cat([best_d, top_d], dim=1), torch.cat([best_i, top_i], dim=1)
                best_d, columns = smallest_k(merged_d, k)
                best_i = merged_i.gather(1, columns)
            distances[start : start + q_step] = best_d.float().cpu().numpy()
            indices[start : start + q_step] = best_i.cpu().numpy()
        return distances, indices

    # ------------------------------------------------------------------ faiss backends

    def _faiss_add(self, features: torch.Tensor) -> None:
        faiss = _import_faiss()
        vectors = features.detach().cpu()
        if self._faiss_index is None:
            self._faiss_index = self._new_faiss_index(faiss, vectors)
        for start in range(0, vectors.shape[0], _ADD_CHUNK):
            self._faiss_index.add(self._faiss_rows(faiss, vectors[start : start + _ADD_CHUNK]))

    def _faiss_rows(self, faiss, rows: torch.Tensor) -> np.ndarray:
        """A float32 numpy copy of ``rows``, L2-normalised for cosine (never the caller's memory)."""
        out = np.array(rows.numpy(), dtype=np.float32, order="C", copy=True)
        if self.metric == "cosine":
            faiss.normalize_L2(out)
        return out

    def _new_faiss_index(self, faiss, vectors: torch.Tensor):
        dim = vectors.shape[1]
        faiss_metric = faiss.METRIC_INNER_PRODUCT if self.metric == "cosine" else faiss.METRIC_L2
        if self.backend == "faiss":
            return faiss.IndexFlatIP(dim) if self.metric == "cosine" else faiss.IndexFlatL2(dim)
        if self.backend == "hnsw":
            index = faiss.IndexHNSWFlat(dim, self.params.m, faiss_metric)
            index.hnsw.efConstruction = self.params.ef_construction
            index.hnsw.efSearch = self.params.ef_search
            return index
        count = vectors.shape[0]
        nlist = self.params.nlist or _default_nlist(count)
        train_size = min(count, self.params.train_size or 64 * nlist)
        if train_size < nlist:
            raise ValueError(
                f"The IVF index needs at least nlist={nlist} training embeddings in its first batch "
                f"(train_size={train_size}, batch of {count}); pass more embeddings or a smaller `nlist`."
            )
        quantizer = faiss.IndexFlatIP(dim) if self.metric == "cosine" else faiss.IndexFlatL2(dim)
        if self.params.encoding == "flat":
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss_metric)
        else:
            index = faiss.IndexIVFScalarQuantizer(
                quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss_metric
            )
        index.cp.seed = self.params.seed
        index.cp.max_points_per_centroid = max(256, -(-train_size // nlist))  # faiss: no resampling
        rng = np.random.default_rng(self.params.seed)
        sample = np.sort(rng.choice(count, size=train_size, replace=False)) if train_size < count else None
        train = vectors if sample is None else vectors[torch.from_numpy(sample)]
        index.train(self._faiss_rows(faiss, train))
        index.nprobe = min(self.params.nprobe, nlist)
        return index

    def _faiss_search(
        self, query: torch.Tensor, k: int, nprobe: int | None, ef_search: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        faiss = _import_faiss()
        vectors = self._faiss_rows(faiss, query.detach().cpu())
        search_params = None
        if self.backend == "ivf":
            nlist = int(self._faiss_index.nlist)
            search_params = faiss.SearchParametersIVF(nprobe=min(nprobe or self.params.nprobe, nlist))
        elif self.backend == "hnsw":
            search_params = faiss.SearchParametersHNSW(efSearch=max(ef_search or self.params.ef_search, k))
        if search_params is None:
            scores, indices = self._faiss_index.search(vectors, k)
        else:
            scores, indices = self._faiss_index.search(vectors, k, params=search_params)
        if self.metric == "cosine":
            distances = 1.0 - scores
        elif self.metric == "euclidean":
            distances = np.sqrt(np.maximum(scores, 0.0))
        else:
            distances = scores
        distances = distances.astype(np.float32)
        distances[indices < 0] = np.inf
        return distances, indices.astype(np.int64)


def _default_nlist(count: int) -> int:
    """The power of two nearest ``sqrt(count)``, at most ``count // 39``, at least 1."""
    nearest = 2 ** round(math.log2(max(1.0, math.sqrt(count))))
    return max(1, min(nearest, count // 39))


def _faiss_nbytes(index, backend: str) -> int:
    if index is None:
        return 0
    if backend == "faiss":
        return int(index.ntotal) * int(index.code_size)
    if backend == "hnsw":
        hnsw = index.hnsw
        graph = 4 * hnsw.neighbors.size() + 4 * hnsw.levels.size() + 8 * hnsw.offsets.size()
        return int(index.ntotal) * int(index.storage.sa_code_size()) + int(graph)
    centroids = int(index.nlist) * int(index.d) * 4
    codes = int(index.invlists.compute_ntotal()) * (int(index.code_size) + 8)  # code + int64 id
    return centroids + codes + (2 * int(index.d) * 4 if hasattr(index, "sq") else 0)


def _json_ids(ids: list[Any]) -> list[Any]:
    """``ids`` as JSON values (numpy scalars converted), or a TypeError naming the first that is not."""
    out = []
    for position, value in enumerate(ids):
        if isinstance(value, np.generic):
            value = value.item()
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise TypeError(
                f"GalleryIndex.save stores ids as JSON, but id {position} is a {type(value).__name__} "
                f"({value!r}); use strings or numbers as ids (e.g. str(path))."
            )
        out.append(value)
    return out


def _check_meta(meta: Any, meta_file: Path) -> dict[str, Any]:
    """The metadata of a saved index, checked field by field; errors name ``meta_file``."""
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise ValueError(f"{meta_file} is not GalleryIndex metadata (no format {_FORMAT!r}).")
    if meta.get("version") != _VERSION:
        raise ValueError(
            f"{meta_file} has format version {meta.get('version')!r}; this hf_reid reads {_VERSION}."
        )
    required = ("metric", "backend", "params", "dim", "count", "data_file", "data_bytes", "ids")
    missing = [key for key in required if key not in meta]
    if missing:
        raise ValueError(f"{meta_file} lacks {', '.join(missing)}.")
    if meta["metric"] not in METRICS or meta["backend"] not in BACKENDS:
        raise ValueError(f"{meta_file} has unknown metric {meta['metric']!r} or backend {meta['backend']!r}.")
    for key in ("dim", "count", "data_bytes"):
        if (
            isinstance(meta[key], bool)
            or not isinstance(meta[key], int)
            or meta[key] < (0 if key != "dim" else 1)
        ):
            raise ValueError(f"{meta_file} has invalid {key} {meta[key]!r}.")
    if meta["data_file"] not in (_TORCH_FILE, _FAISS_FILE):
        raise ValueError(f"{meta_file} names an unexpected data file {meta['data_file']!r}.")
    if meta["ids"] is not None and (not isinstance(meta["ids"], list) or len(meta["ids"]) != meta["count"]):
        raise ValueError(f"{meta_file}: `ids` is not a list of {meta['count']} entries, one per embedding.")
    meta.setdefault("chunk_size", None)
    meta.setdefault("gallery_chunk_size", None)
    return meta


def _load_tensors(
    data_file: Path, metric: str, dim: int, count: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(data_file))
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{data_file} is not a readable safetensors file ({error}).") from None
    gallery, gallery_sq = tensors.get("gallery"), tensors.get("gallery_sq")
    if gallery is None or gallery.shape != (count, dim):
        shape = None if gallery is None else tuple(gallery.shape)
        raise ValueError(f"{data_file}: `gallery` has shape {shape}, expected ({count}, {dim}).")
    if (metric != "cosine") != (gallery_sq is not None) or (
        gallery_sq is not None and gallery_sq.shape != (count,)
    ):
        raise ValueError(
            f"{data_file}: `gallery_sq` is missing or has the wrong shape for metric {metric!r}."
        )
    return gallery, gallery_sq


def _read_faiss(data_file: Path, backend: str, metric: str, dim: int, count: int):
    faiss = _import_faiss()
    try:
        index = faiss.read_index(str(data_file))
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "unreadable"
        raise ValueError(f"{data_file} is not a readable faiss index ({first_line}).") from None
    kinds = {"faiss": faiss.IndexFlat, "ivf": faiss.IndexIVF, "hnsw": faiss.IndexHNSW}
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    if not isinstance(index, kinds[backend]) or index.metric_type != faiss_metric:
        raise ValueError(
            f"{data_file} holds a {type(index).__name__}, not a {backend!r} index for {metric!r}."
        )
    if index.d != dim or index.ntotal != count:
        raise ValueError(
            f"{data_file} holds {index.ntotal} vectors of dimension {index.d}; the metadata says {count} of {dim}."
        )
    return index


def _import_faiss():
    try:
        import faiss
    except ImportError as error:
        raise ImportError(
            "GalleryIndex backends 'faiss', 'ivf' and 'hnsw' need faiss: pip install 'hf-reid[faiss]' "
            "(or faiss-cpu); backend='torch' gives exact results without it."
        ) from error
    return faiss


def _object_array(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out
