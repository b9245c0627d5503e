"""The timing and the validation evidence of one candidate, as typed records.

`to_dict` gives what benchmark.json and validation.json hold, in their key order; a field with
HIDDEN metadata (the raw latencies, the server trace, the logits) stays in memory for the files
written beside the JSON and is never in it. `from_dict` reads the JSON back."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Self, cast

import numpy as np

# the metadata of a field kept in memory only: to_dict leaves it out, from_dict at its default
HIDDEN = {"hidden": True}


class Record:
    """to_dict / from_dict over a dataclass's written fields."""

    @classmethod
    def written(cls) -> list[dataclasses.Field[Any]]:
        return [f for f in dataclasses.fields(cast(Any, cls)) if not f.metadata.get("hidden")]

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in self.written()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        """The record of a written dict; a field it lacks (older evidence) takes its default."""
        return cls(**{f.name: d[f.name] for f in cls.written() if f.name in d})


@dataclass
class TimingEvidence(Record):
    """What the benchmark measured of one candidate against the baseline."""

    batches: list[dict[str, Any]]  # one summary per timing run (measure.timing.summarize)
    memory: dict[str, Any]
    load_ms: dict[str, float]
    size_bytes: dict[str, int]
    session: dict[str, Any]
    sessions: dict[str, Any]  # as each live session reported itself, with how it was served
    server: dict[str, Any] | None
    primary: str  # what the verdict weighs: "server" or "single_stream"
    inputs: dict[str, Any]
    server_csv: str = field(
        default="", metadata=HIDDEN
    )  # every request of the serving sweep (server.csv)
    # (input set, batch size, Timings) of each timing run: latencies.csv and percentiles.csv
    raw: list[tuple[str, int, Any]] = field(default_factory=list, metadata=HIDDEN)


@dataclass
class ValidationEvidence(Record):
    """The candidate's predictions against the baseline's, overall, per slice and per output."""

    overall: dict[str, Any]
    slices: dict[str, Any]
    worst_slice: str | None
    fidelity: dict[str, float]
    label_output: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)
    candidate_rows_alone: Any = None
    batch_invariance: dict[str, Any] | None = None
    # (baseline, candidate) logits of the label output per set: predictions.csv and the failures
    logits: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, metadata=HIDDEN)


def candidate_evidence(c: dict[str, Any]) -> tuple[TimingEvidence, ValidationEvidence]:
    """A candidate's timing and validation evidence (report.collect's `benchmark`, `validation`)."""
    return TimingEvidence.from_dict(c["benchmark"]), ValidationEvidence.from_dict(c["validation"])
