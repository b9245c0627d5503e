"""distill's training: the teacher's logits (kept by the baseline stage, or computed once), and
the student fitted on them and the true labels in length-bucketed, seeded batches."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stages.export import TRAIN_LOGITS_FILE
from stages.storage import EvidenceError
from stages.techniques.options.distill import Options

if TYPE_CHECKING:
    import torch

Feed = dict[str, np.ndarray]

TEACHER_CHUNK = 256  # rows per teacher call when caching its logits (no gradients)
WEIGHT_DECAY = 0.01  # AdamW's, on every parameter


def _batches(rows: np.ndarray, size: int, order: torch.Generator) -> list[np.ndarray]:
    """One epoch's batches: rows sorted by length (ties in a seeded random order), cut into
    consecutive batches, the batches in a seeded random order. Equal lengths: a plain shuffle."""
    import torch

    perm = torch.randperm(len(rows), generator=order).numpy()
    ranked = perm[np.argsort(rows[perm], kind="stable")]
    batches = [ranked[i : i + size] for i in range(0, len(ranked), size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=order).tolist()]


def cached_logits(baseline_dir: Path, rows: int) -> tuple[torch.Tensor | None, str]:
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


def compute_teacher_logits(
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


def fit(
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


def count_trainable(module: Any) -> int:
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad))


def _tensors(feed: Feed) -> list[torch.Tensor]:
    import torch

    return [torch.from_numpy(v) for v in feed.values()]
