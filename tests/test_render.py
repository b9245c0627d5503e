"""Tests for the review note's plain lines (stages.evidence.findings) on fabricated evidence."""

from __future__ import annotations

from typing import Any

from stages.evidence.findings import movements, summary_sentence
from stages.evidence.formats import confidence_label


def _iv(estimate: float, low: float, high: float) -> dict[str, float]:
    return {"estimate": estimate, "low": low, "high": high}


def _candidate(
    p50: tuple[float, float, float], p95: tuple[float, float, float], floor_p95: float = 0.05
) -> dict[str, Any]:
    side = {q: _iv(10.0, 9.5, 10.5) for q in ("p50", "p95", "p99")}
    cand = {q: _iv(10.0 / p50[0], 9.0, 11.0) for q in ("p50", "p99")}
    cand["p95"] = _iv(14.5 / p95[0] * 1.0, 1.0, 20.0)
    side["p95"] = _iv(14.5, 14.0, 15.0)
    batch = {
        "batch_size": 1,
        "inputs": "validation",
        "sides": {"baseline": side, "candidate": cand},
        "speedup": {"p50": _iv(*p50), "p95": _iv(*p95), "p99": _iv(1.0, 0.9, 1.1)},
        "noise_floor": 0.03,
        "noise_floors": {"p50": 0.03, "p95": floor_p95, "p99": 0.08},
        "stopped_by": "decided (no measurable change)",
        "reliable": {"p99": True},
        "calls_per_side": 2000,
        "precise": True,
    }
    slices = {
        "short": {"right_to_wrong": 3, "wrong_to_right": 0, "drop_points": 1.0, "n": 300},
        "long": {"right_to_wrong": 1, "wrong_to_right": 1, "drop_points": 0.0, "n": 300},
    }
    for s in slices.values():
        s["baseline_accuracy"] = s["candidate_accuracy"] = _iv(0.8, 0.75, 0.85)
    return {
        "name": "fp16",
        "benchmark": {
            "batches": [batch],
            "size_bytes": {"baseline": 1000, "candidate": 500},
            "memory": {
                "baseline": {"peak_over_start_bytes": 1000},
                "candidate": {"peak_over_start_bytes": 1000},
            },
            "protocol": {"confidence": 0.9},
        },
        "validation": {
            "overall": {
                "drop_points": 0.5,
                "right_to_wrong": 4,
                "wrong_to_right": 1,
                "baseline_accuracy": _iv(0.8, 0.78, 0.82),
                "candidate_accuracy": _iv(0.795, 0.77, 0.81),
                "difference_points": _iv(-0.5, -1.2, 0.1),
                "mcnemar_p": 0.375,
            },
            "slices": slices,
            "fidelity": {"max_abs_error": 0.01, "cosine": 0.999, "sqnr_db": 40.0},
        },
        "rules": [],
    }


def test_the_p95_sentence_follows_the_p95_interval_not_the_p50() -> None:
    # p50 inside the noise, p95 measurably slower: the sentence must say P95 worsened
    c = _candidate(p50=(1.0, 0.98, 1.02), p95=(0.885, 0.814, 0.934))

    sentence = summary_sentence(c)

    assert "P95 latency at batch 1 worsened (14.500 ms -> 16.384 ms)" in sentence
    assert "model size by -50%" in sentence
    assert "accuracy changed -0.5 points (4 right->wrong, 1 wrong->right)" in sentence
    assert "the most new failures were on short (3)" in sentence


def test_the_p95_sentence_uses_the_p95_noise_floor() -> None:
    # 0.93 would be "slower" against a 3 % floor, but the A/A floor at p95 is 10 %
    c = _candidate(p50=(0.9, 0.88, 0.92), p95=(0.93, 0.92, 0.94), floor_p95=0.10)

    assert "P95 latency at batch 1 did not measurably change" in summary_sentence(c)


def test_movements_put_each_percentile_on_its_own_side() -> None:
    c = _candidate(p50=(1.5, 1.45, 1.55), p95=(0.8, 0.75, 0.85))

    better, worse = movements(c)

    assert any(line.startswith("p50 latency at batch 1") for line in better)
    assert any(line.startswith("p95 latency at batch 1") for line in worse)
    assert any(line.startswith("size on disk") for line in better)
    assert any(line.startswith("slice short") for line in worse)


def test_labels_carry_the_configured_confidence() -> None:
    c = _candidate(p50=(1.0, 0.98, 1.02), p95=(1.0, 0.98, 1.02))

    assert confidence_label(c["benchmark"]) == "90 %"
