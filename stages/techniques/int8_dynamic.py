"""int8_dynamic: weights to INT8 offline with ONNX Runtime's quantizer; activations are
quantized per call at run time."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from stages.techniques.base import GRAPH_REWRITE, Context
from stages.techniques.graph_prep import prepare
from stages.techniques.options.int8 import DynamicOptions
from stages.techniques.ort_quantizer import QUANT_OPSET, preprocess, quant_type, quantized_ops

DECLARES = GRAPH_REWRITE
CHECK = "accuracy drop on real validation cases, overall and per slice"


def apply(ctx: Context) -> dict[str, Any]:
    """Weights to INT8 offline; activations are quantized per call at run time."""
    from onnxruntime.quantization import quantize_dynamic

    o: DynamicOptions = ctx.options
    with tempfile.TemporaryDirectory() as tmp:
        source, prep = prepare(ctx, Path(tmp), QUANT_OPSET, "ONNX Runtime's quantizer")
        pre = preprocess(source, Path(tmp))
        quantize_dynamic(
            pre,
            ctx.model_out,
            per_channel=o.per_channel,
            reduce_range=o.reduce_range,
            weight_type=quant_type(o.weight_type),
            op_types_to_quantize=o.op_types or None,
        )
    return {"quantized": quantized_ops(ctx.model_out), **prep}
