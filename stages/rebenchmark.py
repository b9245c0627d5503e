"""The scheduled re-benchmark: time every candidate again and flag real regressions, not noise.

`python -m stages.rebenchmark` (or `make rebenchmark`) forces each `benchmark@<t>` stage (the
run-cache must not replay old timings), re-runs the report, then compares each new p50 speedup
interval with the one committed at `--against` (default HEAD). It exits 1 only when a speedup
fell beyond both intervals and beyond the larger noise floor of the two runs, and prints a
Markdown table fit for a pull-request comment (also written to `--table`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages import params as P
from stages.io import EvidenceError, write_text

OK, REGRESSION, IMPROVEMENT, NEW = "ok", "REGRESSION", "improvement", "new"


@dataclass(frozen=True)
class Row:
    technique: str
    inputs: str  # the input set timed: "validation", or a preset's fixed-shape set
    batch_size: int
    before: dict[str, float] | None  # p50 speedup interval committed
    after: dict[str, float]  # p50 speedup interval measured now
    floor: float  # the larger A/A noise floor of the two runs
    status: str


def classify(before: dict[str, float], after: dict[str, float], floor: float) -> str:
    """REGRESSION only when the intervals do not overlap and the drop exceeds the noise floor."""
    drop = (before["estimate"] - after["estimate"]) / before["estimate"]
    if after["high"] < before["low"] and drop > floor:
        return REGRESSION
    if after["low"] > before["high"] and -drop > floor:
        return IMPROVEMENT
    return OK


def compare(technique: str, before: dict[str, Any] | None, after: dict[str, Any]) -> list[Row]:
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
        floor = max(b["noise_floor"], prev["noise_floor"])
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


def table(rows: list[Row], against: str) -> str:
    def iv(d: dict[str, float] | None) -> str:
        return "none" if d is None else f"{d['estimate']:.3f} [{d['low']:.3f}, {d['high']:.3f}]"

    lines = [
        f"### Re-benchmark against `{against}`: p50 speedup (baseline / candidate), 95 % intervals",
        "",
        "| candidate | batch | committed | now | noise floor | status |",
        "|---|---:|---|---|---:|---|",
        *[
            f"| {r.technique} | {r.batch_size}{'' if r.inputs == 'validation' else ' (' + r.inputs + ')'} | {iv(r.before)} | {iv(r.after)} | {r.floor:.1%} | {r.status} |"
            for r in rows
        ],
        "",
        f"{sum(r.status == REGRESSION for r in rows)} regression(s) beyond both intervals and the noise floor.",
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
    args = parser.parse_args(argv)
    p = P.load()
    paths = {t: Path(p.paths.benchmark) / t / "benchmark.json" for t in p.technique}
    before = {t: committed(path, args.against) for t, path in paths.items()}
    missing = [str(paths[t]) for t, b in before.items() if b is None]
    if missing:
        raise EvidenceError(
            f"no committed benchmark at {args.against} for {', '.join(missing)}: run `dvc repro`, "
            "commit the evidence, then re-benchmark against it"
        )
    if not args.no_run:
        dvc = [sys.executable, "-m", "dvc", "repro"]
        subprocess.run([*dvc, *(f"optimize@{t}" for t in p.technique)], check=True)  # inputs
        subprocess.run([*dvc, "-f", "-s", *(f"benchmark@{t}" for t in p.technique)], check=True)
        subprocess.run(dvc, check=True)  # the rest: validation, report, MLflow
    rows: list[Row] = []
    for t, path in paths.items():
        with path.open() as f:
            rows += compare(t, before[t], json.load(f))
    text = table(rows, args.against)
    write_text(Path(args.table), text)
    print(text)
    if any(r.status == REGRESSION for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    from stages.cli import run

    run(main)
