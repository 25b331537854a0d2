"""Million-image gallery search with ``hf_reid.metrics.GalleryIndex``: exact and approximate.

1,000 queries (top-10) against a 1,000,000 x 512 gallery on the CPU, with every backend:
exact chunked torch, exact faiss flat, faiss IVF (float32 and 8-bit codes) at a few ``nprobe``,
and optionally HNSW (``--hnsw``: its build is the slowest). For each it prints the build (and
training) time, the time per 1,000 queries, recall@10 against the exact torch search (the share
of the exact top-10 found in the returned top-10), the index size in memory (``nbytes``) and on
disk (``save``), and the peak resident memory above the inputs during build, search and save. It
also checks that every saved index loads and returns the same neighbours (on 100 queries).

The gallery is synthetic but shaped like Re-ID embeddings, which are clustered by identity:
``gallery / 10`` identities (100,000 at 1M) with about 10 views each (drawn uniformly, so 10 +- 3),
every view ``normalise(mean + identity + camera + noise)``: a shared mean direction (norm 0.5,
features are not centred, so unrelated people still have cosine ~0.15), an identity centre in a
64-d latent subspace, one of 6 camera offsets (norm 0.3) and isotropic noise (norm ~0.6).
Same-identity cosines are ~0.73. ``--structure`` sets how identities spread in the latent space:

- ``grouped`` (default): identities fall in appearance groups (clothing, build...: one group per
  100 identities, 1,000 at 1M), each identity its group's centre plus an offset of norm 0.8, so
  people of one group have cosine ~0.5 and others ~0.15 (99.9th percentile of all pairs ~0.58);
- ``flat``: identity centres uniform on the 64-d sphere, no structure above the identity: at the
  scale of the index's cells this is random data in 64-d, the hard case for approximate search.

Queries are 1,000 fresh views of random gallery identities. Random gaussian vectors in 512-d
would be a worse case still and are not what a Re-ID model produces.

Peak memory is the process's resident-set high-water mark during a step minus its resident set
just before it (gallery and queries already loaded: 2.05 GB at 1M x 512), read from /proc (Linux).
The machine may be shared: the load average is printed at the start and the end.

Usage::

    python benchmarks/gallery_search.py                    # 1M gallery: 10.7 min on 2 busy cores
    python benchmarks/gallery_search.py --gallery 100000   # quick check, ~1.5 min
    python benchmarks/gallery_search.py --structure flat   # identities without groups (harder)
    python benchmarks/gallery_search.py --hnsw             # also HNSW (slow to build at 1M)
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hf_reid.metrics import GalleryIndex, HNSWParams, IVFParams

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import PeakMemory, release_memory

DIM = 512
LATENT = 64
CAMERAS = 6
TOP_K = 10
CHECK_QUERIES = 100


# --------------------------------------------------------------------------- data


def make_embeddings(
    num_gallery: int, num_queries: int, structure: str = "grouped", seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Clustered, unit-norm Re-ID-like embeddings (see the module docstring), built in chunks so
    that the gallery is the only full-size array."""
    rng = np.random.default_rng(seed)
    num_ids = max(1, num_gallery // 10)
    basis, _ = np.linalg.qr(rng.standard_normal((DIM, LATENT)))  # orthonormal 512 x 64
    latent = rng.standard_normal((num_ids, LATENT))
    if structure == "grouped":  # identity = its appearance group's centre + an offset of norm 0.8
        groups = rng.standard_normal((max(1, num_ids // 100), LATENT))
        groups /= np.linalg.norm(groups, axis=1, keepdims=True)
        latent *= 0.8 / np.linalg.norm(latent, axis=1, keepdims=True)
        latent += groups[rng.integers(0, len(groups), num_ids)]
    centres = ((latent / np.linalg.norm(latent, axis=1, keepdims=True)) @ basis.T).astype(np.float32)
    mean = rng.standard_normal(DIM)
    mean = (0.5 * mean / np.linalg.norm(mean)).astype(np.float32)
    cameras = rng.standard_normal((CAMERAS, DIM))
    cameras = (0.3 * cameras / np.linalg.norm(cameras, axis=1, keepdims=True)).astype(np.float32)
    noise_std = np.float32(0.6 / np.sqrt(DIM))

    def views(identities: np.ndarray) -> np.ndarray:
        out = rng.standard_normal((len(identities), DIM), dtype=np.float32)
        out *= noise_std
        out += centres[identities]
        out += cameras[rng.integers(0, CAMERAS, len(identities))]
        out += mean
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out

    gallery = np.empty((num_gallery, DIM), dtype=np.float32)
    step = 1 << 16
    for start in range(0, num_gallery, step):
        rows = min(step, num_gallery - start)
        gallery[start : start + rows] = views(rng.integers(0, num_ids, rows))
    queries = views(rng.integers(0, num_ids, num_queries))
    return gallery, queries


# --------------------------------------------------------------------------- measuring


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each query's exact top-k that the approximate top-k contains."""
    hits = sum(len(np.intersect1d(f[f >= 0], e)) for f, e in zip(found, exact, strict=True))
    return hits / exact.size


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


# --------------------------------------------------------------------------- benchmark


def run_backend(
    name: str,
    build,
    searches: list[tuple[str, dict]],
    gallery: np.ndarray,
    queries: np.ndarray,
    exact: np.ndarray | None,
    workdir: Path,
) -> tuple[list[dict], np.ndarray]:
    """Build one index, search with each setting, save, load and compare; returns table rows and
    the first setting's neighbours."""
    rows = []
    release_memory()
    with PeakMemory() as memory:
        start = time.perf_counter()
        index = build(gallery)
        build_s = time.perf_counter() - start
        first = None
        for label, kwargs in searches:
            start = time.perf_counter()
            _, found = index.search(queries, top_k=TOP_K, **kwargs)
            search_s = time.perf_counter() - start
            first = found if first is None else first
            rows.append(
                {
                    "backend": name,
                    "setting": label,
                    "build_s": build_s,
                    "per_1000_s": search_s * 1000 / len(queries),
                    "recall": 1.0 if exact is None else recall_at_k(found, exact),
                    "nbytes": index.nbytes,
                }
            )
        folder = workdir / name.replace(" ", "_")
        index.save(folder)
    disk = folder_bytes(folder)
    check = queries[:CHECK_QUERIES]
    _, before = index.search(check, top_k=TOP_K, **searches[0][1])
    del index
    gc.collect()
    start = time.perf_counter()
    loaded = GalleryIndex.load(folder)
    load_s = time.perf_counter() - start
    _, after = loaded.search(check, top_k=TOP_K, **searches[0][1])
    if not np.array_equal(before, after):
        raise AssertionError(f"{name}: the loaded index returns other neighbours than the saved one")
    del loaded
    release_memory()
    shutil.rmtree(folder)
    for row in rows:
        row.update(disk=disk, peak_gb=memory.extra_gb, load_s=load_s)
    return rows, first


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gallery", type=int, default=1_000_000, help="gallery size (default 1,000,000)")
    parser.add_argument("--queries", type=int, default=1000, help="number of queries (default 1,000)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch and faiss threads")
    parser.add_argument(
        "--structure",
        choices=("grouped", "flat"),
        default="grouped",
        help="identities in appearance groups (default) or spread uniformly over the latent space (harder)",
    )
    parser.add_argument("--hnsw", action="store_true", help="also build an HNSW index (slow at 1M)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the indexes are saved (temp dir)")
    args = parser.parse_args()

    import faiss

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    print(
        f"gallery {args.gallery:,} x {DIM}, {args.queries:,} queries, top-{TOP_K}, {args.threads} threads, "
        f"load average at start {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )
    start = time.perf_counter()
    gallery, queries = make_embeddings(args.gallery, args.queries, args.structure)
    print(f"data: {time.perf_counter() - start:.1f} s, gallery {gallery.nbytes / 1e9:.2f} GB (float32)")

    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="gallery_search_", dir=args.workdir))
    ivf = IVFParams()
    ivf_sq8 = IVFParams(encoding="sq8")
    ivf_settings = [(f"nprobe={n}", {"nprobe": n}) for n in (ivf.nprobe, 8, 64)]
    plans = [
        ("torch exact", lambda g: GalleryIndex(g, backend="torch"), [("chunked", {})]),
        ("faiss flat", lambda g: GalleryIndex(g, backend="faiss"), [("exact", {})]),
        ("ivf flat", lambda g: GalleryIndex(g, backend="ivf", params=ivf), ivf_settings),
        ("ivf sq8", lambda g: GalleryIndex(g, backend="ivf", params=ivf_sq8), ivf_settings[:1]),
    ]
    if args.hnsw:
        hnsw = HNSWParams()
        settings = [(f"ef_search={e}", {"ef_search": e}) for e in (hnsw.ef_search, 32)]
        plans.append(("hnsw", lambda g: GalleryIndex(g, backend="hnsw", params=hnsw), settings))

    rows, exact = [], None
    try:
        for name, build, searches in plans:
            start = time.perf_counter()
            new_rows, found = run_backend(name, build, searches, gallery, queries, exact, workdir)
            exact = found if exact is None else exact
            rows += new_rows
            print(f"{name}: done in {time.perf_counter() - start:.1f} s", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(
        f"Gallery search, {args.gallery:,} x {DIM} clustered synthetic embeddings ({args.structure}), {args.queries:,} queries, "
        f"top-{TOP_K}, cosine, {args.threads} threads (load average at end {os.getloadavg()[0]:.2f})"
    )
    print()
    print(
        "| backend | setting | build s | s per 1,000 queries | recall@10 vs exact | memory (nbytes) "
        "| disk | load s | peak RSS above inputs |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['backend']} | {row['setting']} | {row['build_s']:.1f} | {row['per_1000_s']:.2f} "
            f"| {row['recall']:.4f} | {row['nbytes'] / 1e9:.3f} GB | {row['disk'] / 1e9:.3f} GB "
            f"| {row['load_s']:.1f} | {row['peak_gb']:.2f} GB |"
        )


if __name__ == "__main__":
    main()
