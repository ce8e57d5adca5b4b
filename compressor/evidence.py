"""Did it help? Paired differences between two trainings repeated over the same seeds.

Two students trained from the same seed share their initial weights, batch order and
augmentation (the engine seeds the student's construction and the loader from ``train.seed``),
so the difference of their scores seed by seed removes most of the seed's own effect; the
mean of those differences and its 95 % interval (Student's t with n - 1 degrees of freedom:
mean +- t_{0.975, n-1} s / sqrt(n)) say whether one beat the other beyond seed noise.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from scipy import stats


def paired_difference(a: list[float], b: list[float], level: float = 0.95) -> dict[str, Any]:
    """Mean of ``a[i] - b[i]`` over paired seeds with its t interval.

    Args:
        a, b: scores of the two trainings, one per seed, in the same seed order.
        level: the interval's coverage.

    Returns:
        ``{'mean', 'std', 'n', 'low', 'high', 'level'}``; ``std``, ``low`` and ``high`` are None
        for a single pair (no interval can be had from one seed).

    Raises:
        ValueError: lists of different lengths, or empty.
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"paired scores need one value per seed on both sides (got {len(a)} and {len(b)})")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    n, mean = len(diffs), statistics.fmean(diffs)
    if n == 1:
        return {"mean": mean, "std": None, "n": 1, "low": None, "high": None, "level": level}
    std = statistics.stdev(diffs)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "n": n, "low": mean - half, "high": mean + half, "level": level}


def mean_std(values: list[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (None for one value), with the count."""
    if not values:
        raise ValueError("mean_std of no values")
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None, "n": len(values)}


def describe_difference(d: dict[str, Any], unit: str = "top-1") -> str:
    """'+1.3 top-1 (95% interval +0.4 to +2.2, 3 seeds)', 'within seed noise (...)' when the
    interval holds 0, or '+1.3 top-1 (one seed: no interval)'."""
    head = f"{d['mean']:+.1f} {unit}"
    if d["low"] is None:
        return f"{head} (one seed: no interval; run with --seeds for one)"
    interval = f"{round(100 * d['level'])}% interval {d['low']:+.1f} to {d['high']:+.1f}, {d['n']} seeds"
    if d["low"] <= 0 <= d["high"]:
        return f"{head}, within seed noise ({interval})"
    return f"{head} ({interval})"


def better_than_distilled(report: dict[str, Any] | None) -> str | None:
    """The comparison whose student beat the distilled one beyond seed noise (its paired 95 % interval
    of distilled minus it lies below 0; the largest deficit when several did), else None. One seed has
    no interval, so it never overrules the distilled student."""
    beaten = {name: e["distill_minus_this"] for name, e in ((report or {}).get("comparisons") or {}).items()
              if e.get("trained") and e["distill_minus_this"]["high"] is not None and e["distill_minus_this"]["high"] < 0}  # fmt: skip
    return min(beaten, key=lambda n: beaten[n]["mean"]) if beaten else None
