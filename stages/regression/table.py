"""The re-benchmark's Markdown table, fit for a pull-request comment."""

from __future__ import annotations

from stages.regression.judge import NOISY, REGRESSION, Row
from stages.regression.noise import MIN_HISTORY


def table(
    rows: list[Row], against: str, retest: str, max_floor: float, confidence: float = 0.95
) -> str:
    """The Markdown table; `retest` says whether a retest ran, and if not, why."""

    def iv(d: dict[str, float] | None) -> str:
        return "none" if d is None else f"{d['estimate']:.3f} [{d['low']:.3f}, {d['high']:.3f}]"

    def batch(r: Row) -> str:
        return f"{r.batch_size}{'' if r.inputs == 'validation' else ' (' + r.inputs + ')'}"

    n = sum(r.status == REGRESSION for r in rows)
    lines = [
        f"### Re-benchmark against `{against}`: p50 speedup (baseline / candidate), "
        f"{confidence:.0%} intervals",
        "",
        "| candidate | batch | committed | now | compared with | threshold | retest | history "
        "| status |",
        "|---|---:|---|---|---|---:|---|---|---|",
        *[
            f"| {r.technique} | {batch(r)} | {iv(r.before)} | {iv(r.after)} | "
            f"{r.compared_with()} | {f'{r.threshold:.1%} ({r.basis})' if r.basis else ''} | "
            f"{'; '.join(iv(x) for x in r.retests)} | {r.history} | {r.status} |"
            for r in rows
        ],
        "",
        f"{n} regression(s): a drop beyond the threshold below the median of the series' runs "
        f"since its last shift once they are {MIN_HISTORY}, else below the committed value. The "
        "threshold is the larger of the minimum change and the drop unchanged runs exceed "
        f"{1 - confidence:.0%} of the time: below the median, s * sqrt(1/m + pi/(2 n)) for the "
        "mean of m new runs against a median of n, s the history's run-to-run spread; below the "
        "committed value, two runs' noise (s from the history once it holds "
        f"{MIN_HISTORY} runs, else both intervals); {retest}.",
    ]
    if k := sum(r.status.startswith(NOISY) for r in rows):
        lines += [
            "",
            f"{k} row(s) too noisy to judge: a threshold wider than {max_floor:.1%} "
            "(`bench.max_noise_floor`), so a drop that large could pass unseen; the history "
            f"narrows it once it holds {MIN_HISTORY} runs.",
        ]
    return "\n".join(lines) + "\n"
