"""The options of int8_dynamic (weights only) and int8_static (calibrated)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stages.errors import one_of, require

QUANT_TYPES = ("qint8", "quint8")
FORMATS = ("qdq", "qoperator")
CALIBRATIONS = ("minmax", "entropy", "percentile")


def _check_quantization(o: Any) -> None:
    one_of("weight_type", o.weight_type, QUANT_TYPES)
    for op in o.op_types:
        require(isinstance(op, str) and op != "", "op_types", o.op_types, "ONNX op type names")


@dataclass
class DynamicOptions:
    per_channel: bool = True
    reduce_range: bool = False
    weight_type: str = "qint8"
    op_types: list[str] = field(default_factory=list)  # empty = all that ORT supports

    def __post_init__(self) -> None:
        _check_quantization(self)


@dataclass
class StaticOptions:
    format: str = "qdq"
    calibration: str = "minmax"
    calibration_size: int = 128
    per_channel: bool = True
    activation_type: str = "quint8"
    weight_type: str = "qint8"
    op_types: list[str] = field(default_factory=list)
    sensitivity_subsets: int = 2  # extra calibrations on random halves, for the spread check
    fallback: bool = True  # keep the most quantization-sensitive nodes in float
    max_drop_points: float = 1.0  # tuning rows changing class vs float, in points; stop at or below
    max_excluded: int = 128  # the most nodes the fallback may keep in float
    tuning_rows: int = 600  # train rows (seeded sample) judged beside the calibration split

    def __post_init__(self) -> None:
        _check_quantization(self)
        require(
            self.sensitivity_subsets >= 0, "sensitivity_subsets", self.sensitivity_subsets, ">= 0"
        )
        one_of("format", self.format, FORMATS)
        one_of("calibration", self.calibration, CALIBRATIONS)
        one_of("activation_type", self.activation_type, QUANT_TYPES)
        require(self.calibration_size >= 1, "calibration_size", self.calibration_size, ">= 1")
        require(
            0 <= self.max_drop_points < 100, "max_drop_points", self.max_drop_points, "in [0, 100)"
        )
        require(self.max_excluded >= 1, "max_excluded", self.max_excluded, ">= 1")
        require(self.tuning_rows >= 0, "tuning_rows", self.tuning_rows, ">= 0")
