"""Lines of the review note that the techniques' check sections share: intervals, shares,
accuracy changes, speed per batch size, accuracy per slice, a fine-tune's losses."""

from __future__ import annotations

from typing import Any


def speedup(d: dict[str, float]) -> str:
    """A speedup with its interval, two decimals: 1.20x [1.10, 1.30]."""
    return f"{d['estimate']:.2f}x [{d['low']:.2f}, {d['high']:.2f}]"


def percent(x: float) -> str:
    return f"{x * 100:.1f} %"


def points(drop: float) -> str:
    """An accuracy drop in percentage points, in words."""
    if drop == 0:
        return "no accuracy change"
    return f"accuracy {'down' if drop > 0 else 'up'} {abs(drop):.1f} points"


def join(xs: list[Any]) -> str:
    return ", ".join(str(x) for x in xs)


def speed_lines(batches: list[dict[str, Any]]) -> list[str]:
    """One line per batch size: p50/p95/p99 speedups with their intervals, and the effect."""
    out = []
    for b in batches:
        qs = "; ".join(
            f"{q} {speedup(b['speedup'][q])}" for q in ("p50", "p95", "p99") if q in b["speedup"]
        )
        out.append(
            f"- Batch {b['batch_size']}: speedup {qs}: {b['effect']} "
            f"(noise floor ±{b['noise_floor'] * 100:.0f} %)."
        )
    return out


def speed_and_not_faster(c: dict[str, Any], headline: str, why: str) -> list[str]:
    """The speed lines, then `headline` (bold, with the batch sizes) where it was not faster."""
    batches = c.get("benchmark", {}).get("batches", [])
    lines = speed_lines(batches)
    slow = [b["batch_size"] for b in batches if b["effect"] != "faster"]
    if slow:
        where = "" if len(slow) == len(batches) else f" at batch {join(slow)}"
        lines.append(f"- **{headline}{where}{why}")
    return lines


def accuracy_lines(c: dict[str, Any]) -> list[str]:
    o = c.get("validation", {}).get("overall")
    if not o:
        return []
    return [
        f"- Overall: {points(o['drop_points'])}, {o['right_to_wrong']} right->wrong, "
        f"{o['wrong_to_right']} wrong->right."
    ]


def slice_lines(c: dict[str, Any]) -> list[str]:
    """Accuracy per slice, largest drop first, the worst slice marked."""
    v = c.get("validation", {})
    slices = v.get("slices") or {}
    worst = v.get("worst_slice")
    out = []
    for name, s in sorted(slices.items(), key=lambda kv: (-kv[1]["drop_points"], kv[0])):
        mark = " (worst slice)" if name == worst else ""
        acc = ""
        if "baseline_accuracy" in s and "candidate_accuracy" in s:
            acc = (
                f"{percent(s['baseline_accuracy']['estimate'])} -> "
                f"{percent(s['candidate_accuracy']['estimate'])}, "
            )
        out.append(
            f"- Slice {name}{mark}: {acc}{points(s['drop_points'])}, "
            f"{s['right_to_wrong']} right->wrong, {s.get('wrong_to_right', 0)} wrong->right."
        )
    return out


def finetune_line(log: dict[str, Any]) -> str:
    """A fine-tune's epochs, rows and train loss per epoch."""
    losses = ", ".join(f"{e['loss']:.4f}" for e in log["epochs"])
    what = f" ({log['trained']})" if log.get("trained") else ""
    n, of = log.get("train_rows"), log.get("of_train_rows")
    rows = f" on {n:,} of {of:,} train rows (seeded sample)" if n and of and n < of else ""
    return f"- Fine-tune{what}: {len(log['epochs'])} epoch(s){rows}, train loss per epoch {losses}."
