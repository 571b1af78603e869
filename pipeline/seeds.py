"""Seed per item, not per process: randomness derives from (seed, stage, shard, key, purpose), so one shard
re-run anywhere, alone or in any batch, reproduces itself."""

from __future__ import annotations

import hashlib

__all__ = ["derive_seed"]


def derive_seed(seed: int, *parts: object) -> int:
    text = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF
