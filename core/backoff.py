"""Exponential backoff with full jitter, the one way Graphport waits before trying again."""

from __future__ import annotations

import random


def full_jitter(
    attempt: int, base: float = 0.5, cap: float = 60, rng: random.Random | None = None
) -> float:
    """Seconds to wait before attempt `attempt + 1`: uniform between 0 and
    `base * 2**(attempt - 1)`, capped. Full jitter spreads workers that failed together instead
    of retrying in step."""
    if attempt < 1:
        raise ValueError("attempts count from 1")
    ceiling = min(cap, base * 2 ** min(attempt - 1, 64))
    return (rng or random).uniform(0, ceiling)
