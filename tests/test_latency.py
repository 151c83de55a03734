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


def test_a_step_of_the_wall_clock_is_seen_once_with_its_size_and_slewing_is_not() -> None:
    from warnshare.latency import WallClockSteps

    steps = WallClockSteps()
    wall, mono = 1_700_000_000 * 10**9, 5 * 10**9
    seen = []
    for k in range(40):  # ticks 0.25 s apart; the wall clock slews 500 ppm, then steps
        mono += 250_000_000
        wall += 250_000_000 + 125_000
        if k == 10:
            wall += 600 * 10**9
        if k == 30:
            wall -= 3 * 10**9
        seen.append(steps.observe(wall, mono))
    # each step as seen includes that tick's 125 us of slew
    assert [(k, round(s / 1e9, 3)) for k, s in enumerate(seen) if s] == [(10, 600.0), (30, -3.0)]
    assert steps.steps == 2 and round(steps.last_step_ns / 1e9, 3) == -3.0


async def test_the_relay_counts_and_logs_a_step_of_its_wall_clock(monkeypatch, caplog) -> None:
    import time

    from warnshare.relay.app import Relay, RelayConfig

    relay = Relay(RelayConfig())
    relay.tick()
    real = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real() + 600 * 10**9)
    relay.tick()
    relay.tick()
    assert relay.metrics.wall_clock_steps._value.get() == 1
    assert "stepped by +600" in caplog.text
