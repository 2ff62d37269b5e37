"""The simulator's mutable state: settings, ground truth, buckets, events, outages, batches.

One `SimState` per server, shared by the handlers. Ground-truth records are plain dicts
appended in order of receipt, once everything about a request has been decided. This
module must not handle HTTP; `POST /_sim/reset` restores it to how it started.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from harness.simulator.batchstore import BatchStore
from harness.simulator.faults import FaultSettings
from harness.simulator.profiles import Profiles
from harness.simulator.promptcache import PromptCache
from harness.simulator.quality import Memo
from harness.simulator.ratelimit import RateLimiter, RequestLimiter

__all__ = ["EventStore", "SimState"]


@dataclass
class EventStore:
    """PostHog events by uuid (first copy kept) with a count of every copy received."""

    received: int = 0
    by_uuid: dict[str, dict[str, Any]] = field(default_factory=dict)
    _anonymous: int = 0

    def add(self, event: dict[str, Any]) -> str:
        """Store one event; returns the uuid it is counted under."""
        self.received += 1
        uuid = event.get("uuid")
        if not isinstance(uuid, str) or not uuid:
            self._anonymous += 1
            uuid = f"no-uuid-{self._anonymous}"
        if uuid not in self.by_uuid:
            self.by_uuid[uuid] = event
        return uuid

    def summary(self) -> dict[str, int]:
        unique = len(self.by_uuid)
        return {"received": self.received, "unique": unique, "duplicates": self.received - unique}

    def clear(self) -> None:
        self.received = 0
        self.by_uuid.clear()
        self._anonymous = 0


class SimState:
    """Settings plus everything the handlers change while serving."""

    def __init__(self, profiles: Profiles, faults: FaultSettings, *, seed: int, time_scale: float) -> None:
        self.profiles = profiles
        self.seed = seed
        self.time_scale = time_scale
        self._initial_faults = faults.copy()
        self.faults = faults.copy()
        self.limiter = RateLimiter()
        self.batches = BatchStore()
        self.batch_limiter = RequestLimiter()
        self.records: list[dict[str, Any]] = []
        self.events = EventStore()
        self.counter = 0
        self.quality = Memo()  # occurrences of each case, for the quality model's draws
        self.cache = PromptCache(time_scale)  # prompt-cache entries of every key and model
        # target ("anthropic" | "posthog") -> (mode, until as time.monotonic())
        self.outages: dict[str, tuple[str, float]] = {}

    def next_counter(self) -> int:
        self.counter += 1
        return self.counter

    def outage(self, target: str) -> str | None:
        """The outage mode in force for a target, or None."""
        found = self.outages.get(target)
        if found is None:
            return None
        mode, until = found
        if time.monotonic() >= until:
            del self.outages[target]
            return None
        return mode

    def reset(self) -> None:
        """Forget requests, events, batches, buckets, outages, the prompt cache; restore the startup
        faults and counter."""
        self.records.clear()
        self.events.clear()
        self.batches.clear()
        self.batch_limiter.clear()
        self.limiter.clear()
        self.outages.clear()
        self.faults = self._initial_faults.copy()
        self.counter = 0
        self.quality.clear()
        self.cache.clear()
