"""Persistent shifts in a series of runs: e-divisive change points (Matteson and James, 2014).

The split of a segment that maximizes the energy distance between its two sides is kept when a
permutation test says such a split is rare in the same values shuffled, then again inside each
side. A shift must last `MIN_SIZE` runs and move the mean by `MIN_CHANGE` (3 %: two sessions of
one model differ persistently by 1-2 % here).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

ALPHA = 0.05  # permutation p-value at which a split is kept (Matteson and James's default)
MIN_SIZE = 3  # runs: a shift must last this long (one outlier run is not a shift)
MIN_CHANGE = 0.03  # relative change of the mean below which a shift is not reported


@dataclass(frozen=True)
class Shift:
    run: int  # 1-based position in its series of the first run after the shift
    before: float  # mean p50 speedup of the segment before
    after: float  # and after
    pvalue: float  # permutation p-value when the split was accepted

    @property
    def change(self) -> float:
        return self.after / self.before - 1


def _best_split(x: np.ndarray, min_size: int) -> tuple[np.ndarray, np.ndarray]:
    """For each row of `x` (k series of one segment), the split tau with the largest energy
    statistic q = n m / (n + m) * (2 E|X-Y| - E|X-X'| - E|Y-Y'|) between X = x[:tau] and
    Y = x[tau:kappa], over every end kappa as Matteson and James do (a dip in the middle of a
    segment shows only so), U-statistics within each side: returns (tau, q), each of shape (k,)."""
    k, n = x.shape
    s = np.zeros((k, n + 1, n + 1))
    s[:, 1:, 1:] = np.abs(x[:, :, None] - x[:, None, :]).cumsum(1).cumsum(2)  # sums of d[:i, :j]
    tau = np.arange(min_size, n - min_size + 1)[:, None]
    kappa = np.arange(2 * min_size, n + 1)[None, :]
    ok = kappa - tau >= min_size
    t, c = np.broadcast_arrays(tau, np.where(ok, kappa, n))  # masked pairs: any valid index
    nx, ny = t, np.where(ok, c - t, min_size)
    tt, tc = s[:, t, t], s[:, t, c]
    e = (
        2 * (tc - tt) / (nx * ny)
        - tt / (nx * (nx - 1))
        - (s[:, c, c] - 2 * tc + tt) / (ny * (ny - 1))
    )
    q = np.where(ok, nx * ny / (nx + ny) * e, -np.inf).reshape(k, -1)
    best = np.argmax(q, axis=1)
    return t.reshape(-1)[best], q[np.arange(k), best]


def _segments(bounds: list[int], min_size: int) -> list[tuple[int, int]]:
    return [(a, b) for a, b in pairwise(bounds) if b - a >= 2 * min_size]


def change_points(
    values: Iterable[float],
    *,
    alpha: float = ALPHA,
    permutations: int = 499,
    min_size: int = MIN_SIZE,
    min_change: float = MIN_CHANGE,
    seed: int = 0,
) -> list[Shift]:
    """Persistent shifts in a series, oldest first (e-divisive with a permutation test)."""
    x = np.asarray(list(values), dtype=float)
    rng = np.random.default_rng(seed)
    bounds, pvalues = [0, len(x)], {}
    while segments := _segments(bounds, min_size):
        found = [
            (a + int(t[0]), float(q[0]))
            for a, b in segments
            for t, q in [_best_split(x[None, a:b], min_size)]
        ]
        at, q_obs = max(found, key=lambda f: f[1])
        # the same test on the values shuffled within each segment (the splits found stay)
        q_perm = np.full(permutations, -np.inf)
        for a, b in segments:
            chunk = max(1, 500_000 // (b - a) ** 2)  # arrays of k n^2 floats, a few MB
            for i in range(0, permutations, chunk):
                rows = rng.permuted(np.tile(x[a:b], (min(chunk, permutations - i), 1)), axis=1)
                q_perm[i : i + len(rows)] = np.maximum(
                    q_perm[i : i + len(rows)], _best_split(rows, min_size)[1]
                )
        pvalues[at] = (int(np.sum(q_perm >= q_obs)) + 1) / (permutations + 1)
        if pvalues[at] > alpha:
            break
        bounds = sorted([*bounds, at])
    return _merge_small(x, bounds, min_change, pvalues)


def _merge_small(
    x: np.ndarray, bounds: list[int], min_change: float, pvalues: dict[int, float]
) -> list[Shift]:
    """Drop the smallest shift while any moves the mean by less than `min_change` (as Hunter's
    merge step does), recomputing the means of the segments it joined."""
    bounds = list(bounds)
    while True:
        means = [float(x[a:b].mean()) for a, b in pairwise(bounds)]
        shifts = [
            Shift(at + 1, means[i], means[i + 1], pvalues[at]) for i, at in enumerate(bounds[1:-1])
        ]
        small = [s for s in shifts if abs(s.change) < min_change]
        if not small:
            return shifts
        bounds.remove(min(small, key=lambda s: abs(s.change)).run - 1)


def describe(shifts: list[Shift]) -> str:
    """One table cell: "shift at run 11 (-7.2 %)", or "" when the series is stable."""
    if not shifts:
        return ""
    runs = ", ".join(f"{s.run} ({s.change:+.1%})" for s in shifts).replace("%", " %")
    return f"shift{'s' if len(shifts) > 1 else ''} at run{'s' if len(shifts) > 1 else ''} {runs}"
