"""A fixed-bucket latency histogram, cheap enough to feed from the writer thread.

Counts are plain integers (one writer thread adds, readers only read), in the cumulative form
Prometheus histograms use when exported (``le`` upper bounds in seconds).
"""
from __future__ import annotations

import bisect

#: upper bounds in seconds: 100 µs to 2.5 s (a disk that takes longer is the story itself)
BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
             0.5, 1.0, 2.5)


class LatencyHistogram:
    def __init__(self, buckets: tuple[float, ...] = BUCKETS_S):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.count = 0
        self.sum_s = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, seconds)] += 1
        self.count += 1
        self.sum_s += seconds

    def cumulative(self) -> list[tuple[float, int]]:
        """[(upper bound, observations <= it)], ending with (inf, count)."""
        out, running = [], 0
        for bound, n in zip((*self.buckets, float("inf")), list(self.counts)):
            running += n
            out.append((bound, running))
        return out
