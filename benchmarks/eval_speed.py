"""Speed and peak memory of hf_reid's evaluation and re-ranking, against the reference, idle and
under load.

Part 1 (``--scale market`` or ``all``), in one process per condition, for 300 x 1,200, 800 x 3,200
and 1,400 x 5,332 (128-d features) and Market-1501 scale (3,368 x 15,913, 512-d), it times

- ``re_ranking`` (distance matrices, k1=20, k2=6, lambda=0.3) against torchreid's
  ``utils/rerank.py`` and prints the ratio and the max |difference| of the re-ranked distances;
- ``evaluate_rank`` (CMC to rank 50, mAP, mINP) against torchreid's pure-Python evaluator
  (``metrics/rank.py``, the kernel every anchor shares) and prints the ratio,

first on the machine as it is ("idle"), then UNDER LOAD: the benchmark starts as many CPU-bound
competing processes as there are available CPUs, runs the same measurements, and stops them.
Each row is the median of a few runs of hf_reid and of the reference, alternated.
At Market scale it also runs each function once in a fresh process for its peak memory.

Part 2 (``--scale msmt`` or ``all``), MSMT17 scale (11,659 x 82,161, 512-d), each in a fresh
process: ``compute_distance_matrix`` + ``evaluate_rank`` and ``re_ranking_features`` +
``evaluate_rank``, with time and peak memory against the limits of issue #17 (25 s and 100 s,
5 GB above the inputs), and the max |difference| of CMC (ranks 1-50), mAP and mINP against the
protocol's definition (a stable argsort of every row, junk removed) on a subset of queries. The
references are not run there (the re-ranking reference alone allocates several 35 GB matrices).

The reference is found with ``--torchreid DIR`` (a folder with ``metrics/rank.py`` and
``utils/rerank.py``: a checkout's ``torchreid/`` or ``torchreid/reid/`` of the PyPI sdist), the
``HF_REID_TORCHREID_DIR`` variable, or an installed ``torchreid`` package; the files are loaded by
path, so torchreid's own dependencies are not needed. Without it the hf_reid rows are still
printed and the reference rows say "reference not available".

Peak memory is the process's resident-set high-water mark during the call minus its resident
set just before (inputs already loaded), read from /proc (Linux).

Usage: ``python benchmarks/eval_speed.py [--scale market|msmt|all] [--torchreid DIR]
[--skip-reference] [--no-load] [--repeats N] [--load-repeats N]`` (``--scale all``: about 15
minutes on 2 quiet cores, most of it in the reference at Market scale).
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from hf_reid.metrics import _gemm, compute_distance_matrix, evaluate_rank, re_ranking, re_ranking_features
from hf_reid.metrics._threads import available_cpus
from hf_reid.metrics.rank_reference import rank_by_sorting

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import PeakMemory

SCALES = {"market": (3368, 15913, 750), "msmt": (11659, 82161, 3060)}
DIM = 512
SMALL_SIZES = ((300, 1200), (800, 3200), (1400, 5332))
"""Sizes of issue #17's re-ranking measurements (128-d features, about 20 images per identity)."""
SMALL_DIM = 128
MSMT_LIMITS = {"eval": (25.0, 5.0), "rerank": (100.0, 5.0)}
"""Issue #17's limits: seconds, and GB of peak memory above the inputs."""


# --------------------------------------------------------------------------- data


def make_features(
    num_query: int, num_gallery: int, num_ids: int, seed: int = 0, dim: int = DIM
) -> dict[str, np.ndarray]:
    """Identity centres plus noise, distractors (pid 0) in the gallery, 6 cameras."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_ids + 1, dim), dtype=np.float32)
    num_distractors = num_gallery // 6
    g_pids = np.concatenate(
        [rng.integers(1, num_ids + 1, num_gallery - num_distractors), np.zeros(num_distractors, np.int64)]
    )
    q_pids = rng.integers(1, num_ids + 1, num_query)
    gallery = centres[g_pids] * (g_pids[:, None] > 0) + 3.0 * rng.standard_normal(
        (num_gallery, dim), dtype=np.float32
    )
    query = centres[q_pids] + 3.0 * rng.standard_normal((num_query, dim), dtype=np.float32)
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


def max_metric_difference(distmat: np.ndarray, ids: tuple[np.ndarray, ...], every: int) -> float:
    """Max |difference| of CMC (1-50), mAP and mINP between ``evaluate_rank`` and
    :func:`hf_reid.metrics.rank_reference.rank_by_sorting` (the definition: a stable sort of each
    row) on every ``every``-th query."""
    rows = np.arange(0, distmat.shape[0], every)
    sub_ids = (ids[0][rows], ids[1], ids[2][rows], ids[3])
    sub = np.ascontiguousarray(distmat[rows])
    ours = evaluate_rank(sub, *sub_ids)
    junk = (sub_ids[0][:, None] == sub_ids[1][None, :]) & (sub_ids[2][:, None] == sub_ids[3][None, :])
    cmc, mean_ap, mean_inp, _ = rank_by_sorting(sub, sub_ids[0], sub_ids[1], junk, 50)
    return max(float(np.abs(ours.cmc - cmc).max()), abs(ours.mAP - mean_ap), abs(ours.mINP - mean_inp))


def job_msmt(which: str, check_every: int = 25) -> dict[str, Any]:
    data = make_features(*SCALES["msmt"])
    ids = (data["q_pids"], data["g_pids"], data["q_camids"], data["g_camids"])
    timings = {}
    with PeakMemory() as memory:
        start = time.perf_counter()
        if which == "eval":
            distmat = compute_distance_matrix(data["query"], data["gallery"])
            timings["distances"] = time.perf_counter() - start
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
        "max_diff": max_metric_difference(distmat, ids, check_every),
        "checked": len(range(0, distmat.shape[0], check_every)),
    }


# --------------------------------------------------------------------------- competing load


def _spin() -> None:
    while True:
        pass


class CompetingLoad:
    """``count`` CPU-bound processes (busy loops) running while the block runs, then stopped."""

    def __init__(self, count: int):
        self.count = count
        self.processes: list[mp.Process] = []

    def __enter__(self) -> CompetingLoad:
        context = mp.get_context("spawn")
        for _ in range(self.count):
            process = context.Process(target=_spin, daemon=True)
            process.start()
            self.processes.append(process)
        time.sleep(1.0)  # let them start spinning
        return self

    def __exit__(self, *exc) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.join()


def median_times(functions: dict[str, Any], repeats: int) -> dict[str, float]:
    """Median seconds of each function over ``repeats`` runs, the functions alternated."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


class RatioCase:
    """Inputs of one size: features, the three distance matrices and the ids."""

    def __init__(self, num_query: int, num_gallery: int, dim: int, num_ids: int):
        self.label = f"{num_query:,} x {num_gallery:,}"
        data = make_features(num_query, num_gallery, num_ids, dim=dim)
        self.q_g = compute_distance_matrix(data["query"], data["gallery"])
        self.q_q = compute_distance_matrix(data["query"], data["query"])
        self.g_g = compute_distance_matrix(data["gallery"], data["gallery"])
        self.ids = (data["q_pids"], data["g_pids"], data["q_camids"], data["g_camids"])
        self.repeats_scale = num_query * num_gallery


def ratio_cases() -> list[RatioCase]:
    cases = [RatioCase(q, g, SMALL_DIM, max(10, g // 20)) for q, g in SMALL_SIZES]
    cases.append(RatioCase(*SCALES["market"][:2], DIM, SCALES["market"][2]))
    cases[-1].label = "Market " + cases[-1].label
    return cases


def bench_ratios(cases: list[RatioCase], reference: Path | None, condition: str, repeats: int) -> list[float]:
    """One table of hf_reid vs reference times; returns the re-ranking ratios."""
    print(
        f"\n{condition}: load average {os.getloadavg()[0]:.1f} on {available_cpus()} available CPUs "
        f"(medians of up to {repeats} runs)"
    )
    print(
        f"  {'size':<22} {'re-ranking hf_reid':>18} {'reference':>10} {'ratio':>7} {'max |diff|':>10}"
        f"   {'evaluation hf_reid':>18} {'reference':>10} {'ratio':>7}"
    )
    rerank_module = load_reference(reference, "utils/rerank.py") if reference else None
    rank_module = load_reference(reference, "metrics/rank.py") if reference else None
    ratios = []
    for case in cases:
        runs = repeats if case.repeats_scale < 10_000_000 else 1
        ours_times, ref_times, diff = [], [], None
        for run in range(runs):  # alternated, so that both see the same load
            start = time.perf_counter()
            ours_out = re_ranking(case.q_g, case.q_q, case.g_g)
            ours_times.append(time.perf_counter() - start)
            if rerank_module:
                start = time.perf_counter()
                ref_out = rerank_module.re_ranking(case.q_g, case.q_q, case.g_g)
                ref_times.append(time.perf_counter() - start)
                if run == 0:
                    diff = float(np.abs(ours_out - ref_out).max())
                del ref_out
        rerank_times = {"ours": statistics.median(ours_times)}
        if ref_times:
            rerank_times["ref"] = statistics.median(ref_times)
        eval_functions = {"ours": lambda c=case: evaluate_rank(c.q_g, *c.ids, 50)}
        if rank_module:
            eval_functions["ref"] = lambda c=case: rank_module.evaluate_rank(
                c.q_g, *c.ids, 50, use_metric_cuhk03=False, use_cython=False
            )
        eval_times = median_times(eval_functions, runs)
        if rerank_module:
            ratio = rerank_times["ref"] / rerank_times["ours"]
            ratios.append(ratio)
            rerank_text = f"{rerank_times['ref']:9.2f} s {ratio:6.1f}x {diff:10.1e}"
            eval_text = f"{eval_times['ref']:9.2f} s {eval_times['ref'] / eval_times['ours']:6.1f}x"
        else:
            rerank_text = f"{'-':>10} {'-':>7} {'-':>10}"
            eval_text = f"{'-':>10} {'-':>7}"
        print(
            f"  {case.label:<22} {rerank_times['ours']:16.3f} s {rerank_text}   "
            f"{eval_times['ours']:16.3f} s {eval_text}",
            flush=True,
        )
    return ratios


# --------------------------------------------------------------------------- report


def row(name: str, seconds: float | None, peak: float | None, note: str = "") -> None:
    time_text = "-" if seconds is None else f"{seconds:9.2f} s"
    peak_text = "-" if peak is None else f"{peak:7.2f} GB"
    print(f"  {name:<44} {time_text:>12} {peak_text:>11}   {note}")


def bench_market_memory() -> None:
    """hf_reid's time and peak memory at Market scale, each call in a fresh process."""
    num_query, num_gallery, _ = SCALES["market"]
    print(f"\nMarket-1501 scale, peak memory: {num_query} x {num_gallery}, {DIM}-d features, fresh processes")
    with tempfile.TemporaryDirectory(prefix="hf_reid_bench_") as folder:
        write_market_inputs(Path(folder))
        print(f"  {'':<44} {'time':>12} {'peak extra':>11}")
        ours = isolated("job_eval", folder=folder, reference=None)
        row("evaluate_rank", ours["seconds"], ours["peak"])
        print(f"  R1 {ours['cmc'][0]:.4f}  mAP {ours['mAP']:.4f}  mINP {ours['mINP']:.4f}")
        matrices = isolated("job_rerank", folder=folder, reference=None, out=str(Path(folder) / "a.npy"))
        row("re_ranking, matrices", matrices["seconds"], matrices["peak"])
        feats = isolated(
            "job_rerank", folder=folder, reference=None, out=str(Path(folder) / "b.npy"), features=True
        )
        row("re_ranking_features", feats["seconds"], feats["peak"])
        diff = float(np.abs(np.load(Path(folder) / "a.npy") - np.load(Path(folder) / "b.npy")).max())
        print(f"  -> max |re_ranking - re_ranking_features| = {diff:.1e}")


def matmul_rates(rows: int = 512, cols: int = 20_000, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of one float32 ``rows x DIM`` by ``DIM x cols`` product on ONE thread, through
    torch (MKL in the CPU wheels) and through numpy (OpenBLAS in its wheels): what
    ``hf_reid/metrics/_gemm.py`` chooses between; best of ``repeats``, alternated."""
    from threadpoolctl import threadpool_limits

    from hf_reid.metrics._threads import torch_threads

    rng = np.random.default_rng(0)
    a, b = (
        rng.standard_normal((rows, DIM), dtype=np.float32),
        rng.standard_normal((cols, DIM), dtype=np.float32),
    )
    at, bt = torch.from_numpy(a), torch.from_numpy(b)
    products = {"torch": lambda: torch.mm(at, bt.T), "numpy": lambda: a @ b.T}
    best = dict.fromkeys(products, float("inf"))
    with torch_threads(1), threadpool_limits(1, user_api="blas"):
        for _ in range(repeats):
            for name, product in products.items():
                start = time.perf_counter()
                product()
                best[name] = min(best[name], time.perf_counter() - start)
    return {name: 2 * rows * cols * DIM / seconds / 1e9 for name, seconds in best.items()}


def bench_msmt() -> bool:
    num_query, num_gallery, _ = SCALES["msmt"]
    num_all = num_query + num_gallery
    print(
        f"\nMSMT17 scale: {num_query} x {num_gallery}, {DIM}-d features, fresh processes, load average "
        f"{os.getloadavg()[0]:.1f} on {available_cpus()} available CPUs"
    )
    rates = matmul_rates()
    print(
        f"  float32 matrix product, one thread: torch {rates['torch']:.0f} GFLOP/s, numpy "
        f"{rates['numpy']:.0f} GFLOP/s; compute_distance_matrix uses "
        f"{'numpy' if _gemm._backend() == 'numpy' else 'torch'} here (hf_reid/metrics/_gemm.py)"
    )
    print(f"  {'':<44} {'time':>12} {'peak extra':>11}")
    passed = True
    for which, label in (
        ("eval", "distances + evaluate_rank"),
        ("rerank", "re_ranking_features + evaluate_rank"),
    ):
        result = isolated("job_msmt", which=which)
        parts = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in result["timings"].items())
        total = sum(result["timings"].values())
        seconds_limit, memory_limit = MSMT_LIMITS[which]
        ok = total <= seconds_limit and result["peak"] <= memory_limit
        passed &= ok
        row(
            label,
            total,
            result["peak"],
            f"({parts}; R1 {result['metrics']['rank-1']:.4f}, mAP {result['metrics']['mAP']:.4f}) limits "
            f"{seconds_limit:.0f} s, {memory_limit:.0f} GB: {'PASS' if ok else 'FAIL'}",
        )
        print(
            f"  -> max |difference| of CMC (1-50), mAP, mINP against the definition (stable argsort) on "
            f"{result['checked']} queries: {result['max_diff']:.1e}"
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
    return passed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", choices=["market", "msmt", "all"], default="all")
    parser.add_argument(
        "--torchreid", type=Path, default=None, help="folder with metrics/rank.py, utils/rerank.py"
    )
    parser.add_argument("--skip-reference", action="store_true", help="time hf_reid only")
    parser.add_argument("--no-load", action="store_true", help="skip the under-load measurements")
    parser.add_argument("--repeats", type=int, default=3, help="runs per row below Market scale (median)")
    parser.add_argument("--load-repeats", type=int, default=2, help="the same under load")
    args = parser.parse_args()
    reference = None if args.skip_reference else find_torchreid(args.torchreid)
    print(
        f"hf_reid evaluation benchmark: torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{available_cpus()} available CPUs of {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}"
    )
    print(f"reference: {reference if reference else 'reference not available'}")
    if args.scale in ("market", "all"):
        cases = ratio_cases()
        ratios = bench_ratios(cases, reference, "IDLE (no competing process started)", args.repeats)
        if not args.no_load:
            with CompetingLoad(available_cpus()) as load:
                ratios += bench_ratios(
                    cases,
                    reference,
                    f"UNDER LOAD ({load.count} competing CPU-bound processes)",
                    args.load_repeats,
                )
        if ratios:
            print(
                f"  -> smallest re-ranking ratio {min(ratios):.1f}x: "
                f"{'PASS' if min(ratios) >= 5 else 'FAIL'} (>= 5 in every row)"
            )
        del cases
        bench_market_memory()
    if args.scale in ("msmt", "all"):
        bench_msmt()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
