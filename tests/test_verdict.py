"""Tests for stages.evidence.verdict: the pre-registered budget applied to fabricated evidence.

Every branch of every rule: accuracy and slices by their exact paired intervals (from the flip
counts), p50 speed by its interval against the noise band and the budget (an interval wholly
below the budget rejects), the tail by its honest interval at the percentile the calls support
and its A/A floor (tests/test_tail_rule.py: which percentile, and the replicated floor), and the
serving rules that cannot reject on one sweep.
"""

from __future__ import annotations

from typing import Any

import pytest
from factories import candidate

from stages.evidence.dashboard import dashboard
from stages.evidence.review import review
from stages.evidence.rule import FAIL, PASS, RISK, Rule, as_dicts
from stages.evidence.verdict import FAILED, HOLD, NOT_APPLICABLE, REJECT, SHIP, decide
from stages.params import Budget

BUDGET = Budget()  # 1 point overall, 3 points worst slice, 1.10x speedup, 1.10x p99, alpha 0.05


def _rule(rules: list[Rule], name: str) -> Rule:
    return next(r for r in rules if r.name == name)


def test_ship_when_every_rule_passes() -> None:
    verdict, rules = decide(candidate(), BUDGET)

    assert verdict == SHIP
    assert [r.name for r in rules] == [
        "one change",
        "accuracy drop",
        "worst-slice drop",
        "other outputs",
        "p50 speedup, batch 1",
        "p95 tail, batch 1",  # 600 calls: 6 beyond p99, too few for its bound; 30 beyond p95
    ]
    assert all(r.status == PASS for r in rules)
    assert all(r.reason == "" for r in rules if r.name != "other outputs")
    assert _rule(rules, "other outputs").reason == "does not apply: a single output"


def test_a_decisive_win_ships_whatever_ended_the_timing() -> None:
    # precision is a cost control: a win that cleared the budget at the cap still ships
    verdict, _ = decide(candidate(stopped_by="max_seconds"), BUDGET)

    assert verdict == SHIP


# --- p50 speed ----------------------------------------------------------------------------------


def test_reject_when_measurably_slower() -> None:
    verdict, rules = decide(candidate(p50=(0.8, 0.76, 0.84)), BUDGET)

    assert verdict == REJECT
    rule = _rule(rules, "p50 speedup, batch 1")
    assert rule.status == FAIL
    assert rule.reason == (
        "no gain worth shipping: measurably slower than the baseline, 0.800x [0.760, 0.840]; "
        "the budget is 1.1x"
    )


def test_reject_no_measurable_change_below_the_budget() -> None:
    # the A/A control as a candidate (identity): inside the noise, so no gain worth shipping
    verdict, rules = decide(candidate(name="identity", p50=(1.0, 0.98, 1.02)), BUDGET)

    assert verdict == REJECT
    rule = _rule(rules, "p50 speedup, batch 1")
    assert rule.status == FAIL
    assert rule.reason.startswith("no gain worth shipping: no measurable change")


def test_reject_no_measurable_change_that_reaches_past_the_noise_band() -> None:
    # fuse in the issue: straddles 1 and the band's top, but wholly below 1.1x
    verdict, rules = decide(candidate(p50=(0.975, 0.899, 1.036)), BUDGET)

    assert verdict == REJECT
    assert _rule(rules, "p50 speedup, batch 1").reason == (
        "no gain worth shipping: no measurable change (noise floor 3.0%), "
        "0.975x [0.899, 1.036]; the budget is 1.1x"
    )


def test_reject_when_surely_faster_but_short_of_the_budget() -> None:
    verdict, rules = decide(candidate(p50=(1.06, 1.05, 1.07)), BUDGET)

    assert verdict == REJECT
    assert _rule(rules, "p50 speedup, batch 1").reason == (
        "no gain worth shipping: faster, but surely short of the budget, 1.060x [1.050, 1.070]; "
        "the budget is 1.1x"
    )


def test_just_below_the_budget_rejects_at_it_does_not() -> None:
    short, _ = decide(candidate(p50=(1.05, 1.0, 1.0999), stopped_by="max_seconds"), BUDGET)
    reaches, _ = decide(candidate(p50=(1.05, 1.0, 1.1), stopped_by="max_seconds"), BUDGET)

    assert (short, reaches) == (REJECT, HOLD)


def test_hold_when_straddling_the_budget_at_the_cap() -> None:
    verdict, rules = decide(candidate(p50=(1.12, 1.05, 1.19), stopped_by="max_seconds"), BUDGET)

    assert verdict == HOLD
    reason = _rule(rules, "p50 speedup, batch 1").reason
    assert reason == (
        "1.120x [1.050, 1.190] straddles the 1.1x budget when max_seconds ended the timing: "
        "more timing (bench.max_seconds) would settle it"
    )


@pytest.mark.parametrize(
    ("stopped_by", "settle"),
    [("max_rounds", "more rounds (bench.max_rounds)"), ("precision", "a tighter bench.precision")],
)
def test_a_straddle_names_the_threshold_and_what_would_settle_it(
    stopped_by: str, settle: str
) -> None:
    # a 1.02x budget inside the 3 % band: the interval straddles the band's top (1.03)
    e = candidate(p50=(1.04, 1.02, 1.06), stopped_by=stopped_by)

    verdict, rules = decide(e, Budget(min_speedup=1.02))

    assert verdict == HOLD
    reason = _rule(rules, "p50 speedup, batch 1").reason
    assert "straddles the noise band's top (1.030x)" in reason and settle in reason
    assert "budget" not in reason  # its lower bound already reaches 1.02x


def test_no_measurable_change_holds_when_the_budget_lies_inside_the_noise() -> None:
    # a 1.02x budget inside a 3 % floor: the truth may reach it, and this run cannot show it
    verdict, rules = decide(candidate(p50=(1.0, 0.99, 1.025)), Budget(min_speedup=1.02))

    assert verdict == HOLD
    reason = _rule(rules, "p50 speedup, batch 1").reason
    assert reason.startswith("no measurable change") and "quieter run" in reason


def test_lower_bound_exactly_at_min_speedup_passes() -> None:
    verdict, _ = decide(candidate(p50=(1.2, BUDGET.min_speedup, 1.3)), BUDGET)

    assert verdict == SHIP


def test_the_issue_int8_dynamic_ships_on_its_p50() -> None:
    verdict, rules = decide(candidate(p50=(1.316, 1.234, 1.389)), BUDGET)

    assert verdict == SHIP
    assert _rule(rules, "p50 speedup, batch 1").status == PASS


def test_hold_when_the_aa_control_stayed_wide() -> None:
    verdict, rules = decide(candidate(p50=(1.0, 0.9, 1.1), noise_floor=0.2), BUDGET)

    assert verdict == HOLD
    assert "A/A control stayed wide" in _rule(rules, "p50 speedup, batch 1").reason


def test_a_wide_aa_control_does_not_block_a_rejection() -> None:
    # wholly below the budget: the interval resamples sessions, so the noise is already in it
    verdict, rules = decide(candidate(p50=(0.95, 0.9, 1.0), noise_floor=0.2), BUDGET)

    assert verdict == REJECT
    assert _rule(rules, "p50 speedup, batch 1").reason.startswith("no gain worth shipping")


def test_a_wide_aa_control_blocks_a_pass() -> None:
    verdict, rules = decide(candidate(p50=(1.6, 1.55, 1.66), noise_floor=0.2), BUDGET)

    assert verdict == HOLD
    assert "A/A control stayed wide" in _rule(rules, "p50 speedup, batch 1").reason


# --- tail ---------------------------------------------------------------------------------------


def test_reject_when_the_tail_surely_grew() -> None:
    # 2400 calls: 24 beyond p99, enough for its bound, so the p99 is judged
    verdict, rules = decide(candidate(calls=2400, p99=(0.7, 0.65, 0.75)), BUDGET)

    assert verdict == REJECT
    assert "at least 1.33x" in _rule(rules, "p99 tail, batch 1").reason


def test_a_grown_p99_on_600_calls_is_not_judged() -> None:
    # the p99 of 600 calls is the 6th slowest: the p95 is judged, and it passes
    verdict, rules = decide(candidate(p99=(0.7, 0.4, 1.6)), BUDGET)

    assert verdict == SHIP
    assert _rule(rules, "p95 tail, batch 1").status == PASS


def test_a_bootstrap_tail_on_few_calls_cannot_reject() -> None:
    # a p95 of 0.8 [0.75, 0.85] from 60 calls, with no order-statistic widening: not a verdict
    e = candidate(p95=(0.8, 0.75, 0.85), calls=60, tail_interval=None)
    e["benchmark"]["batches"][0]["reliable"]["p95"] = False  # 3 beyond it, fewer than 10

    verdict, rules = decide(e, BUDGET)

    assert verdict == HOLD
    assert _rule(rules, "p95 tail, batch 1").status == RISK


def test_an_improved_tail_on_few_calls_is_open_not_failed() -> None:
    verdict, rules = decide(candidate(p95=(1.7, 0.0, float("inf")), calls=120), BUDGET)

    assert verdict == HOLD
    rule = _rule(rules, "p95 tail, batch 1")
    assert "120 calls" in rule.reason
    assert "fewer than the 23 its bound needs" in rule.measured


def test_the_tail_rule_uses_the_aa_floor_at_the_judged_percentile() -> None:
    # slowdown at least 1/0.85 = 1.18x: beyond the 1.1x budget, but inside a 20 % A/A floor at p99
    e = candidate(calls=2400, p99=(0.8, 0.75, 0.85), noise_floor=0.03, noise_floor_p99=0.2)

    verdict, rules = decide(e, BUDGET)

    assert verdict == HOLD
    assert _rule(rules, "p99 tail, batch 1").status == RISK
    assert "noise floor 20.0% pooled A/A" in _rule(rules, "p99 tail, batch 1").measured


# --- accuracy and slices ---------------------------------------------------------------------


def test_reject_when_the_drop_is_surely_beyond_budget() -> None:
    verdict, rules = decide(candidate(overall=(3000, 120, 20)), BUDGET)  # -3.3 points

    assert verdict == REJECT
    assert "surely over the 1-point budget" in _rule(rules, "accuracy drop").reason


def test_hold_when_the_drop_may_be_beyond_budget() -> None:
    verdict, rules = decide(candidate(overall=(1000, 14, 6)), BUDGET)  # -0.8, interval past -1

    assert verdict == HOLD
    reason = _rule(rules, "accuracy drop").reason
    assert "may have fallen" in reason and "more validation rows would settle it" in reason


def test_a_significant_loss_surely_within_budget_passes_and_is_told() -> None:
    verdict, rules = decide(candidate(overall=(20000, 60, 20)), BUDGET)  # -0.2, p < 0.001

    rule = _rule(rules, "accuracy drop")
    assert verdict == SHIP  # the pre-registered budget decides, and the drop is surely within it
    assert rule.status == "pass"
    assert rule.reason == "within budget, though a significant loss (McNemar p < 0.05)"


def test_two_flips_in_a_small_slice_hold_but_do_not_reject() -> None:
    # 2 right->wrong of 45 rows is a 4.4-point drop, but its interval reaches well below 3
    verdict, rules = decide(
        candidate(slices={"low_light": (45, 2, 0), "big": (2000, 3, 3)}), BUDGET
    )

    assert verdict == HOLD
    rule = _rule(rules, "worst-slice drop")
    assert rule.status == RISK and "low_light" in rule.reason
    assert "of 2 slices" in rule.measured


def test_reject_when_a_slice_surely_fell_beyond_budget_across_all_slices() -> None:
    many = {f"s{i}": (500, 1, 1) for i in range(8)}
    many["low_light"] = (500, 60, 2)  # -11.6 points on 500 rows

    verdict, rules = decide(candidate(slices=many), BUDGET)

    assert verdict == REJECT
    rule = _rule(rules, "worst-slice drop")
    assert "low_light" in rule.reason and "9 slices" in rule.reason


# --- one change, serving, not applicable -------------------------------------------------------


def test_hold_never_ship_when_confounded_even_if_all_else_passes() -> None:
    verdict, rules = decide(candidate(confounders=("session.threads",)), BUDGET)

    assert verdict == HOLD
    assert _rule(rules, "one change").status == RISK


def test_confounded_and_failing_is_still_rejected() -> None:
    verdict, _ = decide(candidate(confounders=("x",), p50=(0.5, 0.45, 0.55)), BUDGET)

    assert verdict == REJECT


def _server(base_qps: float, cand_qps: float | None) -> dict[str, Any]:
    side = {"latency_p99_ms": 5.0}
    return {
        "saturation": {
            "baseline": {"saturation_qps": base_qps},
            "candidate": {"saturation_qps": cand_qps},
        },
        "rates": [{"factor": 0.9, "rate_qps": 90.0, "baseline": side, "candidate": side}],
    }


@pytest.mark.parametrize("cand", [60.0, None], ids=["lowered", "none-met"])
def test_one_unreplicated_sweep_holds_but_does_not_reject(cand: float | None) -> None:
    verdict, rules = decide(candidate(server=_server(100.0, cand)), BUDGET)

    assert verdict == HOLD
    assert "not a rejection" in _rule(rules, "saturation throughput").reason


def test_a_gain_on_one_unreplicated_sweep_holds_and_does_not_ship() -> None:
    """Two runs of the same sweep on one machine saw 0.75x and 1.50x: one sweep decides nothing."""
    verdict, rules = decide(candidate(server=_server(100.0, 150.0)), BUDGET)

    assert verdict == HOLD
    rule = _rule(rules, "saturation throughput")
    assert rule.status == RISK and "1.50x on one unreplicated sweep" in rule.reason


def test_not_applicable_has_no_rules() -> None:
    assert decide(candidate(status="not_applicable"), BUDGET) == (NOT_APPLICABLE, [])


def test_a_technique_that_broke_is_failed_not_not_applicable() -> None:
    assert decide(candidate(status="failed"), BUDGET) == (FAILED, [])
    c = {
        "name": "fuse",
        "status": "failed",
        "verdict": FAILED,
        "reason": "the technique failed (a | b)",
    }
    assert "**Verdict: FAILED**: the technique failed (a | b)" in review(c, {})
    row = "| fuse | **FAILED** | | | | | | | | | | the technique failed (a \\| b) |"
    ctx = {
        "model": "m",
        "target": "cpu",
        "host": "h",
        "cpu": "c",
        "baseline_file": "b.onnx",
        "baseline_graph": {"sha256": "0" * 64},
        "baseline_accuracy": float("nan"),
    }
    assert row in dashboard([c], ctx, "MLflow: -").splitlines()


def test_a_stricter_budget_changes_the_verdict() -> None:
    e = candidate()

    assert decide(e, BUDGET)[0] == SHIP
    assert decide(e, Budget(min_speedup=1.6))[0] == HOLD  # 1.55 to 1.66 straddles 1.6x
    assert decide(e, Budget(min_speedup=1.7))[0] == REJECT  # wholly below 1.7x


def test_as_dicts_keeps_every_field() -> None:
    _, rules = decide(candidate(), BUDGET)

    first = as_dicts(rules)[0]
    assert set(first) == {"name", "budget", "measured", "status", "reason"}
