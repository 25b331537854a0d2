"""The results table printed at the end of the quickstart."""

import json

import pytest

from hf_reid.report import format_table, main


def test_every_result_with_a_map_becomes_a_row(tmp_path, capsys):
    results = {
        "SynthPeds d0": {"mAP": 0.5, "rank-1": 0.75, "mINP": 0.1},
        "extra": {"nested": {"mAP": 0.25}},
        "timings": {"stage1_seconds": 10.0},
    }
    table = format_table(results).splitlines()
    assert table[2] == "| SynthPeds d0 | 50.0 | 75.0 | – | – | 10.0 |"
    assert table[3].startswith("| extra/nested | 25.0 |")
    assert len(table) == 4
    path = tmp_path / "eval_results.json"
    path.write_text(json.dumps(results))
    assert main([str(path)]) == 0
    assert "SynthPeds d0" in capsys.readouterr().out


def test_missing_or_empty_results_are_reported():
    with pytest.raises(ValueError, match="mAP"):
        format_table({"timings": {"s": 1}})
    assert main(["/nonexistent/eval_results.json"]) == 1
