"""The control stack: what each shipped step leaves for the next, and whether a technique can
apply on top of it (NOT APPLICABLE with the reason, else None).

A step is judged by what the control offers after the steps before it: a float graph (a graph
rewrite such as INT8 or fp16 needs one: it would otherwise change an already-quantized model),
the float torch model (pruning and distillation retrain it; only the baseline's `model.pt`
is one, and every step that rewrites or retrains the model leaves an ONNX graph only), and
single-stream serving (a serving change such as batching is the last step of a stack).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

FLOAT, INT8, FP16 = "float", "INT8", "float16"
# what a technique needs of the control: its float torch model, or a float graph
NEEDS_TORCH = frozenset({"distill", "prune_magnitude", "prune_channels"})
NEEDS_FLOAT_GRAPH = frozenset({"int8_dynamic", "int8_static", "fp16"})
# the graph a technique leaves (others keep the control's)
MAKES = {"int8_dynamic": INT8, "int8_static": INT8, "fp16": FP16}
# steps that leave the very same model file (the torch model still describes it)
SAME_FILE = frozenset({"identity", "batching"})
SERVING = frozenset({"batching"})  # changes how the model is served, not the model
# techniques whose own check needs outputs unchanged, which an INT8 graph's fused or batched
# integer kernels do not keep (measured on the default model's ladder: both refused themselves)
EXACT_ON_FLOAT = frozenset({"fuse"})  # fusion must match the control within its tolerance
PER_CALL_SCALES = frozenset({"int8_dynamic"})  # activation scales computed per call


@dataclass(frozen=True)
class State:
    """What the control offers the next step, and which step last took each away."""

    graph: str = FLOAT
    torch: bool = True  # the float torch model (the baseline's weights) still describes it
    serving: str = ""  # the serving change the control already carries ("" = single stream)
    torch_lost_by: str = ""
    graph_made_by: str = ""


def start(has_weights: bool) -> State:
    """The baseline: a float graph, with its torch model when the baseline kept weights."""
    return State(torch=has_weights, torch_lost_by="" if has_weights else "the baseline")


def after(state: State, technique: str) -> State:
    """The control after `technique` shipped on top of `state`."""
    out = state
    if technique in MAKES:
        out = replace(out, graph=MAKES[technique], graph_made_by=technique)
    if technique not in SAME_FILE and out.torch:
        out = replace(out, torch=False, torch_lost_by=technique)
    if technique in SERVING:
        out = replace(out, serving=technique)
    return out


def not_applicable(state: State, technique: str) -> str | None:
    """Why `technique` cannot apply on top of a control in `state` (None when it can)."""
    if state.serving:
        return (
            f"the control already serves through {state.serving} (a serving change): a serving "
            "change is the last step of a stack, so promote model changes before it"
        )
    if technique in NEEDS_FLOAT_GRAPH and state.graph != FLOAT:
        kind = "a quantized" if state.graph == INT8 else "an already-converted"
        return (
            f"the control is an {state.graph} graph ({state.graph_made_by}): {technique} rewrites "
            f"a float graph and would change {kind} model"
        )
    if technique in EXACT_ON_FLOAT and state.graph == INT8:
        return (
            f"the control is an INT8 graph ({state.graph_made_by}): {technique} must leave its "
            "outputs unchanged, and ONNX Runtime's fusions of quantized operators requantize them"
        )
    if technique in SERVING and state.graph_made_by in PER_CALL_SCALES:
        return (
            f"{state.graph_made_by} quantizes activations with scales computed per call, so a "
            f"row's output depends on the rows batched with it: {technique} cannot be "
            "batch-invariant on this control"
        )
    if technique in NEEDS_TORCH and not state.torch:
        return (
            f"{technique} retrains the float torch model, and the control has none: "
            f"{state.torch_lost_by} left an ONNX graph only"
        )
    return None


def state_of(stack: list[str], has_weights: bool) -> State:
    """The state after every step of `stack`, in order, from the baseline."""
    state = start(has_weights)
    for technique in stack:
        state = after(state, technique)
    return state


def control_dir(paths: Any, control: dict[str, Any]) -> Path:
    """Where the control's model lies: the control stage's folder, or the baseline's for an
    empty stack (then every stage reads the baseline exactly as without a stack)."""
    return Path(paths.control if control else paths.baseline)
