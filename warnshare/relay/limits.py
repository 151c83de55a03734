"""Per-connection rate limits: a token bucket that the caller feeds with the time (sans-I/O)."""

from __future__ import annotations


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; ``take`` says whether one is left."""

    __slots__ = ("rate", "burst", "tokens", "last_ns")

    def __init__(self, rate_per_s: float, burst: float, now_ns: int) -> None:
        self.rate = rate_per_s
        self.burst = burst
        self.tokens = burst
        self.last_ns = now_ns

    def take(self, now_ns: int, n: float = 1.0) -> bool:
        elapsed = max(0, now_ns - self.last_ns) / 1e9
        self.last_ns = now_ns
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False
