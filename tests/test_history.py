"""The re-benchmark history: the CSV, the change-point analysis and its report, on seeded data."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stages import history as history_log
from stages.change_points import ALPHA, change_points, describe
from stages.storage import EvidenceError


def noisy(n: int, level: float, rng: np.random.Generator) -> np.ndarray:
    return level * rng.lognormal(0, 0.03, n)  # about 3 % run to run


def runs(
    values: np.ndarray, candidate: str = "int8_static", batch: int = 1, protocol: str = "p1"
) -> list[dict[str, Any]]:
    return [
        {
            "utc": f"2025-03-{i + 1:02d}T03:00:00+00:00",
            "commit": (f"{i:x}" * 40)[:40],
            "host": "0123456789abcdef",
            "machine": "AMD EPYC (x86_64, 2 logical cores)",
            "protocol": protocol,
            "model": "minilm_sentiment",
            "target": "cpu",
            "candidate": candidate,
            "inputs": "validation",
            "batch": batch,
            "estimate": float(v),
            "low": float(v) * 0.98,
            "high": float(v) * 1.02,
            "noise_floor": 0.03,
        }
        for i, v in enumerate(values)
    ]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_seven_percent_step_after_ten_stable_runs_is_found_at_its_run(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = np.r_[noisy(10, 1.6, rng), noisy(8, 1.6 * 0.93, rng)]
    shifts = change_points(values)
    assert [s.run for s in shifts] == [11]
    assert shifts[0].change == pytest.approx(-0.07, abs=0.025) and shifts[0].pvalue <= ALPHA
    assert describe(shifts).startswith("shift at run 11 (-")


@pytest.mark.parametrize("seed", range(5))
def test_a_flat_noisy_history_has_no_shift(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    assert change_points(noisy(20, 1.6, rng)) == []


def test_one_outlying_run_is_not_a_shift() -> None:
    values = noisy(15, 1.6, np.random.default_rng(7))
    values[9] *= 0.8
    assert change_points(values) == []


def test_two_shifts_are_both_found() -> None:
    rng = np.random.default_rng(4)
    values = np.r_[noisy(10, 2.0, rng), noisy(10, 1.7, rng), noisy(10, 2.0, rng)]
    shifts = change_points(values)
    assert [s.run for s in shifts] == [11, 21]
    assert describe(shifts).startswith("shifts at runs 11 (-")


def test_append_then_read_keeps_the_rows_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "reports" / "history.csv"
    rows = runs(np.array([1.6, 1.62]))
    history_log.append(path, rows[:1])
    history_log.append(path, rows[1:])
    assert history_log.read(path) == rows
    assert path.read_text().splitlines()[0] == ",".join(history_log.FIELDS)
    assert [p.name for p in path.parent.iterdir()] == ["history.csv"]
    assert history_log.read(tmp_path / "absent.csv") == []


def test_a_foreign_or_broken_csv_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(EvidenceError, match="header"):
        history_log.append(path, runs(np.array([1.6])))
    history_log.append(tmp_path / "ok.csv", runs(np.array([1.6])))
    text = (tmp_path / "ok.csv").read_text().replace("1.6,", "fast,", 1)
    (tmp_path / "ok.csv").write_text(text)
    with pytest.raises(EvidenceError, match="line 2 is malformed"):
        history_log.read(tmp_path / "ok.csv")


def test_series_are_kept_apart_and_the_report_names_the_shift(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = runs(np.r_[noisy(10, 1.6, rng), noisy(6, 1.6 * 0.93, rng)])
    rows += runs(noisy(16, 2.0, rng), batch=8)
    shifts = history_log.analyse(rows)
    assert sorted(len(s) for s in shifts.values()) == [0, 1]
    path = tmp_path / "h.csv"
    history_log.append(path, rows)
    history_log.main(["--csv", str(path), "--out", str(tmp_path / "history.md")])
    text = (tmp_path / "history.md").read_text()
    assert "| int8_static | 1 | 16 |" in text and "shift at run 11 (-" in text
    assert "from run 11 (2025-03-11T03:00:00+00:00, commit aaaaaaaaaa)" in text


def test_the_report_of_an_empty_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    history_log.main(["--csv", str(tmp_path / "none.csv")])
    assert "no re-benchmark recorded yet" in capsys.readouterr().out


def test_a_history_from_before_the_protocol_column_is_kept_as_a_series_of_its_own(
    tmp_path: Path,
) -> None:
    path = tmp_path / "h.csv"
    old = runs(np.array([1.6, 1.62]))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, history_log.BEFORE_PROTOCOL, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(old)
    assert [r["protocol"] for r in history_log.read(path)] == ["", ""]  # readable as it is
    history_log.append(path, runs(np.array([1.5]), protocol="abc"))
    assert path.read_text().splitlines()[0] == ",".join(history_log.FIELDS)
    rows = history_log.read(path)
    assert [(r["protocol"], r["estimate"]) for r in rows] == [("", 1.6), ("", 1.62), ("abc", 1.5)]
    assert [len(s) for s in history_log.series(rows).values()] == [2, 1]
    report = history_log.markdown(rows, history_log.analyse(rows))
    assert "| unknown | int8_static |" in report and "| abc | int8_static |" in report


def test_the_protocol_fingerprint_follows_every_bench_value_not_its_order() -> None:
    bench = {"max_seconds": 17.0, "report_seconds": 3.0, "sessions": 5}
    same = dict(reversed(list(bench.items())))
    assert (
        history_log.protocol(bench) == history_log.protocol(same)
        and len(history_log.protocol(bench)) == 10
    )
    for key in bench:
        assert history_log.protocol({**bench, key: bench[key] + 1}) != history_log.protocol(
            bench
        ), key
