"""int8_static's float fallback: the quantized nodes ranked by the noise each adds, and the search
for the nodes to keep in float until the tuning rows (never validation rows) agree with the
float model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stages.fidelity import label_of
from stages.runtime import CPU_DEFAULTS, open_session, row_workers, run_alone
from stages.techniques.base import Context
from stages.techniques.options.int8 import StaticOptions

# Ops that carry the arithmetic (and so the speed) fall back last, one node at a time.
ARITHMETIC = ("MatMul", "Gemm", "Conv", "ConvTranspose", "Attention")
RANK_ROWS = 64  # tuning rows the sensitivity ranking runs (spread over lengths)
RANK_SHOWN = 10  # most sensitive nodes recorded in the manifest


def float_fallback(
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
    `rows`: the tuning rows, their labels and where they came from (`tuning_rows`)."""
    o: StaticOptions = ctx.options
    tuning, labels, sources = rows
    base_right = predict(ctx.baseline, tuning, ctx) == labels
    step = tmp / "step.onnx"

    def measure(exclude: list[str], how: str) -> dict[str, Any]:
        variant(exclude, step)
        right = predict(step, tuning, ctx) == labels
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


def tuning_rows(ctx: Context) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, int]]:
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


def predict(model: Path, feeds: dict[str, np.ndarray], ctx: Context) -> np.ndarray:
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
    lengths = ctx.preset.lengths if ctx.preset is not None else None
    cut = ctx.preset.trim if ctx.preset is not None else (lambda f: f)
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
