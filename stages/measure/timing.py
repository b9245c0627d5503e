"""Interleaved timing: baseline, candidate and baseline again (A/A) in alternating rounds.

Each round runs one block of calls per side, in one of several sessions: `bench.sessions` worker
processes (`worker.Pool`), each with its own session of every side, take the rounds in turn, so
that each session sees every round order equally often; intervals resample sessions, then rounds
within them (stats: `sessions=`), and the spread between sessions is inside them. The six round
orders of ORDERS follow each other so that no side ever runs twice in a row (also across a round boundary), every side takes every
position equally often, and every side follows every other equally often: drift of the machine
and the cache state one side leaves behind fall on every side alike. Every call's latency is kept.
Rounds go on until the decision is known (see `decision`), the p50 speedup interval is as tight
as asked, or time is up; never fewer than `min_rounds` (blocks shrink so that they fit).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from typing import Protocol as Interface

import numpy as np

from stages import stats
from stages.measure.blocks import Call, Feeds
from stages.measure.worker import InProcess

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
PERCENTILES = (50, 90, 95, 99)
TAIL = (90, 95, 99)  # percentiles whose interval also takes the order-statistic bound
LOOK_SPLIT = 5  # 0.95 -> checks at 0.99
MIN_ROUNDS_SHARE = 0.5  # blocks are sized so that min_rounds take at most this share of max_seconds
ROUNDS_PER_SESSION = 2  # the fewest rounds each session runs (min_rounds grows to allow it)


class Slot(Interface):
    """Where a round runs: a session of every side (a worker process, or this process)."""

    def warm(
        self, minimum: int, sides: Sequence[str], again: bool
    ) -> tuple[dict[str, int], dict[str, float]]: ...

    def round(self, order: Sequence[str], start: int, n: int) -> dict[str, np.ndarray]: ...


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
    judge_tail: bool = False  # the p99 rule must be decided too (the run the verdict weighs)
    max_p99_slowdown: float = 1.1
    check_every: int = 6  # rounds between interval checks (one cycle of ORDERS)
    # the checks that may stop a run use a stricter level, 1 - (1 - confidence) / LOOK_SPLIT, so
    # that looking again and again does not stop on a chance excursion (optional stopping)
    check_resamples: int = 500  # a cheaper bootstrap for the stopping rule only

    @classmethod
    def from_bench(cls, bench: Any, budget: Any, judge_tail: bool) -> Protocol:
        """The protocol of the params' `bench` and `budget` sections. `judge_tail`: the run the
        verdict weighs (capped at `max_seconds`); any other is capped at `report_seconds`."""
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
        )


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


def block_size(per_call_ms: Mapping[str, float], p: Protocol) -> int:
    """Calls per block: `calls_per_block`, fewer when min_rounds of them would take more than
    MIN_ROUNDS_SHARE of max_seconds (at least 1: then min_rounds wins over max_seconds)."""
    if not per_call_ms:
        return p.calls_per_block  # no warm-up, no estimate
    round_ms = sum(per_call_ms.values())
    fits = int(MIN_ROUNDS_SHARE * p.max_seconds * 1e3 / (p.min_rounds * max(round_ms, 1e-6)))
    return max(1, min(p.calls_per_block, fits))


def session_of(r: int, sessions: int) -> int:
    """The session that runs round r: in turn, shifted by one every lcm(sessions, 6) rounds, so
    that every session runs every order of ORDERS equally often."""
    return (r + r // math.lcm(sessions, len(ORDERS))) % sessions


def interleave(calls: Mapping[str, Call], feeds: Feeds, p: Protocol) -> Timings:
    """Run the interleaved rounds over the three sides' calls in this process (one session)."""
    if set(calls) != set(SIDES):
        raise ValueError(f"calls must be {BASELINE}, {CANDIDATE}, {AGAIN}; got {sorted(calls)}")
    return run_rounds([InProcess(calls, feeds)], p)


def run_rounds(slots: Sequence[Slot], p: Protocol, again: bool = False) -> Timings:
    """Warm every session, then run rounds, each in the session `session_of` names, until
    `_stop` says why to stop. Every session runs at least ROUNDS_PER_SESSION rounds. `again`:
    the sessions are warm from an earlier timing (one warm-up block each for the new inputs)."""
    if not slots:
        raise ValueError("timing needs at least one session")
    t = Timings(rounds={s: [] for s in SIDES}, warmup_calls=dict.fromkeys(SIDES, 0))
    medians: dict[str, list[float]] = {s: [] for s in SIDES}
    for slot in slots:
        used, median = slot.warm(p.warmup_calls, SIDES, again)
        for side in SIDES:
            t.warmup_calls[side] += used[side]
            if side in median:
                medians[side].append(median[side])
    per_call = {side: float(np.median(m)) for side, m in medians.items() if m}
    need = ROUNDS_PER_SESSION * len(slots) if len(slots) > 1 else 0
    if need > p.min_rounds:
        p = dataclasses.replace(p, min_rounds=need, max_rounds=max(p.max_rounds, need))
    t.calls_per_block = n = block_size(per_call, p)
    started = time.perf_counter()
    while True:
        r = t.n_rounds
        order = ORDERS[r % len(ORDERS)]
        k = session_of(r, len(slots))
        blocks = slots[k].round(order, r * n, n)  # every side sees the same inputs in a round
        for side in order:
            t.rounds[side].append(blocks[side])
        t.orders.append(order)
        t.sessions.append(k)
        t.seconds = time.perf_counter() - started
        t.stopped_by = _stop(t, p)
        if t.stopped_by:
            return t


def _stop(t: Timings, p: Protocol) -> str:
    n = t.n_rounds
    if n >= p.max_rounds:
        return "max_rounds"
    if n < p.min_rounds:
        return ""  # min_rounds holds, whatever the clock says
    out_of_time = t.seconds >= p.max_seconds
    if out_of_time or (n - p.min_rounds) % p.check_every == 0:
        known = decision(
            t.rounds[BASELINE],
            t.rounds[CANDIDATE],
            t.rounds[AGAIN],
            p,
            p.check_resamples,
            sessions=t.groups,
        )
        if known:
            return known
    return "max_seconds" if out_of_time else ""


def decision(
    base: list[np.ndarray],
    cand: list[np.ndarray],
    again: list[np.ndarray],
    p: Protocol,
    resamples: int,
    sessions: Sequence[int] | None = None,
) -> str:
    """Why timing may stop now ("" while it may not): the decision is known, i.e. the p50
    speedup interval is decided against the budget (`stats.decide_speed`) with an A/A floor at
    most `max_noise_floor` wide and, when the tail is judged, the p99 decided too; or the p50
    interval is as tight as `precision` asks. `sessions`: the session of each round."""
    level = 1 - (1 - p.confidence) / LOOK_SPLIT
    kw: dict[str, Any] = {"confidence": level, "n_resamples": resamples, "sessions": sessions}
    sp = stats.percentile_ratio_ci(base, cand, 50, **kw)
    precise = sp.half_width_rel <= p.precision
    floor = stats.noise_floor(stats.percentile_ratio_ci(base, again, 50, **kw))
    speed = stats.decide_speed(sp, floor, p.min_speedup)
    known = speed is not None and floor <= p.max_noise_floor
    if not (precise or known):
        return ""
    if p.judge_tail:
        tail = tail_interval(base, cand, 99, level, resamples, sessions=sessions)
        tail_floor = stats.noise_floor(
            tail_interval(base, again, 99, level, resamples, sessions=sessions)
        )
        if stats.decide_tail(tail, tail_floor, p.max_p99_slowdown) is None:
            return ""
    return f"decided ({speed})" if known else "precision"


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
    percentile (its noise floor per percentile)."""
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
    calls = sides[CANDIDATE]["calls"]
    return {
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
        "effect": stats.classify_speedup(speedup["p50"], floors["p50"]),
        "confidence": confidence,
        "tail_interval": "order statistic",  # p90-p99 intervals: bootstrap widened by it
        "reliable": {f"p{q}": stats.tail_is_reliable(calls, q) for q in PERCENTILES},
        # precise: the interval is as tight as asked (a cost control, not a ship rule)
        "precise": t.stopped_by == "precision" or speedup["p50"].half_width_rel <= precision,
    }
