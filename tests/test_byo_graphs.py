"""Graph techniques on ONNX files from other tools: an opset-11 export (per-channel QDQ needs 13:
upgraded, checked and recorded, or NOT APPLICABLE naming the opset) and weights kept in Constant
nodes rather than initializers (folded into initializers first); models that need neither pass
through untouched."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from stages import optimize
from stages.data import LABELS, Prepared
from stages.errors import KNOWN, BatchInvarianceError, CandidateRefused, FusionError
from stages.evidence.manifest import changes, confounders
from stages.onnx_graph import graph_summary
from stages.params import ParamsError
from stages.runtime import check_model
from stages.stats import cosine_similarity
from stages.techniques import (
    fold_batchnorm,
    graph_prep,
    int8_dynamic,
    int8_fallback,
    int8_static,
    ort_quantizer,
)
from stages.techniques.base import Context, NotApplicable
from stages.techniques.catalog import TECHNIQUES, Technique

FEATURES, HIDDEN, CLASSES = 3, 8, 3
INT8_MIN_COSINE, INT8_MIN_AGREEMENT = 0.99, 0.9  # logits vs float; rows keeping their class
FP16_MAX_ABS = 1e-2


def _weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "w1": rng.normal(size=(FEATURES, HIDDEN)).astype(np.float32),
        "b1": rng.normal(size=HIDDEN).astype(np.float32),
        "w2": rng.normal(size=(HIDDEN, CLASSES)).astype(np.float32),
        "b2": rng.normal(scale=0.1, size=CLASSES).astype(np.float32),
    }


def _float_logits(x: np.ndarray) -> np.ndarray:
    w = _weights()
    return np.maximum(x @ w["w1"] + w["b1"], 0) @ w["w2"] + w["b2"]


def _classifier(path: Path, opset: int, in_constants: bool = False, named: bool = True) -> Path:
    """x [N, 3] -> Reshape -> Gemm -> Relu -> MatMul -> Add -> logits [N, 3]; the weights in
    initializers, or in Constant nodes (the Reshape's int64 shape is a Constant either way)."""
    weights = [numpy_helper.from_array(v, k) for k, v in _weights().items()]
    shape = numpy_helper.from_array(np.array([-1, FEATURES], np.int64), "shape")
    nodes = [
        helper.make_node("Constant", [], ["shape"], value=shape),
        helper.make_node("Reshape", ["x", "shape"], ["x2"]),
        helper.make_node("Gemm", ["x2", "w1", "b1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["z"]),
        helper.make_node("Add", ["z", "b2"], ["logits"]),
    ]
    if in_constants:
        nodes = [helper.make_node("Constant", [], [w.name], value=w) for w in weights] + nodes
    for k, n in enumerate(nodes):
        n.name = f"{n.op_type.lower()}_{k}" if named else ""
    graph = helper.make_graph(
        nodes,
        "byo",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", FEATURES])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])],
        [] if in_constants else weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def data() -> Prepared:
    """Standard normal rows labelled by the float model itself."""
    rng = np.random.default_rng(0)
    sets = {}
    for name, n in (("train", 200), ("calibration", 64), ("validation", 96)):
        x = rng.normal(size=(n, FEATURES)).astype(np.float32)
        sets[name] = {"x": x, LABELS: _float_logits(x).argmax(1).astype(np.int64)}
    return Prepared(["x"], ["a", "b", "c"], sets)


@pytest.fixture(scope="module")
def opset11(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _classifier(tmp_path_factory.mktemp("byo") / "opset11.onnx", 11)


@pytest.fixture(scope="module")
def in_constants(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _classifier(tmp_path_factory.mktemp("byo") / "constants.onnx", 17, in_constants=True)


def _ctx(baseline: Path, name: str, data: Prepared, out: Path, **options: Any) -> Context:
    out.mkdir(parents=True, exist_ok=True)
    return Context(baseline, TECHNIQUES[name].options(**options), data, out, seed=0)


def _static(**options: Any) -> dict[str, Any]:
    return {"calibration_size": 64, "tuning_rows": 100, "sensitivity_subsets": 0, **options}


def _logits(path: Path, data: Prepared) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, data.feeds("validation"))[0]


def _undeclared(base: Path, cand: Path, name: str) -> list[str]:
    changed = changes({"graph": graph_summary(base)}, {"graph": graph_summary(cand)})
    return confounders(changed, TECHNIQUES[name].declares)


def _close_int8(base: Path, cand: Path, data: Prepared) -> None:
    ref, got = _logits(base, data), _logits(cand, data)
    assert cosine_similarity(ref, got) >= INT8_MIN_COSINE
    assert (ref.argmax(1) == got.argmax(1)).mean() >= INT8_MIN_AGREEMENT


def _weight_dtypes(path: Path) -> dict[str, str]:
    """The dtype each weight matrix (w1, w2) is stored in, quantized or not."""
    inits = onnx.load(str(path)).graph.initializer
    names = {f"w{k}{suffix}": f"w{k}" for k in (1, 2) for suffix in ("", "_quantized")}
    return {names[i.name]: TensorProto.DataType.Name(i.data_type) for i in inits if i.name in names}


def test_the_fixture_predicts_every_class(data: Prepared) -> None:
    assert set(data.labels("validation")) == set(range(CLASSES))


# --- models that need nothing pass through untouched -------------------------------------------


def test_prepare_returns_a_plain_model_as_it_is(
    tiny_onnx: Path, tiny_data: Prepared, tmp_path: Path
) -> None:
    before = tiny_onnx.read_bytes()
    ctx = Context(tiny_onnx, None, tiny_data, tmp_path, seed=0)

    path, details = graph_prep.prepare(
        ctx, tmp_path, ort_quantizer.PER_AXIS_OPSET, "per-channel QDQ"
    )

    assert path == tiny_onnx and details == {}
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == []


def test_a_plain_int8_dynamic_candidate_is_what_quantizing_the_baseline_gives(
    data: Prepared, tmp_path: Path
) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    plain = _classifier(tmp_path / "plain.onnx", 13)
    ctx = _ctx(plain, "int8_dynamic", data, tmp_path / "cand")
    details = int8_dynamic.apply(ctx)
    pre = ort_quantizer.preprocess(plain, tmp_path)
    direct = tmp_path / "direct.onnx"
    quantize_dynamic(pre, direct, per_channel=True, weight_type=QuantType.QInt8)

    assert ctx.model_out.read_bytes() == direct.read_bytes()
    assert set(details) == {"quantized"}


# --- opset 11 -----------------------------------------------------------------------------------


def test_opset11_int8_static_per_channel_is_upgraded_checked_and_declared(
    opset11: Path, data: Prepared, tmp_path: Path
) -> None:
    ctx = _ctx(opset11, "int8_static", data, tmp_path, **_static(per_channel=True))

    details = int8_static.apply(ctx)

    up = details["opset_upgrade"]
    assert (up["from"], up["to"]) == (11, 13)
    assert up["checked_rows"] == graph_prep.CHECK_ROWS
    assert up["max_difference"] <= up["tolerance"] == graph_prep.CHECK_TOLERANCE
    check_model(ctx.model_out, "test")
    assert graph_summary(ctx.model_out)["opset"] == 13
    dq = [n for n in onnx.load(str(ctx.model_out)).graph.node if n.op_type == "DequantizeLinear"]
    assert any(a.name == "axis" for n in dq for a in n.attribute)  # per-channel weights
    _close_int8(opset11, ctx.model_out, data)
    assert _undeclared(opset11, ctx.model_out, "int8_static") == []


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("int8_dynamic", {"per_channel": True}),
        ("int8_static", _static(per_channel=False)),
        ("int8_static", _static(per_channel=True, format="qoperator")),
    ],
)
def test_opset11_int8_runs_at_opset11_where_it_can(
    name: str, options: dict[str, Any], opset11: Path, data: Prepared, tmp_path: Path
) -> None:
    ctx = _ctx(opset11, name, data, tmp_path, **options)

    details = TECHNIQUES[name].apply(ctx)

    assert "opset_upgrade" not in details
    check_model(ctx.model_out, "test")
    assert graph_summary(ctx.model_out)["opset"] == 11
    assert details["quantized"]
    _close_int8(opset11, ctx.model_out, data)


def test_opset11_fp16_runs(opset11: Path, data: Prepared, tmp_path: Path) -> None:
    ctx = _ctx(opset11, "fp16", data, tmp_path)

    details = TECHNIQUES["fp16"].apply(ctx)

    assert "opset_upgrade" not in details and "constants_folded" not in details
    assert details["float16_initializers"] == 4 and details["float32_initializers_left"] == 0
    assert graph_summary(ctx.model_out)["opset"] == 11
    assert np.abs(_logits(opset11, data) - _logits(ctx.model_out, data)).max() <= FP16_MAX_ABS


def test_opset11_fuse_runs_or_says_there_is_nothing_to_fold(
    opset11: Path, data: Prepared, tmp_path: Path
) -> None:
    ctx = _ctx(opset11, "fuse", data, tmp_path / "ort")
    details = TECHNIQUES["fuse"].apply(ctx)
    assert details["max_abs_error"] <= details["tolerance"]
    assert graph_summary(ctx.model_out)["opset"] == 11

    ctx = _ctx(opset11, "fuse", data, tmp_path / "bn", method="fold_batchnorm")
    with pytest.raises(NotApplicable, match=re.escape(fold_batchnorm.NO_PAIR)):
        TECHNIQUES["fuse"].apply(ctx)


def test_a_failed_upgrade_is_not_applicable_naming_the_opset(
    opset11: Path, data: Prepared, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_adapter(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
        raise RuntimeError("No Adapter For Gemm from 11 to 13")

    monkeypatch.setattr(onnx.version_converter, "convert_version", no_adapter)
    ctx = _ctx(opset11, "int8_static", data, tmp_path, **_static(per_channel=True))

    with pytest.raises(NotApplicable) as caught:
        int8_static.apply(ctx)

    reason = str(caught.value)
    assert "needs opset >= 13 and this model is opset 11" in reason
    assert "could not upgrade it (No Adapter For Gemm from 11 to 13)" in reason
    assert "re-export the model at opset 13 or later" in reason
    assert "technique.int8_static.per_channel: false" in reason
    assert not ctx.model_out.exists()


def test_an_upgrade_that_changes_outputs_is_not_used(
    opset11: Path, data: Prepared, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    convert = onnx.version_converter.convert_version

    def off_by_a_little(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
        out = convert(model, target)
        b2 = next(i for i in out.graph.initializer if i.name == "b2")
        b2.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(b2) + 1e-3, "b2"))
        return out

    monkeypatch.setattr(onnx.version_converter, "convert_version", off_by_a_little)
    ctx = _ctx(opset11, "int8_static", data, tmp_path, **_static(per_channel=True))

    with pytest.raises(NotApplicable, match=r"opset 11; upgraded .* computes different outputs"):
        int8_static.apply(ctx)


def test_the_optimize_stage_records_not_applicable_and_failures(
    opset11: Path, data: Prepared, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        onnx.version_converter, "convert_version", lambda m, t: (_ for _ in ()).throw(ValueError)
    )
    ctx = _ctx(opset11, "int8_static", data, tmp_path, **_static(per_channel=True))
    outcome = optimize._outcome("int8_static", TECHNIQUES["int8_static"], ctx, {})
    assert outcome["status"] == "not_applicable" and "opset 11" in outcome["reason"]

    def broken(ctx: Context) -> dict[str, Any]:
        ctx.model_out.write_bytes(b"half a model")
        raise IndexError("list index out of range")

    technique = dataclasses.replace(TECHNIQUES["fuse"], apply=broken)
    outcome = optimize._outcome("fuse", technique, ctx, {})
    assert outcome == {
        "status": "failed",
        "reason": "the technique failed (IndexError: list index out of range); "
        "its stage log has the traceback",
    }
    assert list(ctx.out.iterdir()) == []  # nothing half-written is kept

    def misconfigured(ctx: Context) -> dict[str, Any]:
        raise ParamsError("technique.fuse.level = 'x' is not one of ...")

    with pytest.raises(ParamsError):  # a setting to fix still stops the stage
        optimize._outcome("fuse", Technique(object, misconfigured, (), ""), ctx, {})


def test_a_candidate_its_own_check_refuses_is_recorded_in_one_line(
    opset11: Path, data: Prepared, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fusion changing the outputs or batched outputs differing is a finding about this model,
    not a bug: recorded as the technique's failure, printed as one line, no traceback."""
    ctx = _ctx(opset11, "fuse", data, tmp_path)

    def refused(ctx: Context) -> dict[str, Any]:
        ctx.model_out.write_bytes(b"a candidate that computes something else")
        raise BatchInvarianceError("batch invariance fails: batched outputs differ by 0.5")

    technique = dataclasses.replace(TECHNIQUES["batching"], apply=refused)
    outcome = optimize._outcome("batching", technique, ctx, {})
    assert outcome == {
        "status": "failed",
        "reason": "the technique refused its candidate (BatchInvarianceError: batch invariance "
        "fails: batched outputs differ by 0.5)",
    }
    assert list(ctx.out.iterdir()) == []
    err = capsys.readouterr().err
    assert "Traceback" not in err and "batching: failed, recorded in its manifest" in err
    assert issubclass(FusionError, CandidateRefused) and CandidateRefused in KNOWN


# --- weights in Constant nodes ------------------------------------------------------------------


def test_folding_constants_is_graph_equivalent(in_constants: Path, data: Prepared) -> None:
    model = onnx.load(str(in_constants))

    folded = graph_prep.fold_constants(model)

    assert folded == {"nodes": 4, "parameters": sum(v.size for v in _weights().values())}
    assert [i.name for i in model.graph.initializer] == ["w1", "b1", "w2", "b2"]
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Constant") == 1  # the int64 shape is no weight: it stays
    onnx.checker.check_model(model, full_check=True)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, data.feeds("validation"))[0]
    np.testing.assert_array_equal(got, _logits(in_constants, data))


def test_fp16_converts_weights_held_in_constants(
    in_constants: Path, data: Prepared, tmp_path: Path
) -> None:
    ctx = _ctx(in_constants, "fp16", data, tmp_path)

    details = TECHNIQUES["fp16"].apply(ctx)

    assert details["constants_folded"] == {"nodes": 4, "parameters": 59}
    assert details["float16_initializers"] == 4 and details["float32_initializers_left"] == 0
    assert graph_summary(ctx.model_out)["dtypes"] == {"float16": 4}
    assert np.abs(_logits(in_constants, data) - _logits(ctx.model_out, data)).max() <= FP16_MAX_ABS
    assert _undeclared(in_constants, ctx.model_out, "fp16") == []


@pytest.mark.parametrize(
    ("name", "options"), [("int8_dynamic", {}), ("int8_static", _static(per_channel=True))]
)
def test_int8_quantizes_weights_held_in_constants(
    name: str, options: dict[str, Any], in_constants: Path, data: Prepared, tmp_path: Path
) -> None:
    ctx = _ctx(in_constants, name, data, tmp_path, **options)

    details = TECHNIQUES[name].apply(ctx)

    assert details["constants_folded"] == {"nodes": 4, "parameters": 59}
    assert _weight_dtypes(ctx.model_out) == {"w1": "INT8", "w2": "INT8"}
    _close_int8(in_constants, ctx.model_out, data)
    assert _undeclared(in_constants, ctx.model_out, name) == []


def test_fold_batchnorm_reaches_conv_weights_held_in_constants(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    consts = {
        "cw": rng.normal(size=(3, 2, 3, 3)),
        "cb": rng.normal(size=3),
        "gamma": rng.uniform(0.5, 2.0, 3),
        "beta": rng.normal(size=3),
        "mean": rng.normal(scale=0.5, size=3),
        "var": rng.uniform(0.2, 3.0, 3),
    }
    nodes = [
        helper.make_node(
            "Constant", [], [k], value=numpy_helper.from_array(v.astype(np.float32), k)
        )
        for k, v in consts.items()
    ]
    nodes += [
        helper.make_node("Conv", ["x", "cw", "cb"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", *list(consts)[2:]], ["bn"], name="bn"),
        helper.make_node("ReduceMean", ["bn"], ["y"], name="pool", axes=[2, 3], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "convbn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    base = tmp_path / "convbn.onnx"
    onnx.save(model, str(base))
    x = rng.normal(size=(32, 2, 4, 4)).astype(np.float32)
    images = Prepared(["x"], ["a", "b", "c"], {"validation": {"x": x, LABELS: np.zeros(32)}})
    ctx = _ctx(base, "fuse", images, tmp_path / "cand", method="fold_batchnorm")

    details = TECHNIQUES["fuse"].apply(ctx)

    assert details["pairs_folded"] == 1 and details["batchnorm_left"] == 0
    assert details["constants_folded"] == {"nodes": 6, "parameters": 54 + 3 * 5}
    assert "BatchNormalization" not in details["ops_after"]
    assert details["max_abs_error"] <= details["tolerance"]


def test_ranking_without_node_names_is_empty(data: Prepared, tmp_path: Path) -> None:
    """Unnamed nodes cannot be ranked nor excluded by name: nothing to rank, no crash."""
    from onnxruntime.quantization import quantize_static

    unnamed = _classifier(tmp_path / "unnamed.onnx", 13, named=False)
    rows = data.feeds("calibration")
    quantized = tmp_path / "q.onnx"
    quantize_static(unnamed, quantized, ort_quantizer.Reader(rows, batch=32))
    ctx = _ctx(unnamed, "int8_static", data, tmp_path / "cand", **_static())

    assert int8_fallback._rank(unnamed, quantized, rows, ctx) == []
