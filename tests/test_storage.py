"""Tests for stages.storage: deterministic arrays, atomic writes and folders, and readable
errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from stages import storage
from stages.storage import (
    EvidenceError,
    atomic_dir,
    read_arrays,
    read_json,
    save_arrays,
    write_bytes,
    write_json,
)


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "image": rng.random((5, 1, 4, 4), dtype=np.float32),
        "labels": np.arange(5, dtype=np.int64),
        "slice__odd": np.arange(5) % 2 == 1,
        "strided": np.arange(20, dtype=np.int32).reshape(4, 5)[:, ::2],  # not contiguous
    }


def _boom(*args: object, **kwargs: object) -> None:
    raise OSError("simulated failure")


# --- save_arrays / read_arrays ----------------------------------------------------------------


def test_save_arrays_is_byte_identical_across_writes(tmp_path: Path) -> None:
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"

    save_arrays(first, _arrays())
    save_arrays(second, _arrays())
    before = first.read_bytes()
    save_arrays(first, _arrays())  # rewriting in place gives the same bytes too

    assert first.read_bytes() == second.read_bytes() == before


def test_save_arrays_differs_when_content_differs(tmp_path: Path) -> None:
    changed = _arrays()
    changed["labels"] = changed["labels"][::-1].copy()

    save_arrays(tmp_path / "a.npz", _arrays())
    save_arrays(tmp_path / "b.npz", changed)

    assert (tmp_path / "a.npz").read_bytes() != (tmp_path / "b.npz").read_bytes()


def test_load_arrays_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "set.npz"  # the parent folder is created
    arrays = _arrays()

    save_arrays(path, arrays)
    loaded = read_arrays(path, "prepare")

    assert set(loaded) == set(arrays)
    for name, arr in arrays.items():
        assert loaded[name].dtype == arr.dtype
        assert loaded[name].shape == arr.shape
        np.testing.assert_array_equal(loaded[name], arr)


def test_load_arrays_on_truncated_file_raises_evidence_error(tmp_path: Path) -> None:
    path = tmp_path / "set.npz"
    save_arrays(path, _arrays())
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])

    with pytest.raises(EvidenceError, match="unreadable") as err:
        read_arrays(path, "prepare")

    assert str(path) in str(err.value)
    assert "dvc repro -f -s prepare" in str(err.value)


def test_load_arrays_on_missing_file_raises_evidence_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.npz"

    with pytest.raises(EvidenceError, match="missing") as err:
        read_arrays(path, "prepare")

    assert str(path) in str(err.value)
    assert "dvc repro prepare" in str(err.value)


def test_load_arrays_on_empty_file_raises_evidence_error(tmp_path: Path) -> None:
    path = tmp_path / "set.npz"
    path.write_bytes(b"")

    with pytest.raises(EvidenceError, match="unreadable"):
        read_arrays(path, "prepare")


# --- write_bytes ------------------------------------------------------------------------------


def test_write_bytes_replaces_content_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")

    write_bytes(path, b"new content")

    assert path.read_bytes() == b"new content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_write_bytes_failure_keeps_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.json"
    path.write_bytes(b'{"old": true}')
    monkeypatch.setattr(storage.os, "replace", _boom)

    with pytest.raises(OSError, match="simulated failure"):
        write_bytes(path, b'{"new": true}')

    assert path.read_bytes() == b'{"old": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_write_bytes_failure_creates_nothing_when_no_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage.os, "replace", _boom)

    with pytest.raises(OSError):
        write_bytes(tmp_path / "fresh.bin", b"data")

    assert list(tmp_path.iterdir()) == []


# --- atomic_dir -------------------------------------------------------------------------------


def _fill(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)


def _contents(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.iterdir())}


def test_atomic_dir_failure_keeps_previous_folder_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "candidate"
    _fill(target, {"model.onnx": "old model", "manifest.json": "{}"})

    with pytest.raises(RuntimeError, match="technique failed"), atomic_dir(target) as out:
        (out / "model.onnx").write_text("half written")
        raise RuntimeError("technique failed")

    assert _contents(target) == {"manifest.json": "{}", "model.onnx": "old model"}
    assert [p.name for p in tmp_path.iterdir()] == ["candidate"]


def test_atomic_dir_failure_without_previous_folder_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "candidate"

    with pytest.raises(KeyError), atomic_dir(target):
        raise KeyError("x")

    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_success_replaces_previous_folder(tmp_path: Path) -> None:
    target = tmp_path / "candidate"
    _fill(target, {"model.onnx": "old model", "stale.txt": "from an older run"})

    with atomic_dir(target) as out:
        assert out != target
        assert out.parent == tmp_path
        assert _contents(target)["model.onnx"] == "old model"  # untouched until the end
        _fill(out, {"model.onnx": "new model"})

    assert _contents(target) == {"model.onnx": "new model"}
    assert [p.name for p in tmp_path.iterdir()] == ["candidate"]


def test_atomic_dir_success_creates_missing_folder(tmp_path: Path) -> None:
    target = tmp_path / "nested" / "candidate"

    with atomic_dir(target) as out:
        _fill(out, {"a.txt": "a"})

    assert _contents(target) == {"a.txt": "a"}
    assert [p.name for p in target.parent.iterdir()] == ["candidate"]


# --- leftovers of a killed write ----------------------------------------------------------------


def _unrelated(folder: Path) -> list[str]:
    """Files beside a target `models/baseline` that look alike but belong to nobody's write."""
    names = [
        "baseline.tmp",  # not hidden
        ".baseline.keep",  # no .tmp suffix
        ".baseline2.abc123.tmp",  # another target
        ".baseline.v2.abc123.tmp",  # a leftover of the target `baseline.v2`
        ".baseline.ABC.tmp",  # not a mkstemp name
        "notes.txt",
    ]
    for name in names:
        (folder / name).write_text("keep me")
    return names


def test_atomic_dir_removes_its_own_leftovers_only(tmp_path: Path) -> None:
    target = tmp_path / "baseline"
    stale = tmp_path / ".baseline.abc123.tmp"
    _fill(stale, {"model.onnx": "half written"})
    (tmp_path / ".baseline.k2j4_h5g.tmp").write_text("half written")
    kept = _unrelated(tmp_path)

    with atomic_dir(target) as out:
        _fill(out, {"model.onnx": "new model"})

    assert _contents(target) == {"model.onnx": "new model"}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["baseline", *kept])
    assert all((tmp_path / name).read_text() == "keep me" for name in kept)


def test_write_bytes_removes_its_own_leftovers_only(tmp_path: Path) -> None:
    target = tmp_path / "baseline"
    (tmp_path / ".baseline.abc123.tmp").write_bytes(b"half")
    kept = _unrelated(tmp_path)

    write_bytes(target, b"new")

    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["baseline", *kept])


def test_atomic_dir_removes_the_folder_a_killed_run_left(tmp_path: Path) -> None:
    target = tmp_path / "baseline"
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from stages.storage import atomic_dir\n"
        "with atomic_dir(Path(sys.argv[1])) as out:\n"
        "    (out / 'model.onnx').write_text('half written')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", script, str(target)], cwd=root, check=False)
    assert done.returncode == -signal.SIGKILL
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".baseline.") and left[0].endswith(".tmp")
    (tmp_path / "notes.txt").write_text("keep me")

    with atomic_dir(target) as out:
        _fill(out, {"model.onnx": "whole"})

    assert _contents(target) == {"model.onnx": "whole"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["baseline", "notes.txt"]


def test_atomic_dir_removes_a_previous_folder_left_between_renames(tmp_path: Path) -> None:
    target = tmp_path / "baseline"
    _fill(tmp_path / ".baseline.old", {"model.onnx": "previous"})  # killed between the renames

    with atomic_dir(target) as out:
        _fill(out, {"model.onnx": "new"})

    assert sorted(p.name for p in tmp_path.iterdir()) == ["baseline"]


# --- read_json --------------------------------------------------------------------------------


def test_read_json_round_trips_write_json(tmp_path: Path) -> None:
    path = tmp_path / "e.json"
    data = {"b": [1, 2.5], "a": {"n": np.int64(3), "x": np.float32(0.5), "p": Path("m.onnx")}}

    write_json(path, data)

    assert read_json(path, "benchmark@int8_dynamic") == {
        "a": {"n": 3, "p": "m.onnx", "x": 0.5},
        "b": [1, 2.5],
    }
    assert list(json.loads(path.read_text())) == ["a", "b"]  # sorted keys: stable diffs


def test_read_json_missing_names_the_stage(tmp_path: Path) -> None:
    path = tmp_path / "validation.json"

    with pytest.raises(EvidenceError, match="missing") as err:
        read_json(path, "validate@int8_static")

    assert str(path) in str(err.value)
    assert "dvc repro validate@int8_static" in str(err.value)


def test_read_json_invalid_names_the_stage(tmp_path: Path) -> None:
    path = tmp_path / "benchmark.json"
    path.write_text('{"batches": [1, 2')  # cut off mid-write

    with pytest.raises(EvidenceError, match="not valid JSON") as err:
        read_json(path, "benchmark@int8_dynamic")

    assert str(path) in str(err.value)
    assert "dvc repro -f -s benchmark@int8_dynamic" in str(err.value)


def test_write_json_refuses_unknown_types_and_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "e.json"
    path.write_text('{"ok": 1}')

    with pytest.raises(TypeError, match="cannot write object"):
        write_json(path, {"bad": object()})

    assert read_json(path, "x") == {"ok": 1}
    assert os.listdir(tmp_path) == ["e.json"]


# --- permissions ------------------------------------------------------------------------------


@pytest.fixture()
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.usefixtures("umask_022")
def test_write_bytes_honours_the_umask(tmp_path: Path) -> None:
    plain, atomic = tmp_path / "plain.txt", tmp_path / "atomic.txt"
    plain.write_bytes(b"x")

    write_bytes(atomic, b"x")

    assert atomic.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == 0o644


@pytest.mark.usefixtures("umask_022")
def test_atomic_dir_honours_the_umask(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()

    with atomic_dir(tmp_path / "atomic"):
        pass

    assert (tmp_path / "atomic").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == 0o755
