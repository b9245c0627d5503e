"""Do the timing intervals hold from one run to the next? A benchmark, not a test.

`python -m stages.coverage int8_dynamic --runs 5` times the candidate's batch-1 p50 speedup (the
run the verdict weighs, with the committed protocol) in N fresh processes one after another, on
the unchanged repository, and prints for every ordered pair of runs (i, j) whether run i's
interval contains run j's estimate, the share of pairs covered, and the run-to-run spread of the
estimates beside the mean interval half-width. Two intervals per run: the confidence interval
(about the true speedup; even an exact one holds a rerun's estimate in only about 83 % of pairs
at 95 %, since the rerun carries its own error) and the rerun interval (`rerun_p50`, sqrt(2)
wider on the log scale: where a rerun's estimate should land, about 95 % of pairs when honest).
Run it alone on the machine: anything running beside it widens the spread.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from stages import data as datasets
from stages import params as config
from stages.benchmark import batches, time_sides, timing_pool
from stages.cli import run
from stages.export import MODEL_FILE
from stages.models.catalog import MODELS
from stages.runtime import check_model, check_target
from stages.storage import read_json


def time_once(p: config.Params, name: str) -> dict[str, Any]:
    """One timing of the candidate as `benchmark@<name>` times it at batch 1 (validation
    inputs), in bench.sessions fresh workers: the p50 speedup with its interval, the A/A floor
    and what ended the run."""
    cand_dir = Path(p.paths.candidates) / name
    manifest = read_json(cand_dir / "manifest.json", f"optimize@{name}")
    if manifest["status"] != "ok":
        raise config.ParamsError(
            f"{name} has no candidate model ({manifest['status']}): choose a technique whose "
            "optimize stage produced one"
        )
    base = Path(p.paths.baseline) / MODEL_FILE
    check_target(p.target)  # the benchmark's checks, before any worker starts
    check_model(base, "baseline")
    check_model(cand_dir / MODEL_FILE, f"optimize@{name}")
    prepared = datasets.read(Path(p.paths.data))
    inputs = batches(prepared.feeds("validation"), 1, MODELS[p.model_name].trim)
    with timing_pool(p, base, cand_dir / MODEL_FILE) as pool:
        s, _ = time_sides(p, pool.feed(inputs), 1, weighed=True)
    return {
        **s["speedup"]["p50"],
        "rerun": s["rerun_p50"],
        "noise_floor": s["noise_floor"],
        "effect": s["effect"],  # faster, slower or no measurable change (against the A/A floor)
        "rounds": s["rounds"],
        "sessions": s["sessions"]["count"],
        "stopped_by": s["stopped_by"],
    }


def pairs_covered(runs: list[dict[str, Any]], key: str = "") -> tuple[int, int]:
    """(pairs covered, pairs): run i's interval contains run j's estimate, for every i != j;
    the interval is the run's own (its confidence interval), or the one under `key` (e.g.
    "rerun")."""

    def interval(r: dict[str, Any]) -> dict[str, float]:
        return r[key] if key else r

    pairs = list(itertools.permutations(range(len(runs)), 2))
    covered = sum(
        interval(runs[i])["low"] <= runs[j]["estimate"] <= interval(runs[i])["high"]
        for i, j in pairs
    )
    return covered, len(pairs)


def spread(runs: list[dict[str, float]]) -> dict[str, float]:
    """The estimates' relative standard deviation beside the intervals' mean relative half-width."""
    estimates = [r["estimate"] for r in runs]
    mean = statistics.fmean(estimates)
    half = statistics.fmean((r["high"] - r["low"]) / 2 / r["estimate"] for r in runs)
    sd = statistics.stdev(estimates) / mean if len(runs) > 1 else 0.0
    return {"mean_estimate": mean, "run_to_run_sd": sd, "mean_half_width": half}


def table(name: str, runs: list[dict[str, Any]], confidence: float) -> str:
    covered, pairs = pairs_covered(runs)
    s = spread(runs)
    sessions = runs[0].get("sessions", 1)
    lines = [
        f"{name}: batch-1 p50 speedup over {len(runs)} runs ({confidence:.0%} intervals, "
        f"{sessions} session(s) per side each)"
    ]
    for i, r in enumerate(runs, 1):
        others = [j for j in range(len(runs)) if j != i - 1]
        inside = sum(r["low"] <= runs[j]["estimate"] <= r["high"] for j in others)
        lines.append(
            f"  run {i}: {r['estimate']:.3f} [{r['low']:.3f}, {r['high']:.3f}]  "
            f"A/A floor {r['noise_floor']:.1%} ({r['effect']}), {r['rounds']} rounds "
            f"({r['stopped_by']}); "
            f"holds {inside} of the other {len(others)} estimates"
        )
    effects = collections.Counter(r["effect"] for r in runs)
    lines.append("  effects: " + ", ".join(f"{k} {v}" for k, v in sorted(effects.items())))
    lines.append(
        f"  pairs covered: {covered} of {pairs} ({covered / max(pairs, 1):.0%}); run-to-run sd "
        f"{s['run_to_run_sd']:.1%} of the mean {s['mean_estimate']:.3f}, mean interval "
        f"half-width {s['mean_half_width']:.1%}"
    )
    if all("rerun" in r for r in runs):
        held, _ = pairs_covered(runs, "rerun")
        lines.append(
            f"  pairs covered by the rerun interval: {held} of {pairs} ({held / max(pairs, 1):.0%})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.coverage", description=__doc__)
    parser.add_argument("technique")
    parser.add_argument("--runs", type=int, default=5, help="fresh processes, one after another")
    parser.add_argument(
        "--sessions",
        type=int,
        default=0,
        help="sessions per side (worker processes) instead of bench.sessions; 1 = one session "
        "per side, the protocol without replication",
    )
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)  # one worker run
    args = parser.parse_args(argv)
    p = config.load()
    if args.sessions < 0:
        raise config.ParamsError(
            f"--sessions = {args.sessions}: use 1 or more (0 = bench.sessions)"
        )
    if args.sessions:
        p.bench.sessions = args.sessions
    if args.technique not in p.technique:
        raise config.ParamsError(
            f"technique {args.technique!r} is not in params.yaml's list "
            f"({', '.join(p.technique)}): choose one of them"
        )
    if args.once:
        print(json.dumps(time_once(p, args.technique)))
        return
    if args.runs < 2:
        raise config.ParamsError(f"--runs = {args.runs}: coverage needs at least 2 runs")
    runs = []
    for i in range(args.runs):
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "stages.coverage",
                args.technique,
                "--once",
                f"--sessions={p.bench.sessions}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise config.ParamsError(f"run {i + 1} failed: {out.stderr.strip()[-500:]}")
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = runs[-1]
        print(f"run {i + 1}: {r['estimate']:.3f} [{r['low']:.3f}, {r['high']:.3f}]", flush=True)
    print(table(args.technique, runs, p.bench.confidence))


if __name__ == "__main__":
    run(main)
