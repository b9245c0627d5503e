"""Load scenarios after MLPerf's LoadGen, for both sides: server (seeded Poisson arrivals at
rates below, near and above the baseline's capacity), a saturation sweep, and offline.

Replicates: the server rates and the sweep run `bench.server_replicates` times, each replicate on
a fresh arrival seed (within one replicate both sides face the same schedule). In a replicate the
sides take turns rate by rate, and the side that goes first alternates between replicates, so a
drift of the machine over the run falls on both sides alike. The verdict reads an interval over
the replicates (stages.evidence.server_rules); each replicate's saturation point is refined by
bisection so that the grid of sweep factors does not decide the ratio by itself.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from stages.measure import serving
from stages.measure.serving_checks import check_batching, check_feeds, positive
from stages.measure.timing import BASELINE, CANDIDATE
from stages.stats.checks import require

Feed = dict[str, Any]
# ms: a p99 bound tighter than the load generator's scheduling jitter means nothing
MIN_BOUND_MS = 5.0
SATURATION_OVERRUN = 1.5  # x duration_s (+ the bound): a sweep run still busy then cannot keep up
RATES_OVERRUN = 3.0  # x duration_s: a server-rate run still busy then stops, the rest dropped
SIDES = (BASELINE, CANDIDATE)
# server.csv: one row per served request at the server rates (times in s from the schedule start)
TRACE_HEADER = "replicate,rate_qps,side,request,arrival_s,start_s,end_s,batch"


def serving_modes(options: Any | None) -> dict[str, dict[str, float]]:
    """How each side meets requests: the baseline one per call, a batching candidate batched."""
    unbatched = {"max_batch_size": 1, "max_queue_delay_ms": 0.0}
    if options is None or not hasattr(options, "max_batch_size"):
        return {BASELINE: unbatched, CANDIDATE: dict(unbatched)}
    batched = {
        "max_batch_size": options.max_batch_size,
        "max_queue_delay_ms": options.max_queue_delay_ms,
    }
    return {BASELINE: unbatched, CANDIDATE: batched}


def replicate_seeds(seed: int, replicates: int) -> list[int]:
    """One arrival seed per replicate, independent streams derived from the run's seed."""
    require(replicates >= 1, f"replicates must be >= 1, got {replicates}")
    return [int(np.random.SeedSequence([seed, r]).generate_state(1)[0]) for r in range(replicates)]


class Sweep:
    """One side's saturation search, one rate per step (so two sides can take turns): the rates
    upwards until two fail in a row, then `refine_steps` geometric bisections between the highest
    rate that met the bound and the lowest rate above it that did not. A rate meets when nothing
    is dropped and the p99 latency is within the bound; a failing run gives up as soon as its p99
    surely misses (the outcome is known, the rest of its schedule would only cost time)."""

    def __init__(
        self,
        *,
        rates_qps: Sequence[float],
        duration_s: float,
        seed: int,
        p99_bound_ms: float,
        max_batch_size: int = 1,
        max_queue_delay_ms: float = 0.0,
        refine_steps: int = 0,
    ) -> None:
        require(len(rates_qps) >= 1, "rates_qps is empty; give at least 1 rate")
        for r in rates_qps:
            positive("rates_qps", r)
        positive("duration_s", duration_s)
        positive("p99_bound_ms", p99_bound_ms)
        check_batching(max_batch_size, max_queue_delay_ms)
        require(refine_steps >= 0, f"refine_steps must be >= 0, got {refine_steps}")
        self.rates = sorted(set(rates_qps))
        low = self.rates[0]  # one seed: every higher rate holds at least as many arrivals
        require(
            serving.poisson_arrivals(low, duration_s, seed).size > 0,
            f"rates_qps {low} gives no arrival in duration_s {duration_s}",
        )
        self.duration_s, self.seed, self.bound = duration_s, seed, p99_bound_ms
        self.mode = {"max_batch_size": max_batch_size, "max_queue_delay_ms": max_queue_delay_ms}
        self.refine_steps = refine_steps
        # A run still busy at this point cannot keep up: stop it, the rest counts as dropped.
        self.max_seconds = SATURATION_OVERRUN * duration_s + p99_bound_ms / 1e3
        self.rows: list[dict[str, Any]] = []
        self._coarse = 0  # sweep rates run so far
        self._failing = 0  # failures in a row among them
        self._refined = 0

    def bracket(self) -> tuple[float | None, float | None]:
        """The highest rate that met the bound, and the lowest above it that did not (None: no
        such rate run)."""
        met = [row["rate_qps"] for row in self.rows if row["meets"]]
        lo = max(met) if met else None
        above = [
            row["rate_qps"]
            for row in self.rows
            if not row["meets"] and (lo is None or row["rate_qps"] > lo)
        ]
        return lo, min(above) if above else None

    def next_rate(self) -> float | None:
        """The rate the next step runs, or None when the sweep is done."""
        if self._coarse < len(self.rates) and self._failing < 2:
            return self.rates[self._coarse]
        lo, hi = self.bracket()
        if self._refined < self.refine_steps and lo is not None and hi is not None:
            return math.sqrt(lo * hi)
        return None

    @property
    def done(self) -> bool:
        """Whether every step has run."""
        return self.next_rate() is None

    def step(self, call: serving.Call, feeds: Sequence[Feed]) -> None:
        """Serve the next rate's schedule and record the row."""
        rate = self.next_rate()
        if rate is None:
            raise ValueError("the sweep is done; no step is left")
        refining = self._coarse >= len(self.rates) or self._failing >= 2
        arrivals = serving.poisson_arrivals(rate, self.duration_s, self.seed)
        result = serving.serve(
            call,
            feeds,
            arrivals,
            max_batch_size=int(self.mode["max_batch_size"]),
            max_queue_delay_ms=float(self.mode["max_queue_delay_ms"]),
            max_seconds=self.max_seconds,
            give_up_p99_ms=self.bound,
        )
        row: dict[str, Any] = {"rate_qps": rate, "step": "refine" if refining else "sweep"}
        row.update(result.summary(self.bound))
        p99 = row["latency_p99_ms"]
        row["meets"] = row["dropped"] == 0 and p99 is not None and p99 <= self.bound
        self.rows.append(row)
        if refining:
            self._refined += 1
        else:
            self._coarse += 1
            self._failing = 0 if row["meets"] else self._failing + 1

    def result(self) -> dict[str, Any]:
        """The rows in the order run, the saturation point and the bracket that holds it."""
        lo, hi = self.bracket()
        return {
            "rows": self.rows,
            "saturation_qps": lo,
            "failed_above_qps": hi,  # the true saturation point lies in [saturation, this)
            "stopped_early": self._coarse < len(self.rates),
            "rates_qps": self.rates,
            "refine_steps": self.refine_steps,
            "p99_bound_ms": self.bound,
            "duration_s": self.duration_s,
            "seed": self.seed,
            **self.mode,
            "max_seconds_per_rate": self.max_seconds,
        }


def saturation(call: serving.Call, feeds: Sequence[Feed], **sweep: Any) -> dict[str, Any]:
    """One side's sweep from start to end (`sweep`: Sweep's arguments)."""
    check_feeds(feeds)
    s = Sweep(**sweep)
    while not s.done:
        s.step(call, feeds)
    return s.result()


def _mode(modes: dict[str, dict[str, float]], side: str) -> dict[str, Any]:
    m = modes[side]
    return {
        "max_batch_size": int(m["max_batch_size"]),
        "max_queue_delay_ms": float(m["max_queue_delay_ms"]),
    }


def _replicate(
    calls: dict[str, serving.Call],
    feeds: Sequence[Feed],
    modes: dict[str, dict[str, float]],
    order: Sequence[str],
    *,
    bench: Any,
    capacity_qps: float,
    seed: int,
    replicate: int,
    bound: float,
    trace: Any,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One replicate: the server rates (both sides on one schedule per rate, in `order`), then
    both sides' sweeps, taking turns rate by rate."""
    rows = []
    for factor in bench.server_load_factors:
        rate = factor * capacity_qps
        arrivals = serving.poisson_arrivals(rate, bench.server_duration_s, seed)  # both sides
        row: dict[str, Any] = {"replicate": replicate, "seed": seed, "factor": factor}
        row.update(rate_qps=rate, requests=int(arrivals.size))
        for side in order:
            result = serving.serve(
                calls[side],
                feeds,
                arrivals,
                **_mode(modes, side),
                max_seconds=RATES_OVERRUN * bench.server_duration_s,
            )
            row[side] = result.summary(bound)
            trace.writerows(result.trace(replicate, f"{rate:.3f}", side))
        rows.append(row)
    sweeps = {
        side: Sweep(
            rates_qps=[f * capacity_qps for f in bench.server_sweep_factors],
            duration_s=bench.server_duration_s,
            seed=seed,
            p99_bound_ms=bound,
            refine_steps=bench.server_refine_steps,
            **_mode(modes, side),
        )
        for side in order
    }
    while not all(s.done for s in sweeps.values()):
        for side in order:
            if not sweeps[side].done:
                sweeps[side].step(calls[side], feeds)
    return rows, {side: sweeps[side].result() for side in SIDES}


def lower_median(values: Sequence[float | None]) -> float | None:
    """The lower median (a value that was measured), None (no rate met the bound) ranked lowest."""
    ranked = sorted(values, key=lambda v: -math.inf if v is None else v)
    return ranked[(len(ranked) - 1) // 2]


def run(
    calls: dict[str, serving.Call],
    feeds: Sequence[Feed],
    modes: dict[str, dict[str, float]],
    *,
    capacity_qps: float,
    bench: Any,
    seed: int,
) -> tuple[dict[str, Any], str]:
    """Server rates and the saturation sweep, replicated, then offline throughput; the evidence
    and a CSV of every served request at the server rates (replicate, arrival, start, end,
    batch), so any figure can be recomputed from the saved schedule."""
    started = time.perf_counter()
    # default bound: 10x the p50 call, and never under the generator's own jitter (a few ms here)
    bound = bench.latency_bound_ms or max(10 * 1e3 / capacity_qps, MIN_BOUND_MS)
    for side, call in calls.items():  # warm both the unbatched and the batched shapes
        size = int(modes[side]["max_batch_size"])
        serving.offline(call, feeds, 4 * size, size)
    buf = io.StringIO()
    buf.write(TRACE_HEADER + "\n")
    trace = csv.writer(buf, lineterminator="\n")
    seeds = replicate_seeds(seed, bench.server_replicates)
    rows: list[dict[str, Any]] = []
    sweeps: list[dict[str, Any]] = []
    for r, s in enumerate(seeds):
        order = SIDES if r % 2 == 0 else SIDES[::-1]  # who goes first alternates: drift cancels
        t0 = time.perf_counter()
        more, pair = _replicate(
            calls,
            feeds,
            modes,
            order,
            bench=bench,
            capacity_qps=capacity_qps,
            seed=s,
            replicate=r,
            bound=bound,
            trace=trace,
        )
        rows += more
        wall = time.perf_counter() - t0  # s: this replicate's rates and sweeps
        sweeps.append({"replicate": r, "seed": s, "order": list(order), **pair, "wall_s": wall})
    off = {
        side: serving.offline(
            calls[side], feeds, bench.offline_requests, _mode(modes, side)["max_batch_size"]
        )
        for side in SIDES
    }
    evidence = {
        "seed": seed,
        "replicates": len(seeds),
        "seeds": seeds,  # one arrival seed per replicate
        "confidence": bench.confidence,  # the level of the verdict's interval over replicates
        "capacity_qps": capacity_qps,  # 1 / the baseline's p50 at batch 1, single stream
        "latency_bound_ms": bound,
        "serving": modes,
        "rates": rows,  # every replicate's rows, in the order run
        "sweeps": sweeps,  # one per replicate: each side's sweep, refined
        # the lower median over replicates, for the dashboard; the verdict reads `sweeps`
        "saturation": {
            side: {
                "saturation_qps": lower_median([w[side]["saturation_qps"] for w in sweeps]),
                "per_replicate_qps": [w[side]["saturation_qps"] for w in sweeps],
            }
            for side in SIDES
        },
        "offline": off,
        "wall_s": time.perf_counter() - started,  # s: the whole serving measurement
    }
    return evidence, buf.getvalue()
