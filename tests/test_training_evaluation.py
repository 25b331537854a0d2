"""evaluate_retrieval: normalisation that takes effect, protocol options passed through,
eval_results.json and plots written. hf_reid.metrics is replaced by small fakes here so these
tests check this module's glue whether or not the metrics module has landed."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import hf_reid.metrics
from hf_reid.training import evaluate_retrieval


@pytest.fixture
def fake_metrics(monkeypatch):
    calls = {}

    def compute_distance_matrix(q, g, metric):
        calls["metric"] = metric
        return torch.cdist(q, g).numpy()

    def evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50, **kwargs):
        calls["rank_args"] = (q_pids, g_pids, q_camids, g_camids, max_rank, kwargs)
        top1 = g_pids[distmat.argmin(axis=1)]
        rank1 = float((top1 == q_pids).mean())
        return SimpleNamespace(
            to_dict=lambda: {"rank1": rank1, "mAP": np.float32(0.5)},
            cmc=np.array([rank1, 1.0]),
            num_valid_queries=np.int64(len(q_pids)),
        )

    def plot_cmc(result, path):
        calls["cmc"] = path
        path.write_bytes(b"png")

    def plot_ranked_list(query_images, gallery_images, ranked_indices, matches, path, top_k=10, **kwargs):
        calls["ranked"] = (
            query_images,
            gallery_images,
            path,
            dict(kwargs, ranked=ranked_indices, matches=matches),
        )

    for name, fn in {
        "compute_distance_matrix": compute_distance_matrix,
        "evaluate_rank": evaluate_rank,
        "plot_cmc": plot_cmc,
        "plot_ranked_list": plot_ranked_list,
    }.items():
        monkeypatch.setattr(hf_reid.metrics, name, fn, raising=False)
    return calls


def direction_vs_magnitude_case():
    """Raw Euclidean rank-1 is wrong (a nearby vector of another identity); after L2
    normalisation the same-direction gallery item of the right identity wins."""
    query = torch.tensor([[1.0, 0.0]])
    gallery = torch.tensor([[10.0, 1.0], [0.9, 0.9]])
    metadata = {"q_pids": [1], "g_pids": [1, 2], "q_camids": [0], "g_camids": [1, 1]}
    return query, gallery, metadata


def test_normalize_really_changes_the_ranking(fake_metrics):
    query, gallery, metadata = direction_vs_magnitude_case()
    assert evaluate_retrieval(query, gallery, metadata, normalize=True)["rank1"] == 1.0
    assert evaluate_retrieval(query, gallery, metadata, normalize=False)["rank1"] == 0.0
    assert fake_metrics["metric"] == "euclidean"


def test_results_file_plots_and_protocol_options(fake_metrics, tmp_path):
    g = torch.Generator().manual_seed(0)
    query = {
        "features": torch.randn(3, 4, generator=g),
        "pids": torch.tensor([1, 2, 3]),
        "camids": torch.tensor([0, 0, 1]),
        "clothes_ids": torch.tensor([0, 1, 0]),
        "paths": ["q1.jpg", "q2.jpg", "q3.jpg"],
    }
    gallery = {
        "features": torch.randn(5, 4, generator=g),
        "pids": torch.tensor([1, 2, 3, 1, 0]),
        "camids": torch.tensor([1, 1, 0, 2, 2]),
        "clothes_ids": torch.tensor([1, 1, 1, 0, 0]),
        "paths": [f"g{i}.jpg" for i in range(5)],
    }
    results = evaluate_retrieval(
        query,
        gallery,
        metric="cosine",
        max_rank=20,
        output_dir=tmp_path / "eval",
        rank_kwargs={"clothes_changing": True},
        image_root="/data/ltcc",
        extra={"dataset": "ltcc", "epoch": np.int64(60)},
    )
    written = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    assert written == results
    assert results["cmc"] == [results["rank1"], 1.0] and results["mAP"] == 0.5
    assert results["num_valid_queries"] == 3
    assert (results["metric"], results["normalize"], results["num_query"], results["num_gallery"]) == (
        "cosine",
        True,
        3,
        5,
    )
    assert (results["dataset"], results["epoch"]) == ("ltcc", 60)
    q_pids, g_pids, q_camids, g_camids, max_rank, kwargs = fake_metrics["rank_args"]
    assert q_pids.tolist() == [1, 2, 3] and g_pids.tolist() == [1, 2, 3, 1, 0]
    assert q_camids.tolist() == [0, 0, 1] and g_camids.tolist() == [1, 1, 0, 2, 2] and max_rank == 20
    assert kwargs["clothes_changing"] is True
    assert kwargs["q_clothes_ids"].tolist() == [0, 1, 0] and kwargs["g_clothes_ids"].tolist() == [
        1,
        1,
        1,
        0,
        0,
    ]
    assert (tmp_path / "eval" / "cmc.png").read_bytes() == b"png"
    q_images, g_images, ranked_path, ranked_kwargs = fake_metrics["ranked"]
    root = Path("/data/ltcc")
    assert q_images == [root / p for p in query["paths"]] and g_images == [root / p for p in gallery["paths"]]
    assert ranked_path == tmp_path / "eval" / "ranked_list.png"
    # Each query's list is the gallery by distance without same pid + same camera entries.
    distmat = torch.cdist(F.normalize(query["features"], dim=1), F.normalize(gallery["features"], dim=1))
    for i, row in enumerate(ranked_kwargs["ranked"]):
        junk = (gallery["pids"] == query["pids"][i]) & (gallery["camids"] == query["camids"][i])
        expected = [j for j in distmat[i].argsort(stable=True).tolist() if not junk[j]][: len(row)]
        assert row.tolist() == expected
        assert ranked_kwargs["matches"][i].tolist() == (gallery["pids"][row] == query["pids"][i]).tolist()


def test_without_output_dir_nothing_is_written_and_paths_are_optional(fake_metrics, tmp_path):
    query, gallery, metadata = direction_vs_magnitude_case()
    evaluate_retrieval(query, gallery, metadata, output_dir=tmp_path, plots=True)
    assert "ranked" not in fake_metrics  # no image paths: no ranked-list grid
    assert (tmp_path / "eval_results.json").is_file()
    fake_metrics.clear()
    evaluate_retrieval(query, gallery, metadata)
    assert "cmc" not in fake_metrics


def test_bad_inputs_are_named(fake_metrics):
    query, gallery, metadata = direction_vs_magnitude_case()
    with pytest.raises(KeyError, match="metadata needs 'q_camids'"):
        evaluate_retrieval(query, gallery, {k: v for k, v in metadata.items() if k != "q_camids"})
    with pytest.raises(ValueError, match=r"metadata 'g_pids' has shape \(3,\), expected \(2,\)"):
        evaluate_retrieval(query, gallery, {**metadata, "g_pids": [1, 2, 3]})
    with pytest.raises(ValueError, match="query features are 2-d, gallery features 3-d"):
        evaluate_retrieval(query, torch.zeros(2, 3), metadata)
    with pytest.raises(ValueError, match=r"q features must be \(N, D\)"):
        evaluate_retrieval(torch.zeros(3), gallery, metadata)
    with pytest.raises(KeyError, match="metadata needs 'q_clothes_ids'"):
        evaluate_retrieval(query, gallery, metadata, rank_kwargs={"clothes_changing": True})
