"""The key of one evidence: sha256 of the summary (params, verdicts, figures) and of each file
logged with it, by the artifact path it gets in MLflow. The same evidence gives the same key on any
machine, so the tracking store finds a run of it by this key alone."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def evidence_key(
    summary: dict[str, Any], artifacts: dict[str, list[Path]], extra: list[Path]
) -> str:
    """sha256 of the summary (params, verdicts, figures) and of each file logged, by the
    artifact path it gets in MLflow: the same evidence gives the same key on any machine."""
    h = hashlib.sha256(json.dumps(summary, sort_keys=True, default=_plain).encode())
    files = [(f"{n}/{a}", p) for n, paths in artifacts.items() for a, p in _files(paths)]
    for label, path in sorted([*files, *_files(extra)]):
        h.update(f"\n{label}\n{hashlib.sha256(path.read_bytes()).hexdigest()}".encode())
    return h.hexdigest()


def _files(paths: list[Path]) -> list[tuple[str, Path]]:
    """(artifact path in MLflow, file) for each file that exists: a folder's files under its
    name, a file by its name."""
    out = []
    for path in paths:
        if path.is_dir():
            out += [(f"{path.name}/{f.relative_to(path).as_posix()}", f) for f in path.rglob("*")]
        elif path.exists():
            out.append((path.name, path))
    return [(a, f) for a, f in out if f.is_file()]


def _plain(obj: Any) -> Any:
    """numpy scalars and arrays as the JSON file holds them, so that a summary in memory and
    the same summary read back give one key."""
    return obj.tolist() if hasattr(obj, "tolist") else str(obj)
