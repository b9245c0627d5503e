"""The dashboard: one row per candidate, and the serving results under load."""

from __future__ import annotations

from typing import Any, cast

from stages.evidence.formats import B, C, ci, largest_batch, pct, peak_of
from stages.evidence.output_rules import other_outputs, worst_output
from stages.evidence.records import candidate_evidence
from stages.evidence.rule import FAIL, RISK


def dashboard(cands: list[dict[str, Any]], ctx: dict[str, Any], tracking_line: str) -> str:
    rows = []
    stacked = "control" in ctx  # a stack: the stack's columns against the original baseline
    for c in cands:
        if c["status"] != "ok":
            reason = c["reason"].replace("|", "\\|")  # a table cell
            blank = "| | | " if stacked else ""
            rows.append(f"| {c['name']} | **{c['verdict']}** | | | | | | | | | | {blank}{reason} |")
            continue
        timing, v = candidate_evidence(c)
        b1, big, size = timing.batches[0], largest_batch(c["benchmark"]), timing.size_bytes
        worst = cast(str, v.worst_slice)
        reasons = (
            "; ".join(r["reason"] for r in c["rules"] if r["status"] in (FAIL, RISK))
            or "every rule passed"
        )
        comp = big["compute"]
        frac = "/".join(
            f"{comp[s]['gflops_p50'] / peak_of(comp[s], ctx['peak'])[1]:.0%}" for s in (B, C)
        )
        rows.append(
            f"| [{c['name']}](review/{c['name']}.md) | **{c['verdict']}** | "
            f"{ci(b1['speedup']['p50'])} | {ci(b1['speedup']['p95'])} | "
            f"{big['throughput_ratio']:.2f}x (b{big['batch_size']}) | {pct(size[C] / size[B])} | "
            f"{ci(v.overall['difference_points'], '{:+.2f}')} | "
            f"{worst} {0 - v.slices[worst]['drop_points']:+.2f} | "
            f"{worst_output_cell(c['validation'])} | "
            f"{v.overall['right_to_wrong']} | {frac} | {_stack_cells(c) if stacked else ''}"
            f"{reasons} |"
        )
    loaded = [_under_load(c) for c in cands if c["status"] == "ok" and c["benchmark"].get("server")]
    noise = [
        f"{c['name']}: {c['benchmark']['batches'][0]['noise_floor']:.1%}"
        for c in cands
        if c["status"] == "ok"
    ]
    head = (
        "| candidate | verdict | p50 speedup b1 | p95 speedup b1 | throughput | size | "
        "accuracy change (points) | worst slice (points) | other outputs (worst, of range) | "
        "right->wrong | % of peak, largest batch (base/cand) | "
    )
    if stacked:
        head += (
            "stack: p50 speedup b1 against the original | stack: accuracy change (points) | "
            "stack: worst slice (points) | "
        )
    return "\n".join(
        [
            f"# Candidates for {ctx['model']} on target {ctx['target']}",
            "",
            *_control_line(ctx),
            f"Host {ctx['host']} ({ctx['cpu']}). {'Control' if stacked else 'Baseline'}: "
            f"`{ctx['baseline_file']}` "
            f"(sha256 {ctx['baseline_graph']['sha256'][:12]}), "
            f"accuracy {ctx['baseline_accuracy']:.2%}. "
            f"Speedups are {'control' if stacked else 'baseline'} / candidate latency (above 1 = "
            "faster) with "
            f"{ctx.get('confidence_label', '95 %')} intervals; "
            f"A/A noise floor at batch 1: {', '.join(noise) or 'n/a'}.",
            "",
            head + "why |",
            "|---" * head.count("|") + "|",
            *rows,
            "",
            *(
                [
                    "Under load (server scenario, seeded Poisson arrivals, "
                    "same schedule for both sides):",
                    *loaded,
                    "",
                ]
                if loaded
                else []
            ),
            "![speedup against accuracy change](tradeoff.png)",
            "",
            f"MLflow: {tracking_line}",
            "",
        ]
    )


def _control_line(ctx: dict[str, Any]) -> list[str]:
    """On a stack: what the control is, and how to read the two kinds of columns."""
    if "control" not in ctx:
        return []
    return [
        f"Control: the baseline with {' -> '.join(ctx['control'])} applied. Each step column "
        "compares a candidate with this control (the rung's own effect); the stack columns "
        "compare it with the original baseline. Every rule in `why` names which of the two it "
        "came from.",
        "",
    ]


def _stack_cells(c: dict[str, Any]) -> str:
    """The stack's cells: p50 speedup at batch 1, accuracy change and worst slice against the
    original baseline."""
    total = c["validation"]["cumulative"]
    sp = c["benchmark"]["batches"][0]["cumulative"]["speedup"]["p50"]
    w = total["worst_slice"]
    worst = "—" if w is None else f"{w} {0 - total['slices'][w]['drop_points']:+.2f}"
    return f"{ci(sp)} | {ci(total['overall']['difference_points'], '{:+.2f}')} | {worst} | "


def worst_output_cell(val: dict[str, Any]) -> str:
    """The dashboard's cell: the other output moved most, relative to its range, or a dash."""
    outputs = val.get("outputs") or {}
    worst = worst_output(outputs)
    if worst is None:
        return "—"
    return f"{worst} {100 * other_outputs(outputs)[worst]['relative_error']:.3g} %"


def _under_load(c: dict[str, Any]) -> str:
    """The dashboard's line on one candidate's serving sweep: saturation on either side."""
    server = c["benchmark"]["server"]
    return (
        f"- {c['name']}: saturation {_qps(server['saturation']['baseline']['saturation_qps'])} "
        f"-> {_qps(server['saturation']['candidate']['saturation_qps'])} "
        f"(p99 bound {server['latency_bound_ms']:.2f} ms); "
        "see its review note for the tail and queue delay per rate"
    )


def _qps(x: float | None) -> str:
    return "none met the bound" if x is None else f"{x:.0f} req/s"
