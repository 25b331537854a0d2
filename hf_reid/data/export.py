"""Save or push a Re-ID ``DatasetDict`` with its images embedded and a dataset card.

What ``dataset_scripts/convert_<name>.py`` run (they are two lines each; the logic is here):

- :func:`save_reid_dataset` writes ``save_to_disk`` Arrow files (``format="arrow"``, reload with
  ``datasets.load_from_disk``) or a Hub-ready parquet folder (``format="parquet"``:
  ``data/<split>-XXXXX-of-YYYYY.parquet`` plus ``README.md``; reload with
  ``load_dataset(folder)`` or ``load_dataset("parquet", data_files=...)``). The builders store
  image *paths*; both formats embed the image bytes, so the result no longer needs the source.
- :func:`push_reid_dataset` writes the parquet folder to a temporary directory and uploads it
  as one commit (private by default: most Re-ID datasets may not be redistributed).
- :func:`reid_dataset_card` renders the card: description, split statistics, schema,
  evaluation protocol, license note and citation of the source dataset.
- :func:`run_converter` is the command line the converter scripts share; its layout options
  are generated from the layout's typed config, so every option has a flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import tempfile
import typing
from pathlib import Path
from typing import Any, Literal

import datasets
import numpy as np
from datasets.table import embed_table_storage
from huggingface_hub import DatasetCard, DatasetCardData, HfApi

from .layouts.base import BUILDER_CONFIG_FIELDS, ReidBuilder
from .loading import get_reid_layout, load_reid_dataset, reid_layout_names

logger = logging.getLogger(__name__)

DEFAULT_MAX_SHARD_BYTES = 500 * 1024 * 1024
PARQUET_DATA_DIR = "data"

CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ pretty_name }}

{{ description }}

Converted with [hf_reid](https://github.com/hf-reid/hf_reid) from the `{{ layout }}` layout{% if options %} (options: `{{ options }}`){% endif %}.

## Splits

| split | images | identities | cameras |
|---|---:|---:|---:|
{% for row in split_rows -%}
| {{ row.split }} | {{ row.images }} | {{ row.identities }} | {{ row.cameras }} |
{% endfor %}
## Columns

| column | meaning |
|---|---|
| `image` | the person crop (bytes embedded) |
| `pid` | identity as written by the source dataset (junk `-1` removed; `0` = distractor in Market-1501) |
| `camid` | 0-based camera index (`0` everywhere for data without cameras) |
| `path` | path of the source file relative to the dataset root |
| `domain` | source dataset or SynthPeds domain |
| `clothes_id` | outfit index within the identity (`-1` where unknown) |
| `modality` | `visible` or `infrared` |
| `captions` | free-text descriptions (empty where none) |

## Evaluation

{{ evaluation }}

## Usage

```python
{{ usage }}
```

## License

{{ license_text }}
{% if citation %}
## Citation

```bibtex
{{ citation }}
```
{% endif %}"""


# --- dataset card -------------------------------------------------------------------------------


def _split_rows(splits: datasets.DatasetDict) -> list[dict[str, Any]]:
    rows = []
    for name, dataset in splits.items():
        columns = dataset.select_columns(["pid", "camid"]).with_format("numpy")[:]
        rows.append(
            {
                "split": name,
                "images": len(dataset),
                "identities": len(np.unique(columns["pid"])),
                "cameras": len(np.unique(columns["camid"])),
            }
        )
    return rows


def _size_category(num_rows: int) -> str:
    for limit, label in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
    ):
        if num_rows < limit:
            return label
    return "1M<n<10M"


def _layout_name(splits: datasets.DatasetDict, layout: str | None) -> str:
    if layout is not None:
        return layout
    names = {dataset.info.dataset_name for dataset in splits.values()}
    if len(names) == 1 and next(iter(names)):
        return next(iter(names))
    raise ValueError("Cannot tell which layout these splits come from; pass layout=... (e.g. 'market1501').")


def reid_dataset_card(
    splits: datasets.DatasetDict,
    *,
    layout: str | None = None,
    pretty_name: str | None = None,
    repo_id: str | None = None,
    options: dict[str, Any] | None = None,
    parquet: bool = True,
) -> DatasetCard:
    """A dataset card for converted Re-ID splits.

    ``layout`` (default: read from the splits' info) selects the description, evaluation note,
    license note and citation of the registered builder. With ``parquet`` the card's YAML lists
    the ``data/<split>-*`` files as the ``default`` config, as the Hub expects.
    """
    layout = _layout_name(splits, layout)
    try:
        builder: type[ReidBuilder] | None = get_reid_layout(layout)
    except ValueError:
        builder = None
    info = next(iter(splits.values())).info
    description = (
        (builder.DESCRIPTION if builder else "") or info.description or f"Re-ID data in the {layout} layout."
    )
    citation = (builder.CITATION if builder else "") or info.citation or ""
    license_text = (builder.LICENSE if builder else "") or info.license or "See the source dataset's terms."
    evaluation = builder.EVALUATION if builder else ReidBuilder.EVALUATION
    pretty_name = pretty_name or (builder.PRETTY_NAME if builder else "") or layout
    total = sum(len(d) for d in splits.values())
    card_kwargs: dict[str, Any] = {}
    if parquet:
        card_kwargs["configs"] = [
            {
                "config_name": "default",
                "data_files": [{"split": name, "path": f"{PARQUET_DATA_DIR}/{name}-*"} for name in splits],
            }
        ]
    card_data = DatasetCardData(
        pretty_name=pretty_name,
        license="mit" if license_text.strip().lower() == "mit" else "other",
        task_categories=["image-feature-extraction"],
        size_categories=[_size_category(total)],
        tags=["person-reid", "re-identification", "hf_reid", layout],
        **card_kwargs,
    )
    if repo_id:
        usage = f'from datasets import load_dataset\n\nsplits = load_dataset("{repo_id}")'
    elif parquet:
        usage = 'from datasets import load_dataset\n\nsplits = load_dataset("path/to/this/folder")'
    else:
        usage = 'from datasets import load_from_disk\n\nsplits = load_from_disk("path/to/this/folder")'
    usage += '\nquery, gallery = splits["query"], splits["gallery"]' if "query" in splits else ""
    shown_options = ", ".join(f"{k}={v!r}" for k, v in sorted((options or {}).items()))
    return DatasetCard.from_template(
        card_data,
        template_str=CARD_TEMPLATE,
        pretty_name=pretty_name,
        description=description,
        layout=layout,
        options=shown_options,
        split_rows=_split_rows(splits),
        evaluation=evaluation,
        usage=usage,
        license_text=license_text,
        citation=citation.strip(),
    )


# --- saving and pushing -------------------------------------------------------------------------


def embed_images(dataset: datasets.Dataset) -> datasets.Dataset:
    """A copy of ``dataset`` whose ``image`` column holds the file bytes instead of paths."""
    return (
        dataset.with_format("arrow")
        .map(embed_table_storage, batched=True, desc="Embedding images")
        .with_format(None)
    )


def write_parquet_split(
    dataset: datasets.Dataset, out_dir: Path, split: str, *, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES
) -> list[Path]:
    """Write one split as ``data/<split>-XXXXX-of-YYYYY.parquet`` shards with embedded images."""
    embedded = embed_images(dataset)
    num_shards = max(1, math.ceil(embedded.data.nbytes / max_shard_bytes))
    data_dir = out_dir / PARQUET_DATA_DIR
    data_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(num_shards):
        path = data_dir / f"{split}-{index:05d}-of-{num_shards:05d}.parquet"
        embedded.shard(num_shards, index, contiguous=True).to_parquet(str(path))
        paths.append(path)
    return paths


def save_reid_dataset(
    splits: datasets.DatasetDict,
    out_dir: str | os.PathLike,
    *,
    format: Literal["arrow", "parquet"] = "arrow",
    card: DatasetCard | None = None,
    layout: str | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> Path:
    """Write ``splits`` with embedded images and a ``README.md`` card to ``out_dir``.

    ``format="arrow"``: ``DatasetDict.save_to_disk`` (reload with ``datasets.load_from_disk``).
    ``format="parquet"``: a folder laid out like a Hub dataset repository.
    """
    out = Path(out_dir)
    if format not in ("arrow", "parquet"):
        raise ValueError(f"save_reid_dataset: format must be 'arrow' or 'parquet', got {format!r}.")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"save_reid_dataset: {out} exists and is not empty; choose a new folder.")
    card = card or reid_dataset_card(splits, layout=layout, parquet=format == "parquet")
    if format == "arrow":
        splits.save_to_disk(str(out), max_shard_size=max_shard_bytes)
    else:
        out.mkdir(parents=True, exist_ok=True)
        for split, dataset in splits.items():
            write_parquet_split(dataset, out, split, max_shard_bytes=max_shard_bytes)
    card.save(str(out / "README.md"))
    logger.info("Saved %s (%s) to %s.", ", ".join(f"{k}: {len(v)}" for k, v in splits.items()), format, out)
    return out


def push_reid_dataset(
    splits: datasets.DatasetDict,
    repo_id: str,
    *,
    layout: str | None = None,
    card: DatasetCard | None = None,
    private: bool = True,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Upload ``splits`` to the Hub dataset repository ``repo_id`` as parquet with embedded images.

    One commit holds the card and every shard and replaces older shards under ``data/``.
    Private by default: check the source dataset's license before making it public.
    Returns the commit URL.
    """
    layout = _layout_name(splits, layout)
    card = card or reid_dataset_card(splits, layout=layout, repo_id=repo_id, parquet=True)
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hf_reid_push_") as tmp:
        save_reid_dataset(splits, Path(tmp) / "repo", format="parquet", card=card)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(Path(tmp) / "repo"),
            repo_type="dataset",
            revision=revision,
            commit_message=commit_message or f"Upload {layout} converted with hf_reid",
            delete_patterns=[f"{PARQUET_DATA_DIR}/*.parquet"],
        )
    url = getattr(commit, "commit_url", None) or str(commit)
    logger.info("Pushed %s to %s.", layout, url)
    return url


# --- the converter command line -----------------------------------------------------------------


def _add_option_argument(parser: argparse.ArgumentParser, field: dataclasses.Field, hint: Any) -> None:
    flag = "--" + field.name.replace("_", "-")
    default = field.default if field.default is not dataclasses.MISSING else None
    args = typing.get_args(hint)
    base = (
        [a for a in args if a is not type(None)]
        if args and typing.get_origin(hint) is not Literal
        else [hint]
    )
    kind = base[0] if len(base) == 1 else str
    help_text = f"layout option {field.name} (default: {default!r}); see docs/DATASETS.md"
    if typing.get_origin(kind) is Literal:
        parser.add_argument(
            flag, dest=field.name, choices=list(typing.get_args(kind)), default=default, help=help_text
        )
    elif kind is bool:
        parser.add_argument(
            flag, dest=field.name, action=argparse.BooleanOptionalAction, default=default, help=help_text
        )
    elif kind in (int, float):
        parser.add_argument(flag, dest=field.name, type=kind, default=default, help=help_text)
    else:
        parser.add_argument(flag, dest=field.name, default=default, help=help_text)


SHARED_OPTIONS = {"on_bad_image"}
"""Config fields the converter exposes through its own flags."""


def converter_parser(layout: str, description: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of ``dataset_scripts/convert_<layout>.py``."""
    builder = get_reid_layout(layout)
    parser = argparse.ArgumentParser(
        description=description or f"Convert a {layout} dataset folder to a Hugging Face dataset.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("data_dir", help="the dataset folder")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", help="write the converted dataset to this (new) folder")
    target.add_argument("--push-to-hub", metavar="REPO_ID", help="upload to this Hub dataset repository")
    parser.add_argument(
        "--format",
        choices=["arrow", "parquet"],
        default="arrow",
        help="--out format: arrow (save_to_disk) or parquet (a Hub-ready folder); pushes are parquet",
    )
    parser.add_argument(
        "--public", action="store_true", help="make the Hub repository public (default: private)"
    )
    parser.add_argument("--cache-dir", help="datasets cache folder for the intermediate Arrow files")
    parser.add_argument("--on-bad-image", choices=["error", "skip"], default="error")
    config_class = builder.BUILDER_CONFIG_CLASS
    hints = typing.get_type_hints(config_class)
    options = parser.add_argument_group(f"{layout} options")
    for field in dataclasses.fields(config_class):
        if field.name in BUILDER_CONFIG_FIELDS or field.name in SHARED_OPTIONS:
            continue
        _add_option_argument(options, field, hints.get(field.name, str))
    return parser


def run_converter(layout: str, argv: list[str] | None = None, *, description: str | None = None) -> str:
    """Parse ``argv``, read the dataset with ``load_reid_dataset`` and save or push it.

    Returns the output folder or the commit URL.
    """
    if layout not in reid_layout_names():
        raise ValueError(f"Unknown Re-ID layout {layout!r}. Valid names: {', '.join(reid_layout_names())}.")
    parser = converter_parser(layout, description)
    args = parser.parse_args(argv)
    config_class = get_reid_layout(layout).BUILDER_CONFIG_CLASS
    defaults = {f.name: f.default for f in dataclasses.fields(config_class)}
    options = {
        name: getattr(args, name)
        for name in defaults
        if name not in BUILDER_CONFIG_FIELDS
        and name not in SHARED_OPTIONS
        and hasattr(args, name)
        and getattr(args, name) != defaults[name]
    }
    splits = load_reid_dataset(
        layout, args.data_dir, cache_dir=args.cache_dir, on_bad_image=args.on_bad_image, **options
    )
    if args.push_to_hub:
        card = reid_dataset_card(
            splits, layout=layout, repo_id=args.push_to_hub, options=options, parquet=True
        )
        return push_reid_dataset(splits, args.push_to_hub, layout=layout, card=card, private=not args.public)
    card = reid_dataset_card(splits, layout=layout, options=options, parquet=args.format == "parquet")
    return str(save_reid_dataset(splits, args.out, format=args.format, card=card))
