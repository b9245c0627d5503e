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
from stages.evidence.rule import PASS, RISK
from stages.evidence.verdict import HOLD, decide
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


def test_server_scenario_on_a_fake_model_both_sides_face_the_same_arrivals() -> None:
    def call(feed: dict[str, np.ndarray]) -> None:
        end = time.perf_counter() + 0.0002 + 0.00002 * len(feed["x"])  # 0.2 ms + 20 us per row
        while time.perf_counter() < end:
            pass

    feeds = [{"x": np.zeros((1, 4), np.float32)} for _ in range(16)]
    bench = Bench(
        server_duration_s=0.3,
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

    assert [r["factor"] for r in evidence["rates"]] == [0.5, 2.0]
    for row in evidence["rates"]:
        assert row["baseline"]["requests"] == row["candidate"]["requests"] == row["requests"]
    rows = table.splitlines()[1:]
    arrivals = {
        side: [r.split(",")[3] for r in rows if r.split(",")[1] == side][:50]
        for side in ("baseline", "candidate")
    }
    assert arrivals["baseline"] == arrivals["candidate"]  # the same seeded schedule
    assert evidence["rates"][0]["candidate"]["mean_batch_size"] <= 8
    assert evidence["latency_bound_ms"] >= scenarios.MIN_BOUND_MS
    assert evidence["offline"]["candidate"]["batches"] == 25


def server_evidence(
    base_sat: float | None, cand_sat: float | None, p99: tuple[float, float]
) -> dict[str, Any]:
    row = {
        "factor": 0.9,
        "rate_qps": 100.0,
        "baseline": {"latency_p99_ms": p99[0]},
        "candidate": {"latency_p99_ms": p99[1]},
    }
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
        "benchmark": {
            "primary": "server",
            "server": {
                "saturation": {
                    "baseline": {"saturation_qps": base_sat},
                    "candidate": {"saturation_qps": cand_sat},
                },
                "rates": [row],
            },
        },
    }


def test_verdict_weighs_the_server_scenario() -> None:
    # one unreplicated sweep decides nothing alone: a gain holds for a look, it does not ship
    verdict, rules = decide(server_evidence(100.0, 300.0, (5.0, 4.0)), Budget())
    status = {r.name: r.status for r in rules}
    assert verdict == HOLD and status["saturation throughput"] == RISK
    assert status["p99 under load, near saturation"] == PASS
    assert all(s == PASS for n, s in status.items() if n != "saturation throughput")

    # and a lower saturation point is a risk to look at, not a rejection
    verdict, rules = decide(server_evidence(100.0, 80.0, (5.0, 4.0)), Budget())
    assert verdict == HOLD
    assert {r.name: r.status for r in rules}["saturation throughput"] == RISK
