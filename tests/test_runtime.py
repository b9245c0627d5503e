"""Tests for stages.runtime: model checks, the target's provider, sessions and their readout."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from stages.onnx_graph import model_files
from stages.params import Target
from stages.runtime import (
    TargetUnavailable,
    check_model,
    check_target,
    readout,
    session,
    session_settings,
    size_on_disk,
    threads,
)
from stages.storage import EvidenceError

CUDA = "CUDAExecutionProvider"


def _save_external(tiny_onnx: Path, folder: Path) -> Path:
    path = folder / "model.onnx"
    onnx.save_model(
        onnx.load(str(tiny_onnx)),
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="w.data",
        size_threshold=0,
    )
    return path


# --- check_model ------------------------------------------------------------------------------


def test_check_model_accepts_a_valid_model(tiny_onnx: Path) -> None:
    check_model(tiny_onnx, "baseline")  # no error


def test_check_model_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"

    with pytest.raises(EvidenceError, match="missing") as err:
        check_model(path, "baseline")

    assert str(path) in str(err.value)
    assert "dvc repro baseline" in str(err.value)


def test_check_model_truncated_file(tiny_onnx: Path, tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    raw = tiny_onnx.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])

    with pytest.raises(EvidenceError, match="not a valid ONNX model") as err:
        check_model(path, "optimize@int8_dynamic")

    message = str(err.value)
    assert str(path) in message
    assert "dvc repro -f -s optimize@int8_dynamic" in message
    assert f"dvc checkout {path}" in message


def test_check_model_folder_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(EvidenceError, match="missing"):
        check_model(tmp_path, "baseline")


# --- targets ----------------------------------------------------------------------------------


@pytest.mark.skipif(CUDA in ort.get_available_providers(), reason="CUDA is available here")
def test_cuda_target_is_refused_without_fallback(tiny_onnx: Path) -> None:
    target = Target(name="cuda", provider=CUDA)

    with pytest.raises(TargetUnavailable) as from_check:
        check_target(target)
    with pytest.raises(TargetUnavailable) as from_session:
        session(tiny_onnx, target, "baseline")

    for err in (from_check, from_session):
        message = str(err.value)
        assert "'cuda'" in message
        assert CUDA in message
        assert "no silent fallback" in message
        assert "onnxruntime-gpu" in message


def test_unknown_provider_is_refused_with_a_generic_hint() -> None:
    target = Target(name="npu", provider="NoSuchExecutionProvider")

    with pytest.raises(TargetUnavailable, match="choose a target whose provider is listed"):
        check_target(target)


def test_cpu_target_is_available() -> None:
    check_target(Target())  # no error


def test_threads_resolve_zero_to_a_positive_count() -> None:
    assert threads(Target(intra_op_threads=3)) == 3
    assert threads(Target(intra_op_threads=0)) >= 1


# --- session / readout ------------------------------------------------------------------------


def test_session_uses_the_target_settings(tiny_onnx: Path) -> None:
    target = Target(intra_op_threads=1)

    sess = session(tiny_onnx, target, "baseline")
    got = readout(sess)

    assert got["provider"] == "CPUExecutionProvider"
    assert got["intra_op_threads"] == 1
    assert got["inter_op_threads"] == 1
    assert got["allow_spinning"] is False
    assert got["execution_mode"] == "ORT_SEQUENTIAL"
    assert got["graph_optimization_level"] == "ORT_ENABLE_ALL"
    assert set(got) == set(session_settings(target))


def test_session_readout_follows_other_settings(tiny_onnx: Path) -> None:
    target = Target(intra_op_threads=2, allow_spinning=True, graph_optimization_level="basic")

    got = readout(session(tiny_onnx, target, "baseline"))

    assert got["intra_op_threads"] == 2
    assert got["allow_spinning"] is True
    assert got["graph_optimization_level"] == "ORT_ENABLE_BASIC"


def test_session_runs_the_model(tiny_onnx: Path) -> None:
    sess = session(tiny_onnx, Target(intra_op_threads=1), "baseline")
    batch = np.zeros((3, 1, 8, 8), dtype=np.float32)

    (logits,) = sess.run(None, {"image": batch})

    assert logits.shape == (3, 4)


def test_session_checks_the_model_first(tmp_path: Path) -> None:
    with pytest.raises(EvidenceError, match="dvc repro baseline"):
        session(tmp_path / "model.onnx", Target(), "baseline")


# --- files on disk ----------------------------------------------------------------------------


def test_size_on_disk_of_a_single_file(tiny_onnx: Path) -> None:
    assert model_files(tiny_onnx) == [tiny_onnx]
    assert size_on_disk(tiny_onnx) == tiny_onnx.stat().st_size


def test_size_on_disk_includes_external_data(tiny_onnx: Path, tmp_path: Path) -> None:
    path = _save_external(tiny_onnx, tmp_path)
    data = tmp_path / "w.data"

    size = size_on_disk(path)

    assert model_files(path) == [path, data]
    assert data.stat().st_size > 0
    assert size == path.stat().st_size + data.stat().st_size


def test_check_model_missing_external_data(tiny_onnx: Path, tmp_path: Path) -> None:
    path = _save_external(tiny_onnx, tmp_path)
    (tmp_path / "w.data").unlink()

    with pytest.raises(EvidenceError, match="not a valid ONNX model"):
        check_model(path, "optimize@int8_dynamic")


def test_check_model_of_a_copy_with_its_data(tiny_onnx: Path, tmp_path: Path) -> None:
    src = _save_external(tiny_onnx, tmp_path)
    moved = tmp_path / "moved"
    moved.mkdir()
    for f in model_files(src):
        shutil.copyfile(f, moved / f.name)

    check_model(moved / "model.onnx", "baseline")  # no error: the data travelled along

    assert size_on_disk(moved / "model.onnx") == size_on_disk(src)


# --- rows alone, shared among single-threaded workers -------------------------------------------


class _Off:
    """A worker whose every output is off by a little: run_alone must not keep its rows."""

    def __init__(self, inner: ort.InferenceSession) -> None:
        self.inner = inner

    def run(self, names: object, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [o + np.float32(1e-3) for o in self.inner.run(names, feed)]


def _cpu() -> Target:
    return Target(name="cpu", provider="CPUExecutionProvider")


def test_rows_shared_among_workers_equal_the_target_sessions_bit_for_bit(
    tiny_onnx: Path, tiny_data
) -> None:
    from stages.runtime import row_workers, run_alone, session

    feeds = tiny_data.feeds("validation")
    sess = session(tiny_onnx, _cpu(), "baseline")
    workers = [ort.InferenceSession(str(tiny_onnx)) for _ in range(2)]  # whatever the cores
    how: dict = {}

    shared = run_alone(sess, feeds, workers=workers, record=how)
    alone = run_alone(sess, feeds)

    assert all(np.array_equal(a, b) for a, b in zip(shared, alone, strict=True))
    assert how == {
        "sessions": 2,
        "threads_each": 1,
        "checked_rows": 32,
        "agreed_with_target_session": True,
    }
    cores = row_workers(tiny_onnx, _cpu())
    assert all(w.get_session_options().intra_op_num_threads == 1 for w in cores)


def test_workers_that_disagree_are_dropped_and_every_row_runs_on_the_target(
    tiny_onnx: Path, tiny_data
) -> None:
    from stages.runtime import run_alone, session

    feeds = tiny_data.feeds("validation")
    sess = session(tiny_onnx, _cpu(), "baseline")
    how: dict = {}

    out = run_alone(sess, feeds, workers=[_Off(sess), _Off(sess)], record=how)

    assert np.array_equal(out[0], run_alone(sess, feeds)[0])
    assert how["agreed_with_target_session"] is False


def test_checked_rows_spread_over_the_lengths_longest_included() -> None:
    from types import SimpleNamespace

    from stages.runtime import spread_rows

    lengths = np.array([5, 1, 9, 3, 7, 2, 8, 4, 6, 10])
    preset = SimpleNamespace(lengths=lambda f: f["n"])

    picked = spread_rows({"n": lengths}, preset, 4)

    assert len(picked) == 4 and 9 in picked and 1 in picked  # rows of length 10 and 1
