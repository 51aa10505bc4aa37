"""When a failed attempt runs again: exponential backoff with jitter and a cap."""

from __future__ import annotations

import random


def backoff_seconds(
    attempt: int, *, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Delay before the attempt after ``attempt`` (1-based).

    ``base * 2**(attempt-1)``, capped, then "equal jitter": half of it fixed, half random,
    so retries of many tasks that failed together spread out instead of stampeding.
    """
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    exp = min(cap, base * 2.0 ** min(attempt - 1, 62))
    r = (rng or random).random()
    return exp / 2 + exp / 2 * r
