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
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

DB = USER = "mlflow"  # the database and its one role (a superuser of this private cluster)
PG_SEARCH = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/opt/homebrew/opt/postgresql@*/bin")
READY_S = 120.0  # the first start creates MLflow's tables in an empty database


class ServerError(RuntimeError):
    """The server cannot start or stop; the message names the problem and the fix."""


@dataclass(frozen=True)
class Layout:
    """Where one server folder keeps each thing."""

    root: Path
    data: Path
    password: Path
    artifacts: Path
    state: Path

    @classmethod
    def at(cls, root: Path) -> Layout:
        r = root.resolve()
        return cls(r, r / "pg", r / "pg-password", r / "artifacts", r / "server.json")

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"


def pg_bindir() -> Path:
    """The folder holding initdb and pg_ctl: on PATH, else the newest of the usual places."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    dirs = [p for pattern in PG_SEARCH for p in Path("/").glob(pattern.lstrip("/"))]
    dirs = [d for d in dirs if (d / "initdb").is_file() and (d / "pg_ctl").is_file()]
    if not dirs:
        raise ServerError(
            f"PostgreSQL's initdb is not on PATH nor in {', '.join(PG_SEARCH)}: install the "
            "server binaries (Debian/Ubuntu: `apt-get install postgresql`; Fedora/RHEL: "
            "`dnf install postgresql-server`; macOS: `brew install postgresql@15`)"
        )
    return max(dirs, key=lambda d: [int(n) for n in re.findall(r"\d+", str(d))])


def pg_user() -> str | None:
    """The account PostgreSQL runs as: None (this one) unless this one is root, which initdb,
    pg_ctl and postgres refuse (a database server holding root could be turned against the
    whole machine); then `postgres` if that account exists, else `nobody`."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres").pw_name
    except KeyError:
        return "nobody"


def _pg(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    user = pg_user()
    ids: dict[str, Any] = {}
    if user is not None:
        ids = {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=180, **ids)
    if check and out.returncode != 0:
        raise ServerError(f"`{' '.join(cmd)}` failed ({out.returncode}): {out.stderr.strip()}")
    return out


def _give(path: Path) -> None:
    """Hand a file or folder made by root to the account PostgreSQL runs as."""
    user = pg_user()
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ignore TIME_WAIT, not listeners
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _busy(what: str, host: str, port: int, flag: str) -> ServerError:
    return ServerError(
        f"{what} port {port} on {host} is in use by another program: pick a free one with "
        f"{flag} N (`make server ARGS='{flag} N'`)"
    )


def init_cluster(layout: Layout, bindir: Path) -> None:
    """Create the cluster once; initdb writes into a temp folder renamed into place, so a killed
    initdb leaves no half-made `pg/` behind."""
    data = layout.data
    if data.exists():
        if not (data / "PG_VERSION").is_file() or not (data / "postgresql.conf").is_file():
            raise ServerError(
                f"{data} is a half-initialised PostgreSQL cluster (no PG_VERSION or "
                f"postgresql.conf): remove that folder and start again (it holds no runs yet)"
            )
        if not layout.password.is_file():
            raise ServerError(
                f"{layout.password} is missing, and the cluster {data} needs it: restore it, or "
                f"remove {data} to start a new, empty store"
            )
        major = re.search(r"\d+", _pg([str(bindir / "initdb"), "--version"], layout.root).stdout)
        have = (data / "PG_VERSION").read_text().strip()
        if major is None or major.group() != have:
            raise ServerError(
                f"{data} was made by PostgreSQL {have} but the binaries in {bindir} are another "
                f"version: put PostgreSQL {have}'s bin folder first on PATH, or `pg_upgrade`"
            )
        return
    tmp, pwfile = layout.root / ".pg.tmp", layout.root / ".pg-password.tmp"
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed initdb
    password = secrets.token_urlsafe(24)
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    tmp.mkdir(mode=0o700)
    for path in (pwfile, tmp):
        _give(path)
    try:
        _pg(
            [str(bindir / "initdb"), "-D", str(tmp), "-U", USER, f"--pwfile={pwfile}",
             "--auth=scram-sha-256", "--encoding=UTF8", "--no-locale"],
            layout.root,
        )  # fmt: skip
    finally:
        pwfile.unlink()
    with (tmp / "postgresql.conf").open("a") as f:  # TCP on loopback only, no Unix socket
        f.write("\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n")
    fd = os.open(layout.password, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    tmp.rename(data)


def _pg_port(layout: Layout, bindir: Path) -> int | None:
    """The port the cluster listens on, or None when it is not running."""
    if _pg(
        [str(bindir / "pg_ctl"), "status", "-D", str(layout.data)], layout.root, False
    ).returncode:
        return None
    return int((layout.data / "postmaster.pid").read_text().splitlines()[3])


def start_postgres(layout: Layout, bindir: Path, port: int) -> None:
    running = _pg_port(layout, bindir)
    if running == port:
        return
    if running is not None:
        raise ServerError(
            f"the PostgreSQL of {layout.root} already runs on port {running}, not {port}: "
            f"`make server-stop` first, or start with --pg-port {running}"
        )
    if not _port_free("127.0.0.1", port):
        raise _busy("PostgreSQL", "127.0.0.1", port, "--pg-port")
    log = layout.log("postgres")
    log.touch()
    _give(log)
    out = _pg(
        [str(bindir / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(layout.data),
         "-l", str(log), "-o", f"-p {port}"],
        layout.root, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise ServerError(f"PostgreSQL did not start: {out.stderr.strip()}\n{tail(log)}")


def ensure_database(layout: Layout, port: int) -> None:
    import psycopg2

    try:
        conn = psycopg2.connect(
            host="127.0.0.1", port=port, user=USER, dbname="postgres", password=_password(layout)
        )
    except psycopg2.OperationalError as e:
        raise ServerError(
            f"cannot log in to PostgreSQL on 127.0.0.1:{port} as {USER!r} with {layout.password}: "
            f"{str(e).strip()}; is another cluster on that port? (`make server-stop`, or --pg-port)"
        ) from None
    conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB,))
            if cur.fetchone() is None:
                cur.execute(f"CREATE DATABASE {DB}")
    finally:
        conn.close()


def _password(layout: Layout) -> str:
    return layout.password.read_text().strip()


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
    if not _port_free(host, port):
        raise _busy("MLflow", host, port, "--port")
    log = layout.log("mlflow")
    env = {**os.environ, "PGPASSWORD": _password(layout), "MLFLOW_DISABLE_TELEMETRY": "true"}
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
    if user is not None and _pg(["test", "-x", str(layout.root)], Path("/"), False).returncode:
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
        if _pg_port(layout, bindir) is not None:
            _pg(
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
        pg = _pg_port(layout, pg_bindir())
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


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log, or a note that there is none."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"({path} does not exist)"


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
