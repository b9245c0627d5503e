"""Knowledge distillation: a smaller student of the baseline's own preset, trained on the train
split against the baseline's (the teacher's) softened outputs and the true labels.

One loop serves every preset. The teacher's logits are computed once (or read from the
baseline stage, which keeps them when its training had them); each epoch the rows are
sorted by the preset's `lengths` hook (ties in a seeded random order), cut into consecutive
batches, each batch trimmed by the preset's `trim` hook, and the batches visited in a seeded
random order. A preset without those hooks has rows all alike: its batches are a plain shuffle.
A preset's `student(teacher, params)` hook builds the student from the teacher's weights (MiniLM:
its first layers, embeddings and head); without it the student is built fresh.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from stages.errors import ParamsError
from stages.export import export
from stages.models.catalog import MODELS
from stages.techniques.base import Context

# the review note's lines, read through the catalog as distill.report
from stages.techniques.distill_report import report as report
from stages.techniques.distill_training import (
    WEIGHT_DECAY,
    Tuning,
    count_trainable,
    fit,
    forward,
    held_out,
    teacher_targets,
)
from stages.techniques.options.distill import Options
from stages.techniques.torch_tools import count, example
from stages.training import deterministic

# Training settings for a preset without its own DISTILL (the small CNNs); an option left at 0
# takes the preset's value, else this one.
TRAINING: dict[str, Any] = {
    "epochs": 25,
    "batch_size": 64,
    "learning_rate": 0.003,
    "loss": "logits",
    "schedule": "constant",
    "alpha": 0.7,
}
# Training runs on 2 threads, fixed: about 40 % faster than one on the 2-core reference machine,
# and the same bits on every machine (a fixed count fixes the order of every float sum).
TRAIN_THREADS = 2


# A student of the same family: same inputs and outputs, other widths (and possibly depth).
DECLARES: tuple[str, ...] = (
    "graph.op_types",
    "graph.dtypes",  # counts of tensors per type: a shallower student has fewer of each
    "graph.nodes",
    "graph.parameters",
    "graph.sha256",
    "graph.size_bytes",
)

CHECK = (
    "whether the compact model fails on edge cases: the drop per slice, and the failures that "
    "are new against the teacher (right->wrong flips, by slice)"
)


def student_params(options: Options, model_params: Any) -> Any:
    """The model's params with the student's fields replaced (validated by the params class)."""
    fields = options.student or _default_student(model_params)
    if not fields:
        raise ParamsError(
            "student is empty and this model preset has no default student: set "
            "technique.distill.student to the params fields that differ"
        )
    allowed = [f.name for f in dataclasses.fields(model_params)]
    unknown = sorted(k for k in fields if k not in allowed)
    if unknown:
        raise ParamsError(
            f"student has unknown key(s) {', '.join(unknown)}; allowed keys (fields of the "
            f"model's params): {', '.join(allowed)}"
        )
    try:
        return dataclasses.replace(model_params, **fields)
    except ParamsError as e:
        raise ParamsError(f"student.{e}") from None


def training(options: Options, preset: Any) -> dict[str, Any]:
    """Epochs, batch size, learning rate, loss, schedule and alpha: the option where set (not 0,
    "" or None; alpha 0 is set), else the preset's DISTILL, else TRAINING."""
    own = preset.DISTILL

    out = {}
    for key, default in TRAINING.items():
        value = getattr(options, key)
        out[key] = (
            own.get(key, default) if value is None or (key != "alpha" and not value) else value
        )
    return out


def keep_layers(options: Options, teacher_layers: int, student_layers: int) -> list[int]:
    """The teacher's layers the student starts from: the option, or spread evenly (every other
    layer of six when three are kept, as DistilBERT)."""
    keep = list(options.keep_layers) or [
        i * teacher_layers // student_layers for i in range(student_layers)
    ]
    if len(keep) != student_layers or keep[-1] >= teacher_layers:
        raise ParamsError(
            f"keep_layers = {list(options.keep_layers)!r} is not allowed; expected "
            f"{student_layers} increasing indices below the teacher's {teacher_layers} layers "
            "(one per student layer), or [] to spread them evenly"
        )
    return keep


def apply(ctx: Context) -> dict[str, Any]:
    """Train the student on the teacher's targets; export it with the baseline's inputs."""
    import torch

    o: Options = ctx.options
    teacher = ctx.torch_baseline()  # NotApplicable for ONNX-only models
    assert ctx.preset is not None
    preset = ctx.preset
    sp = student_params(o, ctx.model_params)
    settings = training(o, preset)
    embedding = settings["loss"] == "embedding"
    if embedding and not (hasattr(teacher, "embed") and hasattr(teacher, "head")):
        raise ParamsError(
            "loss = 'embedding' is not allowed for this model: it needs a pooled embedding and a "
            "head (as minilm_sentiment's); set technique.distill.loss=logits"
        )
    feeds, y = ctx.data.feeds("train"), ctx.data.labels("train")
    lengths = preset.lengths
    rows = lengths(feeds) if lengths else np.zeros(len(y), dtype=np.int64)
    cut = preset.trim
    hold = held_out(len(y), o.tuning_rows, ctx.seed)
    train = np.setdiff1d(np.arange(len(y)), hold)
    hook = preset.student
    if o.keep_layers and hook is None:
        raise ParamsError(
            f"keep_layers = {list(o.keep_layers)!r} is not allowed for this model: its student is "
            "built fresh, not cut from the teacher's layers; set technique.distill.keep_layers=[]"
        )

    with deterministic(ctx.seed, threads=TRAIN_THREADS):
        kept: list[int] = []

        def pick(teacher_layers: int, student_layers: int) -> list[int]:
            kept[:] = keep_layers(o, teacher_layers, student_layers)
            return list(kept)

        classes = len(ctx.data.class_names)
        student = hook(teacher, sp, pick) if hook else preset.build(sp, classes)
        if embedding:  # the decision function stays the teacher's
            student.head.requires_grad_(False)
        teacher_n, student_n = count(teacher), count(student)
        _check_smaller(o, teacher_n, student_n)
        started = time.perf_counter()
        logits, embedded, source = teacher_targets(
            teacher, ctx.baseline.parent, feeds, rows, cut, embedding
        )
        tuning = _tuning(ctx, teacher, feeds, y, rows, hold, cut, lengths)
        targets = time.perf_counter() - started
        history = fit(
            student,
            {k: v[train] for k, v in feeds.items()},
            torch.from_numpy(y[train]),
            logits[train],
            None if embedded is None else embedded[train],
            rows[train],
            cut,
            o,
            settings,
            ctx.seed,
            tuning,
        )
        trained = time.perf_counter() - started - targets
        student.eval()
    export(student, example(ctx), ctx.model_out, preset.DYNAMIC_AXES)
    return {
        "student": dict(o.student or preset.STUDENT),
        "keep_layers": kept,
        "loss": settings["loss"],
        "temperature": o.temperature,
        "alpha": settings["alpha"],
        "parameters": {"teacher": teacher_n, "student": student_n, "ratio": student_n / teacher_n},
        "training": {
            **settings,
            "rows": len(train),
            "tuning_rows": {
                "held_out_train": len(hold),
                "calibration": len(tuning.labels) - len(hold),
            },
            "trainable_parameters": count_trainable(student),
            "optimizer": f"AdamW, weight decay {WEIGHT_DECAY:g}",
            "warmup": o.warmup if settings["schedule"] == "linear" else 0.0,
            "init": "the teacher's weights (the preset's student hook)" if hook else "fresh",
            "head": "the teacher's, frozen" if embedding else "trained",
            "batches": "length-bucketed, trimmed" if lengths else "shuffled rows",
            "teacher_targets": source,
            "threads": TRAIN_THREADS,
        },
        "epochs": history,
        "final_loss": history[-1]["loss"],
        # wall-clock seconds: `optimize` moves them to the stage's timing report, out of the
        # model folder, so a rerun reproduces the model folder byte for byte
        "seconds": {"teacher_targets": round(targets, 1), "training": round(trained, 1)},
    }


def _tuning(
    ctx: Context,
    teacher: Any,
    feeds: dict[str, np.ndarray],
    y: np.ndarray,
    rows: np.ndarray,
    hold: np.ndarray,
    cut: Any,
    lengths: Any,
) -> Tuning:
    """The calibration split and the held-out train rows, with the teacher's class on each
    (`lengths`: the preset's hook, as for the train rows)."""
    cal = ctx.data.feeds("calibration")
    cal_rows = lengths(cal) if lengths else np.zeros(len(ctx.data.labels("calibration")), int)
    tf = {k: np.concatenate([cal[k], v[hold]]) for k, v in feeds.items()}
    tr = np.concatenate([cal_rows, rows[hold]]).astype(np.int64)
    pred = forward(teacher, tf, tr, cut).argmax(1).numpy()
    labels = np.concatenate([ctx.data.labels("calibration"), y[hold]])
    return Tuning(tf, labels, pred, tr)


def _check_smaller(options: Options, teacher_n: int, student_n: int) -> None:
    if student_n >= teacher_n:
        raise ParamsError(
            f"student = {options.student or 'the preset default'!r} has {student_n:,} "
            f"parameters, not fewer than the teacher's {teacher_n:,}; choose smaller values"
        )


def _default_student(model_params: Any) -> dict[str, Any]:
    """The STUDENT of the preset whose params these are ({} when none is)."""
    preset = next((m for m in MODELS.values() if type(model_params) is m.Params), None)
    return preset.STUDENT if preset is not None else {}
