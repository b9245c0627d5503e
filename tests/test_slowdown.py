"""The known regression: slower on purpose, every output value unchanged."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from stages.data import Prepared
from stages.evidence.manifest import changes, confounders
from stages.onnx_graph import graph_summary
from stages.params import ParamsError
from stages.techniques import slowdown
from stages.techniques.base import Context
from stages.techniques.catalog import TECHNIQUES
from stages.techniques.options import slowdown as slowdown_options


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def test_zero_matmuls_is_the_baseline_file(
    tiny_onnx: Path, tiny_data: Prepared, tmp_path: Path
) -> None:
    ctx = Context(tiny_onnx, slowdown_options.Options(matmuls=0), tiny_data, tmp_path, 0)

    details = slowdown.apply(ctx)

    assert ctx.model_out.read_bytes() == tiny_onnx.read_bytes()
    assert details["added_nodes"] == 0


def test_the_chain_keeps_every_output_and_costs_time(
    tiny_onnx: Path, tiny_data: Prepared, tmp_path: Path
) -> None:
    ctx = Context(tiny_onnx, slowdown_options.Options(matmuls=3, size=64), tiny_data, tmp_path, 0)
    x = tiny_data.sets["validation"]["image"][:16]

    details = slowdown.apply(ctx)

    model = onnx.load(str(ctx.model_out))
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul"]
    assert sum(n.output[0].startswith(slowdown.PREFIX) for n in matmuls) == 3
    assert details["added_flops_per_call"] == 2 * 3 * 64**3
    assert np.array_equal(_run(ctx.model_out, x), _run(tiny_onnx, x))  # bit for bit
    before, after = graph_summary(tiny_onnx), graph_summary(ctx.model_out)
    changed = changes({"graph": before}, {"graph": after})
    assert "graph.nodes" in changed
    assert confounders(changed, TECHNIQUES["slowdown"].declares) == []


def test_onnx_runtime_does_not_fold_the_chain_away(
    tiny_onnx: Path, tiny_data: Prepared, tmp_path: Path
) -> None:
    """With every graph optimization on, the chain still runs: many large MatMuls take far
    longer than none (a ratio of two runs side by side, not a timing threshold)."""
    ctx = Context(tiny_onnx, slowdown_options.Options(matmuls=8, size=256), tiny_data, tmp_path, 0)
    slowdown.apply(ctx)
    x = tiny_data.sets["validation"]["image"][:1]

    def best(path: Path) -> float:
        s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = {s.get_inputs()[0].name: x}
        s.run(None, feed)
        times = []
        for _ in range(20):
            t = time.perf_counter()
            s.run(None, feed)
            times.append(time.perf_counter() - t)
        return min(times)

    # 8 MatMuls of 256^3 are ~270 Mflop against a model of a few kflop: folded, they would cost
    # nothing; run, they dominate by orders of magnitude
    assert best(ctx.model_out) > 10 * best(tiny_onnx)


def test_options_are_checked() -> None:
    with pytest.raises(ParamsError, match="matmuls"):
        slowdown_options.Options(matmuls=-1)
    with pytest.raises(ParamsError, match="size"):
        slowdown_options.Options(size=0)
