"""Helpers the recipe benchmarks share: run recipes in subprocesses (several at once if asked),
keep their results, and format mean ± std cells.

A finished run's ``eval_results.json`` and ``train_results.json`` (a few KB) are also copied into
``benchmarks/results/`` (tracked by git), under the run folder's path below ``runs/``, with
``run.json`` (the command and the commit it ran at). A run folder that is gone (a fresh checkout,
another machine) is then not trained again: its results are read from the archive. Delete the
archived folder to run it again (after a change that affects it).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ARCHIVE = ROOT / "benchmarks" / "results"
RESULT_FILES = ("eval_results.json", "train_results.json")
logger = logging.getLogger("benchmarks")


@dataclass
class RecipeRun:
    """One recipe run of a benchmark: ``python recipes/<recipe>.py --config CONFIG --output_dir
    OUTPUT_DIR --seed SEED EXTRA``."""

    recipe: str
    config: Path
    output_dir: Path
    seed: int
    extra: list[str] = field(default_factory=list)


def run_recipe(
    recipe: str, config: Path, output_dir: Path, seed: int, extra: list[str], threads: int | None = None
) -> tuple[dict, dict]:
    """``python recipes/<recipe>.py --config CONFIG --output_dir OUT --seed SEED EXTRA`` in a
    subprocess (so its timings are those of a plain run); returns (eval_results, train_results).
    A run whose results already exist in ``output_dir`` or the archive is not repeated; ``threads`` caps the
    subprocess's intra-op threads (for runs that share the machine)."""
    done = finished_folder(output_dir)
    if done is None:
        command = [
            sys.executable,
            str(ROOT / "recipes" / f"{recipe}.py"),
            *("--config", str(config), "--output_dir", str(output_dir), "--seed", str(seed)),
            *("--train.progress_bar", "false", *extra),
        ]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        if threads is not None:
            env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        start = time.perf_counter()
        process = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{process.stderr[-4000:]}")
        logger.warning("  %s: %.0f s", output_dir.name, time.perf_counter() - start)
        archived = archive_folder(output_dir)
        if archived is not None:
            archive_results(output_dir, archived, command)
        done = output_dir
    return tuple(json.loads((done / name).read_text()) for name in RESULT_FILES)


def finished_folder(output_dir: Path) -> Path | None:
    """Where a finished run's result files are: the run folder, else its archive; ``None`` when
    the run has not finished."""
    for place in (output_dir, archive_folder(output_dir)):
        if place is not None and all((place / name).is_file() for name in RESULT_FILES):
            return place
    return None


def archive_folder(output_dir: Path) -> Path | None:
    """Where a run folder's results are archived: its path below ``ROOT/runs`` under
    ``benchmarks/results``; ``None`` for a folder outside ``runs/`` (not archived)."""
    try:
        relative = output_dir.resolve().relative_to((ROOT / "runs").resolve())
    except ValueError:
        return None
    return ARCHIVE / relative


def archive_results(output_dir: Path, archived: Path, command: list[str]) -> None:
    """Copy a finished run's result files into the archive, with the command and commit."""
    archived.mkdir(parents=True, exist_ok=True)
    for name in RESULT_FILES:
        (archived / name).write_text((output_dir / name).read_text())
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    arguments = [
        str(Path(part).relative_to(ROOT)) if part.startswith(str(ROOT)) else part for part in command[1:]
    ]
    run = {"command": ["python", *arguments], "commit": commit.stdout.strip() or None}
    (archived / "run.json").write_text(json.dumps(run, indent=1) + "\n")


def run_recipes(runs: list[RecipeRun], jobs: int = 1) -> list[tuple[dict, dict]]:
    """:func:`run_recipe` for every run, ``jobs`` at a time (with several, each gets ``cores //
    jobs`` threads); results in the order of ``runs``. Runs that share the cores take longer."""
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [
            pool.submit(run_recipe, r.recipe, r.config, r.output_dir, r.seed, r.extra, threads) for r in runs
        ]
        return [future.result() for future in futures]


def run_folder(name: str, seed: int) -> str:
    """Folder name of a benchmark row's run: ``"ReText w/o structure", 1 -> retext_wo_structure_seed1``."""
    slug = name.lower().replace("/", "").replace("+ ", "").replace(", ", "_").replace(" ", "_")
    return f"{slug.replace('-', '')}_seed{seed}"


def cell(values: list[float]) -> str:
    """A metric in percent: one value as is, several as mean ± population std."""
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values):.1f}"
