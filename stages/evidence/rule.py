"""One budget rule's outcome: what it asks, what was measured, and its status."""

from __future__ import annotations

from dataclasses import asdict, dataclass

PASS, RISK, FAIL = "pass", "risk", "fail"


@dataclass(frozen=True)
class Rule:
    name: str
    budget: str
    measured: str
    status: str  # pass | risk (-> HOLD) | fail (-> REJECT)
    reason: str


def as_dicts(checked: list[Rule]) -> list[dict[str, str]]:
    return [asdict(r) for r in checked]
