"""The checkpoint logger and its warn-once helper.

Listing, verifying and resuming look at the same folders again and again (every save lists the
run folder); a problem with one checkpoint is worth one warning per process, not one per look.
The logger keeps the name ``hf_reid.training.checkpoint`` for every module of this package.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__package__)

_warned: set[str] = set()


def _warn_once(message: str) -> None:
    """Log ``message`` as a warning the first time this process sees it."""
    if message not in _warned:
        _warned.add(message)
        logger.warning("%s", message)
