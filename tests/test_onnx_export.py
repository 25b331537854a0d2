"""ONNX export of the Re-ID embedding (``hf_reid.onnx_export``): parity with PyTorch under
onnxruntime, the camera (SIE) input, the dynamic batch axis, the metadata, and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers_models import (
    TINY_IMAGE_SIZE,
    make_tiny_reid_model,
    random_pixels,
    save_tiny_clip,
    save_tiny_reid_model,
    tiny_clip_config,
)

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from hf_reid.models import (
    CLIPFGDIConfig,
    CLIPFGDIModel,
    CLIPReIDModel,
    ITKMConfig,
    ITKMModel,
    ReTextConfig,
    ReTextModel,
    build_reid_image_processor,
)
from hf_reid.onnx_export import (
    PARITY_TOLERANCE,
    check_onnx_parity,
    export_command,
    export_onnx,
    load_onnx_metadata,
    make_onnx_session,
    run_onnx,
)
from hf_reid.synthclip import synthclip_path


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _with_random_sie(model):
    """Non-zero camera vectors, so that the camera input visibly changes the embedding."""
    with torch.no_grad():
        model.backbone.camera_embedding.weight.normal_(0, 0.5)
    return model


@pytest.fixture(scope="module")
def synthclip_export(tmp_path_factory):
    """A CLIP-ReID model on the shipped SynthCLIP (128 wide, 4 layers, 128x64 input), exported."""
    torch.manual_seed(0)
    model = CLIPReIDModel.from_clip_pretrained(synthclip_path(), num_classes=8, image_size=(128, 64)).eval()
    path = tmp_path_factory.mktemp("onnx") / "clip_reid.onnx"
    meta = export_onnx(model, path, image_processor=build_reid_image_processor((128, 64)))
    return model, path, meta


@pytest.fixture(scope="module")
def sie_export(tmp_path_factory):
    """A tiny CLIP-ReID with SIE over 3 cameras, exported (with the camera input)."""
    model = _with_random_sie(make_tiny_reid_model(use_sie=True, num_cameras=3))
    path = tmp_path_factory.mktemp("onnx") / "sie.onnx"
    return model, path, export_onnx(model, path)


def test_synthclip_clip_reid_parity_and_dynamic_batch(synthclip_export):
    """Traced at batch 2; onnxruntime at batch 5 and 1 gives PyTorch's embeddings within 1e-4."""
    model, path, _ = synthclip_export
    session = make_onnx_session(path)
    assert [i.name for i in session.get_inputs()] == ["pixel_values"]
    assert session.get_inputs()[0].shape[0] == "batch"
    for batch in (5, 1):
        pixels = random_pixels(batch, (128, 64), seed=batch)
        assert check_onnx_parity(model, path, pixels, session=session) <= PARITY_TOLERANCE
    out = run_onnx(session, random_pixels(5, (128, 64)))
    assert out.shape == (5, 256) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_metadata_carries_the_preprocessing(synthclip_export):
    _, path, meta = synthclip_export
    read = load_onnx_metadata(path)
    assert read == meta
    assert read["model_type"] == "clip_reid"
    assert read["image_size"] == [128, 64]
    assert read["image_mean"] == [0.5, 0.5, 0.5] and read["image_std"] == [0.5, 0.5, 0.5]
    assert read["resample"] == "bicubic" and read["rescale_factor"] == pytest.approx(1 / 255)
    assert read["input_norm"] == "mean_std"
    assert read["embedding_dim"] == 256 and read["embedding_l2_normalized"] is True
    assert read["inputs"] == ["pixel_values"] and read["camids_input"] is False
    assert read["opset"] == 17


def test_sie_model_exports_the_camera_input(sie_export):
    model, path, meta = sie_export
    assert meta["inputs"] == ["pixel_values", "camids"] and meta["num_cameras"] == 3
    assert meta["camids_meaning"] == "camera"
    session = make_onnx_session(path)
    pixels = random_pixels(5, seed=1)
    camids = torch.tensor([0, 1, 2, 1, 0])
    assert check_onnx_parity(model, path, pixels, camids, session=session) <= PARITY_TOLERANCE
    # The camera term is really in the graph: other cameras, other embeddings.
    other = run_onnx(session, pixels, (camids + 1) % 3)
    assert np.abs(other - run_onnx(session, pixels, camids)).max() > 1e-3
    with pytest.raises(ValueError, match="takes camids"):
        run_onnx(session, pixels)
    with pytest.raises(Exception, match=r"out of bounds|out of range|indices"):
        run_onnx(session, pixels, torch.tensor([0, 1, 3, 1, 0]))


def test_sie_model_can_be_exported_without_cameras(tmp_path):
    model = _with_random_sie(make_tiny_reid_model(use_sie=True, num_cameras=3))
    meta = export_onnx(model, tmp_path / "nocam.onnx", with_camids=False)
    assert meta["inputs"] == ["pixel_values"] and meta["camids_input"] is False
    assert check_onnx_parity(model, tmp_path / "nocam.onnx", random_pixels(3)) <= PARITY_TOLERANCE
    with pytest.raises(ValueError, match="has no SIE"):
        export_onnx(make_tiny_reid_model(), tmp_path / "x.onnx", with_camids=True)


def test_every_method_exports(tmp_path):
    """ReText, CLIP-FGDI (instance-normalised input, raw features) and ITKM (scenario input)."""
    kwargs = dict(clip_config=tiny_clip_config(), num_classes=4, image_size=TINY_IMAGE_SIZE)
    torch.manual_seed(0)
    models = {
        "retext": ReTextModel(ReTextConfig(reconstruction_head={"num_layers": 2}, **kwargs)),
        "clip_fgdi": CLIPFGDIModel(CLIPFGDIConfig(num_domains=2, **kwargs)),
        "itkm": _with_random_sie(ITKMModel(ITKMConfig(num_cameras=2, **kwargs))),
    }
    pixels = random_pixels(3, seed=2)
    for name, model in models.items():
        meta = export_onnx(model.eval(), tmp_path / f"{name}.onnx")
        assert meta["model_type"] == name
        camids = torch.tensor([0, 1, 1]) if meta["camids_input"] else None
        assert check_onnx_parity(model, tmp_path / f"{name}.onnx", pixels, camids) <= PARITY_TOLERANCE
    assert load_onnx_metadata(tmp_path / "clip_fgdi.onnx")["input_norm"] == "instance"
    assert load_onnx_metadata(tmp_path / "clip_fgdi.onnx")["embedding_l2_normalized"] is False
    itkm = load_onnx_metadata(tmp_path / "itkm.onnx")
    assert itkm["camids_input"] is True and itkm["camids_meaning"] == "scenario"


def test_hf_reid_export_cli_on_a_model_folder(tmp_path, capsys):
    from hf_reid.cli import main

    folder = save_tiny_reid_model(tmp_path / "model", use_sie=True, num_cameras=2)
    assert main(["export", str(folder), "--onnx", str(tmp_path / "out" / "model.onnx")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["max_abs_diff"] <= PARITY_TOLERANCE
    assert summary["inputs"] == ["pixel_values", "camids"]
    assert summary["preprocessing_from"] == "preprocessor_config.json"
    assert load_onnx_metadata(tmp_path / "out" / "model.onnx")["num_cameras"] == 2
    assert main(["export", str(tmp_path / "missing"), "--onnx", str(tmp_path / "a.onnx")]) == 2
    assert "is not a folder" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_clear_errors(tmp_path):
    clip_folder = save_tiny_clip(tmp_path / "clip", with_tokenizer=False)
    with pytest.raises(ValueError, match="holds a 'clip' model, not an hf_reid Re-ID model"):
        export_command(str(clip_folder), str(tmp_path / "a.onnx"), 17, False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no config\.json"):
        export_command(str(tmp_path / "empty"), str(tmp_path / "a.onnx"), 17, False)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        export_command(str(tmp_path / "missing"), str(tmp_path / "a.onnx"), 17, False)
    with pytest.raises(TypeError, match="hf_reid Re-ID model"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "a.onnx")
    with pytest.raises(ValueError, match="makes 256x128 images but the model takes 128x64"):
        export_onnx(make_tiny_reid_model(), tmp_path / "a.onnx", image_processor=build_reid_image_processor())
    with pytest.raises(ValueError, match="float32"):
        export_onnx(make_tiny_reid_model().half(), tmp_path / "a.onnx")
    foreign = tmp_path / "foreign.onnx"
    torch.onnx.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),), str(foreign), dynamo=False)
    with pytest.raises(ValueError, match="no hf_reid metadata"):
        load_onnx_metadata(foreign)
