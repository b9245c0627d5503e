"""Channel surgery for prune_channels: the weakest output channels of a plain `nn.Sequential`
chain of Conv2d/Linear layers, or the weakest hidden neurons of each transformer feed-forward
block, removed in a copy of the module, with every following layer rewired to match."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from stages.techniques.base import NotApplicable

if TYPE_CHECKING:
    import torch
    from torch import nn

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


def ffn_blocks(module: Any) -> list[tuple[str, Any]]:
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


def shrink_ffn(
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


def plan(module: Any, example: dict[str, np.ndarray]) -> list[_Step]:
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


def shrink(
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
