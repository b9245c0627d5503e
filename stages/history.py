"""The re-benchmark history: one CSV row per candidate, input set and batch size per re-benchmark,
and a change-point analysis that finds persistent shifts in each series of p50 speedups.

One comparison with the committed evidence sees two runs; the history sees all of them. The
analysis is e-divisive (Matteson and James, 2014): the split of a segment that maximizes the
energy distance between its two sides, kept when a permutation test says such a split is rare in
the same values shuffled, then again inside each side. A shift must last `MIN_SIZE` runs and move
the mean by `MIN_CHANGE` (3 %: two sessions of one model differ persistently by 1-2 % here).

`python -m stages.history [--csv PATH] [--out reports/history.md]` prints the report.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
from collections.abc import Iterable
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

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
ALPHA = 0.05  # permutation p-value at which a split is kept (Matteson and James's default)
MIN_SIZE = 3  # runs: a shift must last this long (one outlier run is not a shift)
MIN_CHANGE = 0.03  # relative change of the mean below which a shift is not reported
WINDOW = 104  # runs analysed per series: two years of weekly runs (the test is O(n^2) per run)
SERIES = ("model", "target", "machine", "protocol", "candidate", "inputs", "batch")
SETUP = SERIES[:3]  # what a comparison with committed evidence must share (the protocol may move)
BEFORE_PROTOCOL = tuple(f for f in FIELDS if f != "protocol")  # the header of older histories
NUMBERS = ("estimate", "low", "high", "noise_floor")


@dataclass(frozen=True)
class Shift:
    run: int  # 1-based position in its series of the first run after the shift
    before: float  # mean p50 speedup of the segment before
    after: float  # and after
    pvalue: float  # permutation p-value when the split was accepted

    @property
    def change(self) -> float:
        return self.after / self.before - 1


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


def series(rows: Iterable[dict[str, Any]]) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    """Rows grouped by model, target, machine class, protocol, candidate, inputs and batch, in
    order."""
    out: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(tuple(r[k] for k in SERIES), []).append(r)
    return out


def _best_split(x: np.ndarray, min_size: int) -> tuple[np.ndarray, np.ndarray]:
    """For each row of `x` (k series of one segment), the split tau with the largest energy
    statistic q = n m / (n + m) * (2 E|X-Y| - E|X-X'| - E|Y-Y'|) between X = x[:tau] and
    Y = x[tau:kappa], over every end kappa as Matteson and James do (a dip in the middle of a
    segment shows only so), U-statistics within each side: returns (tau, q), each of shape (k,)."""
    k, n = x.shape
    s = np.zeros((k, n + 1, n + 1))
    s[:, 1:, 1:] = np.abs(x[:, :, None] - x[:, None, :]).cumsum(1).cumsum(2)  # sums of d[:i, :j]
    tau = np.arange(min_size, n - min_size + 1)[:, None]
    kappa = np.arange(2 * min_size, n + 1)[None, :]
    ok = kappa - tau >= min_size
    t, c = np.broadcast_arrays(tau, np.where(ok, kappa, n))  # masked pairs: any valid index
    nx, ny = t, np.where(ok, c - t, min_size)
    tt, tc = s[:, t, t], s[:, t, c]
    e = (
        2 * (tc - tt) / (nx * ny)
        - tt / (nx * (nx - 1))
        - (s[:, c, c] - 2 * tc + tt) / (ny * (ny - 1))
    )
    q = np.where(ok, nx * ny / (nx + ny) * e, -np.inf).reshape(k, -1)
    best = np.argmax(q, axis=1)
    return t.reshape(-1)[best], q[np.arange(k), best]


def _segments(bounds: list[int], min_size: int) -> list[tuple[int, int]]:
    return [(a, b) for a, b in pairwise(bounds) if b - a >= 2 * min_size]


def change_points(
    values: Iterable[float],
    *,
    alpha: float = ALPHA,
    permutations: int = 499,
    min_size: int = MIN_SIZE,
    min_change: float = MIN_CHANGE,
    seed: int = 0,
) -> list[Shift]:
    """Persistent shifts in a series, oldest first (e-divisive with a permutation test)."""
    x = np.asarray(list(values), dtype=float)
    rng = np.random.default_rng(seed)
    bounds, pvalues = [0, len(x)], {}
    while segments := _segments(bounds, min_size):
        found = [
            (a + int(t[0]), float(q[0]))
            for a, b in segments
            for t, q in [_best_split(x[None, a:b], min_size)]
        ]
        at, q_obs = max(found, key=lambda f: f[1])
        # the same test on the values shuffled within each segment (the splits found stay)
        q_perm = np.full(permutations, -np.inf)
        for a, b in segments:
            chunk = max(1, 500_000 // (b - a) ** 2)  # arrays of k n^2 floats, a few MB
            for i in range(0, permutations, chunk):
                rows = rng.permuted(np.tile(x[a:b], (min(chunk, permutations - i), 1)), axis=1)
                q_perm[i : i + len(rows)] = np.maximum(
                    q_perm[i : i + len(rows)], _best_split(rows, min_size)[1]
                )
        pvalues[at] = (int(np.sum(q_perm >= q_obs)) + 1) / (permutations + 1)
        if pvalues[at] > alpha:
            break
        bounds = sorted([*bounds, at])
    return _merge_small(x, bounds, min_change, pvalues)


def _merge_small(
    x: np.ndarray, bounds: list[int], min_change: float, pvalues: dict[int, float]
) -> list[Shift]:
    """Drop the smallest shift while any moves the mean by less than `min_change` (as Hunter's
    merge step does), recomputing the means of the segments it joined."""
    bounds = list(bounds)
    while True:
        means = [float(x[a:b].mean()) for a, b in pairwise(bounds)]
        shifts = [
            Shift(at + 1, means[i], means[i + 1], pvalues[at]) for i, at in enumerate(bounds[1:-1])
        ]
        small = [s for s in shifts if abs(s.change) < min_change]
        if not small:
            return shifts
        bounds.remove(min(small, key=lambda s: abs(s.change)).run - 1)


def analyse(
    rows: Iterable[dict[str, Any]], window: int = WINDOW, **options: Any
) -> dict[tuple[Any, ...], list[Shift]]:
    """The shifts in the last `window` runs of every series (options go to `change_points`)."""
    out = {}
    for key, runs in series(rows).items():
        skip = max(0, len(runs) - window)
        shifts = change_points((r["estimate"] for r in runs[skip:]), **options)
        out[key] = [replace(s, run=s.run + skip) for s in shifts]
    return out


def describe(shifts: list[Shift]) -> str:
    """One table cell: "shift at run 11 (-7.2 %)", or "" when the series is stable."""
    if not shifts:
        return ""
    runs = ", ".join(f"{s.run} ({s.change:+.1%})" for s in shifts).replace("%", " %")
    return f"shift{'s' if len(shifts) > 1 else ''} at run{'s' if len(shifts) > 1 else ''} {runs}"


def markdown(rows: list[dict[str, Any]], shifts: dict[tuple[Any, ...], list[Shift]]) -> str:
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
        model, target, machine, proto, cand, inputs, batch = key
        est = [r["estimate"] for r in runs]
        where = f"{batch}{'' if inputs == 'validation' else f' ({inputs})'}"
        lines.append(
            f"| {model} | {target} | {machine} | {proto or 'unknown'} | {cand} | {where} | "
            f"{len(runs)} | "
            f"{np.median(est):.3f} | {est[-1]:.3f} | {describe(shifts.get(key, []))} |"
        )
        for s in shifts.get(key, []):
            first = runs[s.run - 1]
            details.append(
                f"- {cand}, batch {where}: from run {s.run} ({first['utc']}, commit "
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
