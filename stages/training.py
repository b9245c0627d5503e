"""Deterministic torch training shared by presets and training-based techniques.

torch is imported inside the functions that use it: every stage imports this module through the
presets, and most stages (benchmark, validate, report) never train, so they do not pay torch's
start-up (about 2.5 s here).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

ALL_THREADS: int | None = None  # torch's own thread count for this machine, before any change


def _torch() -> Any:
    """torch, first noting its own thread count (nothing else in the project sets threads, so the
    first call, made before `deterministic` or `inference_threads` change it, sees the default)."""
    global ALL_THREADS
    import torch

    if ALL_THREADS is None:
        ALL_THREADS = torch.get_num_threads()
    return torch


@contextlib.contextmanager
def inference_threads() -> Iterator[None]:
    """Every thread torch would use, for a forward pass without gradients inside `deterministic`:
    the encoder's kernels split their work over output rows and columns, never over a sum, so any
    thread count gives the same bits (tests/test_minilm.py compares 1 and 2 threads). Training
    stays on one thread: gradients sum over the batch, and threads change that order."""
    torch = _torch()
    threads = torch.get_num_threads()
    torch.set_num_threads(ALL_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def deterministic(seed: int, threads: int = 1) -> Iterator[None]:
    """Seeded, deterministic kernels on a fixed number of threads (one by default): two runs give
    identical weights. The count is fixed, not the machine's: a float reduction split over
    another number of threads sums in another order, so the same count gives the same bits on
    any machine, even one with fewer cores (only slower there)."""
    torch = _torch()
    before = torch.get_num_threads()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        torch.use_deterministic_algorithms(was_deterministic)


def fit_classifier(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    progress: Callable[..., Any],
) -> dict[str, Any]:
    """Adam on cross-entropy with a seeded shuffle; returns the loss and accuracy per epoch."""
    torch = _torch()
    order = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    loss_fn = torch.nn.CrossEntropyLoss()
    history = []
    bar = progress(range(epochs), desc="train", unit="epoch")
    for epoch in bar:
        model.train()
        perm = torch.randperm(len(x), generator=order)
        total, correct = 0.0, 0
        for start in range(0, len(x), batch_size):
            idx = perm[start : start + batch_size]
            optimizer.zero_grad()
            logits = model(x[idx])
            loss = loss_fn(logits, y[idx])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
            correct += int((logits.argmax(1) == y[idx]).sum())
        row = {"epoch": epoch + 1, "loss": total / len(x), "train_accuracy": correct / len(x)}
        history.append(row)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{row['loss']:.4f}", acc=f"{row['train_accuracy']:.3f}")
    model.eval()
    return {"epochs": history, "final_loss": history[-1]["loss"]}


def train_classifier(
    build: Callable[[], nn.Module], data: Any, p: Any, seed: int, input_name: str
) -> tuple[nn.Module, dict[str, Any]]:
    """Build and train an image classifier deterministically on the train split (a preset's
    `train`): seeded init, one thread, fixed shuffle order, a progress bar with the loss."""
    from tqdm import tqdm

    torch = _torch()
    with deterministic(seed):
        model = build()
        x = torch.from_numpy(data.sets["train"][input_name])
        y = torch.from_numpy(data.sets["train"]["labels"])
        log = fit_classifier(
            model,
            x,
            y,
            epochs=p.epochs,
            batch_size=p.batch_size,
            learning_rate=p.learning_rate,
            seed=seed,
            progress=tqdm,
        )
    log["train_rows"] = len(y)
    log["parameters"] = int(sum(t.numel() for t in model.parameters()))
    return model.eval(), log


def sample_rows(n: int, rows: int, seed: int) -> np.ndarray:
    """Indices of a seeded sample of `rows` of n rows, in order (every row when rows is 0 or at
    least n): the rows a short fine-tune trains on."""
    if rows <= 0 or rows >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, 11]).choice(n, size=rows, replace=False))
