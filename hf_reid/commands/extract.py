"""``hf-reid extract MODEL --images DIR --out FEATURES.safetensors``: embed a folder of crops
(recursively, in sorted path order) or the splits of a dataset (``--layout NAME``) into one
safetensors file, in batches, resumable after a kill.

The file holds ``embeddings`` (float32, ``(N, D)``, the model's ``get_image_embeddings``: what
``hf-reid eval`` ranks), for a dataset also ``pids`` and ``camids`` (int64), and under the
metadata key ``hf_reid`` one JSON document (:func:`load_features` reads it back): ``paths`` (row
order, relative to ``--images``), ``splits`` (datasets), the model, ``dim``, ``normalized``,
``skipped`` (unreadable images left out with ``--on-bad-image skip``) and more.

Resuming. Every ``--chunk-batches`` batches the embeddings so far are written to
``FEATURES.parts/chunk-XXXXX.safetensors`` (a temporary file renamed into place, so a chunk is
complete or absent), under ``FEATURES.parts/manifest.json``, which fingerprints the extraction
(model weights and config, the image list, batch and chunk sizes, ids). Run the same command
again after a kill and it skips the chunks already there; another extraction's chunks are
discarded. Chunks are aligned to batches, so a resumed run computes exactly the batches an
uninterrupted one would, and the final file (assembled from the chunks, then renamed into place)
is bitwise the same. The parts folder is removed afterwards (``--keep-parts`` keeps it).

Ids. A CLIP-ReID model with a camera embedding (SIE) gets each image's camera id from a dataset
(``--layout``) and none for a folder of crops (cameras unknown: the embedding without SIE); ITKM
gets its scenario index as ``hf-reid eval`` gives it (``--scenario``, else from the model's
``config.yaml`` and the folder's name, else 0). The file records which (``camera_ids``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import textwrap
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._common import add_layout_option_argument, add_model_arguments, add_on_bad_image_argument

logger = logging.getLogger("hf_reid.commands.extract")

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".gif"}
)
"""Files a folder input contributes (case-insensitive; hidden files and folders are left out)."""
FORMAT = "hf_reid.features"
FORMAT_VERSION = 1
METADATA_KEY = "hf_reid"
"""The one safetensors metadata entry (one key: safetensors writes several in random order, and
the file must be byte-identical between runs)."""
MANIFEST = "manifest.json"

EXAMPLES = """\
examples:
  hf-reid extract runs/clip_reid --images crops/ --out crops.safetensors
  hf-reid extract runs/clip_reid --images /data/Market-1501-v15.09.15 --layout market1501 --split gallery \\
      --out market_gallery.safetensors
  hf-reid extract ORG/clip-reid-market --images crops/ --out crops.safetensors --on-bad-image skip
  # killed? run the same command again: it goes on from crops.parts/ and skips the chunks done

Reading the file:
  from hf_reid.commands.extract import load_features
  features = load_features("crops.safetensors")   # {"embeddings": (N, D) tensor, "paths": [...], ...}
"""


@dataclass
class Item:
    """One image to embed: ``path`` (what the file records), ``source`` (what is decoded)."""

    path: str
    source: Any
    pid: int = -1
    camid: int = -1
    split: str | None = None


def parts_folder(out: Path) -> Path:
    """``FEATURES.parts`` beside ``FEATURES.safetensors``."""
    return out.with_name(out.name.removesuffix(".safetensors") + ".parts")


def list_images(folder: Path) -> list[str]:
    """Image files under ``folder``, recursively: paths relative to it (``/``-separated), sorted."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                found.append(Path(root, name).relative_to(folder).as_posix())
    return sorted(found)


def folder_items(folder: Path) -> list[Item]:
    names = list_images(folder)
    if not names:
        raise FileNotFoundError(f"--images {folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return [Item(name, str(folder / name)) for name in names]


def dataset_items(args: argparse.Namespace) -> list[Item]:
    """The rows of the chosen splits (all by default, in the dataset's order)."""
    from datasets import Image

    from hf_reid.data import load_reid_dataset

    from ._common import layout_options

    splits = load_reid_dataset(
        args.layout, args.images, on_bad_image=args.on_bad_image, **layout_options(args.option)
    )
    chosen = list(dict.fromkeys(args.split)) if args.split else list(splits)
    wrong = [s for s in chosen if s not in splits]
    if wrong:
        raise ValueError(f"--split {wrong[0]}: {args.images} ({args.layout}) has splits {', '.join(splits)}")
    items = []
    for split in chosen:
        data = splits[split].cast_column("image", Image(decode=False))
        columns = data.select_columns(["image", "path", "pid", "camid"]).to_dict()
        for cell, path, pid, camid in zip(
            columns["image"], columns["path"], columns["pid"], columns["camid"]
        ):
            items.append(Item(path, cell, int(pid), int(camid), split))
    if not items:
        raise ValueError(f"{args.images} ({args.layout}): the chosen splits {chosen} are empty")
    return items


class _Images:
    """A map-style dataset of ``(index, image or None, error or None)``: decoding errors are
    returned, not raised, so that the main process names the file (or skips it)."""

    def __init__(self, items: list[Item]):
        self.sources = [item.source for item in items]

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> tuple[int, Any, str | None]:
        from hf_reid.data.collate import decode_image

        try:
            return index, decode_image(self.sources[index]), None
        except Exception as error:  # any unreadable file is reported with its name
            return index, None, f"{type(error).__name__}: {error}"


class _Collate:
    def __init__(self, transform: Any):
        self.transform = transform

    def __call__(self, rows: list[tuple[int, Any, str | None]]) -> dict[str, Any]:
        kept = [(index, image) for index, image, _ in rows if image is not None]
        return {
            "indices": [index for index, _ in kept],
            "pixel_values": self.transform([image for _, image in kept]) if kept else None,
            "bad": [(index, error) for index, image, error in rows if image is None],
        }


def _weights_digest(model: Any) -> str:
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()


def fingerprint(model: Any, processor: Any, items: list[Item], settings: dict[str, Any]) -> str:
    """What the chunks of an extraction depend on: weights, config, preprocessing, images, batching."""
    listing = hashlib.sha256("\n".join(f"{i.path}\t{i.pid}\t{i.camid}\t{i.split}" for i in items).encode())
    document = {
        "format": [FORMAT, FORMAT_VERSION],
        "config": model.config.to_json_string(),
        "weights": _weights_digest(model),
        "processor": processor.to_json_string() if hasattr(processor, "to_json_string") else repr(processor),
        "items": listing.hexdigest(),
        **settings,
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()


def _save_atomic(tensors: dict[str, Any], metadata: dict[str, Any], path: Path) -> None:
    """Write a safetensors file to a temporary name, then rename it into place."""
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(metadata, sort_keys=True)})
    os.replace(tmp, path)


def _read(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = json.loads((handle.metadata() or {}).get(METADATA_KEY, "{}"))
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    return tensors, metadata


def load_features(path: str | os.PathLike) -> dict[str, Any]:
    """A features file of ``hf-reid extract``: its tensors (``embeddings``; ``pids`` and ``camids``
    for datasets) and its metadata (``paths``, ``model``, ``dim``, ``skipped``...) in one dict."""
    tensors, metadata = _read(Path(path))
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path} is not an hf-reid extract features file (no {METADATA_KEY!r} metadata)")
    return {**metadata, **tensors}


def _chunk_path(parts: Path, index: int) -> Path:
    return parts / f"chunk-{index:05d}.safetensors"


def _chunk_done(parts: Path, index: int, key: str) -> bool:
    path = _chunk_path(parts, index)
    if not path.is_file():
        return False
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = json.loads((handle.metadata() or {}).get(METADATA_KEY, "{}"))
    except Exception:  # unreadable: extracted again
        return False
    return metadata.get("key") == key and metadata.get("chunk") == index


def _clear_parts(parts: Path) -> None:
    for path in [*parts.glob("chunk-*.safetensors"), *parts.glob(".chunk-*.tmp"), parts / MANIFEST]:
        path.unlink(missing_ok=True)


def _prepare_parts(parts: Path, manifest: dict[str, Any]) -> bool:
    """Make ``parts`` hold this extraction's manifest; ``True`` when chunks of it may be there."""
    for tmp in parts.glob(".chunk-*.tmp"):  # a write the kill interrupted
        tmp.unlink()
    path = parts / MANIFEST
    if path.is_file():
        try:
            if json.loads(path.read_text(encoding="utf-8")).get("key") == manifest["key"]:
                return True
        except ValueError:
            pass
        print(
            f"{parts} holds the chunks of another extraction (other model, images or settings): starting over.",
            flush=True,
        )
        _clear_parts(parts)
    elif parts.is_dir() and any(parts.glob("chunk-*.safetensors")):
        _clear_parts(parts)
    parts.mkdir(parents=True, exist_ok=True)
    tmp = parts / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return False


# ----------------------------------------------------------------------------------------- command
def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "extract",
        help="embed a folder of crops or a dataset into a features file (resumable)",
        description=textwrap.fill(
            "Embed every image of a folder (recursively, sorted by path) or of a dataset's splits "
            "(--layout) with MODEL's get_image_embeddings and write FEATURES.safetensors: embeddings "
            "(N, D), pids / camids for datasets, and the paths and settings as JSON metadata. Work is "
            "saved in chunks (FEATURES.parts/); after a kill the same command resumes.",
            width=90,
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL", help="hf_reid model folder or Hub id")
    parser.add_argument(
        "--images",
        required=True,
        metavar="DIR",
        help="a folder of person crops, or a dataset folder with --layout",
    )
    parser.add_argument(
        "--out", required=True, metavar="FEATURES.safetensors", help="the features file to write"
    )
    parser.add_argument(
        "--layout",
        default=None,
        metavar="NAME",
        help="read --images as a dataset of this layout (market1501, ...)",
    )
    parser.add_argument(
        "--split",
        action="append",
        default=None,
        metavar="SPLIT",
        help="with --layout: train, query, gallery (default: all); repeatable",
    )
    add_layout_option_argument(parser, help="a layout option; repeatable")
    parser.add_argument(
        "--chunk-batches",
        type=int,
        metavar="N",
        default=16,
        help="batches per saved chunk, the work a kill can lose (default: 16)",
    )
    add_on_bad_image_argument(
        parser, help="an unreadable image: stop naming it (default), or leave it out and report the count"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument(
        "--keep-parts", action="store_true", help="keep FEATURES.parts/ after assembling the file"
    )
    add_model_arguments(parser)
    parser.set_defaults(batch_size=64)
    return parser


def run(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from ._common import embedding_fn, image_transform, load_model, resolve_device, resolve_scenario

    out = Path(args.out)
    images = Path(args.images)
    if args.batch_size < 1 or args.chunk_batches < 1:
        raise ValueError("--batch-size and --chunk-batches must be >= 1")
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    if not images.is_dir():
        raise NotADirectoryError(f"--images {images}: no such folder")
    if args.layout is None and (args.split or args.option):
        raise ValueError("--split and --option need --layout (they read a dataset)")
    items = dataset_items(args) if args.layout else folder_items(images)

    device = resolve_device(args.device)
    model, processor = load_model(args.model, device)
    scenario = resolve_scenario(model, args.model, args.scenario, images.resolve())
    use_camids = args.layout is not None
    embed = embedding_fn(model, scenario, camera_ids=use_camids)
    camera_ids = (
        f"scenario {scenario}"
        if scenario is not None
        else "dataset camids"
        if use_camids and getattr(model.config, "use_sie", False)
        else "none"
    )

    num = len(items)
    chunk_size = args.batch_size * args.chunk_batches
    num_chunks = math.ceil(num / chunk_size)
    settings = {"batch_size": args.batch_size, "chunk_size": chunk_size, "camera_ids": camera_ids}
    key = fingerprint(model, processor, items, settings)
    parts = parts_folder(out)
    resumable = _prepare_parts(parts, {"key": key, "num_images": num, "num_chunks": num_chunks, **settings})
    todo = [c for c in range(num_chunks) if not (resumable and _chunk_done(parts, c, key))]
    if len(todo) < num_chunks:
        print(
            f"Resuming: {num_chunks - len(todo)} of {num_chunks} chunks already in {parts}; "
            f"extracting {len(todo)} more.",
            flush=True,
        )

    batches = [
        list(range(start, min(start + args.batch_size, (c + 1) * chunk_size, num)))
        for c in todo
        for start in range(c * chunk_size, min((c + 1) * chunk_size, num), args.batch_size)
    ]
    loader = DataLoader(
        _Images(items),
        batch_sampler=batches,
        collate_fn=_Collate(image_transform(processor)),
        num_workers=args.num_workers,
    )
    total_batches = math.ceil(num / args.batch_size)
    bar = tqdm(
        total=total_batches,
        initial=total_batches - len(batches),
        desc="Extracting",
        unit="batch",
        disable=args.no_progress,
    )
    pending: dict[str, list] = {"embeddings": [], "indices": [], "skipped": []}
    with torch.no_grad():
        for indices, batch in zip(batches, loader):
            chunk = indices[0] // chunk_size
            for index, error in batch["bad"]:
                where = images / items[index].path if args.layout is None else items[index].path
                if args.on_bad_image == "error":
                    raise ValueError(
                        f"cannot read image {where} ({error}); pass --on-bad-image skip to leave unreadable "
                        "images out"
                    )
                pending["skipped"].append([index, error])
            if batch["indices"]:
                camids = torch.tensor([items[i].camid for i in batch["indices"]]) if use_camids else None
                features = embed({"pixel_values": batch["pixel_values"], "camids": camids})
                pending["embeddings"].append(features.float().cpu())
                pending["indices"].extend(batch["indices"])
            bar.update(1)
            if indices[-1] == min((chunk + 1) * chunk_size, num) - 1:  # the chunk's last batch
                embeddings = torch.cat(pending["embeddings"]) if pending["embeddings"] else torch.zeros(0, 0)
                _save_atomic(
                    {"embeddings": embeddings.contiguous()},
                    {
                        "chunk": chunk,
                        "key": key,
                        "indices": pending["indices"],
                        "skipped": pending["skipped"],
                    },
                    _chunk_path(parts, chunk),
                )
                pending = {"embeddings": [], "indices": [], "skipped": []}
    bar.close()

    # Assemble the chunks into the features file.
    embeddings, kept, skipped = [], [], []
    for c in range(num_chunks):
        tensors, metadata = _read(_chunk_path(parts, c))
        if metadata.get("key") != key:
            raise RuntimeError(
                f"{_chunk_path(parts, c)} changed during the extraction; run the command again"
            )
        if tensors["embeddings"].numel():
            embeddings.append(tensors["embeddings"])
        kept.extend(metadata["indices"])
        skipped.extend(metadata["skipped"])
    if not kept:
        raise ValueError(f"no readable image in {images} ({len(skipped)} unreadable)")
    matrix = torch.cat(embeddings)
    tensors = {"embeddings": matrix.contiguous()}
    metadata: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "model": args.model,
        "model_type": model.config.model_type,
        "images": str(args.images),
        "num_images": len(kept),
        "dim": int(matrix.shape[1]),
        "normalized": bool(getattr(model.config, "feature_norm", False)),
        "camera_ids": camera_ids,
        "paths": [items[i].path for i in kept],
        "skipped": [{"path": items[i].path, "error": error} for i, error in skipped],
    }
    if args.layout:
        metadata.update(layout=args.layout, splits=[items[i].split for i in kept])
        tensors["pids"] = torch.tensor([items[i].pid for i in kept], dtype=torch.long)
        tensors["camids"] = torch.tensor([items[i].camid for i in kept], dtype=torch.long)
    out.parent.mkdir(parents=True, exist_ok=True)
    _save_atomic(tensors, metadata, out)
    if not args.keep_parts:
        _clear_parts(parts)
        with suppress(OSError):  # left alone when it holds files of someone else
            parts.rmdir()
    note = ""
    if skipped:
        names = ", ".join(m["path"] for m in metadata["skipped"][:5])
        note = f"; skipped {len(skipped)} unreadable image(s): {names}{', ...' if len(skipped) > 5 else ''}"
    print(f"Wrote {len(kept)} embeddings ({matrix.shape[1]}-d) of {args.model} to {out}{note}", flush=True)
    return 0
