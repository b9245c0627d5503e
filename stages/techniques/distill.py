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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stages.errors import ParamsError, require
from stages.export import TRAIN_LOGITS_FILE, export
from stages.models.catalog import MODELS
from stages.storage import EvidenceError
from stages.techniques.base import Context
from stages.techniques.prune import _count, _example, _pc, _points, slice_lines, speed_lines
from stages.training import deterministic

if TYPE_CHECKING:
    import torch

Feed = dict[str, np.ndarray]

# A stand-in class count for check_options, which runs before any data is read (apply re-checks
# with the real one).
_CHECK_CLASSES = 10
# Training settings for a preset without its own DISTILL (the small CNNs); an option left at 0
# takes the preset's value, else this one.
TRAINING: dict[str, Any] = {"epochs": 25, "batch_size": 64, "learning_rate": 0.003}
TEACHER_CHUNK = 256  # rows per teacher call when caching its logits (no gradients)
WEIGHT_DECAY = 0.01  # AdamW's, on every parameter
# Training runs on 2 threads, fixed: about 40 % faster than one on the 2-core reference machine,
# and the same bits on every machine (a fixed count fixes the order of every float sum).
TRAIN_THREADS = 2


@dataclass
class Options:
    # the preset's params fields that differ for the student (digits_cnn: channels, hidden);
    # empty = the preset's own default student (its STUDENT)
    student: dict[str, Any] = field(default_factory=dict)
    temperature: float = 4.0  # softens both sides' logits for the soft-label loss
    alpha: float = 0.7  # weight of the soft-label loss; 1 - alpha weighs the true labels
    # 0 = the preset's (its DISTILL: minilm_sentiment 2, 32, 1e-4), else TRAINING (25, 64, 0.003)
    epochs: int = 0
    batch_size: int = 0
    learning_rate: float = 0.0

    def __post_init__(self) -> None:
        require(
            isinstance(self.student, dict) and all(isinstance(k, str) for k in self.student),
            "student",
            self.student,
            "a mapping of the model's params fields to the student's values",
        )
        require(self.temperature > 0, "temperature", self.temperature, "> 0")
        require(0 <= self.alpha <= 1, "alpha", self.alpha, "a weight in [0, 1]")
        require(self.epochs >= 0, "epochs", self.epochs, ">= 1, or 0 for the preset's")
        require(self.batch_size >= 0, "batch_size", self.batch_size, ">= 1, or 0 for the preset's")
        require(
            self.learning_rate >= 0,
            "learning_rate",
            self.learning_rate,
            "> 0, or 0 for the preset's",
        )


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


def training(options: Options, preset: Any) -> dict[str, Any]:
    """Epochs, batch size and learning rate: the option where set, else the preset's DISTILL,
    else TRAINING."""
    own = getattr(preset, "DISTILL", {})
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
    lengths = getattr(preset, "lengths", None)
    rows = lengths(feeds) if lengths else np.zeros(len(y), dtype=np.int64)
    cut = getattr(preset, "trim", None) or (lambda f: f)

    with deterministic(ctx.seed, threads=TRAIN_THREADS):
        hook = getattr(preset, "student", None)
        student = hook(teacher, sp) if hook else preset.build(sp, len(ctx.data.class_names))
        teacher_n, student_n = _count(teacher), _count(student)
        _check_smaller(o, teacher_n, student_n)
        started = time.perf_counter()
        teacher_logits, source = _cached_logits(ctx.baseline.parent, len(y))
        if teacher_logits is None:
            teacher_logits = _teacher_logits(teacher, feeds, rows, cut)
        cached = time.perf_counter() - started
        history = _fit(
            student, feeds, torch.from_numpy(y), teacher_logits, rows, cut, o, settings, ctx.seed
        )
        trained = time.perf_counter() - started - cached
        student.eval()
    export(student, _example(ctx), ctx.model_out, getattr(preset, "DYNAMIC_AXES", None))
    return {
        "student": dict(o.student or getattr(preset, "STUDENT", {})),
        "temperature": o.temperature,
        "alpha": o.alpha,
        "parameters": {"teacher": teacher_n, "student": student_n, "ratio": student_n / teacher_n},
        "training": {
            **settings,
            "rows": len(y),
            "trainable_parameters": _count_trainable(student),
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


def _batches(rows: np.ndarray, size: int, order: torch.Generator) -> list[np.ndarray]:
    """One epoch's batches: rows sorted by length (ties in a seeded random order), cut into
    consecutive batches, the batches in a seeded random order. Equal lengths: a plain shuffle."""
    import torch

    perm = torch.randperm(len(rows), generator=order).numpy()
    ranked = perm[np.argsort(rows[perm], kind="stable")]
    batches = [ranked[i : i + size] for i in range(0, len(ranked), size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=order).tolist()]


def _cached_logits(baseline_dir: Path, rows: int) -> tuple[torch.Tensor | None, str]:
    """The teacher's train-split logits as the baseline stage kept them (a preset whose training
    computed them anyway, e.g. MiniLM's head fit on the frozen encoder's embeddings), with where
    they came from; (None, ...) when the baseline kept none."""
    import torch

    path = baseline_dir / TRAIN_LOGITS_FILE
    if not path.is_file():
        return None, "computed: a forward pass of the teacher over the train split"
    logits = np.load(path)
    if logits.ndim != 2 or len(logits) != rows:
        raise EvidenceError(
            f"{path} holds logits of shape {logits.shape}, not one row per train row ({rows}): "
            "the baseline is stale; run `dvc repro baseline`"
        )
    return torch.from_numpy(logits), f"kept by the baseline stage ({TRAIN_LOGITS_FILE})"


def _teacher_logits(
    teacher: Any, feeds: Feed, rows: np.ndarray, cut: Callable[[Feed], Feed]
) -> torch.Tensor:
    """The teacher's logits for every row, in row order: once, without gradients, in
    length-sorted chunks each trimmed to its longest row."""
    import torch
    from tqdm import tqdm

    ranked = np.argsort(rows, kind="stable")
    out: torch.Tensor | None = None
    with torch.no_grad():
        for i in tqdm(range(0, len(ranked), TEACHER_CHUNK), desc="teacher", unit="chunk"):
            idx = ranked[i : i + TEACHER_CHUNK]
            logits = teacher(*_tensors(cut({k: v[idx] for k, v in feeds.items()})))
            if out is None:
                out = torch.empty(len(ranked), logits.shape[1])
            out[torch.from_numpy(idx)] = logits
    assert out is not None
    return out


def _fit(
    student: Any,
    feeds: Feed,
    y: torch.Tensor,
    teacher_logits: torch.Tensor,
    rows: np.ndarray,
    cut: Callable[[Feed], Feed],
    o: Options,
    settings: dict[str, Any],
    seed: int,
) -> list[dict[str, Any]]:
    """AdamW on alpha * soft loss + (1 - alpha) * hard loss; the loss and accuracy per epoch."""
    import torch
    from torch.nn import functional as F
    from tqdm import tqdm

    t, n, epochs = o.temperature, len(y), settings["epochs"]
    soft_targets = F.softmax(teacher_logits / t, dim=1)
    order = torch.Generator().manual_seed(seed)
    trainable = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable, lr=settings["learning_rate"], weight_decay=WEIGHT_DECAY
    )
    history = []
    steps = epochs * -(-n // settings["batch_size"])
    bar = tqdm(total=steps, desc="distill", unit="batch")
    for epoch in range(1, epochs + 1):
        student.train()
        sums = {"loss": 0.0, "soft_loss": 0.0, "hard_loss": 0.0}
        correct = 0
        for idx in _batches(rows, settings["batch_size"], order):
            optimizer.zero_grad()
            logits = student(*_tensors(cut({k: v[idx] for k, v in feeds.items()})))
            at = torch.from_numpy(idx)
            # KL(teacher || student) at temperature t, scaled by t^2 so its gradients keep
            # the size of the hard loss's (Hinton et al., 2015)
            soft = F.kl_div(
                F.log_softmax(logits / t, dim=1), soft_targets[at], reduction="batchmean"
            ) * (t * t)
            hard = F.cross_entropy(logits, y[at])
            loss = o.alpha * soft + (1 - o.alpha) * hard
            loss.backward()
            optimizer.step()
            for key, value in (("loss", loss), ("soft_loss", soft), ("hard_loss", hard)):
                sums[key] += value.item() * len(idx)
            correct += int((logits.argmax(1) == y[at]).sum())
            bar.update()
            bar.set_postfix(epoch=f"{epoch}/{epochs}", loss=f"{loss.item():.4f}", refresh=False)
        row = {"epoch": epoch, **{k: v / n for k, v in sums.items()}}
        row["train_accuracy"] = correct / n
        history.append(row)
    bar.close()
    return history


def _count_trainable(module: Any) -> int:
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad))


def _tensors(feed: Feed) -> list[torch.Tensor]:
    import torch

    return [torch.from_numpy(v) for v in feed.values()]


def _require_smaller(
    preset: Any, teacher_params: Any, student: Any, num_classes: int, options: Options
) -> None:
    """ParamsError when the student, built with the preset, is not smaller than the teacher."""
    teacher_n = _count(preset.build(teacher_params, num_classes))
    _check_smaller(options, teacher_n, _count(preset.build(student, num_classes)))


def _check_smaller(options: Options, teacher_n: int, student_n: int) -> None:
    if student_n >= teacher_n:
        raise ParamsError(
            f"student = {options.student or 'the preset default'!r} has {student_n:,} "
            f"parameters, not fewer than the teacher's {teacher_n:,}; choose smaller values"
        )


def _preset_of(model_params: Any) -> Any:
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
                f"{_pc(o['baseline_accuracy']['estimate'])} -> "
                f"{_pc(o['candidate_accuracy']['estimate'])}, "
            )
        lines.append(
            f"- Against the teacher: {acc}{_points(o['drop_points'])} overall; "
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
