"""Conv+BatchNormalization folding in an ONNX graph, for fuse's fold_batchnorm method."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from stages.onnx_graph import names_read
from stages.techniques.base import NotApplicable

NO_PAIR = "no Conv+BatchNormalization pair to fold in this model"


def fold_batchnorm(baseline: Path, out: Path) -> dict[str, Any]:
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
    uses = Counter(names_read(g))

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
    used = set(names_read(g)) | graph_inputs
    dropped = [i for i in g.initializer if i.name not in used]
    for i in dropped:
        g.initializer.remove(i)
    onnx.save(model, str(out))
    return {"pairs_folded": len(folded), "batchnorm_left": len(bns) - len(folded)}


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
