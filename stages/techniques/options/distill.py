"""The options of distill."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stages.errors import one_of, require

# what the student learns to match: the teacher's softened logits and the true labels (Hinton et
# al., 2015), or the teacher's pooled embedding under the teacher's own head (mean-squared error,
# Reimers and Gurevych, 2020): the head stays the teacher's, so the decision function does too
LOSSES = ("logits", "embedding")
SCHEDULES = ("constant", "linear")  # linear: warm-up over `warmup` of the steps, then decay to 0


@dataclass
class Options:
    # the preset's params fields that differ for the student (digits_cnn: channels, hidden);
    # empty = the preset's own default student (its STUDENT)
    student: dict[str, Any] = field(default_factory=dict)
    # the teacher's layers a student cut from it starts from, by index (minilm_sentiment);
    # [] = spread evenly over the teacher's (every other layer, as DistilBERT)
    keep_layers: list[int] = field(default_factory=list)
    loss: str = ""  # one of LOSSES; "" = the preset's (its DISTILL; else logits)
    temperature: float = 4.0  # softens both sides' logits for the soft-label loss (logits loss)
    # weight of the soft-label loss; 1 - alpha weighs the true labels (logits loss); None = the
    # preset's (minilm_sentiment: 1, the teacher alone: labels would pull the student towards
    # the truth where the teacher is wrong, away from its decisions; the CNNs, whose students
    # start fresh from few rows: 0.7)
    alpha: float | None = None
    # 0 = the preset's (its DISTILL: minilm_sentiment 3, 32, 2e-4), else TRAINING (25, 64, 0.003)
    epochs: int = 0
    batch_size: int = 0
    learning_rate: float = 0.0
    schedule: str = ""  # one of SCHEDULES; "" = the preset's (its DISTILL; else constant)
    warmup: float = 0.1  # share of the steps the linear schedule warms up over
    # train rows held out of training (seeded) and, with the calibration split, the rows the
    # training curve's agreement with the teacher is measured on; at most a fifth of the split
    tuning_rows: int = 600

    def __post_init__(self) -> None:
        require(
            isinstance(self.student, dict) and all(isinstance(k, str) for k in self.student),
            "student",
            self.student,
            "a mapping of the model's params fields to the student's values",
        )
        require(
            all(isinstance(i, int) and i >= 0 for i in self.keep_layers)
            and list(self.keep_layers) == sorted(set(self.keep_layers)),
            "keep_layers",
            self.keep_layers,
            "increasing layer indices >= 0 (e.g. [0, 2, 4]), or [] to spread them evenly",
        )
        if self.loss:
            one_of("loss", self.loss, LOSSES)
        if self.schedule:
            one_of("schedule", self.schedule, SCHEDULES)
        require(self.temperature > 0, "temperature", self.temperature, "> 0")
        require(
            self.alpha is None or 0 <= self.alpha <= 1,
            "alpha",
            self.alpha,
            "a weight in [0, 1], or null for the preset's",
        )
        require(self.epochs >= 0, "epochs", self.epochs, ">= 1, or 0 for the preset's")
        require(self.batch_size >= 0, "batch_size", self.batch_size, ">= 1, or 0 for the preset's")
        require(
            self.learning_rate >= 0,
            "learning_rate",
            self.learning_rate,
            "> 0, or 0 for the preset's",
        )
        require(0 <= self.warmup < 1, "warmup", self.warmup, "a share of the steps in [0, 1)")
        require(self.tuning_rows >= 0, "tuning_rows", self.tuning_rows, ">= 0")
