"""The practical compute and memory peak of this machine, measured once per host fingerprint
(`stages.measure.machine` describes the host; this module measures it)."""

from __future__ import annotations

import contextlib
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

MATMUL_N = 1024  # square matmul side; 2*N^3 = 2.1 GFLOP per call
COPY_MIB = 256  # copy buffer, well beyond any L3 so it measures DRAM
# Share of `seconds` per measurement; matmuls get most since they are the headline figures.
_SHARES = {"fp32": 0.35, "int8": 0.35, "numpy": 0.15, "copy": 0.15}
_MIN_CALLS = 3  # a median needs a few samples even when one call exceeds its share
_WARMUP_SHARE = 0.1  # of each measurement's share, spent untimed before timing
_OPSET = 17
_IR_VERSION = 9  # pinned so onnxruntime builds older than onnx can still load the model


def _session_options(threads: int) -> ort.SessionOptions:
    """Same threading setup as the benchmarks: no spinning, sequential execution."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # 0 = ORT default
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _one_node_session(
    op: str, a_type: int, weight: np.ndarray, out_type: int, threads: int
) -> ort.InferenceSession:
    """Session for Y = op(A, B) with A an [N, N] input and B a constant initializer."""
    n = weight.shape[0]
    graph = helper.make_graph(
        [helper.make_node(op, ["A", "B"], ["Y"])],
        f"peak_{op.lower()}",
        [helper.make_tensor_value_info("A", a_type, [n, n])],
        [helper.make_tensor_value_info("Y", out_type, [n, n])],
        initializer=[numpy_helper.from_array(weight, name="B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])
    model.ir_version = _IR_VERSION
    onnx.checker.check_model(model)
    return ort.InferenceSession(
        model.SerializeToString(), _session_options(threads), providers=["CPUExecutionProvider"]
    )


def _matmul_session(n: int, threads: int = 1, seed: int = 0) -> ort.InferenceSession:
    """fp32 MatMul session with a random [n, n] weight."""
    weight = np.random.default_rng(seed).standard_normal((n, n), dtype=np.float32)
    return _one_node_session("MatMul", TensorProto.FLOAT, weight, TensorProto.FLOAT, threads)


def _matmul_integer_session(
    n: int, threads: int = 1, seed: int = 0
) -> tuple[ort.InferenceSession, np.ndarray]:
    """MatMulInteger session (uint8 activations x int8 weight -> int32) and its weight.

    uint8 x int8 is the VNNI/AMX fast path a quantized model should hit; int8 activations
    were 50-60x slower on the 2-core Xeon (AMX) this was written on.
    """
    weight = np.random.default_rng(seed).integers(-128, 128, (n, n), dtype=np.int8)
    session = _one_node_session(
        "MatMulInteger", TensorProto.UINT8, weight, TensorProto.INT32, threads
    )
    return session, weight


def _time_calls(call: Callable[[], object], budget_s: float, warmup: int = 2) -> list[int]:
    """Per-call durations in ns, calling until `budget_s` is spent and at least _MIN_CALLS ran.

    The first _WARMUP_SHARE of the budget (and at least `warmup` calls) is discarded: first
    calls pay for allocation, weight prepacking and clock ramp-up.
    """
    warm_deadline = time.perf_counter_ns() + int(budget_s * _WARMUP_SHARE * 1e9)
    calls = 0
    while calls < warmup or time.perf_counter_ns() < warm_deadline:
        call()
        calls += 1
    durations: list[int] = []
    deadline = time.perf_counter_ns() + int(budget_s * (1 - _WARMUP_SHARE) * 1e9)
    while len(durations) < _MIN_CALLS or time.perf_counter_ns() < deadline:
        start = time.perf_counter_ns()
        call()
        durations.append(time.perf_counter_ns() - start)
    return durations


def _rates(prefix: str, work: float, durations: list[int]) -> dict[str, Any]:
    """Median and best rate in giga-units/s of `work` units per call, plus the call count."""
    return {
        f"{prefix}_median": round(work / statistics.median(durations), 1),  # units/ns = G/s
        f"{prefix}_best": round(work / min(durations), 1),
        f"{prefix}_calls": len(durations),
    }


def _blas_threads(threads: int) -> contextlib.AbstractContextManager[object]:
    """Limit numpy's BLAS to `threads` where threadpoolctl is available (0 = BLAS default)."""
    if threads == 0:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads, user_api="blas")


def measure_peak(threads: int, *, seconds: float = 3.0) -> dict[str, Any]:
    """Practical peaks: ORT fp32/int8 matmul, numpy matmul, and DRAM copy bandwidth.

    Keys (rates in G-units/s, 1 decimal): fp32_matmul_gflops_*, int8_matmul_gops_*,
    numpy_matmul_gflops_*, copy_bandwidth_gbs_* with suffixes _median, _best, _calls;
    plus n, copy_mib, threads, seconds.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ValueError(f"threads must be an int >= 0 (0 = ORT default), got {threads!r}")
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"seconds must be a finite number > 0, got {seconds!r}")

    n = MATMUL_N
    flop = 2.0 * n**3  # multiply-adds counted as 2 ops
    rng = np.random.default_rng(0)
    result: dict[str, Any] = {
        "n": n,
        "copy_mib": COPY_MIB,
        "threads": threads,
        "seconds": float(seconds),
    }

    fp32 = _matmul_session(n, threads)
    a_fp32 = rng.standard_normal((n, n), dtype=np.float32)
    fp32_calls = _time_calls(lambda: fp32.run(None, {"A": a_fp32}), seconds * _SHARES["fp32"])
    result |= _rates("fp32_matmul_gflops", flop, fp32_calls)

    int8, _ = _matmul_integer_session(n, threads)
    a_uint8 = rng.integers(0, 256, (n, n), dtype=np.uint8)
    int8_calls = _time_calls(lambda: int8.run(None, {"A": a_uint8}), seconds * _SHARES["int8"])
    result |= _rates("int8_matmul_gops", flop, int8_calls)

    b_fp32 = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    with _blas_threads(threads):
        np_calls = _time_calls(
            lambda: np.matmul(a_fp32, b_fp32, out=out), seconds * _SHARES["numpy"]
        )
    result |= _rates("numpy_matmul_gflops", flop, np_calls)

    src = np.ones(COPY_MIB * 2**20 // 4, dtype=np.float32)
    dst = np.empty_like(src)
    copy_bytes = 2.0 * src.nbytes  # read src + write dst, per copy
    copy_calls = _time_calls(lambda: np.copyto(dst, src), seconds * _SHARES["copy"], warmup=1)
    result |= _rates("copy_bandwidth_gbs", copy_bytes, copy_calls)
    return result


if __name__ == "__main__":  # manual check: python -m stages.measure.peak_rates [threads]
    print(json.dumps(measure_peak(int(sys.argv[1]) if len(sys.argv) > 1 else 0), indent=1))
