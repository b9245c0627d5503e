"""Tests for stages.evidence.verdict: the pre-registered budget applied to fabricated evidence."""

from __future__ import annotations

from typing import Any

import pytest

from stages.evidence.verdict import (
    FAIL,
    HOLD,
    NOT_APPLICABLE,
    PASS,
    REJECT,
    RISK,
    SHIP,
    Rule,
    as_dicts,
    decide,
)
from stages.params import Budget

BUDGET = Budget()  # 1 point overall, 3 points worst slice, 1.10x speedup, 1.10x p99, alpha 0.05


def _interval(estimate: float, low: float, high: float) -> dict[str, float]:
    return {"estimate": estimate, "low": low, "high": high}


def evidence(
    *,
    status: str = "ok",
    confounders: tuple[str, ...] = (),
    drop: float = 0.2,
    right_to_wrong: int = 2,
    wrong_to_right: int = 1,
    mcnemar_p: float = 1.0,
    worst: str | None = "digit_3",
    worst_drop: float = 0.5,
    p50: tuple[float, float, float] = (1.5, 1.4, 1.6),
    p99: tuple[float, float, float] = (1.4, 1.2, 1.6),
    noise_floor: float = 0.03,
    effect: str = "faster",
    precise: bool = True,
    stopped_by: str = "precision",
    p99_reliable: bool = True,
    calls: int = 4000,
) -> dict[str, Any]:
    """One candidate's evidence in the shape report.collect builds; every default passes."""
    slices = {
        "all": {"drop_points": drop, "right_to_wrong": right_to_wrong},
        "digit_7": {"drop_points": 0.0, "right_to_wrong": 0},
    }
    if worst is not None:
        slices[worst] = {"drop_points": worst_drop, "right_to_wrong": 1}
    batch1 = {
        "batch_size": 1,
        "speedup": {"p50": _interval(*p50), "p99": _interval(*p99)},
        "noise_floor": noise_floor,
        "effect": effect,
        "precise": precise,
        "stopped_by": stopped_by,
        "reliable": {"p50": True, "p90": True, "p95": True, "p99": p99_reliable},
        "calls_per_side": calls,
    }
    batch32 = {**batch1, "batch_size": 32, "effect": "slower"}  # only batch 1 is judged
    return {
        "name": "int8_dynamic",
        "status": status,
        "confounders": list(confounders),
        "validation": {
            "overall": {
                "drop_points": drop,
                "right_to_wrong": right_to_wrong,
                "wrong_to_right": wrong_to_right,
                "mcnemar_p": mcnemar_p,
            },
            "slices": slices,
            "worst_slice": worst,
        },
        "benchmark": {"batches": [batch1, batch32]},
    }


def _by_name(rules: list[Rule]) -> dict[str, Rule]:
    return {r.name: r for r in rules}


def _only_non_pass(rules: list[Rule]) -> dict[str, Rule]:
    return {r.name: r for r in rules if r.status != PASS}


def test_ship_when_every_rule_passes() -> None:
    verdict, rules = decide(evidence(), BUDGET)

    assert verdict == SHIP
    assert [r.name for r in rules] == [
        "one change",
        "accuracy drop",
        "worst-slice drop",
        "p50 speedup, batch 1",
        "p99 tail, batch 1",
    ]
    assert all(r.status == PASS for r in rules)
    assert all(r.reason == "" for r in rules)


def test_reject_when_accuracy_drop_exceeds_budget() -> None:
    verdict, rules = decide(evidence(drop=1.5, mcnemar_p=0.001), BUDGET)

    assert verdict == REJECT
    bad = _only_non_pass(rules)
    assert set(bad) == {"accuracy drop"}
    assert bad["accuracy drop"].status == FAIL
    assert "1.50 points" in bad["accuracy drop"].reason
    assert "1-point budget" in bad["accuracy drop"].reason


def test_drop_exactly_at_budget_passes() -> None:
    verdict, rules = decide(evidence(drop=BUDGET.max_accuracy_drop), BUDGET)

    assert verdict == SHIP
    assert _by_name(rules)["accuracy drop"].status == PASS


def test_reject_when_worst_slice_drop_exceeds_budget() -> None:
    verdict, rules = decide(evidence(worst_drop=3.5), BUDGET)

    assert verdict == REJECT
    bad = _only_non_pass(rules)
    assert set(bad) == {"worst-slice drop"}
    assert bad["worst-slice drop"].status == FAIL
    assert "digit_3" in bad["worst-slice drop"].reason
    assert "digit_3" in bad["worst-slice drop"].measured
    assert "3-point budget" in bad["worst-slice drop"].reason


def test_no_worst_slice_rule_without_a_worst_slice() -> None:
    verdict, rules = decide(evidence(worst=None), BUDGET)

    assert verdict == SHIP
    assert "worst-slice drop" not in _by_name(rules)


def test_reject_when_measurably_slower() -> None:
    c = evidence(p50=(0.7, 0.65, 0.75), p99=(0.95, 0.9, 1.0), effect="slower")

    verdict, rules = decide(c, BUDGET)

    assert verdict == REJECT
    bad = _only_non_pass(rules)
    assert set(bad) == {"p50 speedup, batch 1"}
    assert bad["p50 speedup, batch 1"].status == FAIL
    assert "measurably slower" in bad["p50 speedup, batch 1"].reason


def test_reject_when_p99_tail_grows_past_budget() -> None:
    verdict, rules = decide(evidence(p99=(0.8, 0.75, 0.85)), BUDGET)  # 1.25x slowdown

    assert verdict == REJECT
    bad = _only_non_pass(rules)
    assert set(bad) == {"p99 tail, batch 1"}
    assert bad["p99 tail, batch 1"].status == FAIL
    assert "1.25x" in bad["p99 tail, batch 1"].reason


def test_hold_when_no_measurable_change() -> None:
    c = evidence(p50=(1.01, 0.98, 1.04), p99=(1.0, 0.95, 1.05), effect="no measurable change")

    verdict, rules = decide(c, BUDGET)

    assert verdict == HOLD
    bad = _only_non_pass(rules)
    assert set(bad) == {"p50 speedup, batch 1"}
    assert bad["p50 speedup, batch 1"].status == RISK
    assert "no measurable change" in bad["p50 speedup, batch 1"].reason


def test_hold_never_ship_when_confounded_even_if_all_else_passes() -> None:
    c = evidence(confounders=("session.intra_op_threads", "graph.io"))

    verdict, rules = decide(c, BUDGET)

    assert verdict == HOLD
    bad = _only_non_pass(rules)
    assert set(bad) == {"one change"}
    assert bad["one change"].status == RISK
    assert "session.intra_op_threads" in bad["one change"].measured
    assert "graph.io" in bad["one change"].measured
    assert "confounded" in bad["one change"].reason
    assert "never shipped" in bad["one change"].reason


def test_confounded_and_failing_is_still_rejected() -> None:
    verdict, rules = decide(evidence(confounders=("graph.io",), drop=2.0), BUDGET)

    assert verdict == REJECT
    statuses = {r.name: r.status for r in rules}
    assert statuses["one change"] == RISK
    assert statuses["accuracy drop"] == FAIL


def test_hold_when_faster_but_lower_bound_below_min_speedup() -> None:
    verdict, rules = decide(evidence(p50=(1.2, 1.05, 1.35), effect="faster"), BUDGET)

    assert verdict == HOLD
    bad = _only_non_pass(rules)
    assert set(bad) == {"p50 speedup, batch 1"}
    assert bad["p50 speedup, batch 1"].status == RISK
    assert "does not clear 1.1x" in bad["p50 speedup, batch 1"].reason


def test_lower_bound_exactly_at_min_speedup_passes() -> None:
    c = evidence(p50=(1.2, BUDGET.min_speedup, 1.3), effect="faster")

    verdict, rules = decide(c, BUDGET)

    assert verdict == SHIP
    assert _by_name(rules)["p50 speedup, batch 1"].status == PASS


def test_hold_when_interval_is_not_precise() -> None:
    verdict, rules = decide(evidence(precise=False, stopped_by="max_seconds"), BUDGET)

    assert verdict == HOLD
    bad = _only_non_pass(rules)
    assert set(bad) == {"p50 speedup, batch 1"}
    assert "max_seconds" in bad["p50 speedup, batch 1"].reason


def test_hold_when_the_p99_tail_may_have_grown_but_its_interval_allows_less() -> None:
    # 1.25x slowdown at the estimate, but the interval reaches 1.05 (a 0.95x slowdown)
    verdict, rules = decide(evidence(p99=(0.8, 0.6, 1.05)), BUDGET)

    bad = {r.name: r for r in rules if r.status != PASS}
    assert verdict == HOLD
    assert set(bad) == {"p99 tail, batch 1"} and bad["p99 tail, batch 1"].status == RISK


def test_p99_growth_inside_the_noise_floor_is_not_a_failure() -> None:
    # the interval says at least 1.15x, over budget, but this run's noise floor is 20 %
    verdict, rules = decide(evidence(p99=(0.8, 0.75, 0.87), noise_floor=0.2), BUDGET)

    assert verdict == HOLD
    assert {r.name: r.status for r in rules}["p99 tail, batch 1"] == RISK


def test_hold_when_p99_is_unreliable() -> None:
    verdict, rules = decide(evidence(p99_reliable=False, calls=500), BUDGET)

    assert verdict == HOLD
    bad = _only_non_pass(rules)
    assert set(bad) == {"p99 tail, batch 1"}
    assert bad["p99 tail, batch 1"].status == RISK
    assert "500 calls" in bad["p99 tail, batch 1"].reason


def test_risk_when_loss_is_significant_but_within_budget() -> None:
    c = evidence(drop=0.6, right_to_wrong=9, wrong_to_right=0, mcnemar_p=0.004)

    verdict, rules = decide(c, BUDGET)

    assert verdict == HOLD
    bad = _only_non_pass(rules)
    assert set(bad) == {"accuracy drop"}
    assert bad["accuracy drop"].status == RISK
    assert "significant loss" in bad["accuracy drop"].reason
    assert "9 right->wrong" in bad["accuracy drop"].measured


@pytest.mark.parametrize(
    ("drop", "mcnemar_p"),
    [(0.6, 0.2), (-0.5, 0.001), (0.0, 0.001)],
    ids=["not-significant", "significant-gain", "no-drop"],
)
def test_no_accuracy_risk_without_a_significant_loss(drop: float, mcnemar_p: float) -> None:
    verdict, rules = decide(evidence(drop=drop, mcnemar_p=mcnemar_p), BUDGET)

    assert verdict == SHIP
    assert _by_name(rules)["accuracy drop"].status == PASS


def test_not_applicable_has_no_rules() -> None:
    c = {"name": "int8_static", "status": "not_applicable", "reason": "no conv layers"}

    verdict, rules = decide(c, BUDGET)

    assert verdict == NOT_APPLICABLE
    assert rules == []


def test_a_stricter_budget_changes_the_verdict() -> None:
    c = evidence(drop=0.8)

    lenient, _ = decide(c, BUDGET)
    strict, rules = decide(c, Budget(max_accuracy_drop=0.5))

    assert lenient == SHIP
    assert strict == REJECT
    assert "0.5-point budget" in _by_name(rules)["accuracy drop"].reason


def test_as_dicts_keeps_every_field() -> None:
    _, rules = decide(evidence(p99_reliable=False), BUDGET)

    rows = as_dicts(rules)

    assert len(rows) == len(rules)
    assert all(set(row) == {"name", "budget", "measured", "status", "reason"} for row in rows)
    assert rows[-1]["status"] == RISK
