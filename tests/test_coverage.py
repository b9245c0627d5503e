"""The coverage benchmark's arithmetic (its timings are run by hand, alone on the machine)."""

from __future__ import annotations

import pytest

from stages import coverage


def _run(estimate: float, low: float, high: float) -> dict[str, float]:
    return {"estimate": estimate, "low": low, "high": high}


def test_pairs_count_each_ordered_pair_once() -> None:
    runs = [_run(1.0, 0.95, 1.05), _run(1.04, 1.00, 1.08), _run(1.20, 1.15, 1.25)]

    covered, pairs = coverage.pairs_covered(runs)

    # 0 holds 1; 1 holds 0; 2 holds neither; nobody holds 2
    assert (covered, pairs) == (2, 6)


def test_an_interval_narrower_than_the_spread_covers_few_pairs() -> None:
    tight = [_run(e, e - 0.005, e + 0.005) for e in (1.0, 1.05, 1.10, 1.15)]
    wide = [_run(e, e - 0.2, e + 0.2) for e in (1.0, 1.05, 1.10, 1.15)]

    assert coverage.pairs_covered(tight) == (0, 12)
    assert coverage.pairs_covered(wide) == (12, 12)


def test_spread_is_relative_to_the_mean() -> None:
    s = coverage.spread([_run(1.0, 0.9, 1.1), _run(1.2, 1.08, 1.32)])

    assert s["mean_estimate"] == pytest.approx(1.1)
    assert s["run_to_run_sd"] == pytest.approx(0.1414213 / 1.1, rel=1e-5)
    assert s["mean_half_width"] == pytest.approx(0.1)


def test_table_says_how_many_pairs_held() -> None:
    runs = [
        {**_run(1.0, 0.95, 1.05), "noise_floor": 0.04, "rounds": 30, "stopped_by": "max_seconds"},
        {**_run(1.2, 1.15, 1.25), "noise_floor": 0.05, "rounds": 24, "stopped_by": "precision"},
    ]
    runs[0]["effect"], runs[1]["effect"] = "no measurable change", "faster"

    text = coverage.table("fuse", runs, 0.95)

    assert "effects: faster 1, no measurable change 1" in text
    assert "rerun interval" not in text  # none recorded: nothing to count
    assert "A/A floor 4.0% (no measurable change)" in text
    assert "pairs covered: 0 of 2 (0%)" in text
    assert "run 1: 1.000 [0.950, 1.050]" in text and "holds 0 of the other 1" in text


def test_the_rerun_interval_is_counted_on_its_own() -> None:
    runs = [
        {**_run(1.0, 0.97, 1.03), "rerun": _run(1.0, 0.9, 1.1)},
        {**_run(1.05, 1.02, 1.08), "rerun": _run(1.05, 0.95, 1.15)},
        {**_run(1.3, 1.27, 1.33), "rerun": _run(1.3, 1.2, 1.4)},
    ]
    for r in runs:
        r.update(noise_floor=0.03, rounds=30, stopped_by="max_seconds", effect="faster")

    assert coverage.pairs_covered(runs) == (0, 6)
    assert coverage.pairs_covered(runs, "rerun") == (2, 6)  # 1.0 <-> 1.05 both ways
    assert "pairs covered by the rerun interval: 2 of 6 (33%)" in coverage.table("x", runs, 0.95)
