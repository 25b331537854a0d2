"""Print a run's ``eval_results.json`` as a markdown table: ``python -m hf_reid.report FILE``.

Every entry of the file (at any depth) that holds an ``mAP`` becomes one row, named by its path
of keys, with mAP, Rank-1/5/10 and mINP in percent.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

COLUMNS = ("mAP", "rank-1", "rank-5", "rank-10", "mINP")


def result_rows(results: Mapping, prefix: str = "") -> Iterator[tuple[str, Mapping]]:
    """``(name, metrics)`` for every mapping in ``results`` that holds an ``mAP``."""
    if "mAP" in results:
        yield prefix or "result", results
        return
    for key, value in results.items():
        if isinstance(value, Mapping):
            yield from result_rows(value, f"{prefix}/{key}" if prefix else str(key))


def format_table(results: Mapping) -> str:
    """The markdown table of :func:`result_rows` (values in percent, ``–`` where absent)."""
    rows = list(result_rows(results))
    if not rows:
        raise ValueError("no result with an 'mAP' entry found")
    lines = ["| evaluation | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for name, metrics in rows:
        cells = [f"{100 * float(metrics[c]):.1f}" if c in metrics else "–" for c in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m hf_reid.report RUN_DIR/eval_results.json", file=sys.stderr)
        return 2
    path = Path(argv[0])
    if not path.is_file():
        print(f"{path}: no such file (did the run finish?)", file=sys.stderr)
        return 1
    print(format_table(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
