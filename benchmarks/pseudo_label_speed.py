"""Speed and peak memory of the pseudo-label step (k-reciprocal Jaccard distance + DBSCAN) against
fast-reid's ``compute_jaccard_distance``.

The data are clustered 512-d features: identities x 10 samples (5,000 x 10 = 50,000 by default),
each an identity centre plus Gaussian noise whose level varies by identity (so that a few
identities are hard: some outliers, ARI to the truth a little below 1), L2-normalised.

Both sides get the same features and parameters (k1 = 30, k2 = 6, then ``DBSCAN(eps=0.6,
min_samples=4, metric="precomputed")``, as Cluster-Contrast and CCLNet) and run in a fresh
process each, with at most ``--threads`` threads (2), so that peak memory is their own:

- hf_reid: ``jaccard_distance(features, 30, 6, max_distance=0.6)`` (pairs beyond eps never matter
  to DBSCAN; this is what ``assign_pseudo_labels`` does) and ``cluster_dbscan``;
- reference: ``compute_jaccard_distance(features, k1=30, k2=6, search_option=3)`` and scikit-learn
  DBSCAN on its dense output. It imports faiss at module level (faiss-cpu suffices); its default
  ``search_option=0`` (and 1, 2) needs faiss-gpu and CUDA, 3 is the CPU ``IndexFlatL2`` search.
  It then builds dense N x N float32 matrices: ``V``, its query expansion (``np.zeros_like``, so
  written in full) and the distances, two of them alive at once: 2 * 4 * N^2 bytes (20 GB at
  N = 50,000), and loops over rows in Python with O(N) work per row, so its time grows as N^2.

Peak memory is the child process's ``ru_maxrss`` (resident-set high-water mark); "extra" is that
minus its resident set just before the call (imports done, features loaded; importing hf_reid
loads transformers and accelerate, hence its higher base). Times are wall clock, and "CPU time"
is the process's user + system time over the call (all threads): on a shared machine (the load
average is printed) wall times of both sides stretch with the load, CPU times much less.

The reference runs only at the sizes in ``--reference-n`` (default 5,000 and 20,000) that fit in
the available memory. At N = 50,000 it needs about 28 GB (more than a 24 GB machine has) and, by
its measured N^2 growth, a quarter of an hour or more, so it is not run there: its time is
extrapolated from the two largest sizes measured (``T = a N + b N^2``) and printed as such. hf_reid runs at
those sizes (same features: the ARI between the two clusterings is printed, outliers counted as
singletons) and at ``--n``.

Getting the reference (its code is loaded by file path from the unpacked wheel; nothing of it is
copied into this repository)::

    pip download --no-deps fastreid==1.4.0 -d /tmp/fastreid
    python -m zipfile -e /tmp/fastreid/fastreid-1.4.0-py3-none-any.whl /tmp/fastreid/unpacked
    python benchmarks/pseudo_label_speed.py --fastreid /tmp/fastreid/unpacked

``--fastreid`` takes the unpacked folder, the wheel file itself (unpacked to a temporary folder)
or ``.../fastreid/utils/compute_dist.py``; the ``HF_REID_FASTREID`` variable works too. Without it
only the hf_reid rows are printed. Quick check: ``--n 5000 --reference-n 5000``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import types
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

DIM = 512
PER_ID = 10
K1, K2, EPS, MIN_SAMPLES = 30, 6, 0.6, 4


# --------------------------------------------------------------------------- data


def make_features(num: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``num`` unit-norm 512-d features of ``num / 10`` identities and their identity labels."""
    rng = np.random.default_rng(seed)
    num_ids = -(-num // PER_ID)
    centres = rng.standard_normal((num_ids, DIM), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    ids = np.repeat(np.arange(num_ids), PER_ID)[:num]
    noise = rng.uniform(0.04, 0.1, num_ids).astype(np.float32)  # per identity: a few are hard
    features = centres[ids] + noise[ids, None] * rng.standard_normal((num, DIM), dtype=np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    return features.astype(np.float32), ids


# --------------------------------------------------------------------------- reference


def locate_compute_dist(given: str | None, scratch: Path) -> Path | None:
    """fast-reid's ``fastreid/utils/compute_dist.py`` from ``--fastreid`` or ``HF_REID_FASTREID``."""
    given = given or os.environ.get("HF_REID_FASTREID")
    if not given:
        return None
    path = Path(given).expanduser()
    if path.is_file() and path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            wheel.extractall(scratch / "fastreid_wheel")
        path = scratch / "fastreid_wheel"
    for candidate in (
        path / "fastreid" / "utils" / "compute_dist.py",
        path / "utils" / "compute_dist.py",
        path / "compute_dist.py",
        path,
    ):
        if (
            candidate.is_file()
            and candidate.name == "compute_dist.py"
            and (candidate.parent / "faiss_utils.py").is_file()
        ):
            return candidate
    raise SystemExit(
        f"--fastreid {given}: no fastreid/utils/compute_dist.py (with faiss_utils.py) there; pass the "
        "unpacked fastreid 1.4.0 wheel (see the module docstring)."
    )


def load_reference(compute_dist: Path) -> types.ModuleType:
    """Load ``compute_dist.py`` by path as a submodule of a stand-in package, so that its relative
    import of ``faiss_utils`` resolves without importing the rest of fastreid."""
    package = types.ModuleType("_fastreid_utils")
    package.__path__ = [str(compute_dist.parent)]
    sys.modules["_fastreid_utils"] = package
    spec = importlib.util.spec_from_file_location("_fastreid_utils.compute_dist", compute_dist)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- child process


def _rss_gb(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def job(side: str, features_path: str, labels_path: str, compute_dist: str | None, threads: int) -> None:
    """One side, in this (fresh) process; prints a JSON line with its times and memory."""
    import torch

    torch.set_num_threads(threads)
    features = np.load(features_path)
    if side == "reference":
        import faiss
        from sklearn.cluster import DBSCAN

        faiss.omp_set_num_threads(threads)
        reference = load_reference(Path(compute_dist))
        tensor = torch.from_numpy(features)
        before, cpu_before = _rss_gb(), _cpu_s()
        start = time.perf_counter()
        distances = reference.compute_jaccard_distance(tensor, k1=K1, k2=K2, search_option=3)
        middle = time.perf_counter()
        labels = DBSCAN(eps=EPS, min_samples=MIN_SAMPLES, metric="precomputed").fit_predict(distances)
        stop, cpu_after = time.perf_counter(), _cpu_s()
        stored = distances.size
        extra = {"faiss": faiss.__version__}
    else:
        import sklearn.cluster  # noqa: F401  (imported lazily by cluster_dbscan; not timed, as for the reference)

        from hf_reid.training.pseudo_labels import cluster_dbscan, jaccard_distance

        before, cpu_before = _rss_gb(), _cpu_s()
        start = time.perf_counter()
        distances = jaccard_distance(features, K1, K2, max_distance=EPS)
        middle = time.perf_counter()
        labels = cluster_dbscan(distances, eps=EPS, min_samples=MIN_SAMPLES)
        stop, cpu_after = time.perf_counter(), _cpu_s()
        stored = distances.nnz
        extra = {}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KB on Linux
    np.save(labels_path, np.asarray(labels, dtype=np.int64))
    result = {
        "jaccard_s": middle - start,
        "dbscan_s": stop - middle,
        "cpu_s": cpu_after - cpu_before,
        "peak_gb": peak,
        "extra_gb": max(0.0, peak - before),
        "stored": int(stored),
        **extra,
    }
    print(json.dumps(result))


def run_side(side: str, features_path: Path, labels_path: Path, compute_dist: Path | None, threads: int):
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    command = [sys.executable, __file__, "--job", side, str(features_path), str(labels_path)]
    command += [str(compute_dist or ""), str(threads)]
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        child = subprocess.Popen(command, env=env, stdout=stdout, stderr=stderr, text=True)
        swap_peak = 0.0
        while child.poll() is None:  # ru_maxrss misses what was swapped out: sample VmSwap too
            swap_peak = max(swap_peak, _swap_gb(child.pid))
            time.sleep(0.5)
        stdout.seek(0)
        stderr.seek(0)
        out, err = stdout.read(), stderr.read()
    if child.returncode != 0:
        tail = (err or out).strip().splitlines()[-5:]
        return None, f"failed (exit {child.returncode}): " + " | ".join(tail)
    return {**json.loads(out.strip().splitlines()[-1]), "swap_gb": swap_peak}, ""


def _swap_gb(pid: int) -> float:
    """The process's swapped-out memory (``VmSwap``) in GB, 0 when it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmSwap:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


# --------------------------------------------------------------------------- report


def ari_with_singletons(a: np.ndarray, b: np.ndarray) -> float:
    """ARI between two DBSCAN labelings, each outlier (-1) its own cluster."""
    from sklearn.metrics import adjusted_rand_score

    def singletons(labels: np.ndarray) -> np.ndarray:
        labels = labels.copy()
        outlier = labels < 0
        labels[outlier] = labels.max(initial=-1) + 1 + np.arange(int(outlier.sum()))
        return labels

    return float(adjusted_rand_score(singletons(a), singletons(b)))


def available_gb(with_swap: bool = False) -> float:
    """``MemAvailable`` from ``/proc/meminfo``, plus ``SwapFree`` when ``with_swap``."""
    fields = {}
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            key, _, rest = line.partition(":")
            fields[key] = int(rest.split()[0]) / 2**20
    return fields.get("MemAvailable", float("nan")) + (fields.get("SwapFree", 0.0) if with_swap else 0.0)


def reference_need_gb(num: int) -> float:
    """Peak memory of the reference: about three dense N x N float32 matrices' worth (two alive at
    once in ``compute_jaccard_distance``, then DBSCAN's neighbourhoods over the dense output; measured
    4.4 GB over the inputs at N = 20,000) plus 0.6 GB of libraries and inputs."""
    return 3 * 4 * num**2 / 2**30 + 0.6


def _total(result: dict[str, Any]) -> float:
    return result["jaccard_s"] + result["dbscan_s"]


def _extrapolate(n1: int, t1: float, n2: int, t2: float, num: int) -> float:
    """``T = a N + b N^2`` through two measured sizes, at ``num``."""
    b = (t2 / n2 - t1 / n1) / (n2 - n1)
    a = t1 / n1 - b * n1
    return a * num + b * num**2


def row(name: str, result: dict[str, Any] | None, note: str = "") -> None:
    if result is None:
        print(f"  {name:<22} {'-':>10} {'-':>10} {'-':>10} {'-':>10} {'-':>10} {'-':>10}   {note}")
        return
    total = _total(result)
    print(
        f"  {name:<22} {result['jaccard_s']:9.1f}s {result['dbscan_s']:9.1f}s {total:9.1f}s "
        f"{result['cpu_s']:9.1f}s "
        f"{result['peak_gb']:8.2f}GB {result['extra_gb']:8.2f}GB   {note}"
    )
    if result.get("swap_gb", 0.0) > 0.01:
        print(f"  {'':<22} ... and up to {result['swap_gb']:.2f} GB swapped out (not in the peak RSS)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=50_000, help="features for hf_reid (default 50,000)")
    parser.add_argument(
        "--reference-n",
        type=int,
        nargs="+",
        default=[5_000, 20_000],
        help="sizes at which both run (default 5,000 20,000; capped at --n and by free memory)",
    )
    parser.add_argument("--fastreid", help="unpacked fastreid 1.4.0 wheel (see above)")
    parser.add_argument("--threads", type=int, default=2, help="threads per side (default 2)")
    parser.add_argument(
        "--use-swap",
        action="store_true",
        help="count free swap as available memory for the reference (it then runs partly from swap: "
        "slower than with enough RAM, which the printed swap use shows)",
    )
    parser.add_argument("--job", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        side, features_path, labels_path, compute_dist, threads = args.job
        job(side, features_path, labels_path, compute_dist or None, int(threads))
        return

    with tempfile.TemporaryDirectory(prefix="hf_reid_pseudo_") as scratch_name:
        scratch = Path(scratch_name)
        compute_dist = locate_compute_dist(args.fastreid, scratch)
        sizes = sorted({min(n, args.n) for n in args.reference_n} | {args.n})
        print(
            f"Pseudo-labels: k-reciprocal Jaccard (k1={K1}, k2={K2}) + DBSCAN (eps={EPS}, "
            f"min_samples={MIN_SAMPLES}); {DIM}-d features, {PER_ID} per identity; {args.threads} threads "
            f"per side; load average {os.getloadavg()[0]:.1f}, {available_gb():.1f} GB available"
        )
        print(f"  reference: {compute_dist or 'not available (pass --fastreid)'}")
        timings: dict[int, tuple[float, float]] = {}
        for num in sizes:
            features, ids = make_features(num)
            features_path = scratch / f"features_{num}.npy"
            np.save(features_path, features)
            print(f"\nN = {num:,} ({-(-num // PER_ID):,} identities); load average {os.getloadavg()[0]:.1f}")
            print(
                f"  {'':<22} {'jaccard':>10} {'dbscan':>10} {'total':>10} {'CPU time':>10} {'peak RSS':>10} {'extra':>10}"
            )
            ours, error = run_side("ours", features_path, scratch / "ours.npy", None, args.threads)
            if ours is None:
                row("hf_reid", None, error)
                continue
            ours_labels = np.load(scratch / "ours.npy")
            row(
                "hf_reid",
                ours,
                f"{ours_labels.max() + 1} clusters, {(ours_labels < 0).sum()} outliers, "
                f"{ours['stored']:,} pairs stored; ARI to the truth {ari_with_singletons(ours_labels, ids):.4f}",
            )
            in_reference_sizes = num in {min(n, args.n) for n in args.reference_n}
            if compute_dist is None or not in_reference_sizes:
                need = reference_need_gb(num)
                note, estimate = "not run", None
                if len(timings) >= 2:
                    (n1, t1), (n2, t2) = sorted(timings.items())[-2:]
                    estimate = [_extrapolate(n1, w1, n2, w2, num) for w1, w2 in zip(t1, t2)]
                    note += (
                        f": extrapolated from its measured growth, about {estimate[0]:,.0f} s "
                        f"({estimate[1]:,.0f} s CPU time)"
                    )
                row("fast-reid (reference)", None, f"{note}; needs about {need:.0f} GB")
                if estimate is not None:
                    print(
                        f"  -> hf_reid about {estimate[0] / _total(ours):.0f}x faster than the extrapolated "
                        f"reference ({estimate[1] / ours['cpu_s']:.0f}x in CPU time), peak RSS "
                        f"{ours['peak_gb']:.2f} GB vs about {need:.0f} GB"
                    )
                continue
            need, free = reference_need_gb(num), available_gb(args.use_swap)
            if need > 0.8 * free:
                row(
                    "fast-reid (reference)",
                    None,
                    f"not run: needs ~{need:.0f} GB, {free:.0f} GB free",
                )
                continue
            theirs, error = run_side(
                "reference", features_path, scratch / "ref.npy", compute_dist, args.threads
            )
            if theirs is None:
                row("fast-reid (reference)", None, error)
                continue
            ref_labels = np.load(scratch / "ref.npy")
            timings[num] = (_total(theirs), theirs["cpu_s"])
            row(
                "fast-reid (reference)",
                theirs,
                f"{ref_labels.max() + 1} clusters, {(ref_labels < 0).sum()} outliers (faiss {theirs['faiss']})",
            )
            print(
                f"  -> hf_reid {_total(theirs) / _total(ours):.1f}x faster ({theirs['cpu_s'] / ours['cpu_s']:.1f}x in "
                f"CPU time), peak RSS {ours['peak_gb']:.2f} vs "
                f"{theirs['peak_gb']:.2f} GB (extra {ours['extra_gb']:.2f} vs {theirs['extra_gb']:.2f} GB); "
                f"ARI between the clusterings {ari_with_singletons(ours_labels, ref_labels):.5f}"
            )


if __name__ == "__main__":
    main()
