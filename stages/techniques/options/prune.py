"""The options of prune_magnitude and prune_channels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stages.errors import one_of, require

NORMS = ("l1", "l2")


def _check_finetune(o: Any) -> None:
    require(o.finetune_epochs >= 0, "finetune_epochs", o.finetune_epochs, ">= 0 (0 = none)")
    require(o.learning_rate > 0, "learning_rate", o.learning_rate, "> 0")
    require(o.batch_size >= 1, "batch_size", o.batch_size, ">= 1")
    require(o.finetune_rows >= 0, "finetune_rows", o.finetune_rows, ">= 0 (0 = every train row)")


@dataclass
class MagnitudeOptions:
    sparsity: float = 0.3  # share of the Conv/Linear weights set to zero (one global threshold)
    # 0 = no fine-tune; else the preset's own training when it has one (MiniLM: refit the head
    # on the frozen, pruned encoder), Adam on the whole model otherwise; the zeros stay zero
    finetune_epochs: int = 2
    learning_rate: float = 0.001
    batch_size: int = 64
    finetune_rows: int = 3000  # a seeded sample of the train split to fine-tune on; 0 = all of it

    def __post_init__(self) -> None:
        require(0 <= self.sparsity < 1, "sparsity", self.sparsity, "a share in [0, 1)")
        _check_finetune(self)


@dataclass
class ChannelOptions:
    amount: float = 0.25  # share of output channels / neurons removed from each prunable layer
    norm: str = "l1"  # l1 | l2: channels with the smallest weight norm go first
    finetune_epochs: int = 2
    learning_rate: float = 0.001
    batch_size: int = 64
    finetune_rows: int = 3000  # a seeded sample of the train split to fine-tune on; 0 = all of it

    def __post_init__(self) -> None:
        require(0 <= self.amount < 1, "amount", self.amount, "a share in [0, 1)")
        one_of("norm", self.norm, NORMS)
        _check_finetune(self)
