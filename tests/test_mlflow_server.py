"""The team MLflow server for real: PostgreSQL and `mlflow server` started by stages.server on free
loopback ports, evidence logged through stages.tracking, and the parent run, every child run and
a review note read back over MLflow's REST API."""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import TRACKING_NOTE as NOTE
from conftest import tracking_evidence as _evidence

from stages import server, tracking


@dataclass(frozen=True)
class Team:
    uri: str
    layout: server.Layout
    pg_port: int

    def logs(self) -> str:
        """The tail of both servers' logs, for an assertion message."""
        return "\n".join(
            f"--- {self.layout.log(n)}\n{server.tail(self.layout.log(n))}"
            for n in ("mlflow", "postgres")
        )


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _server_dir(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """tmp_path, unless this is root: PostgreSQL then runs as another account, which cannot
    enter pytest's 0700 base folder, so the cluster goes to a folder under the system temp
    folder that it can reach, removed afterwards."""
    if server.pg_user() is None:
        return tmp_path
    reachable = Path(tempfile.mkdtemp(prefix="mlflow-server-test-"))
    reachable.chmod(0o711)
    request.addfinalizer(lambda: shutil.rmtree(reachable, ignore_errors=True))
    return reachable


def _needs_postgres() -> None:
    try:
        server.pg_bindir()
    except server.ServerError as e:
        pytest.skip(f"PostgreSQL's server binaries are not installed: {e}")


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Team:
    _needs_postgres()
    root = _server_dir(tmp_path_factory.mktemp("team"), request) / "server"
    pg_port, port = _free_ports(2)
    request.addfinalizer(lambda: server.stop(root))
    uri = server.start(root, pg_port, port, workers=1)  # raises with the log tail if not ready
    return Team(uri, server.Layout.at(root), pg_port)


def _http(team: Team, path: str, query: dict[str, str] | None = None, body: Any = None) -> bytes:
    url = f"{team.uri}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return bytes(r.read())
    except (urllib.error.URLError, OSError) as e:
        detail = e.read().decode(errors="replace") if isinstance(e, urllib.error.HTTPError) else ""
        pytest.fail(f"{req.get_method()} {url}: {e} {detail}\n{team.logs()}")


def _as_dict(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["key"]: e["value"] for e in entries}


def test_evidence_logged_to_the_team_server_reads_back_over_rest(
    team: Team, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", team.uri)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    monkeypatch.chdir(tmp_path)
    summary, artifacts, extra = _evidence(tmp_path / "evidence")

    logged = tracking.log_run(summary, artifacts, extra)
    again = tracking.log_run(summary, artifacts, extra)

    assert again.reused and again.parent_run == logged.parent_run, team.logs()
    assert logged.record["uri"] == team.uri
    experiment = json.loads(
        _http(
            team, "/api/2.0/mlflow/experiments/get-by-name", {"experiment_name": "workbench-tiny"}
        )
    )["experiment"]
    assert _as_dict(experiment["tags"])["mlflow.experimentKind"] == "custom_model_development"
    assert experiment["artifact_location"].startswith("mlflow-artifacts:")
    search = {"experiment_ids": [experiment["experiment_id"]], "max_results": 100}
    runs = json.loads(_http(team, "/api/2.0/mlflow/runs/search", body=search))["runs"]
    parents = [r for r in runs if "mlflow.parentRunId" not in _as_dict(r["data"]["tags"])]
    assert [p["info"]["run_id"] for p in parents] == [logged.parent_run], team.logs()
    [parent] = parents
    assert parent["info"]["status"] == "FINISHED"
    assert _as_dict(parent["data"]["tags"])["evidence"] == logged.record["evidence"]
    assert _as_dict(parent["data"]["params"]) == {
        "bench.batch_sizes": "[1, 8]",
        "budget.max_accuracy_drop_points": "1.0",
    }
    children = {_as_dict(r["data"]["tags"])["technique"]: r for r in runs if r is not parent}
    assert {n: r["info"]["run_name"] for n, r in children.items()} == logged.record["runs"]
    for name, child in children.items():
        tags = _as_dict(child["data"]["tags"])
        assert tags["mlflow.parentRunId"] == logged.parent_run
        assert tags["verdict"] == summary["candidates"][name]["verdict"]
        assert _as_dict(child["data"].get("metrics", [])) == summary["candidates"][name]["metrics"]
        assert _as_dict(child["data"]["params"])["technique"] == name
    ship = children["int8_dynamic"]
    assert _as_dict(ship["data"]["tags"])["mlflow.note.content"] == NOTE
    note = _http(
        team, "/get-artifact", {"path": "int8_dynamic.md", "run_uuid": ship["info"]["run_id"]}
    )
    assert note.decode() == NOTE, team.logs()
    assert [p.read_text() for p in team.layout.artifacts.rglob("int8_dynamic.md")] == [NOTE]
    assert _runs_in_postgres(team, experiment["experiment_id"]) == len(runs) == 3


def _runs_in_postgres(team: Team, experiment_id: str) -> int:
    """Runs of the experiment as MLflow's tables in PostgreSQL hold them."""
    import psycopg2

    conn = psycopg2.connect(
        host="127.0.0.1",
        port=team.pg_port,
        user="mlflow",
        dbname="mlflow",
        password=team.layout.password.read_text().strip(),
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM runs WHERE experiment_id = %s", (int(experiment_id),))
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def test_status_says_both_run(team: Team) -> None:
    running, text = server.status(team.layout.root)

    assert running, text
    assert f"127.0.0.1:{team.pg_port}" in text and team.uri in text


def test_a_half_initialised_cluster_is_named_with_the_fix(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    _needs_postgres()
    root = _server_dir(tmp_path, request) / "half"
    (root / "pg").mkdir(parents=True)
    (root / "pg" / "postgresql.conf").write_text("")
    pg_port, port = _free_ports(2)

    with pytest.raises(server.ServerError, match=r"half-initialised.*remove that folder"):
        server.start(root, pg_port, port)


def test_a_busy_postgres_port_is_named_with_the_flag(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    _needs_postgres()
    root = _server_dir(tmp_path, request) / "busy"
    request.addfinalizer(lambda: server.stop(root))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(server.ServerError, match=rf"port {port} .* in use.*--pg-port"):
            server.start(root, port, _free_ports(1)[0])
    assert (root / "pg" / "PG_VERSION").is_file()  # the cluster was made; only the port failed
