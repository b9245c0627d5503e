"""The options of slowdown."""

from __future__ import annotations

from dataclasses import dataclass

from stages.errors import require


@dataclass
class Options:
    matmuls: int = 0  # MatMuls in the no-op chain; 0 copies the baseline's graph unchanged
    size: int = 256  # the chain's square matrix side: each MatMul costs 2 * size**3 flops

    def __post_init__(self) -> None:
        for name, value, low in (("matmuls", self.matmuls, 0), ("size", self.size, 1)):
            require(
                isinstance(value, int) and not isinstance(value, bool) and value >= low,
                name,
                value,
                f"an integer >= {low}",
            )
