"""What a model preset provides: the interface every preset in stages/models/ is written against.

A preset is a class deriving from Preset; stages.models.catalog maps each model.name to one
instance. The required members have no default (mypy refuses an instance that lacks one); the
optional ones default to "not provided": a hook to None, `trim` to the identity, a flag to False,
a mapping to {}.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from stages.data import Prepared

if TYPE_CHECKING:
    import torch

Feeds = dict[str, np.ndarray]


class Preset(Protocol):
    # the preset's params dataclass (stages.models.options), model.* in params.yaml
    Params: ClassVar[type]
    # per input, its dynamic axes for the ONNX export; {} = a dynamic batch axis on every input
    DYNAMIC_AXES: ClassVar[dict[str, dict[int, str]]] = {}
    # a pretrained model, costly to build: params checks do not build it
    HEAVY: ClassVar[bool] = False
    # distill's default student: the params fields that differ from the teacher's
    STUDENT: ClassVar[dict[str, Any]] = {}
    # distill's training of that student (epochs, batch_size, learning_rate, loss, schedule)
    # where its options say 0 or ""
    DISTILL: ClassVar[dict[str, Any]] = {}

    # per row, its length (e.g. real tokens): whole sets run in this order, shortest first
    lengths: Callable[[Feeds], np.ndarray] | None = None
    # the preset's own training after a technique changed the model (e.g. pruned it):
    # finetune(module, data, *, epochs, batch_size, learning_rate, seed, rows) -> log
    finetune: Callable[..., dict[str, Any]] | None = None
    # a model that arrives as ONNX: provide_onnx(params, data, out) copies it to `out`, instead
    # of train + export; returns the baseline's training log
    provide_onnx: Callable[[Any, Prepared, Path], dict[str, Any]] | None = None
    # distill's student cut from the trained teacher: student(teacher, student_params, pick),
    # where pick(teacher_layers, student_layers) gives the teacher's layers the student keeps
    student: Callable[[Any, Any, Callable[[int, int], list[int]]], torch.nn.Module] | None = None

    def prepare(self, p: Any, seed: int) -> Prepared:
        """The data: split train / calibration / validation (seeded), with its slices."""
        ...

    def build(self, p: Any, num_classes: int) -> torch.nn.Module:
        """A fresh (untrained) torch module, e.g. for loading saved weights into."""
        ...

    def train(self, p: Any, data: Prepared, seed: int) -> tuple[torch.nn.Module, dict[str, Any]]:
        """The trained torch module and its training log (deterministic for a seed)."""
        ...

    def render_failure(self, row: Feeds) -> tuple[str, bytes]:
        """One validation row (a batch of one) as a file: its suffix and its bytes."""
        ...

    def trim(self, feed: Feeds) -> Feeds:
        """A batch cut to its natural shape (e.g. to its longest real sequence)."""
        return feed
