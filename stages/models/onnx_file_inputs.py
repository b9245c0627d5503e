"""onnx_file: the user's labelled .npz, read and checked against the model's inputs (names,
shapes, dtypes, finite values), its slice masks and its extra columns."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np

from stages.data import LABELS, MASK_PREFIX
from stages.errors import EvidenceError, ParamsError
from stages.models.onnx_file_model import Tensor, file_at, first_line
from stages.models.options import OnnxFileParams

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")  # slice names go into file names and CSV cells


def load_data(p: OnnxFileParams) -> tuple[Path, dict[str, np.ndarray]]:
    path = file_at(p.data, "data", "your labelled .npz")
    try:
        with np.load(path, allow_pickle=False) as z:
            return path, {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise EvidenceError(
            f"model.data = {p.data!r} is not a readable .npz of plain arrays ({first_line(e)}): "
            "write it with np.savez(path, <input name>=..., labels=...) (no object arrays)"
        ) from None


def check_arrays(
    p: OnnxFileParams, arrays: dict[str, np.ndarray], inputs: list[Tensor]
) -> tuple[int, list[str], list[str], str]:
    """Rows, slice names, extra columns and a doubt; an error for every array the pipeline cannot
    use. The doubt ("" if none) says which axes the model names alike but the data sizes apart:
    a declared name is only a hint, so `prepare` lets a real session decide (see probe)."""
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


def _check_finite(p: OnnxFileParams, name: str, x: np.ndarray) -> None:
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


def _check_extra(
    p: OnnxFileParams, name: str, arr: np.ndarray, n: int, model_inputs: list[str]
) -> None:
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
