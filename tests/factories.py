"""One candidate's evidence in the shape report.collect builds, on fabricated figures: the timing
runs, the paired accuracy comparisons, and the candidate around them. Every default passes the
default budget (1 point overall, 3 points worst slice, 1.10x speedup, 1.10x p99)."""

from __future__ import annotations

from typing import Any

import numpy as np

from stages.evidence.records import TimingEvidence
from stages.validate import compare

Triple = tuple[float, float, float]


def interval(estimate: float, low: float, high: float) -> dict[str, float]:
    return {"estimate": estimate, "low": low, "high": high}


def comparison(
    n: int, right_to_wrong: int, wrong_to_right: int, confidence: float = 0.95
) -> dict[str, Any]:
    """validate.compare on n paired rows with these flips; the baseline gets 80 % right."""
    base_ok = np.arange(n) < round(0.8 * n)
    cand_ok = base_ok.copy()
    cand_ok[:right_to_wrong] = False
    cand_ok[n - wrong_to_right :] = True
    return compare(base_ok, cand_ok, confidence)


def timing_run(
    *,
    batch_size: int = 1,
    p50: Triple = (1.6, 1.55, 1.66),
    p95: Triple = (1.6, 1.55, 1.66),
    p99: Triple = (1.7, 1.5, 1.9),
    noise_floor: float = 0.03,
    noise_floor_p95: float | None = None,
    noise_floor_p99: float = 0.05,
    stopped_by: str = "decided (faster)",
    calls: int = 600,
    tail_interval: str | None = "order statistic",
    p99_reliable: bool = False,
    max_noise_floor: float = 0.1,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """One timing run's summary: the baseline at 10 ms (14.5 ms at p95), the candidate at the
    baseline over each speedup's estimate. `tail_interval` None: written before the
    order-statistic bound."""
    speedup = {"p50": interval(*p50), "p95": interval(*p95), "p99": interval(*p99)}
    base_ms = {"p50": 10.0, "p95": 14.5, "p99": 16.0}
    run: dict[str, Any] = {
        "batch_size": batch_size,
        "inputs": "validation",
        "sides": {
            "baseline": {q: interval(ms, 0.95 * ms, 1.05 * ms) for q, ms in base_ms.items()},
            "candidate": {
                q: interval(ms / speedup[q]["estimate"], 0.0, float("inf"))
                for q, ms in base_ms.items()
            },
        },
        "speedup": speedup,
        "noise_floor": noise_floor,
        "noise_floors": {
            "p50": noise_floor,
            "p95": noise_floor if noise_floor_p95 is None else noise_floor_p95,
            "p99": noise_floor_p99,
        },
        "stopped_by": stopped_by,
        "rounds": 30,
        "reliable": {"p50": True, "p90": True, "p95": True, "p99": p99_reliable},
        "calls_per_side": calls,
        "confidence": confidence,
        "max_noise_floor": max_noise_floor,
    }
    if tail_interval:
        run["tail_interval"] = tail_interval
    return run


def candidate(
    *,
    name: str = "int8_dynamic",
    status: str = "ok",
    confounders: tuple[str, ...] = (),
    overall: tuple[int, int, int] = (3000, 12, 9),
    slices: dict[str, tuple[int, int, int]] | None = None,
    server: dict[str, Any] | None = None,
    confidence: float = 0.95,
    size_bytes: tuple[int, int] = (1000, 500),
    **batch1: Any,
) -> dict[str, Any]:
    """A candidate timed at batch 1 (`batch1`: timing_run's arguments) and at batch 8 (a p50
    speedup of 0.5, which the verdict does not weigh), validated overall and per slice
    (n, right->wrong, wrong->right each). Its validation is the block as written before
    per-output figures; its benchmark as benchmark.json holds it."""
    slices = slices if slices is not None else {"short": (300, 2, 1), "class_a": (1500, 6, 5)}
    first = timing_run(confidence=confidence, **batch1)
    eight = {
        **first,
        "batch_size": 8,
        "speedup": {**first["speedup"], "p50": interval(0.5, 0.4, 0.6)},
    }
    timing = TimingEvidence(
        batches=[first, eight],
        memory={
            "baseline": {"peak_over_start_bytes": 1000},
            "candidate": {"peak_over_start_bytes": 1000},
        },
        load_ms={"baseline": 50.0, "candidate": 40.0},
        size_bytes={"baseline": size_bytes[0], "candidate": size_bytes[1]},
        session={"provider": "CPUExecutionProvider", "intra_op_threads": 1},
        sessions={},
        server=server,
        primary="single_stream" if server is None else "server",
        inputs={"set": "validation", "sha256": "0" * 64, "batch_sizes": [1, 8]},
    )
    protocol = {"confidence": confidence}
    bench = {"technique": name, "status": status, "protocol": protocol, **timing.to_dict()}
    by_slice = {k: comparison(*v, confidence=confidence) for k, v in slices.items()}
    return {
        "name": name,
        "status": status,
        "confounders": list(confounders),
        "validation": {
            "overall": comparison(*overall, confidence=confidence),
            "slices": by_slice,
            "worst_slice": max(by_slice, key=lambda k: by_slice[k]["drop_points"], default=None),
            "fidelity": {"max_abs_error": 0.01, "cosine": 0.999, "sqnr_db": 40.0},
        },
        "benchmark": bench,
        "rules": [],
    }
