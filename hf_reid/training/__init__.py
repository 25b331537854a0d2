"""What the recipes share: the run plumbing (:class:`RecipeRun`), the Accelerate stage runner,
feature extraction, optimizers and schedulers, checkpoints and resume, typed configs, evaluation
under each dataset's protocol, and logging.

A recipe reads top to bottom; these pieces do the bookkeeping around the method's own code::

    run = RecipeRun.start(MyRecipeConfig, argv, method="clip_reid", default_config=DEFAULT_CONFIG)
    data = run.load_data()                                  # SynthPeds if needed; train + eval sets
    processor, train_transform, test_transform = run.image_transforms(model.config.image_size)
    runner = run.stage_runner(["prompts", "image_encoder"])  # checkpoints, resume, hooks, state

    optimizer = build_optimizer(model.named_parameters(), "adam", lr=3.5e-4, weight_decay=1e-4)
    scheduler = build_scheduler(optimizer, "cosine", total=120, warmup=5, warmup_init_lr=1e-5,
                                min_lr=1e-6, start_index=1)          # not passed to prepare()
    model, optimizer, loader = run.accelerator.prepare(model, optimizer, loader)
    runner.train_stage("prompts", model=model, optimizer=optimizer, scheduler=scheduler,
                       dataloader=loader, compute_loss=stage1_loss, epochs=120)
    ...
    run.save_model(model, processor, tokenizer, datasets=["synthpeds"])
    results = run.evaluate(data.eval_sets, embed, model=model, transform=test_transform, normalize=True)
    run.finish(results, train_results={...})

See docs/PLATFORM.md for how a method is added.
"""

from .checkpoint import (
    Stateful,
    TrainerState,
    find_latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_trainer_state,
    resolve_resume_checkpoint,
    save_checkpoint,
)
from .config import (
    RESUME_LATEST,
    ConfigError,
    RecipeArgs,
    config_from_dict,
    config_to_dict,
    load_config,
    parse_recipe_args,
    save_config,
)
from .evaluation import evaluate_domains, evaluate_protocol, evaluate_retrieval
from .features import FeatureDataset, extract_features, fingerprint, load_or_extract
from .loop import StageRunner, set_sampler_epoch
from .optim import WarmupLRScheduler, build_optimizer, build_param_groups, build_scheduler, scheduled_lr
from .recipe_run import (
    CACHE_DIR,
    DEFAULT_RUNS_DIR,
    HUB_IGNORE,
    SYNTHCLIP_HUB_ID,
    RecipeConfig,
    RecipeRun,
    check_checkpoint_fits,
    model_config_kwargs,
    recipe_cli,
)
from .reid_data import (
    DataArgs,
    EvalArgs,
    EvalSet,
    ReidData,
    SynthPedsArgs,
    TrainArgs,
    display_name,
    domain_dir,
    eval_loader,
    load_data,
    prepare_synthpeds,
    validate_data_args,
)
from .utils import create_accelerator, gather_with_grad, set_seed, setup_logging, sync_buffers

__all__ = [
    "CACHE_DIR",
    "DEFAULT_RUNS_DIR",
    "HUB_IGNORE",
    "RESUME_LATEST",
    "SYNTHCLIP_HUB_ID",
    "ConfigError",
    "DataArgs",
    "EvalArgs",
    "EvalSet",
    "FeatureDataset",
    "RecipeArgs",
    "RecipeConfig",
    "RecipeRun",
    "ReidData",
    "StageRunner",
    "Stateful",
    "SynthPedsArgs",
    "TrainArgs",
    "TrainerState",
    "WarmupLRScheduler",
    "build_optimizer",
    "build_param_groups",
    "build_scheduler",
    "check_checkpoint_fits",
    "config_from_dict",
    "config_to_dict",
    "create_accelerator",
    "display_name",
    "domain_dir",
    "eval_loader",
    "evaluate_domains",
    "evaluate_protocol",
    "evaluate_retrieval",
    "extract_features",
    "find_latest_checkpoint",
    "fingerprint",
    "gather_with_grad",
    "list_checkpoints",
    "load_checkpoint",
    "load_config",
    "load_data",
    "load_or_extract",
    "model_config_kwargs",
    "parse_recipe_args",
    "prepare_synthpeds",
    "read_trainer_state",
    "recipe_cli",
    "resolve_resume_checkpoint",
    "save_checkpoint",
    "save_config",
    "scheduled_lr",
    "set_sampler_epoch",
    "set_seed",
    "setup_logging",
    "sync_buffers",
    "validate_data_args",
]
