"""Tests for stages.measure.rounds and .timing: the interleaved rounds, their stopping rule,
and the summary.

The stopping tests run on a fake clock: each fake call advances it by a chosen number of
nanoseconds, so latencies, elapsed seconds and therefore the stopping reason are deterministic.
"""

from __future__ import annotations

import collections
import gc
import itertools
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from stages import stats
from stages.measure import blocks, rounds
from stages.measure.rounds import interleave, run_rounds, session_of
from stages.measure.timing import (
    AGAIN,
    BASELINE,
    CANDIDATE,
    ORDERS,
    PERCENTILES,
    Protocol,
    Timings,
    summarize,
)
from stages.measure.worker import InProcess, Pool, WorkerError
from stages.params import Bench, Budget

SIDES = (BASELINE, CANDIDATE, AGAIN)
ONE_THREAD = {  # session settings for the worker tests (runtime.session_settings' keys)
    "provider": "CPUExecutionProvider",
    "intra_op_threads": 1,
    "inter_op_threads": 1,
    "allow_spinning": False,
    "execution_mode": "sequential",
    "graph_optimization_level": "all",
}


class FakeClock:
    """Stands in for the `time` module inside stages.measure.rounds and .blocks; only calls
    advance it."""

    def __init__(self) -> None:
        self.ns = 0

    def perf_counter_ns(self) -> int:
        return self.ns

    def perf_counter(self) -> float:
        return self.ns / 1e9

    def advance(self, ns: int) -> None:
        self.ns += int(ns)


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(rounds, "time", fake)
    monkeypatch.setattr(blocks, "time", fake)
    return fake


def _interval(d: dict[str, float]) -> stats.Interval:
    return stats.Interval(d["estimate"], d["low"], d["high"])


def _feeds(n: int) -> list[dict[str, np.ndarray]]:
    """Feeds whose single array holds its own index, so a call can tell which one it got."""
    return [{"x": np.array([i])} for i in range(n)]


def _protocol(**overrides: Any) -> Protocol:
    kw: dict[str, Any] = {
        "warmup_calls": 0,
        "calls_per_block": 4,
        "min_rounds": 2,
        "max_rounds": 6,
        "max_seconds": 1e9,
        "precision": 1e-12,
        "confidence": 0.95,
        "check_every": 1,
        "check_resamples": 100,
        "max_noise_floor": 0.0,  # no decision can stop a run unless a test allows it
    }
    kw.update(overrides)
    return Protocol(**kw)


def _recorder(log: list[tuple[str, int]]) -> dict[str, Callable[[dict[str, np.ndarray]], None]]:
    """No-op calls that append (side, feed index) to a shared log, in call order."""

    def make(side: str) -> Callable[[dict[str, np.ndarray]], None]:
        return lambda feed: log.append((side, int(feed["x"][0])))

    return {side: make(side) for side in SIDES}


def _costed(
    clock: FakeClock, costs_ns: dict[str, Callable[[], int]]
) -> dict[str, Callable[[dict[str, np.ndarray]], None]]:
    """Calls that advance the fake clock by their side's cost."""

    def make(cost: Callable[[], int]) -> Callable[[dict[str, np.ndarray]], None]:
        return lambda feed: clock.advance(cost())

    return {side: make(costs_ns[side]) for side in SIDES}


def _noisy(rng: np.random.Generator, mean_ns: int) -> Callable[[], int]:
    return lambda: int(mean_ns * rng.uniform(0.5, 1.5))


# --- interleave: structure --------------------------------------------------------------------


def test_round_orders_cycle_and_every_side_gets_equal_blocks() -> None:
    log: list[tuple[str, int]] = []
    p = _protocol(calls_per_block=3, max_rounds=8)

    t = interleave(_recorder(log), _feeds(7), p)

    assert t.n_rounds == 8
    assert t.orders == [ORDERS[r % len(ORDERS)] for r in range(8)]
    assert set(t.rounds) == set(SIDES)
    for side in SIDES:
        assert len(t.rounds[side]) == 8
        assert all(block.shape == (3,) for block in t.rounds[side])
    # The calls really ran in the recorded order, one whole block per side.
    sides_called = [side for side, _ in log]
    expected = [side for order in t.orders for side in order for _ in range(3)]
    assert sides_called == expected


def test_no_side_follows_itself_and_every_side_follows_every_other_equally() -> None:
    blocks = [side for order in ORDERS * 3 for side in order]  # three cycles, chained

    pairs = list(itertools.pairwise(blocks))

    assert all(a != b for a, b in pairs)  # never the same side twice in a row
    counts = {(a, b): pairs.count((a, b)) for a in SIDES for b in SIDES if a != b}
    assert max(counts.values()) - min(counts.values()) <= 1
    for position in range(3):  # every side opens, closes and sits in the middle alike
        assert sorted(order[position] for order in ORDERS) == sorted(SIDES * 2)


def test_every_side_sees_the_same_feeds_in_a_round() -> None:
    log: list[tuple[str, int]] = []
    cpb, n_feeds, rounds = 4, 6, 5  # 6 feeds, 4 per block: rounds wrap around the feed list
    p = _protocol(calls_per_block=cpb, max_rounds=rounds)

    t = interleave(_recorder(log), _feeds(n_feeds), p)

    per_round = 3 * cpb
    assert len(log) == rounds * per_round
    for r in range(t.n_rounds):
        chunk = log[r * per_round : (r + 1) * per_round]
        seen = {side: [i for s, i in chunk if s == side] for side in SIDES}
        expected = [(r * cpb + k) % n_feeds for k in range(cpb)]
        assert seen[BASELINE] == seen[CANDIDATE] == seen[AGAIN] == expected


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6, 7])
def test_every_session_runs_every_order_equally_often(k: int) -> None:
    cycle = math.lcm(k, len(ORDERS)) * k
    seen = collections.Counter((session_of(r, k), r % len(ORDERS)) for r in range(2 * cycle))

    assert set(seen) == {(s, o) for s in range(k) for o in range(len(ORDERS))}
    assert len(set(seen.values())) == 1  # each (session, order) pair alike
    assert [session_of(r, k) for r in range(k)] == list(range(k))  # in turn from the start


def test_rounds_are_spread_over_the_sessions_and_each_runs_at_least_two() -> None:
    logs: list[list[tuple[str, int]]] = [[] for _ in range(3)]
    slots = [InProcess(_recorder(log), _feeds(9)) for log in logs]
    p = _protocol(calls_per_block=2, min_rounds=2, max_rounds=2)  # grows to 2 x 3 sessions

    t = run_rounds(slots, p)

    assert t.n_rounds == 6
    assert t.sessions == [session_of(r, 3) for r in range(6)]
    for k, log in enumerate(logs):  # every session ran exactly its own rounds, whole blocks
        assert len(log) == 3 * 2 * t.sessions.count(k)
        assert t.sessions.count(k) == 2
    assert t.groups == t.sessions


def test_one_session_keeps_the_round_bootstrap() -> None:
    t = interleave(_recorder([]), _feeds(5), _protocol(max_rounds=4))

    assert t.sessions == [0, 0, 0, 0] and t.groups is None
    s = summarize(t, 1, precision=0.02, confidence=0.95, resamples=200, seed=0)
    assert s["sessions"]["count"] == 1 and s["sessions"]["interval"] == "rounds"


def test_real_worker_processes_time_every_side(tmp_path: Path) -> None:
    """Three fresh worker processes, each with its own session of a tiny model per side."""
    model = tmp_path / "m.onnx"
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    m = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(model))
    feeds = [{"x": np.full((1, 4), i, dtype=np.float32)} for i in range(5)]
    p = _protocol(warmup_calls=4, calls_per_block=3, min_rounds=2, max_rounds=7)

    with Pool({BASELINE: model, CANDIDATE: model, AGAIN: model}, ONE_THREAD, 3) as pool:
        pids = {w.proc.pid for w in pool.workers}
        t = run_rounds(pool.feed(feeds), p)

    assert len(pids) == 3 and os.getpid() not in pids
    assert all(w.proc.returncode == 0 for w in pool.workers)  # every worker ended cleanly
    assert t.n_rounds == 7 and sorted(set(t.sessions)) == [0, 1, 2]
    for side in SIDES:
        assert all(b.shape == (3,) and (b > 0).all() for b in t.rounds[side])
        assert t.warmup_calls[side] >= 3 * 5  # every session warmed: 1 + 2 blocks at least
    s = summarize(t, 1, precision=0.02, confidence=0.95, resamples=200, seed=0)
    each = [[session_of(r, 3) for r in range(7)].count(k) for k in range(3)]
    assert s["sessions"]["count"] == 3 and s["sessions"]["rounds_each"] == each
    assert s["sessions"]["interval"] == "sessions, then rounds"


def test_a_worker_error_is_raised_with_its_message(tmp_path: Path) -> None:
    missing = tmp_path / "absent.onnx"
    with pytest.raises(WorkerError, match=r"absent\.onnx"):
        Pool({BASELINE: missing, CANDIDATE: missing, AGAIN: missing}, ONE_THREAD, 2)


def test_warmup_calls_run_before_the_timed_rounds() -> None:
    log: list[tuple[str, int]] = []
    p = _protocol(warmup_calls=2, calls_per_block=3, max_rounds=2)

    t = interleave(_recorder(log), _feeds(5), p)

    warm = sum(t.warmup_calls.values())
    for side in ORDERS[0]:  # whole blocks of warmup_calls, at least two, until medians agree
        assert (t.warmup_calls[side] - 1) % 2 == 0 and 5 <= t.warmup_calls[side] <= 1 + 2 * 11
    assert [s for s, _ in log[:warm]] == [s for s in ORDERS[0] for _ in range(t.warmup_calls[s])]
    assert len(log) == warm + t.n_rounds * 3 * 3
    assert sum(len(b) for b in t.rounds[BASELINE]) == t.n_rounds * 3  # warm-up is not kept


def test_latencies_are_milliseconds_per_call(clock: FakeClock) -> None:
    costs = {BASELINE: 2_000_000, CANDIDATE: 500_000, AGAIN: 2_000_000}  # ns
    calls = _costed(clock, {s: (lambda c=c: c) for s, c in costs.items()})
    p = _protocol(calls_per_block=5, max_rounds=3, min_rounds=3)

    t = interleave(calls, _feeds(2), p)

    for side, ns in costs.items():
        for block in t.rounds[side]:
            np.testing.assert_allclose(block, ns / 1e6)


@pytest.mark.parametrize(
    "calls",
    [
        {BASELINE: print, CANDIDATE: print},
        {BASELINE: print, CANDIDATE: print, AGAIN: print, "extra": print},
        {"a": print, "b": print, "c": print},
    ],
    ids=["missing", "extra", "wrong-names"],
)
def test_bad_calls_dict_is_refused(calls: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="calls must be"):
        interleave(calls, _feeds(1), _protocol())


def test_gc_is_enabled_again_after_a_failing_call() -> None:
    def boom(feed: dict[str, np.ndarray]) -> None:
        raise RuntimeError("call failed")

    calls = {BASELINE: lambda feed: None, CANDIDATE: boom, AGAIN: lambda feed: None}
    assert gc.isenabled()

    with pytest.raises(RuntimeError, match="call failed"):
        interleave(calls, _feeds(1), _protocol())

    assert gc.isenabled()


# --- interleave: stopping rule ----------------------------------------------------------------


def test_stops_by_max_rounds_when_precision_cannot_be_reached(clock: FakeClock) -> None:
    rng = np.random.default_rng(0)
    costs = {side: _noisy(rng, 1_000_000) for side in SIDES}
    p = _protocol(min_rounds=2, max_rounds=7, precision=1e-9, max_seconds=1e9)

    t = interleave(_costed(clock, costs), _feeds(3), p)

    assert t.stopped_by == "max_rounds"
    assert t.n_rounds == 7
    assert all(len(t.rounds[s]) == 7 for s in SIDES)


def test_stops_by_max_seconds_once_min_rounds_are_done(clock: FakeClock) -> None:
    # Each call costs 10 ms; a round is 3 sides x 5 calls = 0.15 s; 1 s is passed after 7 rounds.
    rng = np.random.default_rng(2)
    costs = {side: _noisy(rng, 10_000_000) for side in SIDES}
    p = _protocol(calls_per_block=5, min_rounds=3, max_rounds=1000, max_seconds=1.0)

    t = interleave(_costed(clock, costs), _feeds(3), p)

    assert t.stopped_by == "max_seconds"
    assert t.n_rounds == 7


def test_min_rounds_hold_against_max_seconds(clock: FakeClock) -> None:
    rng = np.random.default_rng(7)
    costs = {side: _noisy(rng, 10_000_000_000) for side in SIDES}  # one call outlasts the budget
    p = _protocol(calls_per_block=1, min_rounds=10, max_rounds=1000, max_seconds=1.0)

    t = interleave(_costed(clock, costs), _feeds(1), p)

    assert t.n_rounds == 10
    assert t.stopped_by == "max_seconds"


def test_blocks_shrink_so_that_min_rounds_fit_in_half_of_max_seconds(clock: FakeClock) -> None:
    # warm-up measures 50 ms per call and side: a round of 20-call blocks would take 3 s, and
    # 12 rounds 36 s against 10 s allowed for them (half of 20 s): blocks of 5 calls (9 s)
    costs = {side: (lambda: 50_000_000) for side in SIDES}
    p = _protocol(warmup_calls=4, calls_per_block=20, min_rounds=12, max_rounds=12, max_seconds=20)

    t = interleave(_costed(clock, costs), _feeds(3), p)

    assert t.calls_per_block == 5
    assert all(block.size == 5 for block in t.rounds[CANDIDATE])
    assert t.n_rounds == 12


def test_stops_by_precision_for_identical_sides(clock: FakeClock) -> None:
    rng = np.random.default_rng(1)
    cost = _noisy(rng, 1_000_000)
    p = _protocol(min_rounds=4, max_rounds=200, precision=0.5, check_every=3)

    t = interleave(_costed(clock, dict.fromkeys(SIDES, cost)), _feeds(3), p)

    assert t.stopped_by in {"precision", "decided (no measurable change)"}
    assert p.min_rounds <= t.n_rounds < p.max_rounds
    assert (t.n_rounds - p.min_rounds) % p.check_every == 0  # only checked every check_every


def test_real_clock_no_op_sides_stop_with_a_known_reason() -> None:
    p = _protocol(calls_per_block=5, min_rounds=2, max_rounds=20, precision=0.5, max_seconds=5.0)

    t = interleave(dict.fromkeys(SIDES, lambda feed: None), _feeds(3), p)

    assert t.stopped_by in {"precision", "max_rounds", "max_seconds"}
    assert 2 <= t.n_rounds <= 20
    for side in SIDES:
        pooled = np.concatenate(t.rounds[side])
        assert pooled.size == t.n_rounds * 5
        assert np.all(pooled >= 0)


# --- interleave: the stopping rule decides --------------------------------------------------


def _decide(**overrides: Any) -> Protocol:
    """A protocol whose decisions may stop the run: budget 1.1x, A/A floor at most 10 %."""
    kw: dict[str, Any] = {
        "min_rounds": 6,
        "max_rounds": 10_000,
        "max_seconds": 60.0,
        "precision": 1e-9,
        "calls_per_block": 20,
        "min_speedup": 1.1,
        "max_noise_floor": 0.1,
        "check_every": 6,
    }
    kw.update(overrides)
    return _protocol(**kw)


def _sides(rng: np.random.Generator, candidate: Callable[[], int]) -> dict[str, Callable[[], int]]:
    return {BASELINE: _noisy(rng, 1_000_000), CANDIDATE: candidate, AGAIN: _noisy(rng, 1_000_000)}


def test_a_decisive_win_stops_early(clock: FakeClock) -> None:
    rng = np.random.default_rng(0)
    costs = _sides(rng, _noisy(rng, 500_000))  # 2x faster

    t = interleave(_costed(clock, costs), _feeds(5), _decide())

    assert t.stopped_by == "decided (faster)"
    assert t.seconds < 60


def test_a_decisive_loss_stops_early(clock: FakeClock) -> None:
    rng = np.random.default_rng(1)
    costs = _sides(rng, _noisy(rng, 2_000_000))  # 2x slower

    t = interleave(_costed(clock, costs), _feeds(5), _decide())

    assert t.stopped_by == "decided (slower)"


def test_no_change_stops_once_inside_the_noise_band(clock: FakeClock) -> None:
    rng = np.random.default_rng(2)
    costs = _sides(rng, _noisy(rng, 1_000_000))

    t = interleave(_costed(clock, costs), _feeds(5), _decide())

    assert t.stopped_by == "decided (no measurable change)"


def test_an_interval_straddling_the_budget_runs_to_the_cap(clock: FakeClock) -> None:
    rng = np.random.default_rng(3)

    # 1.15x faster with noisy calls: after a second the interval still holds both 1 and 1.1
    costs = _sides(rng, _noisy(rng, 869_565))
    p = _decide(max_seconds=1.0, calls_per_block=4, max_noise_floor=0.5)

    t = interleave(_costed(clock, costs), _feeds(5), p)

    assert t.stopped_by == "max_seconds"


def test_a_wide_aa_floor_does_not_decide(clock: FakeClock) -> None:
    rng = np.random.default_rng(4)
    costs = _sides(rng, _noisy(rng, 1_000_000))
    # no win threshold: nothing here can be rejected, so only the (wide) floor could decide
    p = _decide(min_speedup=0.0, max_noise_floor=0.01, max_seconds=3)

    t = interleave(_costed(clock, costs), _feeds(5), p)

    assert t.stopped_by == "max_seconds"  # the 3 % minimum floor is already wider than 1 %


def test_a_rejection_stops_whatever_the_aa_floor(clock: FakeClock) -> None:
    # the same run against a 1.1x budget: an interval wholly below it rejects without the floor
    rng = np.random.default_rng(4)
    costs = _sides(rng, _noisy(rng, 1_000_000))

    t = interleave(_costed(clock, costs), _feeds(5), _decide(max_noise_floor=0.01, max_seconds=3))

    assert t.stopped_by in {"decided (short of budget)", "decided (no measurable change)"}
    assert t.seconds < 3
    s = summarize(t, 1, precision=0.02, confidence=0.95, resamples=200, seed=0)
    assert s["speedup"]["p50"]["high"] < 1.1


def test_a_grown_tail_is_decided_when_the_tail_is_judged(clock: FakeClock) -> None:
    rng = np.random.default_rng(5)
    # same median, but one call in 8 of the candidate's takes 5x: p90 to p99 grow about 5x
    slow = rng.random(1_000_000) < 0.125
    i = iter(range(1_000_000))
    costs = _sides(rng, lambda: 5_000_000 if slow[next(i)] else 1_000_000)

    t = interleave(_costed(clock, costs), _feeds(5), _decide(judge_tail=True, max_seconds=600))

    assert t.stopped_by.startswith("decided")
    s = summarize(t, 1, precision=0.02, confidence=0.95, resamples=200, seed=0)
    q = f"p{stats.tail_percentile(s['calls_per_side'], 0.95)}"
    assert 1 / s["speedup"][q]["high"] > 1.1  # the smallest growth the interval allows
    assert stats.decide_tail(_interval(s["speedup"][q]), s["tail_floors"][q], 1.1) == "fail"


def test_the_tail_is_judged_where_the_calls_support_it_not_at_p99(clock: FakeClock) -> None:
    rng = np.random.default_rng(6)
    costs = _sides(rng, _noisy(rng, 500_000))  # 2x faster; a p99 needs 2300 calls to be judged
    p = _decide(judge_tail=True, calls_per_block=5, max_seconds=600)

    t = interleave(_costed(clock, costs), _feeds(5), p)

    assert t.stopped_by == "decided (faster)"
    calls = sum(b.size for b in t.rounds[CANDIDATE])
    # the rule does not wait for the 437 calls that merely bound a p99 (two sides at 95 %) ...
    assert calls < 437
    # ... but for the percentile the verdict judges on these calls, decided
    s = summarize(t, 1, precision=0.02, confidence=0.95, resamples=200, seed=0)
    q = f"p{stats.tail_percentile(calls, 0.95)}"
    assert q == "p90" and s["speedup"][q]["high"] < float("inf")
    assert stats.decide_tail(_interval(s["speedup"][q]), s["tail_floors"][q], 1.1) == "pass"


def test_the_stopping_rule_waits_for_the_judged_tail() -> None:
    # 240 calls a side: the verdict judges p90 (24 beyond it); a p99 could not even be bounded
    rng = np.random.default_rng(7)
    base = [rng.lognormal(0, 0.05, 20) for _ in range(12)]
    again = [rng.lognormal(0, 0.05, 20) for _ in range(12)]
    p = _decide(judge_tail=True)
    fast = [b / 1.5 for b in base]
    # 1.5x faster at p50, but the slowest fifth of each round 1.1x slower: p90 right at budget
    edge = [np.where(b > np.quantile(b, 0.8), 1.1 * b, b / 1.5) for b in base]

    assert rounds.decision(base, fast, again, p, 200) == "decided (faster)"
    assert rounds.decision(base, edge, again, p, 200) == ""  # p50 decided, p90 straddles


# --- summarize --------------------------------------------------------------------------------


def _synthetic(
    n_rounds: int, n_calls: int, ratio: float = 2.0, stopped_by: str = "precision", seed: int = 0
) -> Timings:
    """Baseline and A/A sides around 2 ms; the candidate `ratio` times faster; shared drift."""
    rng = np.random.default_rng(seed)
    drift = rng.normal(0.0, 0.05, n_rounds)

    def side(scale: float) -> list[np.ndarray]:
        return [scale * np.exp(d + rng.normal(0.0, 0.1, n_calls)) for d in drift]

    rounds = {BASELINE: side(2.0), CANDIDATE: side(2.0 / ratio), AGAIN: side(2.0)}
    orders = [ORDERS[r % 2] for r in range(n_rounds)]
    return Timings(rounds=rounds, orders=orders, stopped_by=stopped_by, seconds=1.23456)


def _summarize(t: Timings, batch_size: int = 1, precision: float = 0.02) -> dict[str, Any]:
    return summarize(t, batch_size, precision=precision, confidence=0.95, resamples=300, seed=0)


def test_summarize_finds_a_two_fold_speedup() -> None:
    t = _synthetic(n_rounds=30, n_calls=50)

    s = _summarize(t)

    p50 = s["speedup"]["p50"]
    assert p50["estimate"] == pytest.approx(2.0, rel=0.05)
    assert p50["low"] <= 2.0 <= p50["high"]
    assert s["speedup"]["mean"]["estimate"] == pytest.approx(2.0, rel=0.05)
    assert s["aa_p50"]["estimate"] == pytest.approx(1.0, abs=0.05)
    assert s["aa_p50"]["low"] <= 1.0 <= s["aa_p50"]["high"]
    assert s["noise_floor"] >= 0.03
    assert s["effect"] == "faster"
    assert s["throughput_ratio"] == pytest.approx(2.0, rel=0.05)


def test_summarize_has_every_key() -> None:
    t = _synthetic(n_rounds=10, n_calls=20)

    s = _summarize(t, batch_size=4)

    assert set(s) == {
        "batch_size",
        "rounds",
        "calls_per_side",
        "sessions",
        "stopped_by",
        "seconds",
        "warmup_calls",
        "sides",
        "speedup",
        "rerun_p50",
        "throughput_ratio",
        "aa_p50",
        "aa",
        "noise_floor",
        "noise_floors",
        "tail_floors",
        "aa_replicates",
        "effect",
        "reliable",
        "precise",
        "calls_per_block",
        "confidence",
        "tail_interval",
    }
    assert s["batch_size"] == 4
    assert s["rounds"] == 10
    assert s["calls_per_side"] == 200
    assert s["stopped_by"] == "precision"
    assert s["seconds"] == 1.235  # rounded to ms
    assert set(s["sides"]) == set(SIDES)
    percentile_keys = {f"p{q}" for q in PERCENTILES}
    for entry in s["sides"].values():
        assert set(entry) == percentile_keys | {"mean", "calls", "throughput_per_s"}
        assert entry["calls"] == 200
        for q in percentile_keys:
            assert entry[q]["low"] <= entry[q]["estimate"] <= entry[q]["high"]
    assert set(s["speedup"]) == percentile_keys | {"mean"}
    assert set(s["reliable"]) == percentile_keys
    tail_keys = {f"p{q}" for q in (90, 95, 99)}
    assert set(s["tail_floors"]) == set(s["aa_replicates"]["ratios"]) == tail_keys
    # one session: the A/A replicates are 5 stretches of 2 rounds
    assert s["aa_replicates"]["by"] == "stretches of rounds"
    assert all(len(r) == 5 for r in s["aa_replicates"]["ratios"].values())
    assert all(f >= 0.03 for f in s["tail_floors"].values())


def test_summarize_throughput_is_items_per_second() -> None:
    t = _synthetic(n_rounds=5, n_calls=10)

    s = _summarize(t, batch_size=32)

    for side in SIDES:
        mean_ms = float(np.concatenate(t.rounds[side]).mean())
        assert s["sides"][side]["mean"] == pytest.approx(mean_ms)
        assert s["sides"][side]["throughput_per_s"] == pytest.approx(32 / (mean_ms / 1e3))


@pytest.mark.parametrize(
    ("n_rounds", "n_calls", "expected"),
    [
        # 200 calls: 100 / 20 / 10 / 2 beyond p50 / p90 / p95 / p99; 10 are needed.
        (4, 50, {"p50": True, "p90": True, "p95": True, "p99": False}),
        # 1000 calls: 10 beyond p99.
        (10, 100, {"p50": True, "p90": True, "p95": True, "p99": True}),
        # 20 calls: 2 beyond p90.
        (2, 10, {"p50": True, "p90": False, "p95": False, "p99": False}),
    ],
)
def test_summarize_reliable_flags_follow_call_counts(
    n_rounds: int, n_calls: int, expected: dict[str, bool]
) -> None:
    t = _synthetic(n_rounds=n_rounds, n_calls=n_calls)

    s = _summarize(t)

    assert s["calls_per_side"] == n_rounds * n_calls
    assert s["reliable"] == expected


def test_summarize_precise_follows_the_stopping_reason_and_interval() -> None:
    t_precision = _synthetic(n_rounds=5, n_calls=10, stopped_by="precision")
    t_rounds = _synthetic(n_rounds=5, n_calls=10, stopped_by="max_rounds")

    by_precision = _summarize(t_precision, precision=1e-9)
    too_wide = _summarize(t_rounds, precision=1e-9)
    loose = _summarize(t_rounds, precision=0.9)

    assert by_precision["precise"] is True
    assert too_wide["precise"] is False
    assert loose["precise"] is True


def test_summarize_identical_sides_show_no_measurable_change() -> None:
    t = _synthetic(n_rounds=20, n_calls=30, ratio=1.0)

    s = _summarize(t)

    assert s["effect"] == "no measurable change"
    assert s["speedup"]["p50"]["low"] <= 1.0 <= s["speedup"]["p50"]["high"]


def test_only_the_weighed_run_gets_max_seconds_the_others_report_seconds() -> None:
    bench, budget = Bench(max_seconds=20.0, report_seconds=6.0), Budget()

    assert Protocol.from_bench(bench, budget, judge_tail=True).max_seconds == 20.0
    assert Protocol.from_bench(bench, budget, judge_tail=False).max_seconds == 6.0
    short = Bench(max_seconds=4.0, report_seconds=6.0)  # never longer than the weighed run
    assert Protocol.from_bench(short, budget, judge_tail=False).max_seconds == 4.0


def test_the_protocol_carries_what_the_summary_reads_from_bench() -> None:
    bench = Bench(precision=0.05, confidence=0.9, bootstrap_resamples=300)

    p = Protocol.from_bench(bench, Budget(), judge_tail=True)

    assert (p.precision, p.confidence, p.bootstrap_resamples) == (0.05, 0.9, 300)


def test_report_seconds_must_be_positive() -> None:
    from stages.params import Bench, ParamsError

    with pytest.raises(ParamsError, match=r"bench\.report_seconds"):
        Bench(report_seconds=0)
