"""The result of one server run of the load generator (stages.measure.serving): per-request
times, the batches that ran, and their summary against a latency bound."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from stages.measure.serving_checks import positive

PERCENTILES = (50, 95, 99)


@dataclass
class ServerResult:
    """Per-request times of one server run (served requests only) and the batches that ran."""

    arrival_s: np.ndarray  # s from the schedule start, per served request
    start_s: np.ndarray  # s: when the batch holding it started (collation included)
    end_s: np.ndarray  # s: when that batch returned
    batch_of: np.ndarray  # batch index per served request
    batch_sizes: np.ndarray  # requests in each batch, in order
    duration_s: float  # s: from the first arrival slot to the last completion
    dropped: int = 0  # requests never started because max_seconds stopped the run, or because
    # the run gave up (gave_up): its p99 had surely missed the bound, the rest was not played out
    gave_up: bool = False

    @property
    def queue_delay_ms(self) -> np.ndarray:
        """Time each request waited before its batch started, in ms."""
        return (self.start_s - self.arrival_s) * 1e3

    @property
    def service_ms(self) -> np.ndarray:
        """Time the batch holding each request took to run, in ms."""
        return (self.end_s - self.start_s) * 1e3

    @property
    def latency_ms(self) -> np.ndarray:
        """Time from each request's arrival to its batch's return, in ms."""
        return (self.end_s - self.arrival_s) * 1e3

    def trace(self, *lead: object) -> list[list[object]]:
        """One CSV row per served request: the `lead` cells, then its index, arrival, start and
        end (s, to the us) and batch."""
        return [
            [
                *lead,
                i,
                f"{self.arrival_s[i]:.6f}",
                f"{self.start_s[i]:.6f}",
                f"{self.end_s[i]:.6f}",
                int(self.batch_of[i]),
            ]
            for i in range(self.arrival_s.size)
        ]

    def summary(self, latency_bound_ms: float) -> dict[str, Any]:
        """Percentiles in ms, batch sizes, throughput, and the requests that missed the bound."""
        positive("latency_bound_ms", latency_bound_ms)
        served = int(self.arrival_s.size)
        requests = served + self.dropped
        out: dict[str, Any] = {"requests": requests, "served": served, "dropped": self.dropped}
        for key, values in (
            ("latency", self.latency_ms),
            ("queue_delay", self.queue_delay_ms),
            ("service", self.service_ms),
        ):
            for q in PERCENTILES:
                out[f"{key}_p{q}_ms"] = float(np.percentile(values, q)) if served else None
            out[f"{key}_max_ms"] = float(values.max()) if served else None
        late = int(np.count_nonzero(self.latency_ms > latency_bound_ms))
        out["batches"] = int(self.batch_sizes.size)
        out["mean_batch_size"] = float(self.batch_sizes.mean()) if served else None
        out["duration_s"] = self.duration_s
        out["throughput_qps"] = served / self.duration_s if self.duration_s > 0 else 0.0
        out["latency_bound_ms"] = latency_bound_ms
        out["late"] = late  # served, but after the bound
        out["missed_bound"] = late + self.dropped  # a dropped request never met it
        out["missed_share"] = (late + self.dropped) / requests if requests else 0.0
        out["gave_up"] = self.gave_up  # stopped once the p99 had surely missed its bound
        return out
