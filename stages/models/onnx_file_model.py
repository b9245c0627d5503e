"""onnx_file: the user's ONNX model, loaded and checked (inputs, label output, external data),
and one run of its first rows in onnxruntime."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stages.errors import EvidenceError, ParamsError
from stages.models.options import OnnxFileParams
from stages.runtime import model_files

if TYPE_CHECKING:
    import onnx

_RESERVED = {"model.onnx", "model.pt", "manifest.json"}  # other files of the baseline folder
# dim_param spellings exporters use for "unknown": free axes, never tied to each other by name
_UNKNOWN_DIMS = {"", "?", "-1", "0", "unk", "unknown", "none", "null", "dynamic"}


@dataclass
class Tensor:
    name: str
    dtype: np.dtype[Any] | None  # None: not a plain tensor type this pipeline can feed
    dims: list[int | str | None]  # int: static (> 0); str: a real symbolic name; None: free
    rank_known: bool

    def shape_text(self) -> str:
        if not self.rank_known:
            return "unknown"
        return "[" + ", ".join("?" if d is None else str(d) for d in self.dims) + "]"


def tensor(value: onnx.ValueInfoProto) -> Tensor:
    from onnx import helper

    t = value.type
    if t.WhichOneof("value") != "tensor_type":
        return Tensor(value.name, None, [], False)
    tt = t.tensor_type
    try:
        dtype: np.dtype[Any] | None = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
    except (KeyError, TypeError, ValueError):
        dtype = None
    if dtype is not None and dtype.kind not in "biufc":
        dtype = None  # strings and other object types cannot come from an .npz without pickle
    dims = [_dim(d) for d in tt.shape.dim]
    return Tensor(value.name, dtype, dims, tt.HasField("shape"))


def _dim(d: onnx.TensorShapeProto.Dimension) -> int | str | None:
    """A declared axis: a size > 0, a real symbolic name, or None (free). Exporters write unknown
    sizes as dim_value -1 or 0 and as dim_param "", "?", "unk", ...: those tie no axes together."""
    if d.HasField("dim_value"):
        return int(d.dim_value) if d.dim_value > 0 else None
    if d.HasField("dim_param"):
        name = d.dim_param.strip()
        return None if name.lower() in _UNKNOWN_DIMS else name
    return None


def file_at(value: str, field_name: str, what: str) -> Path:
    path = Path(value)
    if not path.is_file():
        where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
        raise EvidenceError(
            f"model.{field_name} = {value!r}: no such file{where}; set model.{field_name} to "
            f"{what} (an absolute path, or one relative to the repository root)"
        )
    return path


def sha256(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


def _external_files(path: Path) -> list[Path]:
    """The external-data files the model's initializers reference, checked to exist beside it."""
    files = model_files(path)[1:]
    for f in files:
        rel = os.path.relpath(f, path.parent)
        if os.path.isabs(rel) or rel.split(os.sep)[0] == ".." or rel in _RESERVED:
            raise EvidenceError(
                f"model.path = {str(path)!r} references external data {rel!r}, which cannot "
                "be copied beside the baseline (it must sit in the model's folder and not be "
                f"named {' or '.join(sorted(_RESERVED))}): re-save the model with "
                "onnx.save(model, path, save_as_external_data=True, location='weights.data')"
            )
        if not f.is_file():
            raise EvidenceError(
                f"model.path = {str(path)!r} keeps its weights in {rel!r}, which is missing "
                f"(looked for {f}): put that file next to the model, or re-save the model with "
                "its weights inside"
            )
    return files


def load_model(p: OnnxFileParams) -> tuple[Path, list[Path], list[Tensor], Tensor]:
    """The model file, its external data, its feedable inputs and its label output."""
    import onnx

    path = file_at(p.path, "path", "your .onnx model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises several types for unreadable protobufs
        raise EvidenceError(
            f"model.path = {p.path!r} is not a readable ONNX model ({first_line(e)}): point "
            "model.path at a .onnx file (export one with torch.onnx.export)"
        ) from None
    files = _external_files(path)
    try:
        onnx.checker.check_model(str(path), full_check=False)
    except Exception as e:
        raise EvidenceError(
            f"model.path = {p.path!r} is not a valid ONNX model ({first_line(e)}): re-export "
            "it, or check it with onnx.checker.check_model"
        ) from None
    initializers = {i.name for i in model.graph.initializer}
    inputs = [tensor(v) for v in model.graph.input if v.name not in initializers]
    if not inputs:
        raise EvidenceError(f"model.path = {p.path!r}: the model has no inputs to feed")
    if not model.graph.output:
        raise EvidenceError(f"model.path = {p.path!r}: the model has no outputs")
    for t in inputs:
        if t.dtype is None:
            raise EvidenceError(
                f"model.path = {p.path!r}: input {t.name!r} is not a plain numeric tensor "
                "(sequence, map or string types cannot be fed from an .npz): export a model whose "
                "inputs are tensors"
            )
        if not t.rank_known or not t.dims:
            raise EvidenceError(
                f"model.path = {p.path!r}: input {t.name!r} "
                f"{'is a scalar' if t.rank_known else 'has no declared shape'}, but the pipeline "
                "feeds batches of rows on the first axis: re-export with a declared shape whose "
                "first axis is the batch"
            )
        if isinstance(t.dims[0], int):
            raise EvidenceError(
                f"model.path = {p.path!r}: input {t.name!r} has a fixed batch size of {t.dims[0]} "
                f"(shape {t.shape_text()}), but validation runs batches of up to 256 rows and the "
                "benchmark runs bench.batch_sizes: re-export with a dynamic first axis (torch: "
                'dynamic_shapes / dynamic_axes={"input": {0: "batch"}})'
            )
    output = _label_output(p, model.graph.output)
    if output.rank_known and len(output.dims) != 2:
        raise EvidenceError(
            f"model.path = {p.path!r}: the label output {output.name!r} has shape "
            f"{output.shape_text()}; predictions need (batch, classes) logits or probabilities: "
            "set model.label_output to the output of class scores, a 2-D tensor"
        )
    return path, files, inputs, output


def _label_output(p: OnnxFileParams, outputs: Sequence[onnx.ValueInfoProto]) -> Tensor:
    """The output named by model.label_output ("" = the first): the one the labels index."""
    names = [o.name for o in outputs]
    if p.label_output and p.label_output not in names:
        raise ParamsError(
            f"model.label_output = {p.label_output!r} is not an output of model.path = "
            f"{p.path!r}; its outputs are {names}: name the one the labels belong to, or leave "
            'it empty ("") for the first'
        )
    return tensor(outputs[names.index(p.label_output) if p.label_output else 0])


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def probe(
    path: Path,
    arrays: dict[str, np.ndarray],
    inputs: list[Tensor],
    p: OnnxFileParams,
    doubt: str = "",
) -> int:
    """Run the first rows once: the label output must be (rows, classes) scores.
    Where the declared shapes are ambiguous the session decides: the axes it holds fixed must
    match the data, and `doubt` (see onnx_file_inputs.check_arrays) is the message if the rows
    are refused."""
    import onnxruntime as ort

    feeds = {t.name: arrays[t.name][:2] for t in inputs}
    label = p.label_output  # checked against the graph's outputs by load_model
    so = ort.SessionOptions()
    so.log_severity_level = 3  # errors only
    try:
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own exception types
        raise EvidenceError(
            f"model.path = {p.path!r} does not load in onnxruntime ({first_line(e)}): check "
            "that onnxruntime supports its opset and operators"
        ) from None
    for meta in sess.get_inputs():
        if meta.name in arrays:
            _check_fixed_axes(p, meta.name, list(meta.shape), arrays[meta.name].shape)
    try:
        out = sess.run([label] if label else None, feeds)[0]
    except Exception as e:
        if doubt:  # the model refuses sizes it names alike: say which axes, not ORT's message
            raise ParamsError(doubt) from None
        raise EvidenceError(
            f"model.path = {p.path!r} failed on the first rows of model.data ({first_line(e)}): "
            "check that the .npz matches the model's inputs, and that onnxruntime supports its "
            "opset"
        ) from None
    rows = len(next(iter(feeds.values())))
    if not isinstance(out, np.ndarray) or out.ndim != 2 or out.shape[0] != rows:
        shape = list(out.shape) if isinstance(out, np.ndarray) else type(out).__name__
        raise EvidenceError(
            f"model.path = {p.path!r}: its label output on {rows} rows has shape {shape}; "
            f"predictions need ({rows}, classes) logits or probabilities (model.label_output "
            "names that output; the first by default)"
        )
    if not np.issubdtype(out.dtype, np.number):
        raise EvidenceError(
            f"model.path = {p.path!r}: its label output is {out.dtype}, not numeric"
        )
    return int(out.shape[1])


def _check_fixed_axes(p: OnnxFileParams, name: str, held: list[Any], got: tuple[int, ...]) -> None:
    """An axis ONNX Runtime holds fixed (an int in its input shape) must match the data. It reads
    a declared dim_value 0 as a fixed size 0, though exporters mean "unknown" by it."""
    for axis, size in enumerate(held):
        if isinstance(size, int) and size >= 0 and axis < len(got) and size != got[axis]:
            free = "batch" if axis == 0 else f"axis{axis}"
            raise EvidenceError(
                f"model.path = {p.path!r}: onnxruntime holds axis {axis} of input {name!r} at a "
                f"fixed size {size} (shape {held}), but model.data has {got[axis]} there: "
                "re-export with that axis dynamic, or free it in the file: m = onnx.load(path); "
                f"[v for v in m.graph.input if v.name == {name!r}][0].type.tensor_type.shape"
                f".dim[{axis}].dim_param = {free!r}; onnx.save(m, path)"
            )
