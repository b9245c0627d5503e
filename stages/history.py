"""The re-benchmark history: one CSV row per candidate, input set and batch size per re-benchmark,
and a change-point analysis that finds persistent shifts in each series of p50 speedups.

One comparison with the committed evidence sees two runs; the history sees all of them. The
analysis is e-divisive (`stages.change_points`), on the last `WINDOW` runs of each series.

`python -m stages.history [--csv PATH] [--out reports/history.md]` prints the report.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from stages.change_points import ALPHA, MIN_CHANGE, MIN_SIZE, Shift, change_points, describe
from stages.cli import run
from stages.measure.machine import fingerprint
from stages.storage import EvidenceError, write_text
from stages.tracking import tracking_uri

CSV = Path("reports/rebenchmark_history.csv")
FIELDS = (
    "utc",  # ISO 8601, seconds
    "commit",
    "host",  # fingerprint of reports/host.json (hardware and library versions)
    "machine",  # machine class: CPU model, architecture, logical cores
    "protocol",  # fingerprint of the timing protocol (params.yaml's bench section)
    "model",
    "target",
    "candidate",
    "inputs",
    "batch",
    "estimate",  # p50 speedup (baseline / candidate) and its interval
    "low",
    "high",
    "noise_floor",  # A/A noise floor at p50, relative
)
WINDOW = 104  # runs analysed per series: two years of weekly runs (the test is O(n^2) per run)


class SeriesKey(NamedTuple):
    """What keeps a series of runs apart: the setup, the timing protocol and the timing itself."""

    model: str
    target: str
    machine: str  # machine class
    protocol: str  # fingerprint of the timing protocol ("" in a history from before it)
    candidate: str
    inputs: str
    batch: int


SERIES = SeriesKey._fields
SETUP = SERIES[:3]  # what a comparison with committed evidence must share (the protocol may move)
BEFORE_PROTOCOL = tuple(f for f in FIELDS if f != "protocol")  # the header of older histories
NUMBERS = ("estimate", "low", "high", "noise_floor")


def protocol(bench: dict[str, Any]) -> str:
    """A short fingerprint of the timing protocol: every `bench` parameter. Runs timed under
    another protocol (other caps, rounds, sessions) form their own series, so a protocol change
    starts a new history instead of being read as a shift of the candidate."""
    return fingerprint(bench)[:10]  # the host fingerprint's canonical-JSON sha256, shorter


def append(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Add rows to the CSV through a temp file and a rename: a killed run leaves it whole. A
    history written before the protocol column is rewritten with it (empty: protocol unknown)."""
    old = path.read_text() if path.exists() else ""
    if old and old.splitlines()[0] == ",".join(BEFORE_PROTOCOL):
        buf = io.StringIO()
        writer = csv.DictWriter(buf, FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({**r, "protocol": ""} for r in csv.DictReader(io.StringIO(old)))
        old = buf.getvalue()
    if old and old.splitlines()[0] != ",".join(FIELDS):
        raise EvidenceError(
            f"{path}: header {old.splitlines()[0]!r} is not {','.join(FIELDS)!r}; move the old "
            "file aside (the new one starts empty)"
        )
    buf = io.StringIO()
    writer = csv.DictWriter(buf, FIELDS, lineterminator="\n")
    if not old:
        writer.writeheader()
    for r in rows:
        writer.writerow({k: r[k] for k in FIELDS})
    write_text(path, old + buf.getvalue())


def read(path: Path) -> list[dict[str, Any]]:
    """The history's rows in file order (oldest first); none when there is no file yet. Rows of a
    history written before the protocol column have an empty protocol: a series of their own."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for line, r in enumerate(rows, start=2):
        try:
            out.append(
                {
                    **r,
                    "protocol": r.get("protocol", ""),
                    "batch": int(r["batch"]),
                    **{k: float(r[k]) for k in NUMBERS},
                }
            )
        except (KeyError, TypeError, ValueError) as e:
            raise EvidenceError(
                f"{path} line {line} is malformed ({type(e).__name__}: {e}); expected the "
                f"columns {','.join(FIELDS)}"
            ) from None
    return out


def rows_of(
    evidence: dict[str, dict[str, Any]], where: dict[str, str], commit: str, host: str
) -> list[dict[str, Any]]:
    """One history row per candidate, input set and batch size of one run's evidence
    (benchmark.json per candidate); `where` holds the model, target, machine class and
    protocol."""
    utc = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return [
        {
            "utc": utc,
            "commit": commit,
            "host": e.get("host", host),
            **where,
            "candidate": t,
            "inputs": b.get("inputs", "validation"),
            "batch": b["batch_size"],
            **{k: b["speedup"]["p50"][k] for k in ("estimate", "low", "high")},
            "noise_floor": b["noise_floor"],
        }
        for t, e in evidence.items()
        if e.get("status") == "ok"
        for b in e["batches"]
    ]


def log_mlflow(rows: list[dict[str, Any]], where: dict[str, str], tags: dict[str, str]) -> str:
    """One MLflow run per re-benchmark, in the experiment `rebenchmark-<model>-<target>`, with
    `<candidate>.b<batch>.p50_speedup` metrics; returns a line saying where it went, or why not."""
    try:
        import mlflow
    except ImportError:
        return "mlflow is not installed: the re-benchmark was not logged"

    uri = tracking_uri()
    metrics: dict[str, float] = {}
    for r in rows:
        name = f"{r['candidate']}{'' if r['inputs'] == 'validation' else '.' + r['inputs']}"
        name += f".b{r['batch']}.p50_speedup"
        metrics |= {name: r["estimate"], f"{name}_low": r["low"], f"{name}_high": r["high"]}
    try:
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(f"rebenchmark-{where['model']}-{where['target']}")
        with mlflow.start_run(run_name=f"rebenchmark {tags['commit'][:10]}", tags=tags) as run:
            mlflow.log_metrics(metrics)
        return f"logged to {uri}: run {run.info.run_id}"
    except Exception as e:  # any tracking failure: the gate's verdict stands, the line says why
        return f"not logged to {uri} ({type(e).__name__}: {e})"


def series(rows: Iterable[dict[str, Any]]) -> dict[SeriesKey, list[dict[str, Any]]]:
    """Rows grouped by model, target, machine class, protocol, candidate, inputs and batch, in
    order."""
    out: dict[SeriesKey, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(SeriesKey(*(r[k] for k in SERIES)), []).append(r)
    return out


def analyse(
    rows: Iterable[dict[str, Any]], window: int = WINDOW, **options: Any
) -> dict[SeriesKey, list[Shift]]:
    """The shifts in the last `window` runs of every series (options go to `change_points`)."""
    out = {}
    for key, runs in series(rows).items():
        skip = max(0, len(runs) - window)
        shifts = change_points((r["estimate"] for r in runs[skip:]), **options)
        out[key] = [replace(s, run=s.run + skip) for s in shifts]
    return out


def markdown(rows: list[dict[str, Any]], shifts: dict[SeriesKey, list[Shift]]) -> str:
    """The history report: one line per series, then each shift with its run and commit."""
    groups = series(rows)
    lines = [
        "### Re-benchmark history: p50 speedup (baseline / candidate) per run",
        "",
        "| model | target | machine | protocol | candidate | batch | runs | median | latest "
        "| shifts |",
        "|---|---|---|---|---|---:|---:|---:|---:|---|",
    ]
    details = []
    for key, runs in groups.items():
        est = [r["estimate"] for r in runs]
        where = f"{key.batch}{'' if key.inputs == 'validation' else f' ({key.inputs})'}"
        lines.append(
            f"| {key.model} | {key.target} | {key.machine} | {key.protocol or 'unknown'} | "
            f"{key.candidate} | {where} | "
            f"{len(runs)} | "
            f"{np.median(est):.3f} | {est[-1]:.3f} | {describe(shifts.get(key, []))} |"
        )
        for s in shifts.get(key, []):
            first = runs[s.run - 1]
            details.append(
                f"- {key.candidate}, batch {where}: from run {s.run} ({first['utc']}, commit "
                f"{first['commit'][:10]}) the mean moved {s.before:.3f} -> {s.after:.3f} "
                f"({s.change:+.1%}), permutation p = {s.pvalue:.3f}"
            )
    if not groups:
        lines.append("| | | | | | | 0 | | | no re-benchmark recorded yet |")
    lines += ["", *(details or ["No persistent shift in any series."]), ""]
    lines.append(
        f"Shifts: e-divisive change points (energy distance, permutation test at p <= {ALPHA}), "
        f"each lasting at least {MIN_SIZE} runs and moving the mean by at least {MIN_CHANGE:.0%}. "
        "A change of the timing protocol (params.yaml's bench section) starts a new series."
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=CSV, help="the history CSV (%(default)s)")
    parser.add_argument("--out", type=Path, help="also write the Markdown report there")
    args = parser.parse_args(argv)
    rows = read(args.csv)
    text = markdown(rows, analyse(rows))
    if args.out:
        write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    run(main)
