"""The regression gate of the scheduled re-benchmark, on synthetic evidence."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from stages import history as history_log
from stages import params as config
from stages import rebenchmark
from stages.measure.timing import Timings, summarize
from stages.regression import evidence as gate_evidence
from stages.regression import judge, noise
from stages.storage import EvidenceError

ROOT = Path(__file__).resolve().parents[1]
TECHNIQUES = ["technique=[int8_dynamic,int8_static]"]
PROTOCOL = history_log.protocol(
    config.compose(TECHNIQUES, conf=ROOT / "conf")["bench"]
)  # git_repo's


def iv(est: float, low: float, high: float) -> dict[str, float]:
    return {"estimate": est, "low": low, "high": high}


@pytest.mark.parametrize(
    ("before", "after", "limit", "status"),
    [
        (iv(2.0, 1.9, 2.1), iv(1.45, 1.4, 1.5), 0.05, judge.REGRESSION),  # clearly slower now
        (iv(2.0, 1.9, 2.1), iv(1.95, 1.85, 2.05), 0.05, judge.OK),  # 2.5 % down: inside
        (iv(1.0, 0.995, 1.005), iv(0.94, 0.935, 0.945), 0.05, judge.REGRESSION),  # 6 % down
        (iv(1.0, 0.995, 1.005), iv(0.96, 0.955, 0.965), 0.05, judge.OK),  # 4 % down
        (iv(1.0, 0.95, 1.05), iv(1.06, 1.0, 1.1), 0.05, judge.IMPROVEMENT),
        (iv(1.0, 0.95, 1.05), iv(1.05, 1.0, 1.1), 0.05, judge.OK),  # +5 % is -4.8 %: inside
    ],
)
def test_classify(
    before: dict[str, float], after: dict[str, float], limit: float, status: str
) -> None:
    assert judge.classify(before, after, limit) == status


def test_threshold_from_the_intervals_until_the_history_is_long_enough() -> None:
    before, after = iv(2.0, 1.8, 2.2), iv(2.0, 1.8, 2.2)  # +-10 %: sd 0.051 each on the log scale
    limit, basis = noise.threshold(before, after, [2.0] * 4, 0.05, 0.95)
    # 1.645 * sqrt(2) * 0.0512 = 0.119 on the log scale: an 11.2 % drop
    assert basis == "both intervals" and limit == pytest.approx(0.112, abs=0.001)
    # five past runs 1 % apart: moving ranges 0.01, sd 0.01 / 0.954; sqrt(2) * 1.645 * 0.0105
    # = 2.4 %, below the minimum change
    past = [2.0 * f for f in (0.98, 0.99, 1.0, 1.01, 1.02)]
    assert noise.threshold(before, after, past, 0.05, 0.95) == (0.05, "minimum change")
    limit, basis = noise.threshold(before, after, past, 0.01, 0.95)
    assert basis == "spread of 5 past runs" and limit == pytest.approx(0.0241, abs=0.0005)
    # a noisier history raises it; a higher confidence too
    assert (
        noise.threshold(before, after, [2.0 * f for f in (0.9, 1.0, 1.1) * 2], 0.05, 0.95)[0] > 0.1
    )
    assert noise.threshold(before, after, past, 0.01, 0.99)[0] > limit
    # one outlying run moves it little (a standard deviation would be ten times as wide)
    assert noise.threshold(before, after, [*past, 1.7], 0.01, 0.95)[0] < 0.03


def test_a_shift_in_the_history_is_not_counted_as_noise() -> None:
    """Five runs at 2.0, then four at 1.86 (a real 7 % drop already in the history): one moving
    range holds the shift, the median of the ranges stays the noise."""
    runs = [2.0 * f for f in (0.98, 0.99, 1.0, 1.01, 1.02)] + [1.86 * f for f in (0.99, 1.01) * 2]
    assert noise.run_spread(runs) == pytest.approx(0.0151 / 0.954, abs=0.001)
    assert noise.threshold(iv(2, 1.8, 2.2), iv(2, 1.8, 2.2), runs, 0.0, 0.95)[0] < 0.04
    assert float(np.std(np.log(runs), ddof=1)) > 0.03  # a standard deviation would count it


def evidence(speedup: float, spread: float, floor: float = 0.03) -> dict[str, Any]:
    return {
        "status": "ok",
        "host": HOST["fingerprint"],
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

    flagged = 0
    for _ in range(20):
        first, second = run_once(), run_once()
        assert [r.status for r in judge.compare("x", first, second, rebenchmark.MIN_CHANGE)] == [
            judge.OK
        ]
        (row,) = judge.compare("x", first, second)  # no minimum: the intervals' noise alone
        assert row.basis == "both intervals"
        flagged += row.status != judge.OK
    assert flagged <= 5  # one-sided 5 % each way: about 2 of 20 expected


def test_compare_flags_a_new_batch_size() -> None:
    after = evidence(1.2, 0.02)
    after["batches"].append(
        {"batch_size": 8, "noise_floor": 0.03, "speedup": {"p50": iv(1.3, 1.25, 1.35)}}
    )
    rows = judge.compare("x", evidence(1.2, 0.02), after)
    assert [r.status for r in rows] == [judge.OK, judge.NEW]


HOST = {
    "fingerprint": "0123456789abcdef",
    "cpu_model": "AMD EPYC",
    "architecture": "x86_64",
    "logical_cores": 2,
}


@pytest.fixture()
def git_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    params = config.compose(TECHNIQUES, conf=ROOT / "conf")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports/host.json").write_text(json.dumps(HOST))
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        rebenchmark, "this_host", lambda: HOST
    )  # the machine a forced run would time on
    monkeypatch.setattr(history_log, "log_mlflow", lambda rows, where, tags: "mlflow: not in tests")
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
    rebenchmark.main(["--no-run", "--table", "table.md"])
    assert (
        "| int8_dynamic | 1 | 2.000 [1.950, 2.050] | 1.970 [1.920, 2.020] |"
        in capsys.readouterr().out
    )
    assert (git_repo / "table.md").read_text().count("| ok |") == 2
    for rel, text in both(1.5, 0.05).items():  # a real regression: exit 1
        (git_repo / rel).write_text(text)
    with pytest.raises(SystemExit) as e:
        rebenchmark.main(["--no-run", "--table", "table.md"])
    assert e.value.code == 1 and "2 regression(s)" in capsys.readouterr().out


def test_gate_refuses_a_missing_committed_file(git_repo: Path) -> None:
    commit(git_repo, {"README": "x"})
    with pytest.raises(EvidenceError, match=r"no committed benchmark at HEAD.*int8_dynamic"):
        rebenchmark.main(["--no-run"])


@pytest.mark.parametrize(
    "text", ["{not json", json.dumps({"status": "ok", "batches": [{"batch_size": 1}]})]
)
def test_gate_refuses_a_malformed_committed_file(git_repo: Path, text: str) -> None:
    files = both(2.0, 0.05)
    files["reports/benchmark/int8_static/benchmark.json"] = text
    commit(git_repo, files)
    with pytest.raises(EvidenceError, match=r"int8_static/benchmark\.json at HEAD is malformed"):
        rebenchmark.main(["--no-run"])


def test_a_drop_smaller_than_the_minimum_change_passes() -> None:
    """4 % down, beyond what two tight intervals allow (3.2 %), but below the 5 % minimum
    change: only --min-change 0 counts it."""
    before, after = evidence(1.544, 0.05), evidence(1.482, 0.03)
    assert [r.status for r in judge.compare("x", before, after)] == [judge.REGRESSION]
    rows = judge.compare("x", before, after, rebenchmark.MIN_CHANGE)
    assert [r.status for r in rows] == [judge.OK] and rows[0].threshold == rebenchmark.MIN_CHANGE
    assert rows[0].basis == "minimum change"


def test_confirm_keeps_only_regressions_the_retest_shows_again() -> None:
    first = judge.compare("x", evidence(2.0, 0.05), evidence(1.5, 0.05), rebenchmark.MIN_CHANGE)
    assert [r.status for r in first] == [judge.REGRESSION]
    gone = judge.confirm(first, judge.compare("x", evidence(2.0, 0.05), evidence(1.98, 0.05)))
    assert [r.status for r in gone] == [judge.NOT_REPRODUCED]
    assert gone[0].retest == iv(1.98, 1.93, 2.03) and gone[0].after == first[0].after
    kept = judge.confirm(first, judge.compare("x", evidence(2.0, 0.05), evidence(1.52, 0.04)))
    assert [r.status for r in kept] == [judge.REGRESSION] and kept[0].retest == iv(1.52, 1.48, 1.56)


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

    monkeypatch.setattr(subprocess, "run", fake_run)
    logged: list[dict[str, str]] = []

    def log(rows: list[dict[str, Any]], where: dict[str, str], tags: dict[str, str]) -> str:
        logged.append(tags)
        return "logged"

    monkeypatch.setattr(history_log, "log_mlflow", log)
    if code is None:
        rebenchmark.main(["--table", "table.md"])
    else:
        with pytest.raises(SystemExit) as e:
            rebenchmark.main(["--table", "table.md"])
        assert e.value.code == code
    assert forced == [
        ["benchmark@int8_dynamic", "benchmark@int8_static"],
        ["benchmark@int8_static"],
    ]
    out = capsys.readouterr().out
    assert "re-timing int8_static" in out
    status = judge.NOT_REPRODUCED if code is None else judge.REGRESSION
    assert (
        "| int8_static | 1 | 2.000 [1.950, 2.050] | 1.500 [1.450, 1.550] | committed | "
        "5.0% (minimum change) |" in out
    )
    assert out.count(f"| {status} |") == 1
    assert (
        "confirmed by a retest" not in out
        and "below the committed value only where each retest shows it too" in out
    )
    runs = history_log.read(git_repo / "reports/rebenchmark_history.csv")  # one run per timing run
    assert [(r["candidate"], r["batch"], r["estimate"]) for r in runs] == [
        ("int8_dynamic", 1, 1.98),
        ("int8_static", 1, 1.5),
        ("int8_static", 1, retest),
    ]
    assert {r["machine"] for r in runs} == {gate_evidence.machine(HOST)}
    assert {r["protocol"] for r in runs} == {PROTOCOL}
    assert [t["exit_code"] for t in logged] == [str(code or 0)]  # one MLflow run per re-benchmark


def run_cli(args: list[str]) -> int:
    """The exit code of `python -m stages.rebenchmark` with these arguments."""
    with pytest.raises(SystemExit) as e:
        rebenchmark.cli(args)
        raise SystemExit(0)
    return int(e.value.code or 0)


def write_now(repo: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (repo / rel).write_text(text)


@pytest.mark.parametrize(
    ("now", "spread", "code"),
    [
        (1.97, 0.05, rebenchmark.PASSED),  # noise
        (1.5, 0.05, rebenchmark.REGRESSED),  # a real drop
        (1.97, 0.3, rebenchmark.TOO_NOISY),  # a +-15 % interval: a 10 % drop could pass unseen
    ],
)
def test_gate_exit_codes(git_repo: Path, now: float, spread: float, code: int) -> None:
    commit(git_repo, both(2.0, 0.05))
    write_now(git_repo, {k: json.dumps(evidence(now, spread)) for k in both(0, 0)})
    assert run_cli(["--no-run", "--table", "table.md"]) == code


def test_gate_exit_code_2_without_committed_evidence(
    git_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    commit(git_repo, {"README": "x"})
    assert run_cli(["--no-run"]) == rebenchmark.UNUSABLE
    assert "no committed benchmark at HEAD" in capsys.readouterr().err


def test_a_wide_threshold_reads_noisy_unless_the_drop_clears_it() -> None:
    """The A/A floor no longer sets the threshold: a wide one is no license to pass, and the
    noise a comparison must allow decides whether it can judge at all."""
    rows = judge.compare(
        "x", evidence(2.0, 0.05), evidence(1.97, 0.3), rebenchmark.MIN_CHANGE, 0.10
    )
    assert rows[0].status == f"NOISY: threshold {rows[0].threshold:.1%} > 10.0%"
    assert rows[0].threshold > 0.10 and rows[0].basis == "both intervals"
    rows = judge.compare(
        "x", evidence(2.0, 0.3, 0.2), evidence(1.2, 0.05), rebenchmark.MIN_CHANGE, 0.10
    )
    assert rows[0].status == judge.REGRESSION  # 40 % down: beyond even that threshold
    wide_aa = judge.compare(
        "x", evidence(2.0, 0.05, 0.5), evidence(1.7, 0.05, 0.5), rebenchmark.MIN_CHANGE
    )
    assert wide_aa[0].status == judge.REGRESSION  # 15 % down: a 50 % A/A floor does not hide it
    # a retest too noisy to judge leaves the row noisy, not "not reproduced"
    again = judge.compare("x", evidence(2.0, 0.3), evidence(1.9, 0.3), 0.1, 0.1)
    assert judge.confirm(rows, again)[0].status.startswith(judge.NOISY)


def test_max_floor_defaults_to_the_params_and_the_flag_overrides_it(
    git_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    commit(git_repo, both(2.0, 0.25))
    write_now(git_repo, {k: json.dumps(evidence(1.97, 0.25)) for k in both(0, 0)})
    assert (
        run_cli(["--no-run", "--table", "t.md"]) == rebenchmark.TOO_NOISY
    )  # bench.max_noise_floor 0.1
    assert "> 10.0%" in capsys.readouterr().out
    assert run_cli(["--no-run", "--table", "t.md", "--max-floor", "0.2"]) == rebenchmark.PASSED


def test_the_default_minimum_change_catches_seven_percent(git_repo: Path) -> None:
    """A 7 % drop between two +-1.5 % intervals is caught at the default 5 %, not at 10 %."""
    commit(git_repo, both(2.0, 0.03))
    write_now(git_repo, {k: json.dumps(evidence(1.86, 0.03)) for k in both(0, 0)})
    assert run_cli(["--no-run", "--table", "t.md"]) == rebenchmark.REGRESSED
    assert "| 5.0% (minimum change) |" in (git_repo / "t.md").read_text()
    assert run_cli(["--no-run", "--table", "t.md", "--min-change", "0.10"]) == rebenchmark.PASSED


def test_wide_intervals_raise_the_threshold_until_the_history_is_long_enough(
    git_repo: Path,
) -> None:
    """A 7 % drop between two +-8 % intervals is within what their noise allows (sd 0.041 each on
    the log scale: 1.645 * sqrt(2) * 0.041 = 9.1 %), unless five past runs show that the
    run-to-run spread is small."""
    commit(git_repo, both(2.0, 0.16))
    write_now(git_repo, {k: json.dumps(evidence(1.86, 0.16)) for k in both(0, 0)})
    assert run_cli(["--no-run", "--table", "t.md"]) == rebenchmark.PASSED
    assert "(both intervals)" in (git_repo / "t.md").read_text()
    history_log.append(git_repo / "h.csv", past_runs(5, 2.0) + past_runs(5, 2.0, "int8_dynamic"))
    assert run_cli(["--no-run", "--table", "t.md", "--history", "h.csv"]) == rebenchmark.REGRESSED
    assert "(minimum change)" in (git_repo / "t.md").read_text()


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        ("model", "model: 'digits_cnn' at HEAD, 'minilm_sentiment' here"),
        ("target", "target: 'edge' at HEAD, 'cpu' here"),
        ("machine", "machine: 'Intel(R) Xeon(R) Processor (x86_64, 2 logical cores)' at HEAD"),
    ],
)
def test_gate_refuses_evidence_of_another_model_target_or_machine(
    git_repo: Path, capsys: pytest.CaptureFixture[str], edit: str, named: str
) -> None:
    params = yaml.safe_load((git_repo / "params.yaml").read_text())
    files = both(2.0, 0.05)
    if edit == "machine":
        files["reports/host.json"] = json.dumps({**HOST, "cpu_model": "Intel(R) Xeon(R) Processor"})
    else:
        params[edit]["name"] = {"model": "digits_cnn", "target": "edge"}[edit]
        files["params.yaml"] = yaml.safe_dump(params)
    here = {
        "params.yaml": (git_repo / "params.yaml").read_text(),
        "reports/host.json": json.dumps(HOST),
    }
    commit(git_repo, files)
    write_now(git_repo, here)
    assert run_cli(["--no-run"]) == rebenchmark.UNUSABLE
    err = capsys.readouterr().err
    assert f"another {edit}" in err and named in err


def test_no_run_footer_does_not_claim_a_retest(
    git_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    commit(git_repo, both(2.0, 0.05))
    write_now(git_repo, both(1.5, 0.05))
    assert run_cli(["--no-run", "--table", "t.md"]) == rebenchmark.REGRESSED
    out = capsys.readouterr().out
    assert "retest" in out and "confirmed by a retest" not in out
    assert "no retest ran (--no-run" in out


def past_runs(n: int, speedup: float, technique: str = "int8_static") -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    return [
        {
            "utc": f"2025-01-{i + 1:02d}T03:00:00+00:00",
            "commit": f"{i:040x}",
            "host": HOST["fingerprint"],
            "machine": gate_evidence.machine(HOST),
            "protocol": PROTOCOL,
            "model": "minilm_sentiment",
            "target": "cpu",
            "candidate": technique,
            "inputs": "validation",
            "batch": 1,
            "estimate": e,
            "low": e - 0.05,
            "high": e + 0.05,
            "noise_floor": 0.03,
        }
        for i, e in enumerate(speedup * rng.lognormal(0, 0.02, n))
    ]


@pytest.mark.parametrize(("now", "status"), [(2.0, judge.OK), (1.5, judge.REGRESSION)])
def test_a_committed_outlier_no_longer_matters_against_the_median(
    git_repo: Path, capsys: pytest.CaptureFixture[str], now: float, status: str
) -> None:
    """With eight past runs near 2.0, a committed 2.6 (one run, far off) is only shown: the new
    run is compared with the median of the history, so 2.0 now passes and 1.5 now fails."""
    history_log.append(git_repo / "h.csv", past_runs(8, 2.0) + past_runs(8, 2.0, "int8_dynamic"))
    commit(git_repo, both(2.6, 0.05))
    write_now(git_repo, both(now, 0.05))
    code = run_cli(["--no-run", "--table", "t.md", "--history", "h.csv"])
    row = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("| int8_static"))
    assert code == (rebenchmark.PASSED if status == judge.OK else rebenchmark.REGRESSED)
    assert row.endswith(f"| {status} |") and "| 2.600 [2.550, 2.650] |" in row
    assert "| median of 8 past runs, 2.010 |" in row
    # against the committed value alone, 2.0 would have read as a 23 % drop
    assert (
        judge.compare("x", evidence(2.6, 0.05), evidence(2.0, 0.05))[0].status == judge.REGRESSION
    )


def test_runs_of_another_timing_protocol_are_not_the_reference(
    git_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Eight past runs near 2.0 timed under another bench section: the committed 2.6 is the
    reference again (a protocol change starts new series), so 2.0 now reads as a regression."""
    other = [{**r, "protocol": "0123456789"} for r in past_runs(8, 2.0) + past_runs(8, 2.0, "x")]
    history_log.append(git_repo / "h.csv", other)
    commit(git_repo, both(2.6, 0.05))
    write_now(git_repo, both(2.0, 0.05))
    code = run_cli(["--no-run", "--table", "t.md", "--history", "h.csv"])
    row = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("| int8_static"))
    assert code == rebenchmark.REGRESSED and "| committed |" in row and "median" not in row


def test_committed_evidence_of_another_timing_protocol_is_still_compared(
    git_repo: Path,
) -> None:
    params = yaml.safe_load((git_repo / "params.yaml").read_text())
    now = (git_repo / "params.yaml").read_text()
    params["bench"]["max_seconds"] += 1
    commit(git_repo, {**both(2.0, 0.05), "params.yaml": yaml.safe_dump(params)})
    write_now(git_repo, {**both(2.0, 0.05), "params.yaml": now})
    assert run_cli(["--no-run", "--table", "t.md"]) == rebenchmark.PASSED


def test_a_flagged_drop_says_the_committed_side_is_one_run() -> None:
    row = judge.compare("x", evidence(2.0, 0.05), evidence(1.5, 0.05), rebenchmark.MIN_CHANGE)[0]
    assert judge.judge_committed(row, []).history.startswith("committed side is one run")


def test_log_mlflow_names_one_metric_per_candidate_and_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    logged: dict[str, Any] = {}

    class Run:
        info = type("Info", (), {"run_id": "r1"})

        def __enter__(self) -> Run:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    fake = type(sys)("mlflow")
    fake.set_tracking_uri = lambda uri: logged.update(uri=uri)  # type: ignore[attr-defined]
    fake.set_experiment = lambda name: logged.update(experiment=name)  # type: ignore[attr-defined]
    fake.start_run = lambda **kw: Run()  # type: ignore[attr-defined]
    fake.log_metrics = lambda m: logged.update(metrics=m)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///x.db")
    where = {"model": "minilm_sentiment", "target": "cpu", "machine": "m"}
    line = history_log.log_mlflow(past_runs(1, 2.0), where, {"commit": "abc", **where})
    assert line == "logged to sqlite:///x.db: run r1"
    assert logged["experiment"] == "rebenchmark-minilm_sentiment-cpu"
    assert set(logged["metrics"]) == {
        "int8_static.b1.p50_speedup",
        "int8_static.b1.p50_speedup_low",
        "int8_static.b1.p50_speedup_high",
    }


def test_the_spread_is_taken_since_the_last_shift(git_repo: Path) -> None:
    """Ten runs at 1.0, then six at 2.0 (a real improvement, already in the history): the
    shift moves one range, not the spread that sets the threshold, and the median the committed
    value is compared with is that of the six: a 7 % drop now is caught."""
    history = []
    for t in ("int8_static", "int8_dynamic"):
        history += past_runs(10, 1.0, t) + past_runs(6, 2.0, t)
    history_log.append(git_repo / "h.csv", history)
    commit(git_repo, both(2.0, 0.16))
    write_now(git_repo, {k: json.dumps(evidence(1.86, 0.16)) for k in both(0, 0)})
    assert run_cli(["--no-run", "--table", "t.md", "--history", "h.csv"]) == rebenchmark.REGRESSED
    text = (git_repo / "t.md").read_text()
    assert "(minimum change)" in text and "median of 6 runs since the last shift" in text
    # the median of all sixteen runs (1.0) would read the same drop as a rise
    runs = {("validation", 1): [1.0] * 10 + [2.0] * 6}
    row = judge.compare(
        "x", evidence(2.0, 0.03), evidence(1.86, 0.03), rebenchmark.MIN_CHANGE, past=runs
    )[0]
    assert row.status == judge.IMPROVEMENT and row.reference and row.reference.median == 1.0


def steady(n: int, step: float, speedup: float = 2.0) -> list[float]:
    """n past runs whose consecutive log ranges are all `step` (spread step / 0.954) and whose
    median is exactly `speedup`: speedup * exp(step * (0, 1, 0, -1, ...))."""
    return [speedup * math.exp(step * d) for d in ((0, 1, 0, -1) * n)[:n]]


B1 = ("validation", 1)


def test_the_threshold_of_a_mean_against_a_median_by_hand() -> None:
    """Nine runs with log ranges of 0.05: spread 0.05 / 0.9539 = 0.05242. The mean of m = 2 new
    runs against their median varies 0.05242^2 * (1/2 + pi/18): sd 0.05242 * 0.8213 = 0.04305;
    1.6449 * 0.04305 = 0.07081 on the log scale, a 6.84 % drop."""
    runs = steady(9, 0.05)
    assert noise.run_spread(runs) == pytest.approx(0.05242, abs=1e-5)
    assert noise.mean_threshold(noise.run_spread(runs), 2, 9, 0.0, 0.95) == pytest.approx(
        0.0684, abs=1e-4
    )
    ref = noise.reference(runs, runs)
    assert ref is not None and (ref.median, ref.runs, ref.shifted) == (2.0, 9, False)
    limit, basis = ref.threshold(2, rebenchmark.MIN_CHANGE, 0.95)
    assert limit == pytest.approx(0.0684, abs=1e-4) and basis == "spread of 9 past runs"
    assert ref.threshold(1, rebenchmark.MIN_CHANGE, 0.95)[0] == pytest.approx(
        0.0892, abs=1e-4
    )  # m = 1
    assert ref.threshold(2, 0.08, 0.95) == (0.08, "minimum change")
    assert noise.reference(runs, runs[:4]) is None  # four runs since a shift: too few for a median


def test_a_seven_percent_drop_is_confirmed_on_the_mean_of_run_and_retest() -> None:
    """Ten steady runs at 2.0, 3.5 % apart: one run against their median must fall 6.0 % to
    count, the mean of two 4.6 % (so 5 %, the minimum change). A first run 5 % down passes on
    its own, but is past half the threshold: the retest, 9 % down, makes the mean 7 % down, a
    regression. (Against the committed value, two runs' noise would set 7.8 %: no retest.)"""
    past = {B1: steady(10, 0.0335)}
    (first,) = judge.compare(
        "x", evidence(2.0, 0.05), evidence(1.90, 0.05), rebenchmark.MIN_CHANGE, past=past
    )
    assert first.reference and first.reference.median == 2.0
    assert first.threshold == pytest.approx(0.0602, abs=1e-4)
    assert first.status == judge.OK and first.screened  # --retests 0: judged on the first run alone
    again = judge.compare(
        "x", evidence(2.0, 0.05), evidence(1.82, 0.05), rebenchmark.MIN_CHANGE, past=past
    )
    (row,) = judge.confirm([first], again, rebenchmark.MIN_CHANGE, 0.10, 0.95)
    assert row.status == judge.REGRESSION and row.threshold == rebenchmark.MIN_CHANGE
    assert row.retests == (iv(1.82, 1.77, 1.87),) and row.after == first.after
    assert row.compared_with() == "median of 10 past runs, 2.000; mean of 2 runs 1.860"
    # a second retest at 2.0 brings the mean of three to 4.7 % down: within 5 %
    again = judge.compare(
        "x", evidence(2.0, 0.05), evidence(2.0, 0.05), rebenchmark.MIN_CHANGE, past=past
    )
    (row,) = judge.confirm([row], again, rebenchmark.MIN_CHANGE, 0.10, 0.95)
    assert row.status == judge.NOT_REPRODUCED and len(row.retests) == 2


def test_an_unchanged_series_is_not_flagged_by_a_low_first_run() -> None:
    """A quiet history (2 % apart): the first run 3 % below its median is past half the 5 %
    threshold and is retested; the retest 1 % above makes the mean 1 % down: no regression."""
    past = {B1: steady(10, 0.019)}
    (first,) = judge.compare(
        "x", evidence(2.0, 0.05), evidence(1.94, 0.05), rebenchmark.MIN_CHANGE, past=past
    )
    assert first.status == judge.OK and first.screened and first.threshold == rebenchmark.MIN_CHANGE
    again = judge.compare(
        "x", evidence(2.0, 0.05), evidence(2.02, 0.05), rebenchmark.MIN_CHANGE, past=past
    )
    (row,) = judge.confirm([first], again, rebenchmark.MIN_CHANGE, 0.10, 0.95)
    assert row.status == judge.NOT_REPRODUCED and rebenchmark.gate([row]) == rebenchmark.PASSED
    # a first run 2 % down is not even retested
    (calm,) = judge.compare(
        "x", evidence(2.0, 0.05), evidence(1.96, 0.05), rebenchmark.MIN_CHANGE, past=past
    )
    assert not calm.screened and judge.confirm([calm], again, rebenchmark.MIN_CHANGE)[0] == calm


def test_with_too_few_runs_since_the_shift_the_committed_value_and_both_runs_decide() -> None:
    """Ten runs at 1.0, then four at 2.0: no median yet. The first run 9 % below the committed
    value regresses, the retest 4.5 % below does not on its own, so the drop is not confirmed
    (their mean, 6.8 % down, is not what counts here); a first run 4 % down is not retested."""
    history = steady(10, 0.01, 1.0) + steady(4, 0.01)
    past, since = {B1: history}, {B1: history[10:]}
    committed, args = evidence(2.0, 0.05), (rebenchmark.MIN_CHANGE, 0.10, 0.95, past, since)
    (first,) = judge.compare("x", committed, evidence(1.82, 0.05), *args)
    assert first.reference is None and first.compared_with() == judge.COMMITTED
    assert first.status == judge.REGRESSION and first.basis == "minimum change"
    (row,) = judge.confirm([first], judge.compare("x", committed, evidence(1.91, 0.05), *args))
    assert row.status == judge.NOT_REPRODUCED
    (row,) = judge.confirm([first], judge.compare("x", committed, evidence(1.84, 0.05), *args))
    assert row.status == judge.REGRESSION  # both beyond the threshold
    (small,) = judge.compare("x", committed, evidence(1.92, 0.05), *args)
    assert small.status == judge.OK and not small.screened


def test_the_gate_reads_the_runs_since_the_shift_from_the_history(
    git_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ten runs at 1.0, then four at 2.0 (a shift the history finds): four runs since it are too
    few for a median, so the committed value is the reference and the row says it is one run."""
    history = []
    for t in ("int8_static", "int8_dynamic"):
        history += past_runs(10, 1.0, t) + past_runs(4, 2.0, t)
    history_log.append(git_repo / "h.csv", history)
    commit(git_repo, both(2.0, 0.05))
    write_now(git_repo, both(1.8, 0.05))
    assert run_cli(["--no-run", "--table", "t.md", "--history", "h.csv"]) == rebenchmark.REGRESSED
    row = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("| int8_static"))
    assert "| committed | 5.0% (minimum change) |" in row
    assert "committed side is one run (4 past runs: too few to check it)" in row


def fake_timings(
    monkeypatch: pytest.MonkeyPatch, repo: Path, speedups: dict[str, list[float]]
) -> list[list[str]]:
    """Forced benchmark runs that write, for each candidate named, its next p50 speedup in
    `speedups`; returns the candidates each forced run timed."""
    real_run = subprocess.run
    forced: list[list[str]] = []

    def fake_run(cmd: list[str], **kw: Any) -> Any:
        if cmd[0] == "git":
            return real_run(cmd, **kw)
        if "-f" in cmd:
            forced.append([c.removeprefix("benchmark@") for c in cmd if c.startswith("benchmark@")])
            for t in forced[-1]:
                path = repo / f"reports/benchmark/{t}/benchmark.json"
                path.write_text(json.dumps(evidence(speedups[t].pop(0), 0.05)))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    return forced


@pytest.mark.parametrize(
    ("retests", "code"), [("1", rebenchmark.REGRESSED), ("0", rebenchmark.PASSED)]
)
def test_gate_confirms_a_drop_on_the_mean_of_the_run_and_its_retest(
    git_repo: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    retests: str,
    code: int,
) -> None:
    """int8_static 5 % then 9 % below the median of ten steady runs: with a retest the mean,
    7 % down, fails the gate; with none the first run alone is within its 6 % threshold. Each
    timing run is a run of the history."""
    steady_runs = []
    for t in ("int8_static", "int8_dynamic"):
        for r, e in zip(past_runs(10, 2.0, t), steady(10, 0.0335), strict=True):
            steady_runs.append({**r, "estimate": e})
    history_log.append(git_repo / "h.csv", steady_runs)
    commit(git_repo, both(2.0, 0.05))
    speedups = {"int8_static": [1.90, 1.82], "int8_dynamic": [2.0]}
    forced = fake_timings(monkeypatch, git_repo, speedups)
    args = ["--table", "t.md", "--history", "h.csv", "--retests", retests]
    assert run_cli(args) == code
    timed = [["int8_dynamic", "int8_static"], ["int8_static"]]
    assert forced == timed[: 1 + int(retests)]
    row = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("| int8_static"))
    if code == rebenchmark.REGRESSED:
        assert "| median of 10 past runs, 2.000; mean of 2 runs 1.860 | 5.0% (minimum" in row
        assert "| 1.820 [1.770, 1.870] |" in row and row.endswith(f"| {judge.REGRESSION} |")
    else:
        assert "| median of 10 past runs, 2.000 | 6.0% (spread of 10 past runs) |" in row
        assert row.endswith(f"| {judge.OK} |")
    new = [(r["candidate"], r["estimate"]) for r in history_log.read(git_repo / "h.csv")[20:]]
    assert (
        new
        == [("int8_dynamic", 2.0), ("int8_static", 1.9), ("int8_static", 1.82)][: 2 + int(retests)]
    )
