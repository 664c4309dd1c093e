"""Percentiles and compact summaries of timing samples."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), interpolating between closest ranks as numpy does by default."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class Summary:
    """Median, tail percentiles and maximum of some samples, in the unit they were scaled to."""

    n: int
    p50: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, samples: Sequence[float], scale: float = 1.0) -> Summary:
        scaled = [s * scale for s in samples]
        return cls(
            n=len(scaled),
            p50=percentile(scaled, 50),
            p95=percentile(scaled, 95),
            p99=percentile(scaled, 99),
            max=max(scaled) if scaled else math.nan,
        )

    def triple(self, digits: int = 0) -> str:
        """p50/p95/p99 as one cell; a dash when there were no samples."""
        if not self.n:
            return "-"
        return "/".join(f"{value:.{digits}f}" for value in (self.p50, self.p95, self.p99))


def mean(samples: Sequence[float]) -> float:
    return sum(samples) / len(samples) if samples else math.nan
