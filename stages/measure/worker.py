"""Timing sessions in fresh worker processes, the way pyperf spreads a benchmark over workers.

Each worker is a new Python process holding its own ONNX Runtime session of every side (baseline,
candidate, baseline again): a new process re-draws the memory layout, the allocator's arenas and
the threads' placement, which persist for a session's whole life and shift all of its timings
alike. The benchmark process drives the workers one at a time (never two timing at once), a
round per message; `rounds.run_rounds` spreads the rounds over them and the intervals resample
workers, then rounds within them, so the spread between sessions is inside the interval.

`python -m stages.measure.worker` is the worker's side of the pipe: it imports numpy, onnx and
onnxruntime only, and answers pickled requests on stdin with pickled replies on stdout.
"""

from __future__ import annotations

import functools
import pickle
import subprocess
import sys
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from stages.measure.blocks import Feeds, time_round, warm_up
from stages.runtime import open_session


class WorkerError(RuntimeError):
    """A timing worker failed or exited; the message carries its own error."""


class InProcess:
    """The sides' calls in this process: one session per side (tests, and custom callables)."""

    def __init__(self, calls: Mapping[str, Any], feeds: Feeds) -> None:
        self.calls, self.feeds = calls, feeds

    def warm(
        self, minimum: int, sides: Sequence[str], again: bool
    ) -> tuple[dict[str, int], dict[str, float]]:
        return warm_up(self.calls, self.feeds, minimum, sides, again)

    def round(self, order: Sequence[str], start: int, n: int) -> dict[str, np.ndarray]:
        return time_round(self.calls, self.feeds, order, start, n)


class Worker:
    """One worker process and its pipe; see the module docstring."""

    def __init__(self, models: Mapping[str, Path], settings: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stages.measure.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._send(("open", {side: str(path) for side, path in models.items()}, settings))

    def _send(self, message: tuple[Any, ...]) -> None:
        assert self.proc.stdin is not None
        try:
            pickle.dump(message, self.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.proc.stdin.flush()
        except BrokenPipeError:
            self._exited()

    def _reply(self) -> Any:
        assert self.proc.stdout is not None
        try:
            status, value = pickle.load(self.proc.stdout)
        except EOFError:
            self._exited()
        if status != "ok":
            raise WorkerError(f"a timing worker failed: {value}")
        return value

    def _exited(self) -> None:
        code = self.proc.wait()
        raise WorkerError(f"a timing worker exited with code {code} (its error is printed above)")

    def ask(self, *message: Any) -> Any:
        self._send(message)
        return self._reply()

    def warm(
        self, minimum: int, sides: Sequence[str], again: bool
    ) -> tuple[dict[str, int], dict[str, float]]:
        return self.ask("warm", minimum, list(sides), again)

    def round(self, order: Sequence[str], start: int, n: int) -> dict[str, np.ndarray]:
        return self.ask("round", tuple(order), start, n)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self._send(("quit",))
                self.proc.wait(timeout=30)
            except (WorkerError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


class Pool:
    """`n` workers, each with its own session of every model in `models`, started together;
    use as a context manager (the workers always end)."""

    def __init__(self, models: Mapping[str, Path], settings: dict[str, Any], n: int) -> None:
        if n < 1:
            raise ValueError(f"a pool needs at least one worker, got {n}")
        self.workers: list[Worker] = []
        try:
            for _ in range(n):  # all start at once; their replies are read below
                self.workers.append(Worker(models, settings))
            for w in self.workers:
                w._reply()
        except BaseException:
            self.close()
            raise

    def feed(self, feeds: Feeds) -> list[Worker]:
        """Give every worker the inputs of the next timing; returns the workers (the slots)."""
        blob = list(feeds)
        for w in self.workers:
            w._send(("feeds", blob))
        for w in self.workers:
            w._reply()
        return self.workers

    def close(self) -> None:
        for w in self.workers:
            w.close()

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    """The worker loop: open, feeds, warm, round ... quit."""
    calls: dict[str, Any] = {}
    feeds: Feeds = []
    while True:
        try:
            message = pickle.load(inp)
        except EOFError:
            return
        kind, args = message[0], message[1:]
        try:
            if kind == "quit":
                return
            if kind == "open":
                models, settings = args
                sessions = {side: open_session(Path(p), settings) for side, p in models.items()}
                calls = {side: functools.partial(s.run, None) for side, s in sessions.items()}
                value: Any = None
            elif kind == "feeds":
                feeds, value = args[0], None
            elif kind == "warm":
                value = warm_up(calls, feeds, *args)
            elif kind == "round":
                value = time_round(calls, feeds, *args)
            else:
                raise ValueError(f"unknown request {kind!r}")
            reply: tuple[str, Any] = ("ok", value)
        except Exception as e:  # sent back whole: the benchmark process raises it
            traceback.print_exc()
            reply = ("error", f"{type(e).__name__}: {e}")
        pickle.dump(reply, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()


def main() -> None:
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but replies on the pipe
    serve(sys.stdin.buffer, out)


if __name__ == "__main__":
    main()
