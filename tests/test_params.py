"""params.yaml is the composition of conf/, and every bad value stops with a clear message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra.errors import MissingConfigException

from stages import params as P
from stages.techniques import TECHNIQUES

ROOT = Path(__file__).resolve().parents[1]


def test_committed_params_equal_the_composition(cfg: dict[str, Any]) -> None:
    committed = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert committed == cfg, "params.yaml is stale: run `make params` and commit it"


@pytest.mark.parametrize("group", ["model", "target", "bench", "budget"])
def test_every_option_of_every_group_composes_and_validates(group: str) -> None:
    options = sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))
    assert options, f"conf/{group} is empty"
    needs = {"onnx_file": ["model.path=/models/m.onnx", "model.data=/models/val.npz"]}
    for option in options:
        overrides = [f"{group}={option}", *needs.get(option, [])]
        params = P.validate(P.compose(overrides, conf=ROOT / "conf"))
        assert params is not None


def test_every_technique_composes_alone_and_together() -> None:
    names = sorted(p.stem for p in (ROOT / "conf" / "technique").glob("*.yaml"))
    assert sorted(TECHNIQUES) == names, "each technique needs one YAML file and one registry entry"
    for name in names:
        params = P.validate(P.compose([f"technique=[{name}]"], conf=ROOT / "conf"))
        assert list(params.technique) == [name]
    both = P.validate(P.compose([f"technique=[{','.join(names)}]"], conf=ROOT / "conf"))
    assert sorted(both.technique) == names


def test_unknown_target_is_refused_by_hydra_with_the_choices() -> None:
    with pytest.raises(MissingConfigException) as e:
        P.compose(["target=gpu"], conf=ROOT / "conf")
    assert "target/gpu" in str(e.value) and "cpu" in str(e.value) and "edge" in str(e.value)


def test_unknown_technique_names_the_allowed_ones(cfg: dict[str, Any]) -> None:
    cfg["technique"]["int4_magic"] = {}
    with pytest.raises(P.ParamsError, match=r"int4_magic.*int8_dynamic"):
        P.validate(cfg)


def test_no_technique_selected(cfg: dict[str, Any]) -> None:
    cfg["technique"] = {}
    with pytest.raises(P.ParamsError, match="no technique selected"):
        P.validate(cfg)


def test_unknown_model_names_the_presets(cfg: dict[str, Any]) -> None:
    cfg["model"]["name"] = "resnet9000"
    with pytest.raises(P.ParamsError, match=r"model\.name.*digits_cnn"):
        P.validate(cfg)


def test_misspelled_key_names_the_field_and_the_allowed_keys(cfg: dict[str, Any]) -> None:
    cfg["bench"]["max_second"] = 3
    with pytest.raises(P.ParamsError) as e:
        P.validate(cfg)
    msg = str(e.value)
    assert "bench.max_second" in msg and "max_seconds" in msg and "make params" in msg


def test_misspelled_model_key(cfg: dict[str, Any]) -> None:
    cfg["model"]["epoch"] = 3
    with pytest.raises(P.ParamsError, match=r"model\.epoch.*epochs"):
        P.validate(cfg)


def test_wrong_type_names_the_field(cfg: dict[str, Any]) -> None:
    cfg["bench"]["min_rounds"] = "many"
    with pytest.raises(P.ParamsError, match=r"bench\.min_rounds.*'many'"):
        P.validate(cfg)


@pytest.mark.parametrize(
    ("section", "key", "value", "needle"),
    [
        ("budget", "max_accuracy_drop", -1.0, "budget.max_accuracy_drop"),
        ("budget", "max_worst_slice_drop", -0.5, "budget.max_worst_slice_drop"),
        ("budget", "min_speedup", -2.0, "budget.min_speedup"),
        ("budget", "min_speedup", 0.0, "budget.min_speedup"),
        ("budget", "alpha", 1.5, "budget.alpha"),
        ("bench", "precision", 0.0, "bench.precision"),
        ("bench", "batch_sizes", [32], "bench.batch_sizes"),
        ("bench", "batch_sizes", [1, 0], "bench.batch_sizes"),
        ("target", "graph_optimization_level", "max", "target.graph_optimization_level"),
        ("target", "intra_op_threads", -1, "target.intra_op_threads"),
    ],
)
def test_values_that_make_no_sense(
    cfg: dict[str, Any], section: str, key: str, value: Any, needle: str
) -> None:
    cfg[section][key] = value
    with pytest.raises(P.ParamsError) as e:
        P.validate(cfg)
    assert (needle in str(e.value) and "expected" in str(e.value)) or "choose" in str(e.value)


def test_load_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(P.ParamsError, match="not found"):
        P.load(tmp_path / "params.yaml")
