"""Tests for int8_static's float fallback: the search keeps the sensitive node in float, judges on
tuning rows only (never validation), and refuses bad options naming the field."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from stages import params as config
from stages.data import LABELS, Prepared
from stages.techniques.base import Context
from stages.techniques.catalog import TECHNIQUES

SENSITIVE = "matmul_outlier"  # reads an input whose range one huge channel sets


class _Recording(Prepared):
    """A Prepared that records which sets were read."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.read: list[str] = []

    def feeds(self, set_name: str) -> dict[str, np.ndarray]:
        self.read.append(set_name)
        return super().feeds(set_name)

    def labels(self, set_name: str) -> np.ndarray:
        self.read.append(set_name)
        return super().labels(set_name)


def _rows(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.normal(size=(n, 8)).astype(np.float32)
    x[:, 0] = rng.uniform(-2000, 2000, n)  # the outlier channel: sets the input's INT8 scale
    return x


@pytest.fixture(scope="module")
def data() -> Prepared:
    return _data()


def _weights() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    w1 = rng.normal(size=(8, 16)).astype(np.float32)
    w1[0] = 0.0
    w2 = rng.normal(size=(16, 4)).astype(np.float32)
    return w1, w2, np.zeros(4, np.float32)


def _data() -> Prepared:
    """Rows labelled by the float model itself: its accuracy is 100 %, so a broken node shows."""
    rng = np.random.default_rng(0)
    w1, w2, b = _weights()
    sets = {}
    for name, n in (("train", 600), ("calibration", 64), ("validation", 64)):
        x = _rows(rng, n)
        sets[name] = {"x": x, LABELS: (x @ w1 @ w2 + b).argmax(1).astype(np.int64)}
    return Prepared(["x"], ["a", "b", "c", "d"], sets)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _model(tmp_path_factory.mktemp("outlier") / "model.onnx")


def _model(path: Path) -> Path:
    """x -> MatMul (ignores the outlier channel) -> MatMul -> Add -> logits (4 classes).

    Quantizing the first MatMul's input with a scale set by +-2000 rounds the other channels,
    which carry all its signal, to zero; the later nodes see ordinary ranges."""
    w1, w2, b = _weights()
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"], name=SENSITIVE),
            helper.make_node("MatMul", ["h", "w2"], ["z"], name="matmul_head"),
            helper.make_node("Add", ["z", "b"], ["logits"], name="add_bias"),
        ],
        "outlier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 4])],
        [numpy_helper.from_array(a, k) for k, a in (("w1", w1), ("w2", w2), ("b", b))],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(m, path)
    return path


def _apply(data: Prepared, model: Path, out: Path, **options: Any) -> dict[str, Any]:
    defaults = TECHNIQUES["int8_static"].options(calibration_size=64, sensitivity_subsets=0)
    opts = dataclasses.replace(defaults, **options)
    return TECHNIQUES["int8_static"].apply(Context(model, opts, data, out, seed=0))


def test_the_sensitive_node_stays_float_and_the_tolerance_is_reached(
    data: Prepared, model: Path, tmp_path: Path
) -> None:
    # the INT8 head alone moves a few near-tied rows: tolerance 3 points
    details = _apply(data, model, tmp_path, max_drop_points=3.0)
    f = details["fallback"]

    assert f["steps"][0]["excluded"] == 0
    assert f["steps"][0]["drop_points"] > 20  # fully quantized, the outlier node breaks the model
    assert f["ranking"][0][0] == SENSITIVE
    assert f["kept_float"] == [SENSITIVE]
    assert f["reached"] and f["drop_points"] <= f["max_drop_points"]
    assert f["tuning_rows"] == {"calibration": 64, "train": 600}
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    dq = {t for n in graph.node if n.op_type == "DequantizeLinear" for t in n.output}
    kept = {n.name: n for n in graph.node}
    assert not any(i in dq for i in kept[SENSITIVE].input)  # float inputs, float weights
    head = next(n for name, n in kept.items() if name.startswith("matmul_head"))  # fused with Add
    assert any(i in dq for i in head.input)  # the rest is still quantized
    lines = "\n".join(TECHNIQUES["int8_static"].report({"manifest": {"details": details}}))
    assert f"`{SENSITIVE}`" in lines and "| step |" in lines and "NO fallback" not in lines


def test_the_report_says_when_no_list_reached_the_tolerance(
    data: Prepared, model: Path, tmp_path: Path
) -> None:
    details = _apply(data, model, tmp_path, max_drop_points=0.0, max_excluded=1)
    f = details["fallback"]
    lines = "\n".join(TECHNIQUES["int8_static"].report({"manifest": {"details": details}}))

    assert not f["reached"]
    assert f["kept_float"] == [SENSITIVE]  # the cap's list, the lowest drop seen
    assert "NO fallback list reached the tolerance" in lines


def test_the_search_never_reads_the_validation_set(
    data: Prepared, model: Path, tmp_path: Path
) -> None:
    poisoned = {k: dict(v) for k, v in data.sets.items()}
    poisoned["validation"]["x"] = np.full_like(poisoned["validation"]["x"], np.nan)
    recording = _Recording(data.inputs, data.class_names, poisoned)

    # the calibration-sensitivity report (other calibration subsets) runs on tuning rows too
    details = _apply(recording, model, tmp_path, max_drop_points=3.0, sensitivity_subsets=2)

    assert details["fallback"]["kept_float"] == [SENSITIVE]
    sensitivity = details["calibration_sensitivity"]
    assert len(sensitivity["accuracies"]) == 2 and 0 < sensitivity["candidate_accuracy"] <= 1
    assert "validation" not in recording.read
    assert {"calibration", "train"} <= set(recording.read)


def test_fallback_off_quantizes_every_node(data: Prepared, model: Path, tmp_path: Path) -> None:
    details = _apply(data, model, tmp_path, fallback=False)
    lines = TECHNIQUES["int8_static"].report({"manifest": {"details": details}})

    assert details["fallback"] is None
    assert lines[0].startswith("- float fallback: off")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_drop_points", -0.5, r"max_drop_points = -0.5.*\[0, 100\)"),
        ("max_drop_points", 100.0, r"max_drop_points = 100.0"),
        ("max_excluded", 0, r"max_excluded = 0.*>= 1"),
        ("tuning_rows", -1, r"tuning_rows = -1.*>= 0"),
    ],
)
def test_bad_fallback_options_are_refused_naming_the_field(
    field: str, value: object, message: str
) -> None:
    with pytest.raises(config.ParamsError, match=message):
        TECHNIQUES["int8_static"].options(**{field: value})
