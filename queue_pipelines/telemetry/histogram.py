"""Histogram bucket counts kept as plain data: stored with the run totals, carried in run
metadata, and turned into Prometheus histogram samples at scrape time. No Dagster here: the
provider clients' call tally uses it too."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from queue_pipelines.telemetry import conventions as conv


@dataclass
class DurationHistogram:
    """Counts per bucket (`le` bounds, the last one +Inf) and the sum of what was observed."""

    buckets: tuple[float, ...] = conv.DURATION_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.buckets) + 1)
        elif len(self.counts) != len(self.buckets) + 1:
            raise ValueError(f"{len(self.counts)} counts for {len(self.buckets)} buckets")

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, seconds)] += 1
        self.total += seconds

    def merge(self, other: DurationHistogram) -> None:
        if other.buckets != self.buckets:
            raise ValueError("histograms with different buckets cannot be merged")
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.total += other.total

    def cumulative(self) -> list[tuple[str, int]]:
        out, running = [], 0
        for bound, count in zip([*self.buckets, float("inf")], self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out

    @property
    def count(self) -> int:
        return sum(self.counts)
