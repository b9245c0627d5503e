"""FP16: weights and compute to float16 with ONNX Runtime's own converter; inputs and outputs stay
float32 (onnxruntime.transformers.float16.convert_float_to_float16, keep_io_types=True)."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from stages.evidence.formats import ci
from stages.onnx_graph import node_reads, save_optimized
from stages.techniques.base import GRAPH_EDIT, Context, NotApplicable, check_io
from stages.techniques.graph_prep import prepare
from stages.techniques.options.fp16 import Options

# Half precision changes the ops (Cast nodes), the initializers' dtypes and the bytes. It keeps the
# opset and, above all, the inputs and outputs. The parameter count (of the initializers) changes
# only where weights held in Constant nodes become initializers first (details.constants_folded).
DECLARES = GRAPH_EDIT
CHECK = (
    "accuracy drop on real validation cases, overall and per slice, and whether the target runs "
    "float16 natively or pays for casts (Cast nodes, provider kernels, speedup at batch 1)"
)
PROBED_PROVIDER = "CPUExecutionProvider"  # where apply() looks for native float16 kernels

_FP16_MAX = float(np.finfo(np.float16).max)
_FP16_MIN_POSITIVE = 5.96e-08  # the converter's min_positive_val (smallest float16 subnormal)


def apply(ctx: Context) -> dict[str, Any]:
    """Convert the baseline to float16 and probe which ops run natively on the CPU provider."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    o: Options = ctx.options
    with tempfile.TemporaryDirectory() as tmp:
        source, prep = prepare(ctx, Path(tmp))
        base = onnx.load(str(source))
    fp32 = {i.name: i for i in base.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    if not fp32:
        raise NotApplicable(
            "the baseline has no float32 weights (initializers or Constant nodes) to convert to "
            "float16"
        )
    blocked = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(o.op_block_list))
    work = onnx.ModelProto()
    work.CopyFrom(base)  # given a path, the converter writes a temp file beside the baseline
    model = convert_float_to_float16(work, keep_io_types=o.keep_io_types, op_block_list=blocked)
    _toposort(model.graph)  # the converter appends the input Casts last; ONNX wants them first
    onnx.save(model, str(ctx.model_out))
    check_io(ctx.baseline, ctx.model_out, "the float16 converter")

    fp16 = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    return {
        "casts_added": _casts(model) - _casts(base),
        "float16_initializers": len(fp16),
        "float32_initializers_left": sum(
            i.data_type == onnx.TensorProto.FLOAT for i in model.graph.initializer
        ),
        "values_clamped": _clamped(fp32, {i.name for i in fp16}),
        "op_block_list": list(o.op_block_list),  # on top of ORT's default block list
        "kernels": _probe_kernels(ctx.model_out),
        **prep,
    }


def report(c: dict[str, Any]) -> list[str]:
    """The check section: casts, kernels on the target's provider, speed at batch 1, accuracy."""
    d, val = c["manifest"]["details"], c["validation"]
    provider = c["benchmark"]["sessions"]["candidate"]["provider"]
    b1 = c["benchmark"]["batches"][0]
    p50 = b1["speedup"]["p50"]
    f = val["fidelity"]
    worst = max(val["slices"].items(), key=lambda kv: kv[1]["drop_points"], default=None)
    lines = [
        f"- Cast nodes added to the graph: {d['casts_added']} (float32 inputs/outputs and "
        f"blocked ops); float16 initializers: {d['float16_initializers']}, float32 left: "
        f"{d.get('float32_initializers_left', 0)}; weights clamped to the float16 range: "
        f"{d.get('values_clamped', 0)}",
        f"- accuracy drop: {val['overall']['drop_points']:+.2f} points overall, "
        f"{val['overall']['right_to_wrong']} right->wrong"
        + (f"; worst slice {worst[0]} {worst[1]['drop_points']:+.2f} points" if worst else ""),
        f"- output fidelity vs the float32 baseline: max abs error {f['max_abs_error']:.3g}, "
        f"cosine {f['cosine']:.5f}, SQNR {f['sqnr_db']:.1f} dB",
    ]
    k = d.get("kernels", {})
    probed = k.get("provider", PROBED_PROVIDER)
    native, cast = k.get("native_fp16", []), k.get("cast_to_fp32", [])
    if "error" in k:
        lines.append(f"- float16 kernel probe on {probed} failed: {k['error']}")
    elif k:
        casts = f"a net {k['runtime_casts']:+d} Cast nodes at load with optimizations disabled"
        if native:
            lines.append(
                f"- float16 kernels on {probed}: native for {', '.join(native)}; ONNX Runtime "
                f"runs {', '.join(cast) or 'no other op'} in float32 instead ({casts})"
            )
        else:
            lines.append(
                f"- float16 kernels on {probed}: none for this model's ops; ONNX Runtime runs "
                f"{', '.join(cast)} in float32 instead ({casts})"
            )
        if "at_level_all" in k:
            a = k["at_level_all"]
            lines.append(
                f"- at graph_optimization_level=all, the graph {probed} finally runs has "
                f"{a['casts']} Cast node(s) and {a['float16_initializers']} float16 "
                "initializer(s): ONNX Runtime folds the weight casts into float32 weights"
            )
    lines.append(
        f"- speedup at batch 1 on {provider}: p50 {ci(p50)}, "
        f"p95 {ci(b1['speedup']['p95'])}: "
        f"**{b1['effect']}** (noise floor {b1['noise_floor']:.1%})"
    )
    if provider == probed and cast:
        head = (
            f"{provider} has no native float16 kernel for this model's ops"
            if not native
            else f"{provider} lacks float16 kernels for {len(cast)} of "
            f"{len(cast) + len(native)} converted op types"
        )
        if b1["effect"] == "slower":
            lines.append(
                f"- the candidate is slower: {head}, so it pays for casts and computes in float32 "
                "anyway. Float16 pays off where the hardware runs it natively (a GPU with tensor "
                "cores through CUDAExecutionProvider), not on this CPU."
            )
        elif b1["effect"] == "faster":
            lines.append(
                f"- {head}, so the measured gain does not come from float16 arithmetic (the "
                "session computes in float32): find its cause before trusting it."
            )
        else:
            lines.append(
                f"- {head}: it computes in float32, so no speed gain is expected here; the "
                "accuracy change comes from the weights rounded to float16."
            )
    elif provider != probed:
        lines.append(
            f"- the kernel probe ran on {probed} when the candidate was built; the target runs "
            f"{provider}: the speedup above is the evidence of native float16 there."
        )
    return lines


def _toposort(g: Any) -> None:
    """Reorder the nodes so that each comes after the producers of its inputs; among the nodes
    that are ready, the converter's order is kept (Kahn's algorithm by original position)."""
    import heapq

    nodes = list(g.node)
    producer = {o: k for k, n in enumerate(nodes) for o in n.output if o}
    children: list[list[int]] = [[] for _ in nodes]
    waiting = [0] * len(nodes)
    for k, n in enumerate(nodes):
        for p in {producer[i] for i in node_reads(n) if i in producer} - {k}:
            children[p].append(k)
            waiting[k] += 1
    ready = [k for k, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        k = heapq.heappop(ready)
        order.append(k)
        for c in children[k]:
            waiting[c] -= 1
            if waiting[c] == 0:
                heapq.heappush(ready, c)
    if len(order) != len(nodes):
        raise RuntimeError("the float16 graph has a cycle: it cannot be ordered")
    copies = [type(nodes[k])() for k in order]
    for c, k in zip(copies, order, strict=True):
        c.CopyFrom(nodes[k])
    del g.node[:]
    g.node.extend(copies)


def _casts(model: Any) -> int:
    return sum(n.op_type == "Cast" for n in model.graph.node)


def _clamped(fp32: dict[str, Any], converted: set[str]) -> int:
    """Weights the converter clamped: beyond float16's range, or too small and non-zero."""
    from onnx import numpy_helper

    n = 0
    for name in converted & fp32.keys():
        a = np.abs(numpy_helper.to_array(fp32[name]))
        n += int(np.count_nonzero((a > _FP16_MAX) | ((a > 0) & (a < _FP16_MIN_POSITIVE))))
    return n


def _probe_kernels(path: Path) -> dict[str, Any]:
    """Which float16 ops the CPU provider runs natively, and around which it inserts casts.

    ONNX Runtime's InsertCastTransformer wraps every node whose float16 kernel the provider lacks
    in Cast nodes when the session is created, even with optimizations disabled; the graph it then
    runs (saved via optimized_model_filepath) shows which nodes kept float16 inputs.
    """
    import onnx

    try:
        ran = onnx.shape_inference.infer_shapes(_runtime_graph(path, "disable"))
        ran_all = _runtime_graph(path, "all")
        written = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    except Exception as e:  # a provider without any usable kernel, or an uninferable graph
        return {"provider": PROBED_PROVIDER, "error": str(e).strip().splitlines()[0]}
    converted = _float_ops(written)[onnx.TensorProto.FLOAT16]
    ran_ops = _float_ops(ran)
    return {
        "provider": PROBED_PROVIDER,
        "runtime_casts": _casts(ran) - _casts(written),
        "native_fp16": sorted(set(ran_ops[onnx.TensorProto.FLOAT16]) & set(converted)),
        "cast_to_fp32": sorted(set(converted) - set(ran_ops[onnx.TensorProto.FLOAT16])),
        # at level `all` ORT constant-folds the weight casts: what the session finally runs
        "at_level_all": {
            "casts": _casts(ran_all),
            "float16_initializers": sum(
                i.data_type == onnx.TensorProto.FLOAT16 for i in ran_all.graph.initializer
            ),
        },
    }


def _runtime_graph(path: Path, level: str) -> Any:
    """The graph a CPU session runs after its transformers, as saved by ONNX Runtime."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        runtime = Path(tmp) / "runtime.onnx"
        save_optimized(path, runtime, level, PROBED_PROVIDER)
        return onnx.load(str(runtime))


def _float_ops(model: Any) -> dict[int, Counter[str]]:
    """Op types (Cast aside) by the float type of their inputs: FLOAT16 if any input is float16."""
    import onnx

    g = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]} | {
        i.name: i.data_type for i in g.initializer
    }
    out: dict[int, Counter[str]] = {
        onnx.TensorProto.FLOAT16: Counter(),
        onnx.TensorProto.FLOAT: Counter(),
    }
    for n in g.node:
        if n.op_type == "Cast":
            continue
        kinds = {types.get(i) for i in n.input} & set(out)
        if kinds:
            key = (
                onnx.TensorProto.FLOAT16
                if onnx.TensorProto.FLOAT16 in kinds
                else onnx.TensorProto.FLOAT
            )
            out[key][n.op_type] += 1
    return out
