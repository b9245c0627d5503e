"""The host stage's target check runs a session on the provider: a provider that ONNX Runtime lists
but cannot start (onnxruntime-gpu without a GPU) is refused there, not in a later stage."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import onnxruntime as ort
import pytest

from stages import host
from stages.params import Target
from stages.runtime import TargetUnavailable, check_target_runs

CUDA = "CUDAExecutionProvider"
REAL_SESSION = ort.InferenceSession


@pytest.fixture
def cuda_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    """An onnxruntime that lists CUDA, as onnxruntime-gpu does even on a machine with no GPU."""
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, "CPUExecutionProvider"])


def _session_raising(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError(
        "[ONNXRuntimeError] : 1 : FAIL : CUDA failure 100: no CUDA-capable device is detected\n"
        "more detail"
    )


def _session_on_cpu(model: Any, options: Any = None, providers: Any = None) -> Any:
    """What ONNX Runtime does when the CUDA provider fails to start: a CPU session, a log line."""
    return REAL_SESSION(model, options, providers=["CPUExecutionProvider"])


def _assert_clear(message: str) -> None:
    assert "'cuda'" in message and CUDA in message and "which this onnxruntime lists" in message
    assert "nvidia-smi" in message and "onnxruntime-gpu" in message and "target=cpu" in message
    assert "no silent fallback" in message


def test_listed_provider_whose_session_fails_is_refused(
    cuda_listed: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ort, "InferenceSession", _session_raising)

    with pytest.raises(TargetUnavailable) as e:
        check_target_runs(Target(name="cuda", provider=CUDA))

    _assert_clear(str(e.value))
    assert "a test session on it failed (" in str(e.value)
    assert "no CUDA-capable device is detected)" in str(e.value)  # first line of ORT's error
    assert "more detail" not in str(e.value)


def test_listed_provider_that_falls_back_to_cpu_is_refused(
    cuda_listed: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ort, "InferenceSession", _session_on_cpu)

    with pytest.raises(TargetUnavailable) as e:
        check_target_runs(Target(name="cuda", provider=CUDA))

    _assert_clear(str(e.value))
    assert "ran on ['CPUExecutionProvider'] instead (ONNX Runtime fell back)" in str(e.value)


@pytest.mark.skipif(CUDA in ort.get_available_providers(), reason="CUDA is listed here")
def test_unlisted_provider_keeps_the_install_hint() -> None:
    with pytest.raises(TargetUnavailable, match=r"onnxruntime-gpu.*no silent fallback"):
        check_target_runs(Target(name="cuda", provider=CUDA))


def test_cpu_target_runs_its_test_session() -> None:
    check_target_runs(Target())  # no error
    check_target_runs(Target(name="edge", intra_op_threads=1))


def test_host_stage_stops_before_writing(
    cuda_listed: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    out = tmp_path / "host.json"
    params = SimpleNamespace(
        target=Target(name="cuda", provider=CUDA), paths=SimpleNamespace(host=str(out))
    )
    monkeypatch.setattr(host.config, "load", lambda: params)
    monkeypatch.setattr(ort, "InferenceSession", _session_on_cpu)

    with pytest.raises(TargetUnavailable, match="fell back"):
        host.main()

    assert not out.exists()
