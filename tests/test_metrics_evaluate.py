"""The evaluate metric: ReidMetric directly and through evaluate.load(<folder>) offline, with the
numbers of evaluate_rank."""

from __future__ import annotations

import os
from pathlib import Path

import evaluate
import numpy as np
import pytest

import hf_reid.metrics
from hf_reid.metrics import ReidMetric, compute_distance_matrix, evaluate_rank, re_ranking_features

METRIC_FOLDER = Path(hf_reid.metrics.__file__).parent / "reid_metric"


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((12, 16))
    q_pids, g_pids = rng.integers(0, 12, 30), rng.integers(0, 12, 90)
    return {
        "query": (centres[q_pids] + rng.standard_normal((30, 16))).astype(np.float32),
        "gallery": (centres[g_pids] + rng.standard_normal((90, 16))).astype(np.float32),
        "q_pids": q_pids,
        "g_pids": g_pids,
        "q_cams": rng.integers(0, 3, 30),
        "g_cams": rng.integers(0, 3, 90),
    }


def expected(data, distmat, cameras=True):
    cams = (data["q_cams"], data["g_cams"]) if cameras else (None, None)
    result = evaluate_rank(distmat, data["q_pids"], data["g_pids"], *cams, cross_camera=cameras)
    return {**result.to_dict(), "num_valid_queries": result.num_valid_queries}


def add_in_batches(metric, data, with_camids=False):
    for start in range(0, 30, 8):
        batch = {
            "predictions": data["query"][start : start + 8],
            "references": data["q_pids"][start : start + 8],
        }
        if with_camids:
            batch["query_camids"] = data["q_cams"][start : start + 8]
        metric.add_batch(**batch)


def gallery_kwargs(data, cameras=True):
    kwargs = {"gallery_embeddings": data["gallery"], "gallery_pids": data["g_pids"]}
    if cameras:
        kwargs.update(query_camids=data["q_cams"], gallery_camids=data["g_cams"])
    return kwargs


def test_streamed_queries_give_evaluate_rank_numbers(data):
    metric = ReidMetric()
    add_in_batches(metric, data)
    result = metric.compute(**gallery_kwargs(data))
    want = expected(data, compute_distance_matrix(data["query"], data["gallery"], "cosine"))
    assert {key: result[key] for key in want} == pytest.approx(want, abs=1e-12)
    assert result["num_invalid_queries"] == 30 - want["num_valid_queries"]


def test_evaluate_load_offline_gives_identical_numbers(data):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    loaded = evaluate.load(str(METRIC_FOLDER))
    add_in_batches(loaded, data)
    direct = ReidMetric()
    add_in_batches(direct, data)
    kwargs = {**gallery_kwargs(data), "metric": "euclidean", "return_cmc": True}
    from_folder, from_class = loaded.compute(**kwargs), direct.compute(**kwargs)
    assert from_folder == from_class
    want = expected(data, compute_distance_matrix(data["query"], data["gallery"], "euclidean"))
    assert from_folder["mAP"] == pytest.approx(want["mAP"], abs=1e-12)
    assert len(from_folder["cmc"]) == 50


def test_streamed_cameras_configuration_and_no_cameras(data):
    streamed = evaluate.load(str(METRIC_FOLDER), "with_camids")
    add_in_batches(streamed, data, with_camids=True)
    result = streamed.compute(
        gallery_embeddings=data["gallery"], gallery_pids=data["g_pids"], gallery_camids=data["g_cams"]
    )
    want = expected(data, compute_distance_matrix(data["query"], data["gallery"], "cosine"))
    assert result["mAP"] == pytest.approx(want["mAP"], abs=1e-12)

    no_cameras = ReidMetric()
    add_in_batches(no_cameras, data)
    result = no_cameras.compute(**gallery_kwargs(data, cameras=False))
    want = expected(data, compute_distance_matrix(data["query"], data["gallery"], "cosine"), cameras=False)
    assert result["mAP"] == pytest.approx(want["mAP"], abs=1e-12)


def test_re_ranking_option(data):
    metric = ReidMetric()
    result = metric.compute(
        predictions=data["query"],
        references=data["q_pids"],
        re_rank=True,
        k1=10,
        k2=3,
        **gallery_kwargs(data),
    )
    want = expected(data, re_ranking_features(data["query"], data["gallery"], 10, 3, 0.3))
    assert result["mAP"] == pytest.approx(want["mAP"], abs=1e-12)


def test_bad_input(data):
    with pytest.raises(ValueError, match="gallery_embeddings"):
        ReidMetric().compute(predictions=data["query"], references=data["q_pids"])
    with pytest.raises(ValueError, match="both `query_camids` and `gallery_camids`"):
        ReidMetric().compute(
            predictions=data["query"],
            references=data["q_pids"],
            gallery_embeddings=data["gallery"],
            gallery_pids=data["g_pids"],
            gallery_camids=data["g_cams"],
        )
    with pytest.raises(ValueError, match="features per row"):
        ReidMetric().compute(
            predictions=data["query"],
            references=data["q_pids"],
            **{**gallery_kwargs(data), "gallery_embeddings": data["gallery"][:, :3]},
        )
    with pytest.raises(ValueError, match="Unknown ReidMetric configuration"):
        ReidMetric(config_name="video")
