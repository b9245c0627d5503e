"""Named presets in conf/experiment/: each composes, validates and selects what it says, and the
default composition (no preset) stays the committed params.yaml byte for byte."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from stages import params as config
from stages.compose import compose_text

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))

# what each preset promises: its model, and the bench values it sets
EXPECTED: dict[str, dict[str, Any]] = {
    "digits_quick": {
        "model": "digits_cnn",
        "bench": {"max_seconds": 3.0, "report_seconds": 2.0, "min_rounds": 6},
    },
    "minilm_quick": {
        "model": "minilm_sentiment",
        "bench": {"max_seconds": 8.0, "report_seconds": 2.0, "min_rounds": 6},
    },
}


def compose(*overrides: str) -> dict[str, Any]:
    return config.compose(list(overrides), conf=CONF)


def test_the_presets_are_the_expected_ones() -> None:
    assert sorted(EXPECTED) == PRESETS, "describe each conf/experiment/*.yaml in EXPECTED"


@pytest.mark.parametrize("name", PRESETS)
def test_preset_is_global_and_says_what_it_is_for(name: str) -> None:
    lines = (CONF / "experiment" / f"{name}.yaml").read_text().splitlines()
    assert lines[0] == "# @package _global_"
    assert lines[1].startswith("# ") and len(lines[1]) > 10


@pytest.mark.parametrize("name", PRESETS)
def test_preset_composes_validates_and_selects_what_it_says(name: str) -> None:
    raw = compose(f"+experiment={name}")
    params = config.validate(raw)
    expected = EXPECTED[name]
    assert params.model_name == expected["model"]
    for key, value in expected["bench"].items():
        assert getattr(params.bench, key) == value, f"bench.{key}"
    default = compose()
    assert list(params.technique) == list(default["technique"])  # every default technique
    assert len(params.bench.server_load_factors) < len(default["bench"]["server_load_factors"])
    assert len(params.bench.server_sweep_factors) < len(default["bench"]["server_sweep_factors"])


@pytest.mark.parametrize("name", PRESETS)
def test_preset_changes_only_the_bench_beside_its_model(name: str) -> None:
    raw = compose(f"+experiment={name}")
    plain = compose(f"model={EXPECTED[name]['model']}")
    assert "experiment" not in raw
    changed = {k for k in raw["bench"] if raw["bench"][k] != plain["bench"][k]}
    assert set(EXPECTED[name]["bench"]) <= changed
    assert {k: v for k, v in raw.items() if k != "bench"} == {
        k: v for k, v in plain.items() if k != "bench"
    }


@pytest.mark.parametrize("name", PRESETS)
def test_preset_is_what_dvc_writes(name: str) -> None:
    from dvc.utils.cli_parse import to_path_overrides

    # `dvc exp run -S +experiment=...` goes to params.yaml, which Hydra recomposes from conf/
    assert to_path_overrides([f"+experiment={name}"]) == {"params.yaml": [f"+experiment={name}"]}
    text = compose_text([f"+experiment={name}"], conf=CONF)
    assert yaml.safe_load(text) == compose(f"+experiment={name}")


def test_overrides_after_a_preset_still_apply() -> None:
    raw = compose("+experiment=digits_quick", "bench.max_seconds=1.5", "technique=[fuse]")
    params = config.validate(raw)
    assert params.model_name == "digits_cnn" and list(params.technique) == ["fuse"]
    assert params.bench.max_seconds == 1.5 and params.bench.min_rounds == 6


def test_default_composition_is_the_committed_params_byte_for_byte() -> None:
    assert compose_text([], conf=CONF) == (ROOT / "params.yaml").read_text(encoding="utf-8")
    assert "experiment" not in compose()
