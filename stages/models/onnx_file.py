"""onnx_file: bring your own ONNX classifier and a labelled validation set as .npz.

The .npz holds one array per model input (named as the model's inputs, rows on the first axis,
finite values only), `labels` (integer class indices into the label output: model.label_output,
the first output by default; every other output is compared for fidelity only), optional
boolean masks `slice__<name>` over the rows, and optionally extra columns with the same row count
(shown in failure renderings; not boolean and not named `slice...`, so a misspelt mask is an
error, not a silent extra). A seeded share of the rows is held out for calibration; the rest is the
validation set. There is no train set: the model arrives trained, so techniques that retrain
report that they do not apply. Every check runs in `prepare`, before any training or timing.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stages.data import LABELS, MASK_PREFIX, Prepared, Slice
from stages.errors import EvidenceError, NotApplicable, ParamsError, require
from stages.runtime import model_files

if TYPE_CHECKING:
    import onnx
    import torch

MAX_CLASS_SLICES = 32  # more classes than this: no per-class slices (each would be tiny)
ROW = "npz_row"  # a column kept beside the inputs: each row's index in the user's .npz
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")  # slice names go into file names and CSV cells
_RESERVED = {"model.onnx", "model.pt", "manifest.json"}  # other files of the baseline folder
# dim_param spellings exporters use for "unknown": free axes, never tied to each other by name
_UNKNOWN_DIMS = {"", "?", "-1", "0", "unk", "unknown", "none", "null", "dynamic"}
_IMAGE_CHANNELS = (1, 3, 4)  # (C, H, W) rows with these channel counts render as PNG
_MIN_SIDE = 4  # px: a smaller (H, W) is a short table, not a picture
_PNG_SIDE = 112  # px: failure images are scaled up (nearest neighbour) to at least this side


@dataclass
class Params:
    path: str = ""  # the .onnx file (absolute, or relative to the repository root)
    data: str = ""  # the labelled .npz
    calibration_share: float = 0.2  # share of the .npz rows held out for calibration (seeded)
    class_names: list[str] = field(default_factory=list)  # default: "0".."K-1"
    label_output: str = ""  # the output the labels index (its argmax is the prediction); "" = first

    def __post_init__(self) -> None:
        require(bool(self.path), "path", self.path, "the path of your .onnx model")
        require(bool(self.data), "data", self.data, "the path of your labelled .npz")
        require(
            0 < self.calibration_share < 1,
            "calibration_share",
            self.calibration_share,
            "a share in (0, 1)",
        )
        require(
            all(isinstance(c, str) and c for c in self.class_names),
            "class_names",
            self.class_names,
            "non-empty strings",
        )
        require(
            len(set(self.class_names)) == len(self.class_names),
            "class_names",
            self.class_names,
            "distinct names",
        )


@dataclass
class _Tensor:
    name: str
    dtype: np.dtype[Any] | None  # None: not a plain tensor type this pipeline can feed
    dims: list[int | str | None]  # int: static (> 0); str: a real symbolic name; None: free
    rank_known: bool

    def shape_text(self) -> str:
        if not self.rank_known:
            return "unknown"
        return "[" + ", ".join("?" if d is None else str(d) for d in self.dims) + "]"


def _tensor(value: onnx.ValueInfoProto) -> _Tensor:
    from onnx import helper

    t = value.type
    if t.WhichOneof("value") != "tensor_type":
        return _Tensor(value.name, None, [], False)
    tt = t.tensor_type
    try:
        dtype: np.dtype[Any] | None = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
    except (KeyError, TypeError, ValueError):
        dtype = None
    if dtype is not None and dtype.kind not in "biufc":
        dtype = None  # strings and other object types cannot come from an .npz without pickle
    dims = [_dim(d) for d in tt.shape.dim]
    return _Tensor(value.name, dtype, dims, tt.HasField("shape"))


def _dim(d: onnx.TensorShapeProto.Dimension) -> int | str | None:
    """A declared axis: a size > 0, a real symbolic name, or None (free). Exporters write unknown
    sizes as dim_value -1 or 0 and as dim_param "", "?", "unk", ...: those tie no axes together."""
    if d.HasField("dim_value"):
        return int(d.dim_value) if d.dim_value > 0 else None
    if d.HasField("dim_param"):
        name = d.dim_param.strip()
        return None if name.lower() in _UNKNOWN_DIMS else name
    return None


def _file(value: str, field_name: str, what: str) -> Path:
    path = Path(value)
    if not path.is_file():
        where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
        raise EvidenceError(
            f"model.{field_name} = {value!r}: no such file{where}; set model.{field_name} to "
            f"{what} (an absolute path, or one relative to the repository root)"
        )
    return path


def _sha256(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


def _external_files(path: Path) -> list[Path]:
    """The external-data files the model's initializers reference, checked to exist beside it."""
    import os

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


def _load_model(p: Params) -> tuple[Path, list[Path], list[_Tensor], _Tensor]:
    """The model file, its external data, its feedable inputs and its label output."""
    import onnx

    path = _file(p.path, "path", "your .onnx model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises several types for unreadable protobufs
        raise EvidenceError(
            f"model.path = {p.path!r} is not a readable ONNX model ({_first_line(e)}): point "
            "model.path at a .onnx file (export one with torch.onnx.export)"
        ) from None
    files = _external_files(path)
    try:
        onnx.checker.check_model(str(path), full_check=False)
    except Exception as e:
        raise EvidenceError(
            f"model.path = {p.path!r} is not a valid ONNX model ({_first_line(e)}): re-export "
            "it, or check it with onnx.checker.check_model"
        ) from None
    initializers = {i.name for i in model.graph.initializer}
    inputs = [_tensor(v) for v in model.graph.input if v.name not in initializers]
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


def _label_output(p: Params, outputs: Sequence[onnx.ValueInfoProto]) -> _Tensor:
    """The output named by model.label_output ("" = the first): the one the labels index."""
    names = [o.name for o in outputs]
    if p.label_output and p.label_output not in names:
        raise ParamsError(
            f"model.label_output = {p.label_output!r} is not an output of model.path = "
            f"{p.path!r}; its outputs are {names}: name the one the labels belong to, or leave "
            'it empty ("") for the first'
        )
    return _tensor(outputs[names.index(p.label_output) if p.label_output else 0])


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _load_data(p: Params) -> tuple[Path, dict[str, np.ndarray]]:
    path = _file(p.data, "data", "your labelled .npz")
    try:
        with np.load(path, allow_pickle=False) as z:
            return path, {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise EvidenceError(
            f"model.data = {p.data!r} is not a readable .npz of plain arrays ({_first_line(e)}): "
            "write it with np.savez(path, <input name>=..., labels=...) (no object arrays)"
        ) from None


def _check_arrays(
    p: Params, arrays: dict[str, np.ndarray], inputs: list[_Tensor]
) -> tuple[int, list[str], list[str], str]:
    """Rows, slice names, extra columns and a doubt; an error for every array the pipeline cannot
    use. The doubt ("" if none) says which axes the model names alike but the data sizes apart:
    a declared name is only a hint, so `prepare` lets a real session decide (see _probe)."""
    names = sorted(arrays)
    if LABELS not in arrays:
        raise ParamsError(
            f"model.data = {p.data!r} has no {LABELS!r} array (it holds {names}): add the true "
            f"class of every row, e.g. np.savez(path, ..., {LABELS}=y) with integer y"
        )
    y = arrays[LABELS]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ParamsError(
            f"model.data = {p.data!r}: {LABELS!r} is {y.dtype} of shape {list(y.shape)}; it must "
            f"be a 1-D integer array of class indices (e.g. {LABELS}=y.astype(np.int64))"
        )
    n = len(y)
    if n < 2:
        raise ParamsError(
            f"model.data = {p.data!r} has {n} row(s); it needs at least 2 (calibration and "
            "validation)"
        )
    for t in inputs:
        if t.name not in arrays:
            raise ParamsError(
                f"model.data = {p.data!r} has no array {t.name!r}, an input the model expects "
                f"(the model's inputs: {[i.name for i in inputs]}; the file holds {names}): "
                f"save it under that name, e.g. np.savez(path, **{{{t.name!r}: x}}, {LABELS}=y)"
            )
        x = arrays[t.name]
        if x.ndim != len(t.dims):
            raise ParamsError(
                f"model.data = {p.data!r}: input {t.name!r} has shape {list(x.shape)} ({x.ndim}-D) "
                f"but the model declares {t.shape_text()} ({len(t.dims)}-D): reshape it to "
                "(rows, ...) as the model declares"
            )
        if len(x) != n:
            raise ParamsError(
                f"model.data = {p.data!r}: input {t.name!r} has {len(x)} rows but {LABELS!r} has "
                f"{n}: every array needs one row per label on its first axis"
            )
        for axis, (got, want) in enumerate(zip(x.shape, t.dims, strict=True)):
            if axis and isinstance(want, int) and got != want:
                raise ParamsError(
                    f"model.data = {p.data!r}: input {t.name!r} has shape {list(x.shape)} but "
                    f"the model declares {t.shape_text()}: axis {axis} is {got}, the model "
                    f"expects {want}; reshape or resize the data to match"
                )
        if x.dtype != t.dtype:
            raise ParamsError(
                f"model.data = {p.data!r}: input {t.name!r} is {x.dtype} but the model expects "
                f"{t.dtype}: convert it before saving, e.g. x.astype(np.{t.dtype})"
            )
        _check_finite(p, t.name, x)
    doubt = ""
    named: dict[str, tuple[str, int, int]] = {}  # a symbolic axis name -> first (input, axis, size)
    for t in inputs:
        for axis, want in enumerate(t.dims):
            if not axis or not isinstance(want, str):
                continue
            got = int(arrays[t.name].shape[axis])
            first = named.setdefault(want, (t.name, axis, got))
            if first[2] != got and not doubt:
                doubt = (
                    f"model.data = {p.data!r}: axis {axis} of input {t.name!r} is {got} but axis "
                    f"{first[1]} of input {first[0]!r} is {first[2]}, and the model names both "
                    f"{want!r} (one size): pad or cut the arrays to a common size"
                )
    model_inputs = {t.name for t in inputs}
    slices, extras = [], []
    for name in names:
        arr = arrays[name]
        if name != LABELS and name not in model_inputs and not name.startswith(MASK_PREFIX):
            _check_extra(p, name, arr, n, sorted(model_inputs))
        if name.startswith(MASK_PREFIX):
            sname = name[len(MASK_PREFIX) :]
            if not _SAFE_NAME.match(sname):
                raise ParamsError(
                    f"model.data = {p.data!r}: slice mask {name!r} needs a name of letters, "
                    f"digits, '_', '.' or '-' after {MASK_PREFIX!r}: rename it"
                )
            if arr.dtype != np.bool_ or arr.shape != (n,):
                raise ParamsError(
                    f"model.data = {p.data!r}: slice mask {name!r} is {arr.dtype} of shape "
                    f"{list(arr.shape)}; it must be a boolean array of shape [{n}] (one flag per "
                    f"row), e.g. {name}=(condition).astype(bool)"
                )
            slices.append(sname)
        elif name != LABELS and name not in model_inputs:
            if arr.ndim == 0 or len(arr) != n:
                raise ParamsError(
                    f"model.data = {p.data!r}: array {name!r} is neither a model input "
                    f"({sorted(model_inputs)}), {LABELS!r}, nor a {MASK_PREFIX}<name> mask, and "
                    f"does not have one row per label ({n}): rename or remove it"
                )
            extras.append(name)
    return n, slices, extras, doubt


def _check_finite(p: Params, name: str, x: np.ndarray) -> None:
    """NaN or inf in an input: such rows have no meaningful prediction and poison the figures."""
    if x.dtype.kind not in "fc" or x.size == 0:
        return
    bad = np.flatnonzero(~np.isfinite(x).all(axis=tuple(range(1, x.ndim))))
    if len(bad):
        first = ", ".join(str(int(i)) for i in bad[:5]) + (", ..." if len(bad) > 5 else "")
        raise ParamsError(
            f"model.data = {p.data!r}: input {name!r} holds NaN or infinite values in "
            f"{len(bad)} of {len(x)} rows (rows {first} of the .npz): clean those values "
            "(e.g. impute them, or np.nan_to_num) or drop those rows from every array before "
            "saving"
        )


def _check_extra(p: Params, name: str, arr: np.ndarray, n: int, model_inputs: list[str]) -> None:
    """An array that is not an input, `labels` or a mask is kept as an extra column only when it
    cannot be a misspelt mask: named "slice..." or boolean per row, it is refused."""
    stem = MASK_PREFIX.rstrip("_")  # "slice"
    if name.lower().startswith(stem):
        rest = name[len(stem) :].lstrip("_-. ") or "<name>"
        raise ParamsError(
            f"model.data = {p.data!r}: array {name!r} looks like a slice mask, but masks are "
            f"named {MASK_PREFIX!r} + a name (two underscores): rename it to "
            f"{MASK_PREFIX + rest!r}, or remove it"
        )
    if arr.dtype == np.bool_ and arr.shape == (n,):
        raise ParamsError(
            f"model.data = {p.data!r}: array {name!r} is a boolean flag per row, like a slice "
            f"mask, but is neither a model input ({model_inputs}) nor named {MASK_PREFIX}<name>: "
            f"rename it to {MASK_PREFIX + name!r} to make it a slice, or save it as integers "
            "to keep it as a column shown beside failures"
        )


def _probe(
    path: Path, arrays: dict[str, np.ndarray], inputs: list[_Tensor], p: Params, doubt: str = ""
) -> int:
    """Run the first rows once: the label output must be (rows, classes) scores.
    Where the declared shapes are ambiguous the session decides: the axes it holds fixed must
    match the data, and `doubt` (see _check_arrays) is the message if the rows are refused."""
    import onnxruntime as ort

    feeds = {t.name: arrays[t.name][:2] for t in inputs}
    label = p.label_output  # checked against the graph's outputs by _load_model
    so = ort.SessionOptions()
    so.log_severity_level = 3  # errors only
    try:
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own exception types
        raise EvidenceError(
            f"model.path = {p.path!r} does not load in onnxruntime ({_first_line(e)}): check "
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
            f"model.path = {p.path!r} failed on the first rows of model.data ({_first_line(e)}): "
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


def _check_fixed_axes(p: Params, name: str, held: list[Any], got: tuple[int, ...]) -> None:
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


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()


def prepare(p: Params, seed: int) -> Prepared:
    """Check the model and the .npz against each other, then split calibration / validation."""
    model_path, external, inputs, output = _load_model(p)
    data_path, arrays = _load_data(p)
    n, slice_names, extras, doubt = _check_arrays(p, arrays, inputs)
    classes = _probe(model_path, arrays, inputs, p, doubt)  # the output width, from a real run
    y = arrays[LABELS].astype(np.int64)
    if y.min() < 0 or y.max() >= classes:
        raise ParamsError(
            f"model.data = {p.data!r}: {LABELS!r} range from {int(y.min())} to {int(y.max())}, "
            f"but the model's label output {output.name!r} has {classes} classes: labels must be "
            f"class indices 0..{classes - 1} in the order of the model's outputs"
        )
    if p.class_names and len(p.class_names) != classes:
        raise ParamsError(
            f"model.class_names has {len(p.class_names)} names but the model's label output has "
            f"{classes} classes: give one name per class, in order, or leave it empty ([])"
        )
    class_names = list(p.class_names) or [str(c) for c in range(classes)]

    n_cal = round(p.calibration_share * n)
    if not 1 <= n_cal <= n - 1:
        raise ParamsError(
            f"model.calibration_share = {p.calibration_share} of {n} rows leaves "
            f"{n_cal} for calibration and {n - n_cal} for validation; both need at least one "
            "row: change the share or add rows"
        )
    perm = np.random.default_rng(seed).permutation(n)
    cal, val = np.sort(perm[:n_cal]), np.sort(perm[n_cal:])  # each part in file order
    columns = [t.name for t in inputs] + extras
    validation = {k: arrays[k][val] for k in columns}
    validation[LABELS] = y[val]
    calibration = {k: arrays[k][cal] for k in columns}
    calibration[LABELS] = y[cal]
    if ROW not in arrays:  # failure renderings then name the row of the user's file
        validation[ROW], calibration[ROW] = val.astype(np.int64), cal.astype(np.int64)

    slices = []
    for sname in slice_names:
        mask = arrays[MASK_PREFIX + sname][val]
        if not mask.any():
            raise ParamsError(
                f"model.data = {p.data!r}: slice {sname!r} selects "
                f"{int(arrays[MASK_PREFIX + sname].sum())} row(s), none left in validation after "
                f"holding out model.calibration_share = {p.calibration_share}: give the slice "
                "more rows, lower the share, or drop the mask"
            )
        validation[MASK_PREFIX + sname] = mask
        slices.append(Slice(sname, "validation", sname, f"rows flagged by {MASK_PREFIX}{sname}"))
    class_slices = classes <= MAX_CLASS_SLICES
    if class_slices:
        taken = set(slice_names)
        for c, cname in enumerate(class_names):
            sname = f"class_{_slug(cname) or c}"
            if sname in taken:
                sname = f"class_{c}"
            if sname in taken or MASK_PREFIX + sname in validation:
                continue
            mask = validation[LABELS] == c
            if not mask.any():
                continue  # no validation row of this class: no accuracy to report
            taken.add(sname)
            validation[MASK_PREFIX + sname] = mask
            slices.append(Slice(sname, "validation", sname, f"validation rows of class {cname}"))

    info = {
        "source": str(model_path),
        "model_sha256": _sha256([model_path, *external]),
        "data": str(data_path),
        "data_sha256": _sha256([data_path]),
        "rows": {"calibration": int(n_cal), "validation": int(n - n_cal)},
        "output": output.name,
        "label_output": output.name,  # validate's predictions are this output's argmax
        "input_shapes": {t.name: t.shape_text() for t in inputs},
        "extra_columns": extras,
        "class_slices": class_slices,
    }
    sets = {"calibration": calibration, "validation": validation}
    return Prepared([t.name for t in inputs], class_names, sets, slices, info)


def provide_onnx(p: Params, data: Prepared, out: Path) -> dict[str, Any]:
    """Copy the model (and its external-data files) to `out`; refuse a model changed since
    `prepare` checked it."""
    path, external, inputs, output = _load_model(p)
    digest = _sha256([path, *external])
    expected = data.info.get("model_sha256")
    if expected is not None and digest != expected:
        raise EvidenceError(
            f"model.path = {p.path!r} changed since the prepare stage checked it: rerun "
            "`dvc repro -f -s prepare` (DVC does not track files outside the repository)"
        )
    if [t.name for t in inputs] != data.inputs:
        raise EvidenceError(
            f"model.path = {p.path!r} has inputs {[t.name for t in inputs]} but the prepared "
            f"data feeds {data.inputs}: rerun `dvc repro -f -s prepare`"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, out)
    copied = [out.name]
    for f in external:
        rel = f.relative_to(path.parent)
        (out.parent / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, out.parent / rel)
        copied.append(str(rel))
    return {
        "source": str(path),
        "sha256": digest,
        "files": copied,
        "size_bytes": sum(f.stat().st_size for f in [path, *external]),
        "output": output.name,
        "trained": "no: the model arrived as ONNX",
    }


def build(p: Params, num_classes: int) -> torch.nn.Module:
    raise NotApplicable(
        f"onnx_file models arrive as ONNX ({p.path}): there is no framework model to build"
    )


def train(p: Params, data: Prepared, seed: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    raise NotApplicable(
        f"onnx_file models arrive trained as ONNX ({p.path}): there is nothing to train; the "
        "baseline stage copies the file (provide_onnx)"
    )


def render_failure(row: dict[str, np.ndarray]) -> tuple[str, bytes]:
    """A failing row as a file: its image-shaped arrays as one PNG when every other array of the
    row is a single value (kept as PNG text fields), else a Markdown table of all arrays."""
    arrays = {k: _one(v) for k, v in row.items()}
    images = {k: v for k, v in arrays.items() if _image_shaped(v)}
    if images and all(v.size == 1 for k, v in arrays.items() if k not in images):
        scalars = {k: _cell(v.reshape(-1)[0]) for k, v in arrays.items() if k not in images}
        return ".png", _png([images[k] for k in sorted(images)], scalars)
    return _table(arrays)


def _one(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    return arr[0] if arr.ndim and len(arr) == 1 else arr  # a row arrives as a batch of one


def _image_shaped(a: np.ndarray) -> bool:
    """(C, H, W) with C in 1, 3, 4, or (H, W); numbers or flags, at least _MIN_SIDE a side."""
    if a.dtype.kind not in "biuf" or a.ndim not in (2, 3):
        return False
    if a.ndim == 3 and a.shape[0] not in _IMAGE_CHANNELS:
        return False
    return min(a.shape[-2:]) >= _MIN_SIDE


def _picture(a: np.ndarray) -> Any:
    """An image-shaped array as a PIL image: its own min..max to 0..255, scaled up by pixels."""
    from PIL import Image

    x = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(x.min()), float(x.max())
    x = (x - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(x)
    pixels = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    if pixels.ndim == 3:  # (C, H, W) -> (H, W, C), or (H, W) for one channel
        pixels = pixels[0] if pixels.shape[0] == 1 else np.moveaxis(pixels, 0, -1)
    img = Image.fromarray(pixels)
    scale = max(1, -(-_PNG_SIDE // max(img.size)))  # ceil: the longer side reaches _PNG_SIDE
    return img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)


def _png(images: list[np.ndarray], text: dict[str, str]) -> bytes:
    """The images side by side (4 px apart) as one PNG; `text` goes into its tEXt fields."""
    import io

    from PIL import Image, PngImagePlugin

    pictures = [_picture(a) for a in images]
    mode = "RGBA" if any(i.mode == "RGBA" for i in pictures) else "RGB"
    if all(i.mode == "L" for i in pictures):
        mode = "L"
    gap = 4
    width = sum(i.width for i in pictures) + gap * (len(pictures) - 1)
    canvas = Image.new(mode, (width, max(i.height for i in pictures)))
    x = 0
    for i in pictures:
        canvas.paste(i.convert(mode), (x, 0))
        x += i.width + gap
    info = PngImagePlugin.PngInfo()
    for k, v in sorted(text.items()):  # PNG keys: 1-79 Latin-1 characters
        info.add_text(k.encode("latin-1", "replace")[:79].decode("latin-1"), v)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def _table(arrays: dict[str, np.ndarray]) -> tuple[str, bytes]:
    """Markdown: per array its dtype, shape, range and first values."""
    lines = [
        "| array | dtype | shape | min | max | mean | first values |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in sorted(arrays):
        one = arrays[name]
        flat = one.reshape(-1)
        if flat.size and np.issubdtype(flat.dtype, np.number) and flat.dtype != np.bool_:
            stats = [
                f"{flat.min():.6g}",
                f"{flat.max():.6g}",
                f"{flat.astype(np.float64).mean():.6g}",
            ]
        else:
            stats = ["", "", ""]
        head = " ".join(_cell(v) for v in flat[:8]) + (" ..." if flat.size > 8 else "")
        lines.append(f"| {name} | {one.dtype} | {list(one.shape)} | {' | '.join(stats)} | {head} |")
    return ".md", ("\n".join(lines) + "\n").encode()


def _cell(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{v:.6g}"
    return str(v).replace("|", "\\|").replace("\n", " ")[:40]
