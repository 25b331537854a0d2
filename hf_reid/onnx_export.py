"""ONNX export of an hf_reid model's image tower and head: the Re-ID embedding used for retrieval.

The exported graph computes exactly :meth:`~hf_reid.models.ReIDPreTrainedModel.get_image_embeddings`
(``cat[x12, xproj]`` before or after the BNNecks, L2-normalised as the config says, CLIP-FGDI's
instance normalisation of the input included) for every hf_reid model (CLIP-ReID, ReText,
CLIP-FGDI, ITKM):

* input ``pixel_values``: float32 (batch, 3, H, W), RGB, preprocessed as the model's image processor
  does (resize to H x W, rescale to [0, 1], ``(x - mean) / std``);
* input ``camids`` (only for models with SIE — CLIP-ReID with ``use_sie``, ITKM, whose camera
  embedding is a *scenario* embedding): int64 (batch,), 0-based;
* output ``embeddings``: float32 (batch, width + projection_dim).

The batch axis is dynamic. The file's ``metadata_props`` carry what a consumer needs to prepare the
input and use the output (image size, mean, std, resampling, input normalisation, embedding size,
model type, whether the embedding is L2-normalised, the camera input); :func:`load_onnx_metadata`
reads them back as Python values.

The TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``) is used: the
``torch.export`` one cannot trace the SIE models (the camera-id range check in
``CameraEmbedding`` is data-dependent) and needs ``onnxscript``. ``onnx`` and ``onnxruntime`` are
imported only when used.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .models import MODELS, ReIDConfig, ReIDPreTrainedModel
from .models.image_processing_reid import REID_IMAGE_MEAN, REID_IMAGE_STD

DEFAULT_OPSET = 17
"""ONNX opset of the export (17 has LayerNormalization as one op; onnxruntime >= 1.14 runs it)."""
PARITY_TOLERANCE = 1e-4
"""Largest accepted absolute difference between the onnxruntime and PyTorch embeddings."""
PIXELS_INPUT = "pixel_values"
CAMIDS_INPUT = "camids"
EMBEDDINGS_OUTPUT = "embeddings"
BATCH_AXIS = "batch"
EXPORT_BATCH_SIZE = 2
"""Batch size of the example input traced at export (any batch size runs afterwards)."""

_RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
"""PIL's resampling codes, as ``preprocessor_config.json`` stores them."""

_INSTALL_HINT = "pip install onnx onnxruntime"


def _import_onnx():
    try:
        import onnx
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(f"ONNX export needs the onnx package: {_INSTALL_HINT}") from error
    return onnx


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(f"running an ONNX export needs onnxruntime: {_INSTALL_HINT}") from error
    return onnxruntime


# ---------------------------------------------------------------------------- what is exported


def model_uses_camids(model: ReIDPreTrainedModel) -> bool:
    """Whether ``model``'s embedding depends on camera (scenario) ids: it has an SIE table."""
    backbone = getattr(model, "backbone", None)
    return getattr(backbone, "camera_embedding", None) is not None


def _num_cameras(model: ReIDPreTrainedModel) -> int:
    return model.backbone.camera_embedding.num_cameras if model_uses_camids(model) else 0


class _EmbeddingGraph(nn.Module):
    """The exported computation: ``model.get_image_embeddings`` with or without camera ids."""

    def __init__(self, model: ReIDPreTrainedModel):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor, camids: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.get_image_embeddings(pixel_values, camids)


def _check_model(model: Any) -> ReIDPreTrainedModel:
    if not isinstance(model, ReIDPreTrainedModel):
        raise TypeError(
            f"export_onnx takes an hf_reid Re-ID model (a ReIDPreTrainedModel: {_known_types()}), "
            f"got {type(model).__name__}."
        )
    dtypes = {p.dtype for p in model.parameters()}
    if dtypes != {torch.float32}:
        raise ValueError(
            f"the model's weights are {sorted(str(d) for d in dtypes)}; ONNX export needs float32 "
            "(call model.float() first, or load it with dtype=torch.float32)."
        )
    return model


def _known_types() -> str:
    return ", ".join(config_class.model_type for config_class, _ in MODELS)


# ---------------------------------------------------------------------------- metadata


def _processor_dict(image_processor: Any) -> dict[str, Any]:
    if image_processor is None:
        return {}
    if isinstance(image_processor, Mapping):
        return dict(image_processor)
    if hasattr(image_processor, "to_dict"):
        return dict(image_processor.to_dict())
    raise TypeError(
        "image_processor must be an image processor, its dict (preprocessor_config.json) or None, "
        f"got {type(image_processor).__name__}."
    )


def _size_pair(size: Any) -> tuple[int, int] | None:
    if isinstance(size, Mapping) and "height" in size and "width" in size:
        return int(size["height"]), int(size["width"])
    return None


def preprocessing_metadata(model: ReIDPreTrainedModel, image_processor: Any = None) -> dict[str, Any]:
    """What an image must go through before the exported graph: from ``image_processor`` (an image
    processor or its ``preprocessor_config.json`` dict), else hf_reid's default Re-ID processor for
    the model's input size. Raises ``ValueError`` when the processor makes images of another size
    than the model takes."""
    config = model.config
    image_size = tuple(int(v) for v in config.image_size)
    processor = _processor_dict(image_processor)
    size = _size_pair(processor.get("crop_size")) if processor.get("do_center_crop") else None
    size = size or _size_pair(processor.get("size"))
    if size is not None and processor.get("do_resize", True) and size != image_size:
        raise ValueError(
            f"the image processor makes {size[0]}x{size[1]} images but the model takes "
            f"{image_size[0]}x{image_size[1]} (config.image_size); fix preprocessor_config.json."
        )
    resample = processor.get("resample", 3)
    resample = _RESAMPLE_NAMES.get(resample, str(resample)) if isinstance(resample, int) else str(resample)
    do_rescale, do_normalize = processor.get("do_rescale", True), processor.get("do_normalize", True)
    mean = processor.get("image_mean", REID_IMAGE_MEAN) if do_normalize else (0.0, 0.0, 0.0)
    std = processor.get("image_std", REID_IMAGE_STD) if do_normalize else (1.0, 1.0, 1.0)
    return {
        "image_size": list(image_size),
        "input_layout": "NCHW",
        "channel_order": "RGB",
        "input_dtype": "float32",
        "resize": "direct" if processor.get("do_resize", True) else "none",
        "resample": resample,
        "rescale_factor": float(processor.get("rescale_factor", 1 / 255)) if do_rescale else 1.0,
        "image_mean": [float(v) for v in mean],
        "image_std": [float(v) for v in std],
        "input_norm": str(getattr(config, "input_norm", "mean_std")),
    }


def export_metadata(
    model: ReIDPreTrainedModel,
    image_processor: Any = None,
    with_camids: bool = False,
    opset: int = DEFAULT_OPSET,
) -> dict[str, Any]:
    """The ``metadata_props`` of an export of ``model``, as Python values (see :func:`export_onnx`)."""
    from . import __version__

    config = model.config
    backbone = model.backbone
    width, projection = backbone.vision_width, backbone.projection_dim
    meta: dict[str, Any] = {
        "hf_reid_version": __version__,
        "model_type": config.model_type,
        "model_class": type(model).__name__,
        "source_model": str(getattr(config, "_name_or_path", "") or ""),
        "embedding_dim": int(width + projection),
        "embedding_parts": [int(width), int(projection)],
        "embedding_l2_normalized": bool(config.feature_norm),
        "embedding_neck_feat": str(config.neck_feat),
        "inputs": [PIXELS_INPUT, CAMIDS_INPUT] if with_camids else [PIXELS_INPUT],
        "output": EMBEDDINGS_OUTPUT,
        "camids_input": bool(with_camids),
        "num_cameras": _num_cameras(model) if with_camids else 0,
        "camids_meaning": ("scenario" if config.model_type == "itkm" else "camera") if with_camids else "",
        "opset": int(opset),
    }
    meta.update(preprocessing_metadata(model, image_processor))
    return meta


def _encode(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _decode(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def load_onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The hf_reid metadata of an exported file as Python values (lists, numbers, bools, strings).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for an ONNX file that hf_reid
    did not export."""
    onnx = _import_onnx()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX file at {path}.")
    proto = onnx.load(str(path), load_external_data=False)
    meta = {prop.key: _decode(prop.value) for prop in proto.metadata_props}
    if "hf_reid_version" not in meta:
        raise ValueError(f"{path} carries no hf_reid metadata: it was not exported by hf_reid.export_onnx.")
    return meta


# ---------------------------------------------------------------------------- export


def export_onnx(
    model: ReIDPreTrainedModel,
    path: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    image_processor: Any = None,
    with_camids: bool | None = None,
) -> dict[str, Any]:
    """Export ``model``'s retrieval embedding (``get_image_embeddings``) to the ONNX file ``path``.

    Args:
        model: An hf_reid model in float32 (any device; it is run in eval mode and left as it was).
        path: The ``.onnx`` file to write (its folder is created).
        opset: ONNX opset version.
        image_processor: The model's image processor (or its ``preprocessor_config.json`` dict), whose
            size, mean, std and resampling go into the metadata; ``None`` records hf_reid's default
            Re-ID preprocessing (bicubic resize to ``config.image_size``, mean = std = 0.5).
        with_camids: Whether the graph takes ``camids`` (int64, (batch,)). ``None``: when the model
            has SIE. ``False`` on an SIE model exports the embedding without the camera term (as
            ``get_image_embeddings(pixel_values)`` computes it).

    Returns:
        The metadata written to the file's ``metadata_props`` (Python values).

    The batch axis of the inputs and the output is dynamic. Camera ids outside
    ``[0, num_cameras)`` make onnxruntime fail on the ``Gather`` (PyTorch raises a ``ValueError``).
    """
    onnx = _import_onnx()
    model = _check_model(model)
    uses_camids = model_uses_camids(model)
    if with_camids is None:
        with_camids = uses_camids
    elif with_camids and not uses_camids:
        raise ValueError(
            f"with_camids=True but this {_model_name(model)} has no SIE (camera) embedding: its embedding "
            "does not depend on camera ids."
        )
    meta = export_metadata(model, image_processor, with_camids, opset)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    device = next(model.parameters()).device
    height, width = model.config.image_size
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(EXPORT_BATCH_SIZE, 3, height, width, generator=generator).to(device)
    args: tuple[torch.Tensor, ...] = (pixels,)
    input_names = [PIXELS_INPUT]
    dynamic_axes = {PIXELS_INPUT: {0: BATCH_AXIS}, EMBEDDINGS_OUTPUT: {0: BATCH_AXIS}}
    if with_camids:
        args += (torch.arange(EXPORT_BATCH_SIZE, dtype=torch.long, device=device) % _num_cameras(model),)
        input_names.append(CAMIDS_INPUT)
        dynamic_axes[CAMIDS_INPUT] = {0: BATCH_AXIS}

    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The validation branches of the forward (shape and camera-id checks) are traced as
            # constants, which is what is wanted; the legacy-exporter notice is expected.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            # CLIP-FGDI's instance normalisation uses each image's own statistics, in eval mode too.
            warnings.filterwarnings("ignore", message=".*operator 'instance_norm' is set to train=True")
            torch.onnx.export(
                _EmbeddingGraph(model),
                args,
                str(path),
                input_names=input_names,
                output_names=[EMBEDDINGS_OUTPUT],
                dynamic_axes=dynamic_axes,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
    finally:
        model.train(was_training)

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, _encode(value)
    proto.doc_string = (
        f"hf_reid {meta['model_type']} Re-ID embeddings: {' + '.join(meta['inputs'])} -> "
        f"{EMBEDDINGS_OUTPUT} ({meta['embedding_dim']}-d, "
        f"{'L2-normalised' if meta['embedding_l2_normalized'] else 'not normalised'})."
    )
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path))
    return meta


def _model_name(model: ReIDPreTrainedModel) -> str:
    return type(model.config).__name__.removesuffix("Config") + " model"


# ---------------------------------------------------------------------------- running and parity


def make_onnx_session(
    path: str | os.PathLike,
    *,
    intra_op_num_threads: int | None = None,
    providers: Sequence[str] | None = None,
):
    """An ``onnxruntime.InferenceSession`` on ``path`` (CPU unless ``providers`` says otherwise)."""
    ort = _import_onnxruntime()
    options = ort.SessionOptions()
    if intra_op_num_threads is not None:
        options.intra_op_num_threads = int(intra_op_num_threads)
        options.inter_op_num_threads = 1
    return ort.InferenceSession(
        str(path), sess_options=options, providers=list(providers or ["CPUExecutionProvider"])
    )


def _as_numpy(tensor: torch.Tensor | np.ndarray, dtype) -> np.ndarray:
    if isinstance(tensor, torch.Tensor):
        tensor = tensor.detach().cpu().numpy()
    return np.ascontiguousarray(tensor, dtype=dtype)


def run_onnx(
    session, pixel_values: torch.Tensor | np.ndarray, camids: torch.Tensor | np.ndarray | None = None
) -> np.ndarray:
    """Embeddings (batch, dim) of an exported model (``session`` from :func:`make_onnx_session`)."""
    names = [i.name for i in session.get_inputs()]
    feeds = {PIXELS_INPUT: _as_numpy(pixel_values, np.float32)}
    if CAMIDS_INPUT in names:
        if camids is None:
            raise ValueError(
                f"this export takes {CAMIDS_INPUT} (int64, (batch,)): the model has an SIE embedding."
            )
        feeds[CAMIDS_INPUT] = _as_numpy(camids, np.int64)
    return session.run([EMBEDDINGS_OUTPUT], feeds)[0]


def check_onnx_parity(
    model: ReIDPreTrainedModel,
    path: str | os.PathLike,
    pixel_values: torch.Tensor,
    camids: torch.Tensor | None = None,
    *,
    session=None,
) -> float:
    """Largest absolute difference between the embeddings of ``pixel_values`` (and ``camids``, for an
    export that takes them) from onnxruntime on ``path`` and from ``model.get_image_embeddings``
    (eval mode). A file exported without ``camids`` is compared with the model run without them."""
    session = session if session is not None else make_onnx_session(path)
    takes_camids = CAMIDS_INPUT in [i.name for i in session.get_inputs()]
    onnx_out = run_onnx(session, pixel_values, camids)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            reference = model.get_image_embeddings(
                pixel_values.to(device), camids.to(device) if takes_camids and camids is not None else None
            )
    finally:
        model.train(was_training)
    reference = reference.float().cpu().numpy()
    if reference.shape != onnx_out.shape:
        raise ValueError(f"ONNX output {onnx_out.shape} differs in shape from PyTorch's {reference.shape}.")
    return float(np.abs(onnx_out.astype(np.float64) - reference.astype(np.float64)).max(initial=0.0))


# ---------------------------------------------------------------------------- CLI entry


def _load_reid_model(model_path: str):
    """The hf_reid model and the ``preprocessor_config.json`` dict (or ``None``) of a model folder."""
    # Importing hf_reid (done by this module's own imports) registers its model types with the
    # Auto classes, so AutoConfig / AutoModel return hf_reid's classes without remote code.
    from transformers import AutoConfig, AutoModel

    folder = Path(model_path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{model_path} is not a folder; give the folder of a saved hf_reid model.")
    if not (folder / "config.json").is_file():
        raise ValueError(
            f"{model_path} has no config.json: it is not a saved model folder (save a model with "
            "model.save_pretrained(folder), or give a training run's output folder)."
        )
    try:
        config = AutoConfig.from_pretrained(folder)
    except (ValueError, KeyError, OSError) as error:
        raise ValueError(
            f"{model_path} is not an hf_reid model folder (model types: {_known_types()}): {error}"
        ) from error
    if not isinstance(config, ReIDConfig):
        raise ValueError(
            f"{model_path} holds a {config.model_type!r} model, not an hf_reid Re-ID model "
            f"(model types: {_known_types()})."
        )
    model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
    processor_file = folder / "preprocessor_config.json"
    processor = json.loads(processor_file.read_text()) if processor_file.is_file() else None
    return model, processor


def export_command(model_path: str, output: str, opset: int = DEFAULT_OPSET, check: bool = True) -> dict:
    """``hf-reid export --onnx``: export the model folder ``model_path`` to the ONNX file ``output``
    and, with ``check``, compare onnxruntime with PyTorch on 3 random images (another batch size than
    the traced one, so the dynamic batch axis is checked too).

    Returns a summary (paths, sizes, timings, the metadata written, ``max_abs_diff`` when checked).
    Raises ``FileNotFoundError``/``ValueError`` for a folder that is not an hf_reid model and
    ``RuntimeError`` when the check finds a difference above :data:`PARITY_TOLERANCE` (the file is
    kept for inspection).
    """
    model, processor = _load_reid_model(model_path)
    start = time.perf_counter()
    meta = export_onnx(model, output, opset=opset, image_processor=processor)
    summary: dict[str, Any] = {
        "model": str(model_path),
        "output": str(output),
        "model_type": meta["model_type"],
        "opset": opset,
        "inputs": meta["inputs"],
        "embedding_dim": meta["embedding_dim"],
        "preprocessing_from": "preprocessor_config.json" if processor is not None else "hf_reid defaults",
        "file_mb": round(Path(output).stat().st_size / 2**20, 2),
        "export_seconds": round(time.perf_counter() - start, 2),
        "metadata": meta,
    }
    if check:
        height, width = meta["image_size"]
        generator = torch.Generator().manual_seed(0)
        pixels = torch.randn(3, 3, height, width, generator=generator)
        camids = None
        if meta["camids_input"]:
            camids = torch.randint(0, meta["num_cameras"], (3,), generator=generator)
        diff = check_onnx_parity(model, output, pixels, camids)
        summary["max_abs_diff"] = diff
        summary["parity_tolerance"] = PARITY_TOLERANCE
        if not diff <= PARITY_TOLERANCE:
            raise RuntimeError(
                f"onnxruntime's embeddings differ from PyTorch's by up to {diff:.3g} (> {PARITY_TOLERANCE:g}); "
                f"the export is kept at {output} for inspection."
            )
    return summary


__all__ = [
    "CAMIDS_INPUT",
    "DEFAULT_OPSET",
    "EMBEDDINGS_OUTPUT",
    "PARITY_TOLERANCE",
    "PIXELS_INPUT",
    "check_onnx_parity",
    "export_command",
    "export_metadata",
    "export_onnx",
    "load_onnx_metadata",
    "make_onnx_session",
    "model_uses_camids",
    "run_onnx",
]
