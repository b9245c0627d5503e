"""How much latency the timing harness itself adds: a benchmark that prints figures.

`python -m stages.measure.overhead [MODEL]` (or `make overhead`) times the same session on the
same inputs three ways, interleaved in rounds so drift cancels:
  harness - `blocks.time_block`, the code the benchmark stage uses (per-call clock, gc off);
  bare    - a plain `for feed in feeds: session.run(None, feed)` loop, per-call clock;
  block   - the same loop with one clock read around the whole block (no per-call timer at all).
It prints the harness p50 against the bare p50, and the harness mean against the block mean.
"""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path

import numpy as np

from stages import data as datasets
from stages import params as config
from stages.measure.blocks import time_block
from stages.runtime import session

ROUNDS, CALLS = 200, 50  # rounds x calls per block and side
LIMIT = 0.02  # the harness may add at most 2 % at p50


def bare(sess: object, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    run = sess.run  # type: ignore[attr-defined]
    out = []
    for feed in feeds:
        t0 = time.perf_counter_ns()
        run(None, feed)
        out.append(time.perf_counter_ns() - t0)
    return np.array(out) / 1e6


def block(sess: object, feeds: list[dict[str, np.ndarray]]) -> float:
    run = sess.run  # type: ignore[attr-defined]
    t0 = time.perf_counter_ns()
    for feed in feeds:
        run(None, feed)
    return (time.perf_counter_ns() - t0) / 1e6 / len(feeds)


def main() -> None:
    p = config.load()
    model = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(p.paths.baseline) / "model.onnx"
    sess = session(model, p.target, "baseline")
    valid = datasets.read(Path(p.paths.data)).feeds("validation")
    feeds = [{k: v[i : i + 1] for k, v in valid.items()} for i in range(CALLS)]
    call = sess.run
    for _ in range(3):
        bare(sess, feeds)
    harness_ms, bare_ms, block_ms = [], [], []
    gc.disable()
    for r in range(ROUNDS):
        order = ("h", "b", "k") if r % 2 == 0 else ("k", "b", "h")
        for side in order:
            if side == "h":
                harness_ms.append(time_block(lambda f: call(None, f), feeds, 0, CALLS))
            elif side == "b":
                bare_ms.append(bare(sess, feeds))
            else:
                block_ms.append(block(sess, feeds))
    gc.enable()
    h, b = np.concatenate(harness_ms), np.concatenate(bare_ms)
    p50 = np.median(h) / np.median(b) - 1
    mean = h.mean() / np.mean(block_ms) - 1
    print(f"model {model}, target {p.target.name}, {ROUNDS} rounds x {CALLS} calls per way")
    print(
        f"harness p50 {np.median(h) * 1e3:.2f} us, "
        f"bare loop p50 {np.median(b) * 1e3:.2f} us: {p50:+.2%}"
    )
    print(
        f"harness mean {h.mean() * 1e3:.2f} us, "
        f"block-timed loop mean {np.mean(block_ms) * 1e3:.2f} us: {mean:+.2%}"
    )
    print(f"harness overhead at p50 {'within' if p50 <= LIMIT else 'ABOVE'} the {LIMIT:.0%} limit")


if __name__ == "__main__":
    main()
