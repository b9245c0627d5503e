"""Each candidate's rows: its p50 speedup at each batch size against the committed value or the
history's median, and what a retest makes of a flagged drop."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from stages.regression.noise import Reference, gmean, reference, threshold

OK, REGRESSION, IMPROVEMENT, NEW, NOISY = "ok", "REGRESSION", "improvement", "new", "NOISY"
NOT_REPRODUCED = "ok (retest did not confirm the drop)"
COMMITTED = "committed"  # the comparison basis until the history holds MIN_HISTORY runs
SCREEN = 0.5  # share of the threshold a first run's drop below the median must pass to be retested


class BatchKey(NamedTuple):
    """Which timing of a candidate a row is: the input set and the batch size."""

    inputs: str  # "validation", or a preset's fixed-shape set
    batch_size: int


@dataclass(frozen=True)
class Row:
    technique: str
    inputs: str  # the input set timed: "validation", or a preset's fixed-shape set
    batch_size: int
    before: dict[str, float] | None  # p50 speedup interval committed
    after: dict[str, float]  # p50 speedup interval measured now (the first run)
    threshold: float  # the smallest relative drop that counts (see `threshold`)
    basis: str  # what set the threshold: the minimum change, the intervals or the history
    status: str
    retests: tuple[dict[str, float], ...] = ()  # p50 speedup intervals of the retests that ran
    history: str = ""  # what the re-benchmark history says of this series
    reference: Reference | None = None  # the history's median, when compared with it
    screened: bool = False  # compared with the median and fell by more than SCREEN of the threshold

    @property
    def key(self) -> BatchKey:
        return BatchKey(self.inputs, self.batch_size)

    @property
    def retest(self) -> dict[str, float] | None:
        """The latest retest's interval, if one ran."""
        return self.retests[-1] if self.retests else None

    @property
    def runs(self) -> list[float]:
        """The p50 speedups judged: the first run's and, against the median, its retests'."""
        return [self.after["estimate"], *(r["estimate"] for r in self.retests)]

    def compared_with(self) -> str:
        if self.before is None:
            return ""
        if self.reference is None:
            return COMMITTED
        runs = self.runs
        mean = f"; mean of {len(runs)} runs {gmean(runs):.3f}" if len(runs) > 1 else ""
        return self.reference.describe() + mean


def verdict(change: float, threshold: float) -> str:
    """REGRESSION when a log change falls below log(1 - threshold); IMPROVEMENT when it rises by
    as much on the log scale."""
    limit = -math.log(1 - threshold)
    if change < -limit:
        return REGRESSION
    return IMPROVEMENT if change > limit else OK


def classify(before: dict[str, float], after: dict[str, float], threshold: float) -> str:
    """REGRESSION when the p50 speedup fell by more than the threshold; IMPROVEMENT when it rose
    by as much on the log scale."""
    return verdict(math.log(after["estimate"] / before["estimate"]), threshold)


def noisy(limit: float, max_floor: float) -> str:
    return f"{NOISY}: threshold {limit:.1%} > {max_floor:.1%}"


def compare(
    technique: str,
    before: dict[str, Any] | None,
    after: dict[str, Any],
    min_change: float = 0.0,
    max_floor: float = float("inf"),
    confidence: float = 0.95,
    past: dict[BatchKey, list[float]] | None = None,
    since_shift: dict[BatchKey, list[float]] | None = None,
) -> list[Row]:
    """One row per batch size of one candidate's benchmark evidence; `past` holds the p50
    speedups of earlier re-benchmarks per (inputs, batch size), `since_shift` those after the
    series' last shift (all of `past` when not given). With `MIN_HISTORY` of those, the run is
    compared with their median (`Reference`) and the row is `screened` for a retest when it fell
    by more than `SCREEN` of its threshold; else with the committed value. A row that would pass
    while its threshold is wider than `max_floor` is NOISY instead: runs that noisy could not
    have shown a drop of `max_floor`, so their passing says nothing."""
    if after.get("status") != "ok":
        return []

    def key(b: dict[str, Any]) -> BatchKey:
        return BatchKey(b.get("inputs", "validation"), b["batch_size"])

    old = {key(b): b for b in before["batches"]} if before else {}
    rows = []
    for b in after["batches"]:
        prev = old.get(key(b))
        p50 = b["speedup"]["p50"]
        if prev is None:
            rows.append(Row(technique, *key(b), None, p50, 0.0, "", NEW))
            continue
        history = (past or {}).get(key(b), [])
        ref = reference(history, (since_shift or past or {}).get(key(b), []))
        screened = False
        if ref is None:
            limit, basis = threshold(prev["speedup"]["p50"], p50, history, min_change, confidence)
            status = classify(prev["speedup"]["p50"], p50, limit)
        else:
            limit, basis = ref.threshold(1, min_change, confidence)
            status = verdict(math.log(p50["estimate"] / ref.median), limit)
            screened = 1 - p50["estimate"] / ref.median > SCREEN * limit
        if status == OK and limit > max_floor:
            status = noisy(limit, max_floor)
        row = Row(technique, *key(b), prev["speedup"]["p50"], p50, limit, basis, status)
        rows.append(replace(row, reference=ref, screened=screened))
    return rows


def confirm(
    first: list[Row],
    retest: list[Row],
    min_change: float = 0.0,
    max_floor: float = float("inf"),
    confidence: float = 0.95,
) -> list[Row]:
    """The first comparison after one more retest (the same candidate timed again), whose
    interval each retested row shows. A row compared with the committed value keeps a regression
    only where the retest also regresses on its own. A `screened` row compared with the median is
    decided on the mean of its first run and retests (`decide`)."""
    again = {r.key: r for r in retest}
    out = []
    for r in first:
        second = again.get(r.key)
        if second is None:
            out.append(r)
        elif r.reference is not None:
            retested = replace(r, retests=(*r.retests, second.after))
            out.append(decide(retested, min_change, max_floor, confidence) if r.screened else r)
        elif r.status != REGRESSION:
            out.append(r)
        else:
            shown = second.status == REGRESSION or second.status.startswith(NOISY)
            status = second.status if shown else NOT_REPRODUCED  # a noisy retest cannot refute it
            out.append(replace(r, status=status, retests=(*r.retests, second.after)))
    return out


def decide(row: Row, min_change: float, max_floor: float, confidence: float) -> Row:
    """A screened row against the median, on the geometric mean of its m runs (first and
    retests): REGRESSION when that mean fell by more than the threshold for m runs; else NOISY
    when that threshold is wider than `max_floor`, else NOT_REPRODUCED."""
    if row.reference is None:
        return row
    runs = row.runs
    limit, basis = row.reference.threshold(len(runs), min_change, confidence)
    if verdict(math.log(gmean(runs) / row.reference.median), limit) == REGRESSION:
        status = REGRESSION
    else:
        status = noisy(limit, max_floor) if limit > max_floor else NOT_REPRODUCED
    return replace(row, threshold=limit, basis=basis, status=status)


def judge_committed(row: Row, past: list[float]) -> Row:
    """A retest re-measures only the new side: a regression against the committed value says so,
    with the count of `past`, the series' runs since its last shift. Those are always fewer than
    `MIN_HISTORY` here, since with as many `compare` compares the row with their median instead
    (`Reference`); a row compared with the median is left as it is."""
    if row.status != REGRESSION or row.before is None or row.reference is not None:
        return row
    return replace(
        row, history=f"committed side is one run ({len(past)} past runs: too few to check it)"
    )
