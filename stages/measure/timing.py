"""The timing protocol, the latencies of one interleaved run (`rounds.run_rounds`), and their
summary: percentiles with intervals per side, speedups, and the A/A control."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stages import stats

BASELINE, CANDIDATE, AGAIN = "baseline", "candidate", "baseline_again"
# A B C, A C B, C B A, B A C, B C A, C A B (A baseline, B candidate, C baseline again): chained,
# no side follows itself, each ordered pair of sides is adjacent 3 times per cycle.
ORDERS = (
    (BASELINE, CANDIDATE, AGAIN),
    (BASELINE, AGAIN, CANDIDATE),
    (AGAIN, CANDIDATE, BASELINE),
    (CANDIDATE, BASELINE, AGAIN),
    (CANDIDATE, AGAIN, BASELINE),
    (AGAIN, BASELINE, CANDIDATE),
)
SIDES = (BASELINE, CANDIDATE, AGAIN)
# On a stack the baseline side is the control, and the original baseline is timed as a fourth
# side in the same rounds, for the stack's cumulative speedup. Four sides chain in a Williams
# square (A control, B candidate, C control again, D original baseline): each side takes each
# position once per cycle, each ordered pair of sides is adjacent once, and no side follows
# itself, across a round boundary either.
ORIGINAL = "original"
STACKED_SIDES = (BASELINE, CANDIDATE, AGAIN, ORIGINAL)
STACKED_ORDERS = (
    (BASELINE, CANDIDATE, ORIGINAL, AGAIN),
    (CANDIDATE, AGAIN, BASELINE, ORIGINAL),
    (AGAIN, ORIGINAL, CANDIDATE, BASELINE),
    (ORIGINAL, BASELINE, AGAIN, CANDIDATE),
)
PERCENTILES = (50, 90, 95, 99)
TAIL = (90, 95, 99)  # percentiles whose interval also takes the order-statistic bound


@dataclass
class Protocol:
    warmup_calls: int
    calls_per_block: int
    min_rounds: int
    max_rounds: int
    max_seconds: float
    precision: float
    confidence: float
    min_speedup: float = 0.0  # the budget's p50 win threshold; 0 = no win threshold
    max_noise_floor: float = 1.0  # a decision needs the A/A floor at most this wide
    # the tail rule must be decided too, at the percentile the calls support (the run the
    # verdict weighs; stats.tail_percentile)
    judge_tail: bool = False
    max_p99_slowdown: float = 1.1  # the budget's tail slowdown, whichever percentile is judged
    check_every: int = 6  # rounds between interval checks (one cycle of the orders)
    # the checks that may stop a run use a stricter level, 1 - (1 - confidence) / LOOK_SPLIT
    # (rounds.py), so that looking again and again does not stop on a chance excursion
    # (optional stopping)
    check_resamples: int = 500  # a cheaper bootstrap for the stopping rule only
    bootstrap_resamples: int = 2000  # the summary's intervals (bench.bootstrap_resamples)

    @classmethod
    def from_bench(cls, bench: Any, budget: Any, judge_tail: bool) -> Protocol:
        """The protocol of the params' `bench` and `budget` sections, the one place a timing run
        and its summary read them from. `judge_tail`: the run the verdict weighs (capped at
        `max_seconds`); any other is capped at `report_seconds`."""
        return cls(
            warmup_calls=bench.warmup_calls,
            calls_per_block=bench.calls_per_block,
            min_rounds=bench.min_rounds,
            max_rounds=bench.max_rounds,
            max_seconds=bench.max_seconds
            if judge_tail
            else min(bench.max_seconds, bench.report_seconds),
            precision=bench.precision,
            confidence=bench.confidence,
            min_speedup=budget.min_speedup,
            max_noise_floor=bench.max_noise_floor,
            judge_tail=judge_tail,
            max_p99_slowdown=budget.max_p99_slowdown,
            bootstrap_resamples=bench.bootstrap_resamples,
        )


def orders_for(sides: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """The round orders for these sides: ORDERS for the three, STACKED_ORDERS with the original
    baseline as a fourth."""
    if tuple(sides) == SIDES:
        return ORDERS
    if tuple(sides) == STACKED_SIDES:
        return STACKED_ORDERS
    raise ValueError(f"timing sides must be {SIDES} or {STACKED_SIDES}; got {tuple(sides)}")


@dataclass
class Timings:
    """Per-call latencies in ms, grouped by side and round, and why the rounds stopped."""

    rounds: dict[str, list[np.ndarray]] = field(default_factory=dict)
    orders: list[tuple[str, ...]] = field(default_factory=list)
    sessions: list[int] = field(default_factory=list)  # the session each round ran in
    stopped_by: str = ""
    seconds: float = 0.0
    warmup_calls: dict[str, int] = field(default_factory=dict)
    calls_per_block: int = 0

    @property
    def n_rounds(self) -> int:
        return len(self.orders)

    @property
    def round_sessions(self) -> list[int]:
        """The session of each round (all 0 for timings recorded without sessions)."""
        return self.sessions or [0] * self.n_rounds

    @property
    def groups(self) -> list[int] | None:
        """The session of each round, for the intervals (None: all in one session)."""
        return self.sessions if len(set(self.sessions)) > 1 else None


def tail_interval(
    a: list[np.ndarray],
    b: list[np.ndarray],
    q: float,
    confidence: float,
    resamples: int,
    seed: int = 0,
    sessions: Sequence[int] | None = None,
) -> stats.Interval:
    """A tail percentile ratio's interval: the (session, round) bootstrap widened by the
    order-statistic interval, which stays honest (wide, or unbounded) when few calls lie beyond
    the percentile."""
    boot = stats.percentile_ratio_ci(
        a, b, q, confidence=confidence, n_resamples=resamples, seed=seed, sessions=sessions
    )
    order = stats.percentile_ratio_order_ci(np.concatenate(a), np.concatenate(b), q, confidence)
    return stats.hull(boot, order)


def summarize(
    t: Timings,
    batch_size: int,
    *,
    precision: float,
    confidence: float,
    resamples: int,
    seed: int,
) -> dict[str, Any]:
    """Percentiles with intervals per side, speedups with intervals, and the A/A control at every
    percentile (its noise floor per percentile, pooled), and for the tail percentiles replicated
    over sessions (`tail_floors`, the tail rule's; stats.replicated_noise_floor)."""
    groups = t.groups
    kw: dict[str, Any] = {
        "confidence": confidence,
        "n_resamples": resamples,
        "seed": seed,
        "sessions": groups,
    }
    base, cand, again = (t.rounds[s] for s in SIDES)
    sides = {}
    for side, rounds in t.rounds.items():
        pooled = np.concatenate(rounds)
        entry: dict[str, Any] = {
            f"p{q}": stats.percentile_ci(rounds, q, **kw).to_dict() for q in PERCENTILES
        }
        entry["mean"] = float(pooled.mean())
        entry["calls"] = int(pooled.size)
        entry["throughput_per_s"] = batch_size / (pooled.mean() / 1e3)  # items per second
        sides[side] = entry

    def ratio(a: list[np.ndarray], b: list[np.ndarray], q: int) -> stats.Interval:
        if q in TAIL:
            return tail_interval(a, b, q, confidence, resamples, seed, sessions=groups)
        return stats.percentile_ratio_ci(a, b, q, **kw)

    speedup = {f"p{q}": ratio(base, cand, q) for q in PERCENTILES}
    speedup["mean"] = stats.mean_ratio_ci(base, cand, **kw)
    aa = {f"p{q}": ratio(base, again, q) for q in PERCENTILES}
    floors = {q: stats.noise_floor(i) for q, i in aa.items()}
    # the tail rule's A/A floors: the median over sessions, not the pooled tail (one slow stretch)
    replicated = {f"p{q}": stats.replicated_noise_floor(base, again, q, groups) for q in TAIL}
    calls = sides[CANDIDATE]["calls"]
    out = {
        "batch_size": batch_size,
        "rounds": t.n_rounds,
        "calls_per_block": t.calls_per_block,
        "calls_per_side": calls,
        # the sessions (worker processes) the rounds ran in, and each side's spread between
        # sessions and within them (relative to the median)
        "sessions": {
            "count": len(set(t.sessions)) or 1,
            "rounds_each": [t.sessions.count(k) for k in sorted(set(t.sessions))],
            "interval": "sessions, then rounds" if groups else "rounds",
            "spread": {
                side: stats.session_spread(rounds, t.round_sessions)
                for side, rounds in t.rounds.items()
            },
        },
        "stopped_by": t.stopped_by,
        "seconds": round(t.seconds, 3),
        "warmup_calls": t.warmup_calls,
        "sides": sides,
        "speedup": {k: v.to_dict() for k, v in speedup.items()},
        # where a rerun's p50 speedup should land (its own error added): what a teammate checks
        "rerun_p50": stats.rerun_interval(speedup["p50"]).to_dict(),
        "throughput_ratio": sides[CANDIDATE]["throughput_per_s"]
        / sides[BASELINE]["throughput_per_s"],
        "aa": {k: v.to_dict() for k, v in aa.items()},
        "aa_p50": aa["p50"].to_dict(),
        "noise_floors": floors,
        "noise_floor": floors["p50"],
        "tail_floors": {k: r.floor for k, r in replicated.items()},
        "aa_replicates": {
            "by": replicated["p99"].by,
            "ratios": {k: r.ratios for k, r in replicated.items()},
        },
        "effect": stats.classify_speedup(speedup["p50"], floors["p50"]),
        "confidence": confidence,
        "tail_interval": "order statistic",  # p90-p99 intervals: bootstrap widened by it
        "reliable": {f"p{q}": stats.tail_is_reliable(calls, q) for q in PERCENTILES},
        # precise: the interval is as tight as asked (a cost control, not a ship rule)
        "precise": t.stopped_by == "precision" or speedup["p50"].half_width_rel <= precision,
    }
    if ORIGINAL in t.rounds:  # a stack: the candidate against the original baseline too
        orig = t.rounds[ORIGINAL]
        total = {f"p{q}": ratio(orig, cand, q) for q in PERCENTILES}
        out["cumulative"] = {
            "against": ORIGINAL,
            "speedup": {k: v.to_dict() for k, v in total.items()},
            "rerun_p50": stats.rerun_interval(total["p50"]).to_dict(),
            "control_speedup": {"p50": stats.percentile_ratio_ci(orig, base, 50, **kw).to_dict()},
            "effect": stats.classify_speedup(total["p50"], floors["p50"]),
        }
    return out
