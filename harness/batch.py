"""The Message Batches engine: the run's plan submitted as batches, at the batch price, and collected.

It implements `runner.Engine` for the same plan and call ids as a live run (each request's
`custom_id` is its `call_id`) and hands every result to the same sinks, so a batch run's
directory, events and report read like a live run's.

The order of things is what makes it safe to kill at any instant (`harness.batchjournal`
says what each journal line means):

1. A resume first settles the journal: a batch *intent* without its *created* line may or
   may not exist on the server (the kill came between the create and its answer), so the
   key's batches are listed and one created since the intent with the same request count
   and no journal line of its own is adopted; otherwise the intent is *lost* and its calls
   are submitted again. A journaled batch id is never submitted twice.
2. The calls no open batch holds are packed into batches by the API's limits (100,000
   requests, 256 MB of body; lower ones from `[batch]` in a profile), after `--max-cost`
   is checked against the worst case of everything to be submitted, at the batch price.
   Each batch: intent line (fsynced) → create (its body streamed, see `harness.client`) →
   created line (fsynced), before anything waits on it.
3. With `--wait` (the default) every open batch is polled with back-off (the first
   interval `--poll-interval`, ×1.5 per unchanged round up to a minute; `retry-after` and
   the `anthropic-ratelimit-requests-*` headers of the batch endpoints pause all of them).
   An ended batch's results are streamed line by line into records: each result is one
   row and one event (`ok`, `error` with its API error kind, `expired`, or `cancelled`),
   priced at the batch price, graded like a live answer (a judge, when a case needs one, is
   asked live through a `Runner`), with `batch_id` and the batch's created/ended times;
   the live latency columns stay null. Then the *collected* line. A result missing from
   the file sends its call to a new batch; with `--retry-errored`, errored (retryable) and
   expired calls go to a follow-up batch as attempt n + 1 (up to `--max-retries` more),
   and the failed result is not the call's row: only the last attempt's is, with the one
   event, as a live call's retries (a resume after a crash goes on with attempt n + 1).
4. A stop (Ctrl-C, SIGTERM) ends the waiting, not the batches: they keep running on
   Anthropic's side and a `--resume` collects them. A result being graded when the stop
   comes is not written, and is downloaded again by the resume.

`cancelled` rows (from `harness batches cancel`) are not finished, as in a live run: a
later resume submits those calls again. This module never imports the SDK (the client
does) and never opens a file of the run directory (the `RunDir` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import random
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from harness.batchjournal import JournaledBatch, Ledger, entry
from harness.callcost import usage_cost_columns
from harness.client import (
    ERROR_KINDS,
    Attempt,
    BatchCall,
    BatchDownloadError,
    BatchStatus,
    attempt_of_result,
    batch_item,
    max_tokens_of,
)
from harness.config import BATCH_MAX_BYTES, BATCH_MAX_REQUESTS
from harness.errors import StorageError, TargetError
from harness.graders import judge_specs
from harness.limiter import estimate_call_input
from harness.quality import Quality
from harness.records import CallRecord, Case, PlannedCall, event_uuid
from harness.runner import RunOutcome, Sink, StopReason, deliver, drain_tasks
from harness.secrets import ANTHROPIC_KEY_ENV

if TYPE_CHECKING:
    from harness.config import RunConfig
    from harness.pricing import PriceTable

__all__ = ["BatchEngine", "BatchSettings", "retry_candidates", "retry_kinds"]

_HEAD, _SEP, _TAIL = b'{"requests":[', b",", b"]}"
_CHUNK_BYTES = 256 * 1024  # body bytes per write of a streamed create
_MAX_POLL_S = 60.0  # the polling interval grows up to this (or to --poll-interval, if larger)
_CLOCK_SKEW = timedelta(minutes=10)  # how far the server's clock may be from ours, for adoption
_RESULT_STATUS = {"errored": "error", "expired": "expired", "canceled": "cancelled"}
# A sink may buffer what it cannot pass on at once (the PostHog delivery child takes ~3,000 events
# a second; a results file arrives faster): the download waits while a sink holds more than this.
_SINK_BACKLOG_BYTES = 8 * 1024 * 1024
_SINK_STALL_S = 30.0  # a backlog that does not shrink for this long is no longer waited for
_RETRY_KINDS = frozenset({k for k, (retryable, _) in ERROR_KINDS.items() if retryable} | {"expired"})


def retry_kinds() -> frozenset[str]:
    """The error kinds `--retry-errored` resubmits: the retryable ones of a live call, and `expired`."""
    return _RETRY_KINDS


def retry_candidates(calls: Any, max_retries: int) -> dict[str, int]:
    """`--retry-errored` on a resume: call id → attempts made, of the stored batch rows that failed
    with a retryable kind or expired and may be tried again (`calls`: `RunDir.load_calls()`)."""
    import polars as pl

    rows = (
        calls.filter(
            pl.col("batch_id").is_not_null()
            & pl.col("status").is_in(["error", "expired"])
            & pl.col("error_kind").is_in(sorted(_RETRY_KINDS))
            & (pl.col("attempts") <= max_retries)
        )
        .select("call_id", "attempts")
        .collect()
    )
    return dict(zip(rows["call_id"].to_list(), rows["attempts"].to_list(), strict=True))


@dataclass(frozen=True)
class BatchSettings:
    """The batch engine's share of the run's configuration."""

    run_id: str
    target: str
    quality_headers: bool = False  # the project's simulator: each request carries its expectation
    wait: bool = True
    poll_s: float = 10.0
    retry_errored: bool = False
    max_retries: int = 4
    max_requests: int = BATCH_MAX_REQUESTS
    max_bytes: int = BATCH_MAX_BYTES
    max_cost_usd: float | None = None
    concurrency: int = 16  # answers graded at once (judged answers wait for their judge)
    grace_s: float = 10.0
    seed: int = 0

    @classmethod
    def from_config(cls, cfg: RunConfig, run_id: str, *, quality_headers: bool) -> BatchSettings:
        return cls(
            run_id=run_id,
            target=cfg.target,
            quality_headers=quality_headers,
            wait=cfg.batch_wait,
            poll_s=cfg.batch_poll_s,
            retry_errored=cfg.retry_errored,
            max_retries=cfg.max_retries,
            max_requests=cfg.batch_max_requests,
            max_bytes=cfg.batch_max_bytes,
            max_cost_usd=cfg.max_cost_usd,
            concurrency=cfg.concurrency,
            grace_s=cfg.grace_s,
            seed=cfg.seed,
        )


class BatchClient(Protocol):
    """The batch calls of `harness.client.ClaudeClient`."""

    async def create_batch(self, body: Any, size: int, *, tag: str | None = None) -> BatchCall: ...

    async def get_batch(self, batch_id: str) -> BatchCall: ...

    async def list_batches(self, *, after_id: str | None = None, limit: int = 100) -> BatchCall: ...

    def batch_results(self, batch_id: str) -> AsyncIterator[dict[str, Any]]: ...


class Journal(Protocol):
    """The run directory's batches journal (`RunDir`)."""

    def append_batch_entry(self, entry: Mapping[str, Any]) -> None: ...

    def batch_entries(self) -> list[dict[str, Any]]: ...


class Grader(Protocol):
    """Grades an answer, asking a judge live when its case needs one (`runner.Runner.verdict`)."""

    async def verdict(
        self,
        case: Case,
        ok: bool,
        text: str | None,
        tool_calls: Sequence[Mapping[str, Any]] | None,
        stop_reason: str | None,
        call_id: str,
    ) -> Quality: ...

    def request_stop(self, reason: StopReason, *, now: bool = False) -> None: ...


class BatchView(Protocol):
    """Where per-batch progress goes (`progress.ProgressSink.batch`)."""

    def batch(
        self, key: str, batch_id: str | None, status: str, counts: Mapping[str, int], requests: int
    ) -> None: ...


@dataclass(slots=True)
class _Packed:
    calls: list[PlannedCall]
    size: int
    attempt: int


class BatchEngine:
    """Submits, journals, waits for and collects Message Batches; one record per result."""

    def __init__(
        self,
        settings: BatchSettings,
        client: BatchClient,
        journal: Journal,
        prices: PriceTable,
        sinks: Sequence[Sink],
        *,
        grader: Grader,
        view: BatchView | None = None,
        retries: Mapping[str, int] | None = None,
    ) -> None:
        self.s = settings
        self.client = client
        self.journal = journal
        self.prices = prices  # batch prices
        self.sinks = list(sinks)
        self.grader = grader
        self.view = view
        self.outcome = RunOutcome()
        self.ledger = Ledger()
        self._retries = dict(retries or {})  # call_id → attempts its stored row already made
        self._journaled_attempts: dict[str, int] = {}  # call_id → next attempt, by the journal
        self._calls: dict[str, PlannedCall] = {}
        self._stored: dict[str, set[str]] = {}  # batch key → its results stored this session
        self._queue: list[tuple[PlannedCall, int]] = []  # (call, attempt) waiting to be submitted
        self._stop = asyncio.Event()
        self._no_grace = asyncio.Event()
        self._rng = random.Random(settings.seed)
        self._not_before = 0.0  # monotonic: no batch-endpoint request before this (limits, retry-after)
        self._committed_usd = 0.0  # worst case of everything submitted or re-attached this session
        self._tasks: set[asyncio.Task[None]] = set()
        self._stalled_sinks: set[int] = set()  # sinks whose backlog stopped draining (not waited for)
        self._budget_spent = False  # --max-cost reached: nothing more is submitted (waiting goes on)
        self._slots = asyncio.Semaphore(max(1, settings.concurrency))
        self.on_stop: Callable[[str], None] | None = None

    # ------------------------------------------------------------ Engine

    def request_stop(self, reason: StopReason, *, now: bool = False) -> None:
        """Stop submitting and waiting; the batches go on without us (a resume collects them)."""
        if now:
            self._no_grace.set()
        if self.outcome.stopped_by is None:
            self.outcome.stopped_by = reason
        first = not self._stop.is_set()
        self._stop.set()
        self.grader.request_stop(reason, now=now)
        if first and self.on_stop is not None:
            self.on_stop(reason)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def run(self, plan: Sequence[PlannedCall]) -> RunOutcome:
        self.outcome.planned = len(plan)
        self._calls = {c.call_id: c for c in plan}
        self.ledger = Ledger.load(self.journal.batch_entries())
        try:
            await self._settle_unacknowledged()
            held = self._reattach()
            self._journaled_attempts = self._attempts_from_journal()
            self._queue = [(c, self._first_attempt(c)) for c in plan if c.call_id not in held]
            await self._submit_queue()
            if self.s.wait:
                await self._wait_and_collect()
            await self._drain()
        except StorageError as exc:
            self.outcome.error = exc
            self.request_stop("storage")
        finally:
            self.outcome.batches = self.ledger.summary()
            # 200,000 calls hold ~30 MB here: let them go before the store builds calls.parquet.
            self._calls, self._stored, self._queue = {}, {}, []
            _release_freed_memory()
        self.outcome.not_started = self.outcome.planned - self.outcome.finished - self.outcome.cancelled
        return self.outcome

    def _first_attempt(self, call: PlannedCall) -> int:
        """The attempt number a call without a row is submitted as, from what the journal says of it."""
        if call.call_id in self._retries:  # --retry-errored: the stored row made that many attempts
            return self._retries[call.call_id] + 1
        return self._journaled_attempts.get(call.call_id, 1)

    def _attempts_from_journal(self) -> dict[str, int]:
        """Call id → its next attempt (`attempts` counts submissions): a lost batch never reached the
        API, so its calls keep its number; a collected batch's calls that are to run again (a result
        kept for a retry, or canceled) were submitted in it, so they go on with the next."""
        attempts: dict[str, int] = {}
        for b in self.ledger.in_state("lost"):
            for cid in b.call_ids:
                attempts[cid] = max(attempts.get(cid, 1), b.attempt)
        for b in self.ledger.in_state("collected"):
            for cid in b.call_ids:
                attempts[cid] = max(attempts.get(cid, 1), b.attempt + 1)
        return attempts

    # ------------------------------------------------------------ the journal

    def _journal(self, line: dict[str, Any]) -> JournaledBatch | None:
        self.journal.append_batch_entry(line)  # fsynced before we go on
        return self.ledger.apply(line)

    async def _settle_unacknowledged(self) -> None:
        """Adopt the batch an unacknowledged intent created, if the server lists one; else it is lost."""
        intents = list(self.ledger.in_state("intent"))
        if not intents:
            return
        since = min(_parse(b.at) or datetime.now(UTC) for b in intents) - _CLOCK_SKEW
        found = await self._server_batches(since)
        if found is None:
            return  # cannot tell now: the intents stay as they are, the run stops (outcome.error)
        known = self.ledger.known_ids()
        # Newest first on both sides: an intent is written only once the one before it is settled,
        # so the latest intent is the one a crash can have left with a batch on the server.
        candidates = sorted((b for b in found if b.id not in known), key=lambda b: b.created_at or since)
        candidates.reverse()
        for intent in reversed(intents):
            after = (_parse(intent.at) or since) - _CLOCK_SKEW
            match = next(
                (
                    b
                    for b in candidates
                    if b.requests == len(intent.call_ids) and (b.created_at is None or b.created_at >= after)
                ),
                None,
            )
            if match is None:
                self._journal(entry("lost", intent.key, reason="never acknowledged, and not on the server"))
                continue
            candidates.remove(match)
            self._journal(_created(intent.key, match, adopted=True))

    async def _server_batches(self, since: datetime) -> list[BatchStatus] | None:
        """The key's batches created since `since` (newest first), or None when the list failed."""
        out: list[BatchStatus] = []
        after: str | None = None
        while True:
            r = await self._api(functools.partial(self.client.list_batches, after_id=after, limit=100))
            if not r.ok:
                self.outcome.error = TargetError(
                    f"cannot list the key's batches to settle a batch whose creation was not acknowledged "
                    f"({r.error_message}); resume later"
                )
                self.request_stop("abort")
                return None
            for b in r.page:
                if b.created_at is not None and b.created_at < since:
                    return out
                out.append(b)
            if not r.has_more or not r.page:
                return out
            after = r.page[-1].id

    def _reattach(self) -> set[str]:
        """Call ids the open batches hold; their worst case counts against `--max-cost`."""
        held: set[str] = set()
        for b in self.ledger.in_state("open"):
            for cid in b.call_ids:
                call = self._calls.get(cid)
                if call is not None:
                    held.add(cid)
                    self._committed_usd += self._worst(call)
            self._show(b, "in_progress" if b.batch_id else "unknown", {}, len(b.call_ids))
        return held

    # ------------------------------------------------------------ submitting

    def _worst(self, call: PlannedCall) -> float:
        return self.prices.worst_case_usd(call.model, estimate_call_input(call), max_tokens_of(call))

    def _encode(self, call: PlannedCall) -> bytes:
        return orjson.dumps(batch_item(call, quality_headers=self.s.quality_headers))

    async def _submit_queue(self) -> None:
        """Submit every queued call that fits the budget, in batches cut by the limits."""
        queue, self._queue = self._queue, []
        if self._budget_spent:
            return  # the calls left out stay not started
        if not queue or self.stopping:
            self._queue = queue
            return
        limit = self.s.max_cost_usd
        if limit is not None:
            fits: list[tuple[PlannedCall, int]] = []
            for item in queue:
                worst = self._worst(item[0])
                if self._committed_usd + worst > limit:
                    self._budget_spent = True
                    if self.outcome.stopped_by is None:
                        self.outcome.stopped_by = "budget"
                    break
                self._committed_usd += worst
                fits.append(item)
            queue = fits
        queue.sort(key=lambda item: item[1])  # one attempt number per batch; the plan's order within it
        for packed in self._pack(queue):
            if self.stopping:
                self._queue.extend((c, packed.attempt) for c in packed.calls)
                continue
            await self._submit(packed)

    def _pack(self, queue: list[tuple[PlannedCall, int]]) -> list[_Packed]:
        """Cut the queue into batches of at most `max_requests` requests and `max_bytes` of body."""
        out: list[_Packed] = []
        calls: list[PlannedCall] = []
        size = len(_HEAD) + len(_TAIL)
        attempt = 0
        for call, number in queue:
            item = len(self._encode(call))
            if calls and (
                len(calls) >= self.s.max_requests
                or size + len(_SEP) + item > self.s.max_bytes
                or number != attempt
            ):
                out.append(_Packed(calls, size, attempt))
                calls, size = [], len(_HEAD) + len(_TAIL)
            size += item + (len(_SEP) if calls else 0)
            calls.append(call)
            attempt = number
        if calls:
            out.append(_Packed(calls, size, attempt))
        return out

    async def _body(self, calls: list[PlannedCall]) -> AsyncIterator[bytes]:
        """The create's body, encoded again piece by piece (the same bytes `_pack` measured)."""
        chunk = [_HEAD]
        size = len(_HEAD)
        for i, call in enumerate(calls):
            item = self._encode(call)
            if i:
                chunk.append(_SEP)
                size += len(_SEP)
            chunk.append(item)
            size += len(item)
            if size >= _CHUNK_BYTES:
                yield b"".join(chunk)
                chunk, size = [], 0
        chunk.append(_TAIL)
        yield b"".join(chunk)

    async def _submit(self, packed: _Packed) -> None:
        """Intent → create → created. A 429/529 is retried; an answer lost in transit is looked for."""
        key = self.ledger.next_key()
        ids = [c.call_id for c in packed.calls]
        intent = self._journal(
            entry("intent", key, attempt=packed.attempt, call_ids=ids, size=packed.size, at=_iso(_now()))
        )
        assert intent is not None
        self._show(intent, "submitting", {}, len(ids))
        r = BatchCall()
        for number in range(self.s.max_retries + 1):
            if self.stopping:
                self._journal(entry("lost", key, reason="the run stopped before the batch was created"))
                self._queue.extend((c, packed.attempt) for c in packed.calls)
                return
            await self._pause()
            r = await self.client.create_batch(
                self._body(packed.calls), packed.size, tag=f"{self.s.run_id}/{key}"
            )
            self._observe(r)
            if r.ok and r.batch is not None:
                created = self._journal(_created(key, r.batch, adopted=False))
                assert created is not None
                self._show(created, r.batch.processing_status, r.batch.request_counts, len(ids))
                return
            if r.fatal:
                self._journal(entry("lost", key, reason=r.error_message))
                self._abort(r)
                return
            if not r.retryable:
                self._journal(entry("refused", key, reason=r.error_message))
                for call in packed.calls:
                    self._emit(self._refused_record(call, packed.attempt, r))
                return
            if r.error_kind not in ("rate_limit", "overloaded"):
                # A 5xx, a timeout or a cut connection: the batch may exist. Look before sending it again.
                since = (_parse(intent.at) or _now()) - _CLOCK_SKEW
                found = await self._server_batches(since)
                if found is None:
                    return
                known = self.ledger.known_ids()
                match = next(
                    (b for b in found if b.id not in known and b.requests == len(ids)),
                    None,
                )
                if match is not None:
                    self._journal(_created(key, match, adopted=True))
                    return
            self._back_off(r, number)
        self._journal(entry("lost", key, reason=f"create failed {self.s.max_retries + 1} times"))
        self.outcome.error = TargetError(f"cannot create a Message Batch: {r.error_message}")
        self.request_stop("abort")

    # ------------------------------------------------------------ waiting and collecting

    async def _wait_and_collect(self) -> None:
        interval = self.s.poll_s
        ceiling = max(self.s.poll_s, _MAX_POLL_S)
        while not self.stopping:
            if self._budget_spent:
                self._queue.clear()
            open_batches = list(self.ledger.in_state("open"))
            if not open_batches and not self._queue:
                return
            changed = False
            for b in open_batches:
                if self.stopping:
                    return
                changed |= await self._poll(b)
            if self._queue and not self.stopping:
                await self._submit_queue()
                changed = True
            if not any(True for _ in self.ledger.in_state("open")) and not self._queue:
                return
            interval = self.s.poll_s if changed else min(interval * 1.5, ceiling)
            await self._sleep(interval)

    async def _poll(self, b: JournaledBatch) -> bool:
        """Retrieve one open batch; collect it when it ended. True when its state changed."""
        assert b.batch_id is not None
        batch_id = b.batch_id
        r = await self._api(lambda: self.client.get_batch(batch_id))
        if not r.ok or r.batch is None:
            if r.error_kind == "not_found":  # deleted, or a simulator that restarted: resubmit its calls
                self._journal(entry("lost", b.key, reason="the server no longer knows the batch"))
                stored = self._stored.get(b.key, set())
                self._requeue(b, [cid for cid in b.call_ids if cid not in stored])
                return True
            if r.fatal:
                self._abort(r)
            return False
        status = r.batch
        self._show(b, status.processing_status, status.request_counts, len(b.call_ids))
        if status.processing_status != "ended":
            return False
        return await self._collect(b, status)

    async def _collect(self, b: JournaledBatch, status: BatchStatus) -> bool:
        """Stream an ended batch's results into records; journal it collected once all are stored."""
        assert b.batch_id is not None
        stored = self._stored.setdefault(b.key, set())  # a second download skips what the first stored
        wanted = {cid for cid in b.call_ids if cid in self._calls and cid not in stored}
        seen: set[str] = set()
        retried = 0  # results kept for a follow-up batch, not stored
        try:
            await self._pause()
            async for line in self.client.batch_results(b.batch_id):
                cid = line.get("custom_id")
                if cid not in wanted or cid in seen:
                    continue  # a call already stored, or not ours (an adopted batch of someone else)
                call = self._calls[cid]
                seen.add(call.call_id)
                stored.add(call.call_id)
                result = line.get("result")
                kind, attempt = attempt_of_result(result if isinstance(result, Mapping) else {})
                if self._should_retry(kind, attempt, b.attempt):
                    # Not the call's outcome: the follow-up's result is its one row and one event. A
                    # crash before that leaves it without a row, and the resume submits it again.
                    self._queue.append((call, b.attempt + 1))  # submitted after this round of polls
                    retried += 1
                    continue
                await self._record_result(call, b, status, kind, attempt)
                if len(seen) % 64 == 0:
                    await self._sinks_drained()
                if self.stopping:
                    return False
        except BatchDownloadError as exc:
            self._back_off(BatchCall(error_kind=exc.kind, retry_after_s=exc.retry_after_s), 0)
            return False  # the next round downloads it again; rows already written are skipped
        await self._wait_tasks()
        if self.stopping:
            return False
        missing = [cid for cid in b.call_ids if cid in wanted and cid not in seen]
        self._journal(
            entry(
                "collected",
                b.key,
                batch_id=b.batch_id,
                ended_at=_iso(status.ended_at),
                counts=status.request_counts,
                rows=len(seen) - retried,
                retried=retried,
            )
        )
        self._requeue(b, missing)
        _release_freed_memory()
        return True

    async def _sinks_drained(self) -> None:
        """Wait while a sink holds a backlog (bounded memory: results are streamed, never held).

        A sink that stops draining (PostHog gone) is waited for `_SINK_STALL_S` at most, then no
        more until it drains again: its events are journaled and reach the outbox at the end.
        """
        for sink in self.sinks:
            backlog = getattr(sink, "backlog_bytes", None)
            if backlog is None or backlog() <= _SINK_BACKLOG_BYTES:
                self._stalled_sinks.discard(id(sink))
                continue
            if id(sink) in self._stalled_sinks:
                continue
            low, since = backlog(), time.monotonic()
            while backlog() > _SINK_BACKLOG_BYTES and not self.stopping:
                if backlog() < low:
                    low, since = backlog(), time.monotonic()
                elif time.monotonic() - since > _SINK_STALL_S:
                    self._stalled_sinks.add(id(sink))
                    break
                await asyncio.sleep(0.02)

    def _requeue(self, b: JournaledBatch, call_ids: list[str]) -> None:
        self._queue.extend((self._calls[cid], b.attempt) for cid in call_ids if cid in self._calls)

    def _should_retry(self, kind: str, attempt: Attempt, number: int) -> bool:
        if not self.s.retry_errored or number > self.s.max_retries or kind not in ("errored", "expired"):
            return False
        return kind == "expired" or (attempt.error_kind or "") in retry_kinds()

    async def _record_result(
        self, call: PlannedCall, b: JournaledBatch, status: BatchStatus, kind: str, a: Attempt
    ) -> None:
        ok = kind == "succeeded" and a.ok
        if kind == "canceled":
            passed = False if call.case.expected else None
            self._emit(self._record(call, b, status, kind, a, Quality(passed=passed)))
            return
        if ok and judge_specs(call.case.expected):
            await self._slots.acquire()  # back-pressure: the download waits for a free judge slot
            task = asyncio.get_running_loop().create_task(self._judge_then_emit(call, b, status, kind, a))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        quality = await self.grader.verdict(call.case, ok, a.text, a.tool_calls, a.stop_reason, call.call_id)
        self._emit(self._record(call, b, status, kind, a, quality))

    async def _judge_then_emit(
        self, call: PlannedCall, b: JournaledBatch, status: BatchStatus, kind: str, a: Attempt
    ) -> None:
        try:
            quality = await self.grader.verdict(
                call.case, True, a.text, a.tool_calls, a.stop_reason, call.call_id
            )
        except asyncio.CancelledError:
            raise  # not written: a resume downloads this result again
        except Exception as exc:  # noqa: BLE001 - a judging bug costs this row its verdict, not the run
            quality = Quality(judge_error=f"harness error while judging: {type(exc).__name__}: {exc}"[:300])
        finally:
            self._slots.release()
        self._emit(self._record(call, b, status, kind, a, quality))

    async def _wait_tasks(self) -> None:
        while self._tasks and not self.stopping:
            stop = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait({*self._tasks, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()

    async def _drain(self) -> None:
        """After a stop: judged answers get the grace period, then are dropped (a resume redoes them)."""
        await drain_tasks(self._tasks, self.s.grace_s, self._no_grace)

    # ------------------------------------------------------------ records

    def _record(
        self,
        call: PlannedCall,
        b: JournaledBatch,
        status: BatchStatus,
        kind: str,
        a: Attempt,
        q: Quality,
    ) -> CallRecord:
        ok = kind == "succeeded" and a.ok
        row_status = "ok" if ok else _RESULT_STATUS.get(kind, "error")
        created = _parse(b.created_at) or status.created_at
        return self._row(
            call,
            b.attempt,
            a,
            q,
            status=row_status,
            batch_id=b.batch_id,
            created=created,
            ended=status.ended_at,
        )

    def _refused_record(self, call: PlannedCall, attempt: int, r: BatchCall) -> CallRecord:
        a = Attempt()
        a.fail(r.error_kind or "bad_request", f"the batch was refused: {r.error_message}", r.status)
        quality = Quality(passed=False, score=0.0) if call.case.expected else Quality()
        return self._row(call, attempt, a, quality, status="error", batch_id=None, created=None, ended=None)

    def _row(
        self,
        call: PlannedCall,
        attempt: int,
        a: Attempt,
        q: Quality,
        *,
        status: str,
        batch_id: str | None,
        created: datetime | None,
        ended: datetime | None,
    ) -> CallRecord:
        ok = status == "ok"
        case = call.case
        return CallRecord(
            run_id=self.s.run_id,
            call_id=call.call_id,
            case_id=case.id,
            user_id=case.user_id,
            repeat=call.repeat,
            tags=list(case.tags),
            model=call.model,
            variant=call.variant,
            model_reported=a.model_reported,
            target=self.s.target,
            status=status,
            error_kind=None if ok else a.error_kind,
            error_message=None if ok else a.error_message,
            http_status=a.status,
            request_id=a.request_id,
            attempts=attempt,
            stop_reason=a.stop_reason,
            stream=False,
            scheduled_at=None,
            started_at=created,
            finished_at=ended,
            limiter_wait_s=None,
            retry_wait_s=0.0,
            ttft_s=None,
            latency_s=None,
            latency_from_schedule_s=None,
            output_tokens_per_s=None,
            batch_id=batch_id,
            batch_created_at=created,
            batch_ended_at=ended,
            **usage_cost_columns(self.prices, call, a),
            **q.columns(),
            response_text=a.text or None if ok else None,
            tool_calls=orjson.dumps(a.tool_calls).decode() if a.tool_calls else None,
            event_uuid=event_uuid(self.s.run_id, call.call_id, attempt),
        )

    def _emit(self, record: CallRecord) -> None:
        self.outcome.count(record)
        problem = deliver(self.sinks, record)
        if problem is not None:
            self.outcome.error = problem
            self.request_stop("storage")

    # ------------------------------------------------------------ the batch endpoints' limits

    async def _api(self, send: Callable[[], Awaitable[BatchCall]]) -> BatchCall:
        """One batch-endpoint request, after any pause the limits ask for; retried when retryable."""
        number = 0
        while True:
            await self._pause()
            r = await send()
            self._observe(r)
            if r.ok or not r.retryable or number >= self.s.max_retries or self.stopping:
                return r
            self._back_off(r, number)
            number += 1

    def _observe(self, r: BatchCall) -> None:
        """Honour `retry-after`, and wait for the window's reset when the requests left are 0."""
        if r.retry_after_s is not None:
            self._not_before = max(self._not_before, time.monotonic() + r.retry_after_s)
        headers = r.headers or {}
        if headers.get("anthropic-ratelimit-requests-remaining") == "0":
            reset = _parse(headers.get("anthropic-ratelimit-requests-reset"))
            if reset is not None:
                wait = (reset - _now()).total_seconds()
                self._not_before = max(self._not_before, time.monotonic() + min(max(wait, 0.0), 60.0))

    def _back_off(self, r: BatchCall, number: int) -> None:
        wait = r.retry_after_s
        if wait is None or wait <= 0:
            wait = min(0.5 * 2**number, 30.0) * self._rng.uniform(0.75, 1.0)
        self._not_before = max(self._not_before, time.monotonic() + wait)

    async def _pause(self) -> None:
        wait = self._not_before - time.monotonic()
        if wait > 0:
            await self._sleep(wait)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once on a stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    def _abort(self, r: BatchCall) -> None:
        self.outcome.error = TargetError(
            f"the API refused the key on the batch endpoints ({r.status} {r.error_kind}); "
            f"check {ANTHROPIC_KEY_ENV} and the workspace's permissions"
        )
        self.request_stop("abort")

    def _show(self, b: JournaledBatch, status: str, counts: Mapping[str, int], requests: int) -> None:
        if self.view is not None:
            self.view.batch(b.key, b.batch_id, status, counts, requests)


def _release_freed_memory() -> None:
    """Hand the heap freed by a batch's results back to the OS (glibc's `malloc_trim`; elsewhere
    nothing). A results file is ~100,000 lines of short-lived objects: glibc keeps ~40 MB of their
    freed heap, which the 200,000-call run's peak (`make perf`, T9) would otherwise carry into
    the building of calls.parquet."""
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _created(key: str, batch: BatchStatus, *, adopted: bool) -> dict[str, Any]:
    return entry(
        "created",
        key,
        batch_id=batch.id,
        created_at=_iso(batch.created_at),
        expires_at=_iso(batch.expires_at),
        adopted=adopted,
    )


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment is not None else None


def _parse(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
