"""Message Batches' state: each batch's requests in compact form, its processing-time model,
what every request became, and the ground truth of every batch created.

Everything random about a batch is decided when it is created, from a generator seeded
with (seed, batch number): per request its validity, its fault and where in its model's
processing window it finishes; per model how long that window lasts. Status, counts and
results at any later instant then follow from the clock and from whether (and when) the
batch was canceled, so polling never changes anything and a rerun gives the same batches.

Per request it keeps only what regenerating the result needs (custom_id, model, the
body's digest and input tokens, and `blocks.reply_inputs`), never a result: results are
rendered line by line when read, so a 100,000-request batch costs tens of MB, not its
results' size. Time is simulated: windows and the 24-hour expiry are multiplied by the
time scale. This module must not handle HTTP or build messages.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from harness.simulator.blocks import reply_inputs
from harness.simulator.faults import FaultSettings
from harness.simulator.profiles import (
    DEFAULT_BATCH_BASE_S,
    DEFAULT_BATCH_PER_REQUEST_S,
    DEFAULT_BATCH_SIGMA,
    Profiles,
)
from harness.simulator.promptcache import (
    NO_CACHE,
    CacheUsage,
    Prompt,
    PromptCache,
    build_prompt,
    find_breakpoints,
)
from harness.simulator.textgen import content_digest, count_input_tokens
from harness.simulator.validate import check_messages, model_of

__all__ = [
    "CANCELED",
    "CANCEL_S",
    "DAY_S",
    "ERRORED",
    "EXPIRED",
    "SUCCEEDED",
    "Batch",
    "BatchBuilder",
    "BatchRequest",
    "BatchStore",
]

SUCCEEDED, ERRORED, CANCELED, EXPIRED = "succeeded", "errored", "canceled", "expired"
DAY_S = 86_400.0  # a batch expires 24 hours after creation (simulated: times the time scale)
CANCEL_S = 10.0  # simulated seconds from a cancel to the end: requests in flight still finish
MSG_STREAM = "stream: Streaming is not supported in the Message Batches API"
# Errors a `batch_errored` fault gives, picked half and half by the request's own draw.
_FAULT_ERRORS = (("overloaded_error", "Overloaded"), ("api_error", "Internal server error"))


@dataclass(slots=True)
class BatchRequest:
    """One request of a batch, as little as its result needs.

    `error` is (error type, message) for a request that ends `errored` whatever happens (bad
    params, unknown model, a `batch_errored` fault); `inputs` is None for those. `ask` is what
    the harness's headers asked of it (the quality model, `quality.Ask`), else None.
    """

    custom_id: str
    model: str | None  # the canonical model id; None when the model is unknown
    finish_s: float  # when its processing ends, from the batch's creation (simulated, scaled)
    error: tuple[str, str] | None = None
    expired: bool = False  # a `batch_expired` fault
    input_tokens: int = 0  # after the last cache breakpoint (all of the prompt without one)
    digest: bytes = b""
    inputs: dict[str, Any] | None = None
    cache: CacheUsage = NO_CACHE  # what the prompt cache read and wrote for it
    prompt: Prompt | None = None  # while the batch is built: its breakpoints and prefixes
    ask: Any = None


@dataclass(eq=False)
class Batch:
    """One Message Batch. Offsets (`*_s`) count seconds from its creation on the monotonic clock."""

    id: str
    number: int  # 1, 2, ... in order of creation since the last reset: seeds its draws
    key: str  # the API key's hash: batches are visible to the key that created them
    created_unix: float
    created_mono: float
    requests: list[BatchRequest]
    windows: dict[str | None, float]  # processing window of each model's share (seconds)
    deadline_s: float  # the 24-hour expiry, scaled
    cancel_delay_s: float
    call_id: str | None = None
    attempt: int | None = None
    cancel_s: float | None = None
    cancel_unix: float | None = None
    deleted_unix: float | None = None
    _finishes: list[float] = field(default_factory=list, repr=False)
    _counts: dict[str, int] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._finishes = sorted(r.finish_s for r in self.requests)

    def offset(self, now_mono: float) -> float:
        return now_mono - self.created_mono

    def end_s(self) -> float:
        """When processing ends: the longest window, the expiry, or a cancel, whichever is first."""
        end = min(max(self.windows.values(), default=0.0), self.deadline_s)
        if self.cancel_s is not None:
            end = min(end, self.cancel_s + self.cancel_delay_s)
        return end

    def status(self, now_mono: float) -> str:
        if self.offset(now_mono) >= self.end_s():
            return "ended"
        return "canceling" if self.cancel_s is not None else "in_progress"

    def canceled_early(self) -> bool:
        """Whether a cancel (not the expiry) cut processing short."""
        return self.cancel_s is not None and self.cancel_s + self.cancel_delay_s < self.deadline_s

    def outcome(self, request: BatchRequest) -> str:
        """What the request became (meaningful once the batch has ended)."""
        if request.finish_s > self.end_s():
            return CANCELED if self.canceled_early() else EXPIRED
        if request.error is not None:
            return ERRORED
        return EXPIRED if request.expired else SUCCEEDED

    def counts(self, now_mono: float) -> dict[str, int]:
        """`request_counts`: everything `processing` until the whole batch has ended."""
        if self.status(now_mono) != "ended":
            return {"processing": len(self.requests), SUCCEEDED: 0, ERRORED: 0, CANCELED: 0, EXPIRED: 0}
        if self._counts is None:  # final once ended: a cancel is refused after the end
            tally = Counter(self.outcome(r) for r in self.requests)
            self._counts = {
                "processing": 0,
                **{k: tally.get(k, 0) for k in (SUCCEEDED, ERRORED, CANCELED, EXPIRED)},
            }
        return dict(self._counts)

    def queued(self, now_mono: float) -> int:
        """Requests not processed yet (the processing queue the rate limit counts)."""
        if self.status(now_mono) == "ended":
            return 0
        return len(self._finishes) - bisect.bisect_right(self._finishes, self.offset(now_mono))

    def cancel(self, now_mono: float, now_unix: float) -> None:
        """Start canceling (idempotent while canceling); the caller refuses ended batches."""
        if self.cancel_s is None:
            self.cancel_s = self.offset(now_mono)
            self.cancel_unix = now_unix

    def order(self, seed: int) -> array[int]:
        """The order results are written in: a shuffle seeded by the batch, the same every read."""
        indexes = array("I", range(len(self.requests)))
        random.Random(f"sim-batch-order:{seed}:{self.number}").shuffle(indexes)
        return indexes

    def cache_truth(self) -> dict[str, int]:
        """The prompt cache over the batch's requests: tokens read and written, requests that read."""
        usages = [r.cache for r in self.requests if r.cache is not NO_CACHE]
        return {
            "read_tokens": sum(u.read for u in usages),
            "write_5m_tokens": sum(u.write_5m for u in usages),
            "write_1h_tokens": sum(u.write_1h for u in usages),
            "hits": sum(1 for u in usages if u.read > 0),
        }

    def truth(self, now_mono: float, *, with_ids: bool) -> dict[str, Any]:
        """The ground-truth record of `GET /_sim/batches`."""
        status = self.status(now_mono)
        ids = [r.custom_id for r in self.requests]
        record: dict[str, Any] = {
            "id": self.id,
            "key_id": self.key,
            "call_id": self.call_id,
            "attempt": self.attempt,
            "created_unix": self.created_unix,
            "request_count": len(ids),
            "models": dict(Counter(r.model for r in self.requests if r.model is not None)),
            "custom_ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
            "processing_status": status,
            "request_counts": self.counts(now_mono),
            "intended_end_s": self.end_s(),
            "ended_unix": self.created_unix + self.end_s() if status == "ended" else None,
            "cancel_initiated_unix": self.cancel_unix,
            "deleted_unix": self.deleted_unix,
            "cache": self.cache_truth(),
        }
        if with_ids:
            record["custom_ids"] = ids
        return record


class BatchBuilder:
    """Builds one batch request by request (the caller may yield to its loop in between).

    Each request takes three draws whatever it turns out to be (finish point, fault, error
    kind), so one bad request never shifts the draws of the others.

    Prompt caching: a request with cache breakpoints keeps its prefixes until `build`, which
    runs the shared prompt cache (`cache`, the live requests' own) over the batch in
    processing order, each request read and written at the instant it finishes (simulated):
    requests sharing a prefix read what an earlier one wrote, within the TTL. Requests past
    the 24-hour expiry are not processed; a later cancel cannot undo what was written.
    """

    def __init__(
        self,
        *,
        number: int,
        seed: int,
        time_scale: float,
        profiles: Profiles,
        faults: FaultSettings,
        key: str = "",
        cache: PromptCache | None = None,
    ) -> None:
        self.number = number
        self.key = key
        self.cache = cache
        self.seed = seed
        self.time_scale = time_scale
        self.profiles = profiles
        self.faults = faults
        self.requests: list[BatchRequest] = []
        self._rng = random.Random(f"sim-batch:{seed}:{number}")

    def add(self, custom_id: str, params: dict[str, Any], ask: Any = None) -> None:
        """One request; `params` is judged as a Messages body (a bad one ends `errored`).

        `ask` (a `quality.Ask` from the request's harness headers) makes its result a quality-model
        answer; the last user turn is then kept whole, since the answer is drawn from it.
        """
        draw = self._rng.random
        where, fault_u, kind_u = draw(), draw(), draw()
        model = model_of(params)
        profile = self.profiles.resolve(model) if model is not None else None
        request = BatchRequest(custom_id, profile.id if profile else None, where)
        self.requests.append(request)
        if model is not None and profile is None:
            request.error = ("not_found_error", f"model: {model}")
            return
        problem = check_messages(params, profile.max_tokens if profile else None)
        if problem is not None or profile is None:
            request.error = ("invalid_request_error", problem or "model: Field required")
            return
        if params.get("stream") is True:
            request.error = ("invalid_request_error", MSG_STREAM)
            return
        input_tokens = count_input_tokens(params)
        if input_tokens > profile.max_input_tokens:
            message = f"prompt is too long: {input_tokens} tokens > {profile.max_input_tokens} maximum"
            request.error = ("invalid_request_error", message)
            return
        fault = self.faults.pick_batch(profile.id, fault_u)
        if fault == "batch_errored":
            request.error = _FAULT_ERRORS[0 if kind_u < 0.5 else 1]
            return
        request.expired = fault == "batch_expired"
        request.input_tokens = input_tokens
        request.digest = content_digest(params)
        request.inputs = reply_inputs(params, keep_text=ask is not None)
        request.ask = ask
        breakpoints = find_breakpoints(params) if self.cache is not None else []
        if breakpoints:
            request.prompt = build_prompt(
                params, key=self.key, model=profile.id, breakpoints=breakpoints, total_tokens=input_tokens
            )

    def build(
        self,
        *,
        batch_id: str,
        key: str,
        created_unix: float,
        created_mono: float,
        call_id: str | None = None,
        attempt: int | None = None,
    ) -> Batch:
        """The batch: draw each model's window, then place every request inside its own."""
        sizes = Counter(r.model for r in self.requests)
        rng = random.Random(f"sim-batch-windows:{self.seed}:{self.number}")
        windows: dict[str | None, float] = {}
        for model in sorted(sizes, key=str):
            profile = self.profiles.models.get(model) if model is not None else None
            base = profile.batch_base_s if profile else DEFAULT_BATCH_BASE_S
            per_request = profile.batch_per_request_s if profile else DEFAULT_BATCH_PER_REQUEST_S
            sigma = profile.batch_sigma if profile else DEFAULT_BATCH_SIGMA
            spread = rng.lognormvariate(0.0, sigma) if sigma > 0 else 1.0
            windows[model] = (base + per_request * sizes[model]) * spread * self.time_scale
        for request in self.requests:
            request.finish_s *= windows[request.model]
        self._run_cache(created_mono, DAY_S * self.time_scale)
        return Batch(
            id=batch_id,
            number=self.number,
            key=key,
            created_unix=created_unix,
            created_mono=created_mono,
            requests=self.requests,
            windows=windows,
            deadline_s=DAY_S * self.time_scale,
            cancel_delay_s=CANCEL_S * self.time_scale,
            call_id=call_id,
            attempt=attempt,
        )

    def _run_cache(self, created_mono: float, deadline_s: float) -> None:
        """Each request with breakpoints reads and writes the prompt cache when it is processed."""
        cached = [r for r in self.requests if r.prompt is not None]
        if self.cache is None or not cached:
            return
        for request in sorted(cached, key=lambda r: r.finish_s):
            prompt, request.prompt = request.prompt, None
            if prompt is None or request.expired or request.finish_s > deadline_s or request.model is None:
                continue
            at = created_mono + request.finish_s
            plan = self.cache.plan(prompt, self.profiles.models[request.model].cache_min_tokens, at)
            self.cache.commit(plan, at, at)
            request.cache = plan.usage
            request.input_tokens = plan.uncached


class BatchStore:
    """Every batch created since the last reset, deleted ones included (for the ground truth)."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self._by_id: dict[str, Batch] = {}
        self.number = 0

    def next_number(self) -> int:
        self.number += 1
        return self.number

    def add(self, batch: Batch) -> None:
        self.batches.append(batch)
        self._by_id[batch.id] = batch

    def get(self, key: str, batch_id: str) -> Batch | None:
        """A batch the key may see: its own, not deleted."""
        found = self._by_id.get(batch_id)
        if found is None or found.key != key or found.deleted_unix is not None:
            return None
        return found

    def newest_first(self, key: str) -> list[Batch]:
        return [b for b in reversed(self.batches) if b.key == key and b.deleted_unix is None]

    def queued(self, key: str, now_mono: float) -> int:
        """The key's batch requests waiting to be processed, over all its batches."""
        return sum(b.queued(now_mono) for b in self.batches if b.key == key and b.deleted_unix is None)

    def wait_for_room(self, key: str, now_mono: float, room: int, limit: int) -> float:
        """Seconds until `room` more requests fit under the queue limit: the first end of one of
        the key's batches after which they do (an upper bound: the queue drains steadily)."""
        ends = sorted(
            b.end_s() - b.offset(now_mono)
            for b in self.batches
            if b.key == key and b.deleted_unix is None and b.status(now_mono) != "ended"
        )
        for wait in ends:
            if self.queued(key, now_mono + wait) + room <= limit:
                return wait
        return ends[-1] if ends else 0.0

    def clear(self) -> None:
        self.batches.clear()
        self._by_id.clear()
        self.number = 0
