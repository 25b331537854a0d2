"""ITKM (Pang et al., AAAI 2026): one Re-ID model trained without identity labels on several
scenarios at once — low resolution, clothes change, visible-infrared — from CLIP.

    accelerate launch recipes/itkm.py           # the SynthPeds scenarios + SynthCLIP, runs/itkm
    accelerate launch recipes/itkm.py --config recipes/configs/itkm_real.yaml --output_dir runs/itkm

The same script runs under ``python``, ``accelerate launch`` on one CPU and on several GPUs.
Without ``--config`` it trains on its embedded default, ``configs/itkm_synthpeds.yaml``. Only the
paper's abstract could be read: docs/METHODS.md §3.3 and docs/ITKM.md give our reconstruction.

1. Data: the training splits of every scenario (each training folder is a scenario, its index
   the ``source`` column) WITHOUT their identity labels: ``pid``, ``label`` and ``clothes_id`` are
   removed before anything trains; the true identities are kept aside only to log how good the
   pseudo-labels are (NMI, ARI), never to train.
2. Model: ``ITKMModel.from_clip_pretrained``: CLIP-ReID with a scenario embedding (SIE indexed by
   scenario) and prompts per pseudo-label.
3. Stage I (image encoder + scenario embedding): at every epoch start the training images are
   embedded and clustered per scenario — and per modality in visible-infrared — with the
   k-reciprocal Jaccard distance and DBSCAN; outliers sit the epoch out; the cluster memory is
   reset to the centroids; batches are P clusters x K images; loss: cluster-memory contrast.
4. Stage II (prompts): one set of prompt tokens per pseudo-label, on cached image features:
   CLIP-ReID's ``L_i2t + L_t2i`` plus the multi-scenario separation hinge between text features
   of different scenarios.
5. Stage III (image encoder with text): re-clustering every epoch, then heterogeneous matching —
   cluster level (Hungarian on centroid similarity across modality / resolution / camera groups)
   and instance level (mutual nearest neighbours) — and the dynamic text update (the text feature
   of each new cluster from its majority-matched old one, moved towards the new centroid); loss:
   cluster memory + image-to-text CE against the text features of the image's scenario.
6. Evaluation of every scenario under its protocol (SYSU-MM01 all/indoor search with 10 gallery
   draws, LTCC standard and clothes-changing, MLR-CUHK03 low-resolution queries), the
   pseudo-label quality per epoch as ``pseudo_labels.json`` / ``pseudo_labels.png``, save, card.

Every component has a switch (``model.use_sie``, ``model.separation_loss_weight``,
``matching.cluster_level``, ``matching.instance_level``, ``matching.text_update``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader

from hf_reid.data import ReidCollator
from hf_reid.models import DEFAULT_PROMPT_TEMPLATE, ITKMConfig, ITKMModel
from hf_reid.synthclip import SYNTHCLIP_NAME, resolve_clip_path
from hf_reid.tokenization import load_tokenizer
from hf_reid.training import (
    FeatureDataset,
    RecipeConfig,
    RecipeRun,
    build_optimizer,
    build_scheduler,
    extract_features,
    model_config_kwargs,
    recipe_cli,
)
from hf_reid.training.cluster_memory import ClusterMemory
from hf_reid.training.heterogeneous import (
    compact_labels,
    match_clusters,
    match_instances,
    update_text_features,
)
from hf_reid.training.pseudo_labels import assign_pseudo_labels, pseudo_label_quality
from hf_reid.training.reid_data import MetadataCollator

logger = logging.getLogger("hf_reid.recipes.itkm")

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "itkm_synthpeds.yaml"
"""The embedded default: the SynthPeds scenarios (generated on first use) and SynthCLIP."""
STAGES = ("adapt", "prompts", "text_guided")
ROW = {"rows": "row"}
"""Batches carry their rows' indices, to look the pseudo-labels up."""
HIDDEN_COLUMNS = ("pid", "label", "clothes_id")
"""Identity columns removed from the training data: an unsupervised method never reads them."""
MODALITY_SCENARIOS = ("sysu_mm01",)
"""Layouts whose heterogeneous groups are modalities (visible / infrared); in the others the
groups are cameras: MLR-CUHK03's low-resolution camera, and LTCC's cameras as the proxy for
clothes, which unsupervised training cannot know."""


# ------------------------------------------------------------------------------------------------
# Config
# ------------------------------------------------------------------------------------------------
@dataclass
class ModelArgs:
    """The CLIP to start from and the ``ITKMConfig`` fields (see its docstring)."""

    clip_name_or_path: str = SYNTHCLIP_NAME
    image_size: tuple[int, int] = (256, 128)
    use_sie: bool = True
    """The scenario embedding (``false``: the ablation without it)."""
    sie_coe: float = 1.0
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    num_prompt_tokens: int = 4
    feature_norm: bool = True
    memory_temperature: float = 0.05
    memory_momentum: float = 0.1
    memory_loss_weight: float = 1.0
    i2t_loss_weight: float = 1.0
    text_temperature: float = 0.05
    separation_margin: float = 0.1
    separation_loss_weight: float = 1.0
    """``0``: the ablation without the multi-scenario separation loss."""


@dataclass
class ClusterArgs:
    """k-reciprocal Jaccard distance + DBSCAN, every scenario on its own."""

    k1: int = 30
    k2: int = 6
    eps: float = 0.6
    min_samples: int = 4
    per_modality: bool = True
    """Cluster the visible and the infrared images of a visible-infrared scenario apart."""


@dataclass
class ImageStageArgs:
    """An image-encoder stage (I or III): Adam, warm-up + cosine, stepped per epoch."""

    epochs: int = 20
    lr: float = 5e-6
    weight_decay: float = 5e-4
    warmup_epochs: int = 2
    warmup_factor: float = 0.1
    min_lr: float = 1e-7


@dataclass
class PromptStageArgs:
    """Stage II on cached image features (CLIP-ReID's stage-1 schedule)."""

    epochs: int = 60
    batch_size: int = 64
    lr: float = 3.5e-4
    weight_decay: float = 1e-4
    warmup_epochs: int = 5
    warmup_init_lr: float = 1e-5
    min_lr: float = 1e-6


@dataclass
class MatchingArgs:
    """Stage III's heterogeneous matching and dynamic text update."""

    cluster_level: bool = True
    cluster_threshold: float = 0.7
    """Cosine similarity of two paired centroids above which their clusters become one."""
    instance_level: bool = True
    instance_threshold: float = 0.7
    text_update: Literal["ema", "static"] = "ema"
    """``ema``: dynamic update towards the new centroids; ``static``: the ablation without it."""
    text_momentum: float = 0.9


@dataclass
class ITKMRecipeConfig(RecipeConfig):
    """An ITKM run: the shared sections (seed, data, train, eval), the model, the clustering,
    the three stages and the matching."""

    model: ModelArgs = field(default_factory=ModelArgs)
    cluster: ClusterArgs = field(default_factory=ClusterArgs)
    stage1: ImageStageArgs = field(default_factory=ImageStageArgs)
    stage2: PromptStageArgs = field(default_factory=PromptStageArgs)
    stage3: ImageStageArgs = field(default_factory=ImageStageArgs)
    matching: MatchingArgs = field(default_factory=MatchingArgs)


# ------------------------------------------------------------------------------------------------
# Data without identities
# ------------------------------------------------------------------------------------------------
def hide_identities(train: Any) -> tuple[Any, np.ndarray]:
    """The training rows without identity columns (a ``row`` index added), and the true
    identities kept aside for the pseudo-label quality log (scenario-qualified, as pids repeat)."""
    if "source" not in train.column_names:  # one training folder: one scenario
        train = train.add_column("source", [0] * len(train))
    true_ids = np.asarray(train["source"], dtype=np.int64) * 1_000_000 + np.asarray(
        train["pid"], dtype=np.int64
    )
    rows = train.remove_columns([c for c in HIDDEN_COLUMNS if c in train.column_names])
    return rows.add_column("row", list(range(len(rows)))), true_ids


# ------------------------------------------------------------------------------------------------
# Recipe state: pseudo-labels, cluster memory, text features, quality log
# ------------------------------------------------------------------------------------------------
class ITKMState:
    """Everything ITKM re-makes during training, checkpointed with the model. Restoring it also
    restores what the PK sampler draws from."""

    def __init__(self, num_samples: int, memory_momentum: float, sampler: Any):
        self.labels = torch.full((num_samples,), -1, dtype=torch.long)
        self.memory = ClusterMemory(memory_momentum)
        self.text_features = torch.empty(0, 0)
        self.history: list[dict[str, Any]] = []
        self.sampler = sampler

    def set_labels(self, labels: np.ndarray) -> None:
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.sampler.set_labels(self.labels)

    def state_dict(self) -> dict[str, Any]:
        return {
            "labels": self.labels.clone(),
            "memory": self.memory.state_dict(),
            "text_features": self.text_features.clone(),
            "history": self.history,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.memory.load_state_dict(state["memory"])
        self.text_features = state["text_features"].clone()
        self.history = list(state["history"])
        if bool((state["labels"] >= 0).any()):
            self.set_labels(state["labels"].numpy())


# ------------------------------------------------------------------------------------------------
# Run
# ------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the recipe; returns ``{evaluation name: metrics}`` (the content of ``eval_results.json``)."""
    run = RecipeRun.start(
        ITKMRecipeConfig, argv, method="itkm", default_config=DEFAULT_CONFIG, description=__doc__
    )
    cfg, accelerator = run.cfg, run.accelerator

    # 1. Data, without identities -----------------------------------------------------------------
    data = run.load_data()
    train, true_ids = hide_identities(data.train)
    scenarios = np.asarray(train["source"], dtype=np.int64)
    layouts = [cfg.data.layouts.get(d, cfg.data.layout) for d in cfg.data.train_domains]
    by_modality = np.array([layout in MODALITY_SCENARIOS for layout in layouts])[scenarios]
    groups = np.where(by_modality, np.asarray(train["modality"]), np.asarray(train["camid"]))
    cluster_groups = scenarios * 2 + (groups if cfg.cluster.per_modality else 0) * by_modality

    # 2. Model, image processor, tokenizer ---------------------------------------------------------
    clip_path = resolve_clip_path(cfg.model.clip_name_or_path)
    tokenizer = load_tokenizer(clip_path)
    model = ITKMModel.from_clip_pretrained(
        clip_path,
        num_classes=1,  # pseudo-labels: resized once the clusters are known
        tokenizer=tokenizer,
        num_cameras=len(cfg.data.train_domains),
        **model_config_kwargs(cfg.model, ITKMConfig),
    )
    processor, train_transform, test_transform = run.image_transforms(model.config.image_size)
    model.set_trainable("image")
    model = accelerator.prepare(model)
    unwrapped: ITKMModel = accelerator.unwrap_model(model)
    use_sie = unwrapped.config.use_sie

    train_loader = run.pk_loader(
        train,
        MetadataCollator(ReidCollator(train_transform, columns=["sources"], seed=cfg.seed), ROW),
        labels=np.arange(len(train)) // cfg.data.k,  # placeholder until the first clustering
    )
    sampler = train_loader.sampler
    state = ITKMState(len(train), cfg.model.memory_momentum, sampler)
    runner = run.stage_runner(STAGES, recipe_state={"itkm": state})
    embed_loader = accelerator.prepare(
        DataLoader(
            train,
            batch_size=cfg.data.eval_batch_size,
            collate_fn=MetadataCollator(ReidCollator(test_transform, columns=["sources"]), ROW),
            num_workers=cfg.data.num_workers,
        )
    )

    def embed_training_images() -> torch.Tensor:
        """``xproj`` of every training image (test transform), in row order."""
        out = extract_features(
            lambda b: unwrapped.get_image_features(b["pixel_values"], b["sources"] if use_sie else None),
            embed_loader,
            accelerator,
            model=unwrapped,
            metadata_keys=["rows"],
            progress_bar=False,
        )
        return out["features"][torch.argsort(out["rows"])]

    def recluster(trainer_state, matching: bool) -> torch.Tensor:
        """Pseudo-labels for the epoch (per scenario / modality), heterogeneous matching in stage
        III, the memory reset, the quality logged; returns the features it clustered."""
        features = embed_training_images()
        labels, _ = assign_pseudo_labels(
            features,
            cluster_groups,
            k1=cfg.cluster.k1,
            k2=cfg.cluster.k2,
            eps=cfg.cluster.eps,
            min_samples=cfg.cluster.min_samples,
        )
        entry: dict[str, Any] = {"stage": trainer_state.stage, "epoch": trainer_state.epoch}
        if matching and cfg.matching.cluster_level:
            labels, entry["merged_clusters"] = match_clusters(
                features, labels, scenarios, groups, cfg.matching.cluster_threshold
            )
        if matching and cfg.matching.instance_level:
            labels, entry["joined_outliers"] = match_instances(
                features, labels, scenarios, groups, cfg.matching.instance_threshold
            )
        labels = compact_labels(labels)
        quality = pseudo_label_quality(labels, true_ids, scenarios)  # logged only, never trained on
        entry["scenarios"] = {cfg.data.train_domains[s]: q for s, q in quality.items()}
        state.history.append(entry)
        logger.info(
            "[%s] epoch %d pseudo-labels: %s",
            trainer_state.stage,
            trainer_state.epoch + 1,
            "; ".join(
                f"{name}: {q['num_clusters']} clusters, {100 * q['outlier_share']:.0f}% outliers, "
                f"NMI {q['nmi']:.3f}, ARI {q['ari']:.3f}"
                for name, q in entry["scenarios"].items()
            ),
        )
        previous = state.labels.numpy()
        state.set_labels(labels)
        state.memory.reset(features, state.labels, torch.as_tensor(scenarios))
        if matching and state.text_features.numel():
            state.text_features, matched = update_text_features(
                state.text_features,
                previous,
                labels,
                features,
                cfg.matching.text_update,
                cfg.matching.text_momentum,
            )
            entry["text_matched_share"] = matched
        return features

    pending: list[tuple[torch.Tensor, torch.Tensor]] = []

    def image_loss(with_text: bool) -> Callable[[dict], tuple]:
        def compute_loss(batch: dict) -> tuple[torch.Tensor, dict]:
            labels = state.labels[batch["rows"].cpu()].to(accelerator.device)
            memory_scenarios = state.memory.scenarios.to(accelerator.device)
            out = model(
                pixel_values=batch["pixel_values"],
                camids=batch["sources"] if use_sie else None,
                scenarios=batch["sources"],  # an image competes only with its own scenario's clusters
                labels=labels,
                memory=state.memory.features.to(accelerator.device),
                memory_scenarios=memory_scenarios,
                text_features=state.text_features.to(accelerator.device) if with_text else None,
                text_scenarios=memory_scenarios,
            )
            pending.append((out.image_features.detach(), labels))
            logs = {"memory": out.memory_loss.detach()}
            if out.i2t_loss is not None:
                logs["i2t"] = out.i2t_loss.detach()
            return out.loss, logs

        return compute_loss

    def update_memory(trainer_state) -> None:
        """After each optimizer step: the memory entries of the step's clusters move towards the
        step's features (gathered from every process)."""
        for features, labels in pending:
            state.memory.update(accelerator.gather(features), accelerator.gather(labels))
        pending.clear()

    def image_stage(
        name: str, args: ImageStageArgs, matching: bool, with_text: bool, optimizer=None, scheduler=None
    ):
        if optimizer is None:
            optimizer = build_optimizer(
                unwrapped.named_parameters(), "adam", lr=args.lr, weight_decay=args.weight_decay
            )
            scheduler = build_scheduler(
                optimizer,
                "cosine",
                total=max(1, args.epochs),
                warmup=args.warmup_epochs,
                warmup_factor=args.warmup_factor,
                min_lr=args.min_lr,
                start_index=1,
            )
            optimizer = accelerator.prepare(optimizer)
        runner.train_stage(
            name,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            dataloader=prepared_loader,
            compute_loss=image_loss(with_text),
            epochs=args.epochs,
            on_epoch_start=lambda s: recluster(s, matching),
            on_optimizer_step=update_memory,
        )

    prepared_loader = accelerator.prepare(train_loader)

    # 3. Stage I: image encoder + scenario embedding, re-clustering every epoch -------------------
    with run.timed("stage1"):
        image_stage("adapt", cfg.stage1, matching=False, with_text=False)

    # 4. Stage II: prompts per pseudo-label, on cached features -----------------------------------
    with run.timed("stage2"):
        features = recluster(SimpleNamespace(stage="prompts", epoch=0), matching=False)  # adapted encoder
        clustered = state.labels >= 0
        unwrapped.resize_identities(int(state.labels.max()) + 1)
        unwrapped.set_trainable("prompts")
        label_scenarios = state.memory.scenarios.to(accelerator.device)
        prompt_loader = DataLoader(
            FeatureDataset({"features": features[clustered], "labels": state.labels[clustered]}),
            batch_size=cfg.stage2.batch_size,
            shuffle=True,
        )

        def prompt_loss(batch: dict) -> tuple[torch.Tensor, dict]:
            labels = batch["labels"].to(accelerator.device)
            out = unwrapped.prompt_loss(batch["features"].to(accelerator.device), labels)
            separation = unwrapped.separation_loss(out.text_features, label_scenarios[labels])
            loss = out.loss + unwrapped.config.separation_loss_weight * separation
            return loss, {
                "i2t": out.i2t_loss.detach(),
                "t2i": out.t2i_loss.detach(),
                "separation": separation.detach(),
            }

        optimizer2 = build_optimizer(
            unwrapped.named_parameters(), "adam", lr=cfg.stage2.lr, weight_decay=cfg.stage2.weight_decay
        )
        scheduler2 = build_scheduler(
            optimizer2,
            "cosine",
            total=max(1, cfg.stage2.epochs),
            warmup=cfg.stage2.warmup_epochs,
            warmup_init_lr=cfg.stage2.warmup_init_lr,
            min_lr=cfg.stage2.min_lr,
            start_index=1,
        )
        runner.train_stage(
            "prompts",
            model=unwrapped,
            optimizer=accelerator.prepare(optimizer2),
            scheduler=scheduler2,
            dataloader=prompt_loader,
            compute_loss=prompt_loss,
            epochs=cfg.stage2.epochs,
        )
        state.text_features = F.normalize(unwrapped.compute_text_features().detach().float().cpu(), dim=1)

    # 5. Stage III: image encoder with text, heterogeneous matching, dynamic text update ----------
    with run.timed("stage3"):
        unwrapped.set_trainable("image")
        image_stage("text_guided", cfg.stage3, matching=True, with_text=True)

    # 6. Save, evaluate every scenario under its protocol, results and model card ------------------
    run.save_model(
        unwrapped,
        processor,
        tokenizer,
        datasets=[cfg.data.layouts.get(d, cfg.data.layout) for d in cfg.data.train_domains],
        card_extra={"scenarios": list(cfg.data.train_domains), "use_sie": use_sie},
    )
    save_label_quality(state.history, run.output_dir, accelerator.is_main_process)
    results: dict[str, Any] = {}
    for eval_set in data.eval_sets:
        folder = eval_set.image_root.name
        scenario = cfg.data.train_domains.index(folder) if folder in cfg.data.train_domains else 0
        ids = torch.tensor([scenario])

        def embed(batch: dict, ids: torch.Tensor = ids) -> torch.Tensor:
            camids = (
                ids.expand(batch["pixel_values"].shape[0]).to(batch["pixel_values"].device)
                if use_sie
                else None
            )
            return unwrapped.get_image_embeddings(batch["pixel_values"], camids)

        results.update(
            run.evaluate(
                [eval_set], embed, model=unwrapped, transform=test_transform, normalize=cfg.model.feature_norm
            )
        )
    final = state.history[-1]["scenarios"] if state.history else {}
    run.finish(
        results,
        train_results={
            "num_train_images": len(train),
            "scenarios": list(cfg.data.train_domains),
            "final_pseudo_labels": final,
            "num_pseudo_labels": int(state.labels.max()) + 1,
        },
    )
    return results


def save_label_quality(history: list[dict[str, Any]], output_dir: Path, is_main: bool) -> None:
    """``pseudo_labels.json`` (every re-clustering: clusters, outliers, NMI, ARI per scenario) and
    ``pseudo_labels.png`` (NMI, ARI and cluster count per scenario over the re-clusterings)."""
    if not is_main or not history:
        return
    (output_dir / "pseudo_labels.json").write_text(json.dumps(history, indent=1) + "\n", encoding="utf-8")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    steps = range(1, len(history) + 1)
    for name in history[0]["scenarios"]:
        for axis, key in zip(axes, ("nmi", "ari", "num_clusters"), strict=True):
            axis.plot(steps, [h["scenarios"][name][key] for h in history], marker="o", label=name)
    for axis, title in zip(
        axes, ("NMI vs true identities", "ARI vs true identities", "clusters"), strict=True
    ):
        axis.set_title(title)
        axis.set_xlabel("re-clustering (stage I, then II, III)")
        axis.grid(alpha=0.3)
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(output_dir / "pseudo_labels.png", dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    recipe_cli(main)
