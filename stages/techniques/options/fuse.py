"""The options of fuse."""

from __future__ import annotations

from dataclasses import dataclass

from stages.errors import one_of, require

METHODS = ("ort_offline", "fold_batchnorm")
LEVELS = ("basic", "extended", "all")


@dataclass
class Options:
    method: str = "ort_offline"
    level: str = "extended"  # ort_offline only
    tolerance: float = 1e-4  # max abs output difference vs the baseline on the validation rows

    def __post_init__(self) -> None:
        one_of("method", self.method, METHODS)
        one_of("level", self.level, LEVELS)
        require(self.tolerance > 0, "tolerance", self.tolerance, "> 0 (a max abs difference)")
