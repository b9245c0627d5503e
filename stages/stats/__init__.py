"""Statistics for benchmark verdicts: round-bootstrap latency intervals, accuracy, error metrics.

The implementations live in the submodules: bootstrap (latency intervals of rounds and sessions),
quantiles (percentile tails from order statistics, and which tail the calls support),
proportions (accuracy), arrays (error metrics of two arrays) and speed (what an interval decides
against the noise floor and the budget, and the A/A floor replicated over sessions).
"""

from stages.stats.arrays import cosine_similarity, max_abs_error, sqnr_db
from stages.stats.bootstrap import mean_ratio_ci, percentile_ci, percentile_ratio_ci
from stages.stats.interval import Interval
from stages.stats.proportions import (
    clopper_pearson,
    mcnemar_exact,
    paired_accuracy_difference,
    wilson_interval,
)
from stages.stats.quantiles import (
    TAIL_CHOICES,
    calls_beyond,
    percentile_ratio_order_ci,
    quantile_order_ci,
    tail_calls_needed,
    tail_is_reliable,
    tail_percentile,
)
from stages.stats.sessions import session_spread
from stages.stats.speed import (
    FASTER,
    NO_CHANGE,
    SHORT,
    SLOWER,
    TAIL_FAIL,
    TAIL_PASS,
    ReplicatedFloor,
    Verdict,
    aa_replicates,
    classify_speedup,
    decide_speed,
    decide_tail,
    hull,
    noise_floor,
    replicated_noise_floor,
    rerun_interval,
    speed_rejects,
)

__all__ = [
    "FASTER",
    "NO_CHANGE",
    "SHORT",
    "SLOWER",
    "TAIL_CHOICES",
    "TAIL_FAIL",
    "TAIL_PASS",
    "Interval",
    "ReplicatedFloor",
    "Verdict",
    "aa_replicates",
    "calls_beyond",
    "classify_speedup",
    "clopper_pearson",
    "cosine_similarity",
    "decide_speed",
    "decide_tail",
    "hull",
    "max_abs_error",
    "mcnemar_exact",
    "mean_ratio_ci",
    "noise_floor",
    "paired_accuracy_difference",
    "percentile_ci",
    "percentile_ratio_ci",
    "percentile_ratio_order_ci",
    "quantile_order_ci",
    "replicated_noise_floor",
    "rerun_interval",
    "session_spread",
    "speed_rejects",
    "sqnr_db",
    "tail_calls_needed",
    "tail_is_reliable",
    "tail_percentile",
    "wilson_interval",
]
