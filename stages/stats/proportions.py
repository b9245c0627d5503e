"""Proportions and paired accuracy: the Wilson and Clopper-Pearson intervals of a proportion,
the exact McNemar test and the candidate-minus-baseline accuracy on paired predictions."""

from __future__ import annotations

from stages.stats.checks import check_confidence, check_counts, require
from stages.stats.interval import Interval

# scipy.stats and statsmodels load in about 1.5 s, which every stage would pay on import:
# the functions that need them import them.


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """Proportion successes/n with its Wilson score interval."""
    require(n >= 1, f"n must be >= 1, got {n}")
    require(0 <= successes <= n, f"successes must be in [0, n={n}], got {successes}")
    check_confidence(confidence)
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(successes, n, alpha=1 - confidence, method="wilson")
    # The Wilson bounds are exactly 0 at successes=0 and 1 at successes=n; statsmodels can leave
    # float residue there (e.g. 7e-18), so pin them.
    low = 0.0 if successes == 0 else max(0.0, float(low))
    high = 1.0 if successes == n else min(1.0, float(high))
    return Interval(successes / n, low, high)


def mcnemar_exact(right_to_wrong: int, wrong_to_right: int) -> float:
    """Exact (binomial) McNemar p-value for the discordant pair counts; 1.0 when both are 0."""
    check_counts(right_to_wrong=right_to_wrong, wrong_to_right=wrong_to_right)
    if right_to_wrong == wrong_to_right == 0:
        return 1.0
    # Only the off-diagonal (discordant) cells enter the test.
    table = [[0, right_to_wrong], [wrong_to_right, 0]]
    from statsmodels.stats.contingency_tables import mcnemar

    return float(mcnemar(table, exact=True).pvalue)


def clopper_pearson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a proportion; (0, 1) when n is 0."""
    check_counts(successes=successes, n=n)
    check_confidence(confidence)
    if n == 0:
        return 0.0, 1.0
    from scipy import stats

    ci = stats.binomtest(successes, n).proportion_ci(confidence, method="exact")
    return float(ci.low), float(ci.high)


def paired_accuracy_difference(
    right_to_wrong: int, wrong_to_right: int, n: int, confidence: float = 0.95
) -> Interval:
    """Candidate-minus-baseline accuracy on paired predictions, with the exact conditional
    interval: given the m = right_to_wrong + wrong_to_right flips, wrong_to_right is binomial
    (m, pi) and the difference is m (2 pi - 1) / n; pi's Clopper-Pearson interval excludes 1/2
    exactly when the exact McNemar test rejects at 1 - confidence, so the two always agree. With
    no flips the interval is +-(the Clopper-Pearson upper bound of 0 flips in n rows), not [0, 0].
    """
    check_counts(right_to_wrong=right_to_wrong, wrong_to_right=wrong_to_right)
    require(n >= 1, f"n must be >= 1, got {n}")
    b, c = right_to_wrong, wrong_to_right
    require(b + c <= n, f"right_to_wrong + wrong_to_right must be <= n={n}, got {b + c}")
    check_confidence(confidence)
    m = b + c
    estimate = (c - b) / n
    if m == 0:
        reach = clopper_pearson(0, n, confidence)[1]
        return Interval(0.0, -reach, reach)
    low, high = clopper_pearson(c, m, confidence)
    scale = m / n
    return Interval(
        estimate, min(estimate, scale * (2 * low - 1)), max(estimate, scale * (2 * high - 1))
    )
