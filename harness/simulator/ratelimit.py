"""Rate limits per (API key, model pool): requests, input and output tokens per minute.

Continuously refilling token buckets, as Anthropic documents them: output tokens are
reserved from `max_tokens` on admission and the unused part is given back when the reply
ends. Produces the `anthropic-ratelimit-*` headers and `retry-after`. Keys are held only as
a hash, never in clear. `RequestLimiter` is the requests-only variant the Message Batches
endpoints use (their own limit, shared by every model). This module must not know about
HTTP handlers or models' timing.
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from harness.simulator.profiles import Limits

__all__ = ["Admission", "Bucket", "RateLimiter", "RequestLimiter", "key_id"]


def key_id(api_key: str) -> str:
    """A stable, non-reversible name for an API key, to keep buckets apart."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


class Bucket:
    """Capacity `limit`, refilled at limit/60 per second, never above capacity."""

    __slots__ = ("level", "limit", "rate", "stamp")

    def __init__(self, limit: int, now: float) -> None:
        self.limit = limit
        self.rate = limit / 60.0
        self.level = float(limit)
        self.stamp = now

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.level = min(float(self.limit), self.level + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` (capped at capacity) is available; 0 when it is now."""
        need = min(amount, float(self.limit))
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def take(self, amount: float) -> None:
        self.level -= min(amount, float(self.limit))

    def give(self, amount: float) -> None:
        self.level = min(float(self.limit), self.level + amount)

    def reset_in(self) -> float:
        return max(0.0, (self.limit - self.level) / self.rate)


@dataclass(frozen=True, slots=True)
class Admission:
    """The outcome of one admission: ok, or which limit was hit and when to retry."""

    ok: bool
    headers: dict[str, str]
    limited: str | None = None
    retry_after: int | None = None


_NAMES = {"requests": "requests", "input": "input tokens", "output": "output tokens"}


class RateLimiter:
    """Three buckets per (key, pool), created on first use."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._pools: dict[tuple[str, str], tuple[Bucket, Bucket, Bucket]] = {}

    def clear(self) -> None:
        self._pools.clear()

    def _buckets(self, key: str, pool: str, limits: Limits) -> tuple[Bucket, Bucket, Bucket]:
        now = self._clock()
        found = self._pools.get((key, pool))
        if found is None:
            found = (Bucket(limits.rpm, now), Bucket(limits.itpm, now), Bucket(limits.otpm, now))
            self._pools[(key, pool)] = found
        else:
            for bucket in found:
                bucket.refill(now)
        return found

    def admit(self, key: str, pool: str, limits: Limits, input_tokens: int, max_tokens: int) -> Admission:
        """Take 1 request, the input tokens and `max_tokens` output tokens, or refuse with 429 data."""
        requests, inputs, outputs = self._buckets(key, pool, limits)
        waits = {
            "requests": requests.wait_for(1),
            "input": inputs.wait_for(input_tokens),
            "output": outputs.wait_for(max_tokens),
        }
        worst = max(waits, key=lambda name: waits[name])
        if waits[worst] > 0:
            retry_after = max(1, math.ceil(waits[worst]))
            return Admission(False, self._headers(requests, inputs, outputs), _NAMES[worst], retry_after)
        requests.take(1)
        inputs.take(input_tokens)
        outputs.take(max_tokens)
        return Admission(True, self._headers(requests, inputs, outputs))

    def peek(self, key: str, pool: str, limits: Limits) -> dict[str, str]:
        """The headers for the current levels, taking nothing (for injected errors)."""
        return self._headers(*self._buckets(key, pool, limits))

    def settle(self, key: str, pool: str, limits: Limits, unused_output_tokens: int) -> None:
        """Give back the part of the `max_tokens` reservation the reply did not use."""
        if unused_output_tokens > 0:
            self._buckets(key, pool, limits)[2].give(unused_output_tokens)

    @staticmethod
    def _headers(requests: Bucket, inputs: Bucket, outputs: Bucket) -> dict[str, str]:
        wall = time.time()
        headers: dict[str, str] = {}
        for name, bucket in (("requests", requests), ("input-tokens", inputs), ("output-tokens", outputs)):
            headers[f"anthropic-ratelimit-{name}-limit"] = str(bucket.limit)
            headers[f"anthropic-ratelimit-{name}-remaining"] = str(max(0, math.floor(bucket.level)))
            headers[f"anthropic-ratelimit-{name}-reset"] = _rfc3339(wall + bucket.reset_in())
        headers["anthropic-ratelimit-tokens-limit"] = str(inputs.limit + outputs.limit)
        headers["anthropic-ratelimit-tokens-remaining"] = str(
            max(0, math.floor(inputs.level)) + max(0, math.floor(outputs.level))
        )
        headers["anthropic-ratelimit-tokens-reset"] = _rfc3339(
            wall + max(inputs.reset_in(), outputs.reset_in())
        )
        return headers


class RequestLimiter:
    """One requests-per-minute bucket per key (the Message Batches API's limit on its endpoints)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, Bucket] = {}

    def clear(self) -> None:
        self._buckets.clear()

    def admit(self, key: str, rpm: int) -> Admission:
        """Take one request, or refuse with 429 data; the `anthropic-ratelimit-requests-*` headers."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None or bucket.limit != rpm:
            bucket = self._buckets[key] = Bucket(rpm, now)
        bucket.refill(now)
        wait = bucket.wait_for(1)
        if wait > 0:
            return Admission(False, self._headers(bucket), "requests", max(1, math.ceil(wait)))
        bucket.take(1)
        return Admission(True, self._headers(bucket))

    @staticmethod
    def _headers(bucket: Bucket) -> dict[str, str]:
        return {
            "anthropic-ratelimit-requests-limit": str(bucket.limit),
            "anthropic-ratelimit-requests-remaining": str(max(0, math.floor(bucket.level))),
            "anthropic-ratelimit-requests-reset": _rfc3339(time.time() + bucket.reset_in()),
        }


def _rfc3339(unix: float) -> str:
    return _rfc3339_second(math.ceil(unix))


@functools.lru_cache(maxsize=1024)
def _rfc3339_second(second: int) -> str:
    """Formatting dates is slow and the same second recurs on every request."""
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
