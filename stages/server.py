"""A team MLflow server on PostgreSQL, under one folder and bound to 127.0.0.1 unless asked:
`python -m stages.server start|stop|status` (`make server`, `make server-stop`).

In `--dir`: `pg/` the PostgreSQL cluster (initialised on first start, password authentication
only), `pg-password` its password, `artifacts/` the artifacts the server proxies, `postgres.log`
and `mlflow.log`, and `server.json` (what runs where)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

from stages.postgres import (  # the names the team server test reaches through this module
    DB,
    USER,
    Layout,
    ServerError,
    busy,
    ensure_database,
    init_cluster,
    password_of,
    pg_bindir,
    pg_user,
    port_free,
    run_pg,
    running_port,
    start_postgres,
    tail,
)

READY_S = 120.0  # the first start creates MLflow's tables in an empty database


def _read_state(layout: Layout) -> dict[str, float | int | str] | None:
    try:
        state: dict[str, float | int | str] = json.loads(layout.state.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return state


def mlflow_pid(layout: Layout) -> int | None:
    """The MLflow server's pid if the process started for this folder still runs (a reused pid
    has another start time)."""
    state = _read_state(layout)
    if state is None:
        return None
    try:
        proc = psutil.Process(int(state["pid"]))
        alive = abs(proc.create_time() - float(state["created"])) < 0.5 and proc.is_running()
    except (psutil.Error, KeyError, ValueError):
        return None
    return proc.pid if alive and proc.status() != psutil.STATUS_ZOMBIE else None


def client_uri(host: str, port: int) -> str:
    shown = socket.gethostname() if host in ("0.0.0.0", "::") else host
    return f"http://{shown}:{port}"


def _ready(host: str, port: int) -> bool:
    probe = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    try:
        with urllib.request.urlopen(f"http://{probe}:{port}/health", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def start_mlflow(
    layout: Layout, host: str, port: int, pg_port: int, workers: int | None = None
) -> None:
    if mlflow_pid(layout) is not None:
        return
    if not port_free(host, port):
        raise busy("MLflow", host, port, "--port")
    log = layout.log("mlflow")
    env = {**os.environ, "PGPASSWORD": password_of(layout), "MLFLOW_DISABLE_TELEMETRY": "true"}
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"postgresql+psycopg2://{USER}@127.0.0.1:{pg_port}/{DB}",
        "--artifacts-destination", str(layout.artifacts),
        "--host", host, "--port", str(port),
        *(["--workers", str(workers)] if workers else []),
    ]  # fmt: skip
    with log.open("a") as out:  # password by environment: a URI shows in `ps`
        proc = subprocess.Popen(
            cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends its workers too
        )  # fmt: skip
    created = psutil.Process(proc.pid).create_time()
    state = {"pid": proc.pid, "created": created, "host": host, "port": port, "pg_port": pg_port}
    layout.state.write_text(json.dumps(state) + "\n")
    deadline = time.monotonic() + READY_S
    while not _ready(host, port):
        if proc.poll() is not None or time.monotonic() > deadline:
            said = "exited" if proc.poll() is not None else f"not ready after {READY_S:.0f} s"
            _end_group(proc.pid)
            raise ServerError(
                f"the MLflow server {said} (PostgreSQL still runs: `make server-stop` stops it); "
                f"{log}:\n{tail(log)}"
            )
        time.sleep(0.5)


def start(
    root: Path, pg_port: int, port: int, host: str = "127.0.0.1", workers: int | None = None
) -> str:
    """Start PostgreSQL and the MLflow server (each unless running); returns the tracking URI."""
    layout = Layout.at(root)
    bindir = pg_bindir()
    layout.root.mkdir(parents=True, exist_ok=True)
    user = pg_user()
    if user is not None and run_pg(["test", "-x", str(layout.root)], Path("/"), False).returncode:
        raise ServerError(
            f"PostgreSQL runs as {user!r} (it refuses root) and cannot reach {layout.root}: a "
            f"parent folder is closed to other users; use a --dir it can reach, or `chmod o+x` "
            f"the parents"
        )
    init_cluster(layout, bindir)
    start_postgres(layout, bindir, pg_port)
    ensure_database(layout, pg_port)
    start_mlflow(layout, host, port, pg_port, workers)
    state = _read_state(layout) or {}
    return client_uri(str(state.get("host", host)), int(state.get("port", port)))


def _end_group(pid: int, wait_s: float = 15.0) -> None:
    """SIGTERM the process group led by `pid`, SIGKILL whatever is left after `wait_s`."""
    try:
        group = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        os.killpg(pid, signal.SIGTERM)
    except (psutil.Error, ProcessLookupError):
        return
    _, alive = psutil.wait_procs(group, timeout=wait_s)
    if alive:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        psutil.wait_procs(alive, timeout=5)


def stop(root: Path) -> list[str]:
    """Stop the MLflow server, then PostgreSQL; returns what was stopped."""
    layout, stopped = Layout.at(root), []
    pid = mlflow_pid(layout)
    if pid is not None:
        _end_group(pid)
        stopped.append(f"MLflow server (pid {pid})")
    layout.state.unlink(missing_ok=True)
    if (layout.data / "PG_VERSION").is_file():
        bindir = pg_bindir()
        if running_port(layout, bindir) is not None:
            run_pg(
                [str(bindir / "pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(layout.data)],
                layout.root,
            )
            stopped.append(f"PostgreSQL ({layout.data})")
    return stopped


def status(root: Path) -> tuple[bool, str]:
    """(both running, a line per server)."""
    layout = Layout.at(root)
    state, pid = _read_state(layout), mlflow_pid(layout)
    pg = None
    if (layout.data / "PG_VERSION").is_file():
        pg = running_port(layout, pg_bindir())
    lines = [
        f"PostgreSQL: {'running on 127.0.0.1:' + str(pg) if pg else 'stopped'} ({layout.data})",
        "MLflow: "
        + (
            f"running at {client_uri(str(state['host']), int(state['port']))} (pid {pid})"
            if state and pid
            else "stopped"
        ),
    ]
    return bool(pg and pid), "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.server", description=__doc__)
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--dir", type=Path, default=Path(".mlflow-server"), help="server folder")
    parser.add_argument("--pg-port", type=int, default=5433, help="PostgreSQL's port (loopback)")
    parser.add_argument("--port", type=int, default=5001, help="the MLflow server's port")
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface MLflow listens on (0.0.0.0: every one)"
    )
    parser.add_argument(
        "--workers", type=int, help="MLflow's worker processes (default: MLflow's, 4)"
    )
    args = parser.parse_args(argv)
    try:
        if args.action == "start":
            uri = start(args.dir, args.pg_port, args.port, args.host, args.workers)
            print(f"MLflow server at {uri} (PostgreSQL on 127.0.0.1:{args.pg_port}, in {args.dir})")
            print(f"export MLFLOW_TRACKING_URI={uri}")
        elif args.action == "stop":
            stopped = stop(args.dir)
            print("stopped " + ", ".join(stopped) if stopped else "nothing was running")
        else:
            ok, text = status(args.dir)
            print(text)
            sys.exit(0 if ok else 3)
    except ServerError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
