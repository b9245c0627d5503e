"""A queued DVC experiment, the first MLflow run of its repository, keeps its artifacts.

DVC runs a queued experiment in a temporary workspace under `.dvc/tmp/exps/` and deletes it
afterwards: the MLflow experiment must keep its artifacts at the repository root.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import copy_worktree
from test_e2e import dvc, overrides, run

pytestmark = pytest.mark.slow

NAME = "queued-int8"
TECHNIQUE = "int8_dynamic"
NOTE = f"reports/review/{TECHNIQUE}.md"
QUEUED = ["+experiment=digits_quick", f"technique=[{TECHNIQUE}]", "model.epochs=3"]


@pytest.fixture()
def repo(tmp_path: Path) -> Iterator[Path]:
    """The committed files in a fresh git repository: no mlflow.db, no data or models."""
    dest = copy_worktree(tmp_path / "workbench")
    assert not (dest / "mlflow.db").exists() and not (dest / "mlruns").exists()
    run(dest, "git", "init", "-q")
    run(dest, "git", "add", "-A")
    run(dest, "git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "copy")
    yield dest
    dvc(dest, "queue", "stop", check=False)


def test_queued_experiment_keeps_its_mlflow_artifacts(repo: Path, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    dvc(repo, "exp", "run", "--queue", "-n", NAME, *overrides(*QUEUED))
    ran = dvc(repo, "exp", "run", "--run-all", "-j", "1", check=False)
    status = dvc(repo, "queue", "status", check=False).stdout
    logs = dvc(repo, "queue", "logs", NAME, check=False)
    said = (
        f"dvc exp run --run-all ({ran.returncode}):\n{ran.stdout[-3000:]}\n{ran.stderr[-3000:]}\n"
        f"dvc queue status:\n{status}\ndvc queue logs {NAME}:\n"
        f"{logs.stdout[-6000:]}\n{logs.stderr[-2000:]}"
    )
    assert NAME in status and "Success" in status, f"the queued experiment failed\n{said}"

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("workbench-digits_cnn")
    assert experiment is not None, f"no MLflow experiment workbench-digits_cnn\n{said}"
    location = experiment.artifact_location
    assert location == (repo / "mlruns").as_uri(), (
        f"artifact location {location}, expected {(repo / 'mlruns').as_uri()} "
        f"(not under .dvc/tmp, which DVC deletes)\n{said}"
    )

    children = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.technique = '{TECHNIQUE}'"
    )
    assert len(children) == 1, f"{len(children)} child runs for {TECHNIQUE}\n{said}"
    child = children[0]
    assert child.data.tags.get("dvc_experiment") == NAME, child.data.tags
    dst = tmp_path / "downloaded"
    dst.mkdir()
    try:
        got = Path(client.download_artifacts(child.info.run_id, f"{TECHNIQUE}.md", str(dst)))
    except Exception as err:
        listing = sorted((repo / ".dvc" / "tmp").rglob("mlruns"))
        raise AssertionError(
            f"review note of run {child.info.run_id} not downloadable from {location}: {err!r}\n"
            f"mlruns folders left under .dvc/tmp: {listing}\n{said}"
        ) from err

    dvc(repo, "exp", "apply", NAME)
    note = (repo / NOTE).read_text()
    assert note.startswith(f"# Review: {TECHNIQUE}"), note[:200]
    assert got.read_text() == note, (
        f"the downloaded note differs from the experiment's {NOTE}:\n{got.read_text()[:500]}"
    )
    assert child.data.tags.get("mlflow.note.content") == note
