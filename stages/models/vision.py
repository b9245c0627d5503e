"""What the image presets share: per-class slices, the low_light set, training and failure PNGs."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import numpy as np

from stages.data import LABELS, MASK_PREFIX, Prepared, Slice
from stages.models.preset import Preset
from stages.training import train_classifier

if TYPE_CHECKING:
    import torch

INPUT = "image"


class ImagePreset(Preset):
    """A CNN trained from scratch on square grayscale images in [0, 1], fed as INPUT."""

    SIDE: int  # pixels per side
    SCALE: int  # failure PNGs are scaled up this many times

    def train(self, p: Any, data: Prepared, seed: int) -> tuple[torch.nn.Module, dict[str, Any]]:
        """Train deterministically (fixed seed, one thread, fixed shuffle order)."""
        return train_classifier(lambda: self.build(p, len(data.class_names)), data, p, seed, INPUT)

    def render_failure(self, row: dict[str, np.ndarray]) -> tuple[str, bytes]:
        """An input as a file: the image scaled up SCALE times to a grayscale PNG."""
        from PIL import Image

        side = self.SIDE
        img = np.clip(row[INPUT].reshape(side, side) * 255.0, 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        size = (self.SCALE * side, self.SCALE * side)
        Image.fromarray(img).resize(size, Image.Resampling.NEAREST).save(buf, format="PNG")
        return ".png", buf.getvalue()


def class_slices(
    validation: dict[str, np.ndarray], slugs: list[str], names: list[str]
) -> list[Slice]:
    """One slice per class present in the validation set, its mask stored beside the inputs."""
    slices = []
    for c, (name, slug) in enumerate(zip(names, slugs, strict=True)):
        mask = validation[LABELS] == c
        if not mask.any():
            continue  # a tiny validation subset may miss a class: an empty slice has no accuracy
        validation[MASK_PREFIX + f"class_{slug}"] = mask
        slices.append(
            Slice(f"class_{slug}", "validation", f"class_{slug}", f"validation images of a {name}")
        )
    return slices


def low_light(
    images: np.ndarray, labels: np.ndarray, scale: float, gamma: float
) -> tuple[Slice, dict[str, np.ndarray]]:
    """The `low_light` slice and its set: every validation image darkened to scale * x ** gamma."""
    darkened = (scale * images**gamma).astype(np.float32)
    description = f"every validation image darkened to {scale} * x ** {gamma}"
    return Slice("low_light", "low_light", None, description), {
        INPUT: darkened,
        LABELS: labels,
    }
