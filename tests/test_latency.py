"""Clock-offset estimation: right offset whatever the skew, min-RTT sample preferred."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from warnshare.latency import (
    ClockOffsetEstimator,
    hop_latencies_ns,
    percentile,
    sample_from_exchange,
)


def exchange(skew_ns: int, out_ns: int, back_ns: int, hold_ns: int, t1: int = 10**18):
    """t1 local; the peer's clock is local + skew; one-way delays out and back."""
    t2 = t1 + out_ns + skew_ns
    t3 = t2 + hold_ns
    t4 = t1 + out_ns + hold_ns + back_ns
    return t1, t2, t3, t4


@given(st.integers(-(10**11), 10**11), st.integers(0, 10**8), st.integers(0, 10**7))
def test_symmetric_paths_give_the_exact_offset(skew: int, delay: int, hold: int) -> None:
    s = sample_from_exchange(*exchange(skew, delay, delay, hold))
    assert abs(s.offset_ns - skew) <= 1
    assert s.rtt_ns == 2 * delay


def test_estimator_trusts_the_fastest_exchange() -> None:
    est = ClockOffsetEstimator()
    skew = 5_000_000_000
    est.add_exchange(*exchange(skew, 1_000_000, 30_000_000, 0))  # queued on the way back
    est.add_exchange(*exchange(skew, 200_000, 200_000, 50_000))
    est.add_exchange(*exchange(skew, 9_000_000, 1_000_000, 0))
    assert est.offset_ns == skew
    assert est.rtt_ns == 400_000
    assert est.to_local(skew + 123) == 123


def test_hops_and_end_to_end() -> None:
    stamps = {
        "measured_ns": 100,
        "node_sent_ns": 150,
        "relay_received_ns": 400,
        "fused_ns": 410,
        "relay_sent_ns": 420,
        "subscriber_received_ns": 700,
    }
    hops = hop_latencies_ns(stamps)
    assert hops["node_sent→relay_received"] == 250
    assert hops["end_to_end"] == 600
    assert sum(v for k, v in hops.items() if k != "end_to_end") == 600


def test_percentile_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100


def test_a_clock_step_is_followed_within_two_exchanges() -> None:
    est = ClockOffsetEstimator()
    for _ in range(5):
        est.add_exchange(*exchange(0, 100_000, 100_000, 0))  # fast, in sync
    est.add_exchange(*exchange(10_000_000_000, 400_000, 400_000, 0))  # the node's clock jumps 10 s
    assert est.offset_ns == 0  # one odd sample could be a spike: not trusted yet
    est.add_exchange(*exchange(10_000_000_000, 500_000, 500_000, 0))
    assert est.offset_ns == 10_000_000_000 and est.steps == 1
