"""Arithmetic of one call, counted from the ONNX graph: the numerator of achieved GFLOP/s."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

CONV = {"Conv", "ConvInteger", "QLinearConv"}
MATMUL = {"MatMul", "MatMulInteger", "QLinearMatMul"}
GEMM = {"Gemm", "QGemm"}
INTEGER = {"ConvInteger", "QLinearConv", "MatMulInteger", "QLinearMatMul", "QGemm"}


def count(path: Path, input_shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """Multiply-adds x 2 of the Conv / MatMul / Gemm nodes for inputs of these shapes.

    An op counts as integer when it is an integer kernel, or when its weight comes through a
    DequantizeLinear (a QDQ pair ONNX Runtime runs as one int8 kernel).
    """
    model = onnx.load(str(path))
    named: dict[str, int] = {}  # symbolic dim -> its size here, for dims inference leaves named
    for inp in model.graph.input:
        if inp.name in input_shapes:
            dims = inp.type.tensor_type.shape.dim
            for d, size in zip(dims, input_shapes[inp.name], strict=True):
                if d.dim_param:
                    named[d.dim_param] = size
                d.ClearField("dim_param")
                d.dim_value = size
    model = shape_inference.infer_shapes(model, data_prop=True)
    g = model.graph
    shapes: dict[str, tuple[int, ...]] = {}
    for v in [*g.input, *g.value_info, *g.output]:
        dims = v.type.tensor_type.shape.dim
        sizes = [d.dim_value if d.HasField("dim_value") else named.get(d.dim_param) for d in dims]
        if dims and all(s is not None for s in sizes):
            shapes[v.name] = tuple(int(s) for s in sizes if s is not None)
    for init in g.initializer:
        shapes[init.name] = tuple(numpy_helper.to_array(init).shape)
    producer = {out: n for n in g.node for out in n.output}
    total = integer = 0
    unknown = []
    for n in g.node:
        if n.op_type not in CONV | MATMUL | GEMM:
            continue
        flops = _flops(n, shapes, producer)
        if flops is None:
            unknown.append(n.name or n.op_type)
            continue
        total += flops
        weight = (
            n.input[3] if n.op_type in ("QLinearConv", "QLinearMatMul", "QGemm") else n.input[1]
        )
        src = producer.get(weight)
        if n.op_type in INTEGER or (src is not None and src.op_type == "DequantizeLinear"):
            integer += flops
    return {
        "flops": int(total),
        "integer_share": integer / total if total else 0.0,
        "uncounted_nodes": unknown,  # shapes shape inference could not resolve
    }


def _flops(
    n: onnx.NodeProto, shapes: dict[str, tuple[int, ...]], producer: dict[str, Any]
) -> int | None:
    y = shapes.get(n.output[0])
    if y is None:
        return None
    if n.op_type in CONV:
        w = shapes.get(n.input[3] if n.op_type == "QLinearConv" else n.input[1])
        return None if w is None else 2 * int(np.prod(y)) * int(np.prod(w[1:]))
    a = shapes.get(n.input[0])
    if a is None:
        return None
    if n.op_type in GEMM:
        trans_a = next((at.i for at in n.attribute if at.name == "transA"), 0)
        k = a[0] if trans_a else a[-1]
    else:
        k = a[-1]
    return 2 * int(np.prod(y)) * int(k)
