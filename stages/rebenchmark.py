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
import subprocess
import sys
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from stages import history as history_log
from stages import params as config
from stages.change_points import describe
from stages.errors import KNOWN
from stages.git import git_commit
from stages.history import SeriesKey
from stages.measure.machine import describe_host
from stages.regression.evidence import (
    committed,
    committed_setup,
    read_evidence,
    read_host,
    refuse_other_setup,
    setup,
)
from stages.regression.judge import (
    NOISY,
    REGRESSION,
    SCREEN,
    BatchKey,
    Row,
    compare,
    confirm,
    judge_committed,
)
from stages.regression.table import table
from stages.storage import EvidenceError, write_text

MIN_CHANGE = 0.05  # default smallest relative change that may count, however quiet the runs
MAX_FLOOR = 0.10  # widest threshold a row may pass with, when params has no bench.max_noise_floor
PASSED, REGRESSED, UNUSABLE, TOO_NOISY = 0, 1, 2, 3  # exit codes


def this_host() -> dict[str, Any]:
    return describe_host()


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

    def since_shift(key: SeriesKey) -> list[float]:
        """Past p50 speedups of a series after its last shift: a median across one means
        nothing."""
        start = max((x.run for x in past_shifts.get(key, [])), default=1) - 1
        return [h["estimate"] for h in past.get(key, [])[start:]]

    def history_of(
        t: str,
    ) -> tuple[dict[BatchKey, list[float]], dict[BatchKey, list[float]]]:
        """Past p50 speedups of candidate t here (same timing protocol), per (inputs, batch
        size): all of them, and those since the series' last shift."""
        keys = [  # the series of t here, whatever its inputs and batch size
            k for k in past if k == SeriesKey(**where, candidate=t, inputs=k.inputs, batch=k.batch)
        ]
        return (
            {BatchKey(k.inputs, k.batch): [h["estimate"] for h in past[k]] for k in keys},
            {BatchKey(k.inputs, k.batch): since_shift(k) for k in keys},
        )

    dvc = [sys.executable, "-m", "dvc", "repro"]
    commit = "" if args.no_run else git_commit()
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
        key = SeriesKey(**where, candidate=r.technique, inputs=r.inputs, batch=r.batch_size)
        r = judge_committed(r, since_shift(key))
        return replace(
            r,
            history="; ".join(filter(None, [describe(shifts.get(key, [])), r.history])),
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
