"""Best, mean and sample standard deviation of repeated measurements."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Summary:
    n: int
    best: float  # the largest value (throughput: higher is better)
    worst: float
    mean: float
    stdev: float  # sample standard deviation (n - 1); 0 for a single value

    @property
    def cv(self) -> float:
        """Coefficient of variation (stdev / mean), 0 when the mean is 0."""
        return self.stdev / self.mean if self.mean else 0.0

    def to_json(self) -> dict[str, float | int]:
        return {"n": self.n, "best": self.best, "worst": self.worst, "mean": self.mean,
                "stdev": self.stdev}


def summarize(values: Iterable[float]) -> Summary | None:
    """None for no values; NaN and infinities are ignored."""
    clean = [float(v) for v in values if math.isfinite(v)]
    if not clean:
        return None
    stdev = statistics.stdev(clean) if len(clean) > 1 else 0.0
    return Summary(len(clean), max(clean), min(clean), statistics.fmean(clean), stdev)
