"""Graph-level fusion only: ONNX Runtime's offline graph optimization, or Conv+BatchNormalization
folding in the ONNX graph. The weights' values and the inputs/outputs are not otherwise touched."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from stages.errors import FusionError
from stages.evidence.formats import ci
from stages.onnx_graph import op_counts, save_optimized
from stages.runtime import open_session, run_rows
from stages.stats import max_abs_error
from stages.techniques.base import GRAPH_EDIT, Context, check_io
from stages.techniques.fold_batchnorm import fold_batchnorm
from stages.techniques.graph_prep import prepare
from stages.techniques.options.fuse import Options

# Fusion changes which ops there are and, when it folds or re-lays-out weights, the initializers;
# never the inputs/outputs or the opset.
DECLARES = GRAPH_EDIT
CHECK = (
    "whether the engine supports the fused graph: it loads and runs on the target's execution "
    "provider, op counts before / after, outputs within the stated bound of the baseline's"
)
VERIFY_PROVIDER = "CPUExecutionProvider"  # where apply() optimizes and checks the fused graph
VERIFY_ROWS = 512  # validation rows compared, baseline against the fused graph


def apply(ctx: Context) -> dict[str, Any]:
    """Write the fused graph, then check that it loads, runs and matches the baseline."""
    o: Options = ctx.options
    before = op_counts(onnx.load(str(ctx.baseline), load_external_data=False).graph, True)
    if o.method == "ort_offline":
        details: dict[str, Any] = {"method": o.method, "level": o.level}
        details |= _ort_offline(ctx.baseline, ctx.model_out, o.level)
    else:
        with tempfile.TemporaryDirectory() as tmp:  # weights in Constant nodes: initializers
            source, prep = prepare(ctx, Path(tmp))
            details = {"method": o.method, **fold_batchnorm(source, ctx.model_out), **prep}
    check_io(ctx.baseline, ctx.model_out, "fusion", FusionError)
    after = op_counts(onnx.load(str(ctx.model_out), load_external_data=False).graph, True)
    details.update(
        ops_before=before,
        ops_after=after,
        nodes_before=sum(before.values()),
        nodes_after=sum(after.values()),
        nodes_removed=sum(before.values()) - sum(after.values()),
        custom_domain_ops=sorted(op for op in after if ":" in op),
    )
    if o.method == "ort_offline":
        # NCHWc layouts depend on this CPU's vector width: valid only where they were made.
        details["hardware_specific"] = any(op.startswith("com.microsoft.nchwc:") for op in after)
    rows = {k: v[:VERIFY_ROWS] for k, v in ctx.data.feeds("validation").items()}
    details.update(_verify(ctx.baseline, ctx.model_out, rows, o.tolerance, ctx.preset))
    return details


def report(c: dict[str, Any]) -> list[str]:
    """The check section: support on the target's provider, op counts, bound, speed, load time."""
    d, bench = c["manifest"]["details"], c["benchmark"]
    provider = bench["sessions"]["candidate"]["provider"]
    level = bench.get("session", {}).get("graph_optimization_level", "?")
    b1 = bench["batches"][0]
    load = bench["load_ms"]
    how = f"ort_offline at level {d['level']}" if d["method"] == "ort_offline" else d["method"]
    lines = [
        f"- method: {how}; op counts {_ops(d['ops_before'])} -> {_ops(d['ops_after'])} "
        f"({d['nodes_before']} -> {d['nodes_after']} nodes, {d['nodes_removed']} removed)",
    ]
    if "pairs_folded" in d:
        lines.append(f"- Conv+BatchNormalization pairs folded: {d['pairs_folded']}")
    lines.append(
        f"- engine support: the candidate loaded and ran on the target's {provider} in the "
        f"benchmark; at optimize time it loaded and ran {d['rows']} validation rows on "
        f"{d['verified_on']} as written and re-optimized"
    )
    if d.get("custom_domain_ops"):
        lines.append(
            f"- provider-specific fused ops in the file: {', '.join(d['custom_domain_ops'])}"
            + (
                "; they include NCHWc layouts tied to this CPU's vector width and this "
                "ONNX Runtime version: rebuild the candidate on any other machine"
                if d.get("hardware_specific")
                else ""
            )
        )
    if provider != d["verified_on"]:
        lines.append(
            f"- the graph was optimized for {d['verified_on']} but the target runs {provider}: "
            "check that every fused op has a kernel there (nodes without one fall back to the CPU)"
        )
    within = "within" if d["max_abs_error"] <= d["tolerance"] else "**above**"
    lines += [
        f"- outputs vs the baseline on {d['rows']} validation rows: max abs error "
        f"{d['max_abs_error']:.3g}, {within} the bound {d['tolerance']:g}",
        _expectation(d, level)
        + f"load {load['baseline']:.1f} ms -> {load['candidate']:.1f} ms; p50 speedup at batch 1 "
        f"{ci(b1['speedup']['p50'])}, **{b1['effect']}** "
        f"(noise floor {b1['noise_floor']:.1%})",
    ]
    return lines


def _expectation(d: dict[str, Any], level: str) -> str:
    """What speed to expect, given the online optimizations the target's sessions apply."""
    if level == "disable":
        return (
            "- the target disables ONNX Runtime's online optimizations, so the baseline runs "
            "unfused and the fused candidate may be faster: "
        )
    folds = "; its basic level already folds Conv+BatchNormalization" if "pairs_folded" in d else ""
    return (
        f"- the baseline session already applies ONNX Runtime's online optimizations at "
        f"graph_optimization_level={level}{folds}, so an offline-fused candidate is expected to "
        "differ mainly in session load time, not latency: "
    )


# --- ort_offline --------------------------------------------------------------------------------


def _ort_offline(baseline: Path, out: Path, level: str) -> dict[str, Any]:
    """ONNX Runtime optimizes the graph at session creation and saves what it would run."""
    import onnxruntime as ort

    save_optimized(baseline, out, level, VERIFY_PROVIDER)  # hardware-specific at `all`: recorded
    return {"optimized_for": VERIFY_PROVIDER, "onnxruntime": ort.__version__}


# --- checks -------------------------------------------------------------------------------------


def _verify(
    baseline: Path,
    candidate: Path,
    feeds: dict[str, np.ndarray],
    tolerance: float,
    preset: Any = None,
) -> dict[str, Any]:
    """Run baseline and candidate on the validation rows on the CPU provider; bound the difference.

    The candidate runs as written (optimizations disabled) and re-optimized at level `all` (as a
    target session would load it); the baseline runs as written, the reference for both.
    """
    settings = {
        "provider": VERIFY_PROVIDER,
        "intra_op_threads": 1,
        "inter_op_threads": 1,
        "allow_spinning": False,
        "graph_optimization_level": "disable",
    }
    ref = run_rows(open_session(baseline, settings), feeds, preset)
    errors = {}
    for label, level in (("as_written", "disable"), ("reoptimized_all", "all")):
        try:
            sess = open_session(candidate, {**settings, "graph_optimization_level": level})
            got = run_rows(sess, feeds, preset)
        except Exception as e:  # ORT raises several types for unsupported ops
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise FusionError(
                f"the fused graph does not load or run on {VERIFY_PROVIDER} ({label}): {first}"
            ) from None
        errors[label] = max(_max_abs(r, x) for r, x in zip(ref, got, strict=True))
    worst = max(errors.values())
    rows = len(next(iter(feeds.values())))
    if not worst <= tolerance:
        raise FusionError(
            f"the fused graph's outputs differ from the baseline's by {worst:.3g} (max abs, "
            f"{rows} validation rows), above technique.fuse.tolerance = {tolerance:g}: "
            "the fusion is not exact; do not ship it"
        )
    return {
        "verified_on": VERIFY_PROVIDER,
        "rows": rows,
        "max_abs_error": worst,
        "max_abs_error_by_load": errors,
        "tolerance": tolerance,
    }


def _max_abs(ref: np.ndarray, test: np.ndarray) -> float:
    return max_abs_error(ref, test)


def _ops(ops: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in ops.items()) or "none"
