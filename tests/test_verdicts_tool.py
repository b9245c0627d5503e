"""stages.verdicts: the scratch copy it times in, and its table of verdicts per run."""

from __future__ import annotations

from pathlib import Path

import pytest

from stages import verdicts
from stages.params import ParamsError


def _run(verdict: str, estimate: float) -> dict[str, object]:
    return {
        "verdict": verdict,
        "p50": {"estimate": estimate, "low": estimate - 0.05, "high": estimate + 0.05},
    }


def test_table_marks_the_candidates_whose_verdict_flipped() -> None:
    runs = [
        {"int8_dynamic": _run("SHIP", 1.31), "fp16": _run("REJECT", 0.90)},
        {"int8_dynamic": _run("HOLD", 1.30), "fp16": _run("REJECT", 0.93)},
        {"int8_dynamic": _run("SHIP", 1.36), "fp16": {"verdict": "REJECT", "p50": None}},
    ]

    lines, flipped = verdicts.table(runs)

    assert flipped == ["int8_dynamic"]
    assert lines[0] == "| candidate | run 1 | run 2 | run 3 | same |"
    assert "| int8_dynamic | SHIP 1.310 [1.260, 1.360] | HOLD 1.300" in lines[2]
    assert lines[2].endswith("| **no** |")
    assert lines[3] == (
        "| fp16 | REJECT 0.900 [0.850, 0.950] | REJECT 0.930 [0.880, 0.980] | REJECT | yes |"
    )


def test_scratch_copy_links_models_and_data_and_copies_reports(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    for rel in ("models/baseline/model.onnx", "data/prepared/meta.json", "reports/a.json"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    (root / ".git").mkdir()
    (root / "params.yaml").write_text("seed: 0\n")

    copy = verdicts.scratch_copy(root, tmp_path / "copy")

    assert (copy / "models").is_symlink() and (copy / "data").is_symlink()
    assert (copy / "models/baseline/model.onnx").read_text() == "models/baseline/model.onnx"
    assert not (copy / "reports").is_symlink()  # a run rewrites its reports in the copy only
    (copy / "reports/a.json").write_text("changed")
    assert (root / "reports/a.json").read_text() == "reports/a.json"
    assert not (copy / ".git").exists() and (copy / "params.yaml").is_file()


def test_fewer_than_two_runs_are_refused() -> None:
    with pytest.raises(ParamsError, match=r"--runs = 1 is not allowed; expected >= 2"):
        verdicts.main(["--runs", "1"])
