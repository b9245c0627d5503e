"""Statistics for benchmark verdicts: round-bootstrap latency intervals, accuracy, error metrics.

Calls in one interleaved round share machine state (clocks, heat, background load), so bootstraps
resample whole rounds, with the same round indices for both sides so that drift cancels in ratios.
When rounds ran in several worker sessions (processes), a persistent per-session offset shifts all
rounds of a session, so the bootstrap resamples sessions first and rounds within them second.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

# scipy.stats and statsmodels load in about 1.5 s, which every stage would pay on import:
# the functions that need them import them.

Verdict = Literal["faster", "slower", "no measurable change"]
# What an interval decides against the budget (None while it still straddles a threshold)
FASTER, SLOWER, NO_CHANGE, SHORT = "faster", "slower", "no measurable change", "short of budget"
TAIL_PASS, TAIL_FAIL = "pass", "fail"
Stat = Callable[[np.ndarray], np.ndarray]  # reduces the last axis, e.g. a percentile of calls

# Upper bound on the float64 elements materialised per bootstrap batch (~32 MB) so that long
# rounds or many resamples do not exhaust memory.
_MAX_BATCH_ELEMENTS = 4_000_000


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _check_confidence(confidence: float) -> None:
    _require(0 < confidence < 1, f"confidence must be in (0, 1), got {confidence}")


def _check_q(q: float) -> None:
    _require(0 <= q <= 100, f"q must be in [0, 100], got {q}")


def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        _require(value >= 0, f"{name} must be >= 0, got {value}")


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval."""

    estimate: float
    low: float
    high: float

    def __post_init__(self) -> None:
        _require(
            self.low <= self.high, f"low must be <= high, got low={self.low}, high={self.high}"
        )

    def to_dict(self) -> dict[str, float]:
        """Return the interval as a JSON-friendly dict."""
        return {"estimate": self.estimate, "low": self.low, "high": self.high}

    def contains(self, value: float) -> bool:
        """Return True when value lies inside the closed interval."""
        return self.low <= value <= self.high

    @property
    def half_width_rel(self) -> float:
        """Half-width relative to |estimate|; inf when the estimate is 0."""
        if self.estimate == 0:
            return math.inf
        return (self.high - self.low) / 2 / abs(self.estimate)


def _as_rounds(rounds: Sequence[np.ndarray], name: str, positive: bool) -> list[np.ndarray]:
    """Validate rounds and return them as 1-D float64 arrays."""
    _require(len(rounds) >= 2, f"{name} must hold at least 2 rounds, got {len(rounds)}")
    out = []
    for i, r in enumerate(rounds):
        arr = np.asarray(r, dtype=np.float64).ravel()
        _require(arr.size > 0, f"{name}[{i}] is empty; every round needs at least 1 sample")
        _require(bool(np.all(np.isfinite(arr))), f"{name}[{i}] has non-finite values; need finite")
        _require(
            not positive or bool(np.all(arr > 0)),
            f"{name}[{i}] has values <= 0; ratio sides must be positive",
        )
        out.append(arr)
    return out


def _pooled_stat(rounds: list[np.ndarray], idx: np.ndarray, stat: Stat) -> np.ndarray:
    """Statistic over the pooled calls of each row of round indices: (k, n_rounds) -> (k,)."""
    if len({r.size for r in rounds}) == 1:
        # Equal-length rounds stack to (n_rounds, calls); fancy indexing builds all resamples.
        return stat(np.stack(rounds)[idx].reshape(len(idx), -1))
    # Unequal round lengths cannot be stacked; loop over resamples (slower but exact).
    return np.array([stat(np.concatenate([rounds[i] for i in row])) for row in idx])


def _side_ratio(sides: list[list[np.ndarray]], rows: np.ndarray, stat: Stat) -> np.ndarray:
    """stat(side 0), or stat(side 0) / stat(side 1), per row of round indices: (k, n) -> (k,)."""
    # The same resampled round indices drive every side: the paired (cluster) bootstrap.
    values = [_pooled_stat(side, rows, stat) for side in sides]
    return values[0] if len(values) == 1 else values[0] / values[1]


def _check_resampling(confidence: float, n_resamples: int) -> None:
    _check_confidence(confidence)
    _require(n_resamples >= 1, f"n_resamples must be >= 1, got {n_resamples}")


def _round_ci(
    sides: list[list[np.ndarray]], stat: Stat, confidence: float, n_resamples: int, seed: int
) -> Interval:
    """Percentile round-bootstrap of stat(side 0), or of stat(side 0) / stat(side 1)."""
    _check_resampling(confidence, n_resamples)
    n_calls = sum(r.size for side in sides for r in side)

    def statistic(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        idx = np.moveaxis(idx, axis, -1)
        rows = idx.reshape(-1, idx.shape[-1])
        return _side_ratio(sides, rows, stat).reshape(idx.shape[:-1])

    idx = np.arange(len(sides[0]))
    from scipy import stats

    res = stats.bootstrap(
        (idx,),
        statistic,
        n_resamples=n_resamples,
        batch=max(1, _MAX_BATCH_ELEMENTS // n_calls),
        vectorized=True,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    ci = res.confidence_interval
    return Interval(float(statistic(idx)), float(ci.low), float(ci.high))


def _session_groups(sessions: Sequence[int], n_rounds: int) -> list[np.ndarray]:
    """Validate one session label per round; return each session's round indices (by label)."""
    _require(
        len(sessions) == n_rounds,
        f"sessions must hold one entry per round ({n_rounds} rounds), got {len(sessions)}",
    )
    for i, s in enumerate(sessions):
        _require(
            isinstance(s, int | np.integer) and not isinstance(s, bool | np.bool_),
            f"sessions[{i}] must be an integer session id, got {s!r}",
        )
        _require(s >= 0, f"sessions[{i}] must be >= 0, got {s}")
    _, inverse = np.unique(np.asarray(sessions, dtype=np.int64), return_inverse=True)
    return [np.flatnonzero(inverse == k) for k in range(int(inverse.max()) + 1)]


def _two_stage_rows(
    groups: list[np.ndarray], n_resamples: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw paired two-stage resamples of round indices: S sessions with replacement, then in each
    drawn session as many of its rounds as it has, with replacement. Resamples differ in length
    when sessions do, so they come back padded: (rows (B, S, m), valid mask, length per resample).
    """
    n_sessions = len(groups)
    sizes = np.array([g.size for g in groups])
    width = int(sizes.max())
    table = np.zeros((n_sessions, width), dtype=np.int64)
    for k, g in enumerate(groups):
        table[k, : g.size] = g
    drawn = rng.integers(0, n_sessions, size=(n_resamples, n_sessions))
    n_drawn = sizes[drawn][..., None]  # (B, S, 1): rounds to draw in each drawn session
    pick = rng.integers(0, n_drawn, size=(n_resamples, n_sessions, width))
    mask = np.arange(width) < n_drawn
    return table[drawn[..., None], pick], mask, mask.sum(axis=(1, 2))


def _two_stage_stats(
    sides: list[list[np.ndarray]],
    stat: Stat,
    groups: list[np.ndarray],
    n_resamples: int,
    seed: int,
) -> np.ndarray:
    """The statistic on each of n_resamples paired two-stage resamples of the rounds."""
    rows, mask, lengths = _two_stage_rows(groups, n_resamples, np.random.default_rng(seed))
    longest_round = max(r.size for side in sides for r in side)
    out = np.empty(n_resamples)
    # Resamples of the same number of rounds stack into one matrix (one length when sessions are
    # equal in size); each is evaluated in batches that bound the calls materialised at once.
    for length in np.unique(lengths):
        sel = np.flatnonzero(lengths == length)
        same = rows[sel][mask[sel]].reshape(sel.size, int(length))
        batch = max(1, _MAX_BATCH_ELEMENTS // (int(length) * longest_round))
        for start in range(0, sel.size, batch):
            chunk = slice(start, start + batch)
            out[sel[chunk]] = _side_ratio(sides, same[chunk], stat)
    return out


def _widen(estimate: float, low: float, high: float, factor: float) -> tuple[float, float]:
    """Scale the distances of low and high from the estimate by factor: on the log scale when all
    three are positive (ratios, latencies), else on the linear scale."""
    if estimate > 0 and low > 0 and high > 0:
        return estimate * (low / estimate) ** factor, estimate * (high / estimate) ** factor
    return estimate + (low - estimate) * factor, estimate + (high - estimate) * factor


def _few_sessions_factor(n_sessions: int) -> float:
    """CR1 widening of an interval bootstrapped from n_sessions clusters: sqrt(S / (S - 1))."""
    return math.sqrt(n_sessions / (n_sessions - 1))


def _session_ci(
    sides: list[list[np.ndarray]],
    stat: Stat,
    groups: list[np.ndarray],
    confidence: float,
    n_resamples: int,
    seed: int,
) -> Interval:
    """Percentile paired two-stage bootstrap (sessions, then rounds within each drawn session),
    widened for few sessions.

    A bootstrap over S clusters sees the between-session variance about (S - 1) / S too small, so
    the percentile interval is widened around the estimate, on the log scale, by sqrt(S / (S - 1))
    (the CR1 factor of cluster-robust variances; 1.118 for S = 5). Coverage measured at a nominal
    0.95 with S = 5 sessions of 8 rounds of 20 calls, lognormal offsets per side and session, 400
    simulated experiments each (widened; unwidened; the round bootstrap, sessions=None):
      offsets sigma 0.05, per-call noise 0.03 (sessions dominate): 0.91; 0.88; 0.72
      offsets 0.03, noise 0.1: 0.94; 0.905; 0.725 (tests/test_stats.py runs this case)
      offsets 0.03, noise 0.3: 0.975; 0.96; 0.85
      no offsets, noise 0.3: 1.00; 1.00; 0.96
    Resampling rounds again inside each drawn session counts within-session noise twice, so the
    interval over-covers where sessions matter little; where they dominate it stays a little
    short even widened, since S - 1 = 4 degrees of freedom call for t quantiles (widening by
    t_{S-1} / z as well reached 0.96 there, but 1.00 and twice the round interval's width
    elsewhere, so it is not applied).
    """
    n_sessions = len(groups)
    boot = _two_stage_stats(sides, stat, groups, n_resamples, seed)
    estimate = float(_side_ratio(sides, np.arange(len(sides[0]))[None, :], stat)[0])
    alpha = 1 - confidence
    low, high = (float(v) for v in np.percentile(boot, [50 * alpha, 100 - 50 * alpha]))
    low, high = _widen(estimate, low, high, _few_sessions_factor(n_sessions))
    return Interval(estimate, low, high)


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
    groups = _session_groups(sessions, len(sides[0]))
    if len(groups) == 1:
        return _round_ci(sides, stat, confidence, n_resamples, seed)
    return _session_ci(sides, stat, groups, confidence, n_resamples, seed)


def _ratio_sides(
    a_rounds: Sequence[np.ndarray], b_rounds: Sequence[np.ndarray]
) -> list[list[np.ndarray]]:
    a = _as_rounds(a_rounds, "a_rounds", positive=True)
    b = _as_rounds(b_rounds, "b_rounds", positive=True)
    _require(
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
    more distinct sessions the interval is the paired two-stage session bootstrap (_session_ci).
    """
    _check_q(q)
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
    _check_q(q)
    sides = [_as_rounds(rounds, "rounds", positive=False)]
    return _bootstrap_ci(
        sides, lambda x: np.percentile(x, q, axis=-1), confidence, n_resamples, seed, sessions
    )


def session_spread(rounds: Sequence[np.ndarray], sessions: Sequence[int]) -> dict[str, float]:
    """How one side's latency varies between and within sessions, relative to its median.

    sessions: the number of distinct sessions. between_rel: the standard deviation (ddof=1) across
    sessions of each session's pooled median, over the pooled median of all calls (0.0 with one
    session). within_rel: the mean over sessions of the standard deviation (ddof=1) of the
    session's round medians over the session's pooled median (a session of one round counts 0.0).
    """
    side = _as_rounds(rounds, "rounds", positive=False)
    _require(all(bool(np.all(r > 0)) for r in side), "rounds must hold latencies > 0")
    groups = _session_groups(sessions, len(side))
    pooled = float(np.median(np.concatenate(side)))
    medians, within = [], []
    for g in groups:
        calls = [side[i] for i in g]
        median = float(np.median(np.concatenate(calls)))
        medians.append(median)
        round_medians = [float(np.median(c)) for c in calls]
        within.append(float(np.std(round_medians, ddof=1)) / median if g.size > 1 else 0.0)
    between = float(np.std(medians, ddof=1)) / pooled if len(groups) > 1 else 0.0
    return {
        "sessions": len(groups),
        "between_rel": between,
        "within_rel": float(np.mean(within)),
    }


def tail_is_reliable(n_samples: int, q: float, min_tail: int = 10) -> bool:
    """True when at least min_tail samples lie beyond the q-th percentile."""
    _check_counts(n_samples=n_samples, min_tail=min_tail)
    _check_q(q)
    # Tolerance absorbs float error in (100 - q), e.g. 10_000 calls at q=99.9 is exactly 10.
    return n_samples * (100.0 - q) / 100.0 >= min_tail - 1e-9


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """Proportion successes/n with its Wilson score interval."""
    _require(n >= 1, f"n must be >= 1, got {n}")
    _require(0 <= successes <= n, f"successes must be in [0, n={n}], got {successes}")
    _check_confidence(confidence)
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(successes, n, alpha=1 - confidence, method="wilson")
    # The Wilson bounds are exactly 0 at successes=0 and 1 at successes=n; statsmodels can leave
    # float residue there (e.g. 7e-18), so pin them.
    low = 0.0 if successes == 0 else max(0.0, float(low))
    high = 1.0 if successes == n else min(1.0, float(high))
    return Interval(successes / n, low, high)


def mcnemar_exact(right_to_wrong: int, wrong_to_right: int) -> float:
    """Exact (binomial) McNemar p-value for the discordant pair counts; 1.0 when both are 0."""
    _check_counts(right_to_wrong=right_to_wrong, wrong_to_right=wrong_to_right)
    if right_to_wrong == wrong_to_right == 0:
        return 1.0
    # Only the off-diagonal (discordant) cells enter the test.
    table = [[0, right_to_wrong], [wrong_to_right, 0]]
    from statsmodels.stats.contingency_tables import mcnemar

    return float(mcnemar(table, exact=True).pvalue)


def clopper_pearson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a proportion; (0, 1) when n is 0."""
    _check_counts(successes=successes, n=n)
    _check_confidence(confidence)
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
    _check_counts(right_to_wrong=right_to_wrong, wrong_to_right=wrong_to_right)
    _require(n >= 1, f"n must be >= 1, got {n}")
    b, c = right_to_wrong, wrong_to_right
    _require(b + c <= n, f"right_to_wrong + wrong_to_right must be <= n={n}, got {b + c}")
    _check_confidence(confidence)
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


def quantile_order_ci(
    samples: np.ndarray, q: float, confidence: float = 0.95
) -> tuple[float, float]:
    """Distribution-free interval of the q-th percentile from order statistics: the ranks whose
    binomial (n, q/100) coverage reaches `confidence`. A bound the sample cannot reach (too few
    calls for the tail) is 0 below or inf above: an honest interval for a p99 on few calls."""
    _check_q(q)
    _check_confidence(confidence)
    x = np.sort(np.asarray(samples, dtype=np.float64).ravel())
    n = x.size
    _require(n >= 1, "samples must be non-empty")
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


def hull(*intervals: Interval) -> Interval:
    """The smallest interval holding all of them (the first one's estimate)."""
    return Interval(
        intervals[0].estimate, min(i.low for i in intervals), max(i.high for i in intervals)
    )


def rerun_interval(ci: Interval) -> Interval:
    """Where a rerun's estimate should land, from a ratio's confidence interval (which is about
    the true ratio): a rerun carries an error as large as this run's own, so the difference of
    two runs spreads sqrt(2) times as far; each side's log-distance from the estimate is widened
    by sqrt(2). A rerun's estimate falls outside it about as often as the truth falls outside
    the confidence interval."""
    _require(ci.low > 0, f"a ratio interval must be positive, got low = {ci.low}")
    return Interval(ci.estimate, *_widen(ci.estimate, ci.low, ci.high, math.sqrt(2)))


def noise_floor(aa_ratio: Interval, minimum: float = 0.03) -> float:
    """Relative noise floor from an A/A speedup interval, never below minimum.

    The 3% default exists because two ONNX Runtime sessions of the same file can differ
    persistently by 1-2%, which a single A/A run may not reveal.
    """
    _require(minimum >= 0, f"minimum must be >= 0, got {minimum}")
    return max(minimum, *(abs(v - 1) for v in (aa_ratio.estimate, aa_ratio.low, aa_ratio.high)))


def classify_speedup(speedup: Interval, floor: float) -> Verdict:
    """Classify a speedup interval against a relative noise floor."""
    _require(floor >= 0, f"floor must be >= 0, got {floor}")
    if speedup.low > 1 + floor:
        return "faster"
    # 1/(1+floor) rather than 1-floor keeps the band symmetric on a log (ratio) scale.
    if speedup.high < 1 / (1 + floor):
        return "slower"
    return "no measurable change"


def _paired_arrays(ref: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(ref, dtype=np.float64)
    t = np.asarray(test, dtype=np.float64)
    _require(
        r.shape == t.shape, f"ref and test must have the same shape, got {r.shape} and {t.shape}"
    )
    _require(r.size > 0, "ref and test must be non-empty, got size 0")
    return r.ravel(), t.ravel()


def max_abs_error(ref: np.ndarray, test: np.ndarray) -> float:
    """Largest elementwise |ref - test|."""
    r, t = _paired_arrays(ref, test)
    return float(np.max(np.abs(r - t)))


def cosine_similarity(ref: np.ndarray, test: np.ndarray) -> float:
    """Cosine similarity of the flattened arrays; 1.0 when both are all-zero, 0.0 if one is."""
    r, t = _paired_arrays(ref, test)
    norm_r, norm_t = float(np.linalg.norm(r)), float(np.linalg.norm(t))
    if norm_r == 0 or norm_t == 0:
        return 1.0 if norm_r == norm_t else 0.0
    return float(np.dot(r, t) / (norm_r * norm_t))


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB; inf when identical, -inf for a zero signal."""
    r, t = _paired_arrays(ref, test)
    signal = float(np.sum(r**2))
    noise = float(np.sum((r - t) ** 2))
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 10 * math.log10(signal / noise)


def decide_speed(speedup: Interval, floor: float, min_speedup: float) -> str | None:
    """What a p50 speedup interval decides: FASTER (its lower bound reaches min_speedup and clears
    the noise floor), SLOWER (wholly below the noise band), NO_CHANGE (wholly inside the band
    1/(1+floor) .. 1+floor), SHORT (surely faster, surely below min_speedup); None while it
    straddles one of these thresholds."""
    _require(floor >= 0, f"floor must be >= 0, got {floor}")
    top = 1 + floor
    if speedup.low > top and speedup.low >= min_speedup:
        return FASTER
    if speedup.high < 1 / top:
        return SLOWER
    if speedup.low >= 1 / top and speedup.high <= top:
        return NO_CHANGE
    if speedup.low > top and speedup.high < min_speedup:
        return SHORT
    return None


def decide_tail(speedup: Interval, floor: float, max_slowdown: float) -> str | None:
    """What a tail (p99) speedup interval decides against a slowdown budget: TAIL_FAIL when even
    its smallest slowdown exceeds the budget and the noise floor, TAIL_PASS when its largest
    slowdown is within the budget, None while it straddles (e.g. a p99 on too few calls)."""
    least = 1 / speedup.high if speedup.high > 0 else math.inf
    most = 1 / speedup.low if speedup.low > 0 else math.inf
    if least > max_slowdown and least > 1 + floor:
        return TAIL_FAIL
    if most <= max_slowdown:
        return TAIL_PASS
    return None
