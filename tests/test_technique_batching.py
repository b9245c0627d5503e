"""The batching technique: options, the batch-axis check, batch invariance, and its verdict."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from stages.data import Prepared
from stages.evidence import server_rules
from stages.evidence.rule import FAIL, PASS, RISK
from stages.evidence.verdict import HOLD, REJECT, SHIP, decide
from stages.measure import scenarios
from stages.params import Bench, Budget, ParamsError, _structured
from stages.techniques import batching
from stages.techniques.base import Context, NotApplicable
from stages.techniques.options import batching as batching_options


def test_candidate_is_the_same_file_and_batch_invariant(
    tiny_onnx: Path, tiny_data: Prepared, tmp_path: Path
) -> None:
    details = batching.apply(
        Context(tiny_onnx, batching_options.Options(max_batch_size=4), tiny_data, tmp_path, 0)
    )

    assert (tmp_path / "model.onnx").read_bytes() == tiny_onnx.read_bytes()
    assert details["batch_invariance"]["rows"] == 48
    assert details["batch_invariance"]["max_abs_error"] <= batching.INVARIANCE_BOUND
    assert details["same_argmax"] is True


def test_a_fixed_batch_axis_is_not_applicable(tiny_data: Prepared, tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 8, 8])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 64])
    graph = helper.make_graph([helper.make_node("Flatten", ["image"], ["logits"])], "g", [x], [y])
    path = tmp_path / "fixed.onnx"
    onnx.save(helper.make_model(graph), str(path))
    out = tmp_path / "out"
    out.mkdir()

    with pytest.raises(NotApplicable, match=r"dynamic batch axis.*image.*re-export"):
        batching.apply(Context(path, batching_options.Options(), tiny_data, out, 0))
    assert not (out / "model.onnx").exists()


@pytest.mark.parametrize("batch", [-1, 0, "?", "N"])
def test_an_unknown_or_symbolic_batch_axis_is_dynamic(batch: int | str) -> None:
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 1, 8, 8])
    assert batching._free_batch(x)
    assert not batching._free_batch(helper.make_tensor_value_info("s", TensorProto.FLOAT, [4, 2]))


@pytest.mark.parametrize(("key", "value"), [("max_batch_size", 0), ("max_queue_delay_ms", -1.0)])
def test_bad_options_are_refused(key: str, value: Any) -> None:
    with pytest.raises(ParamsError, match=f"technique.batching.{key}"):
        _structured(batching_options.Options, {key: value}, "technique.batching.")


def test_server_scenario_on_a_fake_model_replicates_on_fresh_arrivals() -> None:
    def call(feed: dict[str, np.ndarray]) -> None:
        end = time.perf_counter() + 0.0002 + 0.00002 * len(feed["x"])  # 0.2 ms + 20 us per row
        while time.perf_counter() < end:
            pass

    feeds = [{"x": np.zeros((1, 4), np.float32)} for _ in range(16)]
    bench = Bench(
        server_duration_s=0.1,
        server_replicates=3,
        server_refine_steps=1,
        server_load_factors=[0.5, 2.0],
        server_sweep_factors=[0.5, 1.0, 4.0],
        offline_requests=200,
    )
    modes = scenarios.serving_modes(
        batching_options.Options(max_batch_size=8, max_queue_delay_ms=1.0)
    )
    evidence, table = scenarios.run(
        {"baseline": call, "candidate": call}, feeds, modes, capacity_qps=4000, bench=bench, seed=1
    )

    assert evidence["replicates"] == 3 and len(evidence["sweeps"]) == 3
    seeds = evidence["seeds"]
    assert len(set(seeds)) == 3 and seeds == scenarios.replicate_seeds(1, 3)
    assert [(r["replicate"], r["factor"]) for r in evidence["rates"]] == [
        (k, f) for k in range(3) for f in (0.5, 2.0)
    ]
    for row in evidence["rates"]:
        assert row["seed"] == seeds[row["replicate"]]
        assert row["baseline"]["requests"] == row["candidate"]["requests"] == row["requests"]
    for side in ("baseline", "candidate"):
        per = evidence["saturation"][side]["per_replicate_qps"]
        assert per == [w[side]["saturation_qps"] for w in evidence["sweeps"]]
        assert [w[side]["seed"] for w in evidence["sweeps"]] == seeds
    header, *rows = (line.split(",") for line in table.splitlines())
    assert header[:3] == ["replicate", "rate_qps", "side"]
    arrivals = {
        (k, side): [r[4] for r in rows if r[0] == str(k) and r[1] == f"{2000:.3f}" and r[2] == side]
        for k in range(3)
        for side in ("baseline", "candidate")
    }
    for k in range(3):  # within a replicate both sides face one schedule
        assert arrivals[(k, "baseline")] == arrivals[(k, "candidate")]
    assert arrivals[(0, "baseline")] != arrivals[(1, "baseline")]  # fresh seeds: other arrivals
    assert evidence["rates"][0]["candidate"]["mean_batch_size"] <= 8
    assert evidence["latency_bound_ms"] >= scenarios.MIN_BOUND_MS
    assert evidence["offline"]["candidate"]["batches"] == 25


def server_evidence(
    sats: list[tuple[float, float]], p99s: list[tuple[float, float]], *, replicated: bool = True
) -> dict[str, Any]:
    """A batching candidate that passes every other rule; its server section as benchmark.json
    holds it: per replicate (baseline, candidate) saturation points, each bracketed 3 % above,
    and (baseline, candidate) p99 in ms at 0.9 x capacity. replicated=False: the layout written
    before replicates (the first replicate only)."""

    def side(qps: float) -> dict[str, Any]:
        return {"saturation_qps": qps, "failed_above_qps": qps * 1.03, "rates_qps": [300.0]}

    rows = [
        {
            "replicate": k,
            "factor": 0.9,
            "rate_qps": 90.0,
            "baseline": {"latency_p99_ms": bp, "dropped": 0},
            "candidate": {"latency_p99_ms": cp, "dropped": 0},
        }
        for k, (bp, cp) in enumerate(p99s)
    ]
    server: dict[str, Any] = {
        "saturation": {
            "baseline": {"saturation_qps": sats[0][0]},
            "candidate": {"saturation_qps": sats[0][1]},
        },
        "rates": rows if replicated else rows[:1],
    }
    if replicated:
        server["sweeps"] = [
            {"replicate": k, "baseline": side(b), "candidate": side(c)}
            for k, (b, c) in enumerate(sats)
        ]
    return {
        "status": "ok",
        "confounders": [],
        "validation": {
            "overall": {
                "n": 1000,
                "drop_points": 0.0,
                "right_to_wrong": 0,
                "wrong_to_right": 0,
                "mcnemar_p": 1.0,
            },
            "slices": {},
            "worst_slice": None,
        },
        "benchmark": {"primary": "server", "server": server},
    }


WITHIN = [(80.0, 80.0), (75.0, 78.0), (82.0, 80.0)]  # p99 ms: slowdowns 1.00, 1.04, 0.98


def test_a_replicated_gain_ships() -> None:
    verdict, rules = decide(server_evidence([(100.0, 300.0)] * 3, WITHIN), Budget())

    assert verdict == SHIP
    assert all(r.status == PASS for r in rules)


def test_a_replicated_sweep_that_straddles_holds() -> None:
    # the median replicate gained 1.5x, but one replicate saw no gain at all
    sats = [(100.0, 150.0), (100.0, 100.0), (100.0, 150.0)]
    verdict, rules = decide(server_evidence(sats, WITHIN), Budget())

    rule = {r.name: r for r in rules}["saturation throughput"]
    assert verdict == HOLD and rule.status == RISK
    assert "bench.server_replicates" in rule.reason and "1.50x [0.97, 1.5" in rule.reason


def test_a_replicated_sweep_surely_below_the_budget_rejects() -> None:
    sats = [(100.0, 100.0), (104.0, 102.0), (98.0, 99.0)]
    verdict, rules = decide(server_evidence(sats, WITHIN), Budget())

    rule = {r.name: r for r in rules}["saturation throughput"]
    assert verdict == REJECT and rule.status == FAIL
    assert rule.reason.startswith("no gain worth shipping: saturation 1.00x [")


def test_a_tail_surely_grown_under_load_rejects_even_with_a_gain() -> None:
    slower = [(80.0, 150.0), (75.0, 140.0), (82.0, 160.0)]
    verdict, rules = decide(server_evidence([(100.0, 300.0)] * 3, slower), Budget())

    assert verdict == REJECT
    assert {r.name: r.status for r in rules}["p99 under load, near saturation"] == FAIL


def test_evidence_from_before_replicates_still_reads_as_one_sweep() -> None:
    # one unreplicated sweep decides nothing alone: a gain holds for a look, it does not ship
    old = server_evidence([(100.0, 300.0)], [(5.0, 4.0)], replicated=False)
    verdict, rules = decide(old, Budget())
    status = {r.name: r.status for r in rules}
    assert verdict == HOLD and status["saturation throughput"] == RISK
    assert status["p99 under load, near saturation"] == PASS
    assert all(s == PASS for n, s in status.items() if n != "saturation throughput")
    assert (
        "dvc repro -f benchmark@batching"
        in {r.name: r for r in rules}["saturation throughput"].reason
    )

    # and a lower saturation point is a risk to look at, not a rejection
    old = server_evidence([(100.0, 80.0)], [(5.0, 4.0)], replicated=False)
    verdict, rules = decide(old, Budget())
    assert verdict == HOLD
    assert {r.name: r.status for r in rules}["saturation throughput"] == RISK


def report_input(server: dict[str, Any]) -> dict[str, Any]:
    """What stages.report hands batching.report: the manifest's details and benchmark.json, with
    every rate row served in full (figures invented)."""
    served = {
        "served": 10,
        "requests": 10,
        "latency_p50_ms": 1.0,
        "latency_p99_ms": 2.0,
        "queue_delay_p99_ms": 0.5,
        "service_p50_ms": 0.4,
        "mean_batch_size": 1.5,
        "throughput_qps": 90.0,
        "missed_bound": 0,
    }
    for row in server["rates"]:
        for side in ("baseline", "candidate"):
            row[side] = {**served, **row[side]}
    server.update(latency_bound_ms=5.0, capacity_qps=100.0)
    inv = {"rows": 64, "max_abs_error": 1e-6, "bound": batching.INVARIANCE_BOUND}
    details = {"batch_invariance": inv, "same_argmax": True}
    return {"manifest": {"details": details}, "benchmark": {"server": server}}


def test_report_names_the_replicates_and_the_saturation_interval() -> None:
    sats = [(100.0, 300.0), (104.0, 280.0), (98.0, 310.0)]
    server = server_evidence(sats, WITHIN)["benchmark"]["server"]
    lines = batching.report(report_input(server))
    text = "\n".join(lines)

    assert "One run per rate" not in text
    sat = next(line for line in lines if line.startswith("- Saturation point"))
    assert "over 3 replicates" in sat
    assert "baseline 100 / 104 / 98 req/s, batched 300 / 280 / 310 req/s" in sat
    # the serving rule's own interval: [k-th smallest low, k-th largest high] of the brackets
    brackets = [server_rules.bracket(w) for w in server["sweeps"]]
    low, high = server_rules.interval([b.low for b in brackets], [b.high for b in brackets], 0.95)
    assert f"ratio 3.00x [{low:.2f}, {high:.2f}]" in sat
    assert "75% coverage" in sat and "decide nothing" not in sat
    assert "| rate (x capacity) | replicate | req/s |" in text
    assert [line.split("|")[2].strip() for line in lines if line.startswith("| 0.9 |")] == [
        "0",
        "0",
        "1",
        "1",
        "2",
        "2",
    ]


def test_report_says_when_replicates_are_too_few_or_met_no_rate() -> None:
    server = server_evidence([(100.0, 300.0)] * 2, WITHIN[:2])["benchmark"]["server"]
    server["sweeps"][1]["candidate"].update(saturation_qps=None, failed_above_qps=25.0)
    sat = next(
        line
        for line in batching.report(report_input(server))
        if line.startswith("- Saturation point")
    )
    assert "over 2 replicates" in sat and "bench.server_replicates" in sat
    assert "batched 300 / none req/s" in sat and "met the bound at no rate" in sat


def test_report_still_reads_evidence_from_before_replicates() -> None:
    old = server_evidence([(100.0, 300.0)], [(5.0, 4.0)], replicated=False)
    server = old["benchmark"]["server"]
    for row in server["rates"]:
        del row["replicate"]
    lines = batching.report(report_input(server))

    sat = next(line for line in lines if line.startswith("- Saturation point"))
    assert "baseline 100 req/s, batched 300 req/s (3.00x)" in sat
    assert sat.endswith("One run per rate: these figures carry no interval.")
    row = next(line for line in lines if line.startswith("| 0.9 |"))
    assert row.startswith("| 0.9 | 0 | 90 | baseline |")
