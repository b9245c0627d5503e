"""Tests for stages.measure.machine and peak_rates: a deterministic fingerprint and a short real
peak run."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from stages.measure.machine import ISA_FLAGS, LIBRARIES, describe_host, fingerprint
from stages.measure.peak_rates import _matmul_integer_session, _matmul_session, measure_peak

RATE_PREFIXES = (
    "fp32_matmul_gflops",
    "int8_matmul_gops",
    "numpy_matmul_gflops",
    "copy_bandwidth_gbs",
)


@pytest.fixture(scope="module")
def host() -> dict[str, Any]:
    return describe_host()


@pytest.fixture(scope="module")
def peak() -> dict[str, Any]:
    return measure_peak(1, seconds=0.5)


def test_describe_host_is_deterministic(host: dict[str, Any]) -> None:
    again = describe_host()
    assert again == host
    assert fingerprint(again) == fingerprint(host)


def test_fingerprint_is_16_hex_and_key_order_independent(host: dict[str, Any]) -> None:
    fp = fingerprint(host)
    assert len(fp) == 16
    int(fp, 16)  # raises if not hex
    reordered = dict(reversed(list(host.items())))
    assert fingerprint(reordered) == fp


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("cpu_model",), "Some Other CPU"),
        (("logical_cores",), 999),
        (("isa_flags", "avx2"), None),
        (("libraries", "onnxruntime"), "0.0.1"),
    ],
)
def test_fingerprint_changes_with_any_field(
    host: dict[str, Any], path: tuple[str, ...], value: Any
) -> None:
    changed = copy.deepcopy(host)
    target = changed
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value if value is not None else not target[path[-1]]
    assert fingerprint(changed) != fingerprint(host)


def test_describe_host_fields(host: dict[str, Any]) -> None:
    assert set(host["isa_flags"]) == set(ISA_FLAGS)
    assert all(isinstance(v, bool) for v in host["isa_flags"].values())
    assert set(host["libraries"]) == set(LIBRARIES)
    assert all(isinstance(v, str) and v for v in host["libraries"].values())
    assert host["libraries"]["onnxruntime"] != "not installed"
    assert isinstance(host["cpu_model"], str)
    assert isinstance(host["logical_cores"], int) and host["logical_cores"] >= 1
    assert host["memory_total_gib"] > 0
    assert host["memory_total_gib"] == round(host["memory_total_gib"], 1)
    assert "CPUExecutionProvider" in host["ort_providers"]


def test_matmul_integer_session_matches_numpy() -> None:
    session, weight = _matmul_integer_session(16, threads=1, seed=3)
    assert weight.dtype == np.int8
    # activations below 128: on CPUs where ONNX Runtime multiplies uint8 x int8 with pairwise
    # int16 sums (vpmaddubsw, e.g. this AMD EPYC), full-range inputs saturate and the product is
    # not exact (the reason for quantization's reduce_range); 2 x 127 x 128 fits in int16
    a = np.random.default_rng(4).integers(0, 128, (16, 16), dtype=np.uint8)
    (y,) = session.run(None, {"A": a})
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, a.astype(np.int32) @ weight.astype(np.int32))
    # uint8 in, int32 out and an exact integer product: only MatMulInteger fits all three
    assert session.get_inputs()[0].type == "tensor(uint8)"
    assert session.get_outputs()[0].type == "tensor(int32)"


def test_matmul_session_matches_numpy() -> None:
    session = _matmul_session(8, threads=1, seed=1)
    a = np.eye(8, dtype=np.float32)
    (y,) = session.run(None, {"A": a})  # identity input returns the weight itself
    b = np.random.default_rng(1).standard_normal((8, 8), dtype=np.float32)
    np.testing.assert_allclose(y, b)


def test_measure_peak_figures(peak: dict[str, Any]) -> None:
    assert peak["n"] == 1024 and peak["threads"] == 1 and peak["copy_mib"] == 256
    for prefix in RATE_PREFIXES:
        median, best = peak[f"{prefix}_median"], peak[f"{prefix}_best"]
        assert isinstance(median, float) and median > 0
        assert best >= median
        assert isinstance(peak[f"{prefix}_calls"], int) and peak[f"{prefix}_calls"] >= 3


@pytest.mark.parametrize("threads", [-1, -8])
def test_negative_threads_raise(threads: int) -> None:
    with pytest.raises(ValueError, match=rf"threads.*{threads}"):
        measure_peak(threads, seconds=0.1)


@pytest.mark.parametrize("seconds", [0.0, -1.0, float("nan")])
def test_bad_seconds_raise(seconds: float) -> None:
    with pytest.raises(ValueError, match="seconds"):
        measure_peak(1, seconds=seconds)
