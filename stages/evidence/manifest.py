"""Manifests of each side of a comparison, and the one-change check between them."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from stages.runtime import model_files


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
        "op_types": dict(sorted(Counter(n.op_type for n in g.node).items())),
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


def side(graph: dict[str, Any], session: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """One side of a comparison: its graph, the session it ran in, the inputs it saw."""
    return {"graph": graph, "session": session, "inputs": inputs}


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k not in ("op_types", "dtypes", "io"):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def changes(baseline: dict[str, Any], candidate: dict[str, Any]) -> list[str]:
    """Manifest fields whose values differ between the two sides."""
    a, b = flatten(baseline), flatten(candidate)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def confounders(changed: list[str], declared: tuple[str, ...]) -> list[str]:
    """Changed fields the technique did not declare: each one confounds the comparison."""
    return [k for k in changed if not any(k == d or k.startswith(d + ".") for d in declared)]


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
