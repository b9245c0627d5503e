"""Review notes, the dashboard and the trade-off plot, rendered from the collected evidence."""

from __future__ import annotations

import io
from typing import Any

from stages.evidence.verdict import FAIL, RISK, other_outputs, worst_output
from stages.stats import Interval, classify_speedup

B, C = "baseline", "candidate"


def _of(inv: dict[str, Any]) -> str:
    """' (of N, spread over the lengths)' when the batch check ran on a sample of the set."""
    n = inv.get("of_rows", inv["rows"])
    return f" (of {n:,}, spread over the lengths)" if n > inv["rows"] else ""


def largest_batch(bench: dict[str, Any]) -> dict[str, Any]:
    """The timing run at the largest batch size on the validation inputs."""
    runs = [s for s in bench["batches"] if s.get("inputs", "validation") == "validation"]
    return max(runs, key=lambda s: s["batch_size"])


def batch_label(s: dict[str, Any]) -> str:
    """A timing run's batch size, with its input set when it is not the validation inputs."""
    inputs = s.get("inputs", "validation")
    return str(s["batch_size"]) + ("" if inputs == "validation" else f" ({inputs})")


def ms(x: float) -> str:
    return f"{x:.3f} ms" if x < 100 else f"{x:.0f} ms"


def ci(d: dict[str, float], fmt: str = "{:.3f}") -> str:
    return f"{fmt.format(d['estimate'])} [{fmt.format(d['low'])}, {fmt.format(d['high'])}]"


def kib(n: float) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1024**2 else f"{n / 1024**2:.1f} MiB"


def pct(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.0f}%"


def peak_of(compute: dict[str, Any], peak: dict[str, Any]) -> tuple[str, float]:
    """The machine limit that applies to a side: int8 when most of its arithmetic is integer."""
    if compute["integer_share"] >= 0.5:
        return "int8 matmul", peak["int8_matmul_gops_best"]
    return "fp32 matmul", peak["fp32_matmul_gflops_best"]


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


def summary_sentence(c: dict[str, Any]) -> str:
    """The one plain sentence a reviewer reads first."""
    bench, val = c["benchmark"], c["validation"]
    b1 = bench["batches"][0]
    size = bench["size_bytes"][C] / bench["size_bytes"][B]
    mem = bench["memory"][C]["peak_over_start_bytes"] / max(
        1, bench["memory"][B]["peak_over_start_bytes"]
    )
    p95b, p95c = b1["sides"][B]["p95"]["estimate"], b1["sides"][C]["p95"]["estimate"]
    moved = {
        "faster": "improved",
        "slower": "worsened",
        "no measurable change": "did not measurably change",
    }[effect(b1, "p95")]
    o = val["overall"]
    acc = (
        f"accuracy changed {0 - o['drop_points']:+.1f} points"
        if o["drop_points"]
        else "accuracy did not change"
    )
    flips = [(v["right_to_wrong"], k) for k, v in val["slices"].items() if v["right_to_wrong"]]
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


def floor_at(s: dict[str, Any], q: str) -> float:
    """The A/A noise floor of a timing run at percentile q (the p50 one in older evidence)."""
    return float(s.get("noise_floors", {}).get(q, s["noise_floor"]))


def floor_text(floor: float) -> str:
    """A noise floor as a percentage; "unbounded" when the A/A interval had no upper bound."""
    return "unbounded" if floor == float("inf") else f"{floor:.1%}"


def effect(s: dict[str, Any], q: str) -> str:
    """faster / slower / no measurable change of percentile q, against its own A/A floor."""
    sp = s["speedup"][q]
    return classify_speedup(Interval(sp["estimate"], sp["low"], sp["high"]), floor_at(s, q))


def confidence_label(c: dict[str, Any]) -> str:
    """The confidence level of the intervals, as measured (bench.confidence), e.g. "95 %"."""
    conf = float(c.get("protocol", {}).get("confidence", 0.95)) * 100
    return f"{conf:g} %"


def movements(c: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Metrics that improved, and those that got worse or stayed risky."""
    better, worse = [], []
    bench, val = c["benchmark"], c["validation"]
    for s in bench["batches"]:
        for q in ("p50", "p95", "p99"):
            sp = s["speedup"][q]
            line = f"{q} latency at batch {batch_label(s)}: {ms(s['sides'][B][q]['estimate'])} -> {ms(s['sides'][C][q]['estimate'])}, speedup {ci(sp)}"
            moved = effect(s, q)
            if moved == "faster":
                better.append(line)
            elif moved == "slower":
                worse.append(line)
        if s["stopped_by"] in ("max_seconds", "max_rounds"):
            worse.append(
                f"batch {batch_label(s)} timing ran to its cap ({s['stopped_by']}) before its decision was known"
            )
        for q, ok in s["reliable"].items():
            if not ok and q == "p99":
                worse.append(
                    f"p99 at batch {batch_label(s)} rests on {s['calls_per_side']} calls: its interval is the order-statistic one, wide for so few"
                )
    size = bench["size_bytes"]
    line = f"size on disk: {kib(size[B])} -> {kib(size[C])} ({pct(size[C] / size[B])})"
    (better if size[C] < size[B] else worse if size[C] > size[B] else []).append(line)
    mem = bench["memory"]
    mb, mc = mem[B]["peak_over_start_bytes"], mem[C]["peak_over_start_bytes"]
    line = f"peak memory over the interpreter: {kib(mb)} -> {kib(mc)} ({pct(mc / max(1, mb))})"
    if mc < 0.95 * mb:
        better.append(line)
    elif mc > 1.05 * mb:
        worse.append(line)
    o = val["overall"]
    line = f"accuracy: {o['baseline_accuracy']['estimate']:.2%} -> {o['candidate_accuracy']['estimate']:.2%} (difference {ci(o['difference_points'], '{:+.2f}')} points, McNemar p = {o['mcnemar_p']:.3g})"
    (worse if o["drop_points"] > 0 else better if o["drop_points"] < 0 else []).append(line)
    for name, s in val["slices"].items():
        if s["drop_points"] > 0:
            worse.append(
                f"slice {name}: {s['baseline_accuracy']['estimate']:.2%} -> {s['candidate_accuracy']['estimate']:.2%} ({s['right_to_wrong']} right->wrong)"
            )
    inv = val.get("batch_invariance")
    if inv and inv["argmax_changed"]:
        worse.append(
            f"predictions depend on the batch: {inv['argmax_changed']} of {inv['rows']} validation rows{_of(inv)} change class when run {inv['rows_per_call']} to a call instead of alone (max abs logit change {inv['max_abs_difference']:.3g}; accuracy {inv['accuracy_alone']:.2%} alone, {inv['accuracy_batched']:.2%} batched): the accuracy above is for requests served one at a time"
        )
    f = val["fidelity"]
    worse.append(
        f"output fidelity vs baseline: max abs error {f['max_abs_error']:.3g}, cosine {f['cosine']:.5f}, SQNR {f['sqnr_db']:.1f} dB"
    )
    for r in c["rules"]:
        if r["status"] == RISK:
            worse.append(f"risk: {r['reason']}")
    return better or ["nothing beyond this run's noise floor"], worse


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
        "| output | shape per row | role | baseline range | max abs error | of range | cosine | SQNR (dB) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
        *rows,
    ]


def worst_output_cell(val: dict[str, Any]) -> str:
    """The dashboard's cell: the other output moved most, relative to its range, or a dash."""
    outputs = val.get("outputs") or {}
    worst = worst_output(outputs)
    if worst is None:
        return "—"
    return f"{worst} {100 * other_outputs(outputs)[worst]['relative_error']:.3g} %"


def review(c: dict[str, Any], ctx: dict[str, Any]) -> str:
    """The review note of one candidate, in Markdown."""
    if c["status"] != "ok":
        return f"# Review: {c['name']}\n\n**Verdict: {c['verdict']}**: {c['reason']}\n"
    bench, val, man = c["benchmark"], c["validation"], c["manifest"]
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
        "## What changed",
        f"- technique `{c['name']}` with options `{man['options']}`",
        f"- declared to change: {', '.join(man['declares'])}",
        f"- manifest fields that differ: {', '.join(c['changed']) or 'none'}",
        f"- one-change check: {'**confounded** by ' + ', '.join(c['confounders']) if c['confounders'] else 'only declared fields differ'}",
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
        f"- {val['overall']['n']} validation rows, each predicted alone at its natural shape (as single requests are served), and every slice below; predictions of both sides in `{ctx['validation_dir']}/{c['name']}/predictions.csv`",
        f"- {val['failures']['right_to_wrong']} right->wrong flips and the {val['failures']['still_wrong_kept']} hardest still-wrong rows, rendered in `{val['failures']['folder']}/` (index.csv lists them by margin)",
        *[
            f"  - `{f['file']}`: label {f['label']}, candidate said {f['candidate_pred']} ({f['set']} row {f['index']})"
            for f in c["failures"][:5]
        ],
        "",
        f"## Check before shipping: {man['check']}",
        "",
        *c.get("check_lines", []),
        "",
        "| slice | rows | baseline | candidate | drop (points) | right->wrong | wrong->right |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {k} | {s['n']} | {s['baseline_accuracy']['estimate']:.2%} | {s['candidate_accuracy']['estimate']:.2%} | {s['drop_points']:+.2f} | {s['right_to_wrong']} | {s['wrong_to_right']} |"
            for k, s in val["slices"].items()
        ],
        *outputs_table(val),
        "",
        f"## Speed (interleaved rounds of baseline, candidate and baseline again in one process; {confidence_label(bench)} intervals, bootstrap over rounds, widened by order statistics at p90-p99)",
        "",
        "| batch | baseline p50 | candidate p50 | speedup p50 | speedup p95 | speedup p99 | A/A p50 | A/A p99 | noise floor p50 / p99 | rounds x calls | ended by |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        *[
            f"| {batch_label(s)} | {ms(s['sides'][B]['p50']['estimate'])} | {ms(s['sides'][C]['p50']['estimate'])} | {ci(s['speedup']['p50'])} | {ci(s['speedup']['p95'])} | {ci(s['speedup']['p99'])} | {ci(s['aa_p50'])} | {ci(s.get('aa', {}).get('p99', s['aa_p50']))} | {floor_text(s['noise_floor'])} / {floor_text(floor_at(s, 'p99'))} | {s['rounds']} x {s.get('calls_per_block', '?')} | {s['stopped_by']} |"
            for s in bench["batches"]
        ],
        "",
        f"Session load: {bench['load_ms'][B]:.1f} ms -> {bench['load_ms'][C]:.1f} ms. Sessions: `{bench['session']}`.",
        "",
        "### Distance to this machine's limit (operations counted from the graph; peak from `peak`)",
        "",
        "| batch | side | ops per call | integer share | achieved G(FL)OP/s at p50 | peak | fraction of peak |",
        "|---:|---|---:|---:|---:|---|---:|",
        *limit_rows(c, ctx["peak"]),
        "",
        "## Evidence card",
        "",
        "| deployment target | artifact | metric | failure check | expected output |",
        "|---|---|---|---|---|",
        f"| {ctx['target']} ({bench['session']['provider']}, {bench['session']['intra_op_threads']} threads) on host {ctx['host']} | `{ctx['candidates_dir']}/{c['name']}/model.onnx` (sha256 {man['graph']['sha256'][:12]}, {kib(man['graph']['size_bytes'])}) | p50 speedup at batch 1 {ci(bench['batches'][0]['speedup']['p50'])}; accuracy drop {val['overall']['drop_points']:+.2f} points | {man['check']}: worst slice {val['worst_slice']} {val['slices'][val['worst_slice']]['drop_points']:+.2f} points | same {len(man['graph']['io']['outputs'])} output(s) as the baseline, {', '.join(o['name'] + ' ' + str(o['shape']) for o in man['graph']['io']['outputs'])}; max abs logit error {val['fidelity']['max_abs_error']:.3g} |",
        "",
        "## Budget (fixed before measuring)",
        "",
        "| rule | budget | measured | status |",
        "|---|---|---|---|",
        *[f"| {r['name']} | {r['budget']} | {r['measured']} | {r['status']} |" for r in c["rules"]],
        "",
    ]
    return "\n".join(lines)


def dashboard(cands: list[dict[str, Any]], ctx: dict[str, Any], tracking_line: str) -> str:
    rows = []
    for c in cands:
        if c["status"] != "ok":
            reason = c["reason"].replace("|", "\\|")  # a table cell
            rows.append(f"| {c['name']} | **{c['verdict']}** | | | | | | | | | | {reason} |")
            continue
        b1 = c["benchmark"]["batches"][0]
        big = largest_batch(c["benchmark"])
        v = c["validation"]
        size = c["benchmark"]["size_bytes"]
        worst = v["worst_slice"]
        reasons = (
            "; ".join(r["reason"] for r in c["rules"] if r["status"] in (FAIL, RISK))
            or "every rule passed"
        )
        comp = big["compute"]
        frac = "/".join(
            f"{comp[s]['gflops_p50'] / peak_of(comp[s], ctx['peak'])[1]:.0%}" for s in (B, C)
        )
        rows.append(
            f"| [{c['name']}](review/{c['name']}.md) | **{c['verdict']}** | {ci(b1['speedup']['p50'])} | "
            f"{ci(b1['speedup']['p95'])} | {big['throughput_ratio']:.2f}x (b{big['batch_size']}) | {pct(size[C] / size[B])} | "
            f"{ci(v['overall']['difference_points'], '{:+.2f}')} | "
            f"{worst} {0 - v['slices'][worst]['drop_points']:+.2f} | {worst_output_cell(v)} | {v['overall']['right_to_wrong']} | {frac} | {reasons} |"
        )
    loaded = [
        f"- {c['name']}: saturation {_qps(c['benchmark']['server']['saturation']['baseline']['saturation_qps'])} "
        f"-> {_qps(c['benchmark']['server']['saturation']['candidate']['saturation_qps'])} "
        f"(p99 bound {c['benchmark']['server']['latency_bound_ms']:.2f} ms); see its review note for the tail and queue delay per rate"
        for c in cands
        if c["status"] == "ok" and c["benchmark"].get("server")
    ]
    noise = [
        f"{c['name']}: {c['benchmark']['batches'][0]['noise_floor']:.1%}"
        for c in cands
        if c["status"] == "ok"
    ]
    return "\n".join(
        [
            f"# Candidates for {ctx['model']} on target {ctx['target']}",
            "",
            f"Host {ctx['host']} ({ctx['cpu']}). Baseline: `{ctx['baseline_file']}` (sha256 {ctx['baseline_graph']['sha256'][:12]}), accuracy {ctx['baseline_accuracy']:.2%}. "
            f"Speedups are baseline / candidate latency (above 1 = faster) with {ctx.get('confidence_label', '95 %')} intervals; A/A noise floor at batch 1: {', '.join(noise) or 'n/a'}.",
            "",
            "| candidate | verdict | p50 speedup b1 | p95 speedup b1 | throughput | size | accuracy change (points) | worst slice (points) | other outputs (worst, of range) | right->wrong | % of peak, largest batch (base/cand) | why |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            *(
                [
                    "Under load (server scenario, seeded Poisson arrivals, same schedule for both sides):",
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


def tradeoff_png(cands: list[dict[str, Any]], budget: Any, label: str = "95 %") -> bytes:
    """Speedup (p50, batch 1) against accuracy change, with intervals and the Pareto front."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = []
    fig, ax = plt.subplots(figsize=(7, 5), dpi=100)
    for c in cands:
        if c["status"] != "ok":
            continue
        sp = c["benchmark"]["batches"][0]["speedup"]["p50"]
        d = c["validation"]["overall"]["difference_points"]
        x, y = d["estimate"], sp["estimate"]
        ax.errorbar(
            x,
            y,
            xerr=[[x - d["low"]], [d["high"] - x]],
            yerr=[[y - sp["low"]], [sp["high"] - y]],
            fmt="o",
            capsize=3,
        )
        ax.annotate(
            f"{c['name']} ({c['verdict']})",
            (x, y),
            textcoords="offset points",
            xytext=(6, 6),
            fontsize=8,
        )
        pts.append((x, y))
    front = sorted(p for p in pts if not any(q != p and q[0] >= p[0] and q[1] >= p[1] for q in pts))
    if len(front) > 1:
        ax.plot(*zip(*front, strict=True), "--", color="grey", label="Pareto front")
    ax.axhline(1.0, color="black", lw=0.8)
    ax.axhline(
        budget.min_speedup,
        color="green",
        lw=0.8,
        ls=":",
        label=f"min speedup {budget.min_speedup:g}x",
    )
    ax.axvline(0.0, color="black", lw=0.8)
    ax.axvline(
        -budget.max_accuracy_drop,
        color="red",
        lw=0.8,
        ls=":",
        label=f"max drop {budget.max_accuracy_drop:g} pt",
    )
    ax.set_xlabel(f"accuracy change vs baseline (points, {label} interval)")
    ax.set_ylabel(f"p50 speedup at batch 1 (x, {label} interval)")
    ax.set_title("Speed against accuracy, one change per candidate")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _qps(x: float | None) -> str:
    return "none met the bound" if x is None else f"{x:.0f} req/s"


def _ops(ops: dict[str, int]) -> str:
    return ", ".join(f"{k} x{v}" for k, v in ops.items())
