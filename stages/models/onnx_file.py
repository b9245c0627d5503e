"""onnx_file: bring your own ONNX classifier and a labelled validation set as .npz.

The .npz holds one array per model input (named as the model's inputs, rows on the first axis),
`labels` (integer class indices into the model's first output), optional boolean masks
`slice__<name>` over the rows, and optionally extra columns with the same row count (shown in
failure renderings). A seeded share of the rows is held out for calibration; the rest is the
validation set. There is no train set: the model arrives trained, so techniques that retrain
report that they do not apply. Every check runs in `prepare`, before any training or timing.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stages.data import LABELS, MASK_PREFIX, Prepared, Slice

if TYPE_CHECKING:
    import onnx
    import torch

MAX_CLASS_SLICES = 32  # more classes than this: no per-class slices (each would be tiny)
ROW = "npz_row"  # a column kept beside the inputs: each row's index in the user's .npz
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")  # slice names go into file names and CSV cells
_RESERVED = {"model.onnx", "model.pt", "manifest.json"}  # other files of the baseline folder


@dataclass
class Params:
    path: str = ""  # the .onnx file (absolute, or relative to the repository root)
    data: str = ""  # the labelled .npz
    calibration_share: float = 0.2  # share of the .npz rows held out for calibration (seeded)
    class_names: list[str] = field(default_factory=list)  # default: "0".."K-1"

    def __post_init__(self) -> None:
        from stages.params import _require

        _require(bool(self.path), "path", self.path, "the path of your .onnx model")
        _require(bool(self.data), "data", self.data, "the path of your labelled .npz")
        _require(
            0 < self.calibration_share < 1,
            "calibration_share",
            self.calibration_share,
            "a share in (0, 1)",
        )
        _require(
            all(isinstance(c, str) and c for c in self.class_names),
            "class_names",
            self.class_names,
            "non-empty strings",
        )
        _require(
            len(set(self.class_names)) == len(self.class_names),
            "class_names",
            self.class_names,
            "distinct names",
        )


@dataclass
class _Tensor:
    name: str
    dtype: np.dtype[Any] | None  # None: not a plain tensor type this pipeline can feed
    dims: list[int | str | None]  # int: static; str: symbolic; None: unknown
    rank_known: bool

    def shape_text(self) -> str:
        if not self.rank_known:
            return "unknown"
        return "[" + ", ".join("?" if d is None else str(d) for d in self.dims) + "]"


def _error(message: str) -> Exception:
    from stages.params import ParamsError

    return ParamsError(message)


def _evidence(message: str) -> Exception:
    from stages.io import EvidenceError

    return EvidenceError(message)


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
    dims: list[int | str | None] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return _Tensor(value.name, dtype, dims, tt.HasField("shape"))


def _file(value: str, field_name: str, what: str) -> Path:
    path = Path(value)
    if not path.is_file():
        where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
        raise _evidence(
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

    from stages.runtime import model_files

    files = model_files(path)[1:]
    for f in files:
        rel = os.path.relpath(f, path.parent)
        if os.path.isabs(rel) or rel.split(os.sep)[0] == ".." or rel in _RESERVED:
            raise _evidence(
                f"model.path = {str(path)!r} references external data {rel!r}, which cannot "
                "be copied beside the baseline (it must sit in the model's folder and not be "
                f"named {' or '.join(sorted(_RESERVED))}): re-save the model with "
                "onnx.save(model, path, save_as_external_data=True, location='weights.data')"
            )
        if not f.is_file():
            raise _evidence(
                f"model.path = {str(path)!r} keeps its weights in {rel!r}, which is missing "
                f"(looked for {f}): put that file next to the model, or re-save the model with "
                "its weights inside"
            )
    return files


def _load_model(p: Params) -> tuple[Path, list[Path], list[_Tensor], _Tensor]:
    """The model file, its external data, its feedable inputs and its first output."""
    import onnx

    path = _file(p.path, "path", "your .onnx model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises several types for unreadable protobufs
        raise _evidence(
            f"model.path = {p.path!r} is not a readable ONNX model ({_first_line(e)}): point "
            "model.path at a .onnx file (export one with torch.onnx.export)"
        ) from None
    files = _external_files(path)
    try:
        onnx.checker.check_model(str(path), full_check=False)
    except Exception as e:
        raise _evidence(
            f"model.path = {p.path!r} is not a valid ONNX model ({_first_line(e)}): re-export "
            "it, or check it with onnx.checker.check_model"
        ) from None
    initializers = {i.name for i in model.graph.initializer}
    inputs = [_tensor(v) for v in model.graph.input if v.name not in initializers]
    if not inputs:
        raise _evidence(f"model.path = {p.path!r}: the model has no inputs to feed")
    if not model.graph.output:
        raise _evidence(f"model.path = {p.path!r}: the model has no outputs")
    for t in inputs:
        if t.dtype is None:
            raise _evidence(
                f"model.path = {p.path!r}: input {t.name!r} is not a plain numeric tensor "
                "(sequence, map or string types cannot be fed from an .npz): export a model whose "
                "inputs are tensors"
            )
        if not t.rank_known or not t.dims:
            raise _evidence(
                f"model.path = {p.path!r}: input {t.name!r} "
                f"{'is a scalar' if t.rank_known else 'has no declared shape'}, but the pipeline "
                "feeds batches of rows on the first axis: re-export with a declared shape whose "
                "first axis is the batch"
            )
        if isinstance(t.dims[0], int):
            raise _evidence(
                f"model.path = {p.path!r}: input {t.name!r} has a fixed batch size of {t.dims[0]} "
                f"(shape {t.shape_text()}), but validation runs batches of up to 256 rows and the "
                "benchmark runs bench.batch_sizes: re-export with a dynamic first axis (torch: "
                'dynamic_shapes / dynamic_axes={"input": {0: "batch"}})'
            )
    output = _tensor(model.graph.output[0])
    if output.rank_known and len(output.dims) != 2:
        raise _evidence(
            f"model.path = {p.path!r}: the first output {output.name!r} has shape "
            f"{output.shape_text()}; predictions need (batch, classes) logits or probabilities: "
            "put the class scores first among the outputs, as a 2-D tensor"
        )
    return path, files, inputs, output


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _load_data(p: Params) -> tuple[Path, dict[str, np.ndarray]]:
    path = _file(p.data, "data", "your labelled .npz")
    try:
        with np.load(path, allow_pickle=False) as z:
            return path, {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise _evidence(
            f"model.data = {p.data!r} is not a readable .npz of plain arrays ({_first_line(e)}): "
            "write it with np.savez(path, <input name>=..., labels=...) (no object arrays)"
        ) from None


def _check_arrays(
    p: Params, arrays: dict[str, np.ndarray], inputs: list[_Tensor]
) -> tuple[int, list[str], list[str]]:
    """Rows, slice names and extra columns; an error for every array the pipeline cannot use."""
    names = sorted(arrays)
    if LABELS not in arrays:
        raise _error(
            f"model.data = {p.data!r} has no {LABELS!r} array (it holds {names}): add the true "
            f"class of every row, e.g. np.savez(path, ..., {LABELS}=y) with integer y"
        )
    y = arrays[LABELS]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise _error(
            f"model.data = {p.data!r}: {LABELS!r} is {y.dtype} of shape {list(y.shape)}; it must "
            f"be a 1-D integer array of class indices (e.g. {LABELS}=y.astype(np.int64))"
        )
    n = len(y)
    if n < 2:
        raise _error(
            f"model.data = {p.data!r} has {n} row(s); it needs at least 2 (calibration and "
            "validation)"
        )
    for t in inputs:
        if t.name not in arrays:
            raise _error(
                f"model.data = {p.data!r} has no array {t.name!r}, an input the model expects "
                f"(the model's inputs: {[i.name for i in inputs]}; the file holds {names}): "
                f"save it under that name, e.g. np.savez(path, **{{{t.name!r}: x}}, {LABELS}=y)"
            )
        x = arrays[t.name]
        if x.ndim != len(t.dims):
            raise _error(
                f"model.data = {p.data!r}: input {t.name!r} has shape {list(x.shape)} ({x.ndim}-D) "
                f"but the model declares {t.shape_text()} ({len(t.dims)}-D): reshape it to "
                "(rows, ...) as the model declares"
            )
        if len(x) != n:
            raise _error(
                f"model.data = {p.data!r}: input {t.name!r} has {len(x)} rows but {LABELS!r} has "
                f"{n}: every array needs one row per label on its first axis"
            )
        for axis, (got, want) in enumerate(zip(x.shape, t.dims, strict=True)):
            if axis and isinstance(want, int) and got != want:
                raise _error(
                    f"model.data = {p.data!r}: input {t.name!r} has shape {list(x.shape)} but "
                    f"the model declares {t.shape_text()}: axis {axis} is {got}, the model "
                    f"expects {want}; reshape or resize the data to match"
                )
        if x.dtype != t.dtype:
            raise _error(
                f"model.data = {p.data!r}: input {t.name!r} is {x.dtype} but the model expects "
                f"{t.dtype}: convert it before saving, e.g. x.astype(np.{t.dtype})"
            )
    named: dict[str, tuple[str, int, int]] = {}  # a symbolic axis name -> first (input, axis, size)
    for t in inputs:
        for axis, want in enumerate(t.dims):
            if not axis or not isinstance(want, str):
                continue
            got = int(arrays[t.name].shape[axis])
            first = named.setdefault(want, (t.name, axis, got))
            if first[2] != got:
                raise _error(
                    f"model.data = {p.data!r}: axis {axis} of input {t.name!r} is {got} but axis "
                    f"{first[1]} of input {first[0]!r} is {first[2]}, and the model names both "
                    f"{want!r} (one size): pad or cut the arrays to a common size"
                )
    model_inputs = {t.name for t in inputs}
    slices, extras = [], []
    for name in names:
        arr = arrays[name]
        if name.startswith(MASK_PREFIX):
            sname = name[len(MASK_PREFIX) :]
            if not _SAFE_NAME.match(sname):
                raise _error(
                    f"model.data = {p.data!r}: slice mask {name!r} needs a name of letters, "
                    f"digits, '_', '.' or '-' after {MASK_PREFIX!r}: rename it"
                )
            if arr.dtype != np.bool_ or arr.shape != (n,):
                raise _error(
                    f"model.data = {p.data!r}: slice mask {name!r} is {arr.dtype} of shape "
                    f"{list(arr.shape)}; it must be a boolean array of shape [{n}] (one flag per "
                    f"row), e.g. {name}=(condition).astype(bool)"
                )
            slices.append(sname)
        elif name != LABELS and name not in model_inputs:
            if arr.ndim == 0 or len(arr) != n:
                raise _error(
                    f"model.data = {p.data!r}: array {name!r} is neither a model input "
                    f"({sorted(model_inputs)}), {LABELS!r}, nor a {MASK_PREFIX}<name> mask, and "
                    f"does not have one row per label ({n}): rename or remove it"
                )
            extras.append(name)
    return n, slices, extras


def _probe(path: Path, arrays: dict[str, np.ndarray], inputs: list[_Tensor], p: Params) -> int:
    """Run the first rows once: the model must load and answer with (rows, classes) scores."""
    import onnxruntime as ort

    feeds = {t.name: arrays[t.name][:2] for t in inputs}
    so = ort.SessionOptions()
    so.log_severity_level = 3  # errors only
    try:
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        out = sess.run(None, feeds)[0]
    except Exception as e:  # ORT raises its own exception types
        raise _evidence(
            f"model.path = {p.path!r} failed on the first rows of model.data ({_first_line(e)}): "
            "check that the .npz matches the model's inputs, and that onnxruntime supports its "
            "opset"
        ) from None
    rows = len(next(iter(feeds.values())))
    if not isinstance(out, np.ndarray) or out.ndim != 2 or out.shape[0] != rows:
        shape = list(out.shape) if isinstance(out, np.ndarray) else type(out).__name__
        raise _evidence(
            f"model.path = {p.path!r}: its first output on {rows} rows has shape {shape}; "
            f"predictions need ({rows}, classes) logits or probabilities first among the outputs"
        )
    if not np.issubdtype(out.dtype, np.number):
        raise _evidence(f"model.path = {p.path!r}: its first output is {out.dtype}, not numeric")
    return int(out.shape[1])


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()


def prepare(p: Params, seed: int) -> Prepared:
    """Check the model and the .npz against each other, then split calibration / validation."""
    model_path, external, inputs, output = _load_model(p)
    data_path, arrays = _load_data(p)
    n, slice_names, extras = _check_arrays(p, arrays, inputs)
    classes = _probe(model_path, arrays, inputs, p)  # the output width, declared or symbolic
    y = arrays[LABELS].astype(np.int64)
    if y.min() < 0 or y.max() >= classes:
        raise _error(
            f"model.data = {p.data!r}: {LABELS!r} range from {int(y.min())} to {int(y.max())}, "
            f"but the model's first output {output.name!r} has {classes} classes: labels must be "
            f"class indices 0..{classes - 1} in the order of the model's outputs"
        )
    if p.class_names and len(p.class_names) != classes:
        raise _error(
            f"model.class_names has {len(p.class_names)} names but the model's first output has "
            f"{classes} classes: give one name per output, in order, or leave it empty ([])"
        )
    class_names = list(p.class_names) or [str(c) for c in range(classes)]

    n_cal = round(p.calibration_share * n)
    if not 1 <= n_cal <= n - 1:
        raise _error(
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
            raise _error(
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
        raise _evidence(
            f"model.path = {p.path!r} changed since the prepare stage checked it: rerun "
            "`dvc repro -f -s prepare` (DVC does not track files outside the repository)"
        )
    if [t.name for t in inputs] != data.inputs:
        raise _evidence(
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
    from stages.techniques.base import NotApplicable

    raise NotApplicable(
        f"onnx_file models arrive as ONNX ({p.path}): there is no framework model to build"
    )


def train(p: Params, data: Prepared, seed: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    from stages.techniques.base import NotApplicable

    raise NotApplicable(
        f"onnx_file models arrive trained as ONNX ({p.path}): there is nothing to train; the "
        "baseline stage copies the file (provide_onnx)"
    )


def render_failure(row: dict[str, np.ndarray]) -> tuple[str, bytes]:
    """An input of unknown kind as Markdown: per array its dtype, shape, range and first values."""
    lines = [
        "| array | dtype | shape | min | max | mean | first values |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in sorted(row):
        arr = np.asarray(row[name])
        one = arr[0] if arr.ndim and len(arr) == 1 else arr  # a row arrives as a batch of one
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
