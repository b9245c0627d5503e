"""How far a series' p50 speedup moves between unchanged runs, and the drop that counts: from
the spread of its past runs once the history holds `MIN_HISTORY` of them, else from the two
runs' own intervals."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

MIN_HISTORY = 5  # past runs of a series (since its last shift) before its spread and median count
RECENT = 20  # the most recent past runs whose spread sets the threshold


@dataclass(frozen=True)
class Reference:
    """What a new run is compared with once its series' history is long enough: the median of
    the past runs since the last shift, and the run-to-run spread of the most recent runs."""

    median: float
    runs: int  # past runs since the last shift the median is over
    shifted: bool  # whether a shift came before them (else they are the whole history)
    spread: float  # `run_spread` of the last `recent` past runs
    recent: int

    def threshold(self, m: int, min_change: float, confidence: float) -> tuple[float, str]:
        """`mean_threshold` for the mean of m new runs, and what set it."""
        limit = mean_threshold(self.spread, m, self.runs, min_change, confidence)
        basis = f"spread of {self.recent} past runs"
        return (limit, basis) if limit > min_change else (min_change, "minimum change")

    def describe(self) -> str:
        since = "runs since the last shift" if self.shifted else "past runs"
        return f"median of {self.runs} {since}, {self.median:.3f}"


def gmean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def interval_sd(iv: dict[str, float], confidence: float) -> float:
    """The standard deviation, on the log scale, that a two-sided interval at `confidence`
    implies for its estimate."""
    z = NormalDist().inv_cdf((1 + confidence) / 2)
    return (math.log(iv["high"]) - math.log(iv["low"])) / (2 * z)


def run_spread(runs: list[float]) -> float:
    """The run-to-run standard deviation, on the log scale, of a series' p50 speedups: the
    median moving range |log x[i] - log x[i-1]| over 0.954 (the median of |N(0, 2 sd^2)|), as
    an individuals control chart estimates it. A shift moves one range, an odd run two: the
    median of the ranges stays the noise."""
    ranges = np.abs(np.diff(np.log(runs)))
    return float(np.median(ranges)) / (math.sqrt(2) * NormalDist().inv_cdf(0.75))


def exceeded(sd: float, confidence: float) -> float:
    """The relative drop that noise of `sd` on the log scale exceeds with probability
    1 - `confidence` (one-sided, normal)."""
    return 1 - math.exp(-NormalDist().inv_cdf(confidence) * sd)


def threshold(
    before: dict[str, float],
    after: dict[str, float],
    past: list[float],
    min_change: float,
    confidence: float,
) -> tuple[float, str]:
    """The smallest relative drop (or rise) of the p50 speedup against the committed value that
    counts, and what set it: the larger of `min_change` and the change two unchanged runs exceed
    with probability 1 - `confidence` (one-sided, normal on the log scale). The two runs' noise
    is, once the series' history holds `MIN_HISTORY` runs, the `run_spread` of its last `RECENT`,
    each run carrying it once; until then the spread the two intervals imply."""
    if len(past) >= MIN_HISTORY:
        recent = past[-RECENT:]
        sd = math.sqrt(2) * run_spread(recent)
        basis = f"spread of {len(recent)} past runs"
    else:
        sd = math.hypot(interval_sd(before, confidence), interval_sd(after, confidence))
        basis = "both intervals"
    noise = exceeded(sd, confidence)
    return (noise, basis) if noise > min_change else (min_change, "minimum change")


def mean_threshold(spread: float, m: int, n: int, min_change: float, confidence: float) -> float:
    """The smallest relative drop of the geometric mean of m new runs below the median of n past
    runs that counts: the larger of `min_change` and the drop that an unchanged series exceeds
    with probability 1 - `confidence` (one-sided). With a run-to-run sd `spread` on the log scale,
    the mean of m runs varies spread^2 / m and the median of n runs about pi/2 spread^2 / n."""
    return max(min_change, exceeded(spread * math.sqrt(1 / m + math.pi / (2 * n)), confidence))


def reference(past: list[float], since_shift: list[float]) -> Reference | None:
    """The `Reference` of a series from its past runs (oldest first) and those since its last
    shift; None while fewer than `MIN_HISTORY` runs follow the shift."""
    if len(since_shift) < MIN_HISTORY:
        return None
    recent = past[-RECENT:]
    return Reference(
        float(np.median(since_shift)),
        len(since_shift),
        len(since_shift) < len(past),
        run_spread(recent),
        len(recent),
    )
