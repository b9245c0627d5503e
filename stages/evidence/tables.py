"""The review note's tables: slices, every output, speed per batch, the machine's limit, and the
evidence card."""

from __future__ import annotations

from typing import Any

from stages.evidence.formats import (
    B,
    C,
    batch_label,
    ci,
    confidence_label,
    floor_at,
    floor_text,
    kib,
    ms,
    peak_of,
)


def slice_rows(val: dict[str, Any]) -> list[str]:
    """Each slice's accuracy on both sides, its drop and its flips, and, where the evidence has
    it, the share of rows where both sides predict the same class (with an all-rows line)."""
    agree = "agreement" in val.get("overall", {})
    rows = ([("all validation rows", val["overall"])] if agree else []) + list(
        val["slices"].items()
    )
    head = "| slice | rows | baseline | candidate | drop (points) | right->wrong | wrong->right |"
    rule = "|---|---:|---:|---:|---:|---:|---:|"
    if agree:
        head, rule = head + " agreement |", rule + "---:|"
    out = [head, rule]
    for k, s in rows:
        line = (
            f"| {k} | {s['n']} | {s['baseline_accuracy']['estimate']:.2%} | "
            f"{s['candidate_accuracy']['estimate']:.2%} | {s['drop_points']:+.2f} | "
            f"{s['right_to_wrong']} | {s['wrong_to_right']} |"
        )
        if agree:
            line += f" {s['agreement']['estimate']:.2%} |" if "agreement" in s else " |"
        out.append(line)
    return out


def outputs_table(val: dict[str, Any]) -> list[str]:
    """One line per model output: how far the candidate moved it on the validation rows."""
    outputs = sorted((val.get("outputs") or {}).items(), key=lambda item: item[1]["index"])
    if not outputs:
        return []
    rows = []
    for name, o in outputs:
        role = "labels" if o["label"] else "other"
        if "skipped" in o:
            rows.append(f"| {name} | {o['shape']} | {role} | {o['skipped']} | | | | |")
            continue
        rows.append(
            f"| {name} | {o['shape']} | {role} | {o['baseline_range']:.4g} | "
            f"{o['max_abs_error']:.3g} | {o['relative_error']:.2%} | {o['cosine']:.5f} | "
            f"{o['sqnr_db']:.1f} |"
        )
    return [
        "",
        "Every output, candidate against baseline on the same validation rows, each row alone "
        "(error relative to the output's range, max - min, on the baseline):",
        "",
        "| output | shape per row | role | baseline range | max abs error | of range | cosine "
        "| SQNR (dB) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
        *rows,
    ]


def speed_rows(bench: dict[str, Any]) -> list[str]:
    """The speed section's heading and its table: one row per timing run."""
    return [
        "## Speed (interleaved rounds of baseline, candidate and baseline again in one process; "
        f"{confidence_label(bench)} intervals, bootstrap over rounds, widened by order "
        "statistics at p90-p99)",
        "",
        "| batch | baseline p50 | candidate p50 | speedup p50 | speedup p95 | speedup p99 "
        "| A/A p50 | A/A p99 | noise floor p50 / p99 | rounds x calls | ended by |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        *[_speed_row(s) for s in bench["batches"]],
    ]


def _speed_row(s: dict[str, Any]) -> str:
    sp, aa99 = s["speedup"], s.get("aa", {}).get("p99", s["aa_p50"])
    return (
        f"| {batch_label(s)} | {ms(s['sides'][B]['p50']['estimate'])} | "
        f"{ms(s['sides'][C]['p50']['estimate'])} | {ci(sp['p50'])} | {ci(sp['p95'])} | "
        f"{ci(sp['p99'])} | {ci(s['aa_p50'])} | {ci(aa99)} | "
        f"{floor_text(s['noise_floor'])} / {floor_text(floor_at(s, 'p99'))} | "
        f"{s['rounds']} x {s.get('calls_per_block', '?')} | {s['stopped_by']} |"
    )


def limit_rows(c: dict[str, Any], peak: dict[str, Any]) -> list[str]:
    """Achieved GFLOP/s at p50 per side and batch, and the fraction of this machine's peak."""
    rows = []
    for s in c["benchmark"]["batches"]:
        for side in (B, C):
            comp = s["compute"][side]
            kind, limit = peak_of(comp, peak)
            rows.append(
                f"| {batch_label(s)} | {side} | {comp['flops'] / 1e6:.2f} M | "
                f"{comp['integer_share']:.0%} | {comp['gflops_p50']:.1f} | {kind} {limit:.0f} | "
                f"{comp['gflops_p50'] / limit:.1%} |"
            )
    return rows


def evidence_card(c: dict[str, Any], ctx: dict[str, Any]) -> list[str]:
    """Where the candidate runs, what it is, what was measured, and what a deployment checks."""
    bench, val, man = c["benchmark"], c["validation"], c["manifest"]
    session, graph, worst = bench["session"], man["graph"], val["worst_slice"]
    outputs = graph["io"]["outputs"]
    return [
        "| deployment target | artifact | metric | failure check | expected output |",
        "|---|---|---|---|---|",
        f"| {ctx['target']} ({session['provider']}, {session['intra_op_threads']} threads) "
        f"on host {ctx['host']} | `{ctx['candidates_dir']}/{c['name']}/model.onnx` "
        f"(sha256 {graph['sha256'][:12]}, {kib(graph['size_bytes'])}) | "
        f"p50 speedup at batch 1 {ci(bench['batches'][0]['speedup']['p50'])}; "
        f"accuracy drop {val['overall']['drop_points']:+.2f} points | "
        f"{man['check']}: worst slice {worst} {val['slices'][worst]['drop_points']:+.2f} points "
        f"| same {len(outputs)} output(s) as the baseline, "
        f"{', '.join(o['name'] + ' ' + str(o['shape']) for o in outputs)}; "
        f"max abs logit error {val['fidelity']['max_abs_error']:.3g} |",
    ]
