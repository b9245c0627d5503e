"""The regression gate of the scheduled re-benchmark, on synthetic evidence."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from stages import params as P
from stages import rebenchmark as R
from stages.io import EvidenceError
from stages.measure.timing import Timings, summarize

ROOT = Path(__file__).resolve().parents[1]


def iv(est: float, low: float, high: float) -> dict[str, float]:
    return {"estimate": est, "low": low, "high": high}


@pytest.mark.parametrize(
    ("before", "after", "floor", "status"),
    [
        (iv(2.0, 1.9, 2.1), iv(1.45, 1.4, 1.5), 0.03, R.REGRESSION),  # clearly slower now
        (iv(2.0, 1.9, 2.1), iv(1.95, 1.85, 2.05), 0.03, R.OK),  # intervals overlap
        (iv(1.0, 0.995, 1.005), iv(0.98, 0.975, 0.985), 0.03, R.OK),  # apart, inside the floor
        (iv(1.0, 0.995, 1.005), iv(0.90, 0.89, 0.91), 0.03, R.REGRESSION),
        (iv(1.0, 0.95, 1.05), iv(1.5, 1.45, 1.55), 0.03, R.IMPROVEMENT),
    ],
)
def test_classify(
    before: dict[str, float], after: dict[str, float], floor: float, status: str
) -> None:
    assert R.classify(before, after, floor) == status


def evidence(speedup: float, spread: float, floor: float = 0.03) -> dict[str, Any]:
    return {
        "status": "ok",
        "batches": [
            {
                "batch_size": 1,
                "noise_floor": floor,
                "speedup": {"p50": iv(speedup, speedup - spread, speedup + spread)},
            }
        ],
    }


def test_noise_between_two_real_runs_of_the_same_model_passes() -> None:
    """Two summaries of one simulated machine (same true speedup, new noise) must not regress."""
    rng = np.random.default_rng(3)

    def run_once() -> dict[str, Any]:
        t = Timings(
            orders=[("baseline", "candidate", "baseline_again")] * 30, stopped_by="precision"
        )
        drift = rng.lognormal(0, 0.05, size=30)  # the machine speeds up and slows down per round
        t.rounds = {
            side: [d * scale * rng.lognormal(0, 0.1, size=20) for d in drift]
            for side, scale in (("baseline", 1.0), ("candidate", 0.5), ("baseline_again", 1.0))
        }
        s = summarize(t, 1, precision=0.02, confidence=0.95, resamples=500, seed=0)
        return {"status": "ok", "batches": [s]}

    for _ in range(10):
        rows = R.compare("x", run_once(), run_once())
        assert [r.status for r in rows] == [R.OK]


def test_compare_flags_a_new_batch_size() -> None:
    after = evidence(1.2, 0.02)
    after["batches"].append(
        {"batch_size": 8, "noise_floor": 0.03, "speedup": {"p50": iv(1.3, 1.25, 1.35)}}
    )
    rows = R.compare("x", evidence(1.2, 0.02), after)
    assert [r.status for r in rows] == [R.OK, R.NEW]


@pytest.fixture()
def git_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    params = P.compose(["technique=[int8_dynamic,int8_static]"], conf=ROOT / "conf")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def commit(repo: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "e"],
        cwd=repo,
        check=True,
    )


def both(speedup: float, spread: float) -> dict[str, str]:
    return {
        f"reports/benchmark/{t}/benchmark.json": json.dumps(evidence(speedup, spread))
        for t in ("int8_dynamic", "int8_static")
    }


def test_gate_passes_on_noise_and_fails_on_a_real_regression(
    git_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    commit(git_repo, both(2.0, 0.05))
    for rel, text in both(1.97, 0.05).items():  # noise: passes
        (git_repo / rel).write_text(text)
    R.main(["--no-run", "--table", "table.md"])
    assert (
        "| int8_dynamic | 1 | 2.000 [1.950, 2.050] | 1.970 [1.920, 2.020] |"
        in capsys.readouterr().out
    )
    assert (git_repo / "table.md").read_text().count("| ok |") == 2
    for rel, text in both(1.5, 0.05).items():  # a real regression: exit 1
        (git_repo / rel).write_text(text)
    with pytest.raises(SystemExit) as e:
        R.main(["--no-run", "--table", "table.md"])
    assert e.value.code == 1 and "2 regression(s)" in capsys.readouterr().out


def test_gate_refuses_a_missing_committed_file(git_repo: Path) -> None:
    commit(git_repo, {"README": "x"})
    with pytest.raises(EvidenceError, match=r"no committed benchmark at HEAD.*int8_dynamic"):
        R.main(["--no-run"])


@pytest.mark.parametrize(
    "text", ["{not json", json.dumps({"status": "ok", "batches": [{"batch_size": 1}]})]
)
def test_gate_refuses_a_malformed_committed_file(git_repo: Path, text: str) -> None:
    files = both(2.0, 0.05)
    files["reports/benchmark/int8_static/benchmark.json"] = text
    commit(git_repo, files)
    with pytest.raises(EvidenceError, match=r"int8_static/benchmark\.json at HEAD is malformed"):
        R.main(["--no-run"])


def test_a_drop_smaller_than_the_minimum_change_passes() -> None:
    """Apart and beyond a 3 % A/A floor, but 6 % is within the run-to-run noise of a shared
    machine: only --min-change 0 counts it."""
    before, after = evidence(1.544, 0.05), evidence(1.445, 0.03)
    assert [r.status for r in R.compare("x", before, after)] == [R.REGRESSION]
    rows = R.compare("x", before, after, R.MIN_CHANGE)
    assert [r.status for r in rows] == [R.OK] and rows[0].floor == R.MIN_CHANGE


def test_confirm_keeps_only_regressions_the_retest_shows_again() -> None:
    first = R.compare("x", evidence(2.0, 0.05), evidence(1.5, 0.05), R.MIN_CHANGE)
    assert [r.status for r in first] == [R.REGRESSION]
    gone = R.confirm(first, R.compare("x", evidence(2.0, 0.05), evidence(1.98, 0.05)))
    assert [r.status for r in gone] == [R.NOT_REPRODUCED]
    assert gone[0].retest == iv(1.98, 1.93, 2.03) and gone[0].after == first[0].after
    kept = R.confirm(first, R.compare("x", evidence(2.0, 0.05), evidence(1.52, 0.04)))
    assert [r.status for r in kept] == [R.REGRESSION] and kept[0].retest == iv(1.52, 1.48, 1.56)


@pytest.mark.parametrize(("retest", "code"), [(1.99, None), (1.5, 1)])
def test_gate_retimes_a_regressed_candidate_before_failing(
    git_repo: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    retest: float,
    code: int | None,
) -> None:
    commit(git_repo, both(2.0, 0.05))
    real_run = subprocess.run
    forced: list[list[str]] = []

    def fake_run(cmd: list[str], **kw: Any) -> Any:
        if cmd[0] == "git":
            return real_run(cmd, **kw)
        if "-f" in cmd:  # a forced benchmark: the first finds int8_static slower, then the retest
            forced.append([c for c in cmd if c.startswith("benchmark@")])
            first = len(forced) == 1
            for t in ("int8_dynamic", "int8_static"):
                if f"benchmark@{t}" in cmd:
                    s = 1.5 if t == "int8_static" and first else retest
                    s = 1.98 if t == "int8_dynamic" else s
                    path = git_repo / f"reports/benchmark/{t}/benchmark.json"
                    path.write_text(json.dumps(evidence(s, 0.05)))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(R.subprocess, "run", fake_run)
    if code is None:
        R.main(["--table", "table.md"])
    else:
        with pytest.raises(SystemExit) as e:
            R.main(["--table", "table.md"])
        assert e.value.code == code
    assert forced == [
        ["benchmark@int8_dynamic", "benchmark@int8_static"],
        ["benchmark@int8_static"],
    ]
    out = capsys.readouterr().out
    assert "re-timing int8_static" in out
    status = R.NOT_REPRODUCED if code is None else R.REGRESSION
    assert "| int8_static | 1 | 2.000 [1.950, 2.050] | 1.500 [1.450, 1.550] | 10.0% |" in out
    assert out.count(f"| {status} |") == 1
