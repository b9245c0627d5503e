"""Git, read only: the commit checked out, and a file as committed at a revision."""

from __future__ import annotations

import subprocess


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def show(rev: str, path: str) -> str | None:
    """The file at `path` as committed at `rev`; None when it is not there."""
    done = subprocess.run(
        ["git", "show", f"{rev}:{path}"], capture_output=True, text=True, check=False
    )
    return done.stdout if done.returncode == 0 else None
