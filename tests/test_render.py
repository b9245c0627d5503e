"""Tests for the review note's plain lines (stages.evidence.findings) on fabricated evidence."""

from __future__ import annotations

from typing import Any

from factories import candidate

from stages.evidence.findings import movements, summary_sentence
from stages.evidence.formats import confidence_label


def _candidate(
    p50: tuple[float, float, float], p95: tuple[float, float, float], floor_p95: float = 0.05
) -> dict[str, Any]:
    """fp16 with 4 right->wrong and 1 wrong->right in 600 rows, 3 of them on slice short."""
    return candidate(
        name="fp16",
        p50=p50,
        p95=p95,
        noise_floor_p95=floor_p95,
        stopped_by="decided (no measurable change)",
        overall=(600, 4, 1),
        slices={"short": (300, 3, 0), "long": (300, 1, 1)},
        confidence=0.9,
    )


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
