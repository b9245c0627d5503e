"""The review note of one candidate, in Markdown."""

from __future__ import annotations

from typing import Any

from stages.evidence.findings import movements, summary_sentence
from stages.evidence.formats import B, C, ci, pct
from stages.evidence.tables import (
    evidence_card,
    limit_rows,
    outputs_table,
    slice_rows,
    speed_rows,
)


def review(c: dict[str, Any], ctx: dict[str, Any]) -> str:
    """The review note of one candidate, in Markdown."""
    if c["status"] != "ok":
        return f"# Review: {c['name']}\n\n**Verdict: {c['verdict']}**: {c['reason']}\n"
    bench, val, man = c["benchmark"], c["validation"], c["manifest"]
    failed = val["failures"]
    better, worse = movements(c)
    base_ops, cand_ops = ctx["baseline_graph"]["op_types"], man["graph"]["op_types"]
    lines = [
        f"# Review: {c['name']} on {ctx['model']} (target {ctx['target']})",
        "",
        f"**Verdict: {c['verdict']}**",
        "",
        *[
            f"- {r['name']}: **{r['status']}** {('- ' + r['reason']) if r['reason'] else ''}"
            for r in c["rules"]
        ],
        "",
        f"> {summary_sentence(c)}",
        "",
        *stack_section(c, ctx),
        "## What changed",
        f"- technique `{c['name']}` with options `{man['options']}`",
        f"- declared to change: {', '.join(man['declares'])}",
        f"- manifest fields that differ: {', '.join(c['changed']) or 'none'}",
        f"- one-change check: {_one_change(c['confounders'])}",
        f"- op types: {_ops(base_ops)} -> {_ops(cand_ops)}",
        f"- details: `{man.get('details', {})}`",
        "",
        "## Which metric improved",
        *[f"- {x}" for x in better],
        "",
        "## Which got worse or stayed risky",
        *[f"- {x}" for x in worse],
        "",
        "## Which validation examples were checked",
        f"- {val['overall']['n']} validation rows, each predicted alone at its natural shape "
        "(as single requests are served), and every slice below; predictions of both sides in "
        f"`{ctx['validation_dir']}/{c['name']}/predictions.csv`",
        f"- {failed['right_to_wrong']} right->wrong flips and the {failed['still_wrong_kept']} "
        f"hardest still-wrong rows, rendered in `{failed['folder']}/` "
        "(index.csv lists them by margin)",
        *[
            f"  - `{f['file']}`: label {f['label']}, candidate said {f['candidate_pred']} "
            f"({f['set']} row {f['index']})"
            for f in c["failures"][:5]
        ],
        "",
        f"## Check before shipping: {man['check']}",
        "",
        *c.get("check_lines", []),
        "",
        *slice_rows(val),
        *outputs_table(val),
        "",
        *speed_rows(bench),
        "",
        f"Session load: {bench['load_ms'][B]:.1f} ms -> {bench['load_ms'][C]:.1f} ms. "
        f"Sessions: `{bench['session']}`.",
        "",
        "### Distance to this machine's limit (operations counted from the graph; "
        "peak from `peak`)",
        "",
        "| batch | side | ops per call | integer share | achieved G(FL)OP/s at p50 | peak "
        "| fraction of peak |",
        "|---:|---|---:|---:|---:|---|---:|",
        *limit_rows(c, ctx["peak"]),
        "",
        "## Evidence card",
        "",
        *evidence_card(c, ctx),
        "",
        "## Budget (fixed before measuring)",
        "",
        "| rule | budget | measured | status |",
        "|---|---|---|---|",
        *[f"| {r['name']} | {r['budget']} | {r['measured']} | {r['status']} |" for r in c["rules"]],
        "",
    ]
    return "\n".join(lines)


def stack_section(c: dict[str, Any], ctx: dict[str, Any]) -> list[str]:
    """On a stack: the step against the control beside the stack against the original baseline
    (speed timed in the same rounds, accuracy and every slice paired row by row); [] without."""
    total = c["validation"].get("cumulative")
    if total is None:
        return []
    b1 = c["benchmark"]["batches"][0]
    step_sp, stack_sp = b1["speedup"]["p50"], b1["cumulative"]["speedup"]["p50"]
    step_o, stack_o = c["validation"]["overall"], total["overall"]
    step_w, stack_w = c["validation"]["worst_slice"], total["worst_slice"]
    size = c["benchmark"]["size_bytes"]

    def worst(v: dict[str, Any], name: str | None) -> str:
        return "—" if name is None else f"{name} {-v['slices'][name]['drop_points']:+.2f}"

    return [
        "## On the stack",
        "",
        f"The control is the baseline with {' -> '.join(ctx.get('control', []))} applied "
        f"(`{ctx['baseline_file']}`). The step is this candidate against the control (its own "
        "effect, which every step rule judges); the stack is this candidate against the "
        "original baseline (the stack's accuracy and slice rules judge it against the same "
        "budget).",
        "",
        "| | step (against the control) | stack (against the original baseline) |",
        "|---|---|---|",
        f"| p50 speedup, batch 1 | {ci(step_sp)} | {ci(stack_sp)} |",
        f"| accuracy change (points) | {ci(step_o['difference_points'], '{:+.2f}')} | "
        f"{ci(stack_o['difference_points'], '{:+.2f}')} |",
        f"| worst slice (points) | {worst(c['validation'], step_w)} | {worst(total, stack_w)} |",
        f"| right->wrong | {step_o['right_to_wrong']} | {stack_o['right_to_wrong']} |",
        f"| size change | {pct(size[C] / size[B])} | "
        f"{pct(size[C] / size.get('original', size[B]))} |",
        "",
        "Every slice, the stack against the original baseline:",
        "",
        *slice_rows(total),
        "",
    ]


def _ops(ops: dict[str, int]) -> str:
    return ", ".join(f"{k} x{v}" for k, v in ops.items())


def _one_change(confounders: list[str]) -> str:
    return (
        "**confounded** by " + ", ".join(confounders)
        if confounders
        else "only declared fields differ"
    )
