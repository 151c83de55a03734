"""Token bucket: bursts up to the limit, then the sustained rate."""

from warnshare.relay.limits import TokenBucket


def test_burst_then_rate() -> None:
    b = TokenBucket(rate_per_s=10, burst=5, now_ns=0)
    assert [b.take(0) for _ in range(6)] == [True] * 5 + [False]
    assert b.take(100_000_000)  # 0.1 s later: one more token
    assert not b.take(100_000_000)
    assert sum(b.take(10**9 + i) for i in range(20)) == 5  # never more than the burst saved
