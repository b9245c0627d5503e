"""The ladder's evidence: one record per rung (its control, each candidate's verdict with the
step's and the stack's figures), `reports/ladder.md` and the plot of the path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stages import params as config
from stages import report, stack  # report: the report stage's reading of the evidence files
from stages.evidence.formats import ci
from stages.evidence.rule import FAIL, RISK
from stages.evidence.verdict import decide
from stages.export import MANIFEST_FILE
from stages.storage import read_json
from stages.tracking import stack_tag


def rung_record(p: config.Params, k: int) -> dict[str, Any]:
    """Rung k as the workspace's evidence gives it: its control, and per candidate the verdict,
    the reasons of any rule that failed or held, the step's p50 speedup at batch 1, and the
    stack's p50 speedup, accuracy change and worst slice against the original baseline (the
    step's own on rung 0, where the control is the baseline)."""
    graph = read_json(stack.control_dir(p.paths, p.control) / MANIFEST_FILE, "control")["graph"]
    summary = read_json(Path(p.paths.summary), "report")
    out: dict[str, Any] = {
        "rung": k,
        "control": list(p.control),
        "evidence": read_json(Path(p.paths.tracking), "report").get("evidence", ""),
        "candidates": {},
    }
    for name in p.technique:
        c = report.collect(p, name, graph)
        verdict, rules = decide(c, p.budget)
        entry: dict[str, Any] = {"verdict": verdict}
        if c["status"] != "ok":
            entry["why"] = c["reason"]
            out["candidates"][name] = entry
            continue
        b1, val = c["benchmark"]["batches"][0], c["validation"]
        stack_b = b1.get("cumulative", b1)
        total = val.get("cumulative", val)
        worst = total["worst_slice"]
        entry |= {
            "why": "; ".join(r.reason for r in rules if r.status in (FAIL, RISK)) or "",
            "step_p50": b1["speedup"]["p50"],
            "stack_p50": stack_b["speedup"]["p50"],
            "stack_accuracy_points": total["overall"]["difference_points"],
            "stack_worst_slice": worst,
            "stack_worst_slice_points": 0 - total["slices"][worst]["drop_points"] if worst else 0.0,
            "verdict_in_summary": summary["candidates"][name]["verdict"],
        }
        out["candidates"][name] = entry
    return out


def ladder_md(rungs: list[dict[str, Any]], p: config.Params) -> str:
    """reports/ladder.md: the path, then each rung's candidates."""
    lines = [
        f"# The ladder of {p.model_name} on target {p.target.name}",
        "",
        "Each rung judges every selected candidate against that rung's control (the step's own "
        "effect: the rung's rules); every candidate also carries its effect against the "
        "original baseline (the stack: p50 speedup at batch 1 timed in the same interleaved "
        "rounds, accuracy and every slice paired row by row), and the budget's accuracy and "
        "slice rules apply to the stack too. The SHIP candidate with the best lower bound of "
        "its p50 speedup becomes the next rung's control. Intervals are "
        f"{p.bench.confidence:.0%}.",
        "",
        "| rung | control | promoted | its step p50 speedup b1 | stack p50 speedup b1 "
        "(against the original) | stack accuracy change (points) | stack worst slice "
        "(points) | minutes | reproduce |",
        "|---|---|---|---|---|---|---|---:|---|",
    ]
    for r in rungs:
        best = r.get("promoted")
        c = r["candidates"].get(best, {}) if best else {}
        minutes = "" if r.get("seconds") is None else f"{r['seconds'] / 60:.1f}"
        figures = (
            f"{ci(c['step_p50'])} | {ci(c['stack_p50'])} | "
            f"{ci(c['stack_accuracy_points'], '{:+.2f}')} | "
            f"{c['stack_worst_slice']} {c['stack_worst_slice_points']:+.2f}"
            if c
            else " | | "
        )
        chosen = best or f"— ({r.get('stopped', '')})"
        lines.append(
            f"| {r['rung']} | {stack_tag(r['control'])} | {chosen} | {figures} | {minutes} | "
            f"`{r['command']}` |"
        )
    last = rungs[-1]
    lines += ["", f"The climb stopped: {last.get('stopped', 'interrupted')}.", ""]
    lines += ["![the path: stack speedup against stack accuracy change](ladder.png)", ""]
    for r in rungs:
        lines += [
            f"## Rung {r['rung']}: control {stack_tag(r['control'])}",
            "",
            f"Review notes and dashboard: [ladder/rung-{r['rung']}/dashboard.md]"
            f"(ladder/rung-{r['rung']}/dashboard.md). Evidence key `{r['evidence'][:12]}`.",
            "",
            "| candidate | verdict | step p50 speedup b1 | stack p50 speedup b1 | stack accuracy "
            "change (points) | stack worst slice (points) | why not SHIP |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, c in r["candidates"].items():
            why = c.get("why", "").replace("|", "\\|")
            if "step_p50" not in c:
                lines.append(f"| {name} | {c['verdict']} | | | | | {why} |")
                continue
            lines.append(
                f"| {name} | {c['verdict']} | {ci(c['step_p50'])} | {ci(c['stack_p50'])} | "
                f"{ci(c['stack_accuracy_points'], '{:+.2f}')} | {c['stack_worst_slice']} "
                f"{c['stack_worst_slice_points']:+.2f} | {why} |"
            )
        promoted = r.get("promoted")
        lines += [
            "",
            f"Promoted: **{promoted}** (the SHIP with the best lower bound of its p50 speedup); "
            f"signed off as a commit with `make promote T={promoted}` on this rung's evidence."
            if promoted
            else f"Nothing promoted: {r.get('stopped', '')}.",
            "",
        ]
    return "\n".join(lines)


def ladder_png(rungs: list[dict[str, Any]]) -> bytes:
    """The path: each promoted stack's p50 speedup against the original baseline (x) and its
    accuracy change (y), with intervals, from the baseline at (1, 0)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=100)
    xs, ys = [1.0], [0.0]
    ax.annotate("baseline", (1.0, 0.0), textcoords="offset points", xytext=(6, 6), fontsize=8)
    for r in rungs:
        best = r.get("promoted")
        if not best:
            continue
        c = r["candidates"][best]
        sp, d = c["stack_p50"], c["stack_accuracy_points"]
        x, y = sp["estimate"], d["estimate"]
        ax.errorbar(
            x,
            y,
            xerr=[[x - sp["low"]], [sp["high"] - x]],
            yerr=[[y - d["low"]], [d["high"] - y]],
            fmt="o",
            capsize=3,
        )
        label = stack_tag([*r["control"], best])
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
        xs.append(x)
        ys.append(y)
    ax.plot(xs, ys, "-", color="grey", alpha=0.5)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xlabel("p50 speedup at batch 1 against the original baseline")
    ax.set_ylabel("accuracy change against the original baseline (points)")
    ax.set_title("the ladder: one point per promoted step")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
