"""Tests for stages.techniques: each registered technique applied to a tiny model, and its options.

Defaults come from each technique's options dataclass; int8_static's default calibration_size
(128) is larger than the tiny calibration split (32 rows), so it is lowered to the split's size,
the one change a real run on this data would need (the refusal itself is tested below).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from stages import params as config
from stages.data import Prepared
from stages.evidence.manifest import changes, confounders
from stages.onnx_graph import graph_summary
from stages.stats import cosine_similarity
from stages.techniques.base import Context
from stages.techniques.catalog import TECHNIQUES, get

MIN_COSINE = 0.98
MIN_AGREEMENT = 0.9  # share of rows whose predicted class the candidate keeps
# Techniques that work on an ONNX model alone; those that retrain the torch model have their
# own tests (test_technique_train.py) on a small digits baseline.
ONNX_ONLY = ["fp16", "fuse", "int8_dynamic", "int8_static"]


def _run(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def _io(path: Path) -> dict[str, list[tuple[str, list[Any]]]]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return {
        "inputs": [(i.name, list(i.shape)) for i in sess.get_inputs()],
        "outputs": [(o.name, list(o.shape)) for o in sess.get_outputs()],
    }


def _defaults(name: str, data: Prepared, **overrides: Any) -> Any:
    """The technique's default options, with calibration_size fitted to the calibration split."""
    options = TECHNIQUES[name].options()
    if hasattr(options, "calibration_size"):
        rows = len(data.labels("calibration"))
        options = dataclasses.replace(options, calibration_size=min(options.calibration_size, rows))
    return dataclasses.replace(options, **overrides)


def _apply(name: str, options: Any, baseline: Path, data: Prepared, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    return TECHNIQUES[name].apply(Context(baseline, options, data, out, seed=0))


@pytest.fixture(scope="module", params=ONNX_ONLY)
def candidate(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    tiny_onnx: Path,
    tiny_data: Prepared,
) -> tuple[str, Path, dict[str, Any]]:
    """(technique name, candidate model path, what apply returned), once per technique."""
    name = request.param
    out = tmp_path_factory.mktemp(name)
    details = _apply(name, _defaults(name, tiny_data), tiny_onnx, tiny_data, out)
    return name, out / "model.onnx", details


@pytest.fixture(scope="module")
def baseline_logits(tiny_onnx: Path, tiny_data: Prepared) -> np.ndarray:
    return _run(tiny_onnx, tiny_data.feeds("validation"))


def test_the_fixture_model_predicts_several_classes(baseline_logits: np.ndarray) -> None:
    # a model that predicts one class for every row would let every argmax check pass blindly
    counts = np.bincount(baseline_logits.argmax(1), minlength=4)
    assert (counts > 0).sum() >= 3 and counts.max() <= 0.6 * counts.sum()


# --- applying each technique ------------------------------------------------------------------


def test_candidate_is_written_alone_and_loads(candidate: tuple[str, Path, dict[str, Any]]) -> None:
    _, path, details = candidate

    assert [p.name for p in path.parent.iterdir()] == ["model.onnx"]  # no calibration leftovers
    assert details  # apply reports what it changed
    assert _io(path)  # loads in onnxruntime


def test_candidate_keeps_inputs_and_outputs(
    candidate: tuple[str, Path, dict[str, Any]], tiny_onnx: Path, tiny_data: Prepared
) -> None:
    _, path, _ = candidate

    got = _io(path)

    assert got == _io(tiny_onnx)
    assert [name for name, _ in got["inputs"]] == tiny_data.inputs
    batch = tiny_data.feeds("validation")
    assert _run(path, {k: v[:5] for k, v in batch.items()}).shape == (5, 4)  # dynamic batch


def test_candidate_stays_close_to_the_baseline(
    candidate: tuple[str, Path, dict[str, Any]], baseline_logits: np.ndarray, tiny_data: Prepared
) -> None:
    _, path, _ = candidate

    logits = _run(path, tiny_data.feeds("validation"))

    assert logits.shape == baseline_logits.shape
    assert np.all(np.isfinite(logits))
    # the input-dependent part: a constant offset shared by every row cannot carry the cosine
    centre = baseline_logits.mean(0)
    assert cosine_similarity(baseline_logits - centre, logits - centre) >= MIN_COSINE
    assert (logits.argmax(1) == baseline_logits.argmax(1)).mean() >= MIN_AGREEMENT


def test_candidate_changes_only_declared_fields(
    candidate: tuple[str, Path, dict[str, Any]], tiny_onnx: Path
) -> None:
    name, path, _ = candidate
    declared = TECHNIQUES[name].declares

    changed = changes({"graph": graph_summary(tiny_onnx)}, {"graph": graph_summary(path)})

    assert changed  # a technique that changes nothing is no technique
    assert "graph.sha256" in changed
    assert "graph.io" not in changed
    assert confounders(changed, declared) == []


def test_candidate_is_reproducible(
    candidate: tuple[str, Path, dict[str, Any]],
    tiny_onnx: Path,
    tiny_data: Prepared,
    tmp_path: Path,
) -> None:
    name, path, details = candidate

    again = _apply(name, _defaults(name, tiny_data), tiny_onnx, tiny_data, tmp_path)

    assert again == details
    assert (tmp_path / "model.onnx").read_bytes() == path.read_bytes()


@pytest.mark.parametrize(
    "overrides",
    [
        {"format": "qoperator"},
        {"calibration": "entropy"},
        {"calibration": "percentile"},
        {"per_channel": False, "activation_type": "qint8"},
        {"calibration_size": 5},
    ],
    ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()),
)
def test_int8_static_variants_stay_close(
    overrides: dict[str, Any],
    tiny_onnx: Path,
    tiny_data: Prepared,
    baseline_logits: np.ndarray,
    tmp_path: Path,
) -> None:
    options = _defaults("int8_static", tiny_data, **overrides)

    details = _apply("int8_static", options, tiny_onnx, tiny_data, tmp_path)
    logits = _run(tmp_path / "model.onnx", tiny_data.feeds("validation"))

    assert details["calibration_rows"] == options.calibration_size
    assert cosine_similarity(baseline_logits, logits) >= MIN_COSINE


def test_int8_dynamic_op_types_limit_what_is_quantized(
    tiny_onnx: Path, tiny_data: Prepared, tmp_path: Path
) -> None:
    options = _defaults("int8_dynamic", tiny_data, op_types=["Conv"])

    details = _apply("int8_dynamic", options, tiny_onnx, tiny_data, tmp_path)
    ops = graph_summary(tmp_path / "model.onnx")["op_types"]

    assert "ConvInteger" in details["quantized"]
    assert "MatMulInteger" not in ops


def test_int8_static_qoperator_reports_every_quantized_op(
    tiny_onnx: Path, tiny_data: Prepared, tmp_path: Path
) -> None:
    options = _defaults("int8_static", tiny_data, format="qoperator")

    details = _apply("int8_static", options, tiny_onnx, tiny_data, tmp_path)
    ops = graph_summary(tmp_path / "model.onnx")["op_types"]
    new_quantized = {op for op in ops if op.startswith("Q")} - set(
        graph_summary(tiny_onnx)["op_types"]
    )

    assert new_quantized  # the QOperator format writes Q* ops
    assert new_quantized <= set(details["quantized"])


def test_int8_static_refuses_more_calibration_rows_than_the_split(
    tiny_onnx: Path, tiny_data: Prepared, tmp_path: Path
) -> None:
    rows = len(tiny_data.labels("calibration"))
    options = TECHNIQUES["int8_static"].options(calibration_size=rows + 1)

    with pytest.raises(ValueError, match="calibration_size") as err:
        _apply("int8_static", options, tiny_onnx, tiny_data, tmp_path)

    assert f"has {rows} rows" in str(err.value)
    assert not (tmp_path / "model.onnx").exists()


# --- options ----------------------------------------------------------------------------------


def test_conf_defaults_match_the_options_dataclasses(cfg: dict[str, Any]) -> None:
    params = config.validate(cfg)

    for name, options in params.technique.items():
        assert options == TECHNIQUES[name].options()


@pytest.mark.parametrize(
    ("technique", "key", "value", "match"),
    [
        ("int8_static", "calibration", "kl", "calibration = 'kl'.*minmax, entropy, percentile"),
        ("int8_static", "format", "xyz", "format = 'xyz'.*qdq, qoperator"),
        ("int8_dynamic", "weight_type", "int4", "weight_type = 'int4'.*qint8, quint8"),
        ("int8_static", "weight_type", "int4", "weight_type = 'int4'.*qint8, quint8"),
        ("int8_static", "activation_type", "int4", "activation_type = 'int4'.*qint8, quint8"),
        ("int8_static", "calibration_size", 0, "calibration_size = 0.*>= 1"),
        ("int8_dynamic", "op_types", [""], "op_types"),
    ],
)
def test_bad_option_values_are_refused(
    cfg: dict[str, Any], technique: str, key: str, value: Any, match: str
) -> None:
    raw = copy.deepcopy(cfg)
    raw["technique"][technique][key] = value

    with pytest.raises(config.ParamsError, match=match) as err:
        config.validate(raw)

    assert str(err.value).startswith(f"technique.{technique}.{key}")


def test_unknown_option_key_lists_the_allowed_keys(cfg: dict[str, Any]) -> None:
    cfg["technique"]["int8_dynamic"]["per_chanel"] = True

    with pytest.raises(config.ParamsError) as err:
        config.validate(cfg)

    message = str(err.value)
    assert message.startswith("technique.int8_dynamic.per_chanel")
    assert "Allowed keys here: per_channel, reduce_range, weight_type, op_types" in message


def test_unknown_technique_is_refused(cfg: dict[str, Any]) -> None:
    cfg["technique"]["int4_awq"] = {}

    with pytest.raises(config.ParamsError, match=r"int4_awq.*int8_dynamic, int8_static"):
        config.validate(cfg)
    with pytest.raises(KeyError, match="int8_dynamic, int8_static"):
        get("int4_awq")
