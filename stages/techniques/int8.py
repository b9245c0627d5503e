"""INT8 quantization with ONNX Runtime's own tools: dynamic (weights only) and static (calibrated)."""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from stages.errors import ParamsError, one_of, require
from stages.fidelity import label_of
from stages.runtime import CPU_DEFAULTS, open_session, row_workers, run_alone
from stages.techniques.base import Context
from stages.techniques.graph_prep import prepare

QUANT_TYPES = ("qint8", "quint8")
FORMATS = ("qdq", "qoperator")
CALIBRATIONS = ("minmax", "entropy", "percentile")
QUANT_OPSET = 10  # QuantizeLinear / DequantizeLinear; ONNX Runtime's quantizer needs at least this
PER_AXIS_OPSET = 13  # DequantizeLinear's `axis`, which per-channel QDQ writes


def _check_common(o: Any) -> None:
    one_of("weight_type", o.weight_type, QUANT_TYPES)
    for op in o.op_types:
        require(isinstance(op, str) and op != "", "op_types", o.op_types, "ONNX op type names")


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
    sensitivity_subsets: int = 2  # extra calibrations on random halves, for the spread check
    fallback: bool = True  # keep the most quantization-sensitive nodes in float
    max_drop_points: float = 1.0  # tuning rows changing class vs float, in points; stop at or below
    max_excluded: int = 128  # the most nodes the fallback may keep in float
    tuning_rows: int = 600  # train rows (seeded sample) judged beside the calibration split

    def __post_init__(self) -> None:
        _check_common(self)
        require(
            self.sensitivity_subsets >= 0, "sensitivity_subsets", self.sensitivity_subsets, ">= 0"
        )
        one_of("format", self.format, FORMATS)
        one_of("calibration", self.calibration, CALIBRATIONS)
        one_of("activation_type", self.activation_type, QUANT_TYPES)
        require(self.calibration_size >= 1, "calibration_size", self.calibration_size, ">= 1")
        require(
            0 <= self.max_drop_points < 100, "max_drop_points", self.max_drop_points, "in [0, 100)"
        )
        require(self.max_excluded >= 1, "max_excluded", self.max_excluded, ">= 1")
        require(self.tuning_rows >= 0, "tuning_rows", self.tuning_rows, ">= 0")


def apply_dynamic(ctx: Context) -> dict[str, Any]:
    """Weights to INT8 offline; activations are quantized per call at run time."""
    from onnxruntime.quantization import quantize_dynamic

    o: DynamicOptions = ctx.options
    with tempfile.TemporaryDirectory() as tmp:
        source, prep = prepare(ctx, Path(tmp), QUANT_OPSET, "ONNX Runtime's quantizer")
        pre = _preprocess(source, Path(tmp))
        quantize_dynamic(
            pre,
            ctx.model_out,
            per_channel=o.per_channel,
            reduce_range=o.reduce_range,
            weight_type=_qtype(o.weight_type),
            op_types_to_quantize=o.op_types or None,
        )
    return {"quantized": _quantized_ops(ctx.model_out), **prep}


def apply_static(ctx: Context) -> dict[str, Any]:
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
            _Reader(rows, batch=32, trim=getattr(ctx.preset, "trim", None)),
            quant_format=QuantFormat.QDQ if o.format == "qdq" else QuantFormat.QOperator,
            per_channel=o.per_channel,
            activation_type=_qtype(o.activation_type),
            weight_type=_qtype(o.weight_type),
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
        pre = _preprocess(source, Path(tmp))
        ranges = Path(tmp) / "ranges.json"

        def variant(exclude: list[str], out: Path) -> None:
            quantize(pre, calibration, out, exclude, ranges)

        # the rows the search judges and the sensitivity report measures on (never validation)
        no_rows: tuple[dict[str, np.ndarray], np.ndarray, dict[str, int]] = ({}, np.empty(0), {})
        rows = _tuning_rows(ctx) if o.fallback or o.sensitivity_subsets else no_rows
        fallback = _fallback(ctx, pre, variant, Path(tmp), rows) if o.fallback else None
        excluded = fallback["kept_float"] if fallback else []
        variant(excluded, ctx.model_out)
        tuning, labels, _ = rows  # the sensitivity below is reported only
        accuracies = []
        for i in tqdm(range(o.sensitivity_subsets), desc="calibration sensitivity", unit="subset"):
            pick = np.sort(rng.choice(available, size=half, replace=False))
            out = Path(tmp) / f"subset{i}.onnx"
            quantize(pre, {k: v[pick] for k, v in feeds.items()}, out, excluded)
            accuracies.append(float((_predict(out, tuning, ctx) == labels).mean()))
        candidate = (
            float((_predict(ctx.model_out, tuning, ctx) == labels).mean()) if accuracies else None
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
        "quantized": _quantized_ops(ctx.model_out),
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


# Ops that carry the arithmetic (and so the speed) fall back last, one node at a time.
ARITHMETIC = ("MatMul", "Gemm", "Conv", "ConvTranspose", "Attention")
RANK_ROWS = 64  # tuning rows the sensitivity ranking runs (spread over lengths)
RANK_SHOWN = 10  # most sensitive nodes recorded in the manifest


def _fallback(
    ctx: Context,
    pre: Path,
    variant: Any,
    tmp: Path,
    rows: tuple[dict[str, np.ndarray], np.ndarray, dict[str, int]],
) -> dict[str, Any]:
    """Nodes to keep in float, the way Intel Neural Compressor falls back: quantized nodes are
    ranked by the noise each adds, op types by their noisiest node; whole op types are kept in
    float first, in that order (but not the ARITHMETIC ones, which carry the speed), then single
    nodes of what stays quantized, by rank, in steps of 1, 2, 4 ...,
    until the accuracy drop on the tuning rows (labelled, never validation rows) is at most
    `max_drop_points`, or `max_excluded` nodes are in float (then the lowest drop is kept).
    `rows`: the tuning rows, their labels and where they came from (`_tuning_rows`)."""
    o: StaticOptions = ctx.options
    tuning, labels, sources = rows
    base_right = _predict(ctx.baseline, tuning, ctx) == labels
    step = tmp / "step.onnx"

    def measure(exclude: list[str], how: str) -> dict[str, Any]:
        variant(exclude, step)
        right = _predict(step, tuning, ctx) == labels
        drop = 100 * (float(base_right.mean()) - float(right.mean())) + 0.0
        return {"step": how, "excluded": len(exclude), "drop_points": drop, "_nodes": exclude}

    steps = [measure([], "every node quantized")]
    ranking: list[tuple[str, float]] = []
    if steps[0]["drop_points"] > o.max_drop_points:
        ranking = _rank(pre, step, tuning, ctx)
    types = _op_types(pre)
    by_type: dict[str, list[str]] = {}
    for name, _ in ranking:  # op types in the order of their noisiest node
        if types.get(name) not in ARITHMETIC:
            by_type.setdefault(types.get(name, "?"), []).append(name)
    groups: list[tuple[str, list[str]]] = []  # what was put in float, in order

    def kept() -> list[str]:
        return [n for _, names in groups for n in names]

    for op, names in by_type.items():
        if steps[-1]["drop_points"] <= o.max_drop_points:
            break
        if len(kept()) + len(names) > o.max_excluded:
            continue  # too many nodes of this type for the cap: try the next type
        groups.append((f"every {op} ({len(names)})", names))
        steps.append(measure(kept(), "+ " + groups[-1][0]))
    rest = [n for n, _ in ranking if n not in kept()]  # the arithmetic, node by node, by rank
    k = 1
    while steps[-1]["drop_points"] > o.max_drop_points and rest and len(kept()) < o.max_excluded:
        k = min(k, len(rest), o.max_excluded - len(kept()))
        groups.append((f"{k} node(s) by rank", rest[:k]))
        rest = rest[k:]
        steps.append(measure(kept(), "+ " + groups[-1][0]))
        k *= 2
    reached = steps[-1]["drop_points"] <= o.max_drop_points
    best = steps[-1] if reached else min(steps, key=lambda s: (s["drop_points"], s["excluded"]))
    if reached:  # back again: quantize each earlier group once more where the tolerance holds
        for group in reversed(groups[:-1]):
            trial = measure(
                [n for n in best["_nodes"] if n not in group[1]], f"- {group[0]}, quantized again"
            )
            steps.append(trial)
            if trial["drop_points"] <= o.max_drop_points:
                best = trial
    return {
        "criterion": "accuracy drop on the tuning rows against the float model, in points",
        "max_drop_points": o.max_drop_points,
        "max_excluded": o.max_excluded,
        "tuning_rows": sources,
        "quantized_nodes": len(ranking) if ranking else None,
        "ranking": [[n, round(s, 2)] for n, s in ranking[:RANK_SHOWN]],
        "op_type_order": list(by_type),
        "steps": [
            {k: round(v, 3) if k == "drop_points" else v for k, v in s.items() if k != "_nodes"}
            for s in steps
        ],
        "kept_float": best["_nodes"],
        "drop_points": round(best["drop_points"], 3),
        "reached": reached,
    }


def _op_types(model: Path) -> dict[str, str]:
    """Node name -> op type in the float model."""
    import onnx

    return {n.name: n.op_type for n in onnx.load(str(model)).graph.node}


def _tuning_rows(ctx: Context) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, int]]:
    """The calibration split plus a seeded sample of the train split (where the model has one;
    a model brought as ONNX has none), with their labels: never validation rows."""
    o: StaticOptions = ctx.options
    calibration = ctx.data.feeds("calibration")
    labels = ctx.data.labels("calibration")
    if "train" not in ctx.data.sets or o.tuning_rows == 0:
        return calibration, labels, {"calibration": len(labels), "train": 0}
    train = ctx.data.feeds("train")
    n_train = len(next(iter(train.values())))
    pick = np.sort(
        np.random.default_rng([ctx.seed, 8]).choice(
            n_train, size=min(o.tuning_rows, n_train), replace=False
        )
    )
    rows = {k: np.concatenate([calibration[k], train[k][pick]]) for k in calibration}
    labels = np.concatenate([labels, ctx.data.labels("train")[pick]])
    return rows, labels, {"calibration": len(labels) - len(pick), "train": len(pick)}


def _predict(model: Path, feeds: dict[str, np.ndarray], ctx: Context) -> np.ndarray:
    """The label output's class for every row, each row alone at its natural shape (as rows are
    served and validated), shared among single-threaded sessions, one per core: the rows these
    sessions compute are the ones a validation worker computes, and the search needs no session
    with the target's threads beside them."""
    workers = row_workers(model) or [open_session(model, CPU_DEFAULTS)]
    shared = workers if len(workers) > 1 else None
    outputs = run_alone(workers[0], feeds, ctx.preset, "tuning rows", shared)
    return outputs[label_of(workers[0], ctx.data)[1]].argmax(1)


def _rank(
    pre: Path, quantized: Path, feeds: dict[str, np.ndarray], ctx: Context
) -> list[tuple[str, float]]:
    """Quantized nodes, most sensitive first, by the noise each adds (dB, relative to the signal,
    against the float model): the noise-to-signal ratio of its output as its readers get it
    (after the output's own QDQ, if any) minus the worst of its inputs before their QDQ."""
    import onnx

    fm, qm = onnx.load(str(pre)), onnx.load(str(quantized))
    after = {n.input[0]: n.output[0] for n in qm.graph.node if n.op_type == "QuantizeLinear"}
    dq = {n.input[0]: n.output[0] for n in qm.graph.node if n.op_type == "DequantizeLinear"}
    dq_out = set(dq.values())
    nodes = [
        n
        for n in qm.graph.node
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
        and n.name
        and any(i in dq_out for i in n.input)
    ]
    float_nodes = {n.name: n for n in fm.graph.node}
    floats, q_tensors = _float_tensors(fm), _float_tensors(qm) | dq_out
    pairs = []  # (node, inputs, outputs) as (float tensor, quantized-model tensor) pairs
    for n in nodes:
        f = float_nodes.get(n.name)
        if f is None:
            continue
        ins = [(t, t) for t in f.input if t in floats and t in q_tensors]
        outs = [(t, dq.get(after.get(t, ""), t)) for t in f.output if t in floats]
        outs = [(t, q) for t, q in outs if q in q_tensors]
        if outs:
            pairs.append((n.name, ins, outs))
    if not pairs:  # e.g. unnamed nodes, which nodes_to_exclude cannot name either
        return []
    nsr = _nsr(fm, qm, sorted({p for _, ins, outs in pairs for p in ins + outs}), feeds, ctx)
    scored = [
        (name, max(nsr[p] for p in outs) - max([nsr[p] for p in ins], default=0.0))
        for name, ins, outs in pairs
    ]
    order = {name: i for i, (name, _, _) in enumerate(pairs)}
    ranked = sorted(scored, key=lambda p: (-p[1], order[p[0]]))
    return [(name, float(10 * np.log10(max(added, 1e-12)))) for name, added in ranked]


def _float_tensors(model: Any) -> set[str]:
    """Names of the float32 tensors computed by the graph (graph inputs and node outputs)."""
    import onnx

    g = model.graph
    typed = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.value_info, *g.output]}
    computed = {i.name for i in g.input} | {t for n in g.node for t in n.output}
    return {t for t in computed if typed.get(t) == onnx.TensorProto.FLOAT}


def _nsr(
    fm: Any, qm: Any, pairs: list[tuple[str, str]], feeds: dict[str, np.ndarray], ctx: Context
) -> dict[tuple[str, str], float]:
    """Per (float tensor, quantized tensor), the noise-to-signal power ratio of the quantized
    model's values, over RANK_ROWS rows spread over the lengths in length-sorted chunks."""
    import onnx
    import onnxruntime as ort

    def session(model: Any, tensors: list[str]) -> Any:
        m = onnx.ModelProto()
        m.CopyFrom(model)
        have = {o.name for o in m.graph.output}
        m.graph.output.extend(
            onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None)
            for t in tensors
            if t not in have
        )
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])

    f_names, q_names = sorted({f for f, _ in pairs}), sorted({q for _, q in pairs})
    n = len(next(iter(feeds.values())))
    lengths = getattr(ctx.preset, "lengths", None)
    cut = getattr(ctx.preset, "trim", None) or (lambda f: f)
    order = np.argsort(lengths(feeds), kind="stable") if lengths else np.arange(n)
    pick = order[np.linspace(0, n - 1, min(RANK_ROWS, n)).round().astype(int)]
    signal, noise = dict.fromkeys(pairs, 0.0), dict.fromkeys(pairs, 0.0)
    sf, sq = session(fm, f_names), session(qm, q_names)
    for i in range(0, len(pick), 16):
        chunk = cut({k: v[pick[i : i + 16]] for k, v in feeds.items()})
        a = dict(zip(f_names, sf.run(f_names, chunk), strict=True))
        b = dict(zip(q_names, sq.run(q_names, chunk), strict=True))
        for f, q in pairs:
            x, y = a[f].astype(np.float64), b[q].astype(np.float64)
            ok = np.abs(x) < 1e30  # mask constants (-3.4e38 and the like) would swamp the sums
            signal[f, q] += float(np.square(x[ok]).sum())
            noise[f, q] += float(np.square(np.clip(x[ok] - y[ok], -1e30, 1e30)).sum())
    return {p: noise[p] / signal[p] if signal[p] > 0 else float(noise[p] > 0) for p in pairs}


def report_static(c: dict[str, Any]) -> list[str]:
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
            f"- most sensitive of {f['quantized_nodes']} quantized nodes (noise added, dB re signal): {top}"
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


class _Reader:
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
