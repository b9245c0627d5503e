"""What moved: the one plain sentence a reviewer reads first, and the metrics that improved
or got worse, each against its own noise floor."""

from __future__ import annotations

from typing import Any

from stages.evidence.formats import B, C, batch_label, ci, effect, kib, ms, pct
from stages.evidence.records import candidate_evidence
from stages.evidence.rule import RISK


def _of(inv: dict[str, Any]) -> str:
    """' (of N, spread over the lengths)' when the batch check ran on a sample of the set."""
    n = inv.get("of_rows", inv["rows"])
    return f" (of {n:,}, spread over the lengths)" if n > inv["rows"] else ""


def summary_sentence(c: dict[str, Any]) -> str:
    """The one plain sentence a reviewer reads first."""
    bench, val = candidate_evidence(c)
    b1 = bench.batches[0]
    size = bench.size_bytes[C] / bench.size_bytes[B]
    mem = bench.memory[C]["peak_over_start_bytes"] / max(
        1, bench.memory[B]["peak_over_start_bytes"]
    )
    p95b, p95c = b1["sides"][B]["p95"]["estimate"], b1["sides"][C]["p95"]["estimate"]
    moved = {
        "faster": "improved",
        "slower": "worsened",
        "no measurable change": "did not measurably change",
    }[effect(b1, "p95")]
    o = val.overall
    acc = (
        f"accuracy changed {0 - o['drop_points']:+.1f} points"
        if o["drop_points"]
        else "accuracy did not change"
    )
    flips = [(v["right_to_wrong"], k) for k, v in val.slices.items() if v["right_to_wrong"]]
    where = (
        f"the most new failures were on {max(flips)[1]} ({max(flips)[0]})"
        if flips
        else "no example turned from right to wrong"
    )
    return (
        f"{c['name']} changed model size by {pct(size)} and peak memory by {pct(mem)}, "
        f"P95 latency at batch 1 {moved} ({ms(p95b)} -> {ms(p95c)}), {acc} "
        f"({o['right_to_wrong']} right->wrong, {o['wrong_to_right']} wrong->right), and {where}."
    )


def movements(c: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Metrics that improved, and those that got worse or stayed risky."""
    better, worse = [], []
    bench, val = candidate_evidence(c)
    for s in bench.batches:
        for q in ("p50", "p95", "p99"):
            sp = s["speedup"][q]
            line = (
                f"{q} latency at batch {batch_label(s)}: {ms(s['sides'][B][q]['estimate'])} -> "
                f"{ms(s['sides'][C][q]['estimate'])}, speedup {ci(sp)}"
            )
            moved = effect(s, q)
            if moved == "faster":
                better.append(line)
            elif moved == "slower":
                worse.append(line)
        if s["stopped_by"] in ("max_seconds", "max_rounds"):
            worse.append(
                f"batch {batch_label(s)} timing ran to its cap ({s['stopped_by']}) "
                "before its decision was known"
            )
        for q, ok in s["reliable"].items():
            if not ok and q == "p99":
                worse.append(
                    f"p99 at batch {batch_label(s)} rests on {s['calls_per_side']} calls: "
                    "its interval is the order-statistic one, wide for so few"
                )
    size = bench.size_bytes
    line = f"size on disk: {kib(size[B])} -> {kib(size[C])} ({pct(size[C] / size[B])})"
    (better if size[C] < size[B] else worse if size[C] > size[B] else []).append(line)
    mem = bench.memory
    mb, mc = mem[B]["peak_over_start_bytes"], mem[C]["peak_over_start_bytes"]
    line = f"peak memory over the interpreter: {kib(mb)} -> {kib(mc)} ({pct(mc / max(1, mb))})"
    if mc < 0.95 * mb:
        better.append(line)
    elif mc > 1.05 * mb:
        worse.append(line)
    o = val.overall
    line = (
        f"accuracy: {o['baseline_accuracy']['estimate']:.2%} -> "
        f"{o['candidate_accuracy']['estimate']:.2%} "
        f"(difference {ci(o['difference_points'], '{:+.2f}')} points, "
        f"McNemar p = {o['mcnemar_p']:.3g})"
    )
    (worse if o["drop_points"] > 0 else better if o["drop_points"] < 0 else []).append(line)
    for name, s in val.slices.items():
        if s["drop_points"] > 0:
            worse.append(
                f"slice {name}: {s['baseline_accuracy']['estimate']:.2%} -> "
                f"{s['candidate_accuracy']['estimate']:.2%} ({s['right_to_wrong']} right->wrong)"
            )
    inv = val.batch_invariance
    if inv and inv["argmax_changed"]:
        worse.append(
            f"predictions depend on the batch: {inv['argmax_changed']} of {inv['rows']} "
            f"validation rows{_of(inv)} change class when run {inv['rows_per_call']} to a call "
            f"instead of alone (max abs logit change {inv['max_abs_difference']:.3g}; "
            f"accuracy {inv['accuracy_alone']:.2%} alone, {inv['accuracy_batched']:.2%} "
            "batched): the accuracy above is for requests served one at a time"
        )
    f = val.fidelity
    worse.append(
        f"output fidelity vs baseline: max abs error {f['max_abs_error']:.3g}, "
        f"cosine {f['cosine']:.5f}, SQNR {f['sqnr_db']:.1f} dB"
    )
    for r in c["rules"]:
        if r["status"] == RISK:
            worse.append(f"risk: {r['reason']}")
    return better or ["nothing beyond this run's noise floor"], worse
