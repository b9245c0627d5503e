"""Promotion: only a current SHIP joins the control stack, and conf/ records it with its options."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stages import promote
from stages.params import compose, validate

ROOT = Path(__file__).resolve().parents[1]


def _summary(verdicts: dict[str, str], control: list[str] | None = None) -> dict[str, object]:
    out: dict[str, object] = {"candidates": {k: {"verdict": v} for k, v in verdicts.items()}}
    if control is not None:
        out["control"] = control
    return out


@pytest.mark.parametrize("verdict", ["HOLD", "REJECT", "NOT APPLICABLE", "FAILED"])
def test_promotion_refuses_anything_but_ship(verdict: str) -> None:
    why = promote.refusal(_summary({"distill": verdict}), [], "distill")

    assert why == f"distill reads {verdict}, not SHIP: only a shipped candidate joins the control"


def test_promotion_refuses_evidence_judged_against_another_control() -> None:
    stale = _summary({"int8_dynamic": "SHIP"})  # judged against the baseline

    why = promote.refusal(stale, ["distill"], "int8_dynamic")

    assert why is not None and "judged against the control [] (the baseline)" in why
    assert "params.yaml now names ['distill']: run `dvc repro` first" in why


def test_promotion_refuses_a_technique_without_a_verdict_or_already_in_the_stack() -> None:
    assert "has no verdict" in (promote.refusal(_summary({"fp16": "SHIP"}), [], "distill") or "")
    ship = _summary({"distill": "SHIP"}, ["distill"])
    assert "already a step" in (promote.refusal(ship, ["distill"], "distill") or "")


def test_a_current_ship_is_promoted() -> None:
    assert promote.refusal(_summary({"distill": "SHIP"}), [], "distill") is None
    on_top = _summary({"int8_dynamic": "SHIP"}, ["distill"])
    assert promote.refusal(on_top, ["distill"], "int8_dynamic") is None


def test_appended_config_composes_the_stack_with_its_pinned_options(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    for f in (ROOT / "conf").rglob("*.yaml"):
        (conf / f.relative_to(ROOT / "conf")).parent.mkdir(parents=True, exist_ok=True)
        (conf / f.relative_to(ROOT / "conf")).write_text(f.read_text())
    text = (conf / "config.yaml").read_text()

    once = promote.appended(text, "distill", {"epochs": 2, "student": {"layers": 3}})
    twice = promote.appended(once, "int8_dynamic", {"per_channel": False})
    (conf / "config.yaml").write_text(twice)
    p = validate(compose(conf=conf))

    assert list(p.control) == ["distill", "int8_dynamic"]
    assert p.control["distill"].epochs == 2 and p.control["int8_dynamic"].per_channel is False
    assert "- technique@control: [distill, int8_dynamic]" in twice
    assert yaml.safe_load(twice)["control"]["distill"]["student"] == {"layers": 3}
