"""The baseline's files on disk: export torch -> ONNX, the parity check, reloading the weights."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stages.onnx_graph import subgraphs
from stages.stats import max_abs_error

if TYPE_CHECKING:
    from stages.models.preset import Preset

MODEL_FILE = "model.onnx"
WEIGHTS_FILE = "model.pt"
MANIFEST_FILE = "manifest.json"
# the baseline's logits on the train split, kept when its training computed them anyway
TRAIN_LOGITS_FILE = "train_logits.npy"
# and its pooled embeddings of the train split (distill's embedding loss), kept likewise
TRAIN_EMBEDDINGS_FILE = "train_embeddings.npy"


class ParityError(RuntimeError):
    """The exported graph does not compute what the framework model computes."""


def export(
    module: Any,
    example: dict[str, np.ndarray],
    path: Path,
    dynamic_axes: dict[str, dict[int, str]] | None = None,
) -> None:
    """torch -> ONNX, weights in one file. Every input gets a dynamic batch axis (axis 0)
    unless `dynamic_axes` names the dynamic axes per input, e.g. {"ids": {0: "batch", 1: "seq"}};
    axes of the same name share one dimension."""
    import torch

    names = list(example)
    axes = dynamic_axes or {name: {0: "batch"} for name in names}
    dims = {d: torch.export.Dim(d) for spec in axes.values() for d in spec.values()}
    shapes = tuple({axis: dims[d] for axis, d in axes.get(name, {}).items()} for name in names)
    args = tuple(torch.from_numpy(v) for v in example.values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=True,
            external_data=False,
            verbose=False,
            input_names=names,
            output_names=["logits"],
            dynamic_shapes=shapes,
        )
    strip_provenance(path)


def strip_provenance(path: Path) -> None:
    """Drop what the exporter records about where it ran: every node's metadata (FX stack traces
    with the checkout's absolute paths and line numbers) and doc strings. The model keeps its
    producer and opset; two checkouts of one commit in different folders get the same bytes."""
    import onnx

    model = onnx.load(str(path))

    def clean(graph: onnx.GraphProto) -> None:
        graph.doc_string = ""
        del graph.metadata_props[:]
        for node in graph.node:
            node.doc_string = ""
            del node.metadata_props[:]
            for sub in subgraphs(node):
                clean(sub)
        for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
            value.doc_string = ""
            del value.metadata_props[:]

    clean(model.graph)
    for function in model.functions:
        for node in function.node:
            node.doc_string = ""
            del node.metadata_props[:]
    model.doc_string = ""
    onnx.save(model, str(path))


PARITY_ROWS, PARITY_CHUNK = 512, 64  # real rows compared, and rows per call (bounded memory)


def parity(
    module: Any,
    path: Path,
    feeds: dict[str, np.ndarray],
    tolerance: float,
    trim: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None,
) -> float:
    """Max abs error of ONNX Runtime's logits against torch's on the first PARITY_ROWS real
    inputs, in chunks (each cut to its natural shape by `trim`); raise above tolerance."""
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    n = min(PARITY_ROWS, len(next(iter(feeds.values()))))
    err = 0.0
    for i in range(0, n, PARITY_CHUNK):
        chunk = {k: v[i : min(i + PARITY_CHUNK, n)] for k, v in feeds.items()}
        chunk = trim(chunk) if trim else chunk
        with torch.no_grad():
            expected = module(*(torch.from_numpy(v) for v in chunk.values())).numpy()
        err = max(err, max_abs_error(expected, sess.run(None, chunk)[0]))
    if not err <= tolerance:
        raise ParityError(
            f"exported ONNX differs from torch by {err:.3g} (max abs logit error), above "
            f"model.parity_tolerance = {tolerance:g}: the export is wrong; check unsupported ops"
        )
    return err


def load_torch(preset: Preset, model_params: Any, num_classes: int, weights: Path) -> Any:
    """The baseline's torch module, rebuilt from its preset and saved weights (for training
    techniques: fine-tuning, pruning, distillation)."""
    import torch

    module = preset.build(model_params, num_classes)
    module.load_state_dict(torch.load(weights, weights_only=True))
    return module.eval()
