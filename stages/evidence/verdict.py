"""The pre-registered budget applied to one candidate's evidence: SHIP, HOLD or REJECT."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from stages import stats
from stages.evidence import accuracy_rules, output_rules
from stages.evidence.rule import FAIL, PASS, RISK, Rule
from stages.evidence.server_rules import server as _server
from stages.params import Budget
from stages.stats import Interval

SHIP, HOLD, REJECT, NOT_APPLICABLE = "SHIP", "HOLD", "REJECT", "NOT APPLICABLE"
FAILED = "FAILED"  # the technique raised on this model: a defect to look at, not a trait of it
# on a stack every rule says which comparison it judged: the step against the control, or the
# stack as a whole against the original baseline (the budget's accuracy and slice rules)
STEP, STACK = "step", "stack"
AGAINST = {STEP: "against the control", STACK: "against the original baseline"}


def rules(c: dict[str, Any], budget: Budget) -> list[Rule]:
    """Each budget rule against the evidence of one candidate (see report.collect)."""
    out = [_one_change(c)]
    out += accuracy_rules.accuracy(c["validation"], budget, _confidence(c))
    out.append(output_rules.outputs(c["validation"], budget))
    if c["benchmark"].get("primary") == "server":
        out += _server(c["benchmark"]["server"], budget)
    else:
        out += _speed(c["benchmark"]["batches"][0], budget)
    total = c["validation"].get("cumulative")
    if total is None:  # no stack: the control is the baseline, one comparison
        return out
    # a stack: each step passes against the control AND the stack stays inside the accuracy
    # and slice budgets against the original baseline (five steps of 0.9 points must not ship)
    stacked = accuracy_rules.accuracy(total, budget, _confidence(c))
    return [_said(r, STEP) for r in out] + [_said(r, STACK) for r in stacked]


def _said(r: Rule, where: str) -> Rule:
    """A rule named with the comparison it judged (STEP or STACK), its reason too."""
    return replace(
        r,
        name=f"{r.name} ({where}, {AGAINST[where]})",
        reason=f"{where}: {r.reason}" if r.reason else "",
    )


def decide(c: dict[str, Any], budget: Budget) -> tuple[str, list[Rule]]:
    """REJECT on any failed rule, HOLD on any risk, SHIP only when every rule passes."""
    if c["status"] != "ok":
        return (FAILED if c["status"] == "failed" else NOT_APPLICABLE), []
    checked = rules(c, budget)
    statuses = {r.status for r in checked}
    verdict = REJECT if FAIL in statuses else HOLD if RISK in statuses else SHIP
    return verdict, checked


def _one_change(c: dict[str, Any]) -> Rule:
    bad = c["confounders"]
    if bad:
        return Rule(
            "one change",
            "only the declared fields differ",
            f"also changed: {', '.join(bad)}",
            RISK,
            "confounded: the candidate differs from the baseline in more than its technique, "
            "so no effect can be attributed to it; never shipped as is",
        )
    return Rule("one change", "only the declared fields differ", "only declared fields", PASS, "")


def _speed(s: dict[str, Any], b: Budget) -> list[Rule]:
    """p50 speedup and the tail at batch 1, each decided by its interval (stats.decide_*): HOLD
    for a timing reason only when the interval still straddles a threshold when timing ended."""
    return [_p50(s, b), _tail(s, b)]


def _p50(s: dict[str, Any], b: Budget) -> Rule:
    """The p50 rule: a decided win passes; an interval wholly below min_speedup, or a measured
    slowdown, rejects (no gain worth shipping, whatever the A/A floor: stats.speed_rejects); an
    interval straddling a threshold, or an A/A floor above bench.max_noise_floor, holds."""
    conf = _pc(s.get("confidence", 0.95))
    sp = _interval(s["speedup"]["p50"])
    floor, want = s["noise_floor"], b.min_speedup
    shown = f"{sp.estimate:.3f}x [{sp.low:.3f}, {sp.high:.3f}]"
    measured = (
        f"{shown} ({conf}), noise floor {floor:.1%}, {s['rounds']} rounds, "
        f"ended by {s['stopped_by']}"
    )
    speed = stats.decide_speed(sp, floor, want)
    if stats.speed_rejects(speed, sp, want):
        status = FAIL
        reason = f"no gain worth shipping: {_shortfall(speed, sp, floor)}, {shown}; "
        reason += f"the budget is {want:g}x"
    elif speed == stats.FASTER:
        status, reason = PASS, ""
    elif speed == stats.NO_CHANGE:
        status = RISK
        reason = (
            f"no measurable change ({shown}, inside the {floor:.1%} noise floor), and the "
            f"{want:g}x budget lies inside that floor too: this run can neither show the gain "
            "nor rule it out; a quieter run (a narrower A/A floor) would settle it"
        )
    else:
        status, reason = RISK, _straddles(sp, floor, want, s["stopped_by"])
    max_floor = s.get("max_noise_floor")
    if status != FAIL and max_floor is not None and floor > max_floor:
        status = RISK
        reason = (
            f"the A/A control stayed wide (noise floor {floor:.1%}, above bench.max_noise_floor "
            f"{max_floor:.0%}): this run cannot resolve effects of that size"
        )
    return Rule("p50 speedup, batch 1", f">= {want:g}x (lower bound)", measured, status, reason)


def _shortfall(speed: str | None, sp: Interval, floor: float) -> str:
    """Why a rejected p50 interval is short: slower, no measurable change, or faster but short."""
    if speed == stats.SLOWER:
        return "measurably slower than the baseline"
    if stats.classify_speedup(sp, floor) == "faster":
        return "faster, but surely short of the budget"
    return f"no measurable change (noise floor {floor:.1%})"


def _straddles(sp: Interval, floor: float, want: float, stopped_by: str) -> str:
    """Which threshold an undecided p50 interval straddles, and what would settle it."""
    band = ((1 / (1 + floor), "the noise band's bottom"), (1 + floor, "the noise band's top"))
    named = [f"{name} ({x:.3f}x)" for x, name in band if sp.low <= x <= sp.high]
    if sp.low < want <= sp.high:
        named.append(f"the {want:g}x budget")
    settle = {
        "max_rounds": "more rounds (bench.max_rounds)",
        "precision": "a tighter bench.precision",
    }.get(stopped_by, "more timing (bench.max_seconds)")
    return (
        f"{sp.estimate:.3f}x [{sp.low:.3f}, {sp.high:.3f}] straddles "
        f"{' and '.join(named) or 'a threshold'} when {stopped_by} ended the timing: {settle} "
        "would settle it"
    )


def _tail(s: dict[str, Any], b: Budget) -> Rule:
    """The tail rule at the highest percentile the calls support (stats.tail_percentile), against
    the A/A floor replicated over sessions (`tail_floors`; evidence written before it: the
    pooled floor at that percentile)."""
    calls, confidence = s["calls_per_side"], s.get("confidence", 0.95)
    present = [q for q in stats.TAIL_CHOICES if f"p{q}" in s["speedup"]]
    q = stats.tail_percentile(calls, confidence, present)
    name = f"p{q}"
    sp = _interval(s["speedup"][name])
    floor, how = _tail_floor(s, name)
    slowdown = 1 / sp.estimate
    least = 1 / sp.high if sp.high > 0 else math.inf
    most = 1 / sp.low if sp.low > 0 else math.inf
    tail = stats.decide_tail(sp, floor, b.max_p99_slowdown)
    honest = s.get("tail_interval") == "order statistic"
    if tail == stats.TAIL_FAIL and not honest and not s.get("reliable", {}).get(name, False):
        tail = None  # a bootstrap tail on too few calls under-covers: not a verdict by itself
    if tail == stats.TAIL_FAIL:
        status, reason = FAIL, f"the {name} tail grew {slowdown:.2f}x (at least {least:.2f}x)"
    elif tail == stats.TAIL_PASS:
        status, reason = PASS, ""
    else:
        status = RISK
        reason = (
            f"the {name} tail may have grown beyond {b.max_p99_slowdown:g}x (its interval allows "
            f"{least:.2f}x to {most:.2f}x on {calls} calls)"
        )
    shown = "unbounded" if floor == math.inf else f"{floor:.1%}"
    return Rule(
        f"{name} tail, batch 1",
        f"slowdown <= {b.max_p99_slowdown:g}x",
        f"{slowdown:.3f}x slowdown [{least:.3f}, {most:.3f}] ({calls} calls, noise floor "
        f"{shown} {how}); {_judged(calls, q, present, confidence)}",
        status,
        reason,
    )


def _tail_floor(s: dict[str, Any], name: str) -> tuple[float, str]:
    """The tail's A/A floor and how it was found: replicated, else pooled (older evidence)."""
    replicated = s.get("tail_floors", {}).get(name)
    if replicated is not None:
        reps = s.get("aa_replicates", {})
        count = len(reps.get("ratios", {}).get(name, []))
        return float(replicated), f"median of {count} {reps.get('by', 'replicates')}"
    return float(s.get("noise_floors", {}).get(name, s["noise_floor"])), "pooled A/A"


def _judged(calls: int, q: int, present: list[int], confidence: float) -> str:
    """Which tail percentile was judged and why (stats.tail_percentile)."""
    need, beyond = stats.tail_calls_needed(confidence), stats.calls_beyond(calls, q)
    if beyond < need - 1e-9:
        return (
            f"p{q} judged: {calls} calls give {_count(beyond)} beyond it, fewer than the {need} "
            "its bound needs, so its interval stays wide"
        )
    higher = [h for h in present if h > q]
    if not higher:
        return f"p{q} judged: {calls} calls give {_count(beyond)} beyond it ({need} needed)"
    h = min(higher)
    return (
        f"p{q} judged: {calls} calls give {_count(stats.calls_beyond(calls, h))} beyond p{h}, "
        f"too few for its bound ({need} needed)"
    )


def _count(calls: float) -> str:
    """An expected count of calls: 6, 22.95 (never rounded up to the count it falls short of)."""
    return f"{calls:.2f}".rstrip("0").rstrip(".")


def _confidence(c: dict[str, Any]) -> float:
    """The confidence level the evidence was measured at (bench.confidence)."""
    return float(c.get("benchmark", {}).get("protocol", {}).get("confidence", 0.95))


def _interval(d: dict[str, float]) -> Interval:
    return Interval(d["estimate"], d["low"], d["high"])


def _pc(confidence: float) -> str:
    return (
        f"{confidence:.0%}" if confidence * 100 == round(confidence * 100) else f"{confidence:.1%}"
    )
