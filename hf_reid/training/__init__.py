"""What the recipes share: the Accelerate stage runner, feature extraction, optimizers and
schedulers, checkpoints and resume, typed configs, evaluation and logging.

A recipe reads top to bottom; these pieces do the bookkeeping around the method's own code::

    cfg, args = parse_recipe_args(CLIPReIDConfig)            # --config, --output_dir, --resume, --a.b 2
    accelerator = create_accelerator(args.output_dir, seed=cfg.seed)
    setup_logging(accelerator, log_file=f"{args.output_dir}/train.log")
    set_seed(cfg.seed)
    if accelerator.is_main_process:
        save_config(cfg, f"{args.output_dir}/config.yaml")
    runner = StageRunner(accelerator, args.output_dir, ["prompts", "image_encoder"], seed=cfg.seed,
                         checkpoint_every=cfg.train.checkpoint_every, resume=args.resume)

    optimizer = build_optimizer(model.named_parameters(), "adam", lr=3.5e-4, weight_decay=1e-4)
    scheduler = build_scheduler(optimizer, "cosine", total=120, warmup=5, warmup_init_lr=1e-5,
                                min_lr=1e-6, start_index=1)          # not passed to prepare()
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    runner.train_stage("prompts", model=model, optimizer=optimizer, scheduler=scheduler,
                       dataloader=loader, compute_loss=stage1_loss, epochs=120)
    ...
    query = extract_features(embed, query_loader, accelerator, model=model)
    gallery = extract_features(embed, gallery_loader, accelerator, model=model)
    evaluate_retrieval(query, gallery, normalize=True, output_dir=args.output_dir, accelerator=accelerator)
"""

from .checkpoint import (
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
from .evaluation import evaluate_domains, evaluate_retrieval
from .features import FeatureDataset, extract_features, fingerprint, load_or_extract
from .loop import StageRunner, set_sampler_epoch
from .optim import WarmupLRScheduler, build_optimizer, build_param_groups, build_scheduler, scheduled_lr
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
)
from .utils import create_accelerator, gather_with_grad, set_seed, setup_logging, sync_buffers

__all__ = [
    "RESUME_LATEST",
    "ConfigError",
    "DataArgs",
    "EvalArgs",
    "EvalSet",
    "FeatureDataset",
    "RecipeArgs",
    "ReidData",
    "StageRunner",
    "SynthPedsArgs",
    "TrainArgs",
    "TrainerState",
    "WarmupLRScheduler",
    "build_optimizer",
    "build_param_groups",
    "build_scheduler",
    "config_from_dict",
    "config_to_dict",
    "create_accelerator",
    "display_name",
    "domain_dir",
    "eval_loader",
    "evaluate_domains",
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
    "parse_recipe_args",
    "prepare_synthpeds",
    "read_trainer_state",
    "resolve_resume_checkpoint",
    "save_checkpoint",
    "save_config",
    "scheduled_lr",
    "set_sampler_epoch",
    "set_seed",
    "setup_logging",
    "sync_buffers",
]
