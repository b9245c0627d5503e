"""Percentile tails: whether enough calls lie beyond a percentile, which tail percentile the calls
support, and distribution-free intervals of a percentile and of a ratio of percentiles from order
statistics."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

from stages.stats.checks import check_confidence, check_counts, check_q, require
from stages.stats.interval import Interval

# scipy.stats and statsmodels load in about 1.5 s, which every stage would pay on import:
# the functions that need them import them.


def tail_is_reliable(n_samples: int, q: float, min_tail: int = 10) -> bool:
    """True when at least min_tail samples lie beyond the q-th percentile."""
    check_counts(n_samples=n_samples, min_tail=min_tail)
    check_q(q)
    # Tolerance absorbs float error in (100 - q), e.g. 10_000 calls at q=99.9 is exactly 10.
    return n_samples * (100.0 - q) / 100.0 >= min_tail - 1e-9


TAIL_CHOICES = (99, 95, 90)  # the tail percentiles a verdict may judge, highest first
# A tail bound is tight when it pins the share of calls beyond the percentile within this factor
# either way: p99's interval between p98 and p99.5 (MLPerf pins it within 1/20, on 10^5 calls).
TAIL_PIN = 2.0
_PIN_SEARCH = 4000  # Poisson quantiles searched by tail_calls_needed (far past where both hold)


def _rank_bounds(n: int, q: float, confidence: float) -> tuple[int, int]:
    """1-based ranks of the order statistics that bound the q-th percentile of n samples at
    `confidence`: 0 or n + 1 for a bound the sample cannot reach."""
    from scipy import stats

    alpha, p = 1 - confidence, q / 100
    lo_rank = int(stats.binom.ppf(alpha / 2, n, p))  # P(B < lo_rank) <= alpha / 2
    hi_rank = int(stats.binom.ppf(1 - alpha / 2, n, p)) + 1  # P(B >= hi_rank) <= alpha / 2
    return lo_rank, hi_rank


@functools.lru_cache(maxsize=32)
def tail_calls_needed(confidence: float) -> int:
    """The fewest calls beyond a tail percentile for the order-statistic interval of a ratio of
    two such percentiles (percentile_ratio_order_ci at `confidence`, each side's bound at
    1 - (1 - confidence) / 2) to be bounded on both sides and tight: 23 at 0.95.

    The rule is MLPerf's (a minimum sample count per percentile) with a looser margin. The calls
    beyond the q-th percentile are binomial, in the tail a Poisson count C of mean t = n (1 -
    q/100); the interval's upper bound is the order statistic with about C_{a/2} - 1 calls above
    it and its lower bound the one with C_{1-a/2} (a: each bound's share, as in
    quantile_order_ci). Tight: the upper bound at or below the percentile with t / TAIL_PIN
    beyond it and the lower bound at or above the one with TAIL_PIN t (p99: between p98 and
    p99.5). The count is the smallest integer from which both hold for every larger (real) t, so
    it depends on the confidence only: 23 at 0.95, so p99 from 2300 calls, p95 from 460 and p90
    from 230 (a normal approximation, MLPerf's n = z^2 p (1 - p) / m^2 with m = (1 - p) /
    TAIL_PIN, gives about 20). What it avoids: 600 calls put 6 beyond the p99, whose upper bound
    is then the slowest call or two, and one slow stretch decides it."""
    check_confidence(confidence)
    from scipy import special

    a = (1 - confidence) / 4  # each bound's share: half of each side's 1 - (1 - confidence) / 2
    # Poisson quantiles in t: C_u(t) >= m exactly when t > gammainccinv(m, u), and C_u(t) <= k
    # exactly when t <= gammainccinv(k + 1, u).
    m = np.arange(2, _PIN_SEARCH, dtype=np.float64)
    # upper: C_a(t) - 1 >= t / TAIL_PIN, i.e. C_a(t) >= ceil(t / TAIL_PIN + 1) = m on
    # t in (TAIL_PIN (m - 2), TAIL_PIN (m - 1)]; it fails there up to gammainccinv(m, a)
    reach = special.gammainccinv(m, a)
    fails = reach > TAIL_PIN * (m - 2)
    last = float(np.max(np.minimum(TAIL_PIN * (m - 1), reach)[fails], initial=0.0))
    # lower: C_{1-a}(t) <= TAIL_PIN t, i.e. <= k on t in [k / TAIL_PIN, (k + 1) / TAIL_PIN); it
    # fails there above gammainccinv(k + 1, 1 - a), up to (not at) (k + 1) / TAIL_PIN
    k = np.arange(0, _PIN_SEARCH, dtype=np.float64)
    ends = (k + 1) / TAIL_PIN
    open_end = float(np.max(ends[special.gammainccinv(k + 1, 1 - a) < ends], initial=0.0))
    return max(math.floor(last) + 1, math.ceil(open_end))


def calls_beyond(n_calls: int, q: float) -> float:
    """The calls expected beyond the q-th percentile of n_calls."""
    check_counts(n_calls=n_calls)
    check_q(q)
    return n_calls * (100.0 - q) / 100.0


def tail_percentile(n_calls: int, confidence: float, choices: Sequence[int] = TAIL_CHOICES) -> int:
    """The highest percentile of `choices` the calls support: at least tail_calls_needed calls
    beyond it (600 calls at 0.95: p95, with 30 beyond it; p99 would have 6). When none is
    supported, the lowest: its interval then stays honest (wide), and no higher one is better."""
    require(len(choices) > 0, "choices must name at least one percentile")
    need = tail_calls_needed(confidence)
    ranked = sorted(choices, reverse=True)
    # Tolerance absorbs float error in (100 - q), e.g. 2300 calls at q=99 is exactly 23.
    supported = [q for q in ranked if calls_beyond(n_calls, q) >= need - 1e-9]
    return supported[0] if supported else ranked[-1]


def quantile_order_ci(
    samples: np.ndarray, q: float, confidence: float = 0.95
) -> tuple[float, float]:
    """Distribution-free interval of the q-th percentile from order statistics: the ranks whose
    binomial (n, q/100) coverage reaches `confidence`. A bound the sample cannot reach (too few
    calls for the tail) is 0 below or inf above: an honest interval for a p99 on few calls."""
    check_q(q)
    check_confidence(confidence)
    x = np.sort(np.asarray(samples, dtype=np.float64).ravel())
    n = x.size
    require(n >= 1, "samples must be non-empty")
    lo_rank, hi_rank = _rank_bounds(n, q, confidence)
    low = float(x[lo_rank - 1]) if lo_rank >= 1 else 0.0
    high = float(x[hi_rank - 1]) if hi_rank <= n else math.inf
    return low, high


def percentile_ratio_order_ci(
    a: np.ndarray, b: np.ndarray, q: float, confidence: float = 0.95
) -> Interval:
    """Ratio of q-th percentiles (A / B) with each side's order-statistic interval taken at
    1 - (1 - confidence) / 2, so that the ratio's bounds hold jointly at `confidence`."""
    each = 1 - (1 - confidence) / 2
    a_lo, a_hi = quantile_order_ci(a, q, each)
    b_lo, b_hi = quantile_order_ci(b, q, each)
    estimate = float(np.percentile(a, q) / np.percentile(b, q))
    low = a_lo / b_hi if b_hi < math.inf else 0.0
    high = a_hi / b_lo if b_lo > 0 else math.inf
    return Interval(estimate, min(low, estimate), max(high, estimate))
