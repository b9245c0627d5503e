"""batching: a dynamic batcher in front of the same model. No weight changes: what changes is how
requests meet the model (measured under load by the benchmark's server and offline scenarios)."""

from __future__ import annotations

import math
import shutil
import statistics
from typing import Any

import numpy as np
import onnx

from stages.errors import BatchInvarianceError
from stages.evidence import server_rules
from stages.measure import serving
from stages.techniques.base import Context, NotApplicable
from stages.techniques.options.batching import Options

DECLARES = ("session.max_batch_size", "session.max_queue_delay_ms")  # how it is served
CHECK = (
    "the latency tail and queue delay at rates below, near and above the baseline's saturation "
    "point, the throughput gained, and batch invariance"
)
INVARIANCE_BOUND = 1e-4  # max abs logit difference, batched against one request per call


def _free_batch(value: onnx.ValueInfoProto) -> bool:
    """The input's first axis takes any batch size: a symbolic name, or a size written as unknown
    (-1 or 0, as some exporters do); not a positive size, and not a scalar."""
    dims = value.type.tensor_type.shape.dim
    return bool(dims) and not (dims[0].HasField("dim_value") and dims[0].dim_value > 0)


def apply(ctx: Context) -> dict[str, Any]:
    """The candidate is the baseline file itself; check its batch axis and batch invariance."""
    import onnxruntime as ort

    graph = onnx.load(str(ctx.baseline), load_external_data=False).graph
    fixed = [i.name for i in graph.input if not _free_batch(i)]
    if fixed:
        raise NotApplicable(
            f"batching needs a dynamic batch axis (a first dimension that is symbolic, or written "
            f"-1/0 as unknown) on every input; {', '.join(fixed)} of {ctx.baseline} has a fixed "
            "one: re-export the model with a dynamic batch axis, or drop batching from the "
            "techniques"
        )
    shutil.copyfile(ctx.baseline, ctx.model_out)
    o: Options = ctx.options
    sess = ort.InferenceSession(str(ctx.model_out), providers=["CPUExecutionProvider"])
    rows = ctx.data.feeds("validation")
    n = min(len(next(iter(rows.values()))), 64 * o.max_batch_size)
    singles = [{k: v[i : i + 1] for k, v in rows.items()} for i in range(n)]
    trim = ctx.preset.trim if ctx.preset is not None else None
    if trim:
        singles = [trim(f) for f in singles]
    alone = np.concatenate([sess.run(None, f)[0] for f in singles])
    batched = np.concatenate(
        [
            sess.run(None, serving.collate(singles[i : i + o.max_batch_size]))[0]
            for i in range(0, n, o.max_batch_size)
        ]
    )
    err = float(np.abs(alone - batched).max())
    if err > INVARIANCE_BOUND:
        raise BatchInvarianceError(
            f"batch invariance fails: batched outputs differ from one-at-a-time outputs by "
            f"{err:.3g} (bound {INVARIANCE_BOUND:g}) on {n} validation rows"
        )
    return {
        "max_batch_size": o.max_batch_size,
        "max_queue_delay_ms": o.max_queue_delay_ms,
        "batch_invariance": {"rows": n, "max_abs_error": err, "bound": INVARIANCE_BOUND},
        "same_argmax": bool((alone.argmax(1) == batched.argmax(1)).all()),
    }


def _qps(x: float | None) -> str:
    return "none met the bound" if x is None else f"{x:.0f} req/s"


def _bound(x: float) -> str:
    return "unbounded" if math.isinf(x) else f"{x:.2f}"


def saturation_line(server: dict[str, Any]) -> str:
    """The saturation points: per replicate for both sides and the ratio's interval over them
    (the serving rule's own interval); evidence from before replicates, as one run per rate."""
    head = (
        f"- Saturation point (highest rate with p99 <= {server['latency_bound_ms']:.2f} ms "
        "and nothing dropped)"
    )
    sweeps = server.get("sweeps")
    if not sweeps:
        sat = server["saturation"]
        b_sat, c_sat = sat["baseline"]["saturation_qps"], sat["candidate"]["saturation_qps"]
        return (
            f"{head}: baseline {_qps(b_sat)}, batched {_qps(c_sat)}"
            + (f" ({c_sat / b_sat:.2f}x)" if b_sat and c_sat else "")
            + ". One run per rate: these figures carry no interval."
        )
    n, conf = len(sweeps), server.get("confidence", 0.95)
    per = {
        side: " / ".join(
            "none" if w[side]["saturation_qps"] is None else f"{w[side]['saturation_qps']:.0f}"
            for w in sweeps
        )
        for side in server_rules.SIDES
    }
    brackets = [server_rules.bracket(w) for w in sweeps]
    low, high = server_rules.interval([r.low for r in brackets], [r.high for r in brackets], conf)
    points = [r.point for r in brackets if r.point is not None]
    est = f"{statistics.median(points):.2f}x" if points else "n/a"
    cover = server_rules.coverage(n, server_rules.rank(n, conf))
    line = (
        f"{head}, over {n} replicate{'s' if n != 1 else ''} on fresh arrival seeds: baseline "
        f"{per['baseline']} req/s, batched {per['candidate']} req/s; ratio {est} "
        f"[{_bound(low)}, {_bound(high)}], an interval holding the median replicate's ratio with "
        f"{cover:.0%} coverage (from each replicate's sweep bracket)."
    )
    if any(w[side]["saturation_qps"] is None for w in sweeps for side in server_rules.SIDES):
        line += ' "none": that replicate\'s sweep met the bound at no rate.'
    if n < server_rules.MIN_REPLICATES:
        line += (
            f" Fewer than {server_rules.MIN_REPLICATES} replicates decide nothing: raise "
            f"{server_rules.REPLICATES_KEY}."
        )
    return line


def report(c: dict[str, Any]) -> list[str]:
    """Tail, queue delay and throughput per rate and replicate, saturation points, and batch
    invariance."""
    d, server = c["manifest"]["details"], c["benchmark"].get("server")
    inv = d["batch_invariance"]
    lines = [
        f"- Batch invariance: over {inv['rows']} validation rows, batched logits differ from "
        f"one-request-per-call logits by at most {inv['max_abs_error']:.3g} "
        f"(bound {inv['bound']:g}); "
        f"same predictions: {'yes' if d['same_argmax'] else 'NO'}.",
    ]
    if not server:
        return [*lines, "- The server scenario did not run: no load figures."]
    lines += [
        saturation_line(server),
        "",
        "| rate (x capacity) | replicate | req/s | side | p50 / p99 latency (ms) "
        "| p99 queue delay (ms) | p50 service (ms) | mean batch | throughput (req/s) "
        "| missed bound |",
        "|---:|---:|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    # by rate, then replicate: a rate's replicates side by side (evidence before replicates: 0)
    rows = sorted(server["rates"], key=lambda r: (r["factor"], r.get("replicate", 0)))
    for row in rows:
        rate = f"| {row['factor']:g} | {row.get('replicate', 0)} | {row['rate_qps']:.0f}"
        for side in ("baseline", "candidate"):
            s = row[side]
            if not s["served"]:
                lines.append(f"{rate} | {side} | nothing served | | | | | {s['missed_bound']} |")
                continue
            lines.append(
                f"{rate} | {side} "
                f"| {s['latency_p50_ms']:.3f} / {s['latency_p99_ms']:.3f} "
                f"| {s['queue_delay_p99_ms']:.3f} | {s['service_p50_ms']:.3f} "
                f"| {s['mean_batch_size']:.2f} | {s['throughput_qps']:.0f} "
                f"| {s['missed_bound']} of {s['requests']} |"
            )
    off = server.get("offline")
    if off:
        lines.append(
            "- Offline (all requests at once): baseline "
            f"{off['baseline']['throughput_qps']:.0f} req/s, "
            f"batched {off['candidate']['throughput_qps']:.0f} req/s."
        )
    return lines
