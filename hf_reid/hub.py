"""Model cards and Hub publishing for trained hf_reid models.

A finished run folder holds what ``save_pretrained`` wrote (model, processor, tokenizer) plus
``eval_results.json``. :func:`write_model_card` renders the method's Jinja template from
``model_cards/`` into ``README.md`` with the evaluation numbers as ``model-index`` metadata, so
the Hub shows them on the model page; :func:`push_run_to_hub` uploads the folder.

A card names only repositories the user chose: the model's own (``model_id``, e.g. a recipe's
``--hub_model_id``; none for a local run) and, in the metadata, the Hub datasets given as
``datasets``. The data a run was trained on by layout name (``market1501``, ``synthpeds``; not Hub
ids) is listed in the card's text (``training_data``).

:func:`set_adapter_auto_mapping` makes a LoRA adapter folder load with
``peft.AutoPeftModel.from_pretrained`` (see its docstring).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

logger = logging.getLogger(__name__)

TEMPLATE_DIR = Path(__file__).resolve().parent / "model_cards"
"""Templates, one per method (``<method>.md``); a link to the repository's ``model_cards/``."""

METRIC_KEYS = {"mAP": "mAP", "rank-1": "Rank-1", "rank-5": "Rank-5", "rank-10": "Rank-10", "mINP": "mINP"}
"""Metric keys of ``RankResult.to_dict()`` and the names shown on the Hub."""


LOCAL_MODEL_PLACEHOLDER = "path/to/model_folder"
"""What a card's usage snippet loads from when the model has no Hub repository."""

PEFT_AUTO_MAPPING = {"base_model_class": "AutoModel", "parent_library": "transformers"}
"""The ``auto_mapping`` of an hf_reid LoRA adapter: ``peft.AutoPeftModel`` builds the base model
with ``transformers.AutoModel`` (see :func:`set_adapter_auto_mapping`)."""


@dataclass
class CardInfo:
    """What a model card says about a run, beyond the numbers."""

    method: str
    model_id: str | None = None
    """The model's Hub repository (``namespace/name``), or ``None``: the card then names no
    repository and its usage snippet loads from :data:`LOCAL_MODEL_PLACEHOLDER`."""
    base_model: str | None = None
    datasets: list[str] = field(default_factory=list)
    """Hub dataset ids for the card's metadata (the Hub links them): only real repositories."""
    license: str = "mit"
    tags: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    """Free template variables, e.g. the training config as YAML or a loss table."""
    training_data: list[str] = field(default_factory=list)
    """What the model was trained on, by name (dataset layouts; shown in the card's text only)."""
    name: str | None = None
    """The card's title when there is no ``model_id`` (default: the method)."""


def available_templates() -> list[str]:
    """Names of the methods with a model-card template."""
    return sorted(p.stem for p in TEMPLATE_DIR.glob("*.md"))


def _eval_results(results: Mapping[str, Mapping[str, float]]) -> list[EvalResult]:
    """``{"Market-1501": {"mAP": 0.89, "rank-1": 0.95}}`` -> model-index entries (in percent)."""
    entries = []
    for dataset_name, metrics in results.items():
        dataset_type = dataset_name.lower().replace(" ", "-")
        for key, value in metrics.items():
            if key not in METRIC_KEYS:
                continue
            entries.append(
                EvalResult(
                    task_type="image-retrieval",
                    task_name="Person re-identification",
                    dataset_type=dataset_type,
                    dataset_name=dataset_name,
                    metric_type=METRIC_KEYS[key],
                    metric_name=METRIC_KEYS[key],
                    metric_value=round(100.0 * float(value), 2),
                )
            )
    return entries


def render_model_card(info: CardInfo, results: Mapping[str, Mapping[str, float]]) -> ModelCard:
    """Render the method's template with ``results`` (fractions in [0, 1]) as model-index metadata.

    Raises:
        ValueError: if the method has no template (the message lists the ones that exist).
    """
    template = TEMPLATE_DIR / f"{info.method}.md"
    if not template.is_file():
        raise ValueError(
            f"No model-card template for method {info.method!r} in {TEMPLATE_DIR}; "
            f"available: {available_templates()}"
        )
    title = info.model_id or info.name or info.method
    card_data = ModelCardData(
        model_name=title.split("/")[-1],
        base_model=info.base_model,
        datasets=info.datasets or None,
        license=info.license,
        library_name="transformers",
        pipeline_tag="image-feature-extraction",
        tags=sorted({"person-reid", "re-identification", "clip", "hf_reid", info.method, *info.tags}),
        eval_results=_eval_results(results) or None,
    )
    table = [
        {"dataset": name, **{METRIC_KEYS[k]: 100.0 * float(v) for k, v in m.items() if k in METRIC_KEYS}}
        for name, m in results.items()
    ]
    return ModelCard.from_template(
        card_data,
        template_path=str(template),
        model_id=info.model_id,
        title=title,
        load_from=info.model_id or LOCAL_MODEL_PLACEHOLDER,
        training_data=info.training_data,
        base_model=info.base_model,
        results=table,
        metric_names=list(METRIC_KEYS.values()),
        **info.extra,
    )


def write_model_card(
    output_dir: str | Path, info: CardInfo, results: Mapping[str, Mapping[str, float]]
) -> Path:
    """Render the card and save it as ``output_dir/README.md``; returns the path."""
    path = Path(output_dir) / "README.md"
    render_model_card(info, results).save(path)
    logger.info("Model card written to %s", path)
    return path


def default_repo_id(name: str, token: str | None = None) -> str:
    """``<your user name>/<name>``: where a run is pushed without an explicit repository (asks the
    Hub who the token belongs to, so it needs the network and a token)."""
    return f"{HfApi(token=token).whoami()['name']}/{name}"


def set_adapter_auto_mapping(adapter_folder: str | os.PathLike) -> Path:
    """Make the LoRA adapter in ``adapter_folder`` load with ``peft.AutoPeftModel.from_pretrained``.

    peft records the base model's class as the module that defines it
    (``hf_reid.models.modeling_clip_reid``), and ``AutoPeftModel`` imports only modules of its
    allowlist (``transformers``, ``diffusers``, ...), and could not import hf_reid where it is not
    installed anyway. This rewrites ``auto_mapping`` in ``adapter_config.json`` to
    :data:`PEFT_AUTO_MAPPING`: ``AutoPeftModel`` then builds the base model with
    ``transformers.AutoModel.from_pretrained(base_model_name_or_path, **kwargs)``, which returns
    hf_reid's class where hf_reid is imported and, with ``trust_remote_code=True``, the code saved
    with the base model where it is not::

        import hf_reid  # or: AutoPeftModel.from_pretrained(folder, trust_remote_code=True)
        model = peft.AutoPeftModel.from_pretrained(folder)

    (An adapter written without it still loads where hf_reid is installed, with
    ``AutoPeftModel.from_pretrained(folder, import_allowlist=["hf_reid"])``.) Returns the path of
    ``adapter_config.json``.
    """
    path = Path(adapter_folder) / "adapter_config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{adapter_folder} has no adapter_config.json; is it a LoRA adapter folder?")
    config = json.loads(path.read_text(encoding="utf-8"))
    config["auto_mapping"] = dict(PEFT_AUTO_MAPPING)
    path.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
    return path


def push_run_to_hub(
    output_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload hf_reid model",
    ignore_patterns: list[str] | None = None,
) -> str:
    """Create ``repo_id`` if needed and upload the run folder (checkpoints excluded).

    A ``repo_id`` without a namespace is created under the token's user. Returns the commit URL.
    Tests patch ``HfApi.create_repo`` and ``HfApi.upload_folder``, since no Hub is reachable
    offline (``HF_HUB_OFFLINE=1`` makes the real calls fail at once).
    """
    output_dir = Path(output_dir)
    if not (output_dir / "config.json").is_file():
        raise FileNotFoundError(f"{output_dir} has no config.json: run save_pretrained before pushing")
    api = HfApi(token=token)
    created = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    repo_id = getattr(created, "repo_id", None) or repo_id
    commit = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(output_dir),
        commit_message=commit_message,
        ignore_patterns=ignore_patterns or ["checkpoints/*", "*.tmp", "logs/*"],
    )
    url = getattr(commit, "commit_url", None) or str(commit)
    logger.info("Pushed %s to %s", output_dir, url)
    return url


# ------------------------------------------------------------------ folders written earlier
# What ``hf-reid card`` / ``hf-reid push`` / ``hf-reid eval --update-card`` use: the card of a
# model folder rebuilt from its files, model-index entries, and pushes of adapters and datasets.

RUN_CARD_EXTRA = {
    "clip_reid": lambda run, config: {
        "stage1_enabled": bool(run.get("stage1", {}).get("enabled", True)),
        "lora": run.get("model", {}).get("lora") is not None,
    },
    "retext": lambda run, config: {"caption_mode": run.get("captions", {}).get("mode", "text")},
    "clip_fgdi": lambda run, config: {
        "domains": list(run.get("data", {}).get("train_domains", [])),
        "apn_sign": run.get("model", {}).get("apn_sign", config.get("apn_sign", "paper")),
        "domain_prompts_enabled": bool(run.get("domain_prompts", {}).get("enabled", True)),
    },
    "itkm": lambda run, config: {
        "scenarios": list(run.get("data", {}).get("train_domains", [])),
        "use_sie": bool(config.get("use_sie", True)),
    },
}
"""The template variables each recipe gives its card (``card_extra``), read back from a run folder's
``config.yaml`` (``run``) and ``config.json`` (``config``)."""


def read_results(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """``{evaluation name: {metric: value}}`` of an ``eval_results.json`` (a recipe's or
    ``hf-reid eval``'s, one evaluation per entry, or a single evaluation's file); the metrics only
    (float values), as recipes give them to the card."""
    from .report import result_rows

    data = json.loads(Path(path).read_text(encoding="utf-8"))
    rows = {}
    for name, metrics in result_rows(data):
        name = metrics.get("dataset", name) if name == "result" else name
        rows[str(name)] = {k: v for k, v in metrics.items() if isinstance(v, float)}
    return rows


def run_card_info(
    folder: str | os.PathLike, *, model_id: str | None = None, base_model: str | None = None
) -> tuple[CardInfo, dict[str, dict[str, float]]]:
    """The card of a saved model folder, from its files: the method from ``config.json``'s
    ``model_type``; from a recipe run's ``config.yaml`` the training config, the starting CLIP (a
    Hub id; SynthCLIP as ``hf-reid/synthclip``), the training layouts and the recipe's template
    variables; ``train_results.json``; the results of ``eval_results.json``."""
    import yaml

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json: not a saved model folder")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    method = config.get("model_type")
    if method not in available_templates() or method not in RUN_CARD_EXTRA:
        raise ValueError(
            f"{folder}: model type {method!r} has no hf_reid model-card template; "
            f"templates: {', '.join(sorted(RUN_CARD_EXTRA))}"
        )
    run_file = folder / "config.yaml"
    run = (yaml.safe_load(run_file.read_text(encoding="utf-8")) or {}) if run_file.is_file() else {}
    extra: dict = RUN_CARD_EXTRA[method](run, config) if run else {}
    if run:
        extra["training_config"] = run_file.read_text(encoding="utf-8")
    if (folder / "train_results.json").is_file():
        extra["train_results"] = json.loads((folder / "train_results.json").read_text(encoding="utf-8"))
    data = run.get("data", {})
    layouts = [data.get("layouts", {}).get(d, data.get("layout")) for d in data.get("train_domains", [])]
    if method == "retext" and run.get("captions", {}).get("layout"):
        layouts.append(run["captions"]["layout"])
    if base_model is None and run.get("model", {}).get("clip_name_or_path"):
        from .models.configuration_reid_base import portable_name_or_path
        from .synthclip import SYNTHCLIP_NAME
        from .training.recipe_run import SYNTHCLIP_HUB_ID

        clip = run["model"]["clip_name_or_path"]
        base_model = SYNTHCLIP_HUB_ID if clip == SYNTHCLIP_NAME else (portable_name_or_path(clip) or None)
    results = read_results(folder / "eval_results.json") if (folder / "eval_results.json").is_file() else {}
    info = CardInfo(
        method=method,
        model_id=model_id,
        name=folder.resolve().name,
        base_model=base_model,
        training_data=[layout for layout in dict.fromkeys(layouts) if layout],
        extra=extra,
    )
    return info, results


def write_run_card(
    folder: str | os.PathLike, *, model_id: str | None = None, base_model: str | None = None
) -> Path:
    """(Re)write ``folder/README.md`` from the folder's files (:func:`run_card_info`)."""
    info, results = run_card_info(folder, model_id=model_id, base_model=base_model)
    return write_model_card(folder, info, results)


def model_index(results: Mapping[str, Mapping[str, float]], model_name: str) -> list[dict]:
    """The ``model-index`` metadata of ``results`` (fractions; the Hub shows percent), as a card's
    YAML holds it."""
    from huggingface_hub.repocard_data import eval_results_to_model_index

    return eval_results_to_model_index(model_name, _eval_results(results))


def push_adapter_to_hub(
    adapter_folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload hf_reid LoRA adapter",
) -> str:
    """Upload a LoRA adapter folder (``lora_adapter/`` of a run) to the model repository
    ``repo_id``, its ``auto_mapping`` set first (:func:`set_adapter_auto_mapping`). Returns the
    commit URL. A base model recorded as a local path is named in a warning: the adapter loads
    elsewhere only when ``base_model_name_or_path`` is a Hub id."""
    folder = Path(adapter_folder)
    config_path = set_adapter_auto_mapping(folder)
    base = json.loads(config_path.read_text(encoding="utf-8")).get("base_model_name_or_path") or ""
    if os.path.isabs(base) or os.path.exists(base):
        logger.warning(
            "The adapter's base model is the local folder %s: push the base model too and set "
            "base_model_name_or_path in %s to its Hub id, or the adapter loads only here.",
            base,
            config_path,
        )
    api = HfApi(token=token)
    created = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    repo_id = getattr(created, "repo_id", None) or repo_id
    commit = api.upload_folder(
        repo_id=repo_id, folder_path=str(folder), commit_message=commit_message, ignore_patterns=["*.tmp"]
    )
    url = getattr(commit, "commit_url", None) or str(commit)
    logger.info("Pushed %s to %s", folder, url)
    return url


def push_dataset_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = True,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Upload a converted dataset (``hf-reid convert`` / ``dataset_scripts``) to the dataset
    repository ``repo_id``: a parquet folder (``data/*.parquet`` + ``README.md``) as it is, an Arrow
    ``save_to_disk`` folder as parquet with a fresh card (:func:`hf_reid.data.export.push_reid_dataset`).
    Private by default (most Re-ID datasets may not be redistributed). Returns the commit URL."""
    folder = Path(folder)
    if (folder / "dataset_dict.json").is_file():
        import datasets

        from .data.export import push_reid_dataset

        splits = datasets.load_from_disk(str(folder))
        return push_reid_dataset(splits, repo_id, private=private, token=token, commit_message=commit_message)
    if not any((folder / "data").glob("*.parquet")):
        raise FileNotFoundError(
            f"{folder} holds no converted dataset (data/*.parquet or a save_to_disk dataset_dict.json); "
            "write one with `hf-reid convert NAME --src RAW --out DIR`"
        )
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        repo_type="dataset",
        commit_message=commit_message or f"Upload {folder.name} converted with hf_reid",
        delete_patterns=["data/*.parquet"],
    )
    url = getattr(commit, "commit_url", None) or str(commit)
    logger.info("Pushed %s to %s", folder, url)
    return url
