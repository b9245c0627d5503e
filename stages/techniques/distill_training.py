"""distill's training: the teacher's targets (kept by the baseline stage, or computed once), the
tuning rows held out of training, and the student fitted on the targets in length-bucketed,
seeded batches, with its agreement with the teacher on the tuning rows after every epoch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stages.export import TRAIN_EMBEDDINGS_FILE, TRAIN_LOGITS_FILE
from stages.storage import EvidenceError

if TYPE_CHECKING:
    import torch

Feed = dict[str, np.ndarray]

TEACHER_CHUNK = 256  # rows per teacher call when computing its targets (no gradients)
WEIGHT_DECAY = 0.01  # AdamW's, on every parameter


@dataclass(frozen=True)
class Tuning:
    """Rows no epoch trains on, and the teacher's predicted class on each: the training curve's
    agreement is measured on them (never on validation rows)."""

    feeds: Feed
    labels: np.ndarray
    teacher_pred: np.ndarray
    rows: np.ndarray  # each row's length, for length-ordered prediction


def _batches(rows: np.ndarray, size: int, order: torch.Generator) -> list[np.ndarray]:
    """One epoch's batches: rows sorted by length (ties in a seeded random order), cut into
    consecutive batches, the batches in a seeded random order. Equal lengths: a plain shuffle."""
    import torch

    perm = torch.randperm(len(rows), generator=order).numpy()
    ranked = perm[np.argsort(rows[perm], kind="stable")]
    batches = [ranked[i : i + size] for i in range(0, len(ranked), size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=order).tolist()]


def held_out(n: int, tuning_rows: int, seed: int) -> np.ndarray:
    """The train rows held out for tuning (seeded, in order): `tuning_rows`, at most n // 5."""
    k = min(tuning_rows, n // 5)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.random.default_rng([seed, 24]).choice(n, size=k, replace=False))


def cached(baseline_dir: Path, name: str, rows: int) -> tuple[torch.Tensor | None, str]:
    """One of the teacher's train-split targets as the baseline stage kept it (a preset whose
    training computed it anyway, e.g. MiniLM's head fit on the frozen encoder's embeddings),
    with where it came from; (None, ...) when the baseline kept none."""
    import torch

    path = baseline_dir / name
    if not path.is_file():
        return None, "computed: a forward pass of the teacher over the train split"
    array = np.load(path)
    if array.ndim != 2 or len(array) != rows:
        raise EvidenceError(
            f"{path} holds an array of shape {array.shape}, not one row per train row ({rows}): "
            "the baseline is stale; run `dvc repro baseline`"
        )
    return torch.from_numpy(array), f"kept by the baseline stage ({name})"


def teacher_targets(
    teacher: Any,
    baseline_dir: Path,
    feeds: Feed,
    rows: np.ndarray,
    cut: Callable[[Feed], Feed],
    embedding: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """The teacher's logits on every train row and, for the embedding loss, its pooled
    embeddings, with where they came from."""
    n = len(rows)
    name = TRAIN_EMBEDDINGS_FILE if embedding else TRAIN_LOGITS_FILE
    kept, source = cached(baseline_dir, name, n)
    if kept is None:
        kept = forward(teacher.embed if embedding else teacher, feeds, rows, cut)
    if not embedding:
        return kept, None, source
    import torch

    with torch.no_grad():
        return teacher.head(kept), kept, source


def forward(
    call: Callable[..., Any], feeds: Feed, rows: np.ndarray, cut: Callable[[Feed], Feed]
) -> torch.Tensor:
    """call's output for every row, in row order: without gradients, in length-sorted chunks
    each trimmed to its longest row."""
    import torch

    ranked = np.argsort(rows, kind="stable")
    out: torch.Tensor | None = None
    with torch.no_grad():
        for i in range(0, len(ranked), TEACHER_CHUNK):
            idx = ranked[i : i + TEACHER_CHUNK]
            result = call(*_tensors(cut({k: v[idx] for k, v in feeds.items()})))
            if out is None:
                out = torch.empty(len(ranked), result.shape[1])
            out[torch.from_numpy(idx)] = result
    assert out is not None
    return out


def agreement(student: Any, tuning: Tuning, cut: Callable[[Feed], Feed]) -> dict[str, float]:
    """The student's agreement with the teacher's class, and its accuracy, on the tuning rows."""
    student.eval()
    pred = forward(student, tuning.feeds, tuning.rows, cut).argmax(1).numpy()
    return {
        "tuning_agreement": float((pred == tuning.teacher_pred).mean()),
        "tuning_accuracy": float((pred == tuning.labels).mean()),
    }


def schedule(optimizer: Any, kind: str, warmup: float, steps: int) -> Any:
    """The learning-rate schedule: None (constant), or linear warm-up then linear decay to 0."""
    import torch

    if kind != "linear":
        return None
    w = int(warmup * steps)

    def factor(step: int) -> float:
        if step < w:
            return (step + 1) / w
        return max(0.0, (steps - step) / max(1, steps - w))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def fit(
    student: Any,
    feeds: Feed,
    y: torch.Tensor,
    teacher_logits: torch.Tensor,
    teacher_embeddings: torch.Tensor | None,
    rows: np.ndarray,
    cut: Callable[[Feed], Feed],
    o: Any,
    settings: dict[str, Any],
    seed: int,
    tuning: Tuning | None = None,
) -> list[dict[str, Any]]:
    """AdamW on the loss `settings["loss"]` names: "logits", alpha * soft + (1 - alpha) * hard
    (Hinton et al., 2015), or "embedding", the mean-squared error of the student's pooled
    embedding to the teacher's (its head is the teacher's, frozen); per epoch the loss, the train
    accuracy and, with tuning rows, the agreement with the teacher on them."""
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
    steps = epochs * -(-n // settings["batch_size"])
    scheduler = schedule(optimizer, settings["schedule"], o.warmup, steps)
    history = []
    bar = tqdm(total=steps, desc="distill", unit="batch")
    for epoch in range(1, epochs + 1):
        student.train()
        sums: dict[str, float] = {}
        correct = 0
        for idx in _batches(rows, settings["batch_size"], order):
            optimizer.zero_grad()
            inputs = _tensors(cut({k: v[idx] for k, v in feeds.items()}))
            at = torch.from_numpy(idx)
            if teacher_embeddings is not None:
                embedded = student.embed(*inputs)
                logits = student.head(embedded)
                parts = {"mse": F.mse_loss(embedded, teacher_embeddings[at])}
                loss = parts["mse"]
            else:
                logits = student(*inputs)
                # KL(teacher || student) at temperature t, scaled by t^2 so its gradients keep
                # the size of the hard loss's (Hinton et al., 2015)
                soft = F.kl_div(
                    F.log_softmax(logits / t, dim=1), soft_targets[at], reduction="batchmean"
                ) * (t * t)
                parts = {"soft_loss": soft, "hard_loss": F.cross_entropy(logits, y[at])}
                alpha = settings["alpha"]
                loss = alpha * soft + (1 - alpha) * parts["hard_loss"]
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            for key, value in {"loss": loss, **parts}.items():
                sums[key] = sums.get(key, 0.0) + value.item() * len(idx)
            correct += int((logits.argmax(1) == y[at]).sum())
            bar.update()
            bar.set_postfix(epoch=f"{epoch}/{epochs}", loss=f"{loss.item():.4f}", refresh=False)
        row: dict[str, Any] = {"epoch": epoch, **{k: v / n for k, v in sums.items()}}
        row["train_accuracy"] = correct / n
        if tuning is not None and len(tuning.labels):
            row |= agreement(student, tuning, cut)
        history.append(row)
    bar.close()
    return history


def count_trainable(module: Any) -> int:
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad))


def _tensors(feed: Feed) -> list[torch.Tensor]:
    import torch

    return [torch.from_numpy(v) for v in feed.values()]
