"""Rounds of timed calls: their validation, and a statistic over the pooled calls of resampled
rounds, of one side or as the ratio of two sides resampled alike."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from stages.stats.checks import require

Stat = Callable[[np.ndarray], np.ndarray]  # reduces the last axis, e.g. a percentile of calls

# Upper bound on the float64 elements materialised per bootstrap batch (~32 MB) so that long
# rounds or many resamples do not exhaust memory.
MAX_BATCH_ELEMENTS = 4_000_000


def as_rounds(rounds: Sequence[np.ndarray], name: str, positive: bool) -> list[np.ndarray]:
    """Validate rounds and return them as 1-D float64 arrays."""
    require(len(rounds) >= 2, f"{name} must hold at least 2 rounds, got {len(rounds)}")
    out = []
    for i, r in enumerate(rounds):
        arr = np.asarray(r, dtype=np.float64).ravel()
        require(arr.size > 0, f"{name}[{i}] is empty; every round needs at least 1 sample")
        require(bool(np.all(np.isfinite(arr))), f"{name}[{i}] has non-finite values; need finite")
        require(
            not positive or bool(np.all(arr > 0)),
            f"{name}[{i}] has values <= 0; ratio sides must be positive",
        )
        out.append(arr)
    return out


def pooled_stat(rounds: list[np.ndarray], idx: np.ndarray, stat: Stat) -> np.ndarray:
    """Statistic over the pooled calls of each row of round indices: (k, n_rounds) -> (k,)."""
    if len({r.size for r in rounds}) == 1:
        # Equal-length rounds stack to (n_rounds, calls); fancy indexing builds all resamples.
        return stat(np.stack(rounds)[idx].reshape(len(idx), -1))
    # Unequal round lengths cannot be stacked; loop over resamples (slower but exact).
    return np.array([stat(np.concatenate([rounds[i] for i in row])) for row in idx])


def side_ratio(sides: list[list[np.ndarray]], rows: np.ndarray, stat: Stat) -> np.ndarray:
    """stat(side 0), or stat(side 0) / stat(side 1), per row of round indices: (k, n) -> (k,)."""
    # The same resampled round indices drive every side: the paired (cluster) bootstrap.
    values = [pooled_stat(side, rows, stat) for side in sides]
    return values[0] if len(values) == 1 else values[0] / values[1]
