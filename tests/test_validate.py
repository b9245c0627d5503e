"""Tests for the baseline's reference predictions as validate@ reads them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stages import predictions, validate
from stages.storage import EvidenceError, save_arrays, sha256_file, write_json


def _reference(folder: Path, model: Path) -> dict[str, np.ndarray]:
    logits = {"validation": np.arange(6, dtype=np.float32).reshape(3, 2)}
    save_arrays(folder / predictions.REFERENCE_LOGITS, logits)
    write_json(folder / predictions.REFERENCE_FILE, {"model_sha256": sha256_file(model)})
    return logits


def test_reference_of_this_baseline_is_read(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"baseline")
    logits = _reference(tmp_path / "ref", model)
    got = predictions.read_reference(tmp_path / "ref", model)
    assert list(got) == ["validation"] and np.array_equal(got["validation"], logits["validation"])


def test_reference_of_another_baseline_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"baseline")
    _reference(tmp_path / "ref", model)
    model.write_bytes(b"retrained baseline")
    with pytest.raises(EvidenceError, match=r"another baseline .* run `dvc repro reference`"):
        predictions.read_reference(tmp_path / "ref", model)


def test_missing_reference_says_which_stage_makes_it(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"baseline")
    with pytest.raises(EvidenceError, match=r"dvc repro reference"):
        predictions.read_reference(tmp_path / "nothing", model)


# --- compare: the paired accuracy comparison ----------------------------------------------------


def test_compare_counts_each_flip_direction_and_pairs_the_difference() -> None:
    from stages.validate import compare

    base = np.array([1, 1, 1, 1, 0, 0, 1, 0, 1, 1], dtype=bool)
    cand = np.array([1, 0, 0, 1, 0, 1, 1, 0, 1, 1], dtype=bool)  # 2 right->wrong, 1 wrong->right

    c = compare(base, cand, 0.95)

    assert (c["n"], c["right_to_wrong"], c["wrong_to_right"]) == (10, 2, 1)
    assert c["baseline_accuracy"]["estimate"] == pytest.approx(0.7)
    assert c["candidate_accuracy"]["estimate"] == pytest.approx(0.6)
    assert c["drop_points"] == pytest.approx(10.0)  # the candidate is worse: a positive drop
    assert c["difference_points"]["estimate"] == pytest.approx(-10.0)
    lo, hi = c["difference_points"]["low"], c["difference_points"]["high"]
    assert lo < -10.0 < hi  # an interval around the (negative) difference
    assert c["mcnemar_p"] == pytest.approx(1.0)  # 2 vs 1 flips


def test_compare_is_antisymmetric_in_the_sides() -> None:
    from stages.validate import compare

    rng = np.random.default_rng(0)
    base, cand = rng.random(500) < 0.8, rng.random(500) < 0.75

    ab, ba = compare(base, cand, 0.95), compare(cand, base, 0.95)

    assert ab["right_to_wrong"] == ba["wrong_to_right"] > 0
    assert ab["wrong_to_right"] == ba["right_to_wrong"] > 0
    assert ab["right_to_wrong"] != ab["wrong_to_right"]
    assert ab["drop_points"] == pytest.approx(-ba["drop_points"])
    assert ab["difference_points"]["low"] == pytest.approx(-ba["difference_points"]["high"])


def test_agreement_is_counted_from_the_predicted_classes() -> None:
    """Both sides wrong is not agreement when they name different classes: the share is counted
    from the predictions, not derived from the flips."""
    from stages.validate import compare

    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    base_pred = np.array([0, 1, 2, 1, 2, 0, 0, 1])  # rows 3-5 wrong
    cand_pred = np.array([0, 1, 1, 2, 2, 1, 0, 1])  # row 2 right->wrong; rows 3, 5 wrong, other

    c = compare(base_pred == labels, cand_pred == labels, 0.95, base_pred, cand_pred)

    assert (c["right_to_wrong"], c["wrong_to_right"]) == (1, 0)
    assert c["agreement"]["estimate"] == pytest.approx(5 / 8)  # not 1 - 1/8: rows 3, 5 differ
    assert c["agreement"]["low"] < 5 / 8 < c["agreement"]["high"]
    assert "agreement" not in compare(base_pred == labels, cand_pred == labels, 0.95)


# --- evaluate: a byte-identical candidate reuses the reference's rows alone -----------------------


class _Counting:
    """A session that counts the rows it is asked for."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        self.inner = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.rows = 0

    def run(self, names: object, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.rows += len(next(iter(feed.values())))
        return self.inner.run(names, feed)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_a_byte_identical_candidate_is_not_run_row_by_row_again(tiny_data, tiny_onnx) -> None:
    n = len(tiny_data.labels("validation"))
    ref = predictions.predict(_Counting(tiny_onnx), tiny_data.feeds("validation"))
    same, run = _Counting(tiny_onnx), _Counting(tiny_onnx)

    reused = validate.evaluate(
        {"validation": ref}, same, tiny_data, 0.95, same_model=True
    ).to_dict()
    ran = validate.evaluate({"validation": ref}, run, tiny_data, 0.95).to_dict()

    assert same.rows == n  # the batch-invariance check only
    assert run.rows == 2 * n  # every row alone, then the batch-invariance check
    assert reused["candidate_rows_alone"].startswith("the reference's")
    assert ran["candidate_rows_alone"]["validation"]["sessions"] == 1
    for key in ("overall", "slices", "fidelity", "label_output", "outputs", "batch_invariance"):
        assert reused[key] == ran[key]
