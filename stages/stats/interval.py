"""A point estimate with its confidence interval, and the widening of an interval's bounds."""

from __future__ import annotations

import math
from dataclasses import dataclass

from stages.stats.checks import require


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval."""

    estimate: float
    low: float
    high: float

    def __post_init__(self) -> None:
        require(self.low <= self.high, f"low must be <= high, got low={self.low}, high={self.high}")

    def to_dict(self) -> dict[str, float]:
        """Return the interval as a JSON-friendly dict."""
        return {"estimate": self.estimate, "low": self.low, "high": self.high}

    def contains(self, value: float) -> bool:
        """Return True when value lies inside the closed interval."""
        return self.low <= value <= self.high

    @property
    def half_width_rel(self) -> float:
        """Half-width relative to |estimate|; inf when the estimate is 0."""
        if self.estimate == 0:
            return math.inf
        return (self.high - self.low) / 2 / abs(self.estimate)


def widen(estimate: float, low: float, high: float, factor: float) -> tuple[float, float]:
    """Scale the distances of low and high from the estimate by factor: on the log scale when all
    three are positive (ratios, latencies), else on the linear scale."""
    if estimate > 0 and low > 0 and high > 0:
        return estimate * (low / estimate) ** factor, estimate * (high / estimate) ** factor
    return estimate + (low - estimate) * factor, estimate + (high - estimate) * factor
