"""A model with three outputs (a box, class scores, landmarks): every output is compared, and a
candidate that moves the box beyond budget is rejected even when the class scores are intact.

The models are written with onnx.helper; `prepare`, `reference` and `validate` run as the pipeline
runs them (their `main`, on a params.yaml composed from conf/ in tmp_path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import yaml
from conftest import ROOT
from factories import candidate
from onnx import TensorProto, helper, numpy_helper

from stages import params as config
from stages import predictions, prepare, reference, validate
from stages.evidence.dashboard import worst_output_cell
from stages.evidence.output_rules import OUTPUTS
from stages.evidence.rule import FAIL, PASS
from stages.evidence.tables import outputs_table
from stages.evidence.verdict import REJECT, SHIP, decide
from stages.models import onnx_file
from stages.models.options import OnnxFileParams
from stages.params import Budget, ParamsError
from stages.storage import read_json, write_json

ROWS = 120
OUTPUTS_ORDER = ("box", "scores", "landmarks")  # the label output is not the first


def heads(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """features [N, 16] -> hidden [N, 32] -> box [N, 4], scores [N, 3], landmarks [N, 2]."""
    return {
        "w1": rng.standard_normal((16, 32)).astype(np.float32) / 4,
        "w_box": rng.standard_normal((32, 4)).astype(np.float32) / 4,
        "w_scores": rng.standard_normal((32, 3)).astype(np.float32),
        "w_landmarks": rng.standard_normal((32, 2)).astype(np.float32) / 4,
    }


def save_model(path: Path, w: dict[str, np.ndarray]) -> Path:
    nodes = [
        helper.make_node("MatMul", ["features", "w1"], ["h0"]),
        helper.make_node("Relu", ["h0"], ["hidden"]),
        *[helper.make_node("MatMul", ["hidden", f"w_{n}"], [n]) for n in OUTPUTS_ORDER],
    ]
    width = {"box": 4, "scores": 3, "landmarks": 2}
    graph = helper.make_graph(
        nodes,
        "three_heads",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 16])],
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", width[n]])
            for n in OUTPUTS_ORDER
        ],
        initializer=[numpy_helper.from_array(v, k) for k, v in w.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """The baseline model, its labelled .npz (labels: the scores' argmax), and its weights."""
    import onnxruntime as ort

    folder = tmp_path_factory.mktemp("heads")
    rng = np.random.default_rng(0)
    w = heads(rng)
    model = save_model(folder / "heads.onnx", w)
    features = rng.standard_normal((ROWS, 16)).astype(np.float32)
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    labels = sess.run(["scores"], {"features": features})[0].argmax(1)
    assert len(set(labels.tolist())) == 3  # the scores vary across rows
    data = folder / "heads.npz"
    np.savez(data, features=features, labels=labels.astype(np.int64))
    return model, data, w


def pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: Path, data: Path) -> None:
    """params.yaml for this model in tmp_path, then `prepare`, the baseline and `reference`."""
    cfg = config.compose(
        [
            "model=onnx_file",
            f"model.path={model}",
            f"model.data={data}",
            "model.label_output=scores",
            "technique=[int8_static]",
        ],
        conf=ROOT / "conf",
    )
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(yaml.safe_dump(cfg))
    prepare.main()
    (tmp_path / "models/baseline").mkdir(parents=True)
    (tmp_path / "models/baseline/model.onnx").write_bytes(model.read_bytes())
    reference.main()


def validated(tmp_path: Path, name: str, w: dict[str, np.ndarray]) -> dict[str, Any]:
    """A candidate with weights `w` through validate@<name>: its validation.json."""
    folder = tmp_path / "models/candidates" / name
    folder.mkdir(parents=True)
    save_model(folder / "model.onnx", w)
    write_json(folder / "manifest.json", {"status": "ok"})
    validate.main([name])
    return dict(read_json(tmp_path / f"reports/validation/{name}/validation.json", "validate"))


def verdict(val: dict[str, Any], budget: Budget | None = None) -> tuple[str, dict[str, Any]]:
    """The verdict on this validation with a benchmark that passes every speed rule, and the
    rule on the other outputs."""
    got, rules = decide({**candidate(), "validation": val}, budget or Budget())
    return got, next(vars(r) for r in rules if r.name == OUTPUTS)


def without_outputs(val: dict[str, Any]) -> dict[str, Any]:
    """The same validation as its label output alone shows it."""
    return {k: v for k, v in val.items() if k not in ("outputs", "label_output")}


def test_a_box_moved_beyond_budget_is_rejected_with_intact_scores(
    base: tuple[Path, Path, dict[str, np.ndarray]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, data, w = base
    pipeline(tmp_path, monkeypatch, model, data)
    moved = {**w, "w_box": w["w_box"].copy()}
    moved["w_box"][:, 0] += 0.5  # the box's first coordinate moves; scores and landmarks do not

    val = validated(tmp_path, "int8_static", moved)

    assert val["label_output"] == "scores"
    assert set(val["outputs"]) == set(OUTPUTS_ORDER)
    assert [val["outputs"][n]["index"] for n in OUTPUTS_ORDER] == [0, 1, 2]
    scores, box, marks = (val["outputs"][n] for n in ("scores", "box", "landmarks"))
    assert scores["label"] and not box["label"] and not marks["label"]
    assert scores["shape"] == [3] and box["shape"] == [4] and marks["shape"] == [2]
    for o in (scores, box, marks):
        assert {"baseline_range", "max_abs_error", "relative_error", "cosine", "sqnr_db"} <= set(o)
    assert scores["max_abs_error"] == 0 and marks["max_abs_error"] == 0
    assert box["relative_error"] > 0.05
    assert box["relative_error"] == pytest.approx(box["max_abs_error"] / box["baseline_range"])
    assert box["cosine"] < 1 and box["sqnr_db"] < 60
    # the label output keeps the existing fidelity block, and accuracy is the scores' argmax
    assert val["fidelity"]["max_abs_error"] == 0
    assert val["overall"]["baseline_accuracy"]["estimate"] == 1.0
    assert val["overall"]["right_to_wrong"] == 0
    metrics = read_json(tmp_path / "reports/validation/int8_static/metrics.json", "validate")
    assert metrics["worst_other_output_relative_error"] == pytest.approx(box["relative_error"])

    got, rule = verdict(val)

    assert got == REJECT and rule["status"] == FAIL
    assert verdict(without_outputs(val))[0] != REJECT  # the label output alone hides the move
    assert "'box'" in rule["reason"] and "'landmarks'" not in rule["reason"]
    assert f"{100 * box['relative_error']:.3g} %" in rule["reason"]
    assert worst_output_cell(val) == f"box {100 * box['relative_error']:.3g} %"
    table = outputs_table(val)
    assert [line.split(" | ")[0] for line in table if line.startswith("| ")][1:] == [
        f"| {n}" for n in OUTPUTS_ORDER
    ]


def test_a_candidate_within_budget_passes_the_rule(
    base: tuple[Path, Path, dict[str, np.ndarray]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, data, w = base
    pipeline(tmp_path, monkeypatch, model, data)
    nudged = {**w, "w_landmarks": w["w_landmarks"] * np.float32(1.002)}

    val = validated(tmp_path, "int8_static", nudged)

    marks = val["outputs"]["landmarks"]
    assert 0 < marks["relative_error"] < 0.05
    got, rule = verdict(val)
    assert rule["status"] == PASS and rule["reason"] == ""
    assert "'landmarks'" in rule["measured"]
    assert got == verdict(without_outputs(val))[0]  # the rule passes: no change to the verdict
    strict, rule = verdict(val, Budget(max_output_error=0.0001))
    assert strict == REJECT and rule["status"] == FAIL and "'landmarks'" in rule["reason"]


def test_a_label_output_the_model_lacks_is_a_clear_error(
    base: tuple[Path, Path, dict[str, np.ndarray]],
) -> None:
    model, data, _ = base
    p = OnnxFileParams(path=str(model), data=str(data), label_output="classes")

    with pytest.raises(ParamsError) as e:
        onnx_file.prepare(p, seed=0)

    message = str(e.value)
    assert "model.label_output = 'classes'" in message
    assert "['box', 'scores', 'landmarks']" in message


def test_the_label_output_defaults_to_the_first(
    base: tuple[Path, Path, dict[str, np.ndarray]],
) -> None:
    model, data, _ = base
    p = OnnxFileParams(path=str(model), data=str(data))

    prepared = onnx_file.prepare(p, seed=0)  # labels 0..2 index the 4-wide box as well

    assert prepared.info["label_output"] == "box" and len(prepared.class_names) == 4


def test_max_output_error_must_not_be_negative() -> None:
    with pytest.raises(ParamsError, match=r"budget.max_output_error = -0.1"):
        Budget(max_output_error=-0.1)


# --- a single-output model: the same evidence, the rule does not apply ----------------------------


def test_a_single_output_model_has_one_output_and_the_rule_does_not_apply(
    tiny_data, tiny_onnx
) -> None:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    ref = predictions.predict(sess, tiny_data.feeds("validation"))

    val = validate.evaluate({"validation": ref}, sess, tiny_data, 0.95).to_dict()

    (name,) = val["outputs"]
    assert val["label_output"] == name and val["outputs"][name]["label"]
    assert val["outputs"][name]["max_abs_error"] == val["fidelity"]["max_abs_error"] == 0
    assert "worst_other_output_relative_error" not in validate.flat_metrics(val)
    got, rule = verdict(val)
    assert rule["status"] == PASS and rule["reason"] == "does not apply: a single output"
    assert got == verdict(without_outputs(val))[0]
    assert verdict(val, Budget(max_output_error=0.0))[0] == got
    assert worst_output_cell(val) == "—"


def test_evidence_without_per_output_figures_keeps_its_verdict() -> None:
    e = candidate()  # the validation block as written before per-output figures

    got, rules = decide(e, Budget())

    assert got == SHIP
    assert [r.status for r in rules if r.name == OUTPUTS] == [PASS]
