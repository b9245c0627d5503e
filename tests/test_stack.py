"""The control stack: which technique applies on top of which, and the `control` stage that builds
the stack from the baseline (deterministic: two builds give the same bytes)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from stages import control, stack
from stages import data as datasets
from stages import params as config
from stages.data import Prepared
from stages.errors import ParamsError
from stages.export import MODEL_FILE


@pytest.mark.parametrize(
    ("steps", "technique", "reason"),
    [
        (["int8_dynamic"], "fp16", r"the control is an INT8 graph \(int8_dynamic\): fp16 rewrites"),
        (["fp16"], "int8_static", r"an already-converted model"),
        (["int8_static"], "distill", r"distill retrains .* int8_static left an ONNX graph only"),
        (["distill"], "prune_channels", r"prune_channels retrains .* distill left an ONNX graph"),
        (["batching"], "int8_dynamic", r"already serves through batching"),
        (["int8_dynamic"], "fuse", r"fuse must leave its outputs unchanged"),
        (["int8_static"], "fuse", r"INT8 graph \(int8_static\)"),
        (["prune_channels", "int8_dynamic"], "batching", r"scales computed per call"),
    ],
)
def test_a_technique_on_top_of_one_that_removed_what_it_needs_is_not_applicable(
    steps: list[str], technique: str, reason: str
) -> None:
    state = stack.state_of(steps, has_weights=True)

    why = stack.not_applicable(state, technique)

    assert why is not None and re.search(reason, why)


@pytest.mark.parametrize(
    ("steps", "technique"),
    [
        ([], "distill"),
        ([], "fp16"),
        (["distill"], "int8_dynamic"),  # a distilled student is still a float graph
        (["identity"], "prune_magnitude"),  # the same file: the torch model still describes it
        (["fp16"], "fuse"),  # a graph optimization of a float graph
        (["prune_channels", "int8_static"], "batching"),  # static scales: serving comes last
    ],
)
def test_what_the_control_still_offers_lets_a_technique_apply(
    steps: list[str], technique: str
) -> None:
    assert stack.not_applicable(stack.state_of(steps, has_weights=True), technique) is None


def test_control_dir_is_the_baselines_for_an_empty_stack() -> None:
    paths = config.Paths()

    assert stack.control_dir(paths, {}) == Path(paths.baseline)
    assert stack.control_dir(paths, {"int8_dynamic": object()}) == Path(paths.control)


def _params(
    cfg: dict[str, Any], tmp: Path, tiny_onnx: Path, tiny_data: Prepared, steps: list[str]
) -> config.Params:
    """The real config on digits, its paths in `tmp`: the tiny model as the baseline (no torch
    weights), the tiny data as the prepared set, and `steps` as the control stack."""
    base, data = tmp / "baseline", tmp / "data"
    if not base.exists():
        base.mkdir(parents=True)
        (base / MODEL_FILE).write_bytes(tiny_onnx.read_bytes())
        datasets.write(tiny_data, data)
    cfg = {**cfg, "model": {"name": "digits_cnn"}}
    cfg["control"] = {s: cfg["technique"].get(s, {}) for s in steps}
    p = config.validate(cfg)
    paths = dataclasses.replace(
        p.paths, baseline=str(base), data=str(data), control=str(tmp / "control")
    )
    return dataclasses.replace(p, paths=paths)


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()
    }


def test_an_empty_stack_is_the_baseline_itself(
    cfg: dict[str, Any], tmp_path: Path, tiny_onnx: Path, tiny_data: Prepared
) -> None:
    p = _params(cfg, tmp_path, tiny_onnx, tiny_data, [])
    out = tmp_path / "out"
    out.mkdir()

    manifest = control.build(p, out)

    assert manifest == {"stack": [], "steps": [], "model": "the baseline (an empty stack)"}
    assert not any(out.iterdir())  # no model: every stage reads the baseline's


def test_the_stacks_control_is_byte_identical_across_two_builds(
    cfg: dict[str, Any], tmp_path: Path, tiny_onnx: Path, tiny_data: Prepared
) -> None:
    p = _params(cfg, tmp_path, tiny_onnx, tiny_data, ["identity", "int8_dynamic"])
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()

    manifest = control.build(p, first)
    control.build(p, second)

    assert manifest["stack"] == ["identity", "int8_dynamic"]
    assert [s["technique"] for s in manifest["steps"]] == ["identity", "int8_dynamic"]
    assert manifest["steps"][1]["offers"] == {"graph": "INT8", "torch": False, "serving": ""}
    assert (first / MODEL_FILE).is_file() and (first / "steps/2_int8_dynamic").is_dir()
    assert _files(first) == _files(second)
    assert "MatMulInteger" in str(manifest["graph"]["op_types"]) or "ConvInteger" in str(
        manifest["graph"]["op_types"]
    )


def test_a_stack_that_cannot_be_built_names_the_step_and_why(
    cfg: dict[str, Any], tmp_path: Path, tiny_onnx: Path, tiny_data: Prepared
) -> None:
    p = _params(cfg, tmp_path, tiny_onnx, tiny_data, ["int8_dynamic", "fp16"])
    out = tmp_path / "out"
    out.mkdir()

    with pytest.raises(ParamsError, match=r"^control: step 2 \(fp16\) cannot be built: .*INT8"):
        control.build(p, out)
