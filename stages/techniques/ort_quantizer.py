"""What both INT8 techniques take from ONNX Runtime's quantizer: the opsets it needs, its
pre-pass, its type names, the reader that feeds it calibration rows, and the quantized ops
written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from stages.onnx_graph import op_counts

QUANT_OPSET = 10  # QuantizeLinear / DequantizeLinear; ONNX Runtime's quantizer needs at least this
PER_AXIS_OPSET = 13  # DequantizeLinear's `axis`, which per-channel QDQ writes


class Reader:
    """Feeds calibration rows to ORT in order: in fixed-size batches, or, for a preset that cuts
    rows to their natural shape (`trim`, e.g. text), each row alone at that shape. Padded rows
    would calibrate on what serving never computes: MiniLM's attention mask adds -3.4e38 at
    padded positions, and a range that holds it rounds every attention score to zero (all-op
    QDQ lost 16 accuracy points calibrated on padded batches, 3.5 calibrated on rows alone)."""

    def __init__(
        self,
        rows: dict[str, np.ndarray],
        batch: int,
        trim: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None,
    ) -> None:
        n = len(next(iter(rows.values())))
        if trim is not None:
            batches = [trim({k: v[i : i + 1] for k, v in rows.items()}) for i in range(n)]
        else:
            batches = [{k: v[i : i + batch] for k, v in rows.items()} for i in range(0, n, batch)]
        self._batches = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def preprocess(model: Path, tmp: Path) -> Path:
    """ORT's recommended pre-pass: shape inference and graph cleanup before quantizing."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = tmp / "preprocessed.onnx"
    quant_pre_process(str(model), str(out), skip_symbolic_shape=True)
    return out


def quant_type(name: str) -> Any:
    from onnxruntime.quantization import QuantType

    return QuantType.QInt8 if name == "qint8" else QuantType.QUInt8


def quantized_ops(path: Path) -> dict[str, int]:
    """Counts of the integer / quantize ops in the written candidate."""
    ops = op_counts(onnx.load(str(path), load_external_data=False).graph)
    names = ("Integer", "Quantize", "Dequantize")  # plus Q-prefixed ops: QLinearConv, QGemm ...
    return {
        op: c for op, c in sorted(ops.items()) if op.startswith("Q") or any(s in op for s in names)
    }
