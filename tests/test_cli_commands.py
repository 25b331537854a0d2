"""The ``hf-reid`` sub-commands of issue #14: eval (the library's numbers, results and plots), extract
(resumes after a SIGKILL to a bitwise-equal file), train (a recipe through the command), convert,
card and push (the Hub patched), on a tiny SynthPeds and tiny random models."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers_models import save_tiny_clip, save_tiny_reid_model
from helpers_recipes import CLIP_REID_TINY_CONFIG, embed_split, patched_hub
from huggingface_hub import ModelCard
from PIL import Image
from torch.nn import functional as F
from training_toys import reset_accelerate_state
from transformers import AutoImageProcessor, AutoModel

from hf_reid.cli import main
from hf_reid.commands import COMMANDS
from hf_reid.commands._common import embedding_fn, resolve_scenario
from hf_reid.commands.extract import load_features
from hf_reid.data import generate_synthpeds, load_reid_dataset
from hf_reid.data.synthetic.presets import PRESETS
from hf_reid.metrics import compute_distance_matrix, evaluate_rank

PRESET = dataclasses.replace(
    PRESETS["tiny"], name="cli_test", num_domains=2, train_ids=8, test_ids=8, images_per_camera=(1, 2)
)
NEW_COMMANDS = ("train", "eval", "extract", "convert", "card", "push")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def synthpeds(tmp_path_factory) -> Path:
    """A two-domain SynthPeds (8 training and 8 test identities each), seed 0."""
    root = tmp_path_factory.mktemp("synthpeds")
    generate_synthpeds(root, preset=PRESET, seed=0, layouts=["market"], num_workers=1)
    return root


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_reid_model(tmp_path_factory.mktemp("tiny_model") / "model")


@pytest.fixture
def fresh_accelerate():
    reset_accelerate_state()
    yield
    reset_accelerate_state()


def write_crops(folder: Path, count: int, seed: int = 0) -> list[str]:
    """``count`` random-noise person crops in two nested folders; returns the sorted relative paths."""
    rng = np.random.default_rng(seed)
    names = []
    for i in range(count):
        name = f"{'cam_a' if i % 2 else 'cam_b/sub'}/{i:04d}.png"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (48, 24, 3), dtype=np.uint8)).save(folder / name)
        names.append(name)
    return sorted(names)


def cli(*argv: str) -> int:
    return main([str(a) for a in argv])


# ------------------------------------------------------------------------------------------------
# --help: examples, and no torch to build the parsers
# ------------------------------------------------------------------------------------------------
HELP_SCRIPT = textwrap.dedent(
    """
    import sys

    commands, sys.argv = sys.argv[1:], ["hf-reid"]  # as the console script runs
    from hf_reid.cli import main

    for command in commands:
        try:
            main([command, "--help"])
        except SystemExit as exit:
            assert exit.code == 0, (command, exit.code)
    print("HEAVY", sorted({m.split(".")[0] for m in sys.modules} & {"torch", "transformers", "datasets"}))
    """
)


def test_new_commands_are_listed_and_their_help_shows_examples_without_torch(tmp_path):
    assert set(NEW_COMMANDS) <= set(COMMANDS)
    result = subprocess.run(
        [sys.executable, "-c", HELP_SCRIPT, *NEW_COMMANDS],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for command in NEW_COMMANDS:
        assert f"usage: hf-reid {command}" in result.stdout
    assert result.stdout.count("examples:") == len(NEW_COMMANDS)
    assert "HEAVY []" in result.stdout, result.stdout[-300:]


# ------------------------------------------------------------------------------------------------
# eval
# ------------------------------------------------------------------------------------------------
def python_metrics(model_dir: Path, data: Path, camids: bool = False) -> tuple[float, float]:
    """mAP and rank-1 computed here with the library: embeddings through the saved processor,
    L2-normalised, Euclidean distances, ``evaluate_rank`` under the Market-1501 protocol."""
    model = AutoModel.from_pretrained(model_dir).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)
    splits = load_reid_dataset("synthpeds", data)
    feats = []
    for split in (splits["query"], splits["gallery"]):
        if camids:
            pixels = processor(images=list(split["image"]), return_tensors="pt")["pixel_values"]
            with torch.no_grad():
                feats.append(model.get_image_embeddings(pixels, torch.tensor(split["camid"])))
        else:
            feats.append(embed_split(model, processor, split))
    distmat = compute_distance_matrix(F.normalize(feats[0]), F.normalize(feats[1]), "euclidean")
    q, g = splits["query"], splits["gallery"]
    result = evaluate_rank(
        distmat, np.array(q["pid"]), np.array(g["pid"]), np.array(q["camid"]), np.array(g["camid"])
    )
    return result.mAP, float(result.cmc[0])


def test_eval_gives_the_library_numbers_and_writes_results_and_plots(
    synthpeds, tiny_model, tmp_path, fresh_accelerate, capsys
):
    out = tmp_path / "eval"
    data = synthpeds / "synthpeds_d0"
    assert (
        cli("eval", tiny_model, "--data", data, "--layout", "synthpeds", "--output", out, "--no-progress")
        == 0
    )
    printed = capsys.readouterr().out
    results = json.loads((out / "eval_results.json").read_text())
    assert list(results) == ["SynthPeds d0"]
    entry = results["SynthPeds d0"]
    expected_map, expected_r1 = python_metrics(tiny_model, data)
    assert entry["mAP"] == pytest.approx(expected_map, abs=1e-6)
    assert entry["rank-1"] == pytest.approx(expected_r1, abs=1e-6)
    assert entry["protocol"] == "standard" and entry["num_trials"] == 1
    assert f"mAP {100 * expected_map:.1f}" in printed
    folder = out / "eval" / "SynthPeds_d0"
    for name in ("cmc.png", "ranked_list.png"):
        assert (folder / name).read_bytes()[:8] == PNG_MAGIC, name
    assert json.loads((folder / "eval_results.json").read_text())["mAP"] == entry["mAP"]
    index = json.loads((out / "model_index.json").read_text())
    values = {m["type"]: m["value"] for r in index[0]["results"] for m in r["metrics"]}
    assert values["mAP"] == round(100 * entry["mAP"], 2)


def test_eval_passes_camera_ids_to_a_model_with_sie(synthpeds, tmp_path, fresh_accelerate):
    model_dir = save_tiny_reid_model(tmp_path / "sie", use_sie=True, num_cameras=6, sie_coe=3.0)
    out = tmp_path / "eval"
    data = synthpeds / "synthpeds_d0"
    args = ("--layout", "synthpeds", "--output", out, "--no-progress", "--no-plots")
    assert cli("eval", model_dir, "--data", data, *args) == 0
    entry = json.loads((out / "eval_results.json").read_text())["SynthPeds d0"]
    with_ids = python_metrics(model_dir, data, camids=True)
    without_ids = python_metrics(model_dir, data, camids=False)
    assert with_ids != without_ids  # the camera embedding changes the ranking
    assert (entry["mAP"], entry["rank-1"]) == pytest.approx(with_ids, abs=1e-6)


def test_eval_rejects_a_protocol_the_layout_does_not_have(synthpeds, tiny_model, tmp_path, capsys):
    argv = ("eval", tiny_model, "--data", synthpeds / "synthpeds_d0", "--layout", "synthpeds")
    assert cli(*argv, "--protocol", "clothes_changing", "--output", tmp_path) == 2
    error = capsys.readouterr().err
    assert "synthpeds layout has one protocol" in error and "ltcc" in error and "sysu_mm01" in error


def test_itkm_scenario_comes_from_the_option_the_run_config_or_zero(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("data:\n  train_domains: [ltcc, sysu_mm01, mlr_cuhk03]\n")
    itkm = SimpleNamespace(config=SimpleNamespace(model_type="itkm", use_sie=True, num_cameras=3))
    assert resolve_scenario(itkm, str(run), None, Path("/data/synthpeds/sysu_mm01")) == 1
    assert resolve_scenario(itkm, str(run), "mlr_cuhk03", None) == 2
    assert resolve_scenario(itkm, str(run), "0", Path("/data/x/mlr_cuhk03")) == 0
    assert resolve_scenario(itkm, str(run), None, Path("/data/market")) == 0
    with pytest.raises(ValueError, match="3 scenarios"):
        resolve_scenario(itkm, str(run), "5", None)
    clip_reid = SimpleNamespace(config=SimpleNamespace(model_type="clip_reid", use_sie=True, num_cameras=6))
    assert resolve_scenario(clip_reid, str(run), "1", None) is None

    seen = []

    class Recorder:
        config = SimpleNamespace(use_sie=True)
        device = torch.device("cpu")

        def get_image_embeddings(self, pixels, camids=None):
            seen.append(None if camids is None else camids.tolist())
            return pixels.flatten(1)

    batch = {"pixel_values": torch.zeros(3, 1, 2, 2), "camids": torch.tensor([4, 5, 6])}
    embedding_fn(Recorder(), 2)(batch)  # ITKM: the scenario for every image
    embedding_fn(Recorder(), None)(batch)  # CLIP-ReID with SIE: the data's cameras
    embedding_fn(Recorder(), None, camera_ids=False)(batch)  # no camera known
    assert seen == [[2, 2, 2], [4, 5, 6], None]


# ------------------------------------------------------------------------------------------------
# extract
# ------------------------------------------------------------------------------------------------
def test_extract_resumes_after_sigkill_to_a_bitwise_equal_file(tiny_model, tmp_path):
    crops = tmp_path / "crops"
    names = write_crops(crops, 300)
    out, reference = tmp_path / "feats.safetensors", tmp_path / "reference.safetensors"
    parts = tmp_path / "feats.parts"
    common = ["extract", str(tiny_model), "--images", str(crops), "--batch-size", "2", "--chunk-batches", "1"]
    command = [
        sys.executable,
        "-m",
        "hf_reid.cli",
        *common,
        "--out",
        str(out),
        "--no-progress",
        "--keep-parts",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not (parts / "chunk-00000.safetensors").exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no chunk within 180 s"
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == -signal.SIGKILL
    done = sorted(parts.glob("chunk-*.safetensors"))
    assert not out.exists() and 0 < len(done) < 150, len(done)
    mtimes = {p.name: p.stat().st_mtime_ns for p in done}

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"Resuming: {len(done)} of 150 chunks already in {parts}" in rerun.stdout
    assert {p.name: p.stat().st_mtime_ns for p in done} == mtimes  # the done chunks were not redone
    assert len(list(parts.glob("chunk-*.safetensors"))) == 150

    assert cli(*common, "--out", reference, "--no-progress") == 0  # uninterrupted
    assert not (tmp_path / "reference.parts").exists()
    assert out.read_bytes() == reference.read_bytes()
    features = load_features(out)
    assert features["paths"] == names and features["embeddings"].shape == (300, features["dim"])
    assert features["model"] == str(tiny_model) and features["skipped"] == []
    model = AutoModel.from_pretrained(tiny_model).eval()
    processor = AutoImageProcessor.from_pretrained(tiny_model)
    pixels = processor(images=[Image.open(crops / n) for n in names[:4]], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = model.get_image_embeddings(pixels)
    torch.testing.assert_close(features["embeddings"][:4], expected, atol=1e-5, rtol=1e-4)


def test_extract_names_a_bad_image_or_skips_it_with_a_count(tiny_model, tmp_path, capsys):
    crops = tmp_path / "crops"
    names = write_crops(crops, 5)
    (crops / "cam_a" / "0002_broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "feats.safetensors"
    argv = ("extract", tiny_model, "--images", crops, "--out", out, "--batch-size", "2", "--no-progress")
    assert cli(*argv) == 2
    error = capsys.readouterr().err
    assert str(crops / "cam_a" / "0002_broken.jpg") in error and "--on-bad-image skip" in error
    assert not out.exists()
    assert cli(*argv, "--on-bad-image", "skip") == 0
    assert "skipped 1 unreadable image(s): cam_a/0002_broken.jpg" in capsys.readouterr().out
    features = load_features(out)
    assert features["paths"] == names and len(features["embeddings"]) == 5
    assert [s["path"] for s in features["skipped"]] == ["cam_a/0002_broken.jpg"]


def test_extract_of_a_dataset_split_keeps_its_ids(synthpeds, tiny_model, tmp_path):
    data = synthpeds / "synthpeds_d0"
    out = tmp_path / "query.safetensors"
    argv = ("extract", tiny_model, "--images", data, "--layout", "synthpeds", "--split", "query")
    assert cli(*argv, "--out", out, "--no-progress") == 0
    query = load_reid_dataset("synthpeds", data)["query"]
    features = load_features(out)
    assert features["paths"] == query["path"] and features["splits"] == ["query"] * len(query)
    assert features["pids"].tolist() == query["pid"] and features["camids"].tolist() == query["camid"]
    assert cli(*argv, "--out", out) == 2  # an existing file is not replaced without --overwrite


# ------------------------------------------------------------------------------------------------
# train, card, push
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(synthpeds, tmp_path_factory) -> Path:
    """``hf-reid train clip_reid`` on the tiny SynthPeds, one epoch per stage."""
    root = tmp_path_factory.mktemp("train")
    save_tiny_clip(root / "clip")
    config = root / "tiny.yaml"
    config.write_text(CLIP_REID_TINY_CONFIG.format(clip=root / "clip", data=synthpeds))
    out = root / "run"
    reset_accelerate_state()
    try:
        status = cli(
            "train", "clip_reid", "--config", config, "--output_dir", out,
            "--stage1.epochs", "1", "--stage2.epochs", "1",
        )  # fmt: skip
    finally:
        reset_accelerate_state()
    assert status == 0
    return out


def test_train_runs_the_recipe_and_writes_a_model_folder(trained):
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "config.yaml", "README.md"):
        assert (trained / name).is_file(), name
    results = json.loads((trained / "eval_results.json").read_text())
    assert 0.0 < results["SynthPeds d0"]["mAP"] <= 1.0
    assert AutoModel.from_pretrained(trained).config.model_type == "clip_reid"


def test_train_unknown_method_lists_the_methods(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli("train", "clip_reidd")
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    for method in ("clip_reid", "retext", "clip_fgdi", "itkm", "pretrain_clip"):
        assert method in error


def test_train_method_help_is_the_recipes_own(capsys):
    assert cli("train", "itkm", "--help") == 0
    printed = capsys.readouterr().out
    assert printed.startswith("usage: hf-reid train itkm") and "--section.field VALUE" in printed


def test_card_rewrites_readme_with_the_results_as_model_index(trained):
    (trained / "README.md").unlink()
    assert cli("card", trained) == 0
    card = ModelCard.load(trained / "README.md")
    results = json.loads((trained / "eval_results.json").read_text())["SynthPeds d0"]
    values = {
        r.metric_type: r.metric_value for r in card.data.eval_results if r.dataset_name == "SynthPeds d0"
    }
    assert values["mAP"] == round(100 * results["mAP"], 2) and values["Rank-1"] == round(
        100 * results["rank-1"], 2
    )
    assert card.data.base_model is None  # a local CLIP is not named
    assert "clip_reid" in card.data.tags and "Stage 1 learned the identity prompts" in card.text
    assert "stage2:" in card.text  # the training config


def test_eval_update_card_adds_the_results_to_the_model_folder(
    trained, synthpeds, tmp_path, fresh_accelerate
):
    data = synthpeds / "synthpeds_d1"
    argv = ("eval", trained, "--data", data, "--layout", "synthpeds", "--output", tmp_path, "--no-plots")
    assert cli(*argv, "--no-progress", "--update-card") == 0
    results = json.loads((trained / "eval_results.json").read_text())
    assert list(results) == ["SynthPeds d0", "SynthPeds d1"]
    card = ModelCard.load(trained / "README.md")
    assert {r.dataset_name for r in card.data.eval_results} == {"SynthPeds d0", "SynthPeds d1"}


def test_push_calls_the_hub_with_the_repo_id(trained, capsys):
    with patched_hub() as calls:
        assert cli("push", trained, "--repo-id", "org/clip-reid-cli") == 0
    assert calls["create_repo"][0] == "org/clip-reid-cli"
    assert calls["upload_folder"]["repo_id"] == "org/clip-reid-cli"
    assert calls["upload_folder"]["folder_path"] == str(trained)
    assert "checkpoints/*" in calls["upload_folder"]["ignore_patterns"]
    assert 'from_pretrained("org/clip-reid-cli"' in (trained / "README.md").read_text()  # the card names it
    assert "https://huggingface.co/org/clip-reid-cli/commit/1" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------
# convert (and push --dataset)
# ------------------------------------------------------------------------------------------------
def test_convert_unknown_name_lists_the_converters(capsys):
    assert cli("convert", "market1502", "--src", "/nowhere", "--out", "/nowhere") == 2
    error = capsys.readouterr().err
    assert "unknown dataset converter 'market1502'" in error
    for name in ("market1501", "ltcc", "sysu_mm01", "synthpeds", "viper"):
        assert name in error


def test_convert_writes_a_parquet_dataset_that_push_uploads_as_a_dataset(synthpeds, tmp_path, capsys):
    out = tmp_path / "d0_parquet"
    assert (
        cli("convert", "synthpeds", "--src", synthpeds / "synthpeds_d0", "--out", out, "--format", "parquet")
        == 0
    )
    assert sorted(p.name.split("-")[0] for p in (out / "data").glob("*.parquet")) == [
        "gallery",
        "query",
        "train",
    ]
    assert (out / "README.md").is_file()
    with patched_hub() as calls:
        assert cli("push", out, "--repo-id", "org/synthpeds-d0", "--dataset") == 0
    assert calls["create_repo"] == (
        "org/synthpeds-d0",
        {"repo_type": "dataset", "private": True, "exist_ok": True},
    )
    assert calls["upload_folder"]["repo_type"] == "dataset" and calls["upload_folder"]["folder_path"] == str(
        out
    )
