"""Latency intervals by the paired round bootstrap, or the session bootstrap across sessions.

Calls in one interleaved round share machine state (clocks, heat, background load), so bootstraps
resample whole rounds, with the same round indices for both sides so that drift cancels in ratios.
When rounds ran in several worker sessions (processes), a persistent per-session offset shifts all
rounds of a session, so the bootstrap resamples sessions first and rounds within them second.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stages.stats import rounds
from stages.stats.checks import check_confidence, check_q, require
from stages.stats.interval import Interval
from stages.stats.rounds import Stat, as_rounds, side_ratio
from stages.stats.sessions import session_ci, session_groups

# scipy.stats and statsmodels load in about 1.5 s, which every stage would pay on import:
# the functions that need them import them.


def _check_resampling(confidence: float, n_resamples: int) -> None:
    check_confidence(confidence)
    require(n_resamples >= 1, f"n_resamples must be >= 1, got {n_resamples}")


def _round_ci(
    sides: list[list[np.ndarray]], stat: Stat, confidence: float, n_resamples: int, seed: int
) -> Interval:
    """Percentile round-bootstrap of stat(side 0), or of stat(side 0) / stat(side 1)."""
    _check_resampling(confidence, n_resamples)
    n_calls = sum(r.size for side in sides for r in side)

    def statistic(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        idx = np.moveaxis(idx, axis, -1)
        rows = idx.reshape(-1, idx.shape[-1])
        return side_ratio(sides, rows, stat).reshape(idx.shape[:-1])

    idx = np.arange(len(sides[0]))
    from scipy import stats

    res = stats.bootstrap(
        (idx,),
        statistic,
        n_resamples=n_resamples,
        batch=max(1, rounds.MAX_BATCH_ELEMENTS // n_calls),
        vectorized=True,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    ci = res.confidence_interval
    return Interval(float(statistic(idx)), float(ci.low), float(ci.high))


def _bootstrap_ci(
    sides: list[list[np.ndarray]],
    stat: Stat,
    confidence: float,
    n_resamples: int,
    seed: int,
    sessions: Sequence[int] | None,
) -> Interval:
    """The round bootstrap, or the two-stage session bootstrap when rounds span 2+ sessions."""
    _check_resampling(confidence, n_resamples)
    if sessions is None:
        return _round_ci(sides, stat, confidence, n_resamples, seed)
    groups = session_groups(sessions, len(sides[0]))
    if len(groups) == 1:
        return _round_ci(sides, stat, confidence, n_resamples, seed)
    return session_ci(sides, stat, groups, confidence, n_resamples, seed)


def _ratio_sides(
    a_rounds: Sequence[np.ndarray], b_rounds: Sequence[np.ndarray]
) -> list[list[np.ndarray]]:
    a = as_rounds(a_rounds, "a_rounds", positive=True)
    b = as_rounds(b_rounds, "b_rounds", positive=True)
    require(
        len(a) == len(b),
        f"a_rounds and b_rounds must have the same number of rounds, got {len(a)} and {len(b)}",
    )
    return [a, b]


def percentile_ratio_ci(
    a_rounds: Sequence[np.ndarray],
    b_rounds: Sequence[np.ndarray],
    q: float,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    sessions: Sequence[int] | None = None,
) -> Interval:
    """Ratio of pooled q-th percentiles (A / B) with a paired round-bootstrap interval.

    sessions: the session each round ran in (one id per round, shared by both sides); with 2 or
    more distinct sessions the interval is the paired two-stage session bootstrap
    (sessions.session_ci).
    """
    check_q(q)
    sides = _ratio_sides(a_rounds, b_rounds)
    return _bootstrap_ci(
        sides, lambda x: np.percentile(x, q, axis=-1), confidence, n_resamples, seed, sessions
    )


def mean_ratio_ci(
    a_rounds: Sequence[np.ndarray],
    b_rounds: Sequence[np.ndarray],
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    sessions: Sequence[int] | None = None,
) -> Interval:
    """Ratio of pooled means (A / B) with a paired round-bootstrap interval (sessions: as in
    percentile_ratio_ci)."""
    sides = _ratio_sides(a_rounds, b_rounds)
    return _bootstrap_ci(
        sides, lambda x: np.mean(x, axis=-1), confidence, n_resamples, seed, sessions
    )


def percentile_ci(
    rounds: Sequence[np.ndarray],
    q: float,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    sessions: Sequence[int] | None = None,
) -> Interval:
    """Pooled q-th percentile of one side with a round-bootstrap interval (sessions: as in
    percentile_ratio_ci)."""
    check_q(q)
    sides = [as_rounds(rounds, "rounds", positive=False)]
    return _bootstrap_ci(
        sides, lambda x: np.percentile(x, q, axis=-1), confidence, n_resamples, seed, sessions
    )
