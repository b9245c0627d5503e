"""ONNX graph helpers shared by the stages and the techniques: optimization levels, the graph ONNX
Runtime optimizes and saves, a one-node model to try a provider with, walks over subgraphs, op
counts, a model's files, and what a model is."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

# graph_optimization_level names, as params.yaml spells them, to ONNX Runtime's levels
LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def optimization_level(name: str) -> Any:
    """ONNX Runtime's GraphOptimizationLevel for a level name (disable, basic, extended, all)."""
    import onnxruntime as ort

    return getattr(ort.GraphOptimizationLevel, LEVELS[name])


def save_optimized(path: Path, out: Path, level: str, provider: str) -> None:
    """Write to `out` the graph ONNX Runtime runs for `path` on `provider` at `level`."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = optimization_level(level)
    so.optimized_model_filepath = str(out)
    so.log_severity_level = 3  # level `all` warns that the saved graph is hardware-specific
    ort.InferenceSession(str(path), so, providers=[provider])


def add_model() -> bytes:
    """y = x + x over a float [1, 4]: small enough to build on any provider in milliseconds."""
    from onnx import TensorProto, helper

    def value(name: str) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 4])

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["y"])], "target_check", [value("x")], [value("y")]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by every onnxruntime this project supports
    return bytes(model.SerializeToString())


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The graphs a node holds in its attributes (If / Loop / Scan bodies)."""
    out: list[onnx.GraphProto] = []
    for a in node.attribute:
        out += [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
    return out


def names_read(g: onnx.GraphProto) -> list[str]:
    """Every tensor name a node reads, subgraphs (If / Loop bodies) included."""
    names = []
    for n in g.node:
        names += [i for i in n.input if i]
        for sub in subgraphs(n):
            names += names_read(sub)
    return names


def node_reads(node: onnx.NodeProto) -> list[str]:
    """Tensor names a node reads, including outer-scope names its subgraphs read."""
    names = list(node.input)
    for sub in subgraphs(node):
        inner = {v.name for v in sub.input} | {i.name for i in sub.initializer}
        inner |= {o for n in sub.node for o in n.output}
        names += [x for n in sub.node for x in node_reads(n) if x not in inner]
    return names


def op_counts(g: onnx.GraphProto, domains: bool = False) -> dict[str, int]:
    """Op counts by op type, sorted; with `domains`, ops outside the default ONNX domain are
    named `domain:op`."""
    ops = Counter(
        n.op_type if not domains or n.domain in ("", "ai.onnx") else f"{n.domain}:{n.op_type}"
        for n in g.node
    )
    return dict(sorted(ops.items()))


def model_files(path: Path) -> list[Path]:
    """The ONNX file plus any external-data files it references (they travel together)."""
    model = onnx.load(str(path), load_external_data=False)
    extra = set()
    for init in model.graph.initializer:
        for entry in init.external_data:
            if entry.key == "location":
                extra.add(path.parent / entry.value)
    return [path, *sorted(extra)]


def graph_summary(path: Path) -> dict[str, Any]:
    """What a model is: ops, dtypes, parameter count, inputs and outputs, opset, bytes, hash."""
    model = onnx.load(str(path))
    g = model.graph
    dtypes: Counter[str] = Counter()
    parameters = 0
    for init in g.initializer:
        arr = numpy_helper.to_array(init)
        dtypes[str(arr.dtype)] += 1
        parameters += int(np.prod(arr.shape))
    h = hashlib.sha256()
    for f in model_files(path):
        h.update(f.read_bytes())
    return {
        "op_types": op_counts(g),
        "dtypes": dict(sorted(dtypes.items())),
        "parameters": parameters,
        "nodes": len(g.node),
        "io": {
            "inputs": [_value_info(v) for v in g.input],
            "outputs": [_value_info(v) for v in g.output],
        },
        "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0),
        "sha256": h.hexdigest(),
        "size_bytes": sum(f.stat().st_size for f in model_files(path)),
    }


# Names that say "unknown" rather than tie axes: exporters' spellings, and the `unk__<n>` that
# onnx's shape inference (run by ONNX Runtime's quantizer) gives an axis it cannot name.
_UNKNOWN_NAME = re.compile(r"^(\?|-1|unk|unknown|none|null|dynamic|unk__\d+)$", re.IGNORECASE)


def _dim(d: onnx.TensorShapeProto.Dimension) -> int | str | None:
    """An axis as declared: its symbolic name, its size, or None where the size is unknown
    (exporters write -1, 0 or "?"; ONNX Runtime's optimizer writes nothing; shape inference
    writes unk__0): the same axis compares equal however it is spelt."""
    name = d.dim_param.strip()
    if name:
        return None if _UNKNOWN_NAME.match(name) else name
    return int(d.dim_value) if d.dim_value > 0 else None


def _value_info(v: onnx.ValueInfoProto) -> dict[str, Any]:
    t = v.type.tensor_type
    dims = [_dim(d) for d in t.shape.dim]
    return {"name": v.name, "dtype": onnx.TensorProto.DataType.Name(t.elem_type), "shape": dims}
