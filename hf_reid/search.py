"""Person search over a gallery of crops: by example image(s) or by a description.

A :class:`SearchModel` wraps what a search needs of a model: the Re-ID embedding (image queries,
:meth:`~hf_reid.models.ReIDPreTrainedModel.get_image_embeddings`) and, for text queries, the
image–text space (:meth:`~hf_reid.models.ReIDPreTrainedModel.get_joint_image_embeddings` and
:meth:`~hf_reid.models.ReIDPreTrainedModel.get_text_embeddings`). It loads an hf_reid model folder
or a plain CLIP (``"synthclip"``, a CLIP folder): zero-shot, where both spaces are CLIP's normalised
image feature. Methods whose image–text space no caption loss trained (CLIP-ReID, CLIP-FGDI, ITKM)
refuse text queries with the reason unless ``allow_untrained_text=True`` (docs/SEARCH.md).

A :class:`SearchIndex` holds the L2-normalised gallery embeddings of one or both spaces, the image
paths and their identities (from Market-style file names ``0001_c2s1_...`` or a folder per
identity). It is saved as ``NAME.safetensors`` (the embeddings, plus each space's embedding of a
fixed probe image, which tells whether a later query comes from the same model) and ``NAME.json``
(paths, identities, model, dimensions); nothing is pickled. Search is exact inner product (= cosine)
over the whole gallery: faiss's flat index when faiss is installed, else a torch matmul
(:class:`hf_reid.metrics.GalleryIndex`)::

    from hf_reid.search import SearchIndex, SearchModel

    model = SearchModel.load("runs/retext")
    index = SearchIndex.build(model, "data/synthpeds/synthpeds_d3/bounding_box_test", spaces=("reid", "joint"))
    index.save("gallery.safetensors")
    hits = index.query_texts(model, ["a woman in a red coat"], top_k=10)[0]
    hits.paths, hits.scores
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

Space = Literal["reid", "joint"]
SPACES: tuple[str, ...] = ("reid", "joint")
"""``"reid"``: the Re-ID embedding (image queries); ``"joint"``: the image–text space (text queries)."""

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
"""File suffixes (any case) taken as images when a gallery folder is scanned."""

INDEX_FORMAT = "hf_reid.search_index"
INDEX_VERSION = 1
SYNTHCLIP = "synthclip"

_MARKET_NAME = re.compile(r"^(-?\d+)_c(\d+)")
_PROBE_SEED = 1234
_PROBE_ATOL = 1e-3


# ------------------------------------------------------------------------------------ images, ids


def identity_from_path(path: str | os.PathLike, root: str | os.PathLike | None = None) -> str | None:
    """The identity an image path gives, or ``None``: the pid of a Market-style file name
    (``0001_c2s1_000656_00.jpg`` -> ``"1"``; junk ``-1`` -> ``None``), else the name of the image's
    folder when it lies in a sub-folder of ``root`` (a folder per identity)."""
    path = Path(path)
    match = _MARKET_NAME.match(path.name)
    if match:
        pid = int(match.group(1))
        return None if pid < 0 else str(pid)
    if root is not None:
        try:
            relative = path.resolve().relative_to(Path(root).resolve())
        except ValueError:
            return None
        if len(relative.parts) >= 2:
            return relative.parts[-2]
    return None


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Every image (by suffix) under ``folder``, recursively, sorted; clear errors for a missing or
    empty folder."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"gallery {folder} does not exist (give a folder of crops or a saved index).")
    if not folder.is_dir():
        raise NotADirectoryError(f"gallery {folder} is not a folder (nor a .safetensors/.json index).")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(
            f"gallery folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}, searched recursively)."
        )
    return paths


def read_image(path: str | os.PathLike) -> Image.Image:
    """The RGB image at ``path``; ``FileNotFoundError`` or ``ValueError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist.")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ValueError(f"cannot read image {path}: {error}") from error


# ------------------------------------------------------------------------------------------- model


def _load_tokenizer(folder: str, clip_text_tower: bool):
    """The tokenizer saved with a model; for a CLIP text tower the shipped OpenAI CLIP tokenizer
    when the folder has none (another text encoder, e.g. ReText's BERT, needs its own)."""
    from hf_reid.tokenization import load_tokenizer

    if clip_text_tower:
        return load_tokenizer(folder)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(
            f"model folder {folder} has no tokenizer for its text encoder: save the tokenizer there "
            f"(tokenizer.save_pretrained(folder)). {error}"
        ) from error


class SearchModel:
    """A model as search uses it: images -> Re-ID or joint embeddings, texts -> joint embeddings
    (every embedding L2-normalised, float32, on the CPU).

    Build it with :meth:`load` (a model folder, ``"synthclip"`` or a CLIP folder), or wrap a model
    object: ``SearchModel(model, tokenizer=..., image_size=(128, 64))``.
    """

    def __init__(
        self,
        model: Any,
        *,
        tokenizer: Any = None,
        image_size: tuple[int, int] | None = None,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        interpolation: str = "bicubic",
        name: str | None = None,
        allow_untrained_text: bool = False,
        text_refusal: str | None = None,
        batch_size: int = 64,
    ):
        from transformers import CLIPModel

        from hf_reid.data.transforms import ReidTestTransform, ReidTransformConfig

        self.model = model.eval()
        self.is_clip = isinstance(model, CLIPModel)
        if image_size is None:
            if self.is_clip:
                raise ValueError("a plain CLIP needs image_size=(height, width) for Re-ID crops.")
            image_size = tuple(model.config.image_size)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.transform = ReidTestTransform(
            ReidTransformConfig(
                height=self.image_size[0],
                width=self.image_size[1],
                mean=tuple(mean),
                std=tuple(std),
                interpolation=interpolation,
            )
        )
        self.tokenizer = tokenizer
        self.name = name or getattr(model, "name_or_path", "") or type(model).__name__
        self.allow_untrained_text = allow_untrained_text
        self.text_refusal = text_refusal
        self.batch_size = batch_size

    # -------------------------------------------------------------- construction

    @classmethod
    def load(
        cls,
        name_or_path: str | os.PathLike,
        *,
        allow_untrained_text: bool = False,
        device: str | torch.device | None = None,
        batch_size: int = 64,
    ) -> SearchModel:
        """Load ``"synthclip"`` (the shipped tiny CLIP, zero-shot), a CLIP folder (zero-shot) or an
        hf_reid model folder (a training run's output), with its tokenizer and image processor."""
        from transformers import AutoConfig, AutoModel, CLIPImageProcessor, CLIPModel

        import hf_reid.models  # noqa: F401  (registers the hf_reid model types)
        from hf_reid.data.transforms import ReidTransformConfig
        from hf_reid.models import ReIDConfig
        from hf_reid.synthclip import resolve_clip_path

        name = str(name_or_path)
        folder = resolve_clip_path(name) if name == SYNTHCLIP else name
        if not Path(folder).is_dir():
            raise FileNotFoundError(
                f"model {name} is not a folder: give a saved hf_reid model (a training run's output "
                f"folder), a CLIP folder, or {SYNTHCLIP!r}."
            )
        if not (Path(folder) / "config.json").is_file():
            raise ValueError(f"model folder {name} has no config.json: it is not a saved model.")
        config = AutoConfig.from_pretrained(folder)
        text_refusal = None
        if config.model_type == "clip":
            model = CLIPModel.from_pretrained(folder, dtype=torch.float32)
            tokenizer = _load_tokenizer(folder, clip_text_tower=True)
        elif isinstance(config, ReIDConfig):
            model = AutoModel.from_pretrained(folder, dtype=torch.float32)
            tokenizer = _load_tokenizer(folder, clip_text_tower=getattr(config, "text_config", None) is None)
            text_refusal = _caption_mode_refusal(Path(folder))
        else:
            raise ValueError(
                f"model folder {name} holds a {config.model_type!r} model, neither an hf_reid Re-ID "
                "model nor a CLIP."
            )
        if device is not None:
            model = model.to(device)
        processor_file = Path(folder) / "preprocessor_config.json"
        if processor_file.is_file():
            processor = CLIPImageProcessor.from_pretrained(folder)
        elif isinstance(config, ReIDConfig):
            processor = model.get_image_processor()
        else:
            raise ValueError(f"CLIP folder {name} has no preprocessor_config.json (Re-ID crop size).")
        transform = ReidTransformConfig.from_image_processor(processor)
        return cls(
            model,
            tokenizer=tokenizer,
            image_size=(transform.height, transform.width),
            mean=transform.mean,
            std=transform.std,
            interpolation=transform.interpolation,
            name=name,
            allow_untrained_text=allow_untrained_text,
            text_refusal=text_refusal,
            batch_size=batch_size,
        )

    # -------------------------------------------------------------- embeddings

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def has_trained_caption_path(self) -> bool:
        """Whether text queries are meaningful: a plain CLIP (its contrastive pretraining), or a
        Re-ID model whose caption path a loss trained (ReText with captions)."""
        if self.is_clip:
            return True
        return bool(getattr(self.model, "has_trained_caption_path", False)) and self.text_refusal is None

    def pixel_values(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.transform(list(images)).to(self.device)

    @torch.no_grad()
    def embed_pixels(self, pixel_values: torch.Tensor, space: Space = "reid") -> torch.Tensor:
        """Embeddings of a preprocessed batch in ``space``."""
        _check_space(space)
        pixel_values = pixel_values.to(self.device)
        if self.is_clip:
            output = self.model.get_image_features(pixel_values=pixel_values, interpolate_pos_encoding=True)
            features = output if isinstance(output, torch.Tensor) else output.pooler_output
        elif space == "reid":
            features = self.model.get_image_embeddings(pixel_values)
        else:
            features = self.model.get_joint_image_embeddings(pixel_values)
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu()

    def embed_images(
        self, images: Iterable[Image.Image | str | os.PathLike], space: Space = "reid"
    ) -> torch.Tensor:
        """(N, D) embeddings of images (PIL images or paths), in batches of ``batch_size``."""
        images = list(images)
        if not images:
            raise ValueError("no images to embed.")
        chunks = []
        for start in range(0, len(images), self.batch_size):
            batch = [
                image if isinstance(image, Image.Image) else read_image(image)
                for image in images[start : start + self.batch_size]
            ]
            chunks.append(self.embed_pixels(self.pixel_values(batch), space))
        return torch.cat(chunks)

    def check_text(self) -> None:
        """Raise ``ValueError`` (the reason) unless text queries are meaningful or allowed."""
        if self.allow_untrained_text or self.is_clip:
            return
        if self.text_refusal is not None:
            raise ValueError(self.text_refusal)
        if not getattr(self.model, "has_trained_caption_path", False):
            try:  # the model's own refusal says why
                self.model.get_text_embeddings(input_ids=torch.zeros(1, 1, dtype=torch.long))
            except ValueError as error:
                raise ValueError(f"{error} (hf-reid search: --allow-untrained-text)") from None

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, P) joint-space embeddings of ``texts``."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise ValueError("text queries must be non-empty strings.")
        self.check_text()
        if self.tokenizer is None:
            raise ValueError(f"model {self.name} has no tokenizer: text queries need one.")
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            if self.is_clip:
                max_length = self.model.config.text_config.max_position_embeddings
                tokens = self.tokenizer(
                    batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
                ).to(self.device)
                output = self.model.get_text_features(
                    input_ids=tokens["input_ids"], attention_mask=tokens.get("attention_mask")
                )
                features = output if isinstance(output, torch.Tensor) else output.pooler_output
            else:
                features = self.model.get_text_embeddings(
                    batch, tokenizer=self.tokenizer, allow_untrained=self.allow_untrained_text
                )
            chunks.append(torch.nn.functional.normalize(features.float(), dim=-1).cpu())
        return torch.cat(chunks)

    def probe(self, space: Space) -> torch.Tensor:
        """This model's embedding (1, D) of a fixed pseudo-random image in ``space``: an index built
        by another model (or other weights) gives another vector."""
        generator = torch.Generator().manual_seed(_PROBE_SEED)
        pixels = torch.randint(0, 256, (1, 3, *self.image_size), generator=generator, dtype=torch.uint8)
        return self.embed_pixels(self.transform(pixels), space)


def _caption_mode_refusal(folder: Path) -> str | None:
    """Why a ReText run folder's text path is untrained (``train_results.json`` records a
    ``caption_mode`` other than ``text``: the ablations without captions' text), or ``None``."""
    results = folder / "train_results.json"
    if not results.is_file():
        return None
    try:
        mode = json.loads(results.read_text()).get("caption_mode")
    except (ValueError, AttributeError):
        return None
    if mode is None or mode == "text":
        return None
    return (
        f"model {folder} was trained with captions.mode={mode!r} ({results.name}): no caption loss "
        "trained its text-image space; pass allow_untrained_text=True (--allow-untrained-text) to use it anyway."
    )


def _check_space(space: str) -> None:
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}.")


# ------------------------------------------------------------------------------------------- index


@dataclass
class SearchResult:
    """The top-k gallery entries of one query, best first."""

    query: str
    """The query image's path, or the text."""
    kind: str
    """``"image"`` or ``"text"``."""
    paths: list[str]
    scores: list[float]
    """Cosine similarities (inner products of L2-normalised embeddings)."""
    identities: list[str | None]
    """Gallery identities (``None`` where unknown)."""
    query_identity: str | None = None
    matches: list[bool | None] = field(default_factory=list)
    """Whether each hit has the query's identity (``None`` where either is unknown)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SearchIndex:
    """L2-normalised gallery embeddings in one or both spaces, with paths and identities."""

    def __init__(
        self,
        embeddings: dict[str, torch.Tensor],
        paths: Sequence[str],
        identities: Sequence[str | None] | None = None,
        *,
        model: str | None = None,
        probes: dict[str, torch.Tensor] | None = None,
        backend: Literal["auto", "faiss", "torch"] = "auto",
    ):
        if not embeddings:
            raise ValueError("an index needs the embeddings of at least one space.")
        paths = [str(p) for p in paths]
        if not paths:
            raise ValueError("an index needs at least one gallery entry.")
        identities = list(identities) if identities is not None else [None] * len(paths)
        if len(identities) != len(paths):
            raise ValueError(f"{len(identities)} identities for {len(paths)} paths.")
        for space, tensor in embeddings.items():
            _check_space(space)
            if tensor.ndim != 2 or tensor.shape[0] != len(paths):
                raise ValueError(
                    f"{space} embeddings must be ({len(paths)}, dim), one row per path; got {tuple(tensor.shape)}."
                )
        self.embeddings = {s: t.detach().float().cpu().contiguous().clone() for s, t in embeddings.items()}
        self.paths = paths
        self.identities = [None if i is None else str(i) for i in identities]
        self.model = model
        self.probes = {s: t.detach().float().cpu() for s, t in (probes or {}).items()}
        if backend == "auto":
            backend = "faiss" if _has_faiss() else "torch"
        self.backend = backend
        self._indexes: dict[str, Any] = {}
        self._check_first = False  # a probe-less index checks queries against its first image

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def spaces(self) -> tuple[str, ...]:
        return tuple(self.embeddings)

    # -------------------------------------------------------------- building

    @classmethod
    def build(
        cls,
        model: SearchModel,
        gallery: str | os.PathLike | Sequence[str | os.PathLike],
        spaces: Sequence[Space] = ("reid",),
        identities: Sequence[str | None] | None = None,
        **kwargs: Any,
    ) -> SearchIndex:
        """Embed a folder of crops (scanned recursively) or a list of image paths in ``spaces``.
        Identities come from the file names / folders unless given."""
        if isinstance(gallery, (str, os.PathLike)):
            root = Path(gallery)
            paths = list_images(root)
        else:
            root, paths = None, [Path(p) for p in gallery]
            if not paths:
                raise ValueError("the gallery list is empty.")
        if identities is None:
            identities = [identity_from_path(p, root) for p in paths]
        images = [read_image(p) for p in paths]
        return cls.from_images(model, images, [str(p) for p in paths], identities, spaces=spaces, **kwargs)

    @classmethod
    def from_images(
        cls,
        model: SearchModel,
        images: Sequence[Image.Image],
        paths: Sequence[str],
        identities: Sequence[str | None] | None = None,
        spaces: Sequence[Space] = ("reid",),
        **kwargs: Any,
    ) -> SearchIndex:
        """Embed PIL ``images`` (named by ``paths``) in ``spaces``."""
        spaces = tuple(dict.fromkeys(spaces))
        for space in spaces:
            _check_space(space)
        embeddings = {space: model.embed_images(images, space) for space in spaces}
        probes = {space: model.probe(space) for space in spaces}
        return cls(embeddings, paths, identities, model=model.name, probes=probes, **kwargs)

    @classmethod
    def from_dataset(
        cls, model: SearchModel, dataset: Any, spaces: Sequence[Space] = ("reid",), **kwargs: Any
    ) -> SearchIndex:
        """Embed a Re-ID split (``image``, ``pid`` and ``path`` columns, e.g. from
        :func:`hf_reid.data.load_reid_dataset`); identities are the pids."""
        from datasets import Image as ImageFeature

        dataset = dataset.cast_column("image", ImageFeature())
        images = [image.convert("RGB") for image in dataset["image"]]
        return cls.from_images(
            model, images, dataset["path"], [str(p) for p in dataset["pid"]], spaces=spaces, **kwargs
        )

    # -------------------------------------------------------------- saving

    @staticmethod
    def files(path: str | os.PathLike) -> tuple[Path, Path]:
        """``(NAME.safetensors, NAME.json)`` of an index named by either file or by ``NAME``."""
        path = Path(path)
        stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
        return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")

    def save(self, path: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``NAME.safetensors`` (embeddings and probes) and ``NAME.json`` (paths, identities,
        model, dimensions); returns both paths."""
        from safetensors.torch import save_file

        tensors_file, json_file = self.files(path)
        tensors_file.parent.mkdir(parents=True, exist_ok=True)
        tensors = dict(self.embeddings)
        tensors.update({f"probe.{space}": probe for space, probe in self.probes.items()})
        save_file(
            tensors, str(tensors_file), metadata={"format": INDEX_FORMAT, "version": str(INDEX_VERSION)}
        )
        info = {
            "format": INDEX_FORMAT,
            "version": INDEX_VERSION,
            "model": self.model,
            "count": len(self),
            "dims": {space: int(t.shape[1]) for space, t in self.embeddings.items()},
            "embeddings_file": tensors_file.name,
            "paths": self.paths,
            "identities": self.identities,
        }
        json_file.write_text(json.dumps(info, indent=1) + "\n")
        return tensors_file, json_file

    @classmethod
    def load(cls, path: str | os.PathLike, **kwargs: Any) -> SearchIndex:
        """Read an index written by :meth:`save` (either file, or ``NAME``), or a features file of
        ``hf-reid extract`` (:meth:`from_features_file`)."""
        from safetensors import safe_open

        tensors_file, json_file = cls.files(path)
        if _features_metadata(tensors_file) is not None:
            return cls.from_features_file(tensors_file, **kwargs)
        for file in (tensors_file, json_file):
            if not file.is_file():
                raise FileNotFoundError(
                    f"search index file {file} does not exist (an index is NAME.safetensors + NAME.json)."
                )
        try:
            info = json.loads(json_file.read_text())
        except ValueError as error:
            raise ValueError(f"search index {json_file} is not valid JSON: {error}") from error
        if not isinstance(info, dict) or info.get("format") != INDEX_FORMAT:
            raise ValueError(f"{json_file} is not an hf_reid search index (format {INDEX_FORMAT!r}).")
        if info.get("version") != INDEX_VERSION:
            raise ValueError(
                f"search index {json_file} has version {info.get('version')}; this hf_reid reads {INDEX_VERSION}."
            )
        try:
            with safe_open(str(tensors_file), framework="pt") as handle:
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        except Exception as error:  # safetensors raises its own error types
            raise ValueError(f"cannot read search index embeddings {tensors_file}: {error}") from error
        embeddings = {s: t for s, t in tensors.items() if s in SPACES}
        probes = {k.split(".", 1)[1]: t for k, t in tensors.items() if k.startswith("probe.")}
        for space, dim in info.get("dims", {}).items():
            if space not in embeddings or embeddings[space].shape != (info["count"], dim):
                raise ValueError(
                    f"search index {tensors_file} does not match {json_file} ({space} embeddings)."
                )
        return cls(
            embeddings, info["paths"], info["identities"], model=info.get("model"), probes=probes, **kwargs
        )

    @classmethod
    def from_features_file(cls, path: str | os.PathLike, **kwargs: Any) -> SearchIndex:
        """An index of the Re-ID space from a features file of ``hf-reid extract``
        (``embeddings`` = the model's ``get_image_embeddings``, L2-normalised here; ``paths``
        relative to its ``images`` folder; identities from its ``pids`` or the paths). Without a
        probe, the first gallery image, when readable, checks that queries come from the same model."""
        from safetensors import safe_open

        path = Path(path)
        metadata = _features_metadata(path)
        if metadata is None:
            raise ValueError(f"{path} is not a features file of hf-reid extract.")
        with safe_open(str(path), framework="pt") as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        root = Path(metadata.get("images", "."))
        paths = [str(root / p) for p in metadata.get("paths", [])]
        if "embeddings" not in tensors or tensors["embeddings"].shape[0] != len(paths):
            raise ValueError(f"features file {path}: its embeddings do not match its {len(paths)} paths.")
        if "pids" in tensors:
            identities = [str(int(p)) if int(p) >= 0 else None for p in tensors["pids"]]
        else:
            identities = [identity_from_path(p, root) for p in paths]
        embeddings = torch.nn.functional.normalize(tensors["embeddings"].float(), dim=-1)
        index = cls({"reid": embeddings}, paths, identities, model=metadata.get("model"), **kwargs)
        index._check_first = not metadata.get("camera_ids", False)
        return index

    # -------------------------------------------------------------- searching

    def check_model(self, model: SearchModel, space: Space) -> None:
        """Raise ``ValueError`` unless ``model`` embeds ``space`` as the model that built the index."""
        if space not in self.embeddings:
            hint = " (a text query needs the joint space: rebuild the index with spaces=('reid', 'joint'))"
            raise ValueError(
                f"the index has no {space!r} embeddings (it has {', '.join(self.spaces)})"
                + (hint if space == "joint" else "")
                + "."
            )
        probe = self.probes.get(space)
        if probe is not None:
            mine = model.probe(space)
        elif self._check_first and Path(self.paths[0]).is_file():
            probe, mine = self.embeddings[space][:1], model.embed_images([self.paths[0]], space)
        else:
            return
        if mine.shape != probe.shape or not torch.allclose(mine, probe, atol=_PROBE_ATOL):
            raise ValueError(
                f"the index was built by another model ({self.model}) than {model.name}: their {space} "
                "embeddings differ; rebuild the index with this model."
            )

    def search(
        self, queries: torch.Tensor, space: Space = "reid", top_k: int = 10
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, indices)`` of the ``top_k`` best gallery entries of each L2-normalised query,
        best first: exact inner product (faiss's flat index or a torch matmul)."""
        from hf_reid.metrics import GalleryIndex

        _check_space(space)
        if space not in self.embeddings:
            raise ValueError(f"the index has no {space!r} embeddings (it has {', '.join(self.spaces)}).")
        if space not in self._indexes:
            self._indexes[space] = GalleryIndex(self.embeddings[space], metric="cosine", backend=self.backend)
        distances, indices = self._indexes[space].search(queries, top_k=top_k)
        return 1.0 - distances, indices

    def _results(
        self,
        queries: list[str],
        kind: str,
        query_ids: list[str | None],
        scores: np.ndarray,
        indices: np.ndarray,
    ) -> list[SearchResult]:
        results = []
        for query, query_id, row_scores, row in zip(queries, query_ids, scores, indices, strict=True):
            identities = [self.identities[i] for i in row]
            matches = [None if query_id is None or g is None else g == query_id for g in identities]
            results.append(
                SearchResult(
                    query=query,
                    kind=kind,
                    paths=[self.paths[i] for i in row],
                    scores=[round(float(s), 6) for s in row_scores],
                    identities=identities,
                    query_identity=query_id,
                    matches=matches,
                )
            )
        return results

    def query_images(
        self,
        model: SearchModel,
        images: Sequence[str | os.PathLike],
        top_k: int = 10,
        identities: Sequence[str | None] | None = None,
        exclude_query: bool = True,
    ) -> list[SearchResult]:
        """Search the Re-ID space with query image files (identities from their names unless given).
        With ``exclude_query`` a query file that is itself in the gallery is left out of its hits."""
        if not images:
            raise ValueError("no query images given.")
        pictures = [read_image(p) for p in images]  # unreadable queries fail first, naming the file
        self.check_model(model, "reid")
        queries = model.embed_images(pictures, "reid")
        scores, indices = self.search(queries, "reid", top_k + 1 if exclude_query else top_k)
        if exclude_query:
            where = {_resolved(p): i for i, p in enumerate(self.paths)}
            kept_scores, kept_indices = [], []
            for query, row_scores, row in zip(images, scores, indices, strict=True):
                keep = row != where.get(_resolved(query), -1)
                kept_scores.append(row_scores[keep][:top_k])
                kept_indices.append(row[keep][:top_k])
            scores, indices = kept_scores, kept_indices
        query_ids = list(identities) if identities is not None else [identity_from_path(p) for p in images]
        return self._results([str(p) for p in images], "image", query_ids, scores, indices)

    def query_texts(
        self,
        model: SearchModel,
        texts: Sequence[str],
        top_k: int = 10,
        identities: Sequence[str | None] | None = None,
    ) -> list[SearchResult]:
        """Search the joint space with descriptions (identities unknown unless given)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        model.check_text()
        self.check_model(model, "joint")
        queries = model.embed_texts(texts)
        scores, indices = self.search(queries, "joint", top_k)
        query_ids = list(identities) if identities is not None else [None] * len(texts)
        return self._results(texts, "text", query_ids, scores, indices)


def _features_metadata(path: Path) -> dict[str, Any] | None:
    """The ``hf_reid`` metadata of an ``hf-reid extract`` features file, else ``None``."""
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = json.loads((handle.metadata() or {}).get("hf_reid", "{}"))
    except Exception:  # not a safetensors file: SearchIndex.load reports it
        return None
    return metadata if isinstance(metadata, dict) and metadata.get("format") == "hf_reid.features" else None


def _resolved(path: str | os.PathLike) -> str:
    return str(Path(path).resolve())


def _has_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def open_gallery(
    model: SearchModel,
    gallery: str | os.PathLike,
    spaces: Sequence[Space],
) -> SearchIndex:
    """A saved index (``.safetensors`` / ``.json`` file or its ``NAME``) or a folder of crops
    embedded now in ``spaces``."""
    gallery = Path(gallery)
    if gallery.is_dir():
        return SearchIndex.build(model, gallery, spaces=spaces)
    tensors_file, json_file = SearchIndex.files(gallery)
    if gallery.suffix in (".safetensors", ".json") or tensors_file.is_file() or json_file.is_file():
        return SearchIndex.load(gallery)
    if not gallery.exists():
        raise FileNotFoundError(
            f"gallery {gallery} does not exist (give a folder of crops or a saved index)."
        )
    raise ValueError(
        f"gallery {gallery} is neither a folder of crops nor a saved index (.safetensors + .json)."
    )


# -------------------------------------------------------------------------------------------- grid

MATCH = (40, 170, 60)
MISMATCH = (200, 50, 50)
UNKNOWN = (150, 150, 150)
QUERY = (40, 90, 200)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType sizes
        return ImageFont.load_default()


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return [*lines, line] if line else lines


def save_grid(
    results: Sequence[SearchResult],
    path: str | os.PathLike,
    cell: tuple[int, int] = (96, 192),
    resolve: Any = None,
) -> Path:
    """A PNG with one row per query: the query (image, or its text), then its hits with rank and
    score; borders green for a true match, red for another identity, grey where unknown.
    ``resolve(path) -> Path`` maps stored gallery paths to files (default: as they are)."""
    if not results:
        raise ValueError("no results to draw.")
    width, height = cell
    label = 30
    border = 4
    columns = 1 + max(len(r.paths) for r in results)
    text_width = 2 * width
    canvas = Image.new(
        "RGB",
        (text_width + (columns - 1) * (width + 6) + 12, len(results) * (height + label + 10) + 6),
        "white",
    )
    draw = ImageDraw.Draw(canvas)
    small, tiny = _font(13), _font(11)

    def framed(image_path: str, colour: tuple[int, int, int]) -> Image.Image:
        file = resolve(image_path) if resolve is not None else Path(image_path)
        try:
            image = read_image(file)
        except (FileNotFoundError, ValueError):
            image = Image.new("RGB", (width, height), (230, 230, 230))
        image = image.resize((width - 2 * border, height - 2 * border), Image.BICUBIC)
        return ImageOps.expand(image, border=border, fill=colour)

    for row, result in enumerate(results):
        top = 6 + row * (height + label + 10)
        if result.kind == "image":
            canvas.paste(framed(result.query, QUERY), (6, top))
            caption = "query" + (f" id {result.query_identity}" if result.query_identity is not None else "")
            draw.text((6, top + height + 2), caption, fill=QUERY, font=small)
        else:
            draw.rectangle((6, top, 6 + text_width - 12, top + height), outline=QUERY, width=2)
            lines = _wrap(f'"{result.query}"', max(12, (text_width - 24) // 7))
            for i, line in enumerate(lines[: height // 16]):
                draw.text((12, top + 6 + 16 * i), line, fill=(0, 0, 0), font=small)
            draw.text((6, top + height + 2), "text query", fill=QUERY, font=small)
        for rank, (hit, score) in enumerate(zip(result.paths, result.scores, strict=True)):
            match = result.matches[rank] if rank < len(result.matches) else None
            colour = UNKNOWN if match is None else (MATCH if match else MISMATCH)
            left = text_width + rank * (width + 6)
            canvas.paste(framed(hit, colour), (left, top))
            draw.text((left, top + height + 2), f"#{rank + 1} {score:.3f}", fill=colour, font=small)
            identity = result.identities[rank]
            if identity is not None:
                draw.text((left, top + height + 16), f"id {identity}", fill=(60, 60, 60), font=tiny)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, format="PNG")
    return path


__all__ = [
    "IMAGE_SUFFIXES",
    "SPACES",
    "SearchIndex",
    "SearchModel",
    "SearchResult",
    "identity_from_path",
    "list_images",
    "open_gallery",
    "read_image",
    "save_grid",
]
