"""Numbers as the review notes and the dashboard write them: latencies, intervals, sizes,
ratios, batch labels, noise floors, and the machine limit a side is measured against."""

from __future__ import annotations

from typing import Any

from stages.stats import Interval, classify_speedup

B, C = "baseline", "candidate"


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
