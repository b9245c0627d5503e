"""INT8 quantization with ONNX Runtime's own tools: dynamic (weights only) and static (calibrated)."""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from stages.runtime import run_rows
from stages.techniques.base import Context

QUANT_TYPES = ("qint8", "quint8")
FORMATS = ("qdq", "qoperator")
CALIBRATIONS = ("minmax", "entropy", "percentile")


def _check_common(o: Any) -> None:
    from stages.params import _one_of, _require

    _one_of("weight_type", o.weight_type, QUANT_TYPES)
    for op in o.op_types:
        _require(isinstance(op, str) and op != "", "op_types", o.op_types, "ONNX op type names")


@dataclass
class DynamicOptions:
    per_channel: bool = True
    reduce_range: bool = False
    weight_type: str = "qint8"
    op_types: list[str] = field(default_factory=list)  # empty = all that ORT supports

    def __post_init__(self) -> None:
        _check_common(self)


@dataclass
class StaticOptions:
    format: str = "qdq"
    calibration: str = "minmax"
    calibration_size: int = 128
    per_channel: bool = True
    activation_type: str = "quint8"
    weight_type: str = "qint8"
    op_types: list[str] = field(default_factory=list)
    sensitivity_subsets: int = 3  # extra calibrations on random halves, for the spread check

    def __post_init__(self) -> None:
        from stages.params import _one_of, _require

        _check_common(self)
        _require(
            self.sensitivity_subsets >= 0, "sensitivity_subsets", self.sensitivity_subsets, ">= 0"
        )
        _one_of("format", self.format, FORMATS)
        _one_of("calibration", self.calibration, CALIBRATIONS)
        _one_of("activation_type", self.activation_type, QUANT_TYPES)
        _require(self.calibration_size >= 1, "calibration_size", self.calibration_size, ">= 1")


def apply_dynamic(ctx: Context) -> dict[str, Any]:
    """Weights to INT8 offline; activations are quantized per call at run time."""
    from onnxruntime.quantization import quantize_dynamic

    o: DynamicOptions = ctx.options
    with tempfile.TemporaryDirectory() as tmp:
        pre = _preprocess(ctx.baseline, Path(tmp))
        quantize_dynamic(
            pre,
            ctx.model_out,
            per_channel=o.per_channel,
            reduce_range=o.reduce_range,
            weight_type=_qtype(o.weight_type),
            op_types_to_quantize=o.op_types or None,
        )
    return {"quantized": _quantized_ops(ctx.model_out)}


def apply_static(ctx: Context) -> dict[str, Any]:
    """Weights and activations to INT8, activation ranges calibrated on the calibration split."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    o: StaticOptions = ctx.options
    feeds = ctx.data.feeds("calibration")
    available = len(next(iter(feeds.values())))
    if o.calibration_size > available:
        from stages.params import ParamsError

        raise ParamsError(
            f"technique.int8_static.calibration_size = {o.calibration_size} but the calibration "
            f"split has {available} rows; lower it or enlarge the model's calibration split"
        )
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }

    def quantize(pre: Path, rows: dict[str, np.ndarray], out: Path) -> None:
        quantize_static(
            pre,
            out,
            _Reader(rows, batch=32),
            quant_format=QuantFormat.QDQ if o.format == "qdq" else QuantFormat.QOperator,
            per_channel=o.per_channel,
            activation_type=_qtype(o.activation_type),
            weight_type=_qtype(o.weight_type),
            calibrate_method=methods[o.calibration],
            op_types_to_quantize=o.op_types or None,
        )

    rng = np.random.default_rng(ctx.seed)
    half = max(1, o.calibration_size // 2)
    with tempfile.TemporaryDirectory() as tmp:
        pre = _preprocess(ctx.baseline, Path(tmp))
        quantize(pre, {k: v[: o.calibration_size] for k, v in feeds.items()}, ctx.model_out)
        accuracies = []
        for i in tqdm(range(o.sensitivity_subsets), desc="calibration sensitivity", unit="subset"):
            pick = np.sort(rng.choice(available, size=half, replace=False))
            out = Path(tmp) / f"subset{i}.onnx"
            quantize(pre, {k: v[pick] for k, v in feeds.items()}, out)
            accuracies.append(_accuracy(out, ctx))
    sensitivity = {
        "subsets": o.sensitivity_subsets,
        "rows_each": half,
        "accuracies": accuracies,
        "candidate_accuracy": _accuracy(ctx.model_out, ctx),
        "spread_points": 100 * (max(accuracies) - min(accuracies)) if accuracies else 0.0,
    }
    return {
        "quantized": _quantized_ops(ctx.model_out),
        "calibration_rows": o.calibration_size,
        "calibration_sensitivity": sensitivity,
    }


def report_static(c: dict[str, Any]) -> list[str]:
    """The calibration-sensitivity lines of the review note."""
    s = c["manifest"]["details"].get("calibration_sensitivity")
    if not s or not s["accuracies"]:
        return ["- calibration sensitivity: not measured (sensitivity_subsets = 0)"]
    accs = ", ".join(f"{a:.2%}" for a in s["accuracies"])
    return [
        f"- calibration sensitivity: validation accuracy with {s['subsets']} other calibration "
        f"subsets of {s['rows_each']} rows: {accs}; spread {s['spread_points']:.2f} points "
        f"(the candidate, calibrated on all rows: {s['candidate_accuracy']:.2%})"
    ]


def _accuracy(model: Path, ctx: Context) -> float:
    """Validation accuracy of a quantized variant (argmax of the first output)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    logits = run_rows(sess, ctx.data.feeds("validation"), ctx.preset)[0]
    return float((logits.argmax(1) == ctx.data.labels("validation")).mean())


class _Reader:
    """Feeds calibration rows to ORT in fixed-size batches, in order."""

    def __init__(self, rows: dict[str, np.ndarray], batch: int) -> None:
        n = len(next(iter(rows.values())))
        self._batches = iter(
            [{k: v[i : i + batch] for k, v in rows.items()} for i in range(0, n, batch)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def _preprocess(model: Path, tmp: Path) -> Path:
    """ORT's recommended pre-pass: shape inference and graph cleanup before quantizing."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = tmp / "preprocessed.onnx"
    quant_pre_process(str(model), str(out), skip_symbolic_shape=True)
    return out


def _qtype(name: str) -> Any:
    from onnxruntime.quantization import QuantType

    return QuantType.QInt8 if name == "qint8" else QuantType.QUInt8


def _quantized_ops(path: Path) -> dict[str, int]:
    """Counts of the integer / quantize ops in the written candidate."""
    import onnx

    ops = Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)
    names = ("Integer", "Quantize", "Dequantize")  # plus Q-prefixed ops: QLinearConv, QGemm ...
    return {
        op: c for op, c in sorted(ops.items()) if op.startswith("Q") or any(s in op for s in names)
    }
