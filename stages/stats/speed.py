"""Speed decisions: what a speedup interval says against an A/A noise floor and the budget, the
noise floor itself, and where a rerun's estimate should land."""

from __future__ import annotations

import math
from typing import Literal

from stages.stats.checks import require
from stages.stats.interval import Interval, widen

Verdict = Literal["faster", "slower", "no measurable change"]
# What an interval decides against the budget (None while it still straddles a threshold)
FASTER, SLOWER, NO_CHANGE, SHORT = "faster", "slower", "no measurable change", "short of budget"
TAIL_PASS, TAIL_FAIL = "pass", "fail"


def hull(*intervals: Interval) -> Interval:
    """The smallest interval holding all of them (the first one's estimate)."""
    return Interval(
        intervals[0].estimate, min(i.low for i in intervals), max(i.high for i in intervals)
    )


def rerun_interval(ci: Interval) -> Interval:
    """Where a rerun's estimate should land, from a ratio's confidence interval (which is about
    the true ratio): a rerun carries an error as large as this run's own, so the difference of
    two runs spreads sqrt(2) times as far; each side's log-distance from the estimate is widened
    by sqrt(2). A rerun's estimate falls outside it about as often as the truth falls outside
    the confidence interval."""
    require(ci.low > 0, f"a ratio interval must be positive, got low = {ci.low}")
    return Interval(ci.estimate, *widen(ci.estimate, ci.low, ci.high, math.sqrt(2)))


def noise_floor(aa_ratio: Interval, minimum: float = 0.03) -> float:
    """Relative noise floor from an A/A speedup interval, never below minimum.

    The 3% default exists because two ONNX Runtime sessions of the same file can differ
    persistently by 1-2%, which a single A/A run may not reveal.
    """
    require(minimum >= 0, f"minimum must be >= 0, got {minimum}")
    return max(minimum, *(abs(v - 1) for v in (aa_ratio.estimate, aa_ratio.low, aa_ratio.high)))


def classify_speedup(speedup: Interval, floor: float) -> Verdict:
    """Classify a speedup interval against a relative noise floor."""
    require(floor >= 0, f"floor must be >= 0, got {floor}")
    if speedup.low > 1 + floor:
        return "faster"
    # 1/(1+floor) rather than 1-floor keeps the band symmetric on a log (ratio) scale.
    if speedup.high < 1 / (1 + floor):
        return "slower"
    return "no measurable change"


def decide_speed(speedup: Interval, floor: float, min_speedup: float) -> str | None:
    """What a p50 speedup interval decides: FASTER (its lower bound reaches min_speedup and clears
    the noise floor), SLOWER (wholly below the noise band), NO_CHANGE (wholly inside the band
    1/(1+floor) .. 1+floor), SHORT (surely faster, surely below min_speedup); None while it
    straddles one of these thresholds."""
    require(floor >= 0, f"floor must be >= 0, got {floor}")
    top = 1 + floor
    if speedup.low > top and speedup.low >= min_speedup:
        return FASTER
    if speedup.high < 1 / top:
        return SLOWER
    if speedup.low >= 1 / top and speedup.high <= top:
        return NO_CHANGE
    if speedup.low > top and speedup.high < min_speedup:
        return SHORT
    return None


def decide_tail(speedup: Interval, floor: float, max_slowdown: float) -> str | None:
    """What a tail (p99) speedup interval decides against a slowdown budget: TAIL_FAIL when even
    its smallest slowdown exceeds the budget and the noise floor, TAIL_PASS when its largest
    slowdown is within the budget, None while it straddles (e.g. a p99 on too few calls)."""
    least = 1 / speedup.high if speedup.high > 0 else math.inf
    most = 1 / speedup.low if speedup.low > 0 else math.inf
    if least > max_slowdown and least > 1 + floor:
        return TAIL_FAIL
    if most <= max_slowdown:
        return TAIL_PASS
    return None
