"""Percentile tails: whether enough calls lie beyond a percentile, and distribution-free
intervals of a percentile and of a ratio of percentiles from order statistics."""

from __future__ import annotations

import math

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
    from scipy import stats

    alpha, p = 1 - confidence, q / 100
    lo_rank = int(stats.binom.ppf(alpha / 2, n, p))  # P(B < lo_rank) <= alpha / 2
    hi_rank = int(stats.binom.ppf(1 - alpha / 2, n, p)) + 1  # P(B >= hi_rank) <= alpha / 2
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
