"""The pre-registered budget applied to one candidate's evidence: SHIP, HOLD or REJECT."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from stages.params import Budget

SHIP, HOLD, REJECT, NOT_APPLICABLE = "SHIP", "HOLD", "REJECT", "NOT APPLICABLE"
PASS, RISK, FAIL = "pass", "risk", "fail"


@dataclass(frozen=True)
class Rule:
    name: str
    budget: str
    measured: str
    status: str  # pass | risk (-> HOLD) | fail (-> REJECT)
    reason: str


def rules(c: dict[str, Any], budget: Budget) -> list[Rule]:
    """Each budget rule against the evidence of one candidate (see report.collect)."""
    out = [_one_change(c)]
    out += _accuracy(c["validation"], budget)
    if c["benchmark"].get("primary") == "server":
        out += _server(c["benchmark"]["server"], budget)
    else:
        out += _speed(c["benchmark"]["batches"][0], budget)
    return out


def decide(c: dict[str, Any], budget: Budget) -> tuple[str, list[Rule]]:
    """REJECT on any failed rule, HOLD on any risk, SHIP only when every rule passes."""
    if c["status"] != "ok":
        return NOT_APPLICABLE, []
    checked = rules(c, budget)
    statuses = {r.status for r in checked}
    verdict = REJECT if FAIL in statuses else HOLD if RISK in statuses else SHIP
    return verdict, checked


def as_dicts(checked: list[Rule]) -> list[dict[str, str]]:
    return [asdict(r) for r in checked]


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


def _accuracy(v: dict[str, Any], b: Budget) -> list[Rule]:
    o = v["overall"]
    drop = o["drop_points"]
    out = [
        Rule(
            "accuracy drop",
            f"<= {b.max_accuracy_drop:g} points",
            f"{drop:+.2f} points ({o['right_to_wrong']} right->wrong, {o['wrong_to_right']} "
            f"wrong->right, McNemar p = {o['mcnemar_p']:.3g})",
            FAIL if drop > b.max_accuracy_drop else PASS,
            f"accuracy fell {drop:.2f} points, over the {b.max_accuracy_drop:g}-point budget"
            if drop > b.max_accuracy_drop
            else "",
        )
    ]
    if out[0].status == PASS and drop > 0 and o["mcnemar_p"] < b.alpha:
        out[0] = Rule(
            out[0].name,
            out[0].budget,
            out[0].measured,
            RISK,
            f"a significant loss (McNemar p < {b.alpha:g}) even though within budget",
        )
    worst = v.get("worst_slice")
    if worst:
        d = v["slices"][worst]["drop_points"]
        fail = d > b.max_worst_slice_drop
        out.append(
            Rule(
                "worst-slice drop",
                f"<= {b.max_worst_slice_drop:g} points",
                f"{d:+.2f} points on {worst}",
                FAIL if fail else PASS,
                f"{worst} fell {d:.2f} points, over the {b.max_worst_slice_drop:g}-point budget"
                if fail
                else "",
            )
        )
    return out


def _speed(s: dict[str, Any], b: Budget) -> list[Rule]:
    sp = s["speedup"]["p50"]
    measured = (
        f"{sp['estimate']:.3f}x [{sp['low']:.3f}, {sp['high']:.3f}], "
        f"noise floor {s['noise_floor']:.1%}, {s['effect']}"
    )
    if s["effect"] == "slower":
        status, reason = FAIL, "the candidate is measurably slower than the baseline"
    elif s["effect"] == "faster" and sp["low"] >= b.min_speedup:
        status, reason = PASS, ""
    elif s["effect"] == "faster":
        status, reason = RISK, f"faster, but the interval does not clear {b.min_speedup:g}x"
    else:
        status, reason = RISK, "no measurable change: the effect is inside this run's noise floor"
    if status == PASS and not s["precise"]:
        status, reason = RISK, f"the interval is wider than asked ({s['stopped_by']} ended it)"
    out = [
        Rule(
            "p50 speedup, batch 1", f">= {b.min_speedup:g}x (lower bound)", measured, status, reason
        )
    ]
    p99 = s["speedup"]["p99"]
    slowdown = 1 / p99["estimate"]
    least = 1 / p99["high"]  # the smallest slowdown the interval allows
    reliable = s["reliable"]["p99"]
    if least > b.max_p99_slowdown and least > 1 + s["noise_floor"]:
        status, reason = FAIL, f"the p99 tail grew {slowdown:.2f}x (at least {least:.2f}x)"
    elif slowdown > b.max_p99_slowdown:
        status, reason = (
            RISK,
            f"the p99 tail may have grown {slowdown:.2f}x; its interval allows less",
        )
    elif not reliable:
        status, reason = RISK, f"p99 rests on {s['calls_per_side']} calls, too few for its tail"
    else:
        status, reason = PASS, ""
    out.append(
        Rule(
            "p99 tail, batch 1",
            f"slowdown <= {b.max_p99_slowdown:g}x",
            f"{slowdown:.3f}x slowdown ({s['calls_per_side']} calls)",
            status,
            reason,
        )
    )
    return out


def _server(s: dict[str, Any], b: Budget) -> list[Rule]:
    """A serving change is judged under load: saturation throughput and the tail near it."""
    base = s["saturation"]["baseline"]["saturation_qps"]
    cand = s["saturation"]["candidate"]["saturation_qps"]
    measured = f"baseline {base or 0:.0f} req/s, candidate {cand or 0:.0f} req/s (one run per rate)"
    if cand is None:
        status, reason = FAIL, "no rate met the p99 bound with batching"
    elif base is None or cand / base >= b.min_speedup:
        status, reason = PASS, ""
    elif cand / base < 1:
        status, reason = FAIL, f"batching lowered the saturation point ({cand / base:.2f}x)"
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
