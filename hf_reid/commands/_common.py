"""Options and helpers that several ``hf-reid`` sub-commands share: a command module imports them
from here rather than from another command.

Like the command modules' ``add_parser``, this module imports only the standard library at its
top (``hf-reid --help`` builds every parser without torch, transformers, datasets or gradio);
the helpers that need more import it when called.

* dataset options (``eval``, ``extract``): :func:`add_layout_option_argument` (``--option
  KEY=VALUE``, read by :func:`layout_options`), :func:`add_on_bad_image_argument`;
* Re-ID model loading and embedding (``eval``, ``extract``): :func:`add_model_arguments`,
  :func:`resolve_device`, :func:`load_model`, :func:`image_transform`, :func:`resolve_scenario`,
  :func:`embedding_fn`;
* search (``search``, ``demo``): :func:`add_search_arguments`, :func:`add_search_model_arguments`,
  :func:`check_search_arguments`;
* argument types: :func:`int_in_range`.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger("hf_reid.commands")


# ------------------------------------------------------------------------------------ argument types
def int_in_range(
    option: str, low: int, high: int | None = None, what: str | None = None
) -> Callable[[str], int]:
    """An argparse ``type`` reading an integer in ``low..high`` (no upper bound when ``high`` is
    ``None``); anything else is refused as "``option`` must be ``what``" (default: an integer in
    the range)."""
    what = what or (f"an integer >= {low}" if high is None else f"an integer in {low}..{high}")

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{option} must be {what}, got {text!r}")
        return value

    return parse


# ----------------------------------------------------------------------------------- dataset options
def key_value(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` of ``--option`` (the value is read as YAML when used: true, 3, [1, 2]...)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.replace("-", "_"), value


def layout_options(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """``--option`` pairs as typed layout options."""
    import yaml

    return {key: yaml.safe_load(value) if value else value for key, value in pairs}


def add_layout_option_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """``--option KEY=VALUE`` (repeatable; ``args.option`` is a list of :func:`key_value` pairs,
    typed by :func:`layout_options`)."""
    parser.add_argument(
        "--option", action="append", default=[], type=key_value, metavar="KEY=VALUE", help=help
    )


def add_on_bad_image_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """``--on-bad-image error|skip`` (default ``error``), the ``on_bad_image`` of
    :func:`hf_reid.data.load_reid_dataset`."""
    parser.add_argument("--on-bad-image", choices=("error", "skip"), default="error", help=help)


# --------------------------------------------------------------------------------- Re-ID model runs
def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of loading and running a Re-ID model (:func:`load_model`, :func:`resolve_device`,
    :func:`resolve_scenario`), shared by ``eval`` and ``extract``."""
    parser.add_argument(
        "--scenario",
        default=None,
        metavar="INDEX_OR_NAME",
        help=(
            "ITKM only: the scenario-embedding row (an index, or a training folder named in the model's "
            "config.yaml); default: the data folder's index there, else 0"
        ),
    )
    parser.add_argument(
        "--batch-size", type=int, default=128, metavar="N", help="images per forward (default: 128)"
    )
    parser.add_argument(
        "--num-workers", type=int, default=0, metavar="N", help="image-decoding processes (default: 0)"
    )
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: cuda when available"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def resolve_device(name: str) -> Any:
    """The ``torch.device`` of ``--device`` (:func:`add_model_arguments`: auto, cpu, cuda)."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device here")
    return torch.device(name)


def load_model(name: str, device: Any = None) -> tuple[Any, Any]:
    """An hf_reid Re-ID model (folder or Hub id; any method) in eval mode and its image processor
    (the model's own when the folder has none)."""
    from transformers import AutoImageProcessor, AutoModel

    from hf_reid.models import ReIDPreTrainedModel  # registers the hf_reid types with the Auto classes

    try:
        model = AutoModel.from_pretrained(name)
    except OSError as error:
        raise FileNotFoundError(f"cannot load the model {name!r}: {error}") from None
    if not isinstance(model, ReIDPreTrainedModel):
        raise ValueError(
            f"{name} is a {type(model).__name__} (model type {model.config.model_type!r}), not an hf_reid "
            "Re-ID model (clip_reid, retext, clip_fgdi, itkm)"
        )
    try:
        processor = AutoImageProcessor.from_pretrained(name)
    except (OSError, ValueError):
        processor = model.get_image_processor()
    if device is not None:
        model.to(device)
    return model.eval(), processor


def image_transform(processor: Any) -> Any:
    """The evaluation transform equal to the processor's output (resize, rescale, normalise)."""
    from hf_reid.data import ReidTestTransform, ReidTransformConfig

    return ReidTestTransform(ReidTransformConfig.from_image_processor(processor))


def resolve_scenario(
    model: Any, model_name: str, scenario: str | None, data_folder: Path | None
) -> int | None:
    """The ITKM scenario index the embeddings use (``None`` for other models; see the module doc)."""
    config = model.config
    if config.model_type != "itkm" or not getattr(config, "use_sie", False):
        if scenario is not None:
            logger.warning("--scenario %s ignored: %s has no scenario embedding.", scenario, model_name)
        return None
    num = int(config.num_cameras)
    run_file = Path(model_name) / "config.yaml"
    domains: list[str] = []
    if run_file.is_file():
        import yaml

        run = yaml.safe_load(run_file.read_text(encoding="utf-8")) or {}
        domains = [str(d) for d in (run.get("data") or {}).get("train_domains") or []]
    if scenario is not None:
        if scenario.lstrip("-").isdigit():
            index = int(scenario)
        elif scenario in domains:
            index = domains.index(scenario)
        else:
            raise ValueError(
                f"--scenario {scenario!r} is neither an index nor a training scenario of the model "
                f"({', '.join(domains) if domains else 'its folder has no config.yaml naming them'})"
            )
        if not 0 <= index < num:
            raise ValueError(f"--scenario {index}: the model has {num} scenarios (0..{num - 1})")
        return index
    if data_folder is not None and data_folder.name in domains:
        index = domains.index(data_folder.name)
        logger.info("ITKM scenario %d (%s, from the model's config.yaml).", index, data_folder.name)
        return index
    logger.warning(
        "ITKM scenario embedding: the data gives no scenario, so row 0 (%s) is used; pass --scenario.",
        domains[0] if domains else "the first training scenario",
    )
    return 0


def embedding_fn(model: Any, scenario: int | None, camera_ids: bool = True) -> Any:
    """``batch -> embeddings`` with ``model.get_image_embeddings``: the batch's ``camids`` for a
    CLIP-ReID model with SIE (when ``camera_ids``), the scenario index for ITKM, else no ids."""
    import torch

    use_sie = bool(getattr(model.config, "use_sie", False))

    def embed(batch: dict) -> torch.Tensor:
        pixels = batch["pixel_values"].to(model.device)
        ids = None
        if scenario is not None:
            ids = torch.full((pixels.shape[0],), scenario, dtype=torch.long, device=pixels.device)
        elif use_sie and camera_ids and batch.get("camids") is not None:
            ids = batch["camids"].to(pixels.device)
        return model.get_image_embeddings(pixels, ids)

    return embed


# ------------------------------------------------------------------------------------------- search
def add_search_arguments(parser: argparse.ArgumentParser, gallery_help: str) -> None:
    """The positional ``model`` and ``--gallery`` of ``search`` and ``demo``
    (:meth:`hf_reid.search.SearchModel.load` reads the model)."""
    parser.add_argument(
        "model", help="hf_reid model folder (a training run's output), a CLIP folder, or 'synthclip'"
    )
    parser.add_argument("--gallery", required=True, metavar="DIR_or_INDEX", help=gallery_help)


def add_search_model_arguments(parser: argparse.ArgumentParser, untrained_text_help: str) -> None:
    """The options of loading and running a search model (``search``, ``demo``):
    ``--allow-untrained-text``, ``--batch-size`` (default 64) and ``--device`` (a torch device,
    default cpu); :func:`check_search_arguments` checks them."""
    parser.add_argument("--allow-untrained-text", action="store_true", help=untrained_text_help)
    parser.add_argument("--batch-size", type=int, default=64, help="images embedded at once (default: 64)")
    parser.add_argument("--device", default=None, help="torch device (default: cpu)")


def check_search_arguments(args: argparse.Namespace) -> None:
    """``ValueError`` for a ``--top-k`` or ``--batch-size`` below 1."""
    if args.top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {args.top_k}.")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}.")
