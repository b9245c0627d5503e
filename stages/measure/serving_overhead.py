"""How much latency the load generator adds per request: a benchmark that prints figures.

`python -m stages.measure.serving_overhead [--model PATH] [--rate QPS] [--requests N]` times one
session on the same inputs three ways, in rounds that alternate their order so drift cancels:
  direct - back-to-back `session.run` calls, `time.perf_counter_ns` around each;
  paced  - the same calls, each started on the Poisson schedule `serve` gets (same sleep-then-spin
           wait), so the server's idle gaps (cold caches, a parked core) are in it too;
  serve  - `serving.serve` at that low rate, unbatched: its latency is queue delay + service.
It prints the serve p50 latency against the direct p50 (the whole added cost) and against the paced
p50 (the generator's bookkeeping alone), and the queue delay at that rate: with the server idle
between requests that delay is the generator's scheduling jitter.

The model is `models/baseline/model.onnx` when it exists and takes a (1, 1, 8, 8) float32 feed,
else a tiny MatMul + Add built here.
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from stages.measure import serving

BASELINE = Path("models/baseline/model.onnx")
ROUNDS = 4  # each way runs requests / ROUNDS calls per round
WARMUP = 300  # calls before any timing
N_FEEDS = 64
LATE_US = 100.0  # a start this late is the OS's doing, not the loop's


def tiny_model() -> bytes:
    """y = x @ W + b on x of shape (batch, 64), serialized."""
    rng = np.random.default_rng(0)
    w = helper.make_tensor("W", TensorProto.FLOAT, [64, 10], rng.standard_normal(640).tolist())
    b = helper.make_tensor("B", TensorProto.FLOAT, [10], rng.standard_normal(10).tolist())
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "B"], ["y"]),
        ],
        "matmul_add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def open_model(path: Path, threads: int) -> tuple[ort.InferenceSession, list[serving.Feed], str]:
    """The baseline model if it runs on a (1, 1, 8, 8) float32 feed, else the tiny model."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the targets do
    rng = np.random.default_rng(0)
    if path.is_file():
        try:
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            name = sess.get_inputs()[0].name
            feeds = [{name: rng.random((1, 1, 8, 8), dtype=np.float32)} for _ in range(N_FEEDS)]
            sess.run(None, feeds[0])
            return sess, feeds, str(path)
        except Exception as e:  # any model that does not take this feed: use the tiny one
            print(f"{path} does not run on a (1, 1, 8, 8) float32 feed ({type(e).__name__})")
    sess = ort.InferenceSession(tiny_model(), opts, providers=["CPUExecutionProvider"])
    feeds = [{"x": rng.random((1, 64), dtype=np.float32)} for _ in range(N_FEEDS)]
    return sess, feeds, "tiny MatMul + Add (64 -> 10)"


def direct(call: serving.Call, feeds: list[serving.Feed], n: int) -> np.ndarray:
    """Latency in us of n back-to-back calls."""
    out = np.empty(n, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(n):
        feed = feeds[i % len(feeds)]
        t0 = clock()
        call(feed)
        out[i] = clock() - t0
    return out / 1e3


def paced(call: serving.Call, feeds: list[serving.Feed], arrivals_s: np.ndarray) -> np.ndarray:
    """Latency in us of calls each started at its arrival time (the serve wait, no bookkeeping)."""
    out = np.empty(arrivals_s.size, dtype=np.int64)
    clock = time.perf_counter_ns
    t0 = time.perf_counter()
    for i, a in enumerate(arrivals_s.tolist()):
        serving._wait_until(t0 + a)
        feed = feeds[i % len(feeds)]
        s = clock()
        call(feed)
        out[i] = clock() - s
    return out / 1e3


def pct(x: np.ndarray, q: float) -> float:
    return float(np.percentile(x, q))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=BASELINE)
    parser.add_argument("--rate", type=float, default=500.0, help="requests/s, low: server idle")
    parser.add_argument("--requests", type=int, default=4000, help="per way, over all rounds")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of the session")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sess, feeds, label = open_model(args.model, args.threads)

    def call(feed: serving.Feed) -> Any:
        return sess.run(None, feed)

    direct(call, feeds, WARMUP)
    per_round = max(1, args.requests // ROUNDS)
    duration = per_round / args.rate  # s of schedule per round
    ways: dict[str, list[np.ndarray]] = {"direct": [], "paced": [], "serve": [], "queue": []}
    served_service: list[np.ndarray] = []
    gc_was_enabled = gc.isenabled()
    gc.disable()  # serve disables it too; the direct ways must not pay collector pauses alone
    try:
        for r in range(ROUNDS):
            arrivals = serving.poisson_arrivals(args.rate, duration, args.seed + r)
            order = ("direct", "paced", "serve") if r % 2 == 0 else ("serve", "paced", "direct")
            for way in order:
                if way == "direct":
                    ways["direct"].append(direct(call, feeds, per_round))
                elif way == "paced":
                    ways["paced"].append(paced(call, feeds, arrivals))
                else:
                    res = serving.serve(call, feeds, arrivals)
                    ways["serve"].append(res.latency_ms * 1e3)
                    ways["queue"].append(res.queue_delay_ms * 1e3)
                    served_service.append(res.service_ms * 1e3)
    finally:
        if gc_was_enabled:
            gc.enable()
    d, p, s, q = (np.concatenate(ways[k]) for k in ("direct", "paced", "serve", "queue"))
    service = np.concatenate(served_service)
    util = args.rate * np.median(d) / 1e6
    print(
        f"model {label}, {args.threads} intra-op thread(s); {ROUNDS} rounds, {d.size} direct "
        f"calls, {s.size} requests served at {args.rate:g} req/s (server busy ~{util:.1%})"
    )
    print(f"direct call      p50 {np.median(d):8.1f} us   p99 {pct(d, 99):8.1f} us")
    print(f"paced call       p50 {np.median(p):8.1f} us   p99 {pct(p, 99):8.1f} us")
    print(f"serve latency    p50 {np.median(s):8.1f} us   p99 {pct(s, 99):8.1f} us")
    print(f"serve service    p50 {np.median(service):8.1f} us   p99 {pct(service, 99):8.1f} us")
    for name, ref in (("direct", d), ("paced", p)):
        diff = np.median(s) - np.median(ref)
        print(f"serve p50 latency vs {name} p50: {diff:+.1f} us ({diff / np.median(ref):+.1%})")
    print(
        f"queue delay at {args.rate:g} req/s (scheduling jitter): p50 {np.median(q):.1f} us, "
        f"p90 {pct(q, 90):.1f} us, p99 {pct(q, 99):.1f} us, max {q.max():.1f} us; "
        f"{np.mean(q > LATE_US):.1%} of requests started over {LATE_US:g} us late"
    )


if __name__ == "__main__":
    main()
