"""ONNX Runtime sessions built from the target: the only place runtime settings come from."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import psutil

from stages.errors import EvidenceError, TargetUnavailable
from stages.onnx_graph import add_model, model_files, optimization_level

if TYPE_CHECKING:
    import onnxruntime as ort

    from stages.models.preset import Feeds, Preset
    from stages.params import Target


def _whole(feed: Feeds) -> Feeds:
    """No preset, no trimming: a batch as it is."""
    return feed


def check_target(target: Target) -> None:
    """Fail before any work when the target's execution provider is missing."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if target.provider not in available:
        raise TargetUnavailable(
            f"target {target.name!r} needs {target.provider}, but this onnxruntime offers "
            f"{available}: {_hint(target, listed=False)}. There is no silent fallback to another "
            "provider."
        )


def check_target_runs(target: Target) -> None:
    """check_target, then run a one-node model on the provider: a listed provider can still fail
    to start (onnxruntime-gpu without a GPU or with mismatched CUDA libraries), and ONNX Runtime
    then falls back to the CPU with only a log line. Both fail here, not in a later stage."""
    import onnxruntime as ort

    check_target(target)
    hint = _hint(target, listed=True)
    so = ort.SessionOptions()
    so.log_severity_level = 3  # errors only
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    try:
        sess = ort.InferenceSession(add_model(), so, providers=[target.provider])
        used = sess.get_providers()
        (y,) = sess.run(None, {"x": x})
    except Exception as e:  # ORT raises its own exception types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TargetUnavailable(
            f"target {target.name!r} needs {target.provider}, which this onnxruntime lists, but "
            f"a test session on it failed ({first[:300]}): {hint}. There is no silent fallback "
            "to another provider."
        ) from None
    if not used or used[0] != target.provider:
        raise TargetUnavailable(
            f"target {target.name!r} needs {target.provider}, which this onnxruntime lists, but "
            f"a test session ran on {used} instead (ONNX Runtime fell back): {hint}. There is no "
            "silent fallback to another provider."
        )
    if not np.array_equal(np.asarray(y), x + x):
        raise TargetUnavailable(
            f"target {target.name!r}: a test session on {target.provider} computed x + x wrongly "
            f"({np.asarray(y).tolist()} for {x.tolist()}): {hint}."
        )


def _hint(target: Target, listed: bool) -> str:
    if target.provider != "CUDAExecutionProvider":
        if listed:
            return "check that provider's install and device, or choose another target"
        return "choose a target whose provider is listed"
    if listed:
        return (
            "check that this machine has a working NVIDIA GPU (nvidia-smi) and that its CUDA and "
            "cuDNN libraries match your onnxruntime-gpu, or choose another target "
            "(e.g. -S target=cpu)"
        )
    return (
        "install onnxruntime-gpu with a matching CUDA runtime on a machine with an NVIDIA GPU, "
        "or choose another target (e.g. -S target=cpu)"
    )


def threads(target: Target) -> int:
    """The intra-op thread count actually used: 0 resolves to the physical core count."""
    return target.intra_op_threads or psutil.cpu_count(logical=False) or 1


def session_settings(target: Target) -> dict[str, Any]:
    """The session settings both sides of a comparison share, as recorded in the manifest."""
    return {
        "provider": target.provider,
        "intra_op_threads": threads(target),
        "inter_op_threads": target.inter_op_threads,
        "allow_spinning": target.allow_spinning,
        "execution_mode": "sequential",
        "graph_optimization_level": target.graph_optimization_level,
    }


def check_model(path: Path, produced_by: str) -> None:
    """A missing, truncated or invalid ONNX file is an error that says how to restore it."""
    if not path.is_file():
        raise EvidenceError(f"{path} is missing: run `dvc repro {produced_by}` (or `dvc checkout`)")
    try:
        onnx.checker.check_model(str(path), full_check=False)
    except Exception as e:  # onnx raises several types for unreadable protobufs
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EvidenceError(
            f"{path} is not a valid ONNX model ({first}); it may be truncated: "
            f"rerun `dvc repro -f -s {produced_by}` or restore it with `dvc checkout {path}`"
        ) from None


def session(path: Path, target: Target, produced_by: str) -> ort.InferenceSession:
    """A session on the target's provider with its threads; fails if the provider is not used."""
    check_target(target)
    check_model(path, produced_by)
    return open_session(path, session_settings(target))


def open_session(path: Path, settings: dict[str, Any]) -> ort.InferenceSession:
    """A session from recorded settings (see session_settings); the provider must be the one
    used."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = settings["intra_op_threads"]
    so.inter_op_num_threads = settings["inter_op_threads"]
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = optimization_level(settings["graph_optimization_level"])
    spinning = "1" if settings["allow_spinning"] else "0"
    so.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    so.log_severity_level = 3  # errors only
    provider = settings["provider"]
    sess = ort.InferenceSession(str(path), so, providers=[provider])
    used = sess.get_providers()[0]
    if used != provider:
        raise TargetUnavailable(
            f"{path} runs on {used}, not {provider}: check the provider install"
        )
    return sess


ROWS_PER_CALL = 64  # rows per call when a whole set is run: bounded memory, little padding


def run_rows(
    sess: ort.InferenceSession, feeds: dict[str, np.ndarray], preset: Preset | None = None
) -> list[np.ndarray]:
    """Every output of the session for every row of `feeds`, in the rows' order.

    Rows go in chunks of ROWS_PER_CALL. A preset with `lengths(feeds)` (text) has its rows run
    shortest first, so each chunk holds rows of similar length, and its `trim` cuts each chunk to
    its longest real row: the padding a chunk carries is small. The order is fixed by the data,
    so reruns compute the same sums."""
    n = len(next(iter(feeds.values())))
    cut = preset.trim if preset is not None else _whole
    order = length_order(feeds, preset)
    parts = [
        sess.run(None, cut({k: v[order[i : i + ROWS_PER_CALL]] for k, v in feeds.items()}))
        for i in range(0, n, ROWS_PER_CALL)
    ]
    back = np.empty_like(order)
    back[order] = np.arange(n)
    return [np.concatenate([part[j] for part in parts])[back] for j in range(len(parts[0]))]


CHECK_ROWS = 32  # rows a single-threaded worker must reproduce bit for bit (lengths spread)


CPU_DEFAULTS = {  # ONNX Runtime's own CPU session, for searches that are not the evidence
    "provider": "CPUExecutionProvider",
    "intra_op_threads": 0,
    "inter_op_threads": 0,
    "allow_spinning": False,
    "execution_mode": "sequential",
    "graph_optimization_level": "all",
}


def row_workers(path: Path, target: Target | None = None) -> list[ort.InferenceSession]:
    """One single-threaded session per core with the target's other settings (None: CPU_DEFAULTS),
    to predict rows alone in parallel (run_alone); none off the CPU provider or on one core. A
    CPU kernel splits its work over output rows and columns, not over a sum, so one thread
    computes what the target's threads compute: run_alone checks that bit for bit."""
    cores = len(psutil.Process().cpu_affinity() or []) or 1
    settings = session_settings(target) if target is not None else CPU_DEFAULTS
    if settings["provider"] != "CPUExecutionProvider" or cores < 2:
        return []
    one = {**settings, "intra_op_threads": 1, "inter_op_threads": 1}
    return [open_session(path, one) for _ in range(cores)]


def run_alone(
    sess: ort.InferenceSession,
    feeds: dict[str, np.ndarray],
    preset: Preset | None = None,
    desc: str = "predict",
    workers: list[ort.InferenceSession] | None = None,
    record: dict[str, Any] | None = None,
) -> list[np.ndarray]:
    """Every output for every row, each row in a call of its own (cut to its natural shape by the
    preset's `trim`), in order: what a single-stream service computes for each request. A model
    whose output for a row depends on the other rows of its call (dynamic INT8 sets activation
    ranges per call) is judged here as it is served one request at a time.

    With `workers` (see row_workers) the rows are shared among them in parallel threads; then
    CHECK_ROWS rows, spread over the lengths, are run again on `sess` and must agree bit for bit,
    else every row is run on `sess` after all. `record` receives how the rows were run."""
    from tqdm import tqdm

    n = len(next(iter(feeds.values())))
    cut = preset.trim if preset is not None else _whole

    def one(s: ort.InferenceSession, i: int) -> list[np.ndarray]:
        return s.run(None, cut({k: v[i : i + 1] for k, v in feeds.items()}))

    how: dict[str, Any] = {"sessions": 1, "threads_each": "the target's"}
    parts: list[list[np.ndarray]] = []
    if workers and n > 1:
        parts = _shared(workers, one, n, desc)
        check = spread_rows(feeds, preset, min(CHECK_ROWS, n))
        agree = all(
            all(np.array_equal(a, b) for a, b in zip(one(sess, int(i)), parts[i], strict=True))
            for i in check
        )
        how = {
            "sessions": len(workers),
            "threads_each": 1,
            "checked_rows": len(check),
            "agreed_with_target_session": agree,
        }
        if not agree:
            parts = []
    if not parts:
        parts = [one(sess, i) for i in tqdm(range(n), desc=desc, unit="row", mininterval=2.0)]
    if record is not None:
        record.update(how)
    return [np.concatenate([part[j] for part in parts]) for j in range(len(parts[0]))]


def _shared(
    workers: list[ort.InferenceSession], one: Any, n: int, desc: str
) -> list[list[np.ndarray]]:
    """Rows i, i + k, i + 2k ... on worker i of k, in threads (ONNX Runtime releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    out: list[Any] = [None] * n
    with tqdm(total=n, desc=desc, unit="row", mininterval=2.0) as bar:

        def work(w: int) -> None:
            for i in range(w, n, len(workers)):
                out[i] = one(workers[w], i)
                bar.update(1)

        with ThreadPoolExecutor(len(workers)) as pool:
            list(pool.map(work, range(len(workers))))  # list(): a worker's error is raised here
    return out


def length_order(feeds: dict[str, np.ndarray], preset: Preset | None) -> np.ndarray:
    """Row indices, shortest first by the preset's `lengths` hook (rows in order without it)."""
    lengths = preset.lengths if preset is not None else None
    n = len(next(iter(feeds.values())))
    return np.argsort(lengths(feeds), kind="stable") if lengths else np.arange(n)


def spread_rows(feeds: dict[str, np.ndarray], preset: Preset | None, k: int) -> np.ndarray:
    """k row indices at evenly spaced ranks of the preset's lengths (the longest included)."""
    order = length_order(feeds, preset)
    return order[np.unique(np.linspace(0, len(order) - 1, k).round().astype(int))]


def readout(sess: ort.InferenceSession) -> dict[str, Any]:
    """The settings a live session reports about itself, for the one-change check."""
    so = sess.get_session_options()
    return {
        "provider": sess.get_providers()[0],
        "intra_op_threads": so.intra_op_num_threads,
        "inter_op_threads": so.inter_op_num_threads,
        "allow_spinning": so.get_session_config_entry("session.intra_op.allow_spinning") == "1",
        "execution_mode": str(so.execution_mode).rsplit(".", 1)[-1],
        "graph_optimization_level": str(so.graph_optimization_level).rsplit(".", 1)[-1],
    }


def size_on_disk(path: Path) -> int:
    """Bytes of the model file and its external data."""
    return sum(p.stat().st_size for p in model_files(path))
