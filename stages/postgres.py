"""The PostgreSQL half of the team MLflow server (stages/server.py): one private cluster under a
folder, TCP on 127.0.0.1 only, password login, run as an unprivileged account when started as
root."""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DB = USER = "mlflow"  # the database and its one role (a superuser of this private cluster)
PG_SEARCH = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/opt/homebrew/opt/postgresql@*/bin")


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


def run_pg(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    user = pg_user()
    ids: dict[str, Any] = {}
    if user is not None:
        ids = {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=180, **ids)
    if check and out.returncode != 0:
        raise ServerError(f"`{' '.join(cmd)}` failed ({out.returncode}): {out.stderr.strip()}")
    return out


def give(path: Path) -> None:
    """Hand a file or folder made by root to the account PostgreSQL runs as."""
    user = pg_user()
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ignore TIME_WAIT, not listeners
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def busy(what: str, host: str, port: int, flag: str) -> ServerError:
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
        major = re.search(r"\d+", run_pg([str(bindir / "initdb"), "--version"], layout.root).stdout)
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
        give(path)
    try:
        run_pg(
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


def running_port(layout: Layout, bindir: Path) -> int | None:
    """The port the cluster listens on, or None when it is not running."""
    if run_pg(
        [str(bindir / "pg_ctl"), "status", "-D", str(layout.data)], layout.root, False
    ).returncode:
        return None
    return int((layout.data / "postmaster.pid").read_text().splitlines()[3])


def start_postgres(layout: Layout, bindir: Path, port: int) -> None:
    running = running_port(layout, bindir)
    if running == port:
        return
    if running is not None:
        raise ServerError(
            f"the PostgreSQL of {layout.root} already runs on port {running}, not {port}: "
            f"`make server-stop` first, or start with --pg-port {running}"
        )
    if not port_free("127.0.0.1", port):
        raise busy("PostgreSQL", "127.0.0.1", port, "--pg-port")
    log = layout.log("postgres")
    log.touch()
    give(log)
    out = run_pg(
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
            host="127.0.0.1", port=port, user=USER, dbname="postgres", password=password_of(layout)
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


def password_of(layout: Layout) -> str:
    return layout.password.read_text().strip()


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log, or a note that there is none."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"({path} does not exist)"
