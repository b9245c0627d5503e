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
from stages.evidence.lines import percent, points, slice_lines, speed_lines
from stages.export import export
from stages.models.catalog import MODELS
from stages.techniques.base import Context
from stages.techniques.distill_training import (
    WEIGHT_DECAY,
    cached_logits,
    compute_teacher_logits,
    count_trainable,
    fit,
)
from stages.techniques.options.distill import Options
from stages.techniques.torch_tools import count, example
from stages.training import deterministic

# Training settings for a preset without its own DISTILL (the small CNNs); an option left at 0
# takes the preset's value, else this one.
TRAINING: dict[str, Any] = {"epochs": 25, "batch_size": 64, "learning_rate": 0.003}
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
    """Epochs, batch size and learning rate: the option where set, else the preset's DISTILL,
    else TRAINING."""
    own = preset.DISTILL
    return {k: getattr(options, k) or own.get(k, default) for k, default in TRAINING.items()}


def apply(ctx: Context) -> dict[str, Any]:
    """Train the student on the teacher's soft labels; export it with the baseline's inputs."""
    import torch

    o: Options = ctx.options
    teacher = ctx.torch_baseline()  # NotApplicable for ONNX-only models
    assert ctx.preset is not None
    preset = ctx.preset
    sp = student_params(o, ctx.model_params)
    settings = training(o, preset)
    feeds, y = ctx.data.feeds("train"), ctx.data.labels("train")
    lengths = preset.lengths
    rows = lengths(feeds) if lengths else np.zeros(len(y), dtype=np.int64)
    cut = preset.trim

    with deterministic(ctx.seed, threads=TRAIN_THREADS):
        hook = preset.student
        student = hook(teacher, sp) if hook else preset.build(sp, len(ctx.data.class_names))
        teacher_n, student_n = count(teacher), count(student)
        _check_smaller(o, teacher_n, student_n)
        started = time.perf_counter()
        teacher_logits, source = cached_logits(ctx.baseline.parent, len(y))
        if teacher_logits is None:
            teacher_logits = compute_teacher_logits(teacher, feeds, rows, cut)
        cached = time.perf_counter() - started
        history = fit(
            student, feeds, torch.from_numpy(y), teacher_logits, rows, cut, o, settings, ctx.seed
        )
        trained = time.perf_counter() - started - cached
        student.eval()
    export(student, example(ctx), ctx.model_out, preset.DYNAMIC_AXES)
    return {
        "student": dict(o.student or preset.STUDENT),
        "temperature": o.temperature,
        "alpha": o.alpha,
        "parameters": {"teacher": teacher_n, "student": student_n, "ratio": student_n / teacher_n},
        "training": {
            **settings,
            "rows": len(y),
            "trainable_parameters": count_trainable(student),
            "optimizer": f"AdamW, weight decay {WEIGHT_DECAY:g}, constant learning rate",
            "init": "the teacher's weights (the preset's student hook)" if hook else "fresh",
            "batches": "length-bucketed, trimmed" if lengths else "shuffled rows",
            "teacher_logits": source,
            "threads": TRAIN_THREADS,
            "seconds": {"teacher_logits": round(cached, 1), "training": round(trained, 1)},
        },
        "epochs": history,
        "final_loss": history[-1]["loss"],
    }


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


def report(c: dict[str, Any]) -> list[str]:
    """Student size and loss, then where the compact model fails that the teacher did not."""
    d = c.get("manifest", {}).get("details") or {}
    lines = []
    if d:
        p = d["parameters"]
        arch = ", ".join(f"{k}: {v}" for k, v in d["student"].items())
        lines.append(
            f"- Student ({arch}): {p['student']:,} parameters against the teacher's "
            f"{p['teacher']:,} ({percent(p['ratio'])} of it)."
        )
        tr = d.get("training")
        if tr:
            secs = tr["seconds"]
            lines.append(
                f"- Trained from {tr['init']} on {tr['rows']:,} train rows: {tr['epochs']} "
                f"epoch(s), batch {tr['batch_size']} ({tr['batches']}), learning rate "
                f"{tr['learning_rate']:g}, {secs['training']:.0f} s on {tr.get('threads', 1)} "
                f"thread(s) (teacher logits {secs['teacher_logits']:.0f} s)."
            )
        losses = [e["loss"] for e in d["epochs"]]
        shown = ", ".join(f"{x:.4f}" for x in losses)
        lines.append(
            f"- Distillation loss per epoch (T = {d['temperature']:g}, alpha = {d['alpha']:g}): "
            f"{shown}."
        )
    lines += speed_lines(c.get("benchmark", {}).get("batches", []))
    o = c.get("validation", {}).get("overall")
    if o:
        acc = ""
        if "baseline_accuracy" in o and "candidate_accuracy" in o:
            acc = (
                f"{percent(o['baseline_accuracy']['estimate'])} -> "
                f"{percent(o['candidate_accuracy']['estimate'])}, "
            )
        lines.append(
            f"- Against the teacher: {acc}{points(o['drop_points'])} overall; "
            f"{o['right_to_wrong']} new failures (right->wrong), "
            f"{o['wrong_to_right']} fixed (wrong->right)."
        )
    lines += slice_lines(c)
    new = [f for f in c.get("failures") or [] if f.get("kind") == "right_to_wrong"]
    if new:
        by_set: dict[str, list[dict[str, Any]]] = {}
        for f in new:
            by_set.setdefault(str(f["set"]), []).append(f)
        for name, rows in sorted(by_set.items()):
            cases = ", ".join(
                f"#{r['index']} {r['label']}->{r['candidate_pred']} (`{r['file']}`)"
                for r in rows[:10]
            )
            more = f", and {len(rows) - 10} more" if len(rows) > 10 else ""
            lines.append(f"- New failures in {name}: {len(rows)} (true->predicted): {cases}{more}.")
    elif "failures" in c:
        lines.append("- No example the teacher got right is wrong for the student.")
    return lines
