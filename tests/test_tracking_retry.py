"""`python -m stages.tracking` after a failed log: once logged, the tracking record and the
dashboard's MLflow line say so (fabricated evidence, a throwaway sqlite store in tmp_path)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import tracking_summary

from stages import tracking
from stages.storage import write_json

FAILED = (
    "MLflow: **logging failed** for `http://127.0.0.1:9`: connection refused. The evidence files "
    "are complete; once the server is reachable, rerun `python -m stages.tracking` "
    "(or `dvc repro -f -s report`)."
)
DASHBOARD = f"# Dashboard\n\n| candidate | verdict |\n|---|---|\n| fp16 | reject |\n\n{FAILED}\n"


def _evidence(folder: Path) -> SimpleNamespace:
    """The report stage's files after a failed log, and the paths params would give."""
    paths = SimpleNamespace(
        **{
            k: str(folder / v)
            for k, v in {
                "summary": "summary.json",
                "tracking": "tracking.json",
                "dashboard": "dashboard.md",
                "tradeoff": "tradeoff.png",
                "review": "review",
                "benchmark": "benchmark",
                "validation": "validation",
                "failures": "failures",
                "candidates": "candidates",
            }.items()
        }
    )
    summary = tracking_summary(
        {"fp16": {"verdict": "reject", "options": {}, "metrics": {"speedup_p50_b1": 0.9}}}
    )
    write_json(Path(paths.summary), summary)
    write_json(Path(paths.tracking), {"status": "failed", "uri": "http://127.0.0.1:9"})
    Path(paths.dashboard).write_text(DASHBOARD)
    (folder / "review").mkdir()
    (folder / "review" / "fp16.md").write_text("# fp16\n")
    return paths


def test_a_successful_retry_rewrites_the_record_and_the_dashboard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = _evidence(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setattr("stages.params.load", lambda: SimpleNamespace(paths=paths))

    tracking.main()

    record = json.loads(Path(paths.tracking).read_text())
    assert record["status"] == "logged" and record["uri"] == "sqlite:///mlflow.db"
    assert record["runs"] == {"fp16": "fp16 · REJECT · 0.90x"}
    text = Path(paths.dashboard).read_text()
    logged = (
        f"MLflow: logged to `sqlite:///mlflow.db`, parent run `{record['parent_run']}` "
        "(`make ui` to browse)"
    )
    assert text == DASHBOARD.replace(FAILED, logged)  # only the MLflow line changed
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(record["experiment"])
    [parent] = client.search_runs([experiment.experiment_id], record["parent_run"])
    assert [a.path for a in client.list_artifacts(parent.info.run_id) if a.path == "dashboard.md"]
    assert parent.data.tags["mlflow.note.content"] == text  # the dashboard as it now reads

    tracking.main()  # a rerun of the same evidence logs nothing new

    assert len(client.search_runs([experiment.experiment_id])) == 2  # the parent and fp16
    assert json.loads(Path(paths.tracking).read_text()) == record


def test_record_retry_appends_a_missing_line_and_skips_a_missing_dashboard(
    tmp_path: Path,
) -> None:
    result = {"status": "logged", "uri": "sqlite:///x.db", "parent_run": "p1", "runs": {"a": "r1"}}
    dashboard = tmp_path / "dashboard.md"
    dashboard.write_text("# Dashboard\n\nno line here\n")

    tracking.record_retry(result, tmp_path / "tracking.json", dashboard)

    assert json.loads((tmp_path / "tracking.json").read_text()) == result
    assert dashboard.read_text() == (
        "# Dashboard\n\nno line here\n\n"
        "MLflow: logged to `sqlite:///x.db`, parent run `p1` (`make ui` to browse)\n"
    )
    tracking.record_retry(result, tmp_path / "t2.json", tmp_path / "absent.md")
    assert not (tmp_path / "absent.md").exists()
