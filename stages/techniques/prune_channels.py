"""prune_channels: remove whole conv channels / linear neurons (smallest L1 or L2 norm) from a
plain `nn.Sequential` chain, or the hidden neurons of every feed-forward block of a transformer
encoder (the Hugging Face BERT layout: `intermediate.dense` -> `output.dense`), optionally
fine-tune, and export a physically smaller dense model."""

from __future__ import annotations

from typing import Any

from stages.evidence.lines import (
    accuracy_lines,
    finetune_line,
    percent,
    slice_lines,
    speed_and_not_faster,
)
from stages.export import export
from stages.techniques.base import Context
from stages.techniques.channel_surgery import ffn_blocks, plan, shrink, shrink_ffn
from stages.techniques.options.prune import ChannelOptions
from stages.techniques.torch_tools import count, example, finetune
from stages.training import deterministic

# Same graph, narrower layers: fewer parameters, fewer bytes.
DECLARES: tuple[str, ...] = ("graph.parameters", "graph.sha256", "graph.size_bytes")

CHECK = "whether the physically smaller model runs measurably faster, and its accuracy per slice"


def apply(ctx: Context) -> dict[str, Any]:
    """Remove the weakest output channels of every Conv2d/Linear but the last (a Sequential
    chain), or the weakest hidden neurons of every transformer feed-forward block; dense export."""
    o: ChannelOptions = ctx.options
    module = ctx.torch_baseline()
    blocks = ffn_blocks(module)
    steps = None if blocks else plan(module, example(ctx))
    before = count(module)
    with deterministic(ctx.seed):
        if steps is None:
            smaller, layers = shrink_ffn(module, blocks, o.amount, o.norm)
        else:
            smaller, layers = shrink(module, steps, o.amount, o.norm)
        training = finetune(smaller, ctx, o) if o.finetune_epochs else None
    smaller.eval()
    export(
        smaller,
        example(ctx),
        ctx.model_out,
        ctx.preset.DYNAMIC_AXES if ctx.preset is not None else None,
    )
    after = count(smaller)
    details: dict[str, Any] = {
        "amount": o.amount,
        "norm": o.norm,
        "structure": "sequential channels" if steps is not None else "transformer FFN neurons",
        "layers": layers,
        "parameters": {"before": before, "after": after, "ratio": after / before},
    }
    if training is not None:
        details["finetune"] = training
    return details


def report(c: dict[str, Any]) -> list[str]:
    """Parameters and channels removed, the measured speedup, and accuracy per slice."""
    d = c.get("manifest", {}).get("details") or {}
    lines = []
    if d:
        p = d["parameters"]
        lines.append(
            f"- Parameters: {p['before']:,} -> {p['after']:,} ({percent(1 - p['ratio'])} removed; "
            f"{d['norm']} norm, {percent(d['amount'])} of each prunable layer's channels)."
        )
        chans = ", ".join(
            f"{v['layer']} ({v['type']}) {v['before']} -> {v['after']}" for v in d["layers"]
        )
        ffn = d.get("structure") == "transformer FFN neurons"
        lines.append(
            f"- {'Hidden neurons per FFN block' if ffn else 'Output channels per layer'}: {chans}."
        )
        if d.get("finetune"):
            lines.append(finetune_line(d["finetune"]))
    lines += speed_and_not_faster(
        c,
        "Smaller but not faster",
        "**: the parameters removed did not buy measurable speed there (fixed per-call costs, "
        "or layers the pruning left whole, may dominate).",
    )
    lines += accuracy_lines(c)
    lines += slice_lines(c)
    return lines
