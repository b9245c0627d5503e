"""The pre-registered budget applied to one candidate's evidence: SHIP, HOLD or REJECT."""

from __future__ import annotations

import math
from typing import Any

from stages import stats
from stages.evidence import accuracy_rules, output_rules
from stages.evidence.rule import FAIL, PASS, RISK, Rule
from stages.params import Budget
from stages.stats import Interval

SHIP, HOLD, REJECT, NOT_APPLICABLE = "SHIP", "HOLD", "REJECT", "NOT APPLICABLE"
FAILED = "FAILED"  # the technique raised on this model: a defect to look at, not a trait of it


def rules(c: dict[str, Any], budget: Budget) -> list[Rule]:
    """Each budget rule against the evidence of one candidate (see report.collect)."""
    out = [_one_change(c)]
    out += accuracy_rules.accuracy(c["validation"], budget, _confidence(c))
    out.append(output_rules.outputs(c["validation"], budget))
    if c["benchmark"].get("primary") == "server":
        out += _server(c["benchmark"]["server"], budget)
    else:
        out += _speed(c["benchmark"]["batches"][0], budget)
    return out


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
    """p50 speedup and p99 tail at batch 1, each decided by its interval (stats.decide_*): HOLD for
    a timing reason only when the interval still straddles a threshold when timing ended."""
    conf = _pc(s.get("confidence", 0.95))
    sp = _interval(s["speedup"]["p50"])
    floor = s["noise_floor"]
    measured = (
        f"{sp.estimate:.3f}x [{sp.low:.3f}, {sp.high:.3f}] ({conf}), noise floor {floor:.1%}, "
        f"{s['rounds']} rounds, ended by {s['stopped_by']}"
    )
    speed = stats.decide_speed(sp, floor, b.min_speedup)
    if speed == stats.SLOWER:
        status, reason = FAIL, "the candidate is measurably slower than the baseline"
    elif speed == stats.FASTER:
        status, reason = PASS, ""
    elif speed == stats.NO_CHANGE:
        status, reason = RISK, "no measurable change: the effect is inside this run's noise floor"
    elif speed == stats.SHORT:
        status, reason = RISK, f"faster, but surely short of the {b.min_speedup:g}x budget"
    else:
        status = RISK
        reason = (
            "the interval still straddles a threshold (1 +- the noise floor, or "
            f"{b.min_speedup:g}x) when {s['stopped_by']} ended the timing"
        )
    max_floor = s.get("max_noise_floor")
    if status != FAIL and max_floor is not None and floor > max_floor:
        status = RISK
        reason = (
            f"the A/A control stayed wide (noise floor {floor:.1%}, above bench.max_noise_floor "
            f"{max_floor:.0%}): this run cannot resolve effects of that size"
        )
    out = [
        Rule(
            "p50 speedup, batch 1", f">= {b.min_speedup:g}x (lower bound)", measured, status, reason
        )
    ]
    p99 = _interval(s["speedup"]["p99"])
    floor99 = s.get("noise_floors", {}).get("p99", floor)
    slowdown = 1 / p99.estimate
    least = 1 / p99.high if p99.high > 0 else math.inf
    most = 1 / p99.low if p99.low > 0 else math.inf
    calls = s["calls_per_side"]
    tail = stats.decide_tail(p99, floor99, b.max_p99_slowdown)
    honest = s.get("tail_interval") == "order statistic"
    if tail == stats.TAIL_FAIL and not honest and not s["reliable"]["p99"]:
        tail = None  # a bootstrap p99 on too few calls under-covers: not a verdict by itself
    if tail == stats.TAIL_FAIL:
        status, reason = FAIL, f"the p99 tail grew {slowdown:.2f}x (at least {least:.2f}x)"
    elif tail == stats.TAIL_PASS:
        status, reason = PASS, ""
    else:
        status = RISK
        reason = (
            f"the p99 tail may have grown beyond {b.max_p99_slowdown:g}x (its interval allows "
            f"{least:.2f}x to {most:.2f}x on {calls} calls)"
        )
    out.append(
        Rule(
            "p99 tail, batch 1",
            f"slowdown <= {b.max_p99_slowdown:g}x",
            f"{slowdown:.3f}x slowdown [{least:.3f}, {most:.3f}] ({calls} calls, noise floor "
            f"{'unbounded' if floor99 == math.inf else f'{floor99:.1%}'})",
            status,
            reason,
        )
    )
    return out


def _server(s: dict[str, Any], b: Budget) -> list[Rule]:
    """A serving change is judged under load: saturation throughput and the tail near it. Each
    rate is measured once (no replication, no interval), so a change of the saturation point
    either way is a risk to look at (HOLD): neither a rejection nor a ship by itself."""
    base = s["saturation"]["baseline"]["saturation_qps"]
    cand = s["saturation"]["candidate"]["saturation_qps"]
    measured = f"baseline {base or 0:.0f} req/s, candidate {cand or 0:.0f} req/s (one run per rate)"
    once = "one unreplicated sweep, so not a rejection by itself"
    if cand is None:
        status, reason = RISK, f"no rate met the p99 bound with batching ({once})"
    elif base is None or cand / base >= b.min_speedup:
        gain = (
            "served where the baseline met the bound at no rate"
            if base is None
            else (f"saturation gain {cand / base:.2f}x")
        )
        status, reason = RISK, f"{gain} on one unreplicated sweep, so not a ship by itself"
    elif cand / base < 1:
        status = RISK
        reason = f"batching lowered the saturation point ({cand / base:.2f}x; {once})"
    else:
        status, reason = RISK, f"saturation gain {cand / base:.2f}x is below {b.min_speedup:g}x"
    out = [
        Rule(
            "saturation throughput",
            f">= {b.min_speedup:g}x the baseline's",
            measured,
            status,
            reason,
        )
    ]
    near = min(s["rates"], key=lambda r: abs(r["factor"] - 0.9))
    bp, cp = near["baseline"]["latency_p99_ms"], near["candidate"]["latency_p99_ms"]
    if bp is None or cp is None:
        status, reason, text = RISK, "a side served nothing at this rate", "n/a"
    else:
        slowdown = cp / bp
        text = f"{bp:.3f} ms -> {cp:.3f} ms ({slowdown:.2f}x) at {near['rate_qps']:.0f} req/s"
        ok = slowdown <= b.max_p99_slowdown
        status = PASS if ok else RISK
        reason = "" if ok else f"batching grew the p99 latency {slowdown:.2f}x near saturation"
    out.append(
        Rule(
            "p99 under load, near saturation",
            f"slowdown <= {b.max_p99_slowdown:g}x",
            text,
            status,
            reason,
        )
    )
    return out


def _confidence(c: dict[str, Any]) -> float:
    """The confidence level the evidence was measured at (bench.confidence)."""
    return float(c.get("benchmark", {}).get("protocol", {}).get("confidence", 0.95))


def _interval(d: dict[str, float]) -> Interval:
    return Interval(d["estimate"], d["low"], d["high"])


def _pc(confidence: float) -> str:
    return (
        f"{confidence:.0%}" if confidence * 100 == round(confidence * 100) else f"{confidence:.1%}"
    )
