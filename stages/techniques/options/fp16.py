"""The options of fp16."""

from __future__ import annotations

from dataclasses import dataclass, field

from stages.errors import require


@dataclass
class Options:
    keep_io_types: bool = True  # must stay true: a technique may not change the inputs / outputs
    op_block_list: list[str] = field(default_factory=list)  # op types kept in float32

    def __post_init__(self) -> None:
        require(
            self.keep_io_types is True,
            "keep_io_types",
            self.keep_io_types,
            "true (the inputs and outputs stay float32; a technique may not change graph.io)",
        )
        for op in self.op_block_list:
            require(
                isinstance(op, str) and op != "", "op_block_list", self.op_block_list, "op types"
            )
