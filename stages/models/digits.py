"""digits_cnn: scikit-learn's bundled 8x8 digits and a small CNN trained from scratch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from stages.data import (
    LABELS,
    MASK_PREFIX,
    Prepared,
    Slice,
    check_low_light,
    check_split,
    grayscale_png,
    low_light,
)
from stages.errors import require
from stages.training import train_classifier

if TYPE_CHECKING:
    import torch

INPUT = "image"
STUDENT = {"channels": [8, 16], "hidden": 32}  # distill's default student: a quarter of the weights


@dataclass
class Params:
    validation_share: float = 0.25
    calibration_size: int = 128
    low_light_scale: float = 0.3
    low_light_gamma: float = 1.5
    channels: list[int] = field(default_factory=lambda: [16, 32])
    hidden: int = 64
    epochs: int = 25
    batch_size: int = 64
    learning_rate: float = 0.003
    parity_tolerance: float = 1e-4

    def __post_init__(self) -> None:
        check_split(self.validation_share, self.calibration_size)
        check_low_light(self.low_light_scale, self.low_light_gamma)
        require(len(self.channels) == 2, "channels", self.channels, "two conv widths")
        require(min([*self.channels, self.hidden]) >= 1, "channels", self.channels, "widths >= 1")
        require(self.epochs >= 1, "epochs", self.epochs, ">= 1")
        require(self.batch_size >= 1, "batch_size", self.batch_size, ">= 1")
        require(self.learning_rate > 0, "learning_rate", self.learning_rate, "> 0")
        require(self.parity_tolerance > 0, "parity_tolerance", self.parity_tolerance, "> 0")


def prepare(p: Params, seed: int) -> Prepared:
    """Split the digits into train / calibration / validation and build the slices."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]  # N x 1 x 8 x 8, in [0, 1]
    y = digits.target.astype(np.int64)
    x_pool, x_val, y_pool, y_val = train_test_split(
        x, y, test_size=p.validation_share, random_state=seed, stratify=y
    )
    x_train, x_cal, y_train, y_cal = train_test_split(
        x_pool, y_pool, test_size=p.calibration_size, random_state=seed, stratify=y_pool
    )
    classes = [str(c) for c in range(10)]
    validation = {INPUT: x_val, LABELS: y_val}
    slices = []
    for c in classes:
        validation[MASK_PREFIX + f"class_{c}"] = y_val == int(c)
        slices.append(
            Slice(f"class_{c}", "validation", f"class_{c}", f"validation images of a {c}")
        )
    dark_slice, dark_set = low_light(x_val, y_val, INPUT, p.low_light_scale, p.low_light_gamma)
    slices.append(dark_slice)
    sets = {
        "train": {INPUT: x_train, LABELS: y_train},
        "calibration": {INPUT: x_cal, LABELS: y_cal},
        "validation": validation,
        "low_light": dark_set,
    }
    info = {"source": "sklearn.datasets.load_digits", "image_shape": [1, 8, 8]}
    return Prepared([INPUT], classes, sets, slices, info)


def build(p: Params, num_classes: int) -> torch.nn.Module:
    import torch
    from torch import nn

    c1, c2 = p.channels
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(c1, c2, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * 16, p.hidden),
        nn.ReLU(),
        nn.Linear(p.hidden, num_classes),
    ).to(torch.float32)


def train(p: Params, data: Prepared, seed: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train deterministically (fixed seed, one thread, fixed shuffle order)."""
    return train_classifier(lambda: build(p, len(data.class_names)), data, p, seed, INPUT)


def render_failure(row: dict[str, np.ndarray]) -> tuple[str, bytes]:
    """An input as a file: the 8x8 image scaled up 8x to a grayscale PNG."""
    return grayscale_png(row[INPUT], 8, 8)
