"""Intervals across training seeds: Student-t 95% intervals of a mean, and Welch intervals of a
difference of two means (is one method ahead of another by more than the seeds' spread?)."""

from __future__ import annotations

import math
from dataclasses import dataclass

# two-sided 95% Student-t quantiles t(0.975, df), df = 1..30 (standard tables)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t975(df: float) -> float:
    """t(0.975, df); a fractional df (Welch) is rounded down, which widens the interval."""
    if df < 1:
        return math.inf
    k = int(math.floor(df))
    return _T975[k - 1] if k <= len(_T975) else 1.96 + 2.4 / k  # within 0.002 of the exact value past 30


@dataclass(frozen=True)
class Interval:
    mean: float
    half_width: float  # 95%; inf with a single value
    n: int
    std: float

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def mean_interval(values: list[float]) -> Interval:
    """Mean and 95% Student-t half-width of ``values`` (one per seed)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    if n == 1:
        return Interval(mean, math.inf, 1, 0.0)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return Interval(mean, t975(n - 1) * std / math.sqrt(n), n, std)


def difference_interval(a: list[float], b: list[float]) -> Interval:
    """mean(a) - mean(b) with a Welch 95% half-width (unequal variances, Welch-Satterthwaite df)."""
    ia, ib = mean_interval(a), mean_interval(b)
    if ia.n < 2 or ib.n < 2:
        return Interval(ia.mean - ib.mean, math.inf, min(ia.n, ib.n), 0.0)
    va, vb = ia.std ** 2 / ia.n, ib.std ** 2 / ib.n
    se = math.sqrt(va + vb)
    if se == 0:
        return Interval(ia.mean - ib.mean, 0.0, ia.n + ib.n, 0.0)
    df = (va + vb) ** 2 / ((va ** 2 / (ia.n - 1)) + (vb ** 2 / (ib.n - 1)))
    return Interval(ia.mean - ib.mean, t975(df) * se, ia.n + ib.n, se)
