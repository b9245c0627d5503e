"""Argument checks of the load generator (stages.measure.serving): each raises ValueError with a
message naming the argument and what it must be."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np

from stages.stats.checks import require


def positive(name: str, value: float) -> None:
    require(
        isinstance(value, numbers.Real) and math.isfinite(value) and value > 0,
        f"{name} must be a finite number > 0, got {value!r}",
    )


def check_feeds(feeds: Sequence[object]) -> None:
    require(len(feeds) >= 1, "feeds is empty; at least 1 request feed is needed")


def check_batching(max_batch_size: int, max_queue_delay_ms: float) -> None:
    require(
        isinstance(max_batch_size, int | np.integer) and max_batch_size >= 1,
        f"max_batch_size must be an integer >= 1, got {max_batch_size!r}",
    )
    require(
        isinstance(max_queue_delay_ms, numbers.Real)
        and math.isfinite(max_queue_delay_ms)
        and max_queue_delay_ms >= 0,
        f"max_queue_delay_ms must be a finite number >= 0, got {max_queue_delay_ms!r}",
    )
