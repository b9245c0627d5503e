"""Atomic, deterministic file output: a killed stage leaves no half-written file behind."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from stages.errors import EvidenceError

_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: same arrays, same bytes
_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: the process umask, for files made by mkstemp / mkdtemp


def write_bytes(path: Path, data: bytes) -> None:
    """Write through a temp file in the same folder, then rename over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; evidence is as readable as any file
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n")


def read_json(path: Path, produced_by: str) -> Any:
    """Load a JSON evidence file, or say which stage to rerun."""
    try:
        with path.open() as f:
            return json.load(f)
    except FileNotFoundError:
        raise EvidenceError(f"{path} is missing: run `dvc repro {produced_by}`") from None
    except json.JSONDecodeError as e:
        raise EvidenceError(
            f"{path} is not valid JSON ({e}): rerun `dvc repro -f -s {produced_by}`"
        ) from None


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An .npz readable by np.load, with fixed zip timestamps so reruns give identical bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            member = io.BytesIO()
            np.save(member, np.ascontiguousarray(arr), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME), member.getvalue())
    write_bytes(path, buf.getvalue())


def read_arrays(path: Path, produced_by: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise EvidenceError(f"{path} is missing: run `dvc repro {produced_by}`") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise EvidenceError(
            f"{path} is unreadable ({e}): rerun `dvc repro -f -s {produced_by}`"
        ) from None


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temp folder beside `path`; on success it replaces `path`, on failure it vanishes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    tmp.chmod(0o777 & ~_UMASK)  # mkdtemp makes 0700
    try:
        yield tmp
        old = path.with_name(f".{path.name}.old")
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)  # the previous folder, or one a killed run left
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_leftovers(path: Path) -> None:
    """Delete the `.<name>.<random>.tmp` files and folders that a killed atomic write of `path`
    left beside it; nothing else is touched."""
    stale = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]+\.tmp")  # mkstemp/mkdtemp names
    with os.scandir(path.parent) as entries:
        for entry in entries:
            if not stale.fullmatch(entry.name):
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_arrays(arrays: dict[str, np.ndarray]) -> str:
    """Content hash of named arrays (names, dtypes, shapes and bytes), whatever the file
    format."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
