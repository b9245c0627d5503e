"""Graph preparation shared by the graph techniques, for ONNX files from other tools: weights held
in Constant nodes become initializers, and an opset older than a technique needs is raised with
onnx's version converter, then checked against the original's outputs. A model that needs neither
is returned as it is (the same file), so its candidate comes out byte-identical."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx

from stages.runtime import open_session, run_rows
from stages.techniques.base import Context, NotApplicable

T = onnx.TensorProto
FLOATS = (T.FLOAT, T.FLOAT16, T.DOUBLE, T.BFLOAT16)
CHECK_ROWS = 8  # calibration rows run through the original and the upgraded model
CHECK_TOLERANCE = 1e-5  # max abs output difference, relative to the output's largest value (>= 1)
_CHECK_SETTINGS = {  # one thread, the graphs as written: compare what each op computes
    "provider": "CPUExecutionProvider",
    "intra_op_threads": 1,
    "inter_op_threads": 1,
    "allow_spinning": False,
    "graph_optimization_level": "disable",
}


def prepare(
    ctx: Context, tmp: Path, min_opset: int = 0, needed_by: str = "", fix: str = ""
) -> tuple[Path, dict[str, Any]]:
    """The baseline ready for a technique, and the manifest details of what was done to it
    (`constants_folded`, `opset_upgrade`): the baseline itself and {} when it needs nothing. A
    changed model is written under `tmp`; `needed_by` and `fix` complete a failed upgrade's
    reason."""
    head = onnx.load(str(ctx.baseline), load_external_data=False)
    if opset_of(head) >= min_opset and not _foldable(head.graph):
        return ctx.baseline, {}
    model = onnx.load(str(ctx.baseline))
    details: dict[str, Any] = {}
    folded = fold_constants(model)
    if folded["nodes"]:
        details["constants_folded"] = folded
    out = tmp / "prepared.onnx"
    if opset_of(model) < min_opset:
        details["opset_upgrade"] = _upgrade(ctx, model, out, min_opset, needed_by, fix)
    else:
        onnx.save(model, str(out))
    return out, details


def opset_of(model: onnx.ModelProto) -> int:
    """The model's default-domain opset (0 if it imports none)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def fold_constants(model: onnx.ModelProto) -> dict[str, int]:
    """Turn each Constant node of the main graph that holds a float tensor into an initializer of
    the same name, in place: graph-equivalent, as an initializer that is no graph input cannot
    be fed. Constants inside subgraphs (If / Loop bodies) stay as they are."""
    g = model.graph
    folds = _foldable(g)
    if folds and model.ir_version < 4:
        raise NotApplicable(
            f"the model keeps its weights in Constant nodes and has IR version "
            f"{model.ir_version}, where every initializer must also be a graph input: "
            "re-export it with IR version 4 or later"
        )
    weights = [T() for _ in folds]
    for t, i in zip(weights, folds, strict=True):
        t.CopyFrom(g.node[i].attribute[0].t)
        t.name = g.node[i].output[0]
    for i in reversed(folds):
        del g.node[i]
    g.initializer.extend(weights)
    return {"nodes": len(weights), "parameters": sum(int(np.prod(t.dims)) for t in weights)}


def _foldable(g: onnx.GraphProto) -> list[int]:
    """Positions of the Constant nodes holding one float tensor `value` (not a scalar or list
    attribute) that are no graph output."""
    outputs = {v.name for v in g.output}
    return [
        k
        for k, n in enumerate(g.node)
        if n.op_type == "Constant"
        and n.domain in ("", "ai.onnx")
        and [a.name for a in n.attribute] == ["value"]
        and n.attribute[0].t.data_type in FLOATS
        and n.output[0] not in outputs
    ]


def _upgrade(
    ctx: Context, model: onnx.ModelProto, out: Path, to: int, needed_by: str, fix: str
) -> dict[str, Any]:
    """Raise the model to opset `to` into `out`; NotApplicable, naming the opsets, when onnx's
    converter fails, the result is invalid or fails to run, or its outputs differ."""
    from onnx import version_converter

    was = opset_of(model)
    head = f"{needed_by} needs opset >= {to} and this model is opset {was}"
    redo = f"re-export the model at opset {to} or later{fix}"
    rows = {k: v[:CHECK_ROWS] for k, v in ctx.data.feeds("calibration").items()}
    ref = run_rows(open_session(ctx.baseline, _CHECK_SETTINGS), rows, ctx.preset)
    step = "onnx's version converter could not upgrade it"
    try:  # onnx and ONNX Runtime raise several types for unsupported conversions and ops
        upgraded = version_converter.convert_version(model, to)
        step = "the upgraded model is not valid ONNX"
        onnx.save(upgraded, str(out))
        onnx.checker.check_model(str(out))
        step = "ONNX Runtime cannot run the upgraded model"
        got = run_rows(open_session(out, _CHECK_SETTINGS), rows, ctx.preset)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise NotApplicable(f"{head}; {step} ({first}): {redo}") from None
    worst = _difference(ref, got)
    n = len(next(iter(rows.values())))
    if not worst <= CHECK_TOLERANCE:
        raise NotApplicable(
            f"{head}; upgraded by onnx's version converter it computes different outputs "
            f"(max abs difference {worst:.3g} relative to the output's scale on {n} calibration "
            f"rows, above {CHECK_TOLERANCE:g}), so it was not used: {redo}"
        )
    return {
        "from": was,
        "to": to,
        "converter": f"onnx {onnx.__version__} version_converter",
        "checked_rows": n,
        "max_difference": worst,
        "tolerance": CHECK_TOLERANCE,
    }


def _difference(ref: list[np.ndarray], got: list[np.ndarray]) -> float:
    """Largest |ref - got| over the outputs, each relative to its largest |ref| (at least 1);
    inf when a shape differs, a non-float output is not equal, or only one side is NaN."""
    worst = 0.0
    for r, x in zip(ref, got, strict=True):
        if r.shape != x.shape or (r.dtype.kind != "f" and not np.array_equal(r, x)):
            return float("inf")
        if r.dtype.kind == "f" and r.size:
            diff = np.abs(r.astype(np.float64) - x)
            diff[np.isnan(r) & np.isnan(x)] = 0.0
            scale = max(1.0, float(np.nanmax(np.abs(r), initial=0.0)))
            d = float(np.max(diff, initial=0.0)) / scale
            if np.isnan(d):  # NaN on one side only
                return float("inf")
            worst = max(worst, d)
    return worst
