"""The timed loop itself: blocks of consecutive calls, and the warm-up before them.

Kept free of the statistics (numpy only), so that a timing worker process starts in a fraction
of a second; `timing` runs these in the benchmark process, `worker` in each worker process.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

Call = Callable[[dict[str, np.ndarray]], Any]
Feeds = Sequence[dict[str, np.ndarray]]

WARMUP_BLOCKS = 5  # at most this many warm-up blocks after the first, per side and session
WARMUP_AGREE = 0.05  # successive warm-up block medians within 5 %: warm
WARMUP_BLOCK_S = 0.1  # s: a warm-up block holds at most the calls that fit in about this long


def time_block(call: Call, feeds: Feeds, start: int, n: int) -> np.ndarray:
    """Latency in ms of n consecutive calls, feeding inputs start, start+1, ... (cycled)."""
    out = np.empty(n, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(n):
        feed = feeds[(start + i) % len(feeds)]
        t0 = clock()
        call(feed)
        out[i] = clock() - t0
    return out / 1e6


def time_round(
    calls: Mapping[str, Call], feeds: Feeds, order: Sequence[str], start: int, n: int
) -> dict[str, np.ndarray]:
    """One round: a block of n calls per side, in `order`, all on the same inputs, with the
    garbage collector off inside it (no collector pause in a timed block)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return {side: time_block(calls[side], feeds, start, n) for side in order}
    finally:
        if was_enabled:
            gc.enable()


def warm_up(
    calls: Mapping[str, Call],
    feeds: Feeds,
    minimum: int,
    sides: Sequence[str],
    again: bool = False,
) -> tuple[dict[str, int], dict[str, float]]:
    """Warm each side (caches, allocator arenas, lazy kernel choice) in blocks of `minimum`
    calls (fewer for slow calls: a block lasts about WARMUP_BLOCK_S) until two successive block
    medians agree within 5 % (at most WARMUP_BLOCKS more blocks); `again`: the sessions are
    warm from an earlier timing and only meet new inputs, one block is enough. Returns the calls
    used and the last block median (ms) per side (none without warm-up)."""
    used = dict.fromkeys(sides, 0)
    median: dict[str, float] = {}
    for side in sides if minimum > 0 else ():
        first_ms = float(time_block(calls[side], feeds, 0, 1)[0])
        n = max(2, min(minimum, int(WARMUP_BLOCK_S * 1e3 / max(first_ms, 1e-3))))
        prev = float(np.median(time_block(calls[side], feeds, 0, n)))
        blocks = 1
        while blocks <= WARMUP_BLOCKS and not again:
            now = float(np.median(time_block(calls[side], feeds, 0, n)))
            blocks += 1
            warm, prev = abs(now / prev - 1) <= WARMUP_AGREE, now
            if warm:
                break
        used[side] = 1 + blocks * n
        median[side] = prev
    return used, median
