"""The trade-off plot: speedup against accuracy change, with intervals and the Pareto front."""

from __future__ import annotations

import io
from typing import Any


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
