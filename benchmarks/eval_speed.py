"""Speed and peak memory of hf_reid's evaluation and re-ranking, against the reference.

At Market-1501 scale (3,368 queries x 15,913 gallery, 512-d features, 750 identities, 6 cameras,
distractors) it times, each in a fresh process so that peak memory is its own:

- ``evaluate_rank`` against torchreid's pure-Python evaluator (``metrics/rank.py``, the kernel
  every anchor shares), and checks that CMC (ranks 1-50) and mAP agree;
- ``re_ranking`` (distance-matrix API, as the reference) and ``re_ranking_features`` against
  torchreid's ``utils/rerank.py``, and checks that the re-ranked distances agree.

At MSMT17 scale (11,659 x 82,161) it runs hf_reid's evaluation and re-ranking (from features)
and prints the memory the references would need by construction (they are not run: the
re-ranking reference alone allocates several 35 GB matrices).

The reference is found with ``--torchreid DIR`` (a folder with ``metrics/rank.py`` and
``utils/rerank.py``: a checkout's ``torchreid/`` or ``torchreid/reid/`` of the PyPI sdist), the
``HF_REID_TORCHREID_DIR`` variable, or an installed ``torchreid`` package; the files are loaded by
path, so torchreid's own dependencies are not needed. Without it the hf_reid rows are still
printed and the reference rows say "reference not available".

Peak memory is the process's resident-set high-water mark during the call minus its resident
set just before (inputs already loaded), read from /proc (Linux). The machine may be shared:
the load average is printed, and times vary with it.

Usage: ``python benchmarks/eval_speed.py [--scale market|msmt|all] [--torchreid DIR] [--skip-reference]``
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from hf_reid.metrics import compute_distance_matrix, evaluate_rank, re_ranking, re_ranking_features

SCALES = {"market": (3368, 15913, 750), "msmt": (11659, 82161, 3060)}
DIM = 512


# --------------------------------------------------------------------------- data


def make_features(num_query: int, num_gallery: int, num_ids: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Identity centres plus noise, distractors (pid 0) in the gallery, 6 cameras."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_ids + 1, DIM), dtype=np.float32)
    num_distractors = num_gallery // 6
    g_pids = np.concatenate(
        [rng.integers(1, num_ids + 1, num_gallery - num_distractors), np.zeros(num_distractors, np.int64)]
    )
    q_pids = rng.integers(1, num_ids + 1, num_query)
    gallery = centres[g_pids] * (g_pids[:, None] > 0) + 3.0 * rng.standard_normal(
        (num_gallery, DIM), dtype=np.float32
    )
    query = centres[q_pids] + 3.0 * rng.standard_normal((num_query, DIM), dtype=np.float32)
    return {
        "query": query.astype(np.float32),
        "gallery": gallery.astype(np.float32),
        "q_pids": q_pids,
        "g_pids": g_pids,
        "q_camids": rng.integers(0, 6, num_query),
        "g_camids": rng.integers(0, 6, num_gallery),
    }


def write_market_inputs(folder: Path) -> None:
    data = make_features(*SCALES["market"])
    np.savez(folder / "ids.npz", **{k: v for k, v in data.items() if k not in ("query", "gallery")})
    np.save(folder / "query.npy", data["query"])
    np.save(folder / "gallery.npy", data["gallery"])
    np.save(folder / "q_g.npy", compute_distance_matrix(data["query"], data["gallery"]))
    np.save(folder / "q_q.npy", compute_distance_matrix(data["query"], data["query"]))
    np.save(folder / "g_g.npy", compute_distance_matrix(data["gallery"], data["gallery"]))


# --------------------------------------------------------------------------- reference


def find_torchreid(explicit: Path | None) -> Path | None:
    """Folder holding torchreid's metrics/rank.py and utils/rerank.py, if any."""
    candidates = [explicit] if explicit else []
    if os.environ.get("HF_REID_TORCHREID_DIR"):
        candidates.append(Path(os.environ["HF_REID_TORCHREID_DIR"]))
    spec = importlib.util.find_spec("torchreid")
    if spec is not None and spec.submodule_search_locations:
        root = Path(next(iter(spec.submodule_search_locations)))
        candidates += [root, root / "reid"]
    for folder in candidates:
        if (
            folder
            and (folder / "metrics" / "rank.py").is_file()
            and (folder / "utils" / "rerank.py").is_file()
        ):
            return folder
    return None


def load_reference(folder: Path, relative: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"reference_{Path(relative).stem}", folder / relative)
    module = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Cython evaluation is unavailable"
        spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- measuring


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


class PeakMemory:
    """Resident-set high-water mark of this process during a block, in GB.

    Resets the kernel's VmHWM through /proc/self/clear_refs when allowed; otherwise samples
    VmRSS every 2 ms in a thread."""

    def __enter__(self) -> PeakMemory:
        self.before = _status_kb("VmRSS")
        self.sampled = self.before
        try:
            with open("/proc/self/clear_refs", "w") as clear:
                clear.write("5")
            self.use_hwm = True
        except OSError:
            self.use_hwm = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.sampled = max(self.sampled, _status_kb("VmRSS"))

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        peak = _status_kb("VmHWM") if self.use_hwm else self.sampled
        self.peak_gb = peak / 2**20
        self.extra_gb = max(0, peak - self.before) / 2**20


def _run_job(job: str, kwargs: dict[str, Any], queue: mp.Queue) -> None:
    try:
        queue.put(globals()[job](**kwargs))
    except BaseException as error:  # reported by the parent
        queue.put({"error": f"{type(error).__name__}: {error}"})


def isolated(job: str, **kwargs: Any) -> dict[str, Any]:
    """Run ``job(**kwargs)`` in a fresh process and return its result dict."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_run_job, args=(job, kwargs, queue))
    process.start()
    result = queue.get()
    process.join()
    if "error" in result:
        raise RuntimeError(f"{job} failed: {result['error']}")
    return result


def _load(folder: str, *names: str) -> list[np.ndarray]:
    return [np.load(Path(folder) / f"{name}.npy") for name in names]


def job_eval(folder: str, reference: str | None) -> dict[str, Any]:
    (distmat,) = _load(folder, "q_g")
    ids = dict(np.load(Path(folder) / "ids.npz"))
    args = (distmat, ids["q_pids"], ids["g_pids"], ids["q_camids"], ids["g_camids"], 50)
    if reference:
        rank = load_reference(Path(reference), "metrics/rank.py")
        with PeakMemory() as memory:
            start = time.perf_counter()
            cmc, mean_ap = rank.evaluate_rank(*args, use_metric_cuhk03=False, use_cython=False)
            seconds = time.perf_counter() - start
        return {"seconds": seconds, "peak": memory.extra_gb, "cmc": np.asarray(cmc), "mAP": float(mean_ap)}
    with PeakMemory() as memory:
        start = time.perf_counter()
        result = evaluate_rank(*args)
        seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "peak": memory.extra_gb,
        "cmc": result.cmc,
        "mAP": result.mAP,
        "mINP": result.mINP,
    }


def job_rerank(folder: str, reference: str | None, out: str, features: bool = False) -> dict[str, Any]:
    if features:
        query, gallery = _load(folder, "query", "gallery")
    else:
        q_g, q_q, g_g = _load(folder, "q_g", "q_q", "g_g")
    function = load_reference(Path(reference), "utils/rerank.py").re_ranking if reference else re_ranking
    with PeakMemory() as memory:
        start = time.perf_counter()
        result = re_ranking_features(query, gallery) if features else function(q_g, q_q, g_g)
        seconds = time.perf_counter() - start
    np.save(out, result)
    return {"seconds": seconds, "peak": memory.extra_gb}


def job_msmt(which: str) -> dict[str, Any]:
    data = make_features(*SCALES["msmt"])
    ids = (data["q_pids"], data["g_pids"], data["q_camids"], data["g_camids"])
    timings = {}
    with PeakMemory() as memory:
        start = time.perf_counter()
        if which == "eval":
            distmat = compute_distance_matrix(data["query"], data["gallery"])
            timings["distance"] = time.perf_counter() - start
        else:
            distmat = re_ranking_features(data["query"], data["gallery"])
            timings["re-ranking"] = time.perf_counter() - start
        middle = time.perf_counter()
        result = evaluate_rank(distmat, *ids)
        timings["evaluate_rank"] = time.perf_counter() - middle
    return {
        "timings": timings,
        "peak": memory.extra_gb,
        "total_peak": memory.peak_gb,
        "metrics": result.to_dict(),
    }


# --------------------------------------------------------------------------- report


def has_tied_neighbours(folder: str, item: int, k: int) -> bool:
    """Whether the k+1 nearest neighbours of ``item`` (query + gallery order), or of any of them,
    contain exactly equal distances, so that their order is implementation-defined."""
    q_g, q_q, g_g = _load(folder, "q_g", "q_q", "g_g")
    num_query = q_g.shape[0]

    def column(i: int) -> np.ndarray:  # column i of [[q_q, q_g], [q_g^T, g_g]], squared as the reference
        if i < num_query:
            values = np.concatenate([q_q[:, i], q_g[i]])
        else:
            values = np.concatenate([q_g[:, i - num_query], g_g[:, i - num_query]])
        return values.astype(np.float32) ** 2

    def nearest(i: int) -> tuple[np.ndarray, bool]:
        values = column(i)
        order = np.argsort(values, kind="stable")[: k + 2]
        return order, bool((np.diff(values[order]) == 0).any())

    order, tied = nearest(item)
    return tied or any(nearest(int(j))[1] for j in order[1 : k + 1])


def compare_re_ranked(ours: np.ndarray, reference: np.ndarray, folder: str, k1: int = 20) -> str:
    """Max difference, and which query rows differ by more than 1e-5 and why."""
    rows, worst_clean, worst = [], 0.0, 0.0
    for start in range(0, ours.shape[0], 256):
        diff = np.abs(np.asarray(ours[start : start + 256]) - np.asarray(reference[start : start + 256])).max(
            axis=1
        )
        rows += [start + int(i) for i in np.flatnonzero(diff > 1e-5)]
        worst = max(worst, float(diff.max()))
        worst_clean = max(worst_clean, float(diff[diff <= 1e-5].max(initial=0.0)))
    if not rows:
        return f"max |difference| = {worst:.1e} on every row"
    tied = sum(has_tied_neighbours(folder, row, k1) for row in rows)
    return (
        f"max |difference| = {worst_clean:.1e} on {ours.shape[0] - len(rows)} of {ours.shape[0]} query rows; "
        f"{len(rows)} row(s) differ by up to {worst:.1e}, {tied} of them with exactly tied distances in "
        "their nearest-neighbour lists (the reference orders ties by quicksort, hf_reid by index)"
    )


def row(name: str, seconds: float | None, peak: float | None, note: str = "") -> None:
    time_text = "-" if seconds is None else f"{seconds:9.2f} s"
    peak_text = "-" if peak is None else f"{peak:7.2f} GB"
    print(f"  {name:<44} {time_text:>12} {peak_text:>11}   {note}")


def bench_market(reference: Path | None) -> None:
    num_query, num_gallery, _ = SCALES["market"]
    print(f"\nMarket-1501 scale: {num_query} x {num_gallery}, {DIM}-d features")
    with tempfile.TemporaryDirectory(prefix="hf_reid_bench_") as folder:
        write_market_inputs(Path(folder))
        ref = str(reference) if reference else None
        print(f"  {'':<44} {'time':>12} {'peak extra':>11}")
        ours = isolated("job_eval", folder=folder, reference=None)
        row("evaluate_rank (hf_reid)", ours["seconds"], ours["peak"])
        if ref:
            theirs = isolated("job_eval", folder=folder, reference=ref)
            row("evaluate_rank (torchreid, pure Python)", theirs["seconds"], theirs["peak"])
            cmc_diff = float(np.abs(ours["cmc"] - theirs["cmc"]).max())
            print(
                f"  -> {theirs['seconds'] / ours['seconds']:.0f}x faster; max |CMC diff| (ranks 1-50) = {cmc_diff:.1e}, "
                f"|mAP diff| = {abs(ours['mAP'] - theirs['mAP']):.1e} (float32 distances tie now and then; "
                "the reference orders ties arbitrarily)"
            )
        else:
            row("evaluate_rank (torchreid)", None, None, "reference not available")
        print(f"  R1 {ours['cmc'][0]:.4f}  mAP {ours['mAP']:.4f}  mINP {ours['mINP']:.4f}")

        ours_path, feat_path, ref_path = (
            str(Path(folder) / name) for name in ("ours.npy", "feat.npy", "ref.npy")
        )
        ours = isolated("job_rerank", folder=folder, reference=None, out=ours_path)
        row("re_ranking, matrices (hf_reid)", ours["seconds"], ours["peak"])
        feats = isolated("job_rerank", folder=folder, reference=None, out=feat_path, features=True)
        row("re_ranking_features (hf_reid)", feats["seconds"], feats["peak"])
        if ref:
            theirs = isolated("job_rerank", folder=folder, reference=ref, out=ref_path)
            row("re_ranking (torchreid)", theirs["seconds"], theirs["peak"])
            ref_out = np.load(ref_path, mmap_mode="r")
            for label, path in (("re_ranking", ours_path), ("re_ranking_features", feat_path)):
                print(f"  -> {label}: {compare_re_ranked(np.load(path, mmap_mode='r'), ref_out, folder)}")
            print(
                f"  -> {theirs['seconds'] / ours['seconds']:.1f}x faster with {ours['peak'] / theirs['peak']:.0%} of its peak memory"
            )
        else:
            row("re_ranking (torchreid)", None, None, "reference not available")


def bench_msmt() -> None:
    num_query, num_gallery, _ = SCALES["msmt"]
    num_all = num_query + num_gallery
    print(f"\nMSMT17 scale: {num_query} x {num_gallery}, {DIM}-d features")
    print(f"  {'':<44} {'time':>12} {'peak extra':>11}")
    for which, label in (
        ("eval", "distances + evaluate_rank (hf_reid)"),
        ("rerank", "re_ranking_features + evaluate_rank"),
    ):
        result = isolated("job_msmt", which=which)
        parts = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in result["timings"].items())
        row(
            label,
            sum(result["timings"].values()),
            result["peak"],
            f"({parts}; R1 {result['metrics']['rank-1']:.4f})",
        )
    gb = 1e9
    eval_need = (num_query * num_gallery * (4 + 8 + 8 + 1)) / gb
    rerank_need = (num_all**2 * (4 + 4 + 8)) / gb  # distances, V and the int64 argsort, at least
    print(
        f"  references, not run: torchreid's evaluator holds the float32 distances, int64 argsort indices,\n"
        f"  their int64 pid lookup and a bool mask at once: >= {eval_need:.1f} GB; its re-ranking builds\n"
        f"  (Q+G)^2 matrices of {num_all**2 * 4 / gb:.1f} GB per float32 (distances, V, an int64 argsort at"
        f" once): >= {rerank_need:.0f} GB."
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", choices=["market", "msmt", "all"], default="all")
    parser.add_argument(
        "--torchreid", type=Path, default=None, help="folder with metrics/rank.py, utils/rerank.py"
    )
    parser.add_argument("--skip-reference", action="store_true", help="time hf_reid only")
    args = parser.parse_args()
    reference = None if args.skip_reference else find_torchreid(args.torchreid)
    print(
        f"hf_reid evaluation benchmark: torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"reference: {reference if reference else 'reference not available'}")
    if args.scale in ("market", "all"):
        bench_market(reference)
    if args.scale in ("msmt", "all"):
        bench_msmt()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
