"""Tests for the baseline's reference predictions as validate@ reads them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stages import validate as V
from stages.io import EvidenceError, save_arrays, sha256_file, write_json


def _reference(folder: Path, model: Path) -> dict[str, np.ndarray]:
    logits = {"validation": np.arange(6, dtype=np.float32).reshape(3, 2)}
    save_arrays(folder / V.REFERENCE_LOGITS, logits)
    write_json(folder / V.REFERENCE_FILE, {"model_sha256": sha256_file(model)})
    return logits


def test_reference_of_this_baseline_is_read(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"baseline")
    logits = _reference(tmp_path / "ref", model)
    got = V.read_reference(tmp_path / "ref", model)
    assert list(got) == ["validation"] and np.array_equal(got["validation"], logits["validation"])


def test_reference_of_another_baseline_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"baseline")
    _reference(tmp_path / "ref", model)
    model.write_bytes(b"retrained baseline")
    with pytest.raises(EvidenceError, match=r"another baseline .* run `dvc repro reference`"):
        V.read_reference(tmp_path / "ref", model)


def test_missing_reference_says_which_stage_makes_it(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"baseline")
    with pytest.raises(EvidenceError, match=r"dvc repro reference"):
        V.read_reference(tmp_path / "nothing", model)
