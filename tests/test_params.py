"""params.yaml is the composition of conf/, and every bad value stops with a clear message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra.errors import MissingConfigException

from stages import params as config
from stages.compose import main as compose_main
from stages.techniques.catalog import TECHNIQUES

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
        params = config.validate(config.compose(overrides, conf=ROOT / "conf"))
        assert params is not None


def test_every_technique_composes_alone_and_together() -> None:
    names = sorted(p.stem for p in (ROOT / "conf" / "technique").glob("*.yaml"))
    assert sorted(TECHNIQUES) == names, "each technique needs one YAML file and one registry entry"
    for name in names:
        params = config.validate(config.compose([f"technique=[{name}]"], conf=ROOT / "conf"))
        assert list(params.technique) == [name]
    both = config.validate(config.compose([f"technique=[{','.join(names)}]"], conf=ROOT / "conf"))
    assert sorted(both.technique) == names


def test_unknown_target_is_refused_by_hydra_with_the_choices() -> None:
    with pytest.raises(MissingConfigException) as e:
        config.compose(["target=gpu"], conf=ROOT / "conf")
    assert "target/gpu" in str(e.value) and "cpu" in str(e.value) and "edge" in str(e.value)


def test_unknown_technique_names_the_allowed_ones(cfg: dict[str, Any]) -> None:
    cfg["technique"]["int4_magic"] = {}
    with pytest.raises(config.ParamsError, match=r"int4_magic.*int8_dynamic"):
        config.validate(cfg)


def test_no_technique_selected(cfg: dict[str, Any]) -> None:
    cfg["technique"] = {}
    with pytest.raises(config.ParamsError, match="no technique selected"):
        config.validate(cfg)


def test_unknown_model_names_the_presets(cfg: dict[str, Any]) -> None:
    cfg["model"]["name"] = "resnet9000"
    with pytest.raises(config.ParamsError, match=r"model\.name.*digits_cnn"):
        config.validate(cfg)


def test_misspelled_key_names_the_field_and_the_allowed_keys(cfg: dict[str, Any]) -> None:
    cfg["bench"]["max_second"] = 3
    with pytest.raises(config.ParamsError) as e:
        config.validate(cfg)
    msg = str(e.value)
    assert "bench.max_second" in msg and "max_seconds" in msg and "make params" in msg


def test_misspelled_model_key(cfg: dict[str, Any]) -> None:
    cfg["model"]["epoch"] = 3
    with pytest.raises(config.ParamsError, match=r"model\.epoch.*epochs"):
        config.validate(cfg)


def test_wrong_type_names_the_field(cfg: dict[str, Any]) -> None:
    cfg["bench"]["min_rounds"] = "many"
    with pytest.raises(config.ParamsError, match=r"bench\.min_rounds.*'many'"):
        config.validate(cfg)


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
    with pytest.raises(config.ParamsError) as e:
        config.validate(cfg)
    assert (needle in str(e.value) and "expected" in str(e.value)) or "choose" in str(e.value)


def test_load_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(config.ParamsError, match="not found"):
        config.load(tmp_path / "params.yaml")


# --- technique names --------------------------------------------------------------------------


def _technique_files() -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / "technique").glob("*.yaml"))


@pytest.mark.parametrize(
    ("override", "wrong", "closest"),
    [
        ("technique=[int8_statc]", "int8_statc", "int8_static"),
        ("technique=[fp16,prune_chanels]", "prune_chanels", "prune_channels"),
        ("technique=int8_dynamik", "int8_dynamik", "int8_dynamic"),
    ],
)
def test_misspelt_technique_is_refused_before_hydra_composes(
    override: str, wrong: str, closest: str
) -> None:
    with pytest.raises(config.ParamsError) as e:
        config.compose([override], conf=ROOT / "conf")

    msg = str(e.value)
    assert f"technique = {wrong!r} is unknown" in msg
    assert f"conf/technique/{wrong}.yaml" in msg
    assert f"did you mean {closest!r}?" in msg
    assert ", ".join(_technique_files()) in msg


def test_unrelated_technique_name_gets_no_suggestion() -> None:
    with pytest.raises(config.ParamsError) as e:
        config.compose(["technique=[zzzz]"], conf=ROOT / "conf")

    assert "did you mean" not in str(e.value)
    assert ", ".join(_technique_files()) in str(e.value)


def test_misspelt_technique_in_params_suggests_the_closest(cfg: dict[str, Any]) -> None:
    cfg["technique"]["int8_statc"] = cfg["technique"].pop("int8_static")

    with pytest.raises(config.ParamsError) as e:
        config.validate(cfg)

    msg = str(e.value)
    assert "'int8_statc'" in msg and "did you mean 'int8_static'?" in msg
    assert ", ".join(sorted(TECHNIQUES)) in msg


@pytest.mark.parametrize(
    ("override", "said"),
    [
        ("technique=[int8_dynamic,int8_statc]", r"'int8_statc'.*did you mean 'int8_static'"),
        ("technique=[]", r"no technique selected.*'int8_dynamic'.*dvc exp run -S 'technique=\["),
    ],
)
def test_compose_refuses_a_bad_technique_list_and_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, override: str, said: str
) -> None:
    monkeypatch.chdir(ROOT)
    out = tmp_path / "params.yaml"
    out.write_text("kept: true\n")

    with pytest.raises(config.ParamsError, match=said):
        compose_main(["--out", str(out), override])

    assert out.read_text() == "kept: true\n"
    assert [p.name for p in tmp_path.iterdir()] == ["params.yaml"]


def test_compose_refuses_invalid_params_and_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    out = tmp_path / "params.yaml"
    out.write_text("kept: true\n")

    with pytest.raises(
        config.ParamsError, match=r"technique\.int8_static\.calibration_size = 9999"
    ):
        compose_main(["--out", str(out), "technique.int8_static.calibration_size=9999"])

    assert out.read_text() == "kept: true\n"
    assert [p.name for p in tmp_path.iterdir()] == ["params.yaml"]


def test_compose_reports_hydra_errors_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)

    with pytest.raises(config.ParamsError) as e:
        compose_main(["--out", str(tmp_path / "params.yaml"), "target=gpu"])

    msg = str(e.value)
    assert "target/gpu" in msg and "cpu" in msg and "edge" in msg and "\n" not in msg
    assert list(tmp_path.iterdir()) == []


def test_compose_writes_the_validated_composition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    out = tmp_path / "params.yaml"

    compose_main(["--out", str(out), "model=digits_cnn", "technique=[fuse]"])

    written = yaml.safe_load(out.read_text())
    assert written["model"]["name"] == "digits_cnn" and list(written["technique"]) == ["fuse"]
    assert list(config.validate(written).technique) == ["fuse"]
    assert [p.name for p in tmp_path.iterdir()] == ["params.yaml"]


# --- calibration_size -------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["digits_cnn", "fashion_cnn", "minilm_sentiment"])
def test_calibration_size_must_fit_the_calibration_split(cfg: dict[str, Any], model: str) -> None:
    cfg["model"] = yaml.safe_load((ROOT / "conf" / "model" / f"{model}.yaml").read_text())
    most = cfg["model"]["calibration_size"]
    cfg["technique"] = {"int8_static": {**cfg["technique"]["int8_static"]}}
    cfg["technique"]["int8_static"]["calibration_size"] = most
    assert config.validate(cfg).technique["int8_static"].calibration_size == most

    for bad in (most + 1, 10 * most, 0, -3):
        cfg["technique"]["int8_static"]["calibration_size"] = bad
        with pytest.raises(config.ParamsError) as e:
            config.validate(cfg)
        msg = str(e.value)
        assert msg.startswith(f"technique.int8_static.calibration_size = {bad} ")
        assert f">= 1 and <= {most}" in msg and f"model.calibration_size = {most}" in msg
        assert f"-S technique.int8_static.calibration_size={most}" in msg


def test_raising_the_models_calibration_split_admits_a_larger_size(
    cfg: dict[str, Any],
) -> None:
    cfg["model"] = yaml.safe_load((ROOT / "conf" / "model" / "digits_cnn.yaml").read_text())
    cfg["technique"] = {"int8_static": {"calibration_size": 300}}
    with pytest.raises(config.ParamsError, match=r"calibration_size = 300 .*<= 128"):
        config.validate(cfg)

    cfg["model"]["calibration_size"] = 300

    assert config.validate(cfg).technique["int8_static"].calibration_size == 300
