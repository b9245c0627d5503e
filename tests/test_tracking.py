"""MLflow logging against a throwaway sqlite store: one parent run per evidence, runs that read
on their own in the UI, and a tracking record with no path or run id of this machine."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from conftest import TRACKING_NOTE as NOTE
from conftest import tracking_evidence as _evidence

from stages import tracking
from stages.evidence_key import evidence_key


@pytest.fixture()
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository root in tmp_path, the default store in it, run from another folder (as a
    DVC temp workspace is)."""
    root, workspace = tmp_path / "repo", tmp_path / "workspace"
    root.mkdir()
    workspace.mkdir()
    monkeypatch.setenv("DVC_ROOT", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    monkeypatch.chdir(workspace)
    return root


def _runs(root: Path) -> list[mlflow.entities.Run]:
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    return client.search_runs([client.get_experiment_by_name("workbench-tiny").experiment_id])


def _parents(root: Path) -> list[mlflow.entities.Run]:
    return [r for r in _runs(root) if "mlflow.parentRunId" not in r.data.tags]


def test_the_same_evidence_logged_twice_makes_one_parent_run(repo: Path) -> None:
    evidence = _evidence(repo)

    first = tracking.log_run(*evidence)
    again = tracking.log_run(*evidence)

    assert not first.reused and again.reused and again.parent_run == first.parent_run
    assert again.record == first.record
    assert [p.info.run_id for p in _parents(repo)] == [first.parent_run]
    assert len(_runs(repo)) == 3  # the parent and one child per candidate, logged once


def test_changed_evidence_makes_a_second_parent_run(repo: Path) -> None:
    summary, artifacts, extra = _evidence(repo)
    first = tracking.log_run(summary, artifacts, extra).record

    (repo / "failures" / "int8_dynamic" / "index.csv").write_text("row,label\n3,b\n4,c\n")
    second = tracking.log_run(summary, artifacts, extra).record
    summary["budget"]["max_accuracy_drop_points"] = 0.5
    third = tracking.log_run(summary, artifacts, extra).record

    assert len({first["evidence"], second["evidence"], third["evidence"]}) == 3
    by_key = {p.data.tags["evidence"] for p in _parents(repo)}
    assert by_key == {first["evidence"], second["evidence"], third["evidence"]}


def test_an_unfinished_run_is_not_reused_and_each_dvc_experiment_gets_its_own(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    evidence = _evidence(repo)
    key = evidence_key(*evidence)
    mlflow.set_tracking_uri(tracking.tracking_uri())
    experiment_id = tracking.ensure_experiment("workbench-tiny", tracking.tracking_uri())
    killed = mlflow.MlflowClient().create_run(experiment_id, tags={"evidence": key})

    logged = tracking.log_run(*evidence)
    monkeypatch.setenv("DVC_EXP_NAME", "exp-a")
    in_a = tracking.log_run(*evidence)
    in_a_again = tracking.log_run(*evidence)

    assert not logged.reused and logged.parent_run != killed.info.run_id
    assert not in_a.reused and in_a.parent_run != logged.parent_run
    assert in_a_again.reused and in_a_again.parent_run == in_a.parent_run
    assert len(_parents(repo)) == 3


def test_the_experiment_is_model_development_with_artifacts_at_the_root(repo: Path) -> None:
    tracking.log_run(*_evidence(repo))

    experiment = mlflow.MlflowClient(tracking.tracking_uri()).get_experiment_by_name(
        "workbench-tiny"
    )
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert experiment.artifact_location == (repo / "mlruns").as_uri()
    assert list((repo / "mlruns").rglob("tradeoff.png"))
    assert not (Path.cwd() / "mlruns").exists()


def test_runs_read_on_their_own(repo: Path) -> None:
    evidence = _evidence(repo)
    logged = tracking.log_run(*evidence)
    dashboard = repo / "dashboard.md"
    dashboard.write_text("# Dashboard\n\nMLflow: logged\n")

    tracking.attach_dashboard(logged, dashboard)

    children = {
        r.data.tags["technique"]: r for r in _runs(repo) if "mlflow.parentRunId" in r.data.tags
    }
    assert {n: r.info.run_name for n, r in children.items()} == {
        "int8_dynamic": "int8_dynamic · SHIP · 1.41x",
        "fp16": "fp16 · REJECT",
    }
    assert logged.record["runs"] == {n: r.info.run_name for n, r in children.items()}
    assert children["int8_dynamic"].data.tags["mlflow.note.content"] == NOTE
    assert children["int8_dynamic"].data.metrics == {
        "speedup_p50_b1": 1.4142,
        "accuracy_drop_points": 0.2,
    }
    [parent] = _parents(repo)
    assert parent.data.tags["mlflow.note.content"] == dashboard.read_text()
    assert parent.data.tags["evidence"] == logged.record["evidence"]


def test_the_record_holds_no_local_path_and_no_run_id(repo: Path) -> None:
    logged = tracking.log_run(*_evidence(repo))
    dashboard = repo / "dashboard.md"
    dashboard.write_text("# Dashboard\n\nMLflow: failed\n")

    tracking.record_retry(logged.record, repo / "tracking.json", dashboard)

    written = (repo / "tracking.json").read_text() + dashboard.read_text()
    ids = [r.info.run_id for r in _runs(repo)]
    assert str(repo.parent) not in written and not any(i in written for i in ids)
    record = json.loads((repo / "tracking.json").read_text())
    assert record["uri"] == "sqlite:///mlflow.db"
    [parent] = mlflow.MlflowClient(tracking.tracking_uri()).search_runs(
        [mlflow.get_experiment_by_name("workbench-tiny").experiment_id],
        filter_string=record["parent_run"],
    )
    assert parent.info.run_id == logged.parent_run
    assert f"`{record['parent_run']}`" in dashboard.read_text()


@pytest.mark.parametrize(
    ("uri", "public"),
    [
        ("sqlite:///{root}/mlflow.db", "sqlite:///mlflow.db"),
        ("sqlite:///{root}/stores/team.db", "sqlite:///stores/team.db"),
        ("sqlite:///{root}/../elsewhere.db", "sqlite:///<local>/elsewhere.db"),
        ("{root}/mlruns", "mlruns"),
        ("file://{root}/mlruns", "mlruns"),
        (
            "https://ana:s3cret@mlflow.example.org:5000/ml?token=t",
            "https://mlflow.example.org:5000/ml",
        ),
        ("http://mlflow.team:5000", "http://mlflow.team:5000"),
        ("databricks", "databricks"),
    ],
)
def test_public_uri(tmp_path: Path, uri: str, public: str) -> None:
    assert tracking.public_uri(uri.format(root=tmp_path), tmp_path) == public


def test_the_key_depends_on_content_not_on_where_the_files_are(tmp_path: Path) -> None:
    summary, artifacts, extra = _evidence(tmp_path / "a")
    in_memory = {**summary, "bench": {"batch_sizes": np.array([1, 8]), "n": np.int64(3)}}
    read_back = json.loads(json.dumps({**summary, "bench": {"batch_sizes": [1, 8], "n": 3}}))
    elsewhere = _evidence(tmp_path / "b")

    key = evidence_key(in_memory, artifacts, extra)

    assert key == evidence_key(read_back, artifacts, extra)
    assert key == evidence_key(read_back, elsewhere[1], elsewhere[2])
    (tmp_path / "b" / "tradeoff.png").write_bytes(b"another png")
    assert key != evidence_key(read_back, elsewhere[1], elsewhere[2])
