"""`dvc exp run -S model=onnx_file` with every technique on models nobody here exported: each
run reaches a dashboard, and every candidate ends with a verdict or NOT APPLICABLE and its reason.

The fixtures are written with onnx.helper the way other exporters write them: opset 11, weights in
`Constant` nodes, a `-1` batch axis, three outputs (scores, a box and landmarks); and an image
model whose batch and spatial axes are all spelt "?".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from conftest import copy_worktree
from onnx import TensorProto, helper, numpy_helper
from test_e2e import VERDICTS, dvc, load, overrides, run

pytestmark = pytest.mark.slow

ALL = [
    "int8_dynamic",
    "int8_static",
    "fp16",
    "prune_magnitude",
    "prune_channels",
    "distill",
    "fuse",
    "batching",
]
ROWS = 240


def constant(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node(
        "Constant", [], [name], name=f"const_{name}", value=numpy_helper.from_array(value, name)
    )


def three_output_model(path: Path, rng: np.random.Generator) -> None:
    """features [-1, 16] -> hidden -> scores [N, 3], box [N, 4], landmarks [N, 2]; opset 11,
    every weight in a Constant node."""
    w = {
        "w1": rng.standard_normal((16, 32)).astype(np.float32) / 4,
        "b1": rng.standard_normal(32).astype(np.float32) / 4,
        "w_scores": rng.standard_normal((32, 3)).astype(np.float32) / 4,
        "w_box": rng.standard_normal((32, 4)).astype(np.float32) / 4,
        "w_landmarks": rng.standard_normal((32, 2)).astype(np.float32) / 4,
    }
    nodes = [constant(k, v) for k, v in w.items()]
    nodes += [
        helper.make_node("MatMul", ["features", "w1"], ["h0"], name="fc1"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="fc1_bias"),
        helper.make_node("Relu", ["h1"], ["hidden"], name="relu"),
        helper.make_node("MatMul", ["hidden", "w_scores"], ["scores"], name="head_scores"),
        helper.make_node("MatMul", ["hidden", "w_box"], ["box"], name="head_box"),
        helper.make_node("MatMul", ["hidden", "w_landmarks"], ["landmarks"], name="head_marks"),
    ]
    out = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, [-1, k])
        for n, k in (("scores", 3), ("box", 4), ("landmarks", 2))
    ]
    graph = helper.make_graph(
        nodes,
        "three_heads",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [-1, 16])],
        out,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, path)


def image_model(path: Path, rng: np.random.Generator) -> None:
    """pixels [?, 1, ?, ?] -> Conv -> Relu -> global average -> Gemm -> logits [?, 4]."""
    conv = numpy_helper.from_array(rng.standard_normal((8, 1, 3, 3)).astype(np.float32), "conv_w")
    fc = numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), "fc_w")
    nodes = [
        helper.make_node("Conv", ["pixels", "conv_w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="pool"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_image",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["?", 1, "?", "?"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["?", 4])],
        initializer=[conv, fc],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, path)


def labelled(model: Path, feeds: dict[str, np.ndarray], output: str, out: Path) -> None:
    """The .npz: the inputs, labels the model mostly gets right (a tenth flipped), a slice."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    logits = sess.run([output], feeds)[0]
    labels = logits.argmax(1)
    flip = np.arange(len(labels)) % 10 == 3
    labels[flip] = (labels[flip] + 1) % logits.shape[1]
    np.savez(out, **feeds, labels=labels, slice__even=np.arange(len(labels)) % 2 == 0)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = copy_worktree(tmp_path_factory.mktemp("byo") / "workbench")
    run(dest, "git", "init", "-q")
    run(dest, "git", "add", "-A")
    run(dest, "git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "copy")
    return dest


def exp_run(repo: Path, name: str, model: Path, data: Path, *extra: str) -> dict[str, Any]:
    byo = [
        "model=onnx_file",
        f"model.path={model}",
        f"model.data={data}",
        f"technique=[{','.join(ALL)}]",
        "technique.int8_static.calibration_size=40",
        *extra,
    ]
    dvc(repo, "exp", "run", "-n", name, *overrides(*byo))
    summary = load(repo, "reports/summary.json")
    dashboard = (repo / "reports/dashboard.md").read_text()
    assert summary["model"] == "onnx_file"
    for t in ALL:
        c = summary["candidates"][t]
        assert c["verdict"] in {*VERDICTS, "NOT APPLICABLE"}, (t, c)
        if c["verdict"] == "NOT APPLICABLE":
            assert c.get("reason"), (t, c)
        row = [
            line for line in dashboard.splitlines() if line.startswith((f"| {t} |", f"| [{t}]("))
        ]
        assert len(row) == 1 and f"| **{c['verdict']}** |" in row[0], (t, row)
        if c["verdict"] in VERDICTS:  # one change, so the effect is the technique's
            assert "confounded" not in (repo / f"reports/review/{t}.md").read_text(), t
    return summary


def test_opset_11_constants_and_three_outputs_reach_a_dashboard(repo: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    model, data = tmp_path / "heads.onnx", tmp_path / "heads.npz"
    three_output_model(model, rng)
    features = rng.standard_normal((ROWS, 16)).astype(np.float32)
    labelled(model, {"features": features}, "scores", data)
    summary = exp_run(repo, "byo-heads", model, data, "model.label_output=scores")
    for t in ("distill", "prune_magnitude", "prune_channels"):  # nothing to retrain in an ONNX
        assert summary["candidates"][t]["verdict"] == "NOT APPLICABLE", t
    static = load(repo, "models/candidates/int8_static/manifest.json")
    assert static["status"] == "ok", static.get("reason")
    val = load(repo, "reports/validation/int8_static/validation.json")
    assert set(val["outputs"]) == {"scores", "box", "landmarks"}


def test_an_image_model_with_unknown_axes_reaches_a_dashboard(repo: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    model, data = tmp_path / "image.onnx", tmp_path / "image.npz"
    image_model(model, rng)
    pixels = rng.random((ROWS, 1, 8, 8)).astype(np.float32)
    labelled(model, {"pixels": pixels}, "logits", data)
    summary = exp_run(repo, "byo-image", model, data)
    assert summary["candidates"]["int8_dynamic"]["verdict"] in VERDICTS
    assert summary["candidates"]["fp16"]["verdict"] in VERDICTS
