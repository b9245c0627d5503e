"""The serving rules (stages.evidence.server_rules) on synthetic replicated sweeps: no timing.

Each replicate gives each side a saturation bracket [met, failed above) in req/s, and each side's
p99 in ms at the load factors 0.5, 0.9 and 1.5; the rules weigh the 0.9 row only, so the other
rows carry figures that would decide otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest

from stages.evidence import server_rules
from stages.evidence.rule import FAIL, PASS, RISK, Rule
from stages.params import Budget

BUDGET = Budget(min_speedup=1.1, max_p99_slowdown=1.1)
TOP = 300.0  # req/s: the sweep's highest rate
Side = tuple[float | None, float | None]  # (met, failed above) in req/s


def side(bracket: Side, steps: int = 3) -> dict[str, Any]:
    met, above = bracket
    return {
        "saturation_qps": met,
        "failed_above_qps": above,
        "rates_qps": [25.0, 50.0, 100.0, TOP],
        "refine_steps": steps,
    }


def tight(qps: float) -> Side:
    """A bracket refined to 2 % (the refine steps did their work)."""
    return qps, qps * 1.02


def evidence(
    sats: Sequence[tuple[Side, Side]],
    p99s: Sequence[tuple[float | None, float | None]] | None = None,
    dropped: Sequence[tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """benchmark.json's server section: per replicate (baseline, candidate) brackets, p99s at
    0.9 x capacity (default: equal) and requests dropped there (default: none)."""
    p99s = p99s or [(10.0, 10.0)] * len(sats)
    dropped = dropped or [(0, 0)] * len(sats)
    rates = []
    for k, ((bp, cp), (bd, cd)) in enumerate(zip(p99s, dropped, strict=True)):
        for factor, scale in ((0.5, 100.0), (0.9, 1.0), (1.5, 0.01)):  # decoys at 0.5 and 1.5
            rates.append(
                {
                    "replicate": k,
                    "factor": factor,
                    "rate_qps": 100.0 * factor,
                    "baseline": {"latency_p99_ms": bp, "dropped": bd},
                    "candidate": {
                        "latency_p99_ms": None if cp is None else cp * scale,
                        "dropped": cd,
                    },
                }
            )
    return {
        "replicates": len(sats),
        "sweeps": [
            {"replicate": k, "seed": 100 + k, "baseline": side(b), "candidate": side(c)}
            for k, (b, c) in enumerate(sats)
        ],
        "rates": rates,
        "saturation": {"baseline": {"saturation_qps": 1.0}, "candidate": {"saturation_qps": 1.0}},
    }


def saturation(s: dict[str, Any]) -> Rule:
    return server_rules.server(s, BUDGET)[0]


def tail(s: dict[str, Any]) -> Rule:
    return server_rules.server(s, BUDGET)[1]


# --- saturation throughput ----------------------------------------------------------------------


def test_a_gain_surely_above_the_budget_passes() -> None:
    rule = saturation(evidence([(tight(100.0), tight(150.0))] * 3))

    assert rule.status == PASS and rule.reason == ""
    assert rule.measured.startswith("1.50x [1.47, 1.53] over 3 replicates")


def test_no_gain_surely_below_the_budget_rejects() -> None:
    sats = [(tight(100.0), tight(100.0)), (tight(102.0), tight(100.0)), (tight(98.0), tight(99.0))]

    rule = saturation(evidence(sats))

    assert rule.status == FAIL
    assert (
        rule.reason == "no gain worth shipping: saturation 1.00x [0.96, 1.03], the budget is 1.1x"
    )


def test_a_saturation_point_surely_lowered_rejects() -> None:
    rule = saturation(evidence([(tight(100.0), tight(67.0))] * 3))

    assert rule.status == FAIL
    assert rule.reason.startswith("batching lowered the saturation point: 0.67x [0.66, 0.68]")


def test_replicates_that_disagree_hold_and_ask_for_more_replicates() -> None:
    # the median replicate gained 1.5x: a point estimate would pass, the range straddles
    sats = [
        (tight(100.0), tight(150.0)),
        (tight(100.0), tight(100.0)),
        (tight(100.0), tight(150.0)),
    ]

    rule = saturation(evidence(sats))

    assert rule.status == RISK
    assert "1.50x [0.98, 1.53] straddles the 1.1x budget" in rule.reason
    assert "more replicates (bench.server_replicates, now 3; from 9 " in rule.reason
    assert "refine" not in rule.reason


def test_a_coarse_bracket_holds_and_asks_for_a_finer_sweep() -> None:
    # every replicate met 125 against 100, but either point may lie anywhere up to the next rate
    sats = [((100.0, 125.0), (125.0, 150.0))] * 3

    rule = saturation(evidence(sats))

    assert rule.status == RISK
    assert "1.25x [1.00, 1.50]" in rule.reason
    assert "bench.server_refine_steps, now 3" in rule.reason
    assert "disagree" not in rule.reason


def test_a_baseline_that_met_every_rate_asks_for_a_wider_sweep() -> None:
    sats = [((TOP, None), (TOP, None))] * 3

    rule = saturation(evidence(sats))

    assert rule.status == RISK
    assert "the baseline met the bound up to the sweep's top rate (300 req/s)" in rule.reason
    assert "bench.server_sweep_factors" in rule.reason


def test_a_candidate_that_met_no_rate_is_surely_lower() -> None:
    sats = [(tight(100.0), (None, 25.0))] * 3

    rule = saturation(evidence(sats))

    assert rule.status == FAIL and "lowered" in rule.reason
    assert "candidate none/none/none req/s" in rule.measured


@pytest.mark.parametrize("n", [1, 2])
def test_fewer_than_three_replicates_never_decide(n: int) -> None:
    rule = saturation(evidence([(tight(100.0), tight(300.0))] * n))

    assert rule.status == RISK
    assert "a decision needs at least 3 (bench.server_replicates)" in rule.reason


def test_a_replicate_bracket_is_the_widest_ratio_the_sweep_allows() -> None:
    w = {"baseline": side((100.0, 110.0)), "candidate": side((120.0, 130.0))}

    b = server_rules.bracket(w)

    assert (b.low, b.point, b.high) == pytest.approx((120 / 110, 1.2, 1.3))
    w["baseline"] = side((None, 25.0))
    assert server_rules.bracket(w).high == math.inf and server_rules.bracket(w).point is None


def test_the_interval_is_the_range_up_to_8_replicates_then_trims_the_outermost() -> None:
    # the sign test: [x_(k), x_(n+1-k)] holds the median with 1 - 2 P(Bin(n, 1/2) < k)
    assert [server_rules.rank(n, 0.95) for n in (1, 3, 5, 8, 9, 12)] == [1, 1, 1, 1, 2, 3]
    assert server_rules.coverage(3, 1) == pytest.approx(0.75)
    assert server_rules.coverage(5, 1) == pytest.approx(1 - 2 / 32)
    assert server_rules.coverage(9, 2) == pytest.approx(1 - 2 * 10 / 512)
    gain, none = (tight(100.0), tight(150.0)), (tight(100.0), tight(100.0))

    assert saturation(evidence([gain, none, gain])).status == RISK  # the range: 1 of 3 blocks
    nine = saturation(evidence([none] + [gain] * 8))
    assert nine.status == PASS  # 1 of 9 on the other side no longer bounds it at 95 %
    assert "9 replicates, 96% coverage of the median" in nine.measured


# --- p99 near saturation ------------------------------------------------------------------------

EQUAL = [(tight(100.0), tight(150.0))] * 3  # a saturation gain, so only the tail decides


@pytest.mark.parametrize(
    ("p99s", "status"),
    [
        ([(10.0, 10.0), (10.0, 10.5), (10.0, 9.0)], PASS),  # all within 1.1x
        ([(10.0, 13.0), (10.0, 15.0), (10.0, 12.0)], FAIL),  # all beyond
        ([(10.0, 10.0), (10.0, 13.0), (10.0, 10.5)], RISK),  # straddles
    ],
    ids=["within", "beyond", "straddles"],
)
def test_p99_near_saturation(p99s: list[tuple[float, float]], status: str) -> None:
    rule = tail(evidence(EQUAL, p99s))

    assert rule.status == status
    assert "at 90 req/s over 3 replicates" in rule.measured
    if status == FAIL:
        assert rule.reason == "batching grew the p99 latency near saturation 1.30x (at least 1.20x)"
    if status == RISK:
        assert "[1.00, 1.30] straddles the 1.1x budget" in rule.reason
        assert "bench.server_replicates, now 3" in rule.reason


def test_a_candidate_that_drops_near_saturation_grew_its_tail_without_bound() -> None:
    rule = tail(evidence(EQUAL, [(10.0, 10.0)] * 3, dropped=[(0, 5)] * 3))

    assert rule.status == FAIL
    assert rule.reason == "batching dropped requests at 90 req/s, where the baseline kept up"


def test_neither_side_keeping_up_near_saturation_holds() -> None:
    rule = tail(evidence(EQUAL, [(10.0, 10.0), (None, None), (10.0, 10.0)]))

    assert rule.status == RISK and "replicate 1" in rule.reason


# --- evidence from before replicates ------------------------------------------------------------


def test_unreplicated_evidence_holds_with_its_old_wording() -> None:
    old = {
        "saturation": {
            "baseline": {"saturation_qps": 100.0},
            "candidate": {"saturation_qps": 150.0},
        },
        "rates": [
            {
                "factor": 0.9,
                "rate_qps": 90.0,
                "baseline": {"latency_p99_ms": 5.0},
                "candidate": {"latency_p99_ms": 5.0},
            }
        ],
    }

    sat, p99 = server_rules.server(old, BUDGET)

    assert sat.status == RISK
    assert "saturation gain 1.50x on one unreplicated sweep, so not a ship" in sat.reason
    assert "dvc repro -f benchmark@batching" in sat.reason
    assert p99.status == PASS
