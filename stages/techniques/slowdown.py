"""A known regression, on purpose: the baseline plus a costly no-op, to check the re-benchmark gate.

Not an optimization and never in the default list. With `matmuls: 0` the candidate is the
baseline's own graph (the A/A case); with `matmuls: k` it adds a chain of k `size` x `size`
float32 MatMuls whose result is multiplied by zero and added to the first output. The chain
reads every model input (cast to float and summed), so ONNX Runtime cannot fold it away, and
adding 0.0 leaves every output value as it was: the candidate is slower by the chain's cost and
otherwise the baseline. Commit its evidence at `matmuls: 0`, set `matmuls` so the slowdown is the
size you want to catch, and `make rebenchmark` must flag it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stages.evidence.formats import ci
from stages.techniques import identity
from stages.techniques.base import GRAPH_EDIT, Context, check_io

DECLARES: tuple[str, ...] = GRAPH_EDIT  # added nodes and one constant; inputs and outputs kept

CHECK = "that the re-benchmark gate flags the known slowdown and nothing else changed"

PREFIX = "slowdown_"  # names of the added nodes, values and initializer


def apply(ctx: Context) -> dict[str, Any]:
    """Add the chain to the baseline's graph (or copy the graph as it is when matmuls is 0)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    o = ctx.options
    if not o.matmuls:  # the A/A case: the baseline's own file, byte for byte
        return {
            **identity.apply(ctx),
            "matmuls": 0,
            "size": o.size,
            "added_nodes": 0,
            "added_flops_per_call": 0,
        }
    model = onnx.load(str(ctx.baseline))
    g = model.graph
    out = g.output[0]
    if out.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise ValueError(
            f"slowdown adds its no-op to the first output, {out.name!r}, which is not float32; "
            "use a model whose first output is float32"
        )
    n = PREFIX
    first = out.name
    for node in g.node:  # the node that wrote the output now writes the chain's other addend
        node.output[:] = [n + "logits" if name == first else name for name in node.output]
    w = np.full((o.size, o.size), 1.0 / o.size, dtype=np.float32)  # powers of w stay bounded
    g.initializer.extend(
        [
            numpy_helper.from_array(w, n + "w"),
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), n + "zero"),
        ]
    )
    weights = {t.name for t in g.initializer}
    added, sums = [], []
    for i, inp in enumerate(x for x in g.input if x.name not in weights):
        added += [
            helper.make_node("Cast", [inp.name], [f"{n}cast{i}"], to=TensorProto.FLOAT),
            helper.make_node("ReduceSum", [f"{n}cast{i}"], [f"{n}sum{i}"], keepdims=0),
        ]
        sums.append(f"{n}sum{i}")
    added += [
        helper.make_node("Sum", sums, [n + "inputs"]),
        helper.make_node("Mul", [n + "inputs", n + "zero"], [n + "nothing"]),
        helper.make_node("Add", [n + "w", n + "nothing"], [n + "m0"]),  # reads the inputs
        *(
            helper.make_node("MatMul", [f"{n}m{i}", n + "w"], [f"{n}m{i + 1}"])
            for i in range(o.matmuls)
        ),
        helper.make_node("ReduceSum", [f"{n}m{o.matmuls}"], [n + "total"], keepdims=0),
        helper.make_node("Mul", [n + "total", n + "zero"], [n + "zero_out"]),
        helper.make_node("Add", [n + "logits", n + "zero_out"], [first]),
    ]
    g.node.extend(added)
    onnx.checker.check_model(model)
    onnx.save(model, str(ctx.model_out))
    check_io(ctx.baseline, ctx.model_out, "slowdown", ValueError)
    return {
        "matmuls": o.matmuls,
        "size": o.size,
        "added_nodes": len(added),
        "added_flops_per_call": 2 * o.matmuls * o.size**3,
    }


def report(c: dict[str, Any]) -> list[str]:
    """What the known slowdown measured."""
    d = c["manifest"]["details"]
    b1 = c["benchmark"]["batches"][0]
    sp = b1["speedup"]["p50"]
    return [
        f"- A deliberate regression: {d['matmuls']} no-op MatMul(s) of {d['size']} x "
        f"{d['size']} ({d['added_flops_per_call']:,} flops a call) added to the baseline. "
        f"p50 speedup at batch 1 {ci(sp)} "
        f"reads **{b1['effect']}**; the re-benchmark gate must flag it against evidence "
        "committed at `matmuls: 0`.",
    ]
