"""The accuracy rules: the overall drop and the worst slice's, each by its paired interval."""

from __future__ import annotations

from typing import Any

from stages import stats
from stages.evidence.rule import FAIL, PASS, RISK, Rule
from stages.params import Budget
from stages.stats import Interval


def accuracy(v: dict[str, Any], b: Budget, confidence: float) -> list[Rule]:
    """The overall drop and every slice's, each judged by its paired interval: REJECT when the
    drop is surely beyond budget, HOLD when it may be (the interval straddles the budget), PASS
    when it is surely within (a significant loss inside the budget is told, not held). For
    slices, "surely" holds across all of them (Bonferroni over the slices looked at), so many
    small slices do not reject by chance."""
    o = v["overall"]
    drop = _drop(o, confidence)
    measured = (
        f"{drop.estimate:+.2f} points [{drop.low:+.2f}, {drop.high:+.2f}] "
        f"({o['right_to_wrong']} right->wrong, {o['wrong_to_right']} wrong->right, "
        f"McNemar p = {o['mcnemar_p']:.3g})"
    )
    limit = b.max_accuracy_drop
    if drop.low > limit:
        status, reason = (
            FAIL,
            f"accuracy fell {drop.estimate:.2f} points, surely over the {limit:g}-point budget",
        )
    elif drop.high > limit:
        status, reason = (
            RISK,
            f"accuracy may have fallen more than {limit:g} points (its interval reaches "
            f"{drop.high:.2f}): more validation rows would settle it",
        )
    elif drop.estimate > 0 and o["mcnemar_p"] < b.alpha:
        # surely within the pre-registered budget: the rule passes; the loss is still told
        status, reason = (
            PASS,
            f"within budget, though a significant loss (McNemar p < {b.alpha:g})",
        )
    else:
        status, reason = PASS, ""
    out = [Rule("accuracy drop", f"<= {limit:g} points", measured, status, reason)]
    slices = v.get("slices") or {}
    if slices:
        out.append(_slices(slices, b, confidence))
    return out


def _drop(s: dict[str, Any], confidence: float) -> Interval:
    """A comparison's accuracy drop in points with its paired interval (Newcombe's hybrid score,
    stats.paired_accuracy_difference), from its counts."""
    d = stats.paired_accuracy_difference(
        s["right_to_wrong"], s["wrong_to_right"], s["n"], confidence
    )
    return Interval(-100 * d.estimate + 0.0, -100 * d.high + 0.0, -100 * d.low + 0.0)


def _slices(slices: dict[str, Any], b: Budget, confidence: float) -> Rule:
    k = len(slices)
    limit = b.max_worst_slice_drop
    each = {n: _drop(s, confidence) for n, s in slices.items()}
    joint = {n: _drop(s, 1 - (1 - confidence) / k) for n, s in slices.items()}
    worst = max(each, key=lambda n: (each[n].high, each[n].estimate, n))
    d = each[worst]
    measured = (
        f"{d.estimate:+.2f} points [{d.low:+.2f}, {d.high:+.2f}] on {worst}, "
        f"the worst of {k} slices"
    )
    beyond = sorted(n for n, i in joint.items() if i.low > limit)
    maybe = sorted(n for n, i in each.items() if i.high > limit)
    if beyond:
        status = FAIL
        reason = (
            f"{', '.join(beyond)} fell surely over the {limit:g}-point budget (interval adjusted "
            f"for the {k} slices looked at)"
        )
    elif maybe:
        status = RISK
        reason = (
            f"{', '.join(maybe)} may have fallen more than {limit:g} points (of {k} slices; the "
            f"worst interval reaches {d.high:.2f}): more validation rows in "
            f"{'that slice' if len(maybe) == 1 else 'those slices'} would settle it"
        )
    else:
        status, reason = PASS, ""
    return Rule(
        "worst-slice drop", f"<= {limit:g} points, each of {k} slices", measured, status, reason
    )
