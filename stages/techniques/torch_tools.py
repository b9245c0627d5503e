"""What the techniques that start from the baseline's torch module share: its Conv/Linear layers,
parameter counts, the export's example rows, and the short fine-tune."""

from __future__ import annotations

from typing import Any

import numpy as np

from stages.techniques.base import Context, NotApplicable
from stages.training import fit_classifier, sample_rows


def weighted(module: Any) -> list[tuple[str, Any]]:
    from torch import nn

    return [(n, m) for n, m in module.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def count(module: Any) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def example(ctx: Context) -> dict[str, np.ndarray]:
    """Two validation rows per input: the export's example (the batch axis stays dynamic)."""
    feeds = ctx.data.feeds("validation")
    return {name: feeds[name][:2] for name in ctx.data.inputs}


def finetune(module: Any, ctx: Context, o: Any) -> dict[str, Any]:
    """A short fine-tune on the train split (seeded shuffle; inside `deterministic`): the
    preset's own `finetune` when it has one (e.g. refit the head on a frozen encoder), else Adam
    on the whole model."""
    import torch
    from tqdm import tqdm

    own = ctx.preset.finetune if ctx.preset is not None else None
    if own is not None:
        return own(
            module,
            ctx.data,
            epochs=o.finetune_epochs,
            batch_size=o.batch_size,
            learning_rate=o.learning_rate,
            seed=ctx.seed,
            rows=o.finetune_rows,
        )
    if len(ctx.data.inputs) != 1:
        raise NotApplicable("fine-tuning handles single-input models only; set finetune_epochs: 0")
    labels = ctx.data.labels("train")
    pick = sample_rows(len(labels), o.finetune_rows, ctx.seed)
    x = torch.from_numpy(ctx.data.feeds("train")[ctx.data.inputs[0]][pick])
    y = torch.from_numpy(labels[pick])
    log = fit_classifier(
        module,
        x,
        y,
        epochs=o.finetune_epochs,
        batch_size=o.batch_size,
        learning_rate=o.learning_rate,
        seed=ctx.seed,
        progress=lambda it, **kw: tqdm(it, **{**kw, "desc": "fine-tune"}),
    )
    log["train_rows"], log["of_train_rows"] = len(y), len(labels)
    return log
