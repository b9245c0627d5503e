"""Speed decisions: what a speedup interval says against an A/A noise floor and the budget, the
noise floor itself (pooled, or replicated over sessions for a tail), and where a rerun's
estimate should land."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np

from stages.stats.checks import check_q, require
from stages.stats.interval import Interval, widen
from stages.stats.rounds import as_rounds
from stages.stats.sessions import session_groups

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
    """What a p50 speedup interval decides against the noise band 1/(1+floor) .. 1+floor and the
    budget's min_speedup (0: no win threshold), first match: FASTER (its lower bound clears the
    band and reaches min_speedup), SLOWER (wholly below the band), NO_CHANGE (wholly inside the
    band), SHORT (wholly below min_speedup: faster but short, or partly inside the band); None
    while it straddles a threshold. `speed_rejects` says which of these fail the budget."""
    require(floor >= 0, f"floor must be >= 0, got {floor}")
    top = 1 + floor
    if speedup.low > top and speedup.low >= min_speedup:
        return FASTER
    if speedup.high < 1 / top:
        return SLOWER
    if speedup.low >= 1 / top and speedup.high <= top:
        return NO_CHANGE
    if speedup.high < min_speedup:
        return SHORT
    return None


def speed_rejects(decision: str | None, speedup: Interval, min_speedup: float) -> bool:
    """Whether a decide_speed outcome fails the budget: a measured slowdown (whatever the budget:
    the rule asks for a gain), or an interval wholly below min_speedup. It needs no A/A floor
    within bench.max_noise_floor: the interval itself resamples sessions, then rounds, so the
    noise a wide floor reveals widens it too, and one still wholly below the budget is short of
    it. NO_CHANGE with min_speedup inside the band (min_speedup <= 1 + floor) is decided but not
    rejected: the truth may reach the budget, and this run cannot show it."""
    return decision == SLOWER or (decision is not None and speedup.high < min_speedup)


def decide_tail(speedup: Interval, floor: float, max_slowdown: float) -> str | None:
    """What a tail (p90-p99) speedup interval decides against a slowdown budget: TAIL_FAIL when even
    its smallest slowdown exceeds the budget and the noise floor, TAIL_PASS when its largest
    slowdown is within the budget, None while it straddles (e.g. a p99 on too few calls)."""
    least = 1 / speedup.high if speedup.high > 0 else math.inf
    most = 1 / speedup.low if speedup.low > 0 else math.inf
    if least > max_slowdown and least > 1 + floor:
        return TAIL_FAIL
    if most <= max_slowdown:
        return TAIL_PASS
    return None


class ReplicatedFloor(NamedTuple):
    """The A/A noise floor of a tail percentile from replicates of the run (see aa_replicates)."""

    floor: float
    ratios: list[float]  # the A/A ratio of each replicate
    by: str  # what a replicate is: "sessions", "stretches of rounds" or "all rounds"


MIN_REPLICATES = 3  # a median of 3 or more stays among the others' values with one astray
STRETCHES = 5  # replicates made of consecutive rounds when the run has too few sessions


def aa_replicates(sessions: Sequence[int] | None, n_rounds: int) -> tuple[list[np.ndarray], str]:
    """The replicates of a run, as round indices: its sessions when it has MIN_REPLICATES or
    more, else up to STRETCHES stretches of consecutive rounds (2 rounds each at least), else all
    rounds as one."""
    require(n_rounds >= 1, f"n_rounds must be >= 1, got {n_rounds}")
    if sessions is not None and len(set(sessions)) >= MIN_REPLICATES:
        return session_groups(sessions, n_rounds), "sessions"
    count = min(STRETCHES, n_rounds // 2)
    if count >= MIN_REPLICATES:
        return list(np.array_split(np.arange(n_rounds), count)), "stretches of rounds"
    return [np.arange(n_rounds)], "all rounds"


def replicated_noise_floor(
    a_rounds: Sequence[np.ndarray],
    b_rounds: Sequence[np.ndarray],
    q: float,
    sessions: Sequence[int] | None = None,
    minimum: float = 0.03,
) -> ReplicatedFloor:
    """Noise floor of the q-th percentile from the A/A sides (a: baseline, b: baseline again)
    replicated: the median over replicates (sessions) of each one's A/A ratio's log-distance
    from 1, as a relative floor, never below minimum.

    The pooled A/A interval of a tail percentile rests on its few slowest calls: one slow stretch
    in one session of one side made a p99 A/A floor of 94 % on a byte-identical model. A median
    over 5 replicates stays among the others' values with up to 2 of them astray, and still
    catches an offset between two sessions of one file that every replicate shares. Each
    replicate's ratio rests on a fifth of the calls, so in a quiet run the floor is if anything
    wider than the pooled one: it errs towards not rejecting a tail."""
    a = as_rounds(a_rounds, "a_rounds", positive=True)
    b = as_rounds(b_rounds, "b_rounds", positive=True)
    require(len(a) == len(b), f"a and b must have as many rounds, got {len(a)} and {len(b)}")
    check_q(q)
    require(minimum >= 0, f"minimum must be >= 0, got {minimum}")
    groups, by = aa_replicates(sessions, len(a))
    ratios = [
        float(
            np.percentile(np.concatenate([a[i] for i in g]), q)
            / np.percentile(np.concatenate([b[i] for i in g]), q)
        )
        for g in groups
    ]
    deviation = float(np.median(np.abs(np.log(ratios))))  # log scale: 0.8 and 1.25 alike
    return ReplicatedFloor(max(minimum, math.expm1(deviation)), ratios, by)
