"""The Hugging Face client paths a saved hf_reid model folder serves, with hf_reid imported and in a
clean interpreter without it: ``AutoImageProcessor``, ``pipeline("image-feature-extraction")`` with
and without ``pool=True``, ``peft.AutoPeftModel``; and the set-up details around them: no local
paths in saved configs, model cards that name only the user's repository, ``hf-reid --help``
without torch, the ``evaluate`` metric from any working directory."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import evaluate
import numpy as np
import pytest
import torch
from helpers_models import (
    TINY_IMAGE_SIZE,
    random_pixels,
    run_without_hf_reid,
    save_tiny_clip,
    tiny_clip_config,
)
from huggingface_hub import HfApi, ModelCard
from peft import AutoPeftModel
from PIL import Image
from transformers import AutoImageProcessor, pipeline

from hf_reid.hub import PEFT_AUTO_MAPPING, default_repo_id, push_run_to_hub, set_adapter_auto_mapping
from hf_reid.metrics import REID_METRIC, ReidMetric, load_reid_metric
from hf_reid.models import (
    CLIPFGDIConfig,
    CLIPFGDIModel,
    CLIPReIDConfig,
    CLIPReIDModel,
    ITKMConfig,
    ITKMModel,
    ReTextConfig,
    ReTextModel,
)
from hf_reid.models.configuration_reid_base import portable_name_or_path
from hf_reid.models.lora import LoraSettings, apply_lora, save_lora_adapter
from hf_reid.training.recipe_run import RecipeRun

HEAVY_MODULES = {"torch", "transformers", "datasets"}


def crop_images(count: int = 2) -> list[Image.Image]:
    rng = np.random.RandomState(0)
    return [Image.fromarray(rng.randint(0, 255, (150, 70, 3), dtype=np.uint8)) for _ in range(count)]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny CLIP-ReID started from a CLIP folder given by its absolute path and saved with the
    README's ``model.save_pretrained(folder)`` alone; a LoRA adapter on it written by
    ``save_lora_adapter`` (with a non-zero update) and the same adapter as peft writes it; two crops; the expected embeddings."""
    root = tmp_path_factory.mktemp("hf_clients")
    clip_dir = save_tiny_clip(root / "clip").resolve()
    torch.manual_seed(0)
    model = CLIPReIDModel.from_clip_pretrained(
        str(clip_dir), num_classes=4, image_size=TINY_IMAGE_SIZE
    ).eval()
    folder = root / "model"
    model.save_pretrained(folder)

    peft_model = apply_lora(CLIPReIDModel.from_pretrained(folder), LoraSettings(rank=2))
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(1))
    peft_model.eval()
    peft_model.save_pretrained(root / "raw_adapter")  # as peft writes it
    raw_adapter = root / "raw_adapter"
    adapter = save_lora_adapter(peft_model, root / "adapter")  # sets the auto mapping

    images = crop_images()
    for i, image in enumerate(images):
        image.save(root / f"crop{i}.png")
    pixels = AutoImageProcessor.from_pretrained(folder)(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        embeddings = model.get_image_embeddings(pixels)
        adapted = peft_model(pixel_values=pixels).embeddings
    assert (adapted - embeddings).abs().max() > 1e-3  # the adapter changes the model
    return SimpleNamespace(
        root=root,
        clip_dir=clip_dir,
        folder=folder,
        adapter=adapter,
        raw_adapter=raw_adapter,
        images=images,
        pixels=pixels,
        embeddings=embeddings,
        adapted=adapted,
    )


# --------------------------------------------------------------------------- the image processor


MODEL_CLASSES = [
    (CLIPReIDConfig, CLIPReIDModel),
    (ReTextConfig, ReTextModel),
    (CLIPFGDIConfig, CLIPFGDIModel),
    (ITKMConfig, ITKMModel),
]


@pytest.mark.parametrize(("config_class", "model_class"), MODEL_CLASSES, ids=lambda c: c.__name__)
def test_every_model_saves_its_image_processor_and_returns_pooler_output(config_class, model_class, tmp_path):
    size = (96, 48)  # not the default: the processor follows the config
    torch.manual_seed(0)
    model = model_class(config_class(clip_config=tiny_clip_config(), num_classes=3, image_size=size)).eval()
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["size"] == {"height": 96, "width": 48} and saved["do_center_crop"] is False
    assert saved["image_mean"] == [0.5] * 3 and saved["image_std"] == [0.5] * 3
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert processor(images=crop_images(1), return_tensors="pt")["pixel_values"].shape == (1, 3, *size)

    with torch.no_grad():
        out = model(random_pixels(2, size))
    assert torch.equal(out.pooler_output, out.embeddings) and out["pooler_output"] is out.embeddings
    # appended after the fields already set: tuple positions are those without it
    keys = list(out.keys())
    assert keys[0] == "embeddings" and keys[-1] == "pooler_output"
    assert out.to_tuple()[0] is out.embeddings


def test_save_pretrained_with_push_to_hub_pushes_the_processor_too(tmp_path):
    config = CLIPReIDConfig(clip_config=tiny_clip_config(), num_classes=2, image_size=TINY_IMAGE_SIZE)
    model = CLIPReIDModel(config)
    # push_to_hub saves through save_pretrained into a temporary folder, then uploads it all
    with mock.patch.object(CLIPReIDModel, "push_to_hub") as push:
        model.save_pretrained(
            tmp_path / "m", push_to_hub=True, repo_id="me/m", commit_message="hi", token="t"
        )
    push.assert_called_once_with("me/m", token="t", commit_message="hi")
    assert (tmp_path / "m" / "preprocessor_config.json").is_file()
    with mock.patch.object(CLIPReIDModel, "push_to_hub") as push:
        model.save_pretrained(tmp_path / "other", is_main_process=False)
    push.assert_not_called()
    assert not (tmp_path / "other" / "preprocessor_config.json").exists()


def test_pooler_output_keeps_the_training_output_positions():
    torch.manual_seed(0)
    config = CLIPReIDConfig(clip_config=tiny_clip_config(), num_classes=2, image_size=TINY_IMAGE_SIZE)
    model = CLIPReIDModel(config)
    out = model(random_pixels(4), labels=torch.tensor([0, 0, 1, 1]))
    keys = list(out.keys())
    assert keys[:4] == ["loss", "id_loss", "triplet_loss", "embeddings"] and keys[-1] == "pooler_output"
    assert out[0] is out.loss


# --------------------------------------------------------------------------- with hf_reid


def test_pipeline_with_hf_reid_with_and_without_pool(saved):
    extractor = pipeline("image-feature-extraction", model=str(saved.folder))
    assert type(extractor.model) is CLIPReIDModel
    pooled = torch.cat([extractor(image, pool=True, return_tensors=True) for image in saved.images])
    first = torch.cat([extractor(image, return_tensors=True) for image in saved.images])
    torch.testing.assert_close(pooled, saved.embeddings, rtol=0, atol=1e-5)
    torch.testing.assert_close(first, saved.embeddings, rtol=0, atol=1e-5)  # the first field: embeddings
    assert np.asarray(extractor(saved.images[0], pool=True)).shape == (1, saved.embeddings.shape[1])


def test_auto_peft_model_with_hf_reid(saved):
    config = json.loads((saved.adapter / "adapter_config.json").read_text())
    assert config["auto_mapping"] == PEFT_AUTO_MAPPING
    loaded = AutoPeftModel.from_pretrained(str(saved.adapter)).eval()
    assert type(loaded.get_base_model()) is CLIPReIDModel
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(pixel_values=saved.pixels).embeddings, saved.adapted, rtol=0, atol=1e-6
        )
    # As peft writes it, an adapter names its base class's module, which AutoPeftModel imports only
    # when allowed: the documented way for an adapter written without set_adapter_auto_mapping.
    with pytest.raises(ValueError, match="import allowlist"):
        AutoPeftModel.from_pretrained(str(saved.raw_adapter))
    allowed = AutoPeftModel.from_pretrained(str(saved.raw_adapter), import_allowlist=["hf_reid"]).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            allowed(pixel_values=saved.pixels).embeddings, saved.adapted, rtol=0, atol=1e-6
        )


def test_set_adapter_auto_mapping_needs_an_adapter(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"adapter_config\.json"):
        set_adapter_auto_mapping(tmp_path)


# --------------------------------------------------------------------------- without hf_reid

CLEAN_CLIENTS = textwrap.dedent(
    """
    from peft import AutoPeftModel
    from PIL import Image
    from transformers import AutoImageProcessor, pipeline

    images = [Image.open(f"{out}/crop{i}.png") for i in range(2)]
    pixels = AutoImageProcessor.from_pretrained(folder)(images=images, return_tensors="pt")["pixel_values"]
    np.save(f"{out}/remote_pixels.npy", pixels.numpy())

    extractor = pipeline("image-feature-extraction", model=folder, trust_remote_code=True)
    pooled = [extractor(image, pool=True, return_tensors=True).numpy() for image in images]
    first = [extractor(image, return_tensors=True).numpy() for image in images]
    np.save(f"{out}/remote_pooled.npy", np.concatenate(pooled))
    np.save(f"{out}/remote_first.npy", np.concatenate(first))

    peft_model = AutoPeftModel.from_pretrained(f"{out}/adapter", trust_remote_code=True).eval()
    with torch.no_grad():
        np.save(f"{out}/remote_adapted.npy", peft_model(pixel_values=pixels).embeddings.numpy())
    print("PIPELINE_CLASS", type(extractor.model).__module__)
    print("PEFT_BASE_CLASS", type(peft_model.get_base_model()).__module__)
    """
)


@pytest.fixture(scope="module")
def clean(saved):
    """One clean interpreter (hf_reid blocked) going through the three client paths."""
    result = run_without_hf_reid(CLEAN_CLIENTS, saved.folder, saved.root)
    return SimpleNamespace(stdout=result.stdout, load=lambda name: np.load(saved.root / f"remote_{name}.npy"))


def test_image_processor_without_hf_reid(saved, clean):
    np.testing.assert_array_equal(clean.load("pixels"), saved.pixels.numpy())


def test_pipeline_without_hf_reid_with_and_without_pool(saved, clean):
    assert "PIPELINE_CLASS transformers_modules." in clean.stdout
    np.testing.assert_allclose(clean.load("pooled"), saved.embeddings.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(clean.load("first"), saved.embeddings.numpy(), rtol=0, atol=1e-5)


def test_auto_peft_model_without_hf_reid(saved, clean):
    assert "PEFT_BASE_CLASS transformers_modules." in clean.stdout
    np.testing.assert_allclose(clean.load("adapted"), saved.adapted.numpy(), rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- no local paths


def _strings(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value


def test_saved_config_holds_no_absolute_path(saved, tmp_path):
    text = (saved.folder / "config.json").read_text()
    assert str(saved.clip_dir) not in text and str(saved.root) not in text
    assert not [
        s for s in _strings(json.loads(text)) if s.startswith(("/", "~")) or re.match(r"[A-Za-z]:\\", s)
    ]
    reloaded = CLIPReIDModel.from_pretrained(saved.folder)
    assert reloaded.config.clip_config.name_or_path == ""
    # a Hub id is kept
    reloaded.config.clip_config.name_or_path = "openai/clip-vit-base-patch16"
    reloaded.config.save_pretrained(tmp_path)
    saved_config = json.loads((tmp_path / "config.json").read_text())
    assert saved_config["clip_config"]["_name_or_path"] == "openai/clip-vit-base-patch16"


@pytest.mark.parametrize(
    ("name", "kept"),
    [
        ("openai/clip-vit-base-patch16", True),
        ("gpt2", True),
        ("/home/me/clip", False),
        ("./clip", False),
        ("../models/clip", False),
        ("~/clip", False),
        ("C:\\models\\clip", False),
        ("", True),
    ],
)
def test_portable_name_or_path(name, kept):
    assert portable_name_or_path(name) == (name if kept else "")


def test_portable_name_or_path_drops_an_existing_folder(tmp_path, monkeypatch):
    (tmp_path / "runs" / "clip").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert portable_name_or_path("runs/clip") == ""


# --------------------------------------------------------------------------- model cards


def _recipe_run(output_dir: Path, clip: str, hub_model_id: str | None, push: bool = False) -> RecipeRun:
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text("seed: 0\n")
    run = RecipeRun(
        cfg=SimpleNamespace(model=SimpleNamespace(clip_name_or_path=clip)),
        args=SimpleNamespace(output_dir=str(output_dir), hub_model_id=hub_model_id, push_to_hub=push),
        accelerator=None,
        method="clip_reid",
    )
    run._card = (["synthpeds", "market1501"], {})
    return run


RESULTS = {"SynthPeds d0": {"mAP": 0.5, "rank-1": 0.6}}


def test_card_of_a_local_run_names_no_repository(saved, tmp_path):
    run = _recipe_run(tmp_path / "clip_reid", str(saved.clip_dir), None)
    assert run.repo_id is None
    run._write_card(RESULTS, {})
    card = ModelCard.load(tmp_path / "clip_reid" / "README.md")
    assert card.data.base_model is None  # a local CLIP folder is not named
    assert card.data.datasets is None  # layouts are not Hub datasets
    assert "Trained on: `synthpeds`, `market1501`." in card.text
    assert card.text.lstrip().startswith("# clip_reid")
    assert 'AutoModel.from_pretrained("path/to/model_folder"' in card.text
    assert "hf-reid/clip_reid" not in card.text and str(saved.root) not in card.content
    assert "pool=True" in card.text


def test_card_names_the_users_repository(tmp_path):
    run = _recipe_run(tmp_path / "run", "openai/clip-vit-base-patch16", "me/my-reid")
    run._write_card(RESULTS, {})
    card = ModelCard.load(tmp_path / "run" / "README.md")
    assert card.data.base_model == "openai/clip-vit-base-patch16"
    assert card.text.lstrip().startswith("# me/my-reid")
    assert 'AutoModel.from_pretrained("me/my-reid"' in card.text


def test_push_without_hub_model_id_goes_to_the_users_namespace(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    calls = {}

    def fake_create_repo(self, repo_id, **kwargs):
        calls["create"] = repo_id
        return SimpleNamespace(repo_id=repo_id if "/" in repo_id else f"me/{repo_id}")

    def fake_upload_folder(self, **kwargs):
        calls["upload"] = kwargs["repo_id"]
        return SimpleNamespace(commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/1")

    with (
        mock.patch.object(HfApi, "whoami", lambda self: {"name": "me"}),
        mock.patch.object(HfApi, "create_repo", fake_create_repo),
        mock.patch.object(HfApi, "upload_folder", fake_upload_folder),
    ):
        assert default_repo_id("clip_reid") == "me/clip_reid"
        push_run_to_hub(tmp_path, "clip_reid")
    assert calls == {"create": "clip_reid", "upload": "me/clip_reid"}


# --------------------------------------------------------------------------- the command line

CLI_IMPORTS = textwrap.dedent(
    """
    import sys

    sys.argv = [sys.argv[1], *sys.argv[2:]]  # as the hf-reid console script runs: argv[0] = .../hf-reid
    from hf_reid.cli import main

    try:
        main()
    except SystemExit as exit:
        print("EXIT", exit.code)
    print("HEAVY", sorted({m.split(".")[0] for m in sys.modules} & {"torch", "transformers", "datasets"}))
    """
)


@pytest.mark.parametrize("argv", [["--help"], ["synth", "--help"]], ids=["help", "synth-help"])
def test_cli_help_imports_no_torch(argv, tmp_path):
    script = str(Path(sys.executable).parent / "hf-reid")
    result = subprocess.run(
        [sys.executable, "-c", CLI_IMPORTS, script, *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "usage: hf-reid" in result.stdout and "synth" in result.stdout
    assert "EXIT 0" in result.stdout and "HEAVY []" in result.stdout, result.stdout[-500:]


def test_python_m_cli_help_imports_no_torch(tmp_path):
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "hf_reid.cli", "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0 and "usage: hf-reid" in result.stdout, result.stderr[-3000:]
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in result.stderr.splitlines()}
    assert "hf_reid" in imported and not imported & HEAVY_MODULES


def test_synth_parser_names_match_the_generator():
    from hf_reid.commands import synth
    from hf_reid.data.synthetic import LAYOUT_NAMES, PRESETS

    assert tuple(sorted(PRESETS)) == synth.PRESET_NAMES
    assert tuple(LAYOUT_NAMES) == synth.LAYOUT_NAMES


# --------------------------------------------------------------------------- the evaluate metric


def test_metric_loads_from_another_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Path(REID_METRIC).is_absolute() and (Path(REID_METRIC) / "reid_metric.py").is_file()
    rng = np.random.default_rng(0)
    query, gallery = rng.standard_normal((6, 8)), rng.standard_normal((20, 8))
    q_pids, g_pids = np.arange(6) % 3, np.arange(20) % 3
    results = []
    for metric in (load_reid_metric(), evaluate.load(REID_METRIC), ReidMetric()):
        metric.add_batch(predictions=query, references=q_pids)
        results.append(metric.compute(gallery_embeddings=gallery, gallery_pids=g_pids))
    assert results[0] == results[1] == results[2]
    streamed = load_reid_metric("with_camids")
    assert streamed.config_name == "with_camids"
