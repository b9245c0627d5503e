"""The options of distill."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stages.errors import require


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
