"""What every technique shares: its context, and how it says it does not apply."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.data import Prepared

MODEL_FILE = "model.onnx"


class NotApplicable(Exception):
    """The technique cannot apply to this model; the message is the reason shown in the report."""


@dataclass(frozen=True)
class Context:
    """What a technique gets: the baseline, its options, the prepared data, where to write."""

    baseline: Path  # the baseline ONNX file
    options: Any  # the technique's options dataclass
    data: Prepared
    out: Path  # write the candidate model to out / MODEL_FILE
    seed: int

    @property
    def model_out(self) -> Path:
        return self.out / MODEL_FILE
