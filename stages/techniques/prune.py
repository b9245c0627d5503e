"""Pruning, from the baseline's torch weights: unstructured by magnitude, and whole channels.

`prune_magnitude` zeroes the smallest weights of every Conv/Linear layer the graph uses (one
global threshold), optionally fine-tunes with the zeros held (the preset's own fine-tune when it
has one: MiniLM refits its head on the frozen, pruned encoder), and exports the same dense graph:
the file has the same shapes and ops, only its values change, so dense kernels still do all the
work.
`prune_channels` removes whole conv channels / linear neurons (smallest L1 or L2 norm) from a plain
`nn.Sequential` chain, or the hidden neurons of every feed-forward block of a transformer encoder
(the Hugging Face BERT layout: `intermediate.dense` -> `output.dense`), and exports a physically
smaller dense model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stages.errors import one_of, require
from stages.export import export
from stages.techniques.base import Context, NotApplicable
from stages.training import deterministic, fit_classifier, sample_rows

if TYPE_CHECKING:
    import torch
    from torch import nn

NORMS = ("l1", "l2")

# --- options ----------------------------------------------------------------------------------


def _check_finetune(o: Any) -> None:
    require(o.finetune_epochs >= 0, "finetune_epochs", o.finetune_epochs, ">= 0 (0 = none)")
    require(o.learning_rate > 0, "learning_rate", o.learning_rate, "> 0")
    require(o.batch_size >= 1, "batch_size", o.batch_size, ">= 1")
    require(o.finetune_rows >= 0, "finetune_rows", o.finetune_rows, ">= 0 (0 = every train row)")


@dataclass
class MagnitudeOptions:
    sparsity: float = 0.3  # share of the Conv/Linear weights set to zero (one global threshold)
    # 0 = no fine-tune; else the preset's own training when it has one (MiniLM: refit the head
    # on the frozen, pruned encoder), Adam on the whole model otherwise; the zeros stay zero
    finetune_epochs: int = 2
    learning_rate: float = 0.001
    batch_size: int = 64
    finetune_rows: int = 3000  # a seeded sample of the train split to fine-tune on; 0 = all of it

    def __post_init__(self) -> None:
        require(0 <= self.sparsity < 1, "sparsity", self.sparsity, "a share in [0, 1)")
        _check_finetune(self)


@dataclass
class ChannelOptions:
    amount: float = 0.25  # share of output channels / neurons removed from each prunable layer
    norm: str = "l1"  # l1 | l2: channels with the smallest weight norm go first
    finetune_epochs: int = 2
    learning_rate: float = 0.001
    batch_size: int = 64
    finetune_rows: int = 3000  # a seeded sample of the train split to fine-tune on; 0 = all of it

    def __post_init__(self) -> None:
        require(0 <= self.amount < 1, "amount", self.amount, "a share in [0, 1)")
        one_of("norm", self.norm, NORMS)
        _check_finetune(self)


# --- what each may change, and the check before shipping --------------------------------------

# Same graph, same shapes, other values: only the bytes' hash may differ.
MAGNITUDE_DECLARES: tuple[str, ...] = ("graph.sha256",)
# Same graph, narrower layers: fewer parameters, fewer bytes.
CHANNEL_DECLARES: tuple[str, ...] = ("graph.parameters", "graph.sha256", "graph.size_bytes")

MAGNITUDE_CHECK = (
    "whether the runtime actually speeds up: the sparsity reached beside the measured speedup "
    "(dense kernels do the same work on zeros)"
)
CHANNEL_CHECK = (
    "whether the physically smaller model runs measurably faster, and its accuracy per slice"
)


# --- prune_magnitude --------------------------------------------------------------------------


def apply_magnitude(ctx: Context) -> dict[str, Any]:
    """Global L1 magnitude pruning of the Conv/Linear weights the graph uses, optional fine-tune
    with the zeros held (the preset's own when it has one), dense export."""
    from torch.nn.utils import prune

    o: MagnitudeOptions = ctx.options
    if (
        o.finetune_epochs
        and getattr(ctx.preset, "HEAVY", False)
        and getattr(ctx.preset, "finetune", None) is None
    ):
        raise NotApplicable(
            "fine-tuning a whole pretrained model after pruning takes hours on this CPU, and its "
            "preset has no cheaper `finetune` (such as refitting a head on the frozen encoder): "
            "set technique.prune_magnitude.finetune_epochs=0 to prune without fine-tuning"
        )
    module = ctx.torch_baseline()
    layers, unused = _in_graph(_weighted(module), ctx.baseline)
    if not layers:
        raise NotApplicable("the model has no Conv or Linear weights to prune")
    with deterministic(ctx.seed):
        targets = [(m, "weight") for _, m in layers]
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=o.sparsity)
        pruned = [m.weight_mask == 0 for m, _ in targets]
        training = _finetune(module, ctx, o) if o.finetune_epochs else None
        for m, name in targets:
            prune.remove(m, name)  # weight = weight_orig * mask, made permanent
    for (name, m), zero in zip(layers, pruned, strict=True):
        if bool(m.weight.detach()[zero].any()):
            raise RuntimeError(f"the fine-tune moved pruned weights of {name}: masks not held")
    module.eval()
    export(module, _example(ctx), ctx.model_out, getattr(ctx.preset, "DYNAMIC_AXES", None))

    per_layer: dict[str, dict[str, Any]] = {}
    for name, m in layers:
        w = m.weight.detach()
        per_layer[name] = {
            "type": type(m).__name__,
            "weights": int(w.numel()),
            "zeros": int((w == 0).sum()),
            "sparsity": float((w == 0).float().mean()),
        }
    weights = sum(v["weights"] for v in per_layer.values())
    zeros = sum(v["zeros"] for v in per_layer.values())
    details: dict[str, Any] = {
        "sparsity_target": o.sparsity,
        "sparsity_reached": zeros / weights,
        "prunable_weights": weights,
        "zero_weights": zeros,
        "per_layer": per_layer,
        "parameters": _count(module),
        "nonzero_parameters": int(sum(int((p != 0).sum()) for p in module.parameters())),
        "onnx": _onnx_sparsity(ctx.model_out, layers),
    }
    if unused:
        details["not_in_graph"] = unused
    if training is not None:
        details["finetune"] = training
    return details


def _in_graph(layers: list[tuple[str, Any]], path: Path) -> tuple[list[tuple[str, Any]], list[str]]:
    """The layers whose weights the ONNX file holds, and the names of those it does not (a
    layer whose output the model never uses, e.g. an unused pooler, is left out of the graph:
    pruning it would spend part of the global budget on nothing)."""
    held = _held(path, layers)
    return [(n, m) for n, m in layers if held[n] is not None], [
        n for n, _ in layers if held[n] is None
    ]


def _held(path: Path, layers: list[tuple[str, Any]]) -> dict[str, np.ndarray | None]:
    """Each layer's weight as the ONNX file holds it, found by value: as it is, or transposed
    (the exporter folds a Linear's transpose into a renamed tensor); None where it is absent."""
    import onnx
    from onnx import numpy_helper

    found: dict[tuple[Any, ...], np.ndarray] = {}
    for init in onnx.load(str(path)).graph.initializer:
        a = numpy_helper.to_array(init)
        if a.ndim >= 2 and np.issubdtype(a.dtype, np.floating):
            found.setdefault(_key(a), a)
    out: dict[str, np.ndarray | None] = {}
    for name, m in layers:
        w = m.weight.detach().numpy()
        out[name] = found.get(_key(w), found.get(_key(w.T)))
    return out


def _key(a: np.ndarray) -> tuple[Any, ...]:
    """Shape, dtype and a digest of the values (-0.0 read as 0.0: a pruned weight is w * 0)."""
    import hashlib

    digest = hashlib.sha256(np.ascontiguousarray(a + 0.0).tobytes()).hexdigest()
    return a.shape, a.dtype.str, digest


def _onnx_sparsity(path: Path, layers: list[tuple[str, Any]]) -> dict[str, Any]:
    """Zeros in the exported file's copies of the pruned weights; every one must be there
    unchanged (the zeros of the torch weights are the zeros the runtime gets)."""
    held = _held(path, layers)
    missing = [name for name, a in held.items() if a is None]
    if missing:
        raise RuntimeError(
            f"the exported {path.name} does not hold the pruned weights of {', '.join(missing)} "
            "as pruned: the export changed them"
        )
    chosen = [a for a in held.values() if a is not None]
    size = sum(int(a.size) for a in chosen)
    zeros = sum(int((a == 0).sum()) for a in chosen)
    return {
        "weight_tensors": len(chosen),
        "weights": size,
        "zeros": zeros,
        "sparsity": zeros / size if size else 0.0,
    }


# --- prune_channels ---------------------------------------------------------------------------

_ELEMENTWISE = (
    "ReLU",
    "ReLU6",
    "LeakyReLU",
    "ELU",
    "GELU",
    "SiLU",
    "Sigmoid",
    "Tanh",
    "Hardswish",
    "Identity",
    "Dropout",
    "Dropout2d",
)
_POOLS = ("MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d")
_NORMS = ("BatchNorm1d", "BatchNorm2d")


def apply_channels(ctx: Context) -> dict[str, Any]:
    """Remove the weakest output channels of every Conv2d/Linear but the last (a Sequential
    chain), or the weakest hidden neurons of every transformer feed-forward block; dense export."""
    o: ChannelOptions = ctx.options
    module = ctx.torch_baseline()
    blocks = _ffn_blocks(module)
    plan = None if blocks else _plan(module, _example(ctx))
    before = _count(module)
    with deterministic(ctx.seed):
        if plan is None:
            smaller, layers = _shrink_ffn(module, blocks, o.amount, o.norm)
        else:
            smaller, layers = _shrink(module, plan, o.amount, o.norm)
        training = _finetune(smaller, ctx, o) if o.finetune_epochs else None
    smaller.eval()
    export(smaller, _example(ctx), ctx.model_out, getattr(ctx.preset, "DYNAMIC_AXES", None))
    after = _count(smaller)
    details: dict[str, Any] = {
        "amount": o.amount,
        "norm": o.norm,
        "structure": "sequential channels" if plan is not None else "transformer FFN neurons",
        "layers": layers,
        "parameters": {"before": before, "after": after, "ratio": after / before},
    }
    if training is not None:
        details["finetune"] = training
    return details


def _ffn_blocks(module: Any) -> list[tuple[str, Any]]:
    """Transformer layers in the Hugging Face BERT layout (BERT, MiniLM, RoBERTa, ELECTRA...):
    `intermediate.dense` (hidden -> ffn) feeding `output.dense` (ffn -> hidden)."""
    from torch import nn

    found = []
    for name, m in module.named_modules():
        up = getattr(getattr(m, "intermediate", None), "dense", None)
        down = getattr(getattr(m, "output", None), "dense", None)
        if (
            isinstance(up, nn.Linear)
            and isinstance(down, nn.Linear)
            and up.out_features == down.in_features
        ):
            found.append((name, m))
    return found


def _shrink_ffn(
    module: Any, blocks: list[tuple[str, Any]], amount: float, norm: str
) -> tuple[Any, list[dict[str, Any]]]:
    """A copy with the weakest hidden neurons of each feed-forward block removed: rows of the
    up-projection and the matching columns of the down-projection. A neuron's score is the norm
    of its up-projection weights, ranked within its block; attention and the residual width stay
    as they are, so every other shape is unchanged."""
    import torch
    from torch import nn

    smaller = copy.deepcopy(module)
    report = []
    for name, _ in blocks:
        block = smaller.get_submodule(name)
        up, down = block.intermediate.dense, block.output.dense
        n = up.out_features
        drop = min(round(amount * n), n - 1)  # never remove a whole block
        scores = up.weight.data.abs().sum(1) if norm == "l1" else up.weight.data.norm(dim=1)
        keep = torch.sort(torch.argsort(-scores, stable=True)[: n - drop]).values
        new_up = nn.Linear(up.in_features, len(keep), bias=up.bias is not None)
        new_down = nn.Linear(len(keep), down.out_features, bias=down.bias is not None)
        new_up.weight = nn.Parameter(up.weight.data[keep].clone())
        new_down.weight = nn.Parameter(down.weight.data[:, keep].clone())
        if up.bias is not None:
            new_up.bias = nn.Parameter(up.bias.data[keep].clone())
        if down.bias is not None:
            new_down.bias = nn.Parameter(down.bias.data.clone())
        block.intermediate.dense, block.output.dense = new_up, new_down
        report.append({"layer": name, "type": "FFN neurons", "before": n, "after": len(keep)})
    return smaller, report


@dataclass
class _Step:
    index: int
    layer: Any
    kind: str  # "weighted" | "norm" | "pass" | "flatten"
    in_shape: tuple[int, ...]  # the input shape seen on a forward pass of the example


def _plan(module: Any, example: dict[str, np.ndarray]) -> list[_Step]:
    """The chain with each layer's input shape; NotApplicable for anything it cannot rewire."""
    import torch
    from torch import nn

    if not isinstance(module, nn.Sequential):
        raise NotApplicable(
            f"prune_channels rewires plain nn.Sequential chains of Conv2d/Linear layers; this "
            f"model is a {type(module).__name__}, whose channel dependencies it cannot follow"
        )
    if len(example) != 1:
        raise NotApplicable("prune_channels handles single-input nn.Sequential models only")
    steps = []
    for i, layer in enumerate(module):
        kind = type(layer).__name__
        if isinstance(layer, nn.Conv2d):
            if layer.groups != 1:
                raise NotApplicable(
                    f"layer {i} is a grouped/depthwise Conv2d (groups={layer.groups}); "
                    "prune_channels only rewires ungrouped convolutions"
                )
            steps.append(_Step(i, layer, "weighted", ()))
        elif isinstance(layer, nn.Linear):
            steps.append(_Step(i, layer, "weighted", ()))  # its input must be 2-D (checked below)
        elif kind in _NORMS:
            steps.append(_Step(i, layer, "norm", ()))
        elif kind in _ELEMENTWISE or kind in _POOLS:
            steps.append(_Step(i, layer, "pass", ()))
        elif isinstance(layer, nn.Flatten) and layer.start_dim == 1 and layer.end_dim == -1:
            steps.append(_Step(i, layer, "flatten", ()))
        else:
            raise NotApplicable(
                f"layer {i} is a {kind}; prune_channels only rewires chains of Conv2d, Linear, "
                f"BatchNorm, Flatten, pooling and elementwise activations"
            )
    weighted = [s for s in steps if s.kind == "weighted"]
    if len(weighted) < 2:
        raise NotApplicable("the model has fewer than two Conv2d/Linear layers: nothing to prune")
    shapes: list[tuple[int, ...]] = []
    hooks = [
        layer.register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0].shape)))
        for layer in module
    ]
    try:
        with torch.no_grad():
            module(*(torch.from_numpy(v) for v in example.values()))
    finally:
        for h in hooks:
            h.remove()
    for step, shape in zip(steps, shapes, strict=True):
        step.in_shape = shape
        if isinstance(step.layer, nn.Linear) and len(shape) != 2:
            raise NotApplicable(
                f"layer {step.index} is a Linear on a {len(shape)}-D input; prune_channels "
                "needs a Flatten before the first Linear"
            )
    return steps


def _shrink(
    module: nn.Sequential, steps: list[_Step], amount: float, norm: str
) -> tuple[nn.Sequential, list[dict[str, Any]]]:
    """A copy of the chain with the weakest output channels of each prunable layer removed."""
    import torch
    from torch import nn

    last = max(s.index for s in steps if s.kind == "weighted")  # its outputs are the classes
    new: list[nn.Module] = []
    report = []
    keep: torch.Tensor | None = None  # kept channels of the running feature map (None = all)
    spatial = 1  # positions per channel once flattened
    for step in steps:
        layer = copy.deepcopy(step.layer)
        if step.kind == "flatten":
            if len(step.in_shape) > 2:
                spatial = int(np.prod(step.in_shape[2:]))
        elif step.kind == "norm" and keep is not None:
            if spatial > 1:
                raise NotApplicable(
                    f"layer {step.index} normalizes flattened conv features; prune_channels "
                    "cannot map its features to channels"
                )
            _slice_norm(layer, keep)
        elif step.kind == "weighted":
            w = full = layer.weight.data
            if keep is not None:  # inputs follow the previous layer's kept channels
                cols = keep
                if isinstance(layer, nn.Linear) and spatial > 1:
                    cols = (keep[:, None] * spatial + torch.arange(spatial)).reshape(-1)
                w = w[:, cols]
                _set_in(layer, len(keep))
                if isinstance(layer, nn.Linear):
                    layer.in_features = len(cols)
            out = w.shape[0]
            if step.index == last:
                keep_out = None
                after = out
            else:
                drop = min(round(amount * out), out - 1)  # never remove a whole layer
                # each channel's norm over all its baseline weights (inputs removed upstream
                # included: the channels of each layer are ranked independently)
                rows = full.flatten(1)
                scores = rows.abs().sum(1) if norm == "l1" else rows.norm(dim=1)
                order = torch.argsort(-scores, stable=True)
                keep_out = torch.sort(order[: out - drop]).values
                w = w[keep_out]
                after = out - drop
            layer.weight = nn.Parameter(w.clone())
            if layer.bias is not None:
                b = layer.bias.data if keep_out is None else layer.bias.data[keep_out]
                layer.bias = nn.Parameter(b.clone())
            _set_out(layer, after)
            report.append(
                {
                    "layer": str(step.index),
                    "type": type(layer).__name__,
                    "before": out,
                    "after": after,
                }
            )
            keep = keep_out
            spatial = 1
        new.append(layer)
    return nn.Sequential(*new), report


def _set_in(layer: Any, n: int) -> None:
    if hasattr(layer, "in_channels"):
        layer.in_channels = n


def _set_out(layer: Any, n: int) -> None:
    if hasattr(layer, "out_channels"):
        layer.out_channels = n
    if hasattr(layer, "out_features"):
        layer.out_features = n


def _slice_norm(layer: Any, keep: torch.Tensor) -> None:
    from torch import nn

    for name in ("weight", "bias"):
        p = getattr(layer, name, None)
        if p is not None:
            setattr(layer, name, nn.Parameter(p.data[keep].clone()))
    for name in ("running_mean", "running_var"):
        buf = getattr(layer, name, None)
        if buf is not None:
            setattr(layer, name, buf[keep].clone())
    layer.num_features = len(keep)


# --- shared -----------------------------------------------------------------------------------


def _weighted(module: Any) -> list[tuple[str, Any]]:
    from torch import nn

    return [(n, m) for n, m in module.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _count(module: Any) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def _example(ctx: Context) -> dict[str, np.ndarray]:
    """Two validation rows per input: the export's example (the batch axis stays dynamic)."""
    feeds = ctx.data.feeds("validation")
    return {name: feeds[name][:2] for name in ctx.data.inputs}


def _finetune(module: Any, ctx: Context, o: Any) -> dict[str, Any]:
    """A short fine-tune on the train split (seeded shuffle; inside `deterministic`): the
    preset's own `finetune` when it has one (e.g. refit the head on a frozen encoder), else Adam
    on the whole model."""
    import torch
    from tqdm import tqdm

    own = getattr(ctx.preset, "finetune", None)
    if own is not None:
        return own(
            module,
            ctx.data,
            epochs=o.finetune_epochs,
            batch_size=o.batch_size,
            learning_rate=o.learning_rate,
            seed=ctx.seed,
            rows=o.finetune_rows,
        )
    if len(ctx.data.inputs) != 1:
        raise NotApplicable("fine-tuning handles single-input models only; set finetune_epochs: 0")
    labels = ctx.data.labels("train")
    pick = sample_rows(len(labels), o.finetune_rows, ctx.seed)
    x = torch.from_numpy(ctx.data.feeds("train")[ctx.data.inputs[0]][pick])
    y = torch.from_numpy(labels[pick])
    log = fit_classifier(
        module,
        x,
        y,
        epochs=o.finetune_epochs,
        batch_size=o.batch_size,
        learning_rate=o.learning_rate,
        seed=ctx.seed,
        progress=lambda it, **kw: tqdm(it, **{**kw, "desc": "fine-tune"}),
    )
    log["train_rows"], log["of_train_rows"] = len(y), len(labels)
    return log


# --- the review note --------------------------------------------------------------------------


def report_magnitude(c: dict[str, Any]) -> list[str]:
    """Sparsity reached beside the measured speedup, per batch size."""
    d = c.get("manifest", {}).get("details") or {}
    lines = []
    if d:
        onnx_part = ""
        if "onnx" in d:
            onnx_part = f"; in the exported ONNX {_pc(d['onnx']['sparsity'])} of the weights are 0"
        lines.append(
            f"- Sparsity reached: {_pc(d['sparsity_reached'])} of {d['prunable_weights']:,} "
            f"Conv/Linear weights are zero (target {_pc(d['sparsity_target'])}){onnx_part}. "
            f"The file still holds all {d['parameters']:,} parameters, "
            f"{d['nonzero_parameters']:,} of them non-zero."
        )
        layers = ", ".join(
            f"{name} ({v['type']}) {_pc(v['sparsity'])}" for name, v in d["per_layer"].items()
        )
        lines.append(f"- Per layer: {layers}.")
        if d.get("not_in_graph"):
            lines.append(
                f"- Not pruned: {', '.join(d['not_in_graph'])} (absent from the exported graph: "
                "the model never uses its output)."
            )
        if d.get("finetune"):
            lines.append(_finetune_line(d["finetune"]))
    lines += _speed_and_not_faster(
        c,
        "Sparse but not faster",
        ": dense kernels do the same work on zeros.** Unstructured zeros shrink neither the "
        "shapes nor the work; only a sparse kernel or structured pruning (prune_channels) can "
        "turn them into speed.",
    )
    lines += accuracy_lines(c)
    return lines


def report_channels(c: dict[str, Any]) -> list[str]:
    """Parameters and channels removed, the measured speedup, and accuracy per slice."""
    d = c.get("manifest", {}).get("details") or {}
    lines = []
    if d:
        p = d["parameters"]
        lines.append(
            f"- Parameters: {p['before']:,} -> {p['after']:,} ({_pc(1 - p['ratio'])} removed; "
            f"{d['norm']} norm, {_pc(d['amount'])} of each prunable layer's channels)."
        )
        chans = ", ".join(
            f"{v['layer']} ({v['type']}) {v['before']} -> {v['after']}" for v in d["layers"]
        )
        ffn = d.get("structure") == "transformer FFN neurons"
        lines.append(
            f"- {'Hidden neurons per FFN block' if ffn else 'Output channels per layer'}: {chans}."
        )
        if d.get("finetune"):
            lines.append(_finetune_line(d["finetune"]))
    lines += _speed_and_not_faster(
        c,
        "Smaller but not faster",
        "**: the parameters removed did not buy measurable speed there (fixed per-call costs, "
        "or layers the pruning left whole, may dominate).",
    )
    lines += accuracy_lines(c)
    lines += slice_lines(c)
    return lines


def _speed_and_not_faster(c: dict[str, Any], headline: str, why: str) -> list[str]:
    """The speed lines, then `headline` (bold, with the batch sizes) where it was not faster."""
    batches = c.get("benchmark", {}).get("batches", [])
    lines = speed_lines(batches)
    slow = [b["batch_size"] for b in batches if b["effect"] != "faster"]
    if slow:
        where = "" if len(slow) == len(batches) else f" at batch {_join(slow)}"
        lines.append(f"- **{headline}{where}{why}")
    return lines


def speed_lines(batches: list[dict[str, Any]]) -> list[str]:
    """One line per batch size: p50/p95/p99 speedups with their intervals, and the effect."""
    out = []
    for b in batches:
        qs = "; ".join(
            f"{q} {_ci(b['speedup'][q])}" for q in ("p50", "p95", "p99") if q in b["speedup"]
        )
        out.append(
            f"- Batch {b['batch_size']}: speedup {qs}: {b['effect']} "
            f"(noise floor ±{b['noise_floor'] * 100:.0f} %)."
        )
    return out


def accuracy_lines(c: dict[str, Any]) -> list[str]:
    o = c.get("validation", {}).get("overall")
    if not o:
        return []
    return [
        f"- Overall: {_points(o['drop_points'])}, {o['right_to_wrong']} right->wrong, "
        f"{o['wrong_to_right']} wrong->right."
    ]


def slice_lines(c: dict[str, Any]) -> list[str]:
    """Accuracy per slice, largest drop first, the worst slice marked."""
    v = c.get("validation", {})
    slices = v.get("slices") or {}
    worst = v.get("worst_slice")
    out = []
    for name, s in sorted(slices.items(), key=lambda kv: (-kv[1]["drop_points"], kv[0])):
        mark = " (worst slice)" if name == worst else ""
        acc = ""
        if "baseline_accuracy" in s and "candidate_accuracy" in s:
            acc = (
                f"{_pc(s['baseline_accuracy']['estimate'])} -> "
                f"{_pc(s['candidate_accuracy']['estimate'])}, "
            )
        out.append(
            f"- Slice {name}{mark}: {acc}{_points(s['drop_points'])}, "
            f"{s['right_to_wrong']} right->wrong, {s.get('wrong_to_right', 0)} wrong->right."
        )
    return out


def _finetune_line(log: dict[str, Any]) -> str:
    losses = ", ".join(f"{e['loss']:.4f}" for e in log["epochs"])
    what = f" ({log['trained']})" if log.get("trained") else ""
    n, of = log.get("train_rows"), log.get("of_train_rows")
    rows = f" on {n:,} of {of:,} train rows (seeded sample)" if n and of and n < of else ""
    return f"- Fine-tune{what}: {len(log['epochs'])} epoch(s){rows}, train loss per epoch {losses}."


def _ci(d: dict[str, float]) -> str:
    return f"{d['estimate']:.2f}x [{d['low']:.2f}, {d['high']:.2f}]"


def _pc(x: float) -> str:
    return f"{x * 100:.1f} %"


def _points(drop: float) -> str:
    if drop == 0:
        return "no accuracy change"
    return f"accuracy {'down' if drop > 0 else 'up'} {abs(drop):.1f} points"


def _join(xs: list[Any]) -> str:
    return ", ".join(str(x) for x in xs)
