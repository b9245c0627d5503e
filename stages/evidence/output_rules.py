"""The rule on every model output but the label one, by its error relative to its range."""

from __future__ import annotations

import math
from typing import Any

from stages.evidence.rule import FAIL, PASS, Rule
from stages.params import Budget

OUTPUTS = "other outputs"  # the rule on every output but the label one


def outputs(v: dict[str, Any], b: Budget) -> Rule:
    """Every output but the label one, by its max abs error as a share of its range on the
    baseline: accuracy sees only the label output's argmax, so a moved box is judged here."""
    limit = b.max_output_error
    budget = f"max abs error <= {_share(limit)} of each output's baseline range"
    outputs = v.get("outputs") or {}
    rest = other_outputs(outputs)
    if not rest:
        why = "a single output" if len(outputs) <= 1 else "no other numeric output"
        return Rule(OUTPUTS, budget, "the label output only", PASS, f"does not apply: {why}")
    worst = str(worst_output(outputs))
    measured = f"{_moved(worst, rest[worst])}; the worst of {len(rest)} other output(s)"
    beyond = [n for n, o in rest.items() if not o["relative_error"] <= limit]  # NaN is beyond
    if not beyond:
        return Rule(OUTPUTS, budget, measured, PASS, "")
    moved = "; ".join(_moved(n, rest[n]) for n in beyond)
    return Rule(OUTPUTS, budget, measured, FAIL, f"{moved}: beyond the {_share(limit)} budget")


def other_outputs(outputs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The compared outputs (validation.json `outputs`) but the label one, in the model's order."""
    kept = {n: o for n, o in outputs.items() if not o["label"] and "relative_error" in o}
    return dict(sorted(kept.items(), key=lambda item: item[1]["index"]))


def worst_output(outputs: dict[str, dict[str, Any]]) -> str | None:
    """The other output with the largest error relative to its range (NaN the largest)."""
    rest = other_outputs(outputs)
    return max(rest, key=lambda n: (_rel(rest[n]), -rest[n]["index"])) if rest else None


def _moved(name: str, o: dict[str, Any]) -> str:
    err, span = o["max_abs_error"], o["baseline_range"]
    if span == 0:
        return f"output {name!r} moved by {err:.3g} where the baseline's is constant"
    return (
        f"output {name!r} moved by up to {_share(o['relative_error'])} of its baseline range "
        f"(max abs error {err:.3g} over a range of {span:.3g})"
    )


def _rel(o: dict[str, Any]) -> float:
    return math.inf if math.isnan(o["relative_error"]) else float(o["relative_error"])


def _share(x: float) -> str:
    return f"{100 * x:.3g} %"
