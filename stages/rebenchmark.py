"""The scheduled re-benchmark: time every candidate again and flag real regressions, not noise.

`python -m stages.rebenchmark` (or `make rebenchmark`) forces each `benchmark@<t>` stage (the
run-cache must not replay old timings), re-runs the report, then compares each new p50 speedup
interval with the one committed at `--against` (default HEAD). A speedup counts as a regression
only when it fell beyond both intervals and by more than the larger of the two runs' A/A noise
floors and `--min-change`, and only when a forced retest of that candidate shows it again: the
A/A floor measures the noise within one run, while two runs on a shared machine differ by more
(the same candidate's p50 speedup moved by up to 9 % from run to run here). It exits 1 only on
a regression so confirmed, and prints a Markdown table fit for a pull-request comment (also
written to `--table`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from stages import params as P
from stages.io import EvidenceError, write_text

OK, REGRESSION, IMPROVEMENT, NEW = "ok", "REGRESSION", "improvement", "new"
NOT_REPRODUCED = "ok (retest did not reproduce the drop)"
MIN_CHANGE = 0.10  # default smallest relative change that may count, whatever the A/A floor


@dataclass(frozen=True)
class Row:
    technique: str
    inputs: str  # the input set timed: "validation", or a preset's fixed-shape set
    batch_size: int
    before: dict[str, float] | None  # p50 speedup interval committed
    after: dict[str, float]  # p50 speedup interval measured now
    floor: float  # the threshold: the larger A/A noise floor of the two runs, or min_change
    status: str
    retest: dict[str, float] | None = None  # p50 speedup interval of the retest, when one ran


def classify(before: dict[str, float], after: dict[str, float], floor: float) -> str:
    """REGRESSION only when the intervals do not overlap and the drop exceeds the noise floor."""
    drop = (before["estimate"] - after["estimate"]) / before["estimate"]
    if after["high"] < before["low"] and drop > floor:
        return REGRESSION
    if after["low"] > before["high"] and -drop > floor:
        return IMPROVEMENT
    return OK


def compare(
    technique: str,
    before: dict[str, Any] | None,
    after: dict[str, Any],
    min_change: float = 0.0,
) -> list[Row]:
    """One row per batch size of one candidate's benchmark evidence."""
    if after.get("status") != "ok":
        return []

    def key(b: dict[str, Any]) -> tuple[str, int]:
        return b.get("inputs", "validation"), b["batch_size"]

    old = {key(b): b for b in before["batches"]} if before else {}
    rows = []
    for b in after["batches"]:
        prev = old.get(key(b))
        if prev is None:
            rows.append(
                Row(
                    technique,
                    key(b)[0],
                    b["batch_size"],
                    None,
                    b["speedup"]["p50"],
                    b["noise_floor"],
                    NEW,
                )
            )
            continue
        floor = max(b["noise_floor"], prev["noise_floor"], min_change)
        status = classify(prev["speedup"]["p50"], b["speedup"]["p50"], floor)
        rows.append(
            Row(
                technique,
                key(b)[0],
                b["batch_size"],
                prev["speedup"]["p50"],
                b["speedup"]["p50"],
                floor,
                status,
            )
        )
    return rows


def confirm(first: list[Row], retest: list[Row]) -> list[Row]:
    """The first comparison with each of its regressions kept only where the retest (the same
    candidate timed again) also regresses; the retest's interval is shown either way."""
    again = {(r.inputs, r.batch_size): r for r in retest}
    out = []
    for r in first:
        second = again.get((r.inputs, r.batch_size))
        if r.status != REGRESSION or second is None:
            out.append(r)
            continue
        status = REGRESSION if second.status == REGRESSION else NOT_REPRODUCED
        out.append(replace(r, status=status, retest=second.after))
    return out


def table(rows: list[Row], against: str) -> str:
    def iv(d: dict[str, float] | None) -> str:
        return "none" if d is None else f"{d['estimate']:.3f} [{d['low']:.3f}, {d['high']:.3f}]"

    lines = [
        f"### Re-benchmark against `{against}`: p50 speedup (baseline / candidate), 95 % intervals",
        "",
        "| candidate | batch | committed | now | threshold | retest | status |",
        "|---|---:|---|---|---:|---|---|",
        *[
            f"| {r.technique} | {r.batch_size}{'' if r.inputs == 'validation' else ' (' + r.inputs + ')'} | {iv(r.before)} | {iv(r.after)} | {r.floor:.1%} | {iv(r.retest) if r.retest else ''} | {r.status} |"
            for r in rows
        ],
        "",
        f"{sum(r.status == REGRESSION for r in rows)} regression(s) beyond both intervals and the "
        "threshold (the larger A/A noise floor, or the minimum change), confirmed by a retest.",
    ]
    return "\n".join(lines) + "\n"


def committed(path: Path, against: str) -> dict[str, Any] | None:
    """The evidence file as committed at `against`; None when it was never committed."""
    done = subprocess.run(
        ["git", "show", f"{against}:{path.as_posix()}"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return None
    try:
        data = json.loads(done.stdout)
        if data.get("status") == "ok":
            for b in data["batches"]:
                _ = (
                    b["batch_size"],
                    b["noise_floor"],
                    b["speedup"]["p50"]["low"],
                    b["speedup"]["p50"]["high"],
                )
        return data
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise EvidenceError(
            f"{path} at {against} is malformed ({type(e).__name__}: {e}); commit a complete "
            "benchmark (`dvc repro` then `git add` it) before re-benchmarking against it"
        ) from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--against", default="HEAD", help="git revision holding the committed evidence"
    )
    parser.add_argument(
        "--table", default="reports/rebenchmark.md", help="where to write the table"
    )
    parser.add_argument("--no-run", action="store_true", help="compare the files as they are")
    parser.add_argument(
        "--min-change",
        type=float,
        default=MIN_CHANGE,
        help="smallest relative drop of a p50 speedup that may count as a regression (0.10)",
    )
    parser.add_argument(
        "--retests",
        type=int,
        default=1,
        help="times a regressed candidate is timed again; each must show the drop (1)",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.min_change < 1 or args.retests < 0:
        raise EvidenceError(
            f"--min-change {args.min_change} / --retests {args.retests}: the minimum change is a "
            "share in [0, 1) and retests a count >= 0"
        )
    p = P.load()
    paths = {t: Path(p.paths.benchmark) / t / "benchmark.json" for t in p.technique}
    before = {t: committed(path, args.against) for t, path in paths.items()}
    missing = [str(paths[t]) for t, b in before.items() if b is None]
    if missing:
        raise EvidenceError(
            f"no committed benchmark at {args.against} for {', '.join(missing)}: run `dvc repro`, "
            "commit the evidence, then re-benchmark against it"
        )
    dvc = [sys.executable, "-m", "dvc", "repro"]

    def time_again(techniques: list[str]) -> dict[str, list[Row]]:
        if not args.no_run:
            subprocess.run([*dvc, "-f", "-s", *(f"benchmark@{t}" for t in techniques)], check=True)
            subprocess.run(dvc, check=True)  # the rest: validation, report, MLflow
        out = {}
        for t in techniques:
            with paths[t].open() as f:
                out[t] = compare(t, before[t], json.load(f), args.min_change)
        return out

    if not args.no_run:
        subprocess.run([*dvc, *(f"optimize@{t}" for t in p.technique)], check=True)  # inputs
    by_technique = time_again(list(p.technique))
    for _ in range(0 if args.no_run else args.retests):
        flagged = [
            t for t, rows in by_technique.items() if any(r.status == REGRESSION for r in rows)
        ]
        if not flagged:
            break
        print(f"re-timing {', '.join(flagged)}: a regression must show again")
        for t, again in time_again(flagged).items():
            by_technique[t] = confirm(by_technique[t], again)
    rows = [r for t in paths for r in by_technique[t]]
    text = table(rows, args.against)
    write_text(Path(args.table), text)
    print(text)
    if any(r.status == REGRESSION for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    from stages.cli import run

    run(main)
