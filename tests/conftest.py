"""Shared fixtures: the real config shrunk, and tiny ONNX models built in tmp_path."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stages import params as P
from stages.data import LABELS, Prepared

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture()
def cfg() -> dict[str, Any]:
    """The real composition of conf/, as a plain mapping a test may shrink before validating."""
    return P.compose(conf=ROOT / "conf")


@pytest.fixture(scope="session")
def tiny_data() -> Prepared:
    """Random 1x8x8 images (standard normal, so that the tiny model's predictions vary across
    rows), 4 classes labelled by the brightest quadrant: enough rows to calibrate and compare."""
    rng = np.random.default_rng(0)
    sets = {}
    for name, n in (("train", 64), ("calibration", 32), ("validation", 48)):
        images = rng.standard_normal((n, 1, 8, 8)).astype(np.float32)
        quadrants = images.reshape(n, 2, 4, 2, 4).mean(axis=(2, 4)).reshape(n, 4)
        sets[name] = {"image": images, LABELS: quadrants.argmax(1).astype(np.int64)}
    return Prepared(["image"], ["a", "b", "c", "d"], sets)


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory, tiny_data: Prepared) -> Path:
    """A conv + linear classifier exported with the pipeline's own exporter (dynamic batch)."""
    import torch

    from stages.export import export

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 64, 4),
    ).eval()
    path = tmp_path_factory.mktemp("tiny") / "model.onnx"
    export(model, {"image": tiny_data.sets["validation"]["image"][:2]}, path)
    return path


@dataclass(frozen=True)
class MiniLMBaseline:
    data: Prepared
    params: Any  # minilm.Params
    onnx: Path
    module: Any  # the trained torch classifier


@pytest.fixture(scope="session")
def minilm_baseline(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[dict[str, Any]], MiniLMBaseline]:
    """Builds the real MiniLM cut to `fields` (e.g. {"layers": 1, "max_rows": 400, ...}),
    trained and written as the baseline stage does: ONNX from two validation rows, weights."""
    import torch

    from stages.export import MODEL_FILE, TRAIN_LOGITS_FILE, WEIGHTS_FILE, export
    from stages.models import minilm

    def build(fields: dict[str, Any]) -> MiniLMBaseline:
        params = minilm.Params(**fields)
        data = minilm.prepare(params, seed=0)
        module, _ = minilm.train(params, data, seed=0)
        folder = tmp_path_factory.mktemp("minilm_baseline")
        example = {k: v[:2] for k, v in data.feeds("validation").items()}
        export(module, example, folder / MODEL_FILE, minilm.DYNAMIC_AXES)
        torch.save(module.state_dict(), folder / WEIGHTS_FILE)
        np.save(folder / TRAIN_LOGITS_FILE, module.train_logits.numpy())
        return MiniLMBaseline(data, params, folder / MODEL_FILE, module)

    return build
