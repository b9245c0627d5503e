"""Tests for the tail rule: which percentile the calls support (stats.tail_percentile, from the
calls needed beyond it for a tight order-statistic bound), the A/A floor replicated over sessions,
and the verdict's tail rule on both, on synthetic timings with one slow stretch."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from factories import candidate, interval
from scipy import stats as sp_stats

from stages import stats
from stages.evidence.rule import FAIL, PASS, RISK, Rule
from stages.evidence.verdict import REJECT, SHIP, decide
from stages.measure.rounds import session_of
from stages.measure.timing import AGAIN, BASELINE, CANDIDATE, ORDERS, Timings, summarize
from stages.params import Budget

BUDGET = Budget()  # 1.10x speedup, 1.10x tail slowdown


def _tail_rule(rules: list[Rule]) -> Rule:
    return next(r for r in rules if "tail" in r.name)


# --- how many calls a tail percentile needs ----------------------------------------------------


def _pinned(t: float, confidence: float) -> bool:
    """The Poisson form of the rule: t expected beyond the percentile, each bound at a / 2."""
    a = (1 - confidence) / 4
    upper = sp_stats.poisson.ppf(a, t) - 1 >= t / stats.quantiles.TAIL_PIN
    lower = sp_stats.poisson.ppf(1 - a, t) <= stats.quantiles.TAIL_PIN * t
    return bool(upper and lower)


@pytest.mark.parametrize(("confidence", "need"), [(0.9, 19), (0.95, 23), (0.99, 33)])
def test_tail_calls_needed_is_the_first_count_from_which_the_bound_stays_tight(
    confidence: float, need: int
) -> None:
    assert stats.tail_calls_needed(confidence) == need
    # from `need` on it holds (a fine grid of real counts), and somewhere just below it, not
    assert all(_pinned(t, confidence) for t in np.arange(need, need + 40, 0.01))
    assert not all(_pinned(t, confidence) for t in np.arange(need - 1, need, 0.01))


@pytest.mark.parametrize("q", [99, 95, 90])
def test_from_that_count_the_exact_interval_pins_the_tail_within_a_factor_two(q: int) -> None:
    # samples 1..n: a value is its own rank, so the interval's bounds are its ranks
    need, each = stats.tail_calls_needed(0.95), 1 - 0.05 / 2  # each side of the ratio
    first = round(need / (1 - q / 100))
    for n in range(first, 4 * first, max(1, first // 60)):
        beyond = n * (1 - q / 100)
        low, high = stats.quantile_order_ci(np.arange(1.0, n + 1), q, each)
        assert n - high >= beyond / 2, (n, high)  # p99: the upper bound at or below p99.5
        assert n - low <= 2 * beyond, (n, low)  # p99: the lower bound at or above p98


def test_600_calls_bound_a_p99_only_by_its_slowest_calls() -> None:
    # why p99 is not judged on 600 calls: its upper bound is the slowest call or the next
    low, high = stats.quantile_order_ci(np.arange(1.0, 601), 99, 1 - 0.05 / 2)

    assert high >= 599 and low <= 590


@pytest.mark.parametrize(
    ("calls", "confidence", "expected"),
    [
        (0, 0.95, 90),  # none supported: the lowest, whose interval stays honest (wide)
        (229, 0.95, 90),  # 22.9 beyond p90: still too few, and still p90
        (230, 0.95, 90),  # 23 beyond p90
        (459, 0.95, 90),
        (460, 0.95, 95),  # 23 beyond p95
        (600, 0.95, 95),  # the run: 6 beyond p99, 30 beyond p95
        (2299, 0.95, 95),
        (2300, 0.95, 99),  # 23 beyond p99 (exactly, despite float error in 1 - 0.99)
        (600, 0.99, 90),  # 33 needed: 30 beyond p95 are too few
        (660, 0.99, 95),
    ],
)
def test_tail_percentile_at_its_boundaries(calls: int, confidence: float, expected: int) -> None:
    assert stats.tail_percentile(calls, confidence) == expected


def test_tail_percentile_chooses_among_the_percentiles_given() -> None:
    assert stats.tail_percentile(600, 0.95, (99,)) == 99  # older evidence with only a p99
    assert stats.tail_percentile(3000, 0.95, (95, 90)) == 95
    with pytest.raises(ValueError, match="choices"):
        stats.tail_percentile(600, 0.95, ())


# --- the A/A floor replicated over sessions ----------------------------------------------------


@pytest.mark.parametrize(
    ("sessions", "n_rounds", "by", "count"),
    [
        ([0, 1, 2, 3, 4] * 6, 30, "sessions", 5),
        ([0, 1, 2] * 2, 6, "sessions", 3),
        ([0, 1] * 6, 12, "stretches of rounds", 5),  # 2 sessions: a median of 2 is their mean
        (None, 12, "stretches of rounds", 5),
        (None, 6, "stretches of rounds", 3),
        (None, 5, "all rounds", 1),  # 2 stretches: a median would not resist one astray
    ],
)
def test_aa_replicates(sessions: list[int] | None, n_rounds: int, by: str, count: int) -> None:
    groups, got = stats.aa_replicates(sessions, n_rounds)

    assert got == by and len(groups) == count
    assert sorted(np.concatenate(groups).tolist()) == list(range(n_rounds))


def _timings(
    seed: int, speedup: float, stretches: dict[str, int], n_rounds: int = 30, calls: int = 20
) -> Timings:
    """Five sessions of rounds of `calls` calls, about 1 ms a call (lognormal, 8 %), each side
    and session with its own persistent offset (1 %); `stretches`: side -> the session in which
    6 consecutive calls of that side take 2.5x (the shared machine's background work): as many
    as lie beyond the p99 of 600 calls."""
    rng = np.random.default_rng(seed)
    sessions = [session_of(r, 5) for r in range(n_rounds)]
    scale = {BASELINE: 1.0, AGAIN: 1.0, CANDIDATE: 1 / speedup}
    rounds: dict[str, list[np.ndarray]] = {}
    for side, base in scale.items():
        offset = rng.lognormal(0, 0.01, 5)
        rounds[side] = [base * offset[k] * rng.lognormal(0, 0.08, calls) for k in sessions]
        if side in stretches:
            r = sessions.index(stretches[side])  # the session's first round
            rounds[side][r][5:11] *= 2.5
    orders: list[tuple[str, ...]] = [ORDERS[r % len(ORDERS)] for r in range(n_rounds)]
    return Timings(
        rounds=rounds, orders=orders, sessions=sessions, stopped_by="max_seconds", seconds=17.0
    )


def _summary(t: Timings) -> dict[str, Any]:
    s = summarize(t, 1, precision=0.02, confidence=0.95, resamples=300, seed=0)
    return {**s, "max_noise_floor": 0.1}


def test_one_slow_stretch_blows_up_the_pooled_tail_floor_not_the_replicated_one() -> None:
    s = _summary(_timings(0, 1.3, {AGAIN: 2}))

    # 6 slow calls of 600 are the p99 (the 6th slowest) of the A/A side: the pooled floor
    assert s["noise_floors"]["p99"] > 0.5
    # one session of five astray leaves the median over sessions where the others are
    assert s["aa_replicates"]["by"] == "sessions"
    assert len(s["aa_replicates"]["ratios"]["p99"]) == 5
    assert s["tail_floors"]["p99"] < 0.1 and s["tail_floors"]["p95"] < 0.1


def test_replicated_floor_is_the_median_log_distance_never_below_the_minimum() -> None:
    a = [np.full(10, 1.0) for _ in range(6)]
    b = [np.full(10, x) for x in (1.1, 1.1, 1.25, 1.25, 0.8, 0.8)]  # ratios 1/1.1, 0.8, 1.25

    got = stats.replicated_noise_floor(a, b, 95, [0, 0, 1, 1, 2, 2])

    assert got.by == "sessions"
    assert got.ratios == pytest.approx([1 / 1.1, 0.8, 1.25])
    assert got.floor == pytest.approx(0.25)  # median of |ln r|: ln 1.25 (0.8 and 1.25 alike)
    same = stats.replicated_noise_floor(a, a, 95, [0, 0, 1, 1, 2, 2])
    assert same.floor == 0.03


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_slow_stretch_does_not_hold_an_unchanged_faster_model(seed: int) -> None:
    """An int8-like candidate, 1.3x faster everywhere, on a machine that slowed 6 calls of the
    candidate in one session and 6 of the A/A side in another: its verdict must not depend on
    where the stretches fell."""
    s = _summary(_timings(seed, 1.3, {CANDIDATE: seed % 5, AGAIN: (seed + 2) % 5}))
    c = candidate()
    c["benchmark"]["batches"][0] = s

    verdict, rules = decide(c, BUDGET)

    assert verdict == SHIP, [r for r in rules if r.status != PASS]
    tail = _tail_rule(rules)
    assert tail.name == "p95 tail, batch 1" and tail.status == PASS
    assert "p95 judged: 600 calls give 6 beyond p99, too few for its bound" in tail.measured
    # the p99 of these calls could not have passed: its interval allows more than 1.1x
    assert 1 / s["speedup"]["p99"]["low"] > 1.1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_byte_identical_model_reads_no_measurable_change_and_never_ships(seed: int) -> None:
    s = _summary(_timings(seed, 1.0, {BASELINE: seed % 5, CANDIDATE: (seed + 1) % 5}))
    c = candidate(name="identity")
    c["benchmark"]["batches"][0] = s

    verdict, rules = decide(c, BUDGET)

    assert verdict == REJECT
    p50 = next(r for r in rules if r.name == "p50 speedup, batch 1")
    assert p50.status == FAIL
    assert p50.reason.startswith("no gain worth shipping: no measurable change")
    assert _tail_rule(rules).status != FAIL


# --- the verdict's tail rule -------------------------------------------------------------------


def _evidence(calls: int, tails: dict[int, tuple[float, float, float]], **kw: Any) -> Any:
    """Factory evidence with these tail speedups (p90 too, which the factory leaves out)."""
    c = candidate(calls=calls, **kw)
    run = c["benchmark"]["batches"][0]
    for q, triple in tails.items():
        run["speedup"][f"p{q}"] = interval(*triple)
        run["noise_floors"].setdefault(f"p{q}", 0.05)
    return c


GROWN, GOOD = (0.7, 0.65, 0.75), (1.6, 1.5, 1.7)


@pytest.mark.parametrize(
    ("calls", "judged", "measured"),
    [
        (2300, "p99", "p99 judged: 2300 calls give 23 beyond it (23 needed)"),
        (2299, "p95", "p95 judged: 2299 calls give 22.99 beyond p99, too few for its bound"),
        (600, "p95", "p95 judged: 600 calls give 6 beyond p99, too few for its bound"),
        (459, "p90", "p90 judged: 459 calls give 22.95 beyond p95, too few for its bound"),
        (100, "p90", "p90 judged: 100 calls give 10 beyond it, fewer than the 23 its bound"),
    ],
)
def test_the_tail_is_judged_at_the_percentile_the_calls_support(
    calls: int, judged: str, measured: str
) -> None:
    # only the judged percentile has grown: the verdict follows that one alone
    tails = {int(judged[1:]): GROWN, **{q: GOOD for q in (99, 95, 90) if f"p{q}" != judged}}
    verdict, rules = decide(_evidence(calls, tails), BUDGET)

    tail = _tail_rule(rules)
    assert verdict == REJECT and tail.status == FAIL
    assert tail.name == f"{judged} tail, batch 1"
    assert measured in tail.measured
    assert tail.reason == f"the {judged} tail grew 1.43x (at least 1.33x)"


def test_the_replicated_floor_decides_the_tail_over_the_pooled_one() -> None:
    # pooled A/A at p95 blown up to 60 % by one stretch; the median over sessions is 4 %
    c = _evidence(600, {95: (0.8, 0.75, 0.85)}, noise_floor_p95=0.6)
    run = c["benchmark"]["batches"][0]

    assert _tail_rule(decide(c, BUDGET)[1]).status == RISK  # older evidence: the pooled floor

    run["tail_floors"] = {"p90": 0.04, "p95": 0.04, "p99": 0.5}
    run["aa_replicates"] = {"by": "sessions", "ratios": {"p95": [1.0, 1.02, 0.97, 1.6, 1.04]}}
    verdict, rules = decide(c, BUDGET)

    tail = _tail_rule(rules)
    assert verdict == REJECT and tail.status == FAIL
    assert "noise floor 4.0% median of 5 sessions" in tail.measured


def test_older_evidence_without_p90_or_replicated_floors_still_reads() -> None:
    # written before this rule: p95 and p99 only, pooled floors, 300 calls (p90 not there)
    c = candidate(calls=300, p95=(1.2, 0.0, math.inf))

    verdict, rules = decide(c, BUDGET)

    tail = _tail_rule(rules)
    assert verdict != SHIP and tail.name == "p95 tail, batch 1" and tail.status == RISK
    assert "pooled A/A" in tail.measured and "300 calls" in tail.reason
