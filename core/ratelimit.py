"""The token bucket: `rate` tokens per second on average, bursts up to `burst`.

One bucket per socket bounds its messages (realtime); `TokenBuckets` keeps one per user or client address
for REST writes (server.ratelimit).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict


class TokenBucket:
    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int, now: float | None = None) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.stamp = float(burst), time.monotonic() if now is None else now

    def take(self, now: float | None = None) -> float:
        """Take one token; return 0 if allowed, else the seconds until one is available."""
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate if self.rate > 0 else math.inf


class TokenBuckets:
    """A `TokenBucket` per key; at most `max_keys` keys (the least recently allowed is dropped)."""

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str | bytes, TokenBucket] = OrderedDict()

    def take(self, key: str | bytes, now: float | None = None) -> float:
        """Take one token of `key`'s bucket; return 0 if allowed, else the seconds until one is available."""
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
        wait = bucket.take(now)
        if not wait:
            self._buckets.move_to_end(key)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        return wait
