"""The scheduled re-benchmark: time every candidate again and flag real regressions, not noise.

`python -m stages.rebenchmark` (or `make rebenchmark`) forces each `benchmark@<t>` stage (the
run-cache must not replay old timings), re-runs the report, then compares each new p50 speedup
with a reference: the median of the series' runs in the re-benchmark history since its last
shift once there are `MIN_HISTORY` (5) of them, until then the value committed at `--against`
(default HEAD; it stays shown either way). A drop counts as a regression when it is larger than
the threshold: the larger of `--min-change` (5 %) and the drop that noise alone exceeds with
probability 1 - `bench.confidence` (one-sided).

Against the median, that noise is s * sqrt(1/m + pi/(2 n)): s the run-to-run spread of the
series' last `RECENT` runs (measured over five runs here: 1.2-5.4 % sd at batch 1, by candidate),
m the new runs averaged, n the past runs the median is over (a median of n runs varies
pi/2 s^2 / n). A first run that falls by more than `SCREEN` (half) of its threshold is timed
again (`--retests`), and the drop counts only when the geometric mean of the first run and its
retests falls by more than the threshold for that many runs; with no retest (`--retests 0`,
`--no-run`) the first run is judged alone, against the threshold for one run.

Against the committed value, the noise is that of two runs: sqrt(2) s once the whole history
holds `MIN_HISTORY` runs, else the spread the two runs' own intervals imply (wider: the session
bootstrap is conservative), and a drop counts only when a forced retest, on its own, shows it
again. A row whose threshold is wider than `--max-floor` (params `bench.max_noise_floor`) cannot
pass: its row reads NOISY.

Each timing run, retests included, appends its figures to the history CSV (`--history`), whose
change-point analysis (`stages.history`) fills the table's "history" column. Its series are kept
per model, target, machine class and timing protocol (a fingerprint of params.yaml's bench
section): after a protocol change the median is taken over runs of the new protocol only, and
until five of them exist the committed value is the reference again. The first run is
logged as one MLflow run to the experiment `rebenchmark-<model>-<target>` when mlflow is
installed. The Markdown table, fit for a pull-request comment, is printed and written to `--table`.

Exit codes: 0 no regression; 1 a regression confirmed; 2 the gate could not run (bad arguments,
committed evidence missing or malformed, `--against` a commit of another model, target or machine
class, or a failed `dvc repro`); 3 some row too noisy to judge and no regression confirmed.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import yaml

from stages import history as history_log
from stages import params as config
from stages.errors import KNOWN
from stages.measure.machine import describe_host
from stages.storage import EvidenceError, read_json, write_text
from stages.tracking import git_commit

OK, REGRESSION, IMPROVEMENT, NEW, NOISY = "ok", "REGRESSION", "improvement", "new", "NOISY"
NOT_REPRODUCED = "ok (retest did not confirm the drop)"
OUTLIER = "ok (committed value is an outlier)"
COMMITTED = "committed"  # the comparison basis until the history holds MIN_HISTORY runs
MIN_CHANGE = 0.05  # default smallest relative change that may count, however quiet the runs
MAX_FLOOR = 0.10  # widest threshold a row may pass with, when params has no bench.max_noise_floor
MIN_HISTORY = 5  # past runs of a series (since its last shift) before its spread and median count
RECENT = 20  # the most recent past runs whose spread sets the threshold
SCREEN = 0.5  # share of the threshold a first run's drop below the median must pass to be retested
PASSED, REGRESSED, UNUSABLE, TOO_NOISY = 0, 1, 2, 3  # exit codes


@dataclass(frozen=True)
class Reference:
    """What a new run is compared with once its series' history is long enough: the median of
    the past runs since the last shift, and the run-to-run spread of the most recent runs."""

    median: float
    runs: int  # past runs since the last shift the median is over
    shifted: bool  # whether a shift came before them (else they are the whole history)
    spread: float  # `run_spread` of the last `recent` past runs
    recent: int

    def threshold(self, m: int, min_change: float, confidence: float) -> tuple[float, str]:
        """`mean_threshold` for the mean of m new runs, and what set it."""
        limit = mean_threshold(self.spread, m, self.runs, min_change, confidence)
        basis = f"spread of {self.recent} past runs"
        return (limit, basis) if limit > min_change else (min_change, "minimum change")

    def describe(self) -> str:
        since = "runs since the last shift" if self.shifted else "past runs"
        return f"median of {self.runs} {since}, {self.median:.3f}"


@dataclass(frozen=True)
class Row:
    technique: str
    inputs: str  # the input set timed: "validation", or a preset's fixed-shape set
    batch_size: int
    before: dict[str, float] | None  # p50 speedup interval committed
    after: dict[str, float]  # p50 speedup interval measured now (the first run)
    threshold: float  # the smallest relative drop that counts (see `threshold`)
    basis: str  # what set the threshold: the minimum change, the intervals or the history
    status: str
    retests: tuple[dict[str, float], ...] = ()  # p50 speedup intervals of the retests that ran
    history: str = ""  # what the re-benchmark history says of this series
    reference: Reference | None = None  # the history's median, when compared with it
    screened: bool = False  # compared with the median and fell by more than SCREEN of the threshold

    @property
    def retest(self) -> dict[str, float] | None:
        """The latest retest's interval, if one ran."""
        return self.retests[-1] if self.retests else None

    @property
    def runs(self) -> list[float]:
        """The p50 speedups judged: the first run's and, against the median, its retests'."""
        return [self.after["estimate"], *(r["estimate"] for r in self.retests)]

    def compared_with(self) -> str:
        if self.before is None:
            return ""
        if self.reference is None:
            return COMMITTED
        runs = self.runs
        mean = f"; mean of {len(runs)} runs {gmean(runs):.3f}" if len(runs) > 1 else ""
        return self.reference.describe() + mean


def gmean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def interval_sd(iv: dict[str, float], confidence: float) -> float:
    """The standard deviation, on the log scale, that a two-sided interval at `confidence`
    implies for its estimate."""
    z = NormalDist().inv_cdf((1 + confidence) / 2)
    return (math.log(iv["high"]) - math.log(iv["low"])) / (2 * z)


def run_spread(runs: list[float]) -> float:
    """The run-to-run standard deviation, on the log scale, of a series' p50 speedups: the
    median moving range |log x[i] - log x[i-1]| over 0.954 (the median of |N(0, 2 sd^2)|), as
    an individuals control chart estimates it. A shift moves one range, an odd run two: the
    median of the ranges stays the noise."""
    ranges = np.abs(np.diff(np.log(runs)))
    return float(np.median(ranges)) / (math.sqrt(2) * NormalDist().inv_cdf(0.75))


def exceeded(sd: float, confidence: float) -> float:
    """The relative drop that noise of `sd` on the log scale exceeds with probability
    1 - `confidence` (one-sided, normal)."""
    return 1 - math.exp(-NormalDist().inv_cdf(confidence) * sd)


def threshold(
    before: dict[str, float],
    after: dict[str, float],
    past: list[float],
    min_change: float,
    confidence: float,
) -> tuple[float, str]:
    """The smallest relative drop (or rise) of the p50 speedup against the committed value that
    counts, and what set it: the larger of `min_change` and the change two unchanged runs exceed
    with probability 1 - `confidence` (one-sided, normal on the log scale). The two runs' noise
    is, once the series' history holds `MIN_HISTORY` runs, the `run_spread` of its last `RECENT`,
    each run carrying it once; until then the spread the two intervals imply."""
    if len(past) >= MIN_HISTORY:
        recent = past[-RECENT:]
        sd = math.sqrt(2) * run_spread(recent)
        basis = f"spread of {len(recent)} past runs"
    else:
        sd = math.hypot(interval_sd(before, confidence), interval_sd(after, confidence))
        basis = "both intervals"
    noise = exceeded(sd, confidence)
    return (noise, basis) if noise > min_change else (min_change, "minimum change")


def mean_threshold(spread: float, m: int, n: int, min_change: float, confidence: float) -> float:
    """The smallest relative drop of the geometric mean of m new runs below the median of n past
    runs that counts: the larger of `min_change` and the drop that an unchanged series exceeds
    with probability 1 - `confidence` (one-sided). With a run-to-run sd `spread` on the log scale,
    the mean of m runs varies spread^2 / m and the median of n runs about pi/2 spread^2 / n."""
    return max(min_change, exceeded(spread * math.sqrt(1 / m + math.pi / (2 * n)), confidence))


def reference(past: list[float], since_shift: list[float]) -> Reference | None:
    """The `Reference` of a series from its past runs (oldest first) and those since its last
    shift; None while fewer than `MIN_HISTORY` runs follow the shift."""
    if len(since_shift) < MIN_HISTORY:
        return None
    recent = past[-RECENT:]
    return Reference(
        float(np.median(since_shift)),
        len(since_shift),
        len(since_shift) < len(past),
        run_spread(recent),
        len(recent),
    )


def verdict(change: float, threshold: float) -> str:
    """REGRESSION when a log change falls below log(1 - threshold); IMPROVEMENT when it rises by
    as much on the log scale."""
    limit = -math.log(1 - threshold)
    if change < -limit:
        return REGRESSION
    return IMPROVEMENT if change > limit else OK


def classify(before: dict[str, float], after: dict[str, float], threshold: float) -> str:
    """REGRESSION when the p50 speedup fell by more than the threshold; IMPROVEMENT when it rose
    by as much on the log scale."""
    return verdict(math.log(after["estimate"] / before["estimate"]), threshold)


def noisy(limit: float, max_floor: float) -> str:
    return f"{NOISY}: threshold {limit:.1%} > {max_floor:.1%}"


def compare(
    technique: str,
    before: dict[str, Any] | None,
    after: dict[str, Any],
    min_change: float = 0.0,
    max_floor: float = float("inf"),
    confidence: float = 0.95,
    past: dict[tuple[str, int], list[float]] | None = None,
    since_shift: dict[tuple[str, int], list[float]] | None = None,
) -> list[Row]:
    """One row per batch size of one candidate's benchmark evidence; `past` holds the p50
    speedups of earlier re-benchmarks per (inputs, batch size), `since_shift` those after the
    series' last shift (all of `past` when not given). With `MIN_HISTORY` of those, the run is
    compared with their median (`Reference`) and the row is `screened` for a retest when it fell
    by more than `SCREEN` of its threshold; else with the committed value. A row that would pass
    while its threshold is wider than `max_floor` is NOISY instead: runs that noisy could not
    have shown a drop of `max_floor`, so their passing says nothing."""
    if after.get("status") != "ok":
        return []

    def key(b: dict[str, Any]) -> tuple[str, int]:
        return b.get("inputs", "validation"), b["batch_size"]

    old = {key(b): b for b in before["batches"]} if before else {}
    rows = []
    for b in after["batches"]:
        prev = old.get(key(b))
        p50 = b["speedup"]["p50"]
        if prev is None:
            rows.append(Row(technique, *key(b), None, p50, 0.0, "", NEW))
            continue
        history = (past or {}).get(key(b), [])
        ref = reference(history, (since_shift or past or {}).get(key(b), []))
        screened = False
        if ref is None:
            limit, basis = threshold(prev["speedup"]["p50"], p50, history, min_change, confidence)
            status = classify(prev["speedup"]["p50"], p50, limit)
        else:
            limit, basis = ref.threshold(1, min_change, confidence)
            status = verdict(math.log(p50["estimate"] / ref.median), limit)
            screened = 1 - p50["estimate"] / ref.median > SCREEN * limit
        if status == OK and limit > max_floor:
            status = noisy(limit, max_floor)
        row = Row(technique, *key(b), prev["speedup"]["p50"], p50, limit, basis, status)
        rows.append(replace(row, reference=ref, screened=screened))
    return rows


def confirm(
    first: list[Row],
    retest: list[Row],
    min_change: float = 0.0,
    max_floor: float = float("inf"),
    confidence: float = 0.95,
) -> list[Row]:
    """The first comparison after one more retest (the same candidate timed again), whose
    interval each retested row shows. A row compared with the committed value keeps a regression
    only where the retest also regresses on its own. A `screened` row compared with the median is
    decided on the mean of its first run and retests (`decide`)."""
    again = {(r.inputs, r.batch_size): r for r in retest}
    out = []
    for r in first:
        second = again.get((r.inputs, r.batch_size))
        if second is None:
            out.append(r)
        elif r.reference is not None:
            retested = replace(r, retests=(*r.retests, second.after))
            out.append(decide(retested, min_change, max_floor, confidence) if r.screened else r)
        elif r.status != REGRESSION:
            out.append(r)
        else:
            shown = second.status == REGRESSION or second.status.startswith(NOISY)
            status = second.status if shown else NOT_REPRODUCED  # a noisy retest cannot refute it
            out.append(replace(r, status=status, retests=(*r.retests, second.after)))
    return out


def decide(row: Row, min_change: float, max_floor: float, confidence: float) -> Row:
    """A screened row against the median, on the geometric mean of its m runs (first and
    retests): REGRESSION when that mean fell by more than the threshold for m runs; else NOISY
    when that threshold is wider than `max_floor`, else NOT_REPRODUCED."""
    if row.reference is None:
        return row
    runs = row.runs
    limit, basis = row.reference.threshold(len(runs), min_change, confidence)
    if verdict(math.log(gmean(runs) / row.reference.median), limit) == REGRESSION:
        status = REGRESSION
    else:
        status = noisy(limit, max_floor) if limit > max_floor else NOT_REPRODUCED
    return replace(row, threshold=limit, basis=basis, status=status)


def judge_committed(row: Row, past: list[float]) -> Row:
    """A retest re-measures only the new side. When the committed value of a regression against
    it is far from the median of past runs (outside its interval and beyond the threshold), judge
    the new value against that median instead, and say so. A row compared with the history's
    median (`Reference`) is left as it is; in `main`, `past` is the runs since the last shift, so
    a row compared with the committed value always has too few of them to check it."""
    note = "committed side is one run"
    if row.status != REGRESSION or row.before is None or row.reference is not None:
        return row
    if len(past) < MIN_HISTORY:
        return replace(row, history=f"{note} ({len(past)} past runs: too few to check it)")
    median = float(np.median(past))
    b, a = row.before, row.after
    if b["low"] <= median <= b["high"] or abs(b["estimate"] / median - 1) <= row.threshold:
        return replace(row, history=f"{note}; median of {len(past)} runs {median:.3f}")
    note = f"committed value is an outlier: median of {len(past)} runs {median:.3f}"
    if a["high"] < median and 1 - a["estimate"] / median > row.threshold:
        return replace(row, history=f"{note}, and now is below it too")
    return replace(row, status=OUTLIER, history=note)


def table(
    rows: list[Row], against: str, retest: str, max_floor: float, confidence: float = 0.95
) -> str:
    """The Markdown table; `retest` says whether a retest ran, and if not, why."""

    def iv(d: dict[str, float] | None) -> str:
        return "none" if d is None else f"{d['estimate']:.3f} [{d['low']:.3f}, {d['high']:.3f}]"

    def batch(r: Row) -> str:
        return f"{r.batch_size}{'' if r.inputs == 'validation' else ' (' + r.inputs + ')'}"

    n = sum(r.status == REGRESSION for r in rows)
    lines = [
        f"### Re-benchmark against `{against}`: p50 speedup (baseline / candidate), "
        f"{confidence:.0%} intervals",
        "",
        "| candidate | batch | committed | now | compared with | threshold | retest | history "
        "| status |",
        "|---|---:|---|---|---|---:|---|---|---|",
        *[
            f"| {r.technique} | {batch(r)} | {iv(r.before)} | {iv(r.after)} | "
            f"{r.compared_with()} | {f'{r.threshold:.1%} ({r.basis})' if r.basis else ''} | "
            f"{'; '.join(iv(x) for x in r.retests)} | {r.history} | {r.status} |"
            for r in rows
        ],
        "",
        f"{n} regression(s): a drop beyond the threshold below the median of the series' runs "
        f"since its last shift once they are {MIN_HISTORY}, else below the committed value. The "
        "threshold is the larger of the minimum change and the drop unchanged runs exceed "
        f"{1 - confidence:.0%} of the time: below the median, s * sqrt(1/m + pi/(2 n)) for the "
        "mean of m new runs against a median of n, s the history's run-to-run spread; below the "
        "committed value, two runs' noise (s from the history once it holds "
        f"{MIN_HISTORY} runs, else both intervals); {retest}.",
    ]
    if k := sum(r.status.startswith(NOISY) for r in rows):
        lines += [
            "",
            f"{k} row(s) too noisy to judge: a threshold wider than {max_floor:.1%} "
            "(`bench.max_noise_floor`), so a drop that large could pass unseen; the history "
            f"narrows it once it holds {MIN_HISTORY} runs.",
        ]
    return "\n".join(lines) + "\n"


def _show(rev: str, path: str) -> str | None:
    done = subprocess.run(
        ["git", "show", f"{rev}:{path}"], capture_output=True, text=True, check=False
    )
    return done.stdout if done.returncode == 0 else None


def committed(path: Path, against: str) -> dict[str, Any] | None:
    """The evidence file as committed at `against`; None when it was never committed."""
    text = _show(against, path.as_posix())
    if text is None:
        return None
    try:
        return checked(json.loads(text))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise EvidenceError(
            f"{path} at {against} is malformed ({type(e).__name__}: {e}); commit a complete "
            "benchmark (`dvc repro` then `git add` it) before re-benchmarking against it"
        ) from None


def checked(data: dict[str, Any]) -> dict[str, Any]:
    """The evidence, once the keys the gate reads are known to be there (KeyError if not)."""
    if data.get("status") == "ok":
        for b in data["batches"]:
            _ = (b["batch_size"], b["noise_floor"], b["speedup"]["p50"]["low"])
            _ = (b["speedup"]["p50"]["high"], b["speedup"]["p50"]["estimate"])
    return data


def machine(host: dict[str, Any]) -> str:
    """The machine class of a host description: timings compare only within one."""
    return f"{host['cpu_model']} ({host['architecture']}, {host['logical_cores']} logical cores)"


def this_host() -> dict[str, Any]:
    return describe_host()


def setup(params: dict[str, Any], host: dict[str, Any]) -> dict[str, str]:
    """What a timing compares within: model, target and machine class (`history_log.SETUP`), and the
    timing protocol, which keeps the history's series apart."""
    return {
        "model": params["model"]["name"],
        "target": params["target"]["name"],
        "machine": machine(host),
        "protocol": history_log.protocol(params.get("bench") or {}),  # not compared with committed
    }


def committed_setup(against: str, host_path: Path) -> dict[str, str]:
    texts = {f: _show(against, f) for f in (config.PARAMS_FILE.as_posix(), host_path.as_posix())}
    if missing := [f for f, t in texts.items() if t is None]:
        raise EvidenceError(
            f"no committed {' or '.join(missing)} at {against}: the gate cannot tell which "
            "model, target and machine its evidence is for; commit them with the evidence"
        )
    params_text, host_text = texts.values()
    try:
        return setup(yaml.safe_load(params_text or ""), json.loads(host_text or ""))
    except (yaml.YAMLError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise EvidenceError(
            f"params.yaml or {host_path} at {against} is malformed ({type(e).__name__}: {e})"
        ) from None


def refuse_other_setup(ours: dict[str, str], theirs: dict[str, str], against: str) -> None:
    """Evidence of another model, target or machine class says nothing about this one (another
    timing protocol only times the same thing otherwise: it is compared)."""
    if diff := [k for k in history_log.SETUP if ours[k] != theirs[k]]:
        sides = "; ".join(f"{k}: {theirs[k]!r} at {against}, {ours[k]!r} here" for k in diff)
        raise EvidenceError(
            f"--against {against} holds evidence for another {' and '.join(diff)} ({sides}): "
            "re-benchmark against a commit made with the same model, target and machine class"
        )


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
        help="smallest relative drop of a p50 speedup that may count as a regression, however "
        "quiet the runs (%(default)s)",
    )
    parser.add_argument(
        "--max-floor",
        type=float,
        help="widest threshold a row may pass with (default: bench.max_noise_floor)",
    )
    parser.add_argument(
        "--retests",
        type=int,
        default=1,
        help="times a candidate with a flagged drop is timed again: below the committed value "
        "each retest must show the drop, below the history's median the mean of the first run and "
        "the retests is judged (%(default)s)",
    )
    parser.add_argument(
        "--history",
        type=Path,
        default=history_log.CSV,
        help="the history CSV appended to (%(default)s)",
    )
    parser.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    args = parser.parse_args(argv)
    p = config.load()
    max_floor = (
        getattr(p.bench, "max_noise_floor", MAX_FLOOR) if args.max_floor is None else args.max_floor
    )
    if not 0 <= args.min_change < 1 or args.retests < 0 or not 0 < max_floor < 1:
        raise EvidenceError(
            f"--min-change {args.min_change} / --max-floor {max_floor} / --retests "
            f"{args.retests}: the minimum change is a share in [0, 1), the maximum threshold one "
            "in (0, 1) and retests a count >= 0"
        )
    paths = {t: Path(p.paths.benchmark) / t / "benchmark.json" for t in p.technique}
    before = {t: committed(path, args.against) for t, path in paths.items()}
    missing = [str(paths[t]) for t, b in before.items() if b is None]
    if missing:
        raise EvidenceError(
            f"no committed benchmark at {args.against} for {', '.join(missing)}: run `dvc repro`, "
            "commit the evidence, then re-benchmark against it"
        )
    host_path = Path(p.paths.host)
    with config.PARAMS_FILE.open() as f:
        params_now = yaml.safe_load(f)
    # --no-run compares the evidence in the working tree: the machine is the one it was made on
    host = read_host(host_path) if args.no_run else this_host()
    where = setup(params_now, host)
    refuse_other_setup(where, committed_setup(args.against, host_path), args.against)
    past = history_log.series(history_log.read(args.history))
    confidence = p.bench.confidence
    past_shifts = history_log.analyse([r for runs in past.values() for r in runs])

    here = tuple(where[k] for k in history_log.SERIES[:4])  # model, target, machine, protocol

    def since_shift(key: tuple[Any, ...]) -> list[float]:
        """Past p50 speedups of a series after its last shift: a median across one means
        nothing."""
        start = max((x.run for x in past_shifts.get(key, [])), default=1) - 1
        return [h["estimate"] for h in past.get(key, [])[start:]]

    def history_of(
        t: str,
    ) -> tuple[dict[tuple[str, int], list[float]], dict[tuple[str, int], list[float]]]:
        """Past p50 speedups of candidate t here (same timing protocol), per (inputs, batch
        size): all of them, and those since the series' last shift."""
        keys = [k for k in past if k[:4] == here and k[4] == t]
        return (
            {(k[5], k[6]): [h["estimate"] for h in past[k]] for k in keys},
            {(k[5], k[6]): since_shift(k) for k in keys},
        )

    dvc = [sys.executable, "-m", "dvc", "repro"]
    commit = "" if args.no_run else _commit()
    timed: list[list[dict[str, Any]]] = []  # history rows of each timing run: first, then retests

    def time_again(techniques: list[str]) -> dict[str, list[Row]]:
        if not args.no_run:
            subprocess.run([*dvc, "-f", "-s", *(f"benchmark@{t}" for t in techniques)], check=True)
            subprocess.run(dvc, check=True)  # the rest: validation, report, MLflow
        evidence = {t: read_evidence(paths[t]) for t in techniques}
        if not args.no_run:  # --no-run measured nothing: the history stays as it is
            fingerprint = read_host(host_path).get("fingerprint", "")
            timed.append(history_log.rows_of(evidence, where, commit, fingerprint))
        return {
            t: compare(t, before[t], e, args.min_change, max_floor, confidence, *history_of(t))
            for t, e in evidence.items()
        }

    if not args.no_run:
        subprocess.run([*dvc, *(f"optimize@{t}" for t in p.technique)], check=True)  # inputs
    by_technique = time_again(list(p.technique))
    retested = False
    for _ in range(0 if args.no_run else args.retests):
        flagged = [
            t
            for t, rows in by_technique.items()
            if any(r.status == REGRESSION or r.screened for r in rows)
        ]
        if not flagged:
            break
        print(f"re-timing {', '.join(flagged)}: a flagged drop is judged again with the retest")
        retested = True
        for t, again in time_again(flagged).items():
            by_technique[t] = confirm(
                by_technique[t], again, args.min_change, max_floor, confidence
            )
    new_runs = [r for run in timed for r in run]  # one history run per timing run
    if new_runs:
        history_log.append(args.history, new_runs)
    shifts = history_log.analyse([r for runs in past.values() for r in runs] + new_runs)

    def with_history(r: Row) -> Row:
        key = (*here, r.technique, r.inputs, r.batch_size)
        r = judge_committed(r, since_shift(key))
        return replace(
            r,
            history="; ".join(filter(None, [history_log.describe(shifts.get(key, [])), r.history])),
        )

    rows = [with_history(r) for t in paths for r in by_technique[t]]
    if args.no_run:
        retest = "no retest ran (--no-run compares the files as they are)"
    elif retested:
        retest = (
            "each flagged drop was timed again: below the median (screened at "
            f"{SCREEN:.0%} of the threshold) it counts only where the mean of the first run and "
            "its retests falls beyond the threshold for that many runs, below the committed value "
            "only where each retest shows it too"
        )
    elif args.retests == 0:
        retest = "no retest ran (--retests 0): a drop here is one comparison"
    else:
        retest = "nothing was flagged, so no retest ran"
    text = table(rows, args.against, retest, max_floor, confidence)
    write_text(Path(args.table), text)
    print(text)
    code = gate(rows)
    if new_runs and not args.no_mlflow:
        tags = {"commit": commit, "against": args.against, "exit_code": str(code), **where}
        print(history_log.log_mlflow(timed[0], where, tags))  # the first run's figures
    if code:
        sys.exit(code)


def gate(rows: list[Row]) -> int:
    """The exit code: a confirmed regression outranks rows too noisy to judge."""
    if any(r.status == REGRESSION for r in rows):
        return REGRESSED
    return TOO_NOISY if any(r.status.startswith(NOISY) for r in rows) else PASSED


def read_host(path: Path) -> dict[str, Any]:
    host = read_json(path, "host")
    if not isinstance(host, dict):
        raise EvidenceError(f"{path} is not a host description: rerun `dvc repro host`")
    return host


def read_evidence(path: Path) -> dict[str, Any]:
    try:
        return checked(read_json(path, "benchmark"))
    except (KeyError, TypeError, AttributeError) as e:
        raise EvidenceError(
            f"{path} is malformed ({type(e).__name__}: {e}): rerun `dvc repro -f -s benchmark`"
        ) from None


def _commit() -> str:
    return git_commit()


# what stops the gate with one line and exit 2: a known error or a failed `dvc repro`
GATE_ERRORS: tuple[type[Exception], ...] = (*KNOWN, subprocess.CalledProcessError)


def cli(argv: list[str] | None = None) -> None:
    """`main` with the exit codes of the module's docstring: an error that stops the gate
    (bad evidence, another setup, a failed `dvc repro`, a crash) exits 2, never 1."""
    try:
        main(argv)
    except GATE_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(UNUSABLE)
    except Exception:  # a crash must not read as a confirmed regression (exit 1)
        traceback.print_exc()
        sys.exit(UNUSABLE)


if __name__ == "__main__":
    import os

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    cli()
