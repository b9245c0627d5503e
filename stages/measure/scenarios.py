"""Load scenarios after MLPerf's LoadGen, for both sides: server (seeded Poisson arrivals at
rates below, near and above the baseline's capacity), a saturation sweep, and offline."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from stages.measure import serving
from stages.measure.timing import BASELINE, CANDIDATE

Feed = dict[str, Any]
MIN_BOUND_MS = (
    5.0  # ms: a p99 bound tighter than the load generator's scheduling jitter means nothing
)


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


def run(
    calls: dict[str, serving.Call],
    feeds: Sequence[Feed],
    modes: dict[str, dict[str, float]],
    *,
    capacity_qps: float,
    bench: Any,
    seed: int,
) -> tuple[dict[str, Any], str]:
    """Server rates, the saturation sweep and offline throughput; the evidence and a CSV of
    every served request at the server rates (arrival, start, end, batch), so any figure can be
    recomputed from the saved schedule."""
    # default bound: 10x the p50 call, and never under the generator's own jitter (a few ms here)
    bound = bench.latency_bound_ms or max(10 * 1e3 / capacity_qps, MIN_BOUND_MS)
    for side, call in calls.items():  # warm both the unbatched and the batched shapes
        serving.offline(
            call, feeds, 4 * int(modes[side]["max_batch_size"]), int(modes[side]["max_batch_size"])
        )
    rows, buf = [], io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["rate_qps", "side", "request", "arrival_s", "start_s", "end_s", "batch"])
    for factor in bench.server_load_factors:
        rate = factor * capacity_qps
        arrivals = serving.poisson_arrivals(rate, bench.server_duration_s, seed)  # both sides alike
        row: dict[str, Any] = {"factor": factor, "rate_qps": rate, "requests": int(arrivals.size)}
        for side in (BASELINE, CANDIDATE):
            result = serving.serve(
                calls[side],
                feeds,
                arrivals,
                max_batch_size=int(modes[side]["max_batch_size"]),
                max_queue_delay_ms=float(modes[side]["max_queue_delay_ms"]),
                max_seconds=3 * bench.server_duration_s,
            )
            row[side] = result.summary(bound)
            for i in range(result.arrival_s.size):
                w.writerow(
                    [
                        f"{rate:.3f}",
                        side,
                        i,
                        f"{result.arrival_s[i]:.6f}",
                        f"{result.start_s[i]:.6f}",
                        f"{result.end_s[i]:.6f}",
                        int(result.batch_of[i]),
                    ]
                )
        rows.append(row)
    sweep = {
        side: serving.saturation(
            calls[side],
            feeds,
            rates_qps=[f * capacity_qps for f in bench.server_sweep_factors],
            duration_s=bench.server_duration_s,
            seed=seed,
            p99_bound_ms=bound,
            max_batch_size=int(modes[side]["max_batch_size"]),
            max_queue_delay_ms=float(modes[side]["max_queue_delay_ms"]),
        )
        for side in (BASELINE, CANDIDATE)
    }
    off = {
        side: serving.offline(
            calls[side], feeds, bench.offline_requests, int(modes[side]["max_batch_size"])
        )
        for side in (BASELINE, CANDIDATE)
    }
    evidence = {
        "seed": seed,
        "capacity_qps": capacity_qps,  # 1 / the baseline's p50 at batch 1, single stream
        "latency_bound_ms": bound,
        "serving": modes,
        "rates": rows,
        "saturation": sweep,
        "offline": off,
    }
    return evidence, buf.getvalue()
