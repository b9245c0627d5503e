"""The dashboard: one row per candidate, and the serving results under load."""

from __future__ import annotations

from typing import Any, cast

from stages.evidence.formats import B, C, ci, largest_batch, pct, peak_of
from stages.evidence.output_rules import other_outputs, worst_output
from stages.evidence.records import candidate_evidence
from stages.evidence.rule import FAIL, RISK


def dashboard(cands: list[dict[str, Any]], ctx: dict[str, Any], tracking_line: str) -> str:
    rows = []
    for c in cands:
        if c["status"] != "ok":
            reason = c["reason"].replace("|", "\\|")  # a table cell
            rows.append(f"| {c['name']} | **{c['verdict']}** | | | | | | | | | | {reason} |")
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
            f"{v.overall['right_to_wrong']} | {frac} | {reasons} |"
        )
    loaded = [_under_load(c) for c in cands if c["status"] == "ok" and c["benchmark"].get("server")]
    noise = [
        f"{c['name']}: {c['benchmark']['batches'][0]['noise_floor']:.1%}"
        for c in cands
        if c["status"] == "ok"
    ]
    return "\n".join(
        [
            f"# Candidates for {ctx['model']} on target {ctx['target']}",
            "",
            f"Host {ctx['host']} ({ctx['cpu']}). Baseline: `{ctx['baseline_file']}` "
            f"(sha256 {ctx['baseline_graph']['sha256'][:12]}), "
            f"accuracy {ctx['baseline_accuracy']:.2%}. "
            "Speedups are baseline / candidate latency (above 1 = faster) with "
            f"{ctx.get('confidence_label', '95 %')} intervals; "
            f"A/A noise floor at batch 1: {', '.join(noise) or 'n/a'}.",
            "",
            "| candidate | verdict | p50 speedup b1 | p95 speedup b1 | throughput | size | "
            "accuracy change (points) | worst slice (points) | other outputs (worst, of range) | "
            "right->wrong | % of peak, largest batch (base/cand) | why |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
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
