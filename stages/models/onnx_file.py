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

import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stages.data import LABELS, MASK_PREFIX, Prepared, Slice
from stages.errors import EvidenceError, NotApplicable, ParamsError
from stages.models.onnx_file_inputs import check_arrays, load_data
from stages.models.onnx_file_model import load_model, probe, sha256
from stages.models.onnx_file_render import render_failure
from stages.models.options import OnnxFileParams as Params
from stages.models.preset import Preset

if TYPE_CHECKING:
    import torch

MAX_CLASS_SLICES = 32  # more classes than this: no per-class slices (each would be tiny)
ROW = "npz_row"  # a column kept beside the inputs: each row's index in the user's .npz


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()


def prepare(p: Params, seed: int) -> Prepared:
    """Check the model and the .npz against each other, then split calibration / validation."""
    model_path, external, inputs, output = load_model(p)
    data_path, arrays = load_data(p)
    n, slice_names, extras, doubt = check_arrays(p, arrays, inputs)
    classes = probe(model_path, arrays, inputs, p, doubt)  # the output width, from a real run
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
        "model_sha256": sha256([model_path, *external]),
        "data": str(data_path),
        "data_sha256": sha256([data_path]),
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
    path, external, inputs, output = load_model(p)
    digest = sha256([path, *external])
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


class OnnxFile(Preset):
    Params = Params
    prepare = staticmethod(prepare)
    build = staticmethod(build)
    train = staticmethod(train)
    render_failure = staticmethod(render_failure)
    provide_onnx = staticmethod(provide_onnx)


PRESET = OnnxFile()
