"""Knowledge distillation: a smaller student of the baseline's own preset, trained on the train
split against the baseline's (the teacher's) softened outputs and the true labels."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from stages.techniques.base import Context, NotApplicable
from stages.techniques.prune import _count, _example, _pc, _points, slice_lines

# A stand-in class count for check_options, which runs before any data is read (apply re-checks
# with the real one).
_CHECK_CLASSES = 10


@dataclass
class Options:
    # the preset's params fields that differ for the student (digits_cnn: channels, hidden);
    # empty = the preset's own default student (its STUDENT)
    student: dict[str, Any] = field(default_factory=dict)
    temperature: float = 4.0  # softens both sides' logits for the soft-label loss
    alpha: float = 0.7  # weight of the soft-label loss; 1 - alpha weighs the true labels
    epochs: int = 25
    batch_size: int = 64
    learning_rate: float = 0.003

    def __post_init__(self) -> None:
        from stages.params import _require

        _require(
            isinstance(self.student, dict) and all(isinstance(k, str) for k in self.student),
            "student",
            self.student,
            "a mapping of the model's params fields to the student's values",
        )
        _require(self.temperature > 0, "temperature", self.temperature, "> 0")
        _require(0 <= self.alpha <= 1, "alpha", self.alpha, "a weight in [0, 1]")
        _require(self.epochs >= 1, "epochs", self.epochs, ">= 1")
        _require(self.batch_size >= 1, "batch_size", self.batch_size, ">= 1")
        _require(self.learning_rate > 0, "learning_rate", self.learning_rate, "> 0")


# A student of the same family: same inputs and outputs, other widths (and possibly depth).
DECLARES: tuple[str, ...] = (
    "graph.op_types",
    "graph.nodes",
    "graph.parameters",
    "graph.sha256",
    "graph.size_bytes",
)

CHECK = (
    "whether the compact model fails on edge cases: the drop per slice, and the failures that "
    "are new against the teacher (right->wrong flips, by slice)"
)


def check_options(options: Options, model_params: Any) -> None:
    """The student's keys are fields of the model's params, its values valid, and it is smaller
    than the teacher (both built with the preset to count)."""
    if model_params is None or not dataclasses.is_dataclass(model_params):
        return  # an ONNX-only model: apply says it does not apply
    preset = _preset_of(model_params)
    if preset is None or hasattr(preset, "provide_onnx"):
        return  # nothing to distil from: apply says it does not apply
    student = student_params(options, model_params)
    if not getattr(preset, "HEAVY", False):  # heavy presets (pretrained encoders) check in apply
        _require_smaller(preset, model_params, student, _CHECK_CLASSES, options)


def student_params(options: Options, model_params: Any) -> Any:
    """The model's params with the student's fields replaced (validated by the params class)."""
    from stages.params import ParamsError

    fields = options.student or getattr(_preset_of(model_params), "STUDENT", {})
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


def apply(ctx: Context) -> dict[str, Any]:
    """Train the student on the teacher's soft labels; export it with the baseline's inputs."""
    import torch
    from torch.nn import functional as F
    from tqdm import tqdm

    from stages.export import export
    from stages.training import deterministic

    o: Options = ctx.options
    if getattr(ctx.preset, "HEAVY", False):
        raise NotApplicable(
            "distilling a pretrained encoder means training a transformer student for hours on "
            "this CPU; run it on a GPU target, or distil a lighter preset"
        )
    teacher = ctx.torch_baseline()  # NotApplicable for ONNX-only models
    assert ctx.preset is not None
    num_classes = len(ctx.data.class_names)
    sp = student_params(o, ctx.model_params)
    teacher_n = _require_smaller(ctx.preset, ctx.model_params, sp, num_classes, o)
    inputs = [torch.from_numpy(ctx.data.feeds("train")[k]) for k in ctx.data.inputs]
    y = torch.from_numpy(ctx.data.labels("train"))
    n, t = len(y), o.temperature

    with deterministic(ctx.seed):
        with torch.no_grad():  # the teacher's soft labels, once, in chunks
            soft_targets = torch.cat(
                [
                    F.softmax(teacher(*(x[i : i + 256] for x in inputs)) / t, dim=1)
                    for i in range(0, n, 256)
                ]
            )
        student = ctx.preset.build(sp, num_classes)
        order = torch.Generator().manual_seed(ctx.seed)
        optimizer = torch.optim.Adam(student.parameters(), lr=o.learning_rate)
        history = []
        bar = tqdm(range(o.epochs), desc="distill", unit="epoch")
        for epoch in bar:
            student.train()
            perm = torch.randperm(n, generator=order)
            sums = {"loss": 0.0, "soft_loss": 0.0, "hard_loss": 0.0}
            correct = 0
            for start in range(0, n, o.batch_size):
                idx = perm[start : start + o.batch_size]
                optimizer.zero_grad()
                logits = student(*(x[idx] for x in inputs))
                # KL(teacher || student) at temperature t, scaled by t^2 so its gradients keep
                # the size of the hard loss's (Hinton et al., 2015)
                soft = F.kl_div(
                    F.log_softmax(logits / t, dim=1), soft_targets[idx], reduction="batchmean"
                ) * (t * t)
                hard = F.cross_entropy(logits, y[idx])
                loss = o.alpha * soft + (1 - o.alpha) * hard
                loss.backward()
                optimizer.step()
                for key, value in (("loss", loss), ("soft_loss", soft), ("hard_loss", hard)):
                    sums[key] += value.item() * len(idx)
                correct += int((logits.argmax(1) == y[idx]).sum())
            row = {"epoch": epoch + 1, **{k: v / n for k, v in sums.items()}}
            row["train_accuracy"] = correct / n
            history.append(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}", acc=f"{row['train_accuracy']:.3f}")
        student.eval()
    export(student, _example(ctx), ctx.model_out, getattr(ctx.preset, "DYNAMIC_AXES", None))
    student_n = _count(student)
    return {
        "student": dict(o.student or getattr(ctx.preset, "STUDENT", {})),
        "temperature": o.temperature,
        "alpha": o.alpha,
        "parameters": {"teacher": teacher_n, "student": student_n, "ratio": student_n / teacher_n},
        "epochs": history,
        "final_loss": history[-1]["loss"],
    }


def _require_smaller(
    preset: Any, teacher_params: Any, student: Any, num_classes: int, options: Options
) -> int:
    """The teacher's parameter count; ParamsError when the student is not smaller."""
    from stages.params import ParamsError

    teacher_n = _count(preset.build(teacher_params, num_classes))
    student_n = _count(preset.build(student, num_classes))
    if student_n >= teacher_n:
        raise ParamsError(
            f"student = {options.student or 'the preset default'!r} has {student_n:,} parameters, not fewer than the "
            f"teacher's {teacher_n:,}; choose smaller values"
        )
    return teacher_n


def _preset_of(model_params: Any) -> Any:
    from stages.models import MODELS

    return next((m for m in MODELS.values() if type(model_params) is m.Params), None)


def report(c: dict[str, Any]) -> list[str]:
    """Student size and loss, then where the compact model fails that the teacher did not."""
    d = c.get("manifest", {}).get("details") or {}
    lines = []
    if d:
        p = d["parameters"]
        arch = ", ".join(f"{k}: {v}" for k, v in d["student"].items())
        lines.append(
            f"- Student ({arch}): {p['student']:,} parameters against the teacher's "
            f"{p['teacher']:,} ({_pc(p['ratio'])} of it)."
        )
        losses = [e["loss"] for e in d["epochs"]]
        shown = ", ".join(f"{x:.4f}" for x in losses)
        lines.append(
            f"- Distillation loss per epoch (T = {d['temperature']:g}, alpha = {d['alpha']:g}): "
            f"{shown}."
        )
    o = c.get("validation", {}).get("overall")
    if o:
        lines.append(
            f"- Against the teacher: {_points(o['drop_points'])} overall; "
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
