"""What the recipes share: the Accelerate stage runner, feature extraction, optimizers and
schedulers, checkpoints and resume, logging."""
