"""The options of batching."""

from __future__ import annotations

from dataclasses import dataclass

from stages.errors import require


@dataclass
class Options:
    max_batch_size: int = 8
    max_queue_delay_ms: float = 2.0

    def __post_init__(self) -> None:
        require(self.max_batch_size >= 1, "max_batch_size", self.max_batch_size, ">= 1")
        require(
            self.max_queue_delay_ms >= 0, "max_queue_delay_ms", self.max_queue_delay_ms, ">= 0 ms"
        )
