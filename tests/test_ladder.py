"""The ladder's evidence on a stack: the four-side timing design, the cumulative comparison, the
stack's budget against the original baseline, the review note and dashboard columns, and the
climb's choices (synthetic evidence; the climb's rungs themselves run `dvc exp run`)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from factories import candidate, comparison, interval

from stages import climb
from stages import params as config
from stages.data import Prepared
from stages.evidence.dashboard import dashboard
from stages.evidence.review import review
from stages.evidence.rule import FAIL, PASS, as_dicts
from stages.evidence.verdict import REJECT, SHIP, decide
from stages.ladder import ladder_md, ladder_png
from stages.measure.rounds import run_rounds
from stages.measure.timing import (
    ORIGINAL,
    SIDES,
    STACKED_ORDERS,
    STACKED_SIDES,
    Protocol,
    orders_for,
    summarize,
)
from stages.measure.worker import InProcess
from stages.params import Budget, load
from stages.validate import cumulative


def test_four_sides_chain_in_a_balanced_williams_square() -> None:
    chain = [side for order in STACKED_ORDERS * 2 for side in order]
    assert all(a != b for a, b in itertools.pairwise(chain))  # across round boundaries too
    for pos in range(4):  # every side takes every position once per cycle
        assert sorted(o[pos] for o in STACKED_ORDERS) == sorted(STACKED_SIDES)
    pairs = [p for o in STACKED_ORDERS for p in itertools.pairwise(o)]
    assert sorted(pairs) == sorted(itertools.permutations(STACKED_SIDES, 2))  # each once


def test_only_the_two_known_side_sets_time() -> None:
    assert len(orders_for(SIDES)) == 6 and orders_for(STACKED_SIDES) == STACKED_ORDERS
    with pytest.raises(ValueError, match="timing sides"):
        orders_for(("baseline", "candidate"))


def _protocol() -> Protocol:
    return Protocol(
        warmup_calls=0,
        calls_per_block=5,
        min_rounds=8,
        max_rounds=8,
        max_seconds=60.0,
        precision=0.0,
        confidence=0.95,
    )


def _fixed(ms: float) -> Any:
    def call(_: Any) -> float:
        return ms

    return call


def test_a_stacked_run_times_the_original_baseline_in_the_same_rounds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # each side's "latency" is fixed, so the ratios are exact: control 4 ms, candidate 2 ms,
    # original baseline 8 ms -> step 2x, stack 4x, the control 2x the original
    latency = {"baseline": 4.0, "candidate": 2.0, "baseline_again": 4.0, ORIGINAL: 8.0}
    rng = np.random.default_rng(0)

    def round_(self: Any, order: Any, start: int, n: int) -> dict[str, np.ndarray]:
        return {s: latency[s] * (1 + 0.001 * rng.random(n)) for s in order}

    monkeypatch.setattr(InProcess, "round", round_)
    slot = InProcess({s: _fixed(1.0) for s in STACKED_SIDES}, [{"x": np.zeros((1, 1))}])
    t = run_rounds([slot], _protocol(), sides=STACKED_SIDES)
    assert t.orders[:4] == list(STACKED_ORDERS)
    s = summarize(t, 1, precision=0.05, confidence=0.95, resamples=200, seed=0)
    assert s["speedup"]["p50"]["estimate"] == pytest.approx(2.0, rel=0.01)
    total = s["cumulative"]
    assert total["speedup"]["p50"]["estimate"] == pytest.approx(4.0, rel=0.01)
    assert total["control_speedup"]["p50"]["estimate"] == pytest.approx(2.0, rel=0.01)
    assert set(s["sides"]) == set(STACKED_SIDES)


def test_a_three_side_run_has_no_cumulative_block(monkeypatch: pytest.MonkeyPatch) -> None:
    def round_(self: Any, order: Any, start: int, n: int) -> dict[str, np.ndarray]:
        return {s: np.full(n, 2.0 if s == "candidate" else 4.0) for s in order}

    monkeypatch.setattr(InProcess, "round", round_)
    slot = InProcess({s: _fixed(1.0) for s in SIDES}, [{"x": np.zeros((1, 1))}])
    s = summarize(
        run_rounds([slot], _protocol()), 1, precision=0.05, confidence=0.95, resamples=100, seed=0
    )
    assert "cumulative" not in s and set(s["sides"]) == set(SIDES)


def _stacked(step: tuple[int, int, int], stack: tuple[int, int, int], **kw: Any) -> dict[str, Any]:
    """A candidate on a stack: `step` flips against the control, `stack` against the original
    baseline (n, right->wrong, wrong->right), its slices alike."""
    c = candidate(overall=step, slices={"short": (300, 2, 1)}, **kw)
    b1 = c["benchmark"]["batches"][0]
    b1["cumulative"] = {"speedup": {"p50": interval(3.2, 3.0, 3.4)}}
    total = comparison(*stack)
    c["validation"]["cumulative"] = {
        "against": "original baseline",
        "overall": total,
        "slices": {"short": comparison(300, 2, 1)},
        "worst_slice": "short",
    }
    c["benchmark"]["size_bytes"]["original"] = 2000
    return c


def test_the_stack_budget_rejects_what_each_step_passes() -> None:
    # this step loses 0.07 points against the control (surely inside the 1-point budget), as
    # each step below it passed its own rung; summed, the stack is 2.5 points down on the
    # original baseline (surely over)
    c = _stacked((3000, 14, 12), (3000, 90, 15))
    verdict, rules = decide(c, Budget())
    step = [r for r in rules if r.name.startswith("accuracy drop (step")]
    stack = [r for r in rules if r.name.startswith("accuracy drop (stack")]
    assert step[0].status == PASS and stack[0].status == FAIL
    assert verdict == REJECT
    assert stack[0].reason.startswith("stack: accuracy fell")
    assert "against the original baseline" in stack[0].name


def test_a_stack_inside_both_budgets_ships_and_names_each_rule() -> None:
    verdict, rules = decide(_stacked((3000, 12, 9), (3000, 14, 12)), Budget())
    assert verdict == SHIP
    names = [r.name for r in rules]
    assert any("(step, against the control)" in n for n in names)
    assert sum("(stack, against the original baseline)" in n for n in names) == 2


def test_without_a_stack_the_rules_keep_their_names() -> None:
    _, rules = decide(candidate(), Budget())
    assert all("against" not in r.name for r in rules)


def _ctx(**extra: Any) -> dict[str, Any]:
    return {
        "model": "m",
        "target": "cpu",
        "host": "h",
        "cpu": "c",
        "baseline_graph": {"sha256": "0" * 64, "op_types": {}},
        "baseline_file": "models/control/model.onnx",
        "baseline_accuracy": 0.8,
        "validation_dir": "reports/validation",
        "candidates_dir": "models/candidates",
        "peak": {},
        **extra,
    }


def test_the_dashboard_adds_the_stack_columns_only_on_a_stack() -> None:
    c = _stacked((3000, 30, 12), (3000, 90, 15))
    c["verdict"], rules = decide(c, Budget())
    c["rules"] = as_dicts(rules)
    c.update(manifest={"graph": {"op_types": {}}}, changed=[])
    plain = dashboard([], _ctx(), "x")
    stacked = dashboard([], _ctx(control=["distill"]), "x")
    assert "stack: p50 speedup" not in plain
    assert "stack: p50 speedup b1 against the original" in stacked
    assert "baseline with distill applied" in stacked


def test_the_stack_cells_and_review_section_show_both_comparisons() -> None:
    from stages.evidence.dashboard import _stack_cells
    from stages.evidence.review import stack_section

    c = _stacked((3000, 30, 12), (3000, 90, 15))
    cells = _stack_cells(c)
    assert cells.startswith("3.200 [3.000, 3.400] | ")
    section = "\n".join(stack_section(c, _ctx(control=["distill"])))
    assert "| p50 speedup, batch 1 | 1.600 [1.550, 1.660] | 3.200 [3.000, 3.400] |" in section
    assert "baseline with distill applied" in section
    assert stack_section(candidate(), _ctx()) == []
    assert callable(review)


def test_cumulative_pairs_the_candidate_with_the_original_rows() -> None:
    class Prep:
        slices = ()

        def labels(self, name: str) -> np.ndarray:
            return np.array([0, 1, 1, 0])

    original = {"validation": np.array([[1, 0], [0, 1], [1, 0], [1, 0]], dtype=np.float32)}
    cand = np.array([[1, 0], [0, 1], [0, 1], [0, 1]], dtype=np.float32)
    prepared = cast(Prepared, Prep())  # the two members cumulative reads
    out = cumulative(original, {"validation": (original["validation"], cand)}, prepared, 0.95)
    o = out["overall"]
    assert (o["right_to_wrong"], o["wrong_to_right"], o["n"]) == (1, 1, 4)
    assert o["baseline_accuracy"]["estimate"] == 0.75
    assert out["worst_slice"] is None


def _rung(k: int, control: list[str], cands: dict[str, str], best: str | None) -> dict[str, Any]:
    entry = {
        "step_p50": interval(2.0, 1.9, 2.1),
        "stack_p50": interval(2.0 * (k + 1), 1.9 * (k + 1), 2.1 * (k + 1)),
        "stack_accuracy_points": interval(-0.2, -0.6, 0.2),
        "stack_worst_slice": "short",
        "stack_worst_slice_points": -1.0,
        "why": "",
    }
    r: dict[str, Any] = {
        "rung": k,
        "control": control,
        "evidence": "ab" * 32,
        "seconds": None if k == 0 else 600,
        "command": "dvc repro" if k == 0 else "dvc exp run -S 'technique@control=[distill]'",
        "candidates": {n: {**entry, "verdict": v} for n, v in cands.items()},
    }
    if best:
        r["promoted"] = best
    else:
        r["stopped"] = "nothing ships against this control"
    return r


def test_the_climb_promotes_the_ship_with_the_best_lower_bound() -> None:
    summary = {
        "candidates": {
            "int8_dynamic": {"verdict": "HOLD", "metrics": {"speedup_p50_b1_low": 1.7}},
            "fuse": {"verdict": "SHIP", "metrics": {"speedup_p50_b1_low": 1.2}},
            "distill": {"verdict": "SHIP", "metrics": {"speedup_p50_b1_low": 1.86}},
        }
    }
    assert climb.best_ship(summary) == "distill"
    summary["candidates"]["distill"]["verdict"] = "REJECT"
    assert climb.best_ship(summary) == "fuse"
    summary["candidates"]["fuse"]["verdict"] = "HOLD"
    assert climb.best_ship(summary) is None


def test_a_rung_is_reproduced_by_its_control_and_only_the_options_that_differ() -> None:
    p = load()
    shipped = config.as_dict(p.technique["distill"])
    assert climb.overrides({"distill": shipped}) == ["technique@control=[distill]"]
    int8 = {**config.as_dict(p.technique["int8_dynamic"]), "per_channel": False}
    got = climb.overrides({"distill": shipped, "int8_dynamic": int8})
    assert got == [
        "technique@control=[distill,int8_dynamic]",
        "control.int8_dynamic.per_channel=false",
    ]


def test_the_ladder_report_names_each_rung_its_choice_and_how_to_reproduce_it(
    tmp_path: Path,
) -> None:
    p = load()
    rungs = [
        _rung(0, [], {"distill": SHIP, "fp16": REJECT}, "distill"),
        _rung(1, ["distill"], {"int8_dynamic": SHIP}, None),
    ]
    md = ladder_md(rungs, p)
    assert "| 0 | baseline | distill | 2.000 [1.900, 2.100] |" in md
    assert "| 1 | baseline -> distill | — (nothing ships against this control)" in md
    assert "`dvc exp run -S 'technique@control=[distill]'`" in md
    assert "The climb stopped: nothing ships against this control." in md
    assert ladder_png(rungs)[:8] == b"\x89PNG\r\n\x1a\n"


class _Climb:
    """climb.main with its outside world replaced: each rung's summary from `ships` (the SHIP of
    each rung in turn, None for none), `dvc exp run` recorded (or failing), restore recorded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, tmp: Path, ships: list[str | None]):
        p = load()
        monkeypatch.chdir(tmp)
        (tmp / "reports").mkdir()
        self.runs: list[list[str]] = []
        self.restored = 0
        self.fail = False
        summaries = iter(
            {"candidates": {s: {"verdict": "SHIP", "metrics": {"speedup_p50_b1_low": 1.5}}}}
            if s
            else {"candidates": {"fp16": {"verdict": "REJECT", "metrics": {}}}}
            for s in ships
        )
        monkeypatch.setattr(climb.config, "load", lambda: p)
        monkeypatch.setattr(climb, "dvc_clean", lambda: None)
        monkeypatch.setattr(climb, "read_json", lambda *a: next(summaries))
        monkeypatch.setattr(climb, "overrides", lambda st: [f"technique@control=[{','.join(st)}]"])
        monkeypatch.setattr(climb, "save_rung", self.save_rung)
        monkeypatch.setattr(climb, "exp_run", self.exp_run)
        monkeypatch.setattr(climb, "restore", self.restore)
        self.control: list[str] = []

    def save_rung(self, p: Any, k: int, folder: Path) -> dict[str, Any]:
        folder.mkdir(parents=True)
        record = _rung(k, list(self.control), {"distill": SHIP, "int8_dynamic": SHIP}, None)
        return {key: v for key, v in record.items() if key not in ("stopped", "promoted")}

    def exp_run(self, name: str, args: list[str]) -> None:
        if self.fail:
            raise climb.ParamsError(f"rung {name} failed")
        self.runs.append(args)
        self.control = args[0].split("[")[1].rstrip("]").split(",")

    def restore(self) -> None:
        self.restored += 1


def test_the_climb_stops_at_its_rungs_and_puts_the_workspace_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    c = _Climb(monkeypatch, tmp_path, ["distill", "int8_dynamic"])
    climb.main(["--rungs", "1"])
    assert c.runs == [["technique@control=[distill]"]] and c.restored == 1
    md = (tmp_path / "reports/ladder.md").read_text()
    assert "--rungs 1 reached (int8_dynamic ships on this rung)" in md
    assert (tmp_path / "reports/ladder/rung-1/rung.json").is_file()


def test_the_climb_stops_when_nothing_ships_without_touching_the_workspace(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    c = _Climb(monkeypatch, tmp_path, [None])
    climb.main(["--rungs", "3"])
    assert c.runs == [] and c.restored == 0
    assert "nothing ships against this control" in (tmp_path / "reports/ladder.md").read_text()


def test_a_failed_rung_still_restores_and_writes_what_ran(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    c = _Climb(monkeypatch, tmp_path, ["distill"])
    c.fail = True
    with pytest.raises(climb.ParamsError, match="ladder-rung-1 failed"):
        climb.main(["--rungs", "2"])
    assert c.restored == 1
    assert "The climb stopped: interrupted." in (tmp_path / "reports/ladder.md").read_text()
