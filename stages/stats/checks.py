"""Argument checks shared by the statistics: each raises ValueError with a message naming the
argument and what it must be."""

from __future__ import annotations


def require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def check_confidence(confidence: float) -> None:
    require(0 < confidence < 1, f"confidence must be in (0, 1), got {confidence}")


def check_q(q: float) -> None:
    require(0 <= q <= 100, f"q must be in [0, 100], got {q}")


def check_counts(**counts: int) -> None:
    for name, value in counts.items():
        require(value >= 0, f"{name} must be >= 0, got {value}")
