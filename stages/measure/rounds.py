"""Interleaved rounds: baseline, candidate and baseline again (A/A) in alternating rounds.

Each round runs one block of calls per side, in one of several sessions: `bench.sessions` worker
processes (`worker.Pool`), each with its own session of every side, take the rounds in turn, so
that each session sees every round order equally often; intervals resample sessions, then rounds
within them (stats: `sessions=`), and the spread between sessions is inside them. The six round
orders of ORDERS follow each other so that no side ever runs twice in a row (also across a
round boundary), every side takes every position equally often, and every side follows every
other equally often: drift of the machine and the cache state one side leaves behind fall on
every side alike. Every call's latency is kept.
Rounds go on until the decision is known (see `decision`), the p50 speedup interval is as tight
as asked, or time is up; never fewer than `min_rounds` (blocks shrink so that they fit).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any
from typing import Protocol as Interface

import numpy as np

from stages import stats
from stages.measure.blocks import Call, Feeds
from stages.measure.timing import (
    AGAIN,
    BASELINE,
    CANDIDATE,
    ORDERS,
    SIDES,
    Protocol,
    Timings,
    orders_for,
    tail_interval,
)
from stages.measure.worker import InProcess

LOOK_SPLIT = 5  # 0.95 -> checks at 0.99
MIN_ROUNDS_SHARE = 0.5  # blocks are sized so that min_rounds take at most this share of max_seconds
ROUNDS_PER_SESSION = 2  # the fewest rounds each session runs (min_rounds grows to allow it)


class Slot(Interface):
    """Where a round runs: a session of every side (a worker process, or this process)."""

    def warm(
        self, minimum: int, sides: Sequence[str], again: bool
    ) -> tuple[dict[str, int], dict[str, float]]: ...

    def round(self, order: Sequence[str], start: int, n: int) -> dict[str, np.ndarray]: ...


def block_size(per_call_ms: Mapping[str, float], p: Protocol) -> int:
    """Calls per block: `calls_per_block`, fewer when min_rounds of them would take more than
    MIN_ROUNDS_SHARE of max_seconds (at least 1: then min_rounds wins over max_seconds)."""
    if not per_call_ms:
        return p.calls_per_block  # no warm-up, no estimate
    round_ms = sum(per_call_ms.values())
    fits = int(MIN_ROUNDS_SHARE * p.max_seconds * 1e3 / (p.min_rounds * max(round_ms, 1e-6)))
    return max(1, min(p.calls_per_block, fits))


def session_of(r: int, sessions: int, orders: int = len(ORDERS)) -> int:
    """The session that runs round r: in turn, shifted by one every lcm(sessions, orders) rounds,
    so that every session runs every one of the `orders` round orders equally often."""
    return (r + r // math.lcm(sessions, orders)) % sessions


def interleave(calls: Mapping[str, Call], feeds: Feeds, p: Protocol) -> Timings:
    """Run the interleaved rounds over the three sides' calls in this process (one session)."""
    if set(calls) != set(SIDES):
        raise ValueError(f"calls must be {BASELINE}, {CANDIDATE}, {AGAIN}; got {sorted(calls)}")
    return run_rounds([InProcess(calls, feeds)], p)


def run_rounds(
    slots: Sequence[Slot], p: Protocol, again: bool = False, sides: Sequence[str] = SIDES
) -> Timings:
    """Warm every session, then run rounds, each in the session `session_of` names, until
    `_stop` says why to stop. Every session runs at least ROUNDS_PER_SESSION rounds. `again`:
    the sessions are warm from an earlier timing (one warm-up block each for the new inputs).
    `sides`: SIDES, or STACKED_SIDES (the original baseline too; checks every cycle of its
    orders). The stopping rule weighs the control's comparisons only."""
    if not slots:
        raise ValueError("timing needs at least one session")
    orders = orders_for(sides)
    if orders is not ORDERS:
        p = dataclasses.replace(p, check_every=len(orders))
    t = Timings(rounds={s: [] for s in sides}, warmup_calls=dict.fromkeys(sides, 0))
    medians: dict[str, list[float]] = {s: [] for s in sides}
    for slot in slots:
        used, median = slot.warm(p.warmup_calls, sides, again)
        for side in sides:
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
        order = orders[r % len(orders)]
        k = session_of(r, len(slots), len(orders))
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
    most `max_noise_floor` wide (a rejection needs no floor: `stats.speed_rejects`) and, when the
    tail is judged, the tail decided too at the percentile the verdict will judge on these calls
    (`stats.tail_percentile`, against the A/A floor replicated over sessions); or the p50
    interval is as tight as `precision` asks. `sessions`: the session of each round."""
    level = 1 - (1 - p.confidence) / LOOK_SPLIT
    kw: dict[str, Any] = {"confidence": level, "n_resamples": resamples, "sessions": sessions}
    sp = stats.percentile_ratio_ci(base, cand, 50, **kw)
    precise = sp.half_width_rel <= p.precision
    floor = stats.noise_floor(stats.percentile_ratio_ci(base, again, 50, **kw))
    speed = stats.decide_speed(sp, floor, p.min_speedup)
    known = speed is not None and (
        stats.speed_rejects(speed, sp, p.min_speedup) or floor <= p.max_noise_floor
    )
    if not (precise or known):
        return ""
    if p.judge_tail:
        # the verdict's percentile (chosen at the run's confidence), checked at the look level
        q = stats.tail_percentile(sum(r.size for r in cand), p.confidence)
        tail = tail_interval(base, cand, q, level, resamples, sessions=sessions)
        tail_floor = stats.replicated_noise_floor(base, again, q, sessions).floor
        if stats.decide_tail(tail, tail_floor, p.max_p99_slowdown) is None:
            return ""
    return f"decided ({speed})" if known else "precision"
