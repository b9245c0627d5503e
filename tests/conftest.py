"""Shared fixtures: the real config shrunk, and tiny ONNX models built in tmp_path."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stages import params as config
from stages.data import LABELS, Prepared

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def copy_worktree(dest: Path, *paths: str) -> Path:
    """The working tree's files as a fresh clone has them (tracked and untracked, not ignored:
    no data, models or MLflow store) copied into `dest`; only those under `paths` if given."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z", "--", *paths],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes((ROOT / rel).read_bytes())
    return dest


@pytest.fixture()
def cfg() -> dict[str, Any]:
    """The real composition of conf/, as a plain mapping a test may shrink before validating."""
    return config.compose(conf=ROOT / "conf")


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

    from stages.export import (
        MODEL_FILE,
        TRAIN_EMBEDDINGS_FILE,
        TRAIN_LOGITS_FILE,
        WEIGHTS_FILE,
        export,
    )
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
        np.save(folder / TRAIN_EMBEDDINGS_FILE, module.train_embeddings.numpy())
        return MiniLMBaseline(data, params, folder / MODEL_FILE, module)

    return build


TRACKING_NOTE = "# int8_dynamic\n\nShip: 1.41x at p50, batch 1.\n"


def tracking_summary(candidates: dict[str, Any]) -> dict[str, Any]:
    """A report stage's summary.json around `candidates` (name -> verdict, options, metrics)."""
    return {
        "model": "tiny",
        "target": "cpu",
        "host": "abc123",
        "bench": {"batch_sizes": [1, 8]},
        "budget": {"max_accuracy_drop_points": 1.0},
        "candidates": candidates,
    }


def tracking_evidence(root: Path) -> tuple[dict[str, Any], dict[str, list[Path]], list[Path]]:
    """stages.tracking.log_run()'s inputs: a summary of two candidates (one failed) and their files,
    written under `root`."""
    summary = tracking_summary(
        {
            "int8_dynamic": {
                "verdict": "ship",
                "options": {"per_channel": True},
                "metrics": {"speedup_p50_b1": 1.4142, "accuracy_drop_points": 0.2},
            },
            "fp16": {"verdict": "reject", "options": {}, "metrics": {}},
        }
    )
    review, failures = root / "review", root / "failures" / "int8_dynamic"
    failures.mkdir(parents=True)
    review.mkdir()
    (review / "int8_dynamic.md").write_text(TRACKING_NOTE)
    (review / "fp16.md").write_text("# fp16\n\nFailed to export.\n")
    (failures / "index.csv").write_text("row,label\n3,b\n")
    (root / "tradeoff.png").write_bytes(b"png")
    artifacts = {
        n: [review / f"{n}.md", root / "failures" / n, root / "benchmark" / n / "benchmark.json"]
        for n in summary["candidates"]
    }
    return summary, artifacts, [root / "tradeoff.png"]
