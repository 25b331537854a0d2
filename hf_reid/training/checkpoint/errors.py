"""The two errors of checkpointing: a damaged checkpoint, and a checkpoint of another run.

Both are ``ValueError``s (through :class:`~hf_reid.training.config.ConfigError` for the run
mismatch, which is a config problem), and both name the file or the runs at fault.
"""

from __future__ import annotations

from ..config import ConfigError


class CheckpointError(ValueError):
    """A checkpoint that is incomplete, corrupt or unreadable; the message names the file."""


class RunMismatchError(ConfigError):
    """A run folder or checkpoint that belongs to another run (another seed or config)."""
