"""Log-linear latency histogram in the style of HdrHistogram: fixed relative precision, mergeable.

Values are integer nanoseconds. Each power-of-two range is split into ``SUB_BUCKETS`` linear
sub-buckets, so a value is known to within 1/128 (< 0.8%) of itself from 1 ns to days, in a
few thousand counters. A percentile is reported, as HdrHistogram does, as the highest value
equivalent to its bucket (capped at the exact maximum), so it never understates a latency.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

SUB_BUCKET_BITS = 7
SUB_BUCKETS = 1 << SUB_BUCKET_BITS  # 128: relative resolution 1/128

#: The percentiles every report shows.
STANDARD_PERCENTILES: tuple[float, ...] = (50.0, 90.0, 99.0, 99.9)


def bucket_index(values: ArrayLike) -> NDArray[np.int64]:
    """Bucket of each non-negative integer value (vectorised)."""
    v = np.maximum(np.asarray(values, dtype=np.int64), 0)
    # bit_length via frexp: exact for values below 2**53 ns (about 104 days)
    _, exponent = np.frexp(v.astype(np.float64))
    shift = np.maximum(exponent.astype(np.int64) - (SUB_BUCKET_BITS + 1), 0)
    return shift * SUB_BUCKETS + (v >> shift)


def bucket_bounds(index: ArrayLike) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(lowest, highest) value equivalent to each bucket index."""
    idx = np.asarray(index, dtype=np.int64)
    shift = np.maximum(idx // SUB_BUCKETS - 1, 0)
    sub = idx - shift * SUB_BUCKETS
    low = sub << shift
    return low, low + (np.int64(1) << shift) - 1


class LatencyHistogram:
    """Counts of values (ns) in log-linear buckets, with the exact count, minimum and maximum."""

    __slots__ = ("counts", "total", "min_ns", "max_ns", "sum_ns")

    def __init__(self) -> None:
        self.counts: NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self.total = 0
        self.min_ns = 0
        self.max_ns = 0
        self.sum_ns = 0

    # ---------------------------------------------------------------- filling

    def record_many(self, values_ns: ArrayLike) -> None:
        v = np.asarray(values_ns, dtype=np.int64).ravel()
        if v.size == 0:
            return
        v = np.maximum(v, 0)
        binned = np.bincount(bucket_index(v))
        if binned.size > self.counts.size:
            grown = np.zeros(binned.size, dtype=np.int64)
            grown[: self.counts.size] = self.counts
            self.counts = grown
        self.counts[: binned.size] += binned
        lo, hi = int(v.min()), int(v.max())
        self.min_ns = lo if self.total == 0 else min(self.min_ns, lo)
        self.max_ns = max(self.max_ns, hi)
        self.total += int(v.size)
        self.sum_ns += int(v.sum())

    def record(self, value_ns: int) -> None:
        self.record_many([value_ns])

    def merge(self, other: LatencyHistogram) -> None:
        if other.total == 0:
            return
        if other.counts.size > self.counts.size:
            grown = np.zeros(other.counts.size, dtype=np.int64)
            grown[: self.counts.size] = self.counts
            self.counts = grown
        self.counts[: other.counts.size] += other.counts
        self.min_ns = other.min_ns if self.total == 0 else min(self.min_ns, other.min_ns)
        self.max_ns = max(self.max_ns, other.max_ns)
        self.total += other.total
        self.sum_ns += other.sum_ns

    @classmethod
    def merged(cls, parts: Iterable[LatencyHistogram]) -> LatencyHistogram:
        out = cls()
        for p in parts:
            out.merge(p)
        return out

    # ---------------------------------------------------------------- reading

    def value_at_percentile(self, percentile: float) -> int:
        """Smallest bucket holding at least ``percentile``% of the values, as its highest value."""
        if self.total == 0:
            return 0
        if percentile >= 100.0:
            return self.max_ns
        rank = max(1, math.ceil(self.total * percentile / 100.0))
        idx = int(np.searchsorted(np.cumsum(self.counts), rank))
        _, high = bucket_bounds(idx)
        return int(min(int(high), self.max_ns))

    def percentiles(self, which: Sequence[float] = STANDARD_PERCENTILES) -> dict[str, int]:
        """{"p50": ns, ..., "p99.9": ns, "max": ns}."""
        out = {f"p{p:g}": self.value_at_percentile(p) for p in which}
        out["max"] = self.max_ns
        return out

    @property
    def mean_ns(self) -> float:
        return self.sum_ns / self.total if self.total else 0.0

    def cdf(self) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """(bucket upper values, cumulative fraction) over the non-empty buckets, for plotting."""
        nz = np.nonzero(self.counts)[0]
        if nz.size == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        _, high = bucket_bounds(nz)
        frac = np.cumsum(self.counts[nz]) / self.total
        return np.minimum(high, self.max_ns), frac

    # ---------------------------------------------------------------- JSON

    def to_dict(self) -> dict[str, Any]:
        """Compact JSON form: the non-empty buckets as [index, count] pairs."""
        nz = np.nonzero(self.counts)[0]
        return {
            "sub_bucket_bits": SUB_BUCKET_BITS,
            "total": self.total,
            "min_ns": self.min_ns,
            "max_ns": self.max_ns,
            "sum_ns": self.sum_ns,
            "buckets": [[int(i), int(self.counts[i])] for i in nz],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyHistogram:
        if data.get("sub_bucket_bits", SUB_BUCKET_BITS) != SUB_BUCKET_BITS:
            raise ValueError("histogram was written with a different precision")
        h = cls()
        buckets = data.get("buckets", [])
        if buckets:
            size = max(i for i, _ in buckets) + 1
            h.counts = np.zeros(size, dtype=np.int64)
            for i, c in buckets:
                h.counts[i] = c
        h.total = int(data["total"])
        h.min_ns = int(data["min_ns"])
        h.max_ns = int(data["max_ns"])
        h.sum_ns = int(data.get("sum_ns", 0))
        return h
