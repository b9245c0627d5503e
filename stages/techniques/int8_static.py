"""int8_static: weights and activations to INT8 with ONNX Runtime's quantizer, activation ranges
calibrated on the calibration split; optionally the nodes most sensitive to it kept in float
(int8_fallback), and the spread of accuracy over other calibration subsets reported."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from stages.errors import ParamsError
from stages.techniques.base import GRAPH_REWRITE, Context
from stages.techniques.graph_prep import prepare
from stages.techniques.int8_fallback import float_fallback, predict, tuning_rows
from stages.techniques.options.int8 import StaticOptions
from stages.techniques.ort_quantizer import (
    PER_AXIS_OPSET,
    QUANT_OPSET,
    Reader,
    preprocess,
    quant_type,
    quantized_ops,
)

DECLARES = GRAPH_REWRITE
CHECK = "accuracy drop on real validation cases, overall and per slice, and calibration sensitivity"


def apply(ctx: Context) -> dict[str, Any]:
    """Weights and activations to INT8, activation ranges calibrated on the calibration split;
    with `fallback`, the nodes most sensitive to it stay float until the tuning rows agree."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    o: StaticOptions = ctx.options
    feeds = ctx.data.feeds("calibration")
    available = len(next(iter(feeds.values())))
    if o.calibration_size > available:
        raise ParamsError(
            f"technique.int8_static.calibration_size = {o.calibration_size} but the calibration "
            f"split has {available} rows; lower it or enlarge the model's calibration split"
        )
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }

    def quantize(
        pre: Path,
        rows: dict[str, np.ndarray],
        out: Path,
        exclude: list[str],
        ranges: Path | None = None,
    ) -> None:
        quantize_static(
            pre,
            out,
            Reader(rows, batch=32, trim=ctx.preset.trim if ctx.preset is not None else None),
            quant_format=QuantFormat.QDQ if o.format == "qdq" else QuantFormat.QOperator,
            per_channel=o.per_channel,
            activation_type=quant_type(o.activation_type),
            weight_type=quant_type(o.weight_type),
            calibrate_method=methods[o.calibration],
            op_types_to_quantize=o.op_types or None,
            nodes_to_exclude=exclude,
            calibration_cache_path=ranges,  # calibrated on the first call, reused after
        )

    rng = np.random.default_rng(ctx.seed)
    half = max(1, o.calibration_size // 2)
    calibration = {k: v[: o.calibration_size] for k, v in feeds.items()}
    with tempfile.TemporaryDirectory() as tmp:
        source, prep = prepare(ctx, Path(tmp), *_static_opset(o))
        pre = preprocess(source, Path(tmp))
        ranges = Path(tmp) / "ranges.json"

        def variant(exclude: list[str], out: Path) -> None:
            quantize(pre, calibration, out, exclude, ranges)

        # the rows the search judges and the sensitivity report measures on (never validation)
        no_rows: tuple[dict[str, np.ndarray], np.ndarray, dict[str, int]] = ({}, np.empty(0), {})
        rows = tuning_rows(ctx) if o.fallback or o.sensitivity_subsets else no_rows
        fallback = float_fallback(ctx, pre, variant, Path(tmp), rows) if o.fallback else None
        excluded = fallback["kept_float"] if fallback else []
        variant(excluded, ctx.model_out)
        tuning, labels, _ = rows  # the sensitivity below is reported only
        accuracies = []
        for i in tqdm(range(o.sensitivity_subsets), desc="calibration sensitivity", unit="subset"):
            pick = np.sort(rng.choice(available, size=half, replace=False))
            out = Path(tmp) / f"subset{i}.onnx"
            quantize(pre, {k: v[pick] for k, v in feeds.items()}, out, excluded)
            accuracies.append(float((predict(out, tuning, ctx) == labels).mean()))
        candidate = (
            float((predict(ctx.model_out, tuning, ctx) == labels).mean()) if accuracies else None
        )
    sensitivity = {
        "subsets": o.sensitivity_subsets,
        "rows_each": half,
        "accuracy_on": "the tuning rows (calibration split and train sample; not validation)",
        "accuracies": accuracies,
        "candidate_accuracy": candidate,
        "spread_points": 100 * (max(accuracies) - min(accuracies)) if accuracies else 0.0,
    }
    return {
        "quantized": quantized_ops(ctx.model_out),
        "calibration_rows": o.calibration_size,
        "fallback": fallback,
        "calibration_sensitivity": sensitivity,
        **prep,
    }


def _static_opset(o: StaticOptions) -> tuple[int, str, str]:
    """The opset these options need, what needs it, and the other way out (for the reason)."""
    if o.format == "qdq" and o.per_channel:
        how = "; or set technique.int8_static.per_channel: false (or format: qoperator)"
        return PER_AXIS_OPSET, "per-channel QDQ quantization (DequantizeLinear's axis)", how
    return QUANT_OPSET, "ONNX Runtime's quantizer", ""


def report(c: dict[str, Any]) -> list[str]:
    """The float-fallback and calibration-sensitivity lines of the review note."""
    d = c["manifest"]["details"]
    return [*_report_fallback(d.get("fallback")), *_report_sensitivity(d)]


def _report_fallback(f: dict[str, Any] | None) -> list[str]:
    if not f:
        return ["- float fallback: off (every quantizable node quantized)"]
    rows = f["tuning_rows"]
    where = (
        f"{rows['calibration'] + rows['train']} tuning rows (the calibration split and "
        f"{rows['train']} seeded train rows; no validation row)"
    )
    kept = f["kept_float"]
    lines = [
        f"- float fallback: {len(kept)} node(s) kept in float"
        + (f" ({', '.join(f'`{n}`' for n in kept)})" if kept else "")
        + f"; accuracy drop against the float model on {where}: {f['drop_points']:.2f} points, "
        f"tolerance {f['max_drop_points']:.2f}"
    ]
    if not f["reached"]:
        lines.append(
            f"- float fallback: NO fallback list reached the tolerance of "
            f"{f['max_drop_points']:.2f} points within the cap of {f['max_excluded']} nodes; "
            f"the candidate keeps the list with the lowest tuning drop"
        )
    if f["ranking"]:
        top = ", ".join(f"`{n}` {s:.1f} dB" for n, s in f["ranking"][:5])
        lines.append(
            f"- most sensitive of {f['quantized_nodes']} quantized nodes "
            f"(noise added, dB re signal): {top}"
        )
    lines += [
        "",
        "| step | kept in float | nodes in float | tuning accuracy drop (points) |",
        "|---:|---|---:|---:|",
    ]
    lines += [
        f"| {i} | {s.get('step', '')} | {s['excluded']} | {s['drop_points']:+.2f} |"
        for i, s in enumerate(f["steps"])
    ]
    return [*lines, ""]


def _report_sensitivity(d: dict[str, Any]) -> list[str]:
    s = d.get("calibration_sensitivity")
    if not s or not s["accuracies"]:
        return ["- calibration sensitivity: not measured (sensitivity_subsets = 0)"]
    accs = ", ".join(f"{a:.2%}" for a in s["accuracies"])
    return [
        f"- calibration sensitivity: tuning-row accuracy with {s['subsets']} other calibration "
        f"subsets of {s['rows_each']} rows: {accs}; spread {s['spread_points']:.2f} points "
        f"(the candidate, calibrated on all rows: {s['candidate_accuracy']:.2%})"
    ]
