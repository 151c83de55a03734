"""Clock-offset estimation per link (NTP-style exchange) and per-hop latency arithmetic.

Hosts' clocks differ; one-way latencies computed from two hosts' timestamps are only right once
the offset between the clocks is known. Each side of a link can send a TimeRequest (t1 on its
clock); the peer answers with t2 (receipt) and t3 (send) on its own clock, and the requester
notes t4 at receipt. Sans-I/O: callers pass every timestamp in.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

#: The hops of an alert's path, in order, as (name, start field, end field).
HOPS: tuple[tuple[str, str, str], ...] = (
    ("measured→node_sent", "measured_ns", "node_sent_ns"),
    ("node_sent→relay_received", "node_sent_ns", "relay_received_ns"),
    ("relay_received→fused", "relay_received_ns", "fused_ns"),
    ("fused→relay_sent", "fused_ns", "relay_sent_ns"),
    ("relay_sent→subscriber_received", "relay_sent_ns", "subscriber_received_ns"),
)


@dataclass(frozen=True, slots=True)
class ClockSample:
    """One exchange: offset = peer clock minus local clock; rtt excludes the peer's hold time."""

    offset_ns: int
    rtt_ns: int
    at_ns: int


def sample_from_exchange(t1_ns: int, t2_ns: int, t3_ns: int, t4_ns: int) -> ClockSample:
    """NTP on-wire arithmetic: t1, t4 on the local clock; t2, t3 on the peer's."""
    offset = ((t2_ns - t1_ns) + (t3_ns - t4_ns)) // 2
    rtt = max(0, (t4_ns - t1_ns) - (t3_ns - t2_ns))
    return ClockSample(offset_ns=offset, rtt_ns=rtt, at_ns=t4_ns)


class ClockOffsetEstimator:
    """Keeps the last ``window`` samples of a link and trusts the one with the smallest RTT.

    The minimum-RTT sample is the one least inflated by queueing on either side, so its offset
    error (bounded by half its RTT asymmetry) is the smallest: NTP's clock filter, simplified.
    """

    #: Two samples in a row this far (beyond their round trips) from the estimate mean the
    #: peer's clock stepped: forget the older samples instead of trusting them for a window.
    STEP_NS = 5_000_000

    def __init__(self, window: int = 8) -> None:
        self._samples: deque[ClockSample] = deque(maxlen=window)
        self._best: ClockSample | None = None
        self._disagreeing = 0
        self._suspect: ClockSample | None = None
        self.steps = 0

    def add(self, sample: ClockSample) -> None:
        best = self._best
        if (
            best is not None
            and abs(sample.offset_ns - best.offset_ns) > self.STEP_NS + sample.rtt_ns + best.rtt_ns
        ):
            self._disagreeing += 1
            if self._disagreeing < 2:
                # one odd sample could be a spike: held back (even with the smallest round
                # trip) until the next one confirms a step
                self._suspect = sample
                return
            self._samples.clear()
            if self._suspect is not None:
                self._samples.append(self._suspect)
            self._disagreeing = 0
            self.steps += 1
        else:
            self._disagreeing = 0
        self._suspect = None
        self._samples.append(sample)
        self._best = min(self._samples, key=lambda s: s.rtt_ns)

    def add_exchange(self, t1_ns: int, t2_ns: int, t3_ns: int, t4_ns: int) -> ClockSample:
        sample = sample_from_exchange(t1_ns, t2_ns, t3_ns, t4_ns)
        self.add(sample)
        return sample

    @property
    def known(self) -> bool:
        return self._best is not None

    @property
    def offset_ns(self) -> int:
        """Peer clock minus local clock (0 until the first exchange completes)."""
        return self._best.offset_ns if self._best else 0

    @property
    def rtt_ns(self) -> int:
        return self._best.rtt_ns if self._best else 0

    def to_local(self, peer_ns: int) -> int:
        """A peer timestamp expressed on the local clock."""
        return peer_ns - self.offset_ns


class WallClockSteps:
    """Steps of a host's own wall clock (an NTP step, a resumed VM), seen as a change of the
    difference between the wall clock and the monotonic clock from one observation to the next.
    Slewing (ppm) and the jitter of taking two readings stay far below ``threshold_ns``."""

    def __init__(self, threshold_ns: int = 1_000_000_000) -> None:
        self.threshold_ns = threshold_ns
        self._base: int | None = None
        self.steps = 0
        #: The last step seen (ns, forward positive), 0 before any.
        self.last_step_ns = 0

    def observe(self, wall_ns: int, monotonic_ns: int) -> int:
        """The step since the previous observation (ns, forward positive), or 0."""
        base = wall_ns - monotonic_ns
        previous, self._base = self._base, base
        if previous is None or abs(base - previous) < self.threshold_ns:
            return 0
        self.steps += 1
        self.last_step_ns = base - previous
        return self.last_step_ns


def hop_latencies_ns(stamps: dict[str, int]) -> dict[str, int]:
    """Each hop's duration from a dict of the ``*_ns`` stamps (missing stamps skip their hops),
    plus ``end_to_end`` from measured to the last stamp present."""
    out: dict[str, int] = {}
    for name, start, end in HOPS:
        if stamps.get(start) and stamps.get(end):
            out[name] = stamps[end] - stamps[start]
    last = stamps.get("subscriber_received_ns") or stamps.get("relay_sent_ns")
    if stamps.get("measured_ns") and last:
        out["end_to_end"] = last - stamps["measured_ns"]
    return out


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of already sorted values, nearest-rank; NaN if empty."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100.0 * len(sorted_values)) - 1))
    return sorted_values[k]
