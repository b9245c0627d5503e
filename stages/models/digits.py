"""digits_cnn: scikit-learn's bundled 8x8 digits and a small CNN trained from scratch."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from stages.data import LABELS, Prepared
from stages.models.options import DigitsParams as Params
from stages.models.vision import INPUT, ImagePreset, class_slices, low_light

if TYPE_CHECKING:
    import torch

STUDENT = {"channels": [8, 16], "hidden": 32}  # distill's default student: a quarter of the weights


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
    slices = class_slices(validation, classes, classes)
    dark_slice, dark_set = low_light(x_val, y_val, p.low_light_scale, p.low_light_gamma)
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


class Digits(ImagePreset):
    Params = Params
    STUDENT = STUDENT
    SIDE = 8
    SCALE = 8
    prepare = staticmethod(prepare)
    build = staticmethod(build)


PRESET = Digits()
