"""The serving rules: a serving change (batching) is judged under load, on its saturation
throughput and on its p99 latency near saturation, each as an interval over replicated sweeps
(stages.measure.scenarios).

A replicate's saturation ratio (candidate / baseline) is known only to the sweep's resolution:
each side's saturation point lies between the highest rate that met the bound and the lowest rate
above it that did not (after bench.server_refine_steps bisections), so the ratio lies in
[candidate low / baseline high, candidate high / baseline low]. The interval is for the median
replicate's ratio, from order statistics (the sign test): [k-th smallest low, k-th largest high],
k the largest rank whose coverage 1 - 2 P(Binomial(R, 1/2) < k) reaches bench.confidence, and 1
(the range) when R replicates are too few for it. Why: with 3-5 replicates a bootstrap resamples
too few values to cover, and a t interval assumes a normal shape that a rate grid does not give;
the range of R independent replicates holds their median with probability 1 - 2^(1-R) (75 % at
3, 94 % at 5) whatever their distribution, and a decision needs every replicate on one side of
the threshold, which a median on the other side gives with probability at most 2^-R (12.5 % at
3). From 9 replicates (at 0.95) the outermost replicate on each side no longer bounds it. The p99
slowdown near saturation (candidate / baseline p99 at the load factor nearest 0.9, both sides on
one schedule) is judged on the same interval of its replicates.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any, NamedTuple

from stages.evidence.rule import FAIL, PASS, RISK, Rule
from stages.params import Budget

MIN_REPLICATES = 3  # the range of fewer holds the median with probability 50 % (2) or 0 (1)
NEAR_FACTOR = 0.9  # x the baseline's capacity: the server rate the tail is judged at
REPLICATES_KEY = "bench.server_replicates"
SIDES = ("baseline", "candidate")


class Bracket(NamedTuple):
    """One replicate's saturation ratio: the measured point and the bounds the sweep allows."""

    low: float
    point: float | None  # None: a side met the bound at no rate
    high: float


def rank(n: int, confidence: float) -> int:
    """The rank k whose order statistics [x_(k), x_(n+1-k)] hold the median of n replicates at
    `confidence` (sign test), the largest such; 1 (the range) when none reaches it."""
    k = 1
    while k + 1 <= (n + 1) // 2 and 1 - 2 * _below(k, n) >= confidence:
        k += 1
    return k


def coverage(n: int, k: int) -> float:
    """How often [x_(k), x_(n+1-k)] of n independent replicates holds their median."""
    return 1 - 2 * _below(k - 1, n)


def _below(j: int, n: int) -> float:
    """P(Binomial(n, 1/2) <= j)."""
    return sum(math.comb(n, i) for i in range(j + 1)) / 2**n


def interval(
    lows: Sequence[float], highs: Sequence[float], confidence: float
) -> tuple[float, float]:
    """[k-th smallest low, k-th largest high]: holds [x_(k), x_(n+1-k)] of the true values when
    each lies in its own [low, high]."""
    k = rank(len(lows), confidence)
    return sorted(lows)[k - 1], sorted(highs)[len(highs) - k]


def server(s: dict[str, Any], b: Budget) -> list[Rule]:
    """Both serving rules on benchmark.json's `server` section; evidence written before sweeps
    were replicated (no `sweeps`) gets the rules it was written for."""
    if "sweeps" not in s:
        return unreplicated(s, b)
    return [saturation_rule(s, b), p99_rule(s, b)]


def bracket(sweep: dict[str, Any]) -> Bracket:
    """The saturation ratio one replicate allows, from both sides' sweep brackets."""
    b_lo, b_hi = sweep["baseline"]["saturation_qps"], sweep["baseline"]["failed_above_qps"]
    c_lo, c_hi = sweep["candidate"]["saturation_qps"], sweep["candidate"]["failed_above_qps"]
    low = 0.0 if c_lo is None or b_hi is None else c_lo / b_hi
    high = math.inf if c_hi is None or b_lo is None else c_hi / b_lo
    point = None if c_lo is None or b_lo is None else c_lo / b_lo
    return Bracket(low, point, high)


def saturation_rule(s: dict[str, Any], b: Budget) -> Rule:
    """PASS when the interval's low end reaches min_speedup, FAIL when its high end stays below
    it (or below 1: batching surely lowered the saturation point), RISK while it straddles."""
    sweeps, conf = s["sweeps"], s.get("confidence", 0.95)
    n, t = len(sweeps), b.min_speedup
    brackets = [bracket(w) for w in sweeps]
    low, high = interval([r.low for r in brackets], [r.high for r in brackets], conf)
    points = [r.point for r in brackets if r.point is not None]
    est = statistics.median(points) if points else None
    figure = f"{_x(est)} [{_bound(low)}, {_bound(high)}]"
    per_side = ", ".join(
        f"{side} {'/'.join(_qps(w[side]['saturation_qps']) for w in sweeps)} req/s"
        for side in SIDES
    )
    measured = f"{figure} over {_over(n, conf)} ({per_side})"
    if n < MIN_REPLICATES:
        status = RISK
        reason = f"{_too_few(n)}: saturation {figure}"
    elif low >= t:
        status, reason = PASS, ""
    elif high < 1:
        status, reason = FAIL, f"batching lowered the saturation point: {figure}"
    elif high < t:
        status, reason = FAIL, f"no gain worth shipping: saturation {figure}, the budget is {t:g}x"
    else:
        status = RISK
        settle = "; ".join(_settle(sweeps, brackets, t, conf))
        reason = f"the saturation ratio {figure} straddles the {t:g}x budget; {settle}"
    budget = f">= {t:g}x the baseline's (lower bound)"
    return Rule("saturation throughput", budget, measured, status, reason)


def _settle(
    sweeps: Sequence[dict[str, Any]], brackets: list[Bracket], t: float, conf: float
) -> list[str]:
    """What would settle a straddling saturation interval: a wider sweep where a side met the
    bound at its top rate (or at none), a finer one where a replicate straddles alone, more
    replicates where they fall on both sides."""
    out = []
    for side in SIDES:
        top = [w[side]["rates_qps"][-1] for w in sweeps if w[side]["failed_above_qps"] is None]
        if top:
            out.append(
                f"the {side} met the bound up to the sweep's top rate ({_qps(max(top))} req/s): "
                "extend bench.server_sweep_factors"
            )
        if any(w[side]["saturation_qps"] is None for w in sweeps):
            out.append(f"the {side} met the bound at no rate: extend bench.server_sweep_factors")
    bounded = [r for r in brackets if r.low > 0 and math.isfinite(r.high)]
    alone = [r for r in bounded if r.low < t <= r.high]
    if alone:
        steps = sweeps[0]["baseline"].get("refine_steps", 0)
        out.append(
            f"{len(alone)} replicate(s) straddle it alone: a finer sweep "
            f"(bench.server_refine_steps, now {steps}) would settle it"
        )
    if (any(r.low >= t for r in bounded) and any(r.high < t for r in bounded)) or not out:
        out.append(_more(len(sweeps), conf))
    return out


def _more(n: int, conf: float) -> str:
    """The advice for replicates on both sides: how many let one of them through."""
    k, more = rank(n, conf), n + 1
    while rank(more, conf) <= k:
        more += 1
    return (
        f"the replicates fall on both sides: more replicates ({REPLICATES_KEY}, now {n}; from "
        f"{more} the outermost on each side no longer bounds the interval) would settle it"
    )


def slowdown(row: dict[str, Any]) -> float | None:
    """Candidate / baseline p99 at one rate of one replicate: inf when only the candidate failed
    to keep up (dropped requests), 0 when only the baseline did, None when neither did."""
    kept = {
        side: row[side]["latency_p99_ms"] is not None and row[side].get("dropped", 0) == 0
        for side in SIDES
    }
    if kept["baseline"] and kept["candidate"]:
        return row["candidate"]["latency_p99_ms"] / row["baseline"]["latency_p99_ms"]
    if kept["baseline"]:
        return math.inf
    return 0.0 if kept["candidate"] else None


def p99_rule(s: dict[str, Any], b: Budget) -> Rule:
    """PASS when the interval of the p99 slowdown near saturation is within max_p99_slowdown,
    FAIL when it is wholly beyond, RISK while it straddles."""
    n, t, conf = len(s["sweeps"]), b.max_p99_slowdown, s.get("confidence", 0.95)
    near = [
        min(
            (r for r in s["rates"] if r["replicate"] == k),
            key=lambda r: abs(r["factor"] - NEAR_FACTOR),
        )
        for k in range(n)
    ]
    per = [slowdown(row) for row in near]
    rate = near[0]["rate_qps"]
    budget = f"slowdown <= {t:g}x"
    name = "p99 under load, near saturation"
    if any(x is None for x in per):
        return Rule(
            name,
            budget,
            "n/a",
            RISK,
            f"neither side kept up at {rate:.0f} req/s in replicate {per.index(None)}: no p99 "
            "to compare (bench.server_load_factors)",
        )
    known = [x for x in per if x is not None]  # all of them (for mypy)
    (low, high), est = interval(known, known, conf), statistics.median(known)
    p99s = {side: "/".join(_ms(row[side]["latency_p99_ms"]) for row in near) for side in SIDES}
    measured = (
        f"{_x(est)} [{_bound(low)}, {_bound(high)}] at {rate:.0f} req/s over {_over(n, conf)} "
        f"(p99 baseline {p99s['baseline']} ms, candidate {p99s['candidate']} ms)"
    )
    if n < MIN_REPLICATES:
        status, reason = RISK, f"{_too_few(n)}: p99 slowdown {_x(est)}"
    elif high <= t:
        status, reason = PASS, ""
    elif low > t:
        status = FAIL
        reason = (
            f"batching dropped requests at {rate:.0f} req/s, where the baseline kept up"
            if math.isinf(low)
            else f"batching grew the p99 latency near saturation {_x(est)} (at least {_x(low)})"
        )
    else:
        status = RISK
        reason = (
            f"the p99 slowdown near saturation {_x(est)} [{_bound(low)}, {_bound(high)}] "
            f"straddles the {t:g}x budget; {_more(n, conf)}"
        )
    return Rule(name, budget, measured, status, reason)


def _over(n: int, conf: float) -> str:
    """How many replicates, and how often the interval holds their median."""
    return f"{n} replicates, {coverage(n, rank(n, conf)):.0%} coverage of the median"


def _too_few(n: int) -> str:
    return (
        f"{n} replicate{'s' if n != 1 else ''}: a decision needs at least {MIN_REPLICATES} "
        f"({REPLICATES_KEY})"
    )


def _x(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "unbounded" if math.isinf(value) else f"{value:.2f}x"


def _bound(value: float) -> str:
    return "unbounded" if math.isinf(value) else f"{value:.2f}"


def _qps(value: float | None) -> str:
    return "none" if value is None else f"{value:.0f}"


def _ms(value: float | None) -> str:
    return "none" if value is None else f"{value:.1f}"


def unreplicated(s: dict[str, Any], b: Budget) -> list[Rule]:
    """The rules of evidence from one unreplicated sweep (before replicates were recorded): each
    rate measured once, so a change of the saturation point either way is a risk to look at
    (HOLD), neither a rejection nor a ship by itself. Rerun `dvc repro -f benchmark@batching`."""
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
    reason += "; evidence from before replicated sweeps: rerun `dvc repro -f benchmark@batching`"
    out = [
        Rule(
            "saturation throughput",
            f">= {b.min_speedup:g}x the baseline's",
            measured,
            status,
            reason,
        )
    ]
    near = min(s["rates"], key=lambda r: abs(r["factor"] - NEAR_FACTOR))
    bp, cp = near["baseline"]["latency_p99_ms"], near["candidate"]["latency_p99_ms"]
    if bp is None or cp is None:
        status, reason, text = RISK, "a side served nothing at this rate", "n/a"
    else:
        ratio = cp / bp
        text = f"{bp:.3f} ms -> {cp:.3f} ms ({ratio:.2f}x) at {near['rate_qps']:.0f} req/s"
        ok = ratio <= b.max_p99_slowdown
        status = PASS if ok else RISK
        reason = "" if ok else f"batching grew the p99 latency {ratio:.2f}x near saturation"
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
