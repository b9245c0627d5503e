"""prune_magnitude: zero the smallest weights of every Conv/Linear layer the graph uses (one
global threshold), optionally fine-tune with the zeros held (the preset's own fine-tune when it
has one: MiniLM refits its head on the frozen, pruned encoder), and export the same dense graph:
the file has the same shapes and ops, only its values change, so dense kernels still do all the
work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stages.evidence.lines import accuracy_lines, finetune_line, percent, speed_and_not_faster
from stages.export import export
from stages.techniques.base import Context, NotApplicable
from stages.techniques.options.prune import MagnitudeOptions
from stages.techniques.torch_tools import count, example, finetune, weighted
from stages.training import deterministic

# Same graph, same shapes, other values: only the bytes' hash may differ.
DECLARES: tuple[str, ...] = ("graph.sha256",)

CHECK = (
    "whether the runtime actually speeds up: the sparsity reached beside the measured speedup "
    "(dense kernels do the same work on zeros)"
)


def apply(ctx: Context) -> dict[str, Any]:
    """Global L1 magnitude pruning of the Conv/Linear weights the graph uses, optional fine-tune
    with the zeros held (the preset's own when it has one), dense export."""
    from torch.nn.utils import prune

    o: MagnitudeOptions = ctx.options
    if (
        o.finetune_epochs
        and ctx.preset is not None
        and ctx.preset.HEAVY
        and ctx.preset.finetune is None
    ):
        raise NotApplicable(
            "fine-tuning a whole pretrained model after pruning takes hours on this CPU, and its "
            "preset has no cheaper `finetune` (such as refitting a head on the frozen encoder): "
            "set technique.prune_magnitude.finetune_epochs=0 to prune without fine-tuning"
        )
    module = ctx.torch_baseline()
    layers, unused = _in_graph(weighted(module), ctx.baseline)
    if not layers:
        raise NotApplicable("the model has no Conv or Linear weights to prune")
    with deterministic(ctx.seed):
        targets = [(m, "weight") for _, m in layers]
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=o.sparsity)
        pruned = [m.weight_mask == 0 for m, _ in targets]
        training = finetune(module, ctx, o) if o.finetune_epochs else None
        for m, name in targets:
            prune.remove(m, name)  # weight = weight_orig * mask, made permanent
    for (name, m), zero in zip(layers, pruned, strict=True):
        if bool(m.weight.detach()[zero].any()):
            raise RuntimeError(f"the fine-tune moved pruned weights of {name}: masks not held")
    module.eval()
    export(
        module,
        example(ctx),
        ctx.model_out,
        ctx.preset.DYNAMIC_AXES if ctx.preset is not None else None,
    )

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
        "parameters": count(module),
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


def report(c: dict[str, Any]) -> list[str]:
    """Sparsity reached beside the measured speedup, per batch size."""
    d = c.get("manifest", {}).get("details") or {}
    lines = []
    if d:
        onnx_part = ""
        if "onnx" in d:
            onnx_part = (
                f"; in the exported ONNX {percent(d['onnx']['sparsity'])} of the weights are 0"
            )
        lines.append(
            f"- Sparsity reached: {percent(d['sparsity_reached'])} of {d['prunable_weights']:,} "
            f"Conv/Linear weights are zero (target {percent(d['sparsity_target'])}){onnx_part}. "
            f"The file still holds all {d['parameters']:,} parameters, "
            f"{d['nonzero_parameters']:,} of them non-zero."
        )
        layers = ", ".join(
            f"{name} ({v['type']}) {percent(v['sparsity'])}" for name, v in d["per_layer"].items()
        )
        lines.append(f"- Per layer: {layers}.")
        if d.get("not_in_graph"):
            lines.append(
                f"- Not pruned: {', '.join(d['not_in_graph'])} (absent from the exported graph: "
                "the model never uses its output)."
            )
        if d.get("finetune"):
            lines.append(finetune_line(d["finetune"]))
    lines += speed_and_not_faster(
        c,
        "Sparse but not faster",
        ": dense kernels do the same work on zeros.** Unstructured zeros shrink neither the "
        "shapes nor the work; only a sparse kernel or structured pruning (prune_channels) can "
        "turn them into speed.",
    )
    lines += accuracy_lines(c)
    return lines
