"""Stage `benchmark@<technique>`: baseline and candidate timed side by side, in rounds spread
over fresh worker processes (`bench.sessions`), each with its own session of every side."""

from __future__ import annotations

import argparse
import csv
import functools
import io
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stages import data as datasets
from stages import params as config
from stages import stack
from stages.cli import run
from stages.evidence.records import TimingEvidence
from stages.export import MODEL_FILE
from stages.measure import flops, memory, scenarios
from stages.measure.blocks import Call
from stages.measure.rounds import Slot, run_rounds
from stages.measure.timing import (
    AGAIN,
    BASELINE,
    CANDIDATE,
    ORIGINAL,
    SIDES,
    STACKED_SIDES,
    Protocol,
    summarize,
)
from stages.measure.worker import Pool
from stages.models.catalog import MODELS
from stages.runtime import readout, session, session_settings, size_on_disk
from stages.storage import read_json, save_arrays, write_json, write_text

PLOT_PERCENTILES = (10, 25, 50, 75, 90, 95, 99)
FIXED = "fixed_length"  # an optional prepared set timed at batch 1 beside the natural inputs
Feed = dict[str, np.ndarray]


def batches(
    feeds: dict[str, np.ndarray], size: int, trim: Callable[[Feed], Feed] | None = None
) -> list[Feed]:
    """Consecutive real rows, `size` per call, dropping a short tail. A preset's `trim` may cut
    each batch to its natural shape (e.g. text padded only to its longest sequence)."""
    n = len(next(iter(feeds.values())))
    if n < size:
        raise config.ParamsError(
            f"bench.batch_sizes has {size} but the validation set has only {n} rows; use <= {n}"
        )
    out = [{k: v[i : i + size] for k, v in feeds.items()} for i in range(0, n - size + 1, size)]
    return [trim(f) for f in out] if trim else out


def median_shapes(inputs: list[Feed]) -> dict[str, tuple[int, ...]]:
    """Input shapes of the call of median size (operations are counted at this shape)."""
    by_size = sorted(inputs, key=lambda f: sum(v.size for v in f.values()))
    return {k: tuple(v.shape) for k, v in by_size[len(by_size) // 2].items()}


def achieved(counted: dict[str, Any], p50_ms: float) -> dict[str, Any]:
    """Arithmetic per call and the rate it ran at, in GFLOP/s (GOP/s for integer work), at p50."""
    return {**counted, "gflops_p50": counted["flops"] / (p50_ms / 1e3) / 1e9}


def load_ms(path: Path, p: config.Params, produced_by: str) -> float:
    """Median session creation time in ms over bench.load_repeats loads."""
    times = []
    for _ in range(p.bench.load_repeats):
        t0 = time.perf_counter()
        session(path, p.target, produced_by)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def side_sessions(p: config.Params, base: Path, cand: Path, name: str) -> dict[str, Any]:
    """The three sessions timed side by side: baseline, candidate, and the baseline again in a
    second session (the A/A control)."""
    return {
        BASELINE: session(base, p.target, "baseline"),
        CANDIDATE: session(cand, p.target, f"optimize@{name}"),
        AGAIN: session(base, p.target, "baseline"),
    }


def timing_pool(p: config.Params, base: Path, cand: Path, original: Path | None = None) -> Pool:
    """bench.sessions worker processes, each with a session of baseline (the control on a
    stack), candidate and baseline again, and of the original baseline on a stack (the sessions
    the timing runs in; the checks and readouts use side_sessions)."""
    models = {BASELINE: base, CANDIDATE: cand, AGAIN: base}
    if original is not None:
        models[ORIGINAL] = original
    return Pool(models, session_settings(p.target), p.bench.sessions)


def time_sides(
    p: config.Params,
    slots: Sequence[Slot],
    b: int,
    weighed: bool,
    again: bool = False,
    sides: Sequence[str] = SIDES,
) -> tuple[dict[str, Any], Any]:
    """One interleaved run in `slots` (the pool's workers, fed the inputs) at batch size b and
    its summary; `weighed`: the run the verdict weighs (its tail judged too, capped at
    max_seconds); `again`: the workers' sessions are warm from an earlier run; `sides`: SIDES,
    or STACKED_SIDES on a stack (the original baseline timed in the same rounds)."""
    protocol = Protocol.from_bench(p.bench, p.budget, weighed)
    timings = run_rounds(slots, protocol, again, sides)
    s = summarize(
        timings,
        b,
        precision=protocol.precision,
        confidence=protocol.confidence,
        resamples=protocol.bootstrap_resamples,
        seed=p.seed,
    )
    return s, timings


def measure(
    p: config.Params,
    base: Path,
    cand: Path,
    name: str,
    prepared: datasets.Prepared,
    original: Path | None = None,
) -> TimingEvidence:
    """All speed evidence for one candidate: timings per batch size, memory, load time, size.
    `base` is the control; on a stack `original` is the original baseline, timed in the same
    rounds as a fourth side (the stack's cumulative speedup)."""
    sides = SIDES if original is None else STACKED_SIDES
    produced = {BASELINE: "baseline", CANDIDATE: f"optimize@{name}"}
    sessions = side_sessions(p, base, cand, name)
    calls: dict[str, Call] = {side: functools.partial(s.run, None) for side, s in sessions.items()}
    trim = MODELS[p.model_name].trim
    runs = [("validation", b) for b in p.bench.batch_sizes]
    if FIXED in prepared.sets:  # a preset's fixed-shape case, e.g. text padded to 128 tokens
        runs.append((FIXED, 1))
    results, raw = [], []
    timed: list[tuple[str, int, list[Feed], dict[str, Any], Any]] = []
    with timing_pool(p, base, cand, original) as pool:  # the workers end before anything else runs
        for i, (set_name, b) in enumerate(runs):
            inputs = batches(prepared.feeds(set_name), b, None if set_name == FIXED else trim)
            # the first run (batch 1, validation inputs) is the one the verdict weighs, tail too
            s, timings = time_sides(
                p, pool.feed(inputs), b, weighed=i == 0, again=i > 0, sides=sides
            )
            timed.append((set_name, b, inputs, s, timings))
            sp = s["speedup"]["p50"]
            print(
                f"{name} {set_name} batch {b}: p50 speedup {sp['estimate']:.3f} "
                f"[{sp['low']:.3f}, {sp['high']:.3f}] over {s['rounds']} rounds in "
                f"{s['sessions']['count']} sessions ({s['stopped_by']}); A/A noise floor "
                f"{s['noise_floor']:.1%}" + _cumulative_line(s),
                flush=True,
            )
    for set_name, b, inputs, s, timings in timed:
        s["inputs"] = set_name
        s["max_noise_floor"] = p.bench.max_noise_floor
        shapes = median_shapes(inputs)
        s["compute"] = {
            side: achieved(flops.count(path, shapes), s["sides"][side]["p50"]["estimate"])
            for side, path in ((BASELINE, base), (CANDIDATE, cand))
        }
        results.append(s)
        raw.append((set_name, b, timings))
    modes = scenarios.serving_modes(p.technique[name])
    server: dict[str, Any] | None = None
    server_csv = ""
    if name == "batching" or {"server", "offline"} & set(p.bench.scenarios):
        capacity = 1e3 / results[0]["sides"][BASELINE]["p50"]["estimate"]  # req/s, one per call
        server, server_csv = scenarios.run(
            {side: calls[side] for side in (BASELINE, CANDIDATE)},
            batches(prepared.feeds("validation"), 1, trim),
            modes,
            capacity_qps=capacity,
            bench=p.bench,
            seed=p.seed,
        )
        sat = {
            side: "/".join(
                "none" if q is None else f"{q:.0f}"
                for q in server["saturation"][side]["per_replicate_qps"]
            )
            for side in (BASELINE, CANDIDATE)
        }
        print(
            f"{name} server: saturation per replicate, baseline {sat[BASELINE]} req/s, candidate "
            f"{sat[CANDIDATE]} req/s ({server['wall_s']:.0f} s under load)",
            flush=True,
        )
    settings = session_settings(p.target)
    readouts = {
        side: {**readout(s), **modes.get(side, modes[BASELINE])} for side, s in sessions.items()
    }
    del sessions
    with tempfile.TemporaryDirectory() as tmp:
        one = Path(tmp) / "feeds.npz"
        save_arrays(one, batches(prepared.feeds("validation"), 1, trim)[0])
        mem = {
            BASELINE: memory.measure(base, one, p.bench.memory_calls, settings),
            CANDIDATE: memory.measure(cand, one, p.bench.memory_calls, settings),
        }
    sizes = {BASELINE: size_on_disk(base), CANDIDATE: size_on_disk(cand)}
    if original is not None:
        sizes[ORIGINAL] = size_on_disk(original)
    return TimingEvidence(
        batches=results,
        memory=mem,
        load_ms={
            BASELINE: load_ms(base, p, "baseline"),
            CANDIDATE: load_ms(cand, p, produced[CANDIDATE]),
        },
        size_bytes=sizes,
        session=settings,
        sessions=readouts,
        server=server,
        primary="server" if name == "batching" else "single_stream",
        inputs={
            "set": "validation",
            "sha256": datasets.input_hash(prepared, "validation"),
            "batch_sizes": p.bench.batch_sizes,
        },
        server_csv=server_csv,
        raw=raw,
    )


def _cumulative_line(s: dict[str, Any]) -> str:
    """The stack's p50 speedup against the original baseline, for the progress line."""
    if "cumulative" not in s:
        return ""
    c = s["cumulative"]["speedup"]["p50"]
    return f"; against the original baseline {c['estimate']:.3f} [{c['low']:.3f}, {c['high']:.3f}]"


def flat_metrics(evidence: dict[str, Any]) -> dict[str, Any]:
    """The headline figures, flat, for `dvc metrics` and `dvc exp show`."""
    out: dict[str, Any] = {}
    for s in evidence["batches"]:
        b = s["batch_size"] if s["inputs"] == "validation" else f"{s['batch_size']}_{s['inputs']}"
        for q in ("p50", "p95", "p99"):
            out[f"b{b}_speedup_{q}"] = s["speedup"][q]["estimate"]
            out[f"b{b}_baseline_{q}_ms"] = s["sides"][BASELINE][q]["estimate"]
            out[f"b{b}_candidate_{q}_ms"] = s["sides"][CANDIDATE][q]["estimate"]
        out[f"b{b}_speedup_p50_low"] = s["speedup"]["p50"]["low"]
        out[f"b{b}_speedup_p50_high"] = s["speedup"]["p50"]["high"]
        out[f"b{b}_aa_p50"] = s["aa_p50"]["estimate"]
        out[f"b{b}_noise_floor"] = s["noise_floor"]
        out[f"b{b}_throughput_ratio"] = s["throughput_ratio"]
        if "cumulative" in s:  # a stack: the candidate against the original baseline
            c = s["cumulative"]["speedup"]["p50"]
            out[f"b{b}_cumulative_speedup_p50"] = c["estimate"]
            out[f"b{b}_cumulative_speedup_p50_low"] = c["low"]
            out[f"b{b}_cumulative_speedup_p50_high"] = c["high"]
    sizes, mem = evidence["size_bytes"], evidence["memory"]
    out["size_ratio"] = sizes[CANDIDATE] / sizes[BASELINE]
    out["memory_ratio"] = mem[CANDIDATE]["peak_over_start_bytes"] / max(
        1, mem[BASELINE]["peak_over_start_bytes"]
    )
    return out


def latencies_csv(raw: list[tuple[str, int, Any]]) -> str:
    """Every timed call with its round, the session (worker) the round ran in, its position in
    the round, side and input set."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        ["inputs", "batch_size", "round", "session", "position", "side", "call", "latency_ms"]
    )
    for set_name, b, t in raw:
        sessions = t.round_sessions
        for r, order in enumerate(t.orders):
            for pos, side in enumerate(order):
                for c, ms in enumerate(t.rounds[side][r]):
                    w.writerow([set_name, b, r, sessions[r], pos, side, c, f"{ms:.6f}"])
    return buf.getvalue()


def percentiles_csv(raw: list[tuple[str, int, Any]]) -> str:
    _, _, t = raw[0]  # validation inputs, batch 1
    base, cand = (np.concatenate(t.rounds[s]) for s in (BASELINE, CANDIDATE))
    rows = ["percentile,baseline_ms,candidate_ms,speedup"]
    for q in PLOT_PERCENTILES:
        b, c = np.percentile(base, q), np.percentile(cand, q)
        rows.append(f"{q},{b:.6f},{c:.6f},{b / c:.4f}")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("technique")
    name = parser.parse_args(argv).technique
    p = config.load()
    timing_key = read_json(Path(p.paths.host_timing), "host")
    cand_dir = Path(p.paths.candidates) / name
    manifest = read_json(cand_dir / "manifest.json", f"optimize@{name}")
    out = Path(p.paths.benchmark) / name
    evidence: dict[str, Any] = {
        "technique": name,
        "host": timing_key["fingerprint"],  # the timing key: what can change these timings
        "target": p.target.name,
    }
    if manifest["status"] != "ok":
        evidence.update(status=manifest["status"], reason=manifest.get("reason", ""))
        metrics: dict[str, Any] = {}
        raw: list[tuple[str, int, Any]] = []
        server_csv = ""
    else:
        prepared = datasets.read(Path(p.paths.data))
        control = stack.control_dir(p.paths, p.control) / MODEL_FILE  # the baseline when empty
        original = Path(p.paths.baseline) / MODEL_FILE if p.control else None
        measured = measure(p, control, cand_dir / MODEL_FILE, name, prepared, original)
        raw, server_csv = measured.raw, measured.server_csv
        evidence.update(status="ok", protocol=config.as_dict(p.bench), **measured.to_dict())
        metrics = flat_metrics(evidence)
    write_text(out / "latencies.csv", latencies_csv(raw) if raw else "")
    write_text(out / "server.csv", server_csv or scenarios.TRACE_HEADER + "\n")
    write_text(
        out / "percentiles.csv",
        percentiles_csv(raw) if raw else "percentile,baseline_ms,candidate_ms,speedup\n",
    )
    write_json(out / "metrics.json", metrics)
    write_json(out / "benchmark.json", evidence)  # last: its presence means the rest is there


if __name__ == "__main__":
    run(main)
