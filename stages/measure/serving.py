"""Load generation after MLPerf Inference's LoadGen scenarios: server (Poisson arrivals) and
offline.

Batching changes no weights; it changes how requests meet the model. The server scenario replays a
seeded Poisson arrival schedule in real time against a `call`; a dynamic batcher in front of it
holds requests until `max_batch_size` are waiting or the oldest has waited `max_queue_delay_ms`,
then runs them as one batch. With max_batch_size=1 and no delay it is the plain one-request-per-call
server, so the baseline and the batching candidate face the identical schedule.

Everything runs in the calling thread: a discrete-event loop on `time.perf_counter()`, with no
helper threads, so a stopped or failed run leaves nothing behind. Waiting for an arrival or a queue
deadline sleeps, then spins: `time.sleep` wakes 50-100 us late on an idle Linux machine (timer
slack plus wake-up) and milliseconds late on a busy one, which would show up as queue delay the
batcher never asked for. So the loop sleeps until SPIN_S before the target and spins on the clock
for the rest: the spin costs at most SPIN_S of one core per wait, and only while the server is idle
(never during a call), in exchange for microsecond precision when the core is not taken away.
Spinning the whole wait is worse on a busy machine: the scheduler preempts a long spinner in favour
of woken sleepers, and a spin-only loop started late more often than the hybrid in trials here.
A call is never interrupted: `max_seconds` is checked between calls, so a run can overrun it by at
most one call. Times in a ServerResult are seconds from the start of the schedule. The saturation
sweep that drives `serve` rate by rate is in stages.measure.scenarios.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from stages.measure.server_result import ServerResult
from stages.measure.serving_checks import check_batching, check_feeds, positive
from stages.stats.checks import require

Feed = dict[str, np.ndarray]  # one request: arrays with a leading batch axis of 1
Call = Callable[[Feed], Any]  # runs the model on a (possibly batched) feed

SPIN_S = 0.0005  # s: the last stretch before a target time is spun on the clock, not slept
MAX_ARRIVALS = 10_000_000  # expected arrivals above this are not a schedule one thread can serve


def poisson_arrivals(rate_qps: float, duration_s: float, seed: int) -> np.ndarray:
    """Arrival times in s from 0 of a seeded Poisson process at rate_qps, all < duration_s."""
    positive("rate_qps", rate_qps)
    positive("duration_s", duration_s)
    expected = rate_qps * duration_s
    require(
        expected <= MAX_ARRIVALS,
        f"rate_qps * duration_s = {expected:g} expected arrivals; at most {MAX_ARRIVALS:,} allowed",
    )
    rng = np.random.default_rng(seed)
    # Standard exponential gaps divided by the rate: for one seed, the schedule at rate r over d
    # seconds is the schedule at rate 1 over r*d seconds, scaled by 1/r (common random numbers
    # across a saturation sweep). Drawn in chunks sized by r*d only, so a seed fixes the result.
    chunk = int(expected + 6 * math.sqrt(expected) + 16)
    total, parts = 0.0, []
    while total < expected:  # in units of 1/rate: the horizon is rate * duration
        times = total + np.cumsum(rng.standard_exponential(chunk))
        parts.append(times)
        total = float(times[-1])
    units = np.concatenate(parts)
    arrivals = units[units < expected] / rate_qps
    return arrivals[arrivals < duration_s]  # float rounding of the division must not reach it


def _stack(name: str, arrays: list[np.ndarray], pad_value: int) -> np.ndarray:
    a0 = arrays[0]
    for a in arrays[1:]:
        require(a.dtype == a0.dtype, f"input {name!r}: dtypes differ ({a0.dtype} and {a.dtype})")
        require(a.ndim == a0.ndim, f"input {name!r}: ranks differ ({a0.ndim} and {a.ndim})")
    require(a0.ndim >= 1, f"input {name!r} has no leading batch axis (a 0-d array)")
    tails = {a.shape[1:] for a in arrays}
    if len(tails) > 1:
        require(
            a0.ndim == 2 and np.issubdtype(a0.dtype, np.integer),
            f"input {name!r}: shapes beyond the batch axis differ {sorted(tails)}; only 2-D "
            f"integer inputs (token ids, attention masks) are padded, this one is "
            f"{a0.ndim}-D {a0.dtype}",
        )
        width = max(a.shape[1] for a in arrays)
        arrays = [
            np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=pad_value) for a in arrays
        ]
    return np.concatenate(arrays, axis=0)


def collate(feeds: Sequence[Feed], pad_value: int = 0) -> Feed:
    """Concatenate requests along axis 0, right-padding 2-D integer inputs to the longest first."""
    check_feeds(feeds)
    first = feeds[0]
    if len(feeds) == 1:
        return dict(first)  # the unbatched server pays no copy
    for k, f in enumerate(feeds[1:], start=1):
        require(
            f.keys() == first.keys(),
            f"feeds[{k}] has inputs {sorted(f)} but feeds[0] has {sorted(first)}",
        )
    return {name: _stack(name, [np.asarray(f[name]) for f in feeds], pad_value) for name in first}


def late_limit(n: int) -> int:
    """The fewest late requests (over a bound) that surely put the p99 of n latencies (numpy's
    linear interpolation) over it: then the order statistic at floor(0.99 (n - 1)) is late."""
    return n - math.floor(0.99 * (n - 1))


def _wait_until(target: float) -> float:
    """Sleep, then spin, until perf_counter() >= target (s); returns the clock it last read."""
    clock = time.perf_counter
    now = clock()
    if target - now > SPIN_S:
        time.sleep(target - now - SPIN_S)
        now = clock()
    while now < target:
        now = clock()
    return now


def _check_arrivals(arrivals_s: np.ndarray) -> np.ndarray:
    a = np.asarray(arrivals_s, dtype=np.float64)
    require(a.ndim == 1 and a.size >= 1, f"arrivals_s must be a non-empty 1-D array, got {a.shape}")
    require(bool(np.all(np.isfinite(a))), "arrivals_s has non-finite values")
    require(bool(a[0] >= 0), f"arrivals_s must be >= 0, got {a[0]}")
    require(bool(np.all(np.diff(a) >= 0)), "arrivals_s must be sorted ascending")
    return a


def serve(
    call: Call,
    feeds: Sequence[Feed],
    arrivals_s: np.ndarray,
    *,
    max_batch_size: int = 1,
    max_queue_delay_ms: float = 0.0,
    max_seconds: float | None = None,
    give_up_p99_ms: float | None = None,
) -> ServerResult:
    """Replay the arrival schedule in real time through a dynamic batcher in this one thread.

    With give_up_p99_ms, the run stops as soon as its p99 latency must exceed that bound (a
    saturation sweep needs only to know that a rate failed): the requests left count as dropped.
    """
    arrivals = _check_arrivals(arrivals_s)
    check_feeds(feeds)
    check_batching(max_batch_size, max_queue_delay_ms)
    if max_seconds is not None:
        positive("max_seconds", max_seconds)
    if give_up_p99_ms is not None:
        positive("give_up_p99_ms", give_up_p99_ms)
    n, m, size = arrivals.size, len(feeds), int(max_batch_size)
    delay = max_queue_delay_ms / 1e3  # s
    give_up = math.inf if give_up_p99_ms is None else give_up_p99_ms / 1e3  # s of latency
    max_late = late_limit(n)
    late = 0  # requests served after give_up so far
    starts: list[float] = []  # per batch, absolute perf_counter s
    ends: list[float] = []
    sizes: list[int] = []
    clock = time.perf_counter
    gc_was_enabled = gc.isenabled()
    gc.disable()  # no collector pause inside the run
    try:
        t0 = clock()
        # Absolute perf_counter time each request becomes available. Python floats, not numpy:
        # the loop between a wake-up and the call stays in plain Python, which costs a few us
        # even with cold caches, where one numpy call after an idle wait can cost tens of us.
        due = (t0 + arrivals).tolist()
        stop = math.inf if max_seconds is None else t0 + max_seconds
        i = 0  # the oldest request not yet started
        while i < n:
            now = clock()
            if now >= stop:
                break
            if due[i] > now:  # idle with an empty queue: wait for the next arrival
                if due[i] >= stop:
                    break
                now = _wait_until(due[i])
            full = i + size - 1  # the request that would fill the batch
            if delay > 0 and (full >= n or due[full] > now):
                # Wait until the batch fills or the oldest has waited `delay`, whichever is first.
                # The server cannot know the schedule ends, so a tail batch waits out its delay.
                target = due[i] + delay if full >= n else min(due[full], due[i] + delay)
                if target > now:
                    now = _wait_until(target)
            j, last = i + 1, min(i + size, n)
            while j < last and due[j] <= now:  # every request already there, up to the size
                j += 1
            s = clock()
            call(collate([feeds[k % m] for k in range(i, j)]))
            e = clock()
            starts.append(s)
            ends.append(e)
            sizes.append(j - i)
            if give_up < math.inf:
                late += sum(1 for k in range(i, j) if e - due[k] > give_up)
            i = j
            if late >= max_late:
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    served = i
    batch_sizes = np.array(sizes, dtype=np.int64)
    return ServerResult(
        arrival_s=arrivals[:served].copy(),
        start_s=np.repeat(np.array(starts) - t0, batch_sizes),
        end_s=np.repeat(np.array(ends) - t0, batch_sizes),
        batch_of=np.repeat(np.arange(batch_sizes.size), batch_sizes),
        batch_sizes=batch_sizes,
        duration_s=ends[-1] - t0 - float(arrivals[0]) if served else 0.0,
        dropped=n - served,
        gave_up=late >= max_late and served < n,
    )


def offline(call: Call, feeds: Sequence[Feed], n: int, max_batch_size: int) -> dict[str, Any]:
    """All n requests available at once, run in batches of max_batch_size: throughput and time."""
    check_feeds(feeds)
    require(isinstance(n, int | np.integer) and n >= 1, f"n must be an integer >= 1, got {n!r}")
    check_batching(max_batch_size, 0.0)
    m, size = len(feeds), int(max_batch_size)
    per_batch = []
    clock = time.perf_counter
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = clock()
        for i in range(0, n, size):
            s = clock()
            call(collate([feeds[k % m] for k in range(i, min(i + size, n))]))
            per_batch.append(clock() - s)
        seconds = clock() - t0
    finally:
        if gc_was_enabled:
            gc.enable()
    batch_ms = np.array(per_batch) * 1e3
    return {
        "requests": int(n),
        "max_batch_size": size,
        "batches": len(per_batch),
        "seconds": seconds,
        "throughput_qps": n / seconds,
        "batch_p50_ms": float(np.percentile(batch_ms, 50)),
        "batch_p99_ms": float(np.percentile(batch_ms, 99)),
    }
