"""The baseline's predictions as `reference` writes them and `validate@<technique>` reads them:
which sets are predicted, how a session predicts each row alone, and the reference folder's
files. A module of its own so that the `reference` stage does not depend on the validate stage's
code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stages import data as datasets
from stages.runtime import run_alone
from stages.storage import EvidenceError, read_arrays, read_json, sha256_file

REFERENCE_LOGITS, REFERENCE_OUTPUTS = "logits.npz", "outputs.npz"
REFERENCE_FILE = "reference.json"
ORIGINAL_DIR = "original"  # on a stack: the original baseline's predictions, in the same files


def eval_sets(prepared: datasets.Prepared) -> list[str]:
    """The sets predicted: validation, then any other set a slice is drawn from (e.g. low_light)."""
    return ["validation", *sorted({s.set for s in prepared.slices} - {"validation"})]


def predict(
    sess: Any,
    feeds: dict[str, np.ndarray],
    preset: Any = None,
    desc: str = "predict",
    workers: list[Any] | None = None,
    record: dict[str, Any] | None = None,
    label: int = 0,
) -> np.ndarray:
    """Logits (output `label`, the first by default) for every row, each row alone; see
    runtime.run_alone."""
    return run_alone(sess, feeds, preset, desc, workers, record)[label].astype(np.float32)


def read_reference(folder: Path, baseline: Path) -> dict[str, np.ndarray]:
    """The logits per set of `baseline` (the control, or the original baseline in
    ORIGINAL_DIR), refused when they were computed from another model."""
    info = read_json(folder / REFERENCE_FILE, "reference")
    if info["model_sha256"] != sha256_file(baseline):
        raise EvidenceError(
            f"{folder} holds the predictions of another baseline than {baseline} (sha256 "
            f"{info['model_sha256'][:12]}): run `dvc repro reference`"
        )
    return read_arrays(folder / REFERENCE_LOGITS, "reference")


def read_reference_outputs(folder: Path) -> dict[str, np.ndarray]:
    """The baseline's every output on the validation rows, by name in the model's order (stored
    by position: output names need not be valid member names)."""
    names = read_json(folder / REFERENCE_FILE, "reference").get("outputs")
    if names is None:
        raise EvidenceError(f"{folder} holds no per-output predictions: run `dvc repro reference`")
    arrays = read_arrays(folder / REFERENCE_OUTPUTS, "reference")
    return {name: arrays[str(i)] for i, name in enumerate(names)}
