"""Deterministic random streams for SynthPeds.

Every random choice draws from a generator keyed by the run seed and the names of what is being
made (``("identity", 1003)``, ``("image", "ltcc", 17)``, ...). Nothing depends on the order in
which things are generated or on how many worker processes share the work, so the same seed gives
byte-identical files with 1 worker or 16.
"""

from __future__ import annotations

import hashlib
import zlib

import numpy as np


def _key_to_int(key: str | int) -> int:
    if isinstance(key, (int, np.integer)):
        if key < 0:
            raise ValueError(f"random-stream keys must be non-negative, got {key}")
        return int(key)
    return zlib.crc32(str(key).encode("utf-8"))


def stream_seed(seed: int, *keys: str | int) -> np.random.SeedSequence:
    """A :class:`numpy.random.SeedSequence` for ``keys`` under run ``seed``."""
    return np.random.SeedSequence([_key_to_int(seed), *(_key_to_int(k) for k in keys)])


def rng_for(seed: int, *keys: str | int) -> np.random.Generator:
    """A generator for ``keys`` under run ``seed`` (see module docstring)."""
    return np.random.default_rng(stream_seed(seed, *keys))


def int_seed(seed: int, *keys: str | int) -> int:
    """A 64-bit integer seed for ``keys`` under run ``seed`` (cheap to make and to store per image)."""
    text = "/".join(str(_key_to_int(k)) for k in (seed, *keys))
    return int.from_bytes(hashlib.blake2b(text.encode("ascii"), digest_size=8).digest(), "little")
