"""Graph-level fusion only: ONNX Runtime's offline graph optimization, or Conv+BatchNormalization
folding in the ONNX graph. The weights' values and the inputs/outputs are not otherwise touched."""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stages.errors import FusionError, one_of, require
from stages.runtime import open_session, run_rows
from stages.stats import max_abs_error
from stages.techniques.base import GRAPH_EDIT, Context, NotApplicable, check_io
from stages.techniques.graph_prep import prepare

METHODS = ("ort_offline", "fold_batchnorm")
LEVELS = ("basic", "extended", "all")

# Fusion changes which ops there are and, when it folds or re-lays-out weights, the initializers;
# never the inputs/outputs or the opset.
DECLARES = GRAPH_EDIT
CHECK = (
    "whether the engine supports the fused graph: it loads and runs on the target's execution "
    "provider, op counts before / after, outputs within the stated bound of the baseline's"
)
VERIFY_PROVIDER = "CPUExecutionProvider"  # where apply() optimizes and checks the fused graph
NO_PAIR = "no Conv+BatchNormalization pair to fold in this model"
VERIFY_ROWS = 512  # validation rows compared, baseline against the fused graph


@dataclass
class Options:
    method: str = "ort_offline"
    level: str = "extended"  # ort_offline only
    tolerance: float = 1e-4  # max abs output difference vs the baseline on the validation rows

    def __post_init__(self) -> None:
        one_of("method", self.method, METHODS)
        one_of("level", self.level, LEVELS)
        require(self.tolerance > 0, "tolerance", self.tolerance, "> 0 (a max abs difference)")


def apply(ctx: Context) -> dict[str, Any]:
    """Write the fused graph, then check that it loads, runs and matches the baseline."""
    o: Options = ctx.options
    before = _op_counts(ctx.baseline)
    if o.method == "ort_offline":
        details: dict[str, Any] = {"method": o.method, "level": o.level}
        details |= _ort_offline(ctx.baseline, ctx.model_out, o.level)
    else:
        with tempfile.TemporaryDirectory() as tmp:  # weights in Constant nodes: initializers
            source, prep = prepare(ctx, Path(tmp))
            details = {"method": o.method, **_fold_batchnorm(source, ctx.model_out), **prep}
    check_io(ctx.baseline, ctx.model_out, "fusion", FusionError)
    after = _op_counts(ctx.model_out)
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
        f"{_ci(b1['speedup']['p50'])}, **{b1['effect']}** (noise floor {b1['noise_floor']:.1%})",
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

    levels = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    so = ort.SessionOptions()
    so.graph_optimization_level = levels[level]
    so.optimized_model_filepath = str(out)
    so.log_severity_level = 3  # level `all` warns that the file is hardware-specific; we record it
    ort.InferenceSession(str(baseline), so, providers=[VERIFY_PROVIDER])
    return {"optimized_for": VERIFY_PROVIDER, "onnxruntime": ort.__version__}


# --- fold_batchnorm -----------------------------------------------------------------------------


def _fold_batchnorm(baseline: Path, out: Path) -> dict[str, Any]:
    """Fold each BatchNormalization that directly follows a Conv into that Conv's weight and bias:
    w' = w * s, b' = (b - mean) * s + beta, with s = gamma / sqrt(var + eps), in float64."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(baseline))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    graph_inputs = {v.name for v in g.input}  # an initializer listed as input can be overridden
    graph_outputs = {v.name for v in g.output}
    producer = {o: n for n in g.node for o in n.output}
    uses = Counter(_used_names(g))

    def const(name: str) -> np.ndarray | None:
        if name in inits and name not in graph_inputs:
            return numpy_helper.to_array(inits[name])
        return None

    bns = [n for n in g.node if n.op_type == "BatchNormalization" and n.domain in ("", "ai.onnx")]
    folded: list[Any] = []
    for bn in bns:
        conv = producer.get(bn.input[0])
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in bn.attribute}
        if (
            conv is None
            or conv.op_type != "Conv"
            or conv.domain not in ("", "ai.onnx")
            or uses[bn.input[0]] != 1
            or bn.input[0] in graph_outputs
            or attrs.get("training_mode", 0)
            or attrs.get("spatial", 1) != 1
            or len([o for o in bn.output if o]) != 1
        ):
            continue
        w = const(conv.input[1])
        has_bias = len(conv.input) > 2 and conv.input[2] != ""
        b = const(conv.input[2]) if has_bias else None
        params = [const(x) for x in bn.input[1:5]]
        if (
            w is None
            or w.dtype.kind != "f"
            or (has_bias and b is None)
            or any(p is None for p in params)
        ):
            continue
        gamma, beta, mean, var = (np.asarray(p, np.float64) for p in params)
        scale = gamma / np.sqrt(var + float(attrs.get("epsilon", 1e-5)))
        bias = np.zeros(w.shape[0]) if b is None else np.asarray(b, np.float64)
        w2 = (w.astype(np.float64) * scale.reshape(-1, *[1] * (w.ndim - 1))).astype(w.dtype)
        b2 = ((bias - mean) * scale + beta).astype(w.dtype)
        w_name, b_name = _fresh(g, f"{conv.input[1]}_bnfold"), _fresh(g, f"{conv.name}_bnfold_bias")
        g.initializer.extend(
            [numpy_helper.from_array(w2, w_name), numpy_helper.from_array(b2, b_name)]
        )
        inits[w_name], inits[b_name] = g.initializer[-2], g.initializer[-1]
        old_out = conv.output[0]
        del conv.input[1:]
        conv.input.extend([w_name, b_name])
        conv.output[0] = bn.output[0]
        folded.append(bn)
        _drop_value_info(g, old_out)
    if not folded:
        if bns:
            raise NotApplicable(
                f"{NO_PAIR}: {len(bns)} BatchNormalization node(s), none directly after a Conv "
                "with constant weights and no other consumer"
            )
        raise NotApplicable(NO_PAIR)
    for bn in folded:
        g.node.remove(bn)
    used = set(_used_names(g)) | graph_inputs
    dropped = [i for i in g.initializer if i.name not in used]
    for i in dropped:
        g.initializer.remove(i)
    onnx.save(model, str(out))
    return {"pairs_folded": len(folded), "batchnorm_left": len(bns) - len(folded)}


def _used_names(g: Any) -> list[str]:
    """Every tensor name a node reads, subgraphs (If / Loop bodies) included."""
    import onnx

    names = []
    for n in g.node:
        names += [i for i in n.input if i]
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                names += _used_names(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for sub in a.graphs:
                    names += _used_names(sub)
    return names


def _fresh(g: Any, stem: str) -> str:
    taken = {i.name for i in g.initializer} | {v.name for v in g.input}
    taken |= {o for n in g.node for o in n.output}
    name, k = stem, 0
    while name in taken:
        k += 1
        name = f"{stem}_{k}"
    return name


def _drop_value_info(g: Any, name: str) -> None:
    for v in [v for v in g.value_info if v.name == name]:
        g.value_info.remove(v)


# --- checks -------------------------------------------------------------------------------------


def _op_counts(path: Path) -> dict[str, int]:
    """Op counts, with ops outside the default ONNX domain named `domain:op`."""
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    ops = Counter(
        n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}:{n.op_type}" for n in g.node
    )
    return dict(sorted(ops.items()))


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


def _ci(x: dict[str, float]) -> str:
    return f"{x['estimate']:.3f} [{x['low']:.3f}, {x['high']:.3f}]"
