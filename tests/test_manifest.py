"""Tests for stages.evidence.manifest: graph summaries and the one-change check."""

from __future__ import annotations

import copy
import hashlib
import shutil
from pathlib import Path
from typing import Any

import onnx
import pytest

from stages.evidence.manifest import changes, confounders, flatten, side
from stages.onnx_graph import graph_summary

# The weights of conftest's tiny model: conv 4x1x3x3 + bias 4, linear 4x256 + bias 4.
TINY_WEIGHTS = 4 * 9 + 4 + 4 * 256 + 4


@pytest.fixture(scope="module")
def summary(tiny_onnx: Path) -> dict[str, Any]:
    return graph_summary(tiny_onnx)


def _sides(graph: dict[str, Any], **session: Any) -> dict[str, Any]:
    settings = {"provider": "CPUExecutionProvider", "intra_op_threads": 4, **session}
    return side(graph, settings, {"validation": "abc123"})


# --- graph_summary ----------------------------------------------------------------------------


def test_graph_summary_ops_and_counts(summary: dict[str, Any]) -> None:
    ops = summary["op_types"]

    assert {"Conv", "Relu"} <= set(ops)
    assert {"Gemm", "MatMul"} & set(ops)  # the linear layer, however the exporter spells it
    assert sum(ops.values()) == summary["nodes"]
    assert list(ops) == sorted(ops)
    assert "float32" in summary["dtypes"]
    assert summary["parameters"] >= TINY_WEIGHTS
    assert summary["opset"] > 0


def test_graph_summary_io_names_and_dynamic_batch(summary: dict[str, Any]) -> None:
    (inp,) = summary["io"]["inputs"]
    (out,) = summary["io"]["outputs"]

    assert inp["name"] == "image"
    assert inp["dtype"] == "FLOAT"
    assert isinstance(inp["shape"][0], str) and inp["shape"][0]  # a named, dynamic batch axis
    assert inp["shape"][1:] == [1, 8, 8]
    assert out["name"] == "logits"
    assert out["dtype"] == "FLOAT"
    assert isinstance(out["shape"][0], str) and out["shape"][0]
    assert out["shape"][1:] == [4]


def test_graph_summary_hash_and_size_match_the_file(tiny_onnx: Path) -> None:
    first = graph_summary(tiny_onnx)
    second = graph_summary(tiny_onnx)

    assert first == second
    assert first["sha256"] == hashlib.sha256(tiny_onnx.read_bytes()).hexdigest()
    assert first["size_bytes"] == tiny_onnx.stat().st_size


def test_graph_summary_of_a_copy_is_equal(tiny_onnx: Path, tmp_path: Path) -> None:
    copy_path = tmp_path / "elsewhere.onnx"
    shutil.copyfile(tiny_onnx, copy_path)

    assert graph_summary(copy_path) == graph_summary(tiny_onnx)


def test_graph_summary_counts_external_data(tiny_onnx: Path, tmp_path: Path) -> None:
    model = onnx.load(str(tiny_onnx))
    path = tmp_path / "model.onnx"
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="w.data",
        size_threshold=0,
    )
    single = graph_summary(tiny_onnx)

    split = graph_summary(path)

    assert split["parameters"] == single["parameters"]
    assert split["op_types"] == single["op_types"]
    assert split["size_bytes"] == path.stat().st_size + (tmp_path / "w.data").stat().st_size
    expected = hashlib.sha256(path.read_bytes() + (tmp_path / "w.data").read_bytes())
    assert split["sha256"] == expected.hexdigest()


# --- changes ----------------------------------------------------------------------------------


def test_no_changes_between_equal_sides(summary: dict[str, Any]) -> None:
    a = _sides(summary)
    b = copy.deepcopy(a)

    assert changes(a, b) == []


def test_changes_name_each_differing_field(summary: dict[str, Any]) -> None:
    cand = copy.deepcopy(summary)
    cand["op_types"] = {**cand["op_types"], "DynamicQuantizeLinear": 1}
    cand["sha256"] = "0" * 64
    a = _sides(summary)
    b = _sides(cand, intra_op_threads=8)

    changed = changes(a, b)

    assert changed == ["graph.op_types", "graph.sha256", "session.intra_op_threads"]


def test_op_types_dtypes_and_io_compare_as_whole_values(summary: dict[str, Any]) -> None:
    cand = copy.deepcopy(summary)
    cand["io"]["inputs"][0]["shape"][0] = 1  # a fixed batch where the baseline had a dynamic one
    cand["dtypes"]["int8"] = 3

    flat = flatten({"graph": cand})
    changed = changes({"graph": summary}, {"graph": cand})

    assert "graph.io" in flat and "graph.dtypes" in flat and "graph.op_types" in flat
    assert not any(k.startswith(("graph.io.", "graph.dtypes.", "graph.op_types.")) for k in flat)
    assert changed == ["graph.dtypes", "graph.io"]


def test_a_field_on_one_side_only_is_a_change() -> None:
    a = {"session": {"provider": "CPUExecutionProvider"}}
    b = {"session": {"provider": "CPUExecutionProvider", "allow_spinning": True}}

    assert changes(a, b) == ["session.allow_spinning"]
    assert changes(b, a) == ["session.allow_spinning"]


# --- confounders ------------------------------------------------------------------------------


def test_declared_change_is_not_a_confounder_but_an_undeclared_one_is(
    summary: dict[str, Any],
) -> None:
    cand = copy.deepcopy(summary)
    cand["op_types"] = {"ConvInteger": 1}
    changed = changes(_sides(summary), _sides(cand, intra_op_threads=1))

    bad = confounders(changed, ("graph.op_types",))

    assert changed == ["graph.op_types", "session.intra_op_threads"]
    assert bad == ["session.intra_op_threads"]


def test_no_confounders_when_everything_is_declared() -> None:
    changed = ["graph.dtypes", "graph.op_types"]

    assert confounders(changed, ("graph.op_types", "graph.dtypes")) == []
    assert confounders([], ()) == []


def test_declared_prefix_needs_a_dot_boundary() -> None:
    changed = ["graph.op_types_x", "graph.op_types", "graph.op"]

    bad = confounders(changed, ("graph.op_types",))

    assert bad == ["graph.op_types_x", "graph.op"]


def test_declaring_a_parent_covers_its_children() -> None:
    changed = ["graph.op_types", "graph.sha256", "session.provider", "graphs.x"]

    bad = confounders(changed, ("graph",))

    assert bad == ["session.provider", "graphs.x"]


@pytest.mark.parametrize(
    ("dim", "seen"),
    [(-1, None), (0, None), ("?", None), ("", None), ("unk__0", None), ("batch", "batch"), (5, 5)],
)
def test_an_unknown_axis_reads_the_same_however_it_is_spelt(dim: int | str, seen: Any) -> None:
    from onnx import TensorProto, helper

    from stages.onnx_graph import _value_info

    info = helper.make_tensor_value_info("x", TensorProto.FLOAT, [dim, 3])
    assert _value_info(info)["shape"] == [seen, 3]
