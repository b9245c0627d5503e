"""Interleaved timing: baseline, candidate and baseline again (A/A) in alternating rounds.

Round r runs one block of `calls_per_block` calls per side, in the order A B A' when r is even
and A' B A when r is odd, so slow drift of the machine falls on every side alike. Every call's
latency is kept. Rounds go on until the p50 speedup interval is as tight as asked, or time is up.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stages import stats

BASELINE, CANDIDATE, AGAIN = "baseline", "candidate", "baseline_again"
ORDERS = ((BASELINE, CANDIDATE, AGAIN), (AGAIN, CANDIDATE, BASELINE))
PERCENTILES = (50, 90, 95, 99)
WARMUP_BLOCKS = 10  # at most this many warm-up blocks after the first, per side
WARMUP_AGREE = 0.05  # successive warm-up block medians within 5 %: warm
WARMUP_BLOCK_S = 0.5  # s: a warm-up block holds at most the calls that fit in about this long

Call = Callable[[dict[str, np.ndarray]], Any]


@dataclass
class Protocol:
    warmup_calls: int
    calls_per_block: int
    min_rounds: int
    max_rounds: int
    max_seconds: float
    precision: float
    confidence: float
    check_every: int = 5  # rounds between interval checks
    check_resamples: int = 500  # a cheaper bootstrap for the stopping rule only


@dataclass
class Timings:
    """Per-call latencies in ms, grouped by side and round, and why the rounds stopped."""

    rounds: dict[str, list[np.ndarray]] = field(default_factory=dict)
    orders: list[tuple[str, ...]] = field(default_factory=list)
    stopped_by: str = ""
    seconds: float = 0.0
    warmup_calls: dict[str, int] = field(default_factory=dict)

    @property
    def n_rounds(self) -> int:
        return len(self.orders)


def time_block(
    call: Call, feeds: Sequence[dict[str, np.ndarray]], start: int, n: int
) -> np.ndarray:
    """Latency in ms of n consecutive calls, feeding inputs start, start+1, ... (cycled)."""
    out = np.empty(n, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(n):
        feed = feeds[(start + i) % len(feeds)]
        t0 = clock()
        call(feed)
        out[i] = clock() - t0
    return out / 1e6


def warm_up(
    calls: Mapping[str, Call], feeds: Sequence[dict[str, np.ndarray]], minimum: int
) -> dict[str, int]:
    """Warm each side (caches, allocator arenas, lazy kernel choice) in blocks of `minimum`
    calls (fewer for slow calls: a block lasts about WARMUP_BLOCK_S) until two successive block
    medians agree within 5 %; returns the calls used."""
    used = {side: 0 for side in ORDERS[0]}
    for side in ORDERS[0] if minimum > 0 else ():
        first_ms = float(time_block(calls[side], feeds, 0, 1)[0])
        n = max(2, min(minimum, int(WARMUP_BLOCK_S * 1e3 / max(first_ms, 1e-3))))
        prev = float(np.median(time_block(calls[side], feeds, 0, n)))
        blocks = 1
        while blocks <= WARMUP_BLOCKS:
            now = float(np.median(time_block(calls[side], feeds, 0, n)))
            blocks += 1
            if abs(now / prev - 1) <= WARMUP_AGREE:
                break
            prev = now
        used[side] = 1 + blocks * n
    return used


def interleave(
    calls: Mapping[str, Call], feeds: Sequence[dict[str, np.ndarray]], p: Protocol
) -> Timings:
    """Run the interleaved rounds over the three sides; the stopping rule is on the p50 speedup."""
    if set(calls) != {BASELINE, CANDIDATE, AGAIN}:
        raise ValueError(f"calls must be {BASELINE}, {CANDIDATE}, {AGAIN}; got {sorted(calls)}")
    t = Timings(rounds={s: [] for s in calls})
    t.warmup_calls = warm_up(calls, feeds, p.warmup_calls)
    started = time.perf_counter()
    gc_was_enabled = gc.isenabled()
    try:
        while True:
            r = t.n_rounds
            order = ORDERS[r % 2]
            start = r * p.calls_per_block  # every side sees the same inputs in a round
            gc.disable()  # no collector pause inside a timed block
            for side in order:
                t.rounds[side].append(time_block(calls[side], feeds, start, p.calls_per_block))
            if gc_was_enabled:
                gc.enable()
            t.orders.append(order)
            t.seconds = time.perf_counter() - started
            t.stopped_by = _stop(t, p)
            if t.stopped_by:
                return t
    finally:
        if gc_was_enabled:
            gc.enable()


def _stop(t: Timings, p: Protocol) -> str:
    n = t.n_rounds
    if n >= p.max_rounds:
        return "max_rounds"
    if t.seconds >= p.max_seconds and n >= 2:
        return "max_seconds"
    if n >= p.min_rounds and (n - p.min_rounds) % p.check_every == 0:
        ci = stats.percentile_ratio_ci(
            t.rounds[BASELINE],
            t.rounds[CANDIDATE],
            50,
            confidence=p.confidence,
            n_resamples=p.check_resamples,
        )
        if ci.half_width_rel <= p.precision:
            return "precision"
    return ""


def summarize(
    t: Timings, batch_size: int, *, precision: float, confidence: float, resamples: int, seed: int
) -> dict[str, Any]:
    """Percentiles with intervals per side, speedups with intervals, and the A/A noise floor."""
    kw: dict[str, Any] = {"confidence": confidence, "n_resamples": resamples, "seed": seed}
    base, cand, again = (t.rounds[s] for s in (BASELINE, CANDIDATE, AGAIN))
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
    speedup = {f"p{q}": stats.percentile_ratio_ci(base, cand, q, **kw) for q in PERCENTILES}
    speedup["mean"] = stats.mean_ratio_ci(base, cand, **kw)
    aa = stats.percentile_ratio_ci(base, again, 50, **kw)
    floor = stats.noise_floor(aa)
    calls = sides[CANDIDATE]["calls"]
    return {
        "batch_size": batch_size,
        "rounds": t.n_rounds,
        "calls_per_side": calls,
        "stopped_by": t.stopped_by,
        "seconds": round(t.seconds, 3),
        "warmup_calls": t.warmup_calls,
        "sides": sides,
        "speedup": {k: v.to_dict() for k, v in speedup.items()},
        "throughput_ratio": sides[CANDIDATE]["throughput_per_s"]
        / sides[BASELINE]["throughput_per_s"],
        "aa_p50": aa.to_dict(),
        "noise_floor": floor,
        "effect": stats.classify_speedup(speedup["p50"], floor),
        "reliable": {f"p{q}": stats.tail_is_reliable(calls, q) for q in PERCENTILES},
        # precise: the stopping rule was met (its interval used fewer resamples than this final one)
        "precise": t.stopped_by == "precision" or speedup["p50"].half_width_rel <= precision,
    }
