"""Model cards and Hub publishing for trained hf_reid models.

A finished run folder holds what ``save_pretrained`` wrote (model, processor, tokenizer) plus
``eval_results.json``. :func:`write_model_card` renders the method's Jinja template from
``model_cards/`` into ``README.md`` with the evaluation numbers as ``model-index`` metadata, so
the Hub shows them on the model page; :func:`push_run_to_hub` uploads the folder.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

logger = logging.getLogger(__name__)

TEMPLATE_DIR = Path(__file__).resolve().parent / "model_cards"
"""Templates, one per method (``<method>.md``); a link to the repository's ``model_cards/``."""

METRIC_KEYS = {"mAP": "mAP", "rank-1": "Rank-1", "rank-5": "Rank-5", "rank-10": "Rank-10", "mINP": "mINP"}
"""Metric keys of ``RankResult.to_dict()`` and the names shown on the Hub."""


@dataclass
class CardInfo:
    """What a model card says about a run, beyond the numbers."""

    method: str
    model_id: str
    base_model: str | None = None
    datasets: list[str] = field(default_factory=list)
    license: str = "mit"
    tags: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    """Free template variables, e.g. the training config as YAML or a loss table."""


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
    card_data = ModelCardData(
        model_name=info.model_id.split("/")[-1],
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

    Returns the commit URL. Tests patch ``HfApi.create_repo`` and ``HfApi.upload_folder``, since
    no Hub is reachable offline (``HF_HUB_OFFLINE=1`` makes the real calls fail at once).
    """
    output_dir = Path(output_dir)
    if not (output_dir / "config.json").is_file():
        raise FileNotFoundError(f"{output_dir} has no config.json: run save_pretrained before pushing")
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    commit = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(output_dir),
        commit_message=commit_message,
        ignore_patterns=ignore_patterns or ["checkpoints/*", "*.tmp", "logs/*"],
    )
    url = getattr(commit, "commit_url", None) or str(commit)
    logger.info("Pushed %s to %s", output_dir, url)
    return url
