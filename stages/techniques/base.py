"""What every technique shares: its context, and how it says it does not apply."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stages.data import Prepared
from stages.errors import NotApplicable
from stages.export import MODEL_FILE, WEIGHTS_FILE, load_torch
from stages.onnx_graph import graph_summary

if TYPE_CHECKING:
    from stages.models.preset import Preset

# What a graph edit (fusion) may change: its ops, dtypes and bytes; never the model's inputs and
# outputs. The parameter count changes where weights held in Constant nodes become initializers.
GRAPH_EDIT: tuple[str, ...] = (
    "graph.op_types",
    "graph.dtypes",
    "graph.parameters",
    "graph.nodes",
    "graph.sha256",
    "graph.size_bytes",
)
# A graph rewrite (quantization) may also raise an older model's opset to the one its ops need
# (per-channel DequantizeLinear needs 13): checked and recorded in details.opset_upgrade.
GRAPH_REWRITE: tuple[str, ...] = (*GRAPH_EDIT, "graph.opset")


def check_io(
    baseline: Path, candidate: Path, changed_by: str, error: type[Exception] = RuntimeError
) -> None:
    """Raise `error` when the candidate's inputs or outputs differ from the baseline's."""
    before, after = graph_summary(baseline)["io"], graph_summary(candidate)["io"]
    if before != after:
        raise error(
            f"{changed_by} changed the model's inputs/outputs: {before} -> {after}; "
            "a technique may not change graph.io"
        )


@dataclass(frozen=True)
class Context:
    """What a technique gets: the baseline, its options, the prepared data, where to write."""

    baseline: Path  # the baseline ONNX file
    options: Any  # the technique's options dataclass
    data: Prepared
    out: Path  # write the candidate model to out / MODEL_FILE
    seed: int
    preset: Preset | None = None  # the model preset (build, train); None for ONNX-only models
    model_params: Any = None  # the preset's params dataclass

    def torch_baseline(self) -> Any:
        """The baseline as a torch module, for techniques that retrain or restructure it."""
        weights = self.baseline.parent / WEIGHTS_FILE
        if self.preset is None or not weights.is_file():
            raise NotApplicable(
                "the baseline has no torch weights to start from (an ONNX-only model)"
            )
        return load_torch(self.preset, self.model_params, len(self.data.class_names), weights)

    @property
    def model_out(self) -> Path:
        return self.out / MODEL_FILE
