"""The PostHog sink: exactly one capture per finished call, with delivery accounted for.

`build_event` turns a `CallRecord` into one event (PostHog's Claude-tutorial
properties, its `$ai_*` LLM-analytics properties, and the run's own), with the
record's deterministic `event_uuid` and the call's start as `timestamp`, so any
re-send is deduplicated by PostHog (and counted as a duplicate by the simulator).

`EventSink` hands events to one long-lived `posthog.Posthog` client in queue
mode (settings of posthog-capture.md §8). The SDK can lose events silently, so
the sink keeps a ledger (posthog-capture.md §5):

- `capture()` returning None → lost at once ("dropped");
- `on_error(exc, batch)` → every uuid of the batch failed;
- each consumer's `request` is wrapped so a batch that returned counts as
  delivered; whatever is neither delivered nor failed at the end is "pending"
  (still queued, or dropped by the SDK with only a log line);
- WARNING/ERROR records on the `posthog` logger are counted (and redacted).

Durability: before `capture()`, each event is appended (one `os.write`) to
`events-journal-<session>.jsonl` in the run directory; `<session>` is the store's
session. At a clean `close()` every event not known delivered is appended to
`events-outbox.jsonl` (created empty when all arrived), the session is marked
confirmed in `events-state.json`, and its journal is deleted. After a `kill -9`
the journal survives; on `--resume`, `recover()` re-captures the events of every
unconfirmed session from its journal, byte-identical (same uuid, timestamp and
properties), plus an event for any stored row of such a session whose event
never reached the journal. `resend_outbox` (`harness events resend`) re-sends
the outbox with the original uuids and keeps only what still failed.

Wiring (the composition root does this; sinks in this order, so a row exists
before its event and `recover` can rebuild an event the kill prevented)::

    store = RunStore.create(...)  or  RunStore.resume(results_dir, run_id)
    events = EventSink(settings, store.run_dir, store.session)
    events.recover(store)                                         # on resume
    skip = store.finished_call_ids()
    ... Runner(..., sinks=[store, events]) ...
    events.close(); store.close(); store.update_manifest(events=events.stats())

This module must not touch the record's numbers, and never writes or logs the
PostHog project key (or any other known secret: they become `[secure]`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import orjson
import posthog

from harness.errors import StorageError
from harness.records import CallRecord, event_uuid
from harness.store import atomic_write_bytes, default_secrets, redact, redact_bytes

__all__ = [
    "EVENT_NAME",
    "MAX_TEXT_CHARS",
    "OUTBOX_NAME",
    "STATE_NAME",
    "DeliveryStats",
    "EventSettings",
    "EventSink",
    "build_event",
    "read_events",
    "resend_outbox",
]

EVENT_NAME = "claude_message_completion"
OUTBOX_NAME = "events-outbox.jsonl"
STATE_NAME = "events-state.json"
JOURNAL_PREFIX = "events-journal-"
# The SDK silently drops events over 900 KiB (serialised with ensure_ascii, so up to 6
# bytes per character); prompt and response each appear twice. 32k characters per text
# keeps the worst case under the limit.
MAX_TEXT_CHARS = 32_000
_TRUNCATED = "…[truncated]"
_JOURNAL_RE = re.compile(r"^events-journal-([0-9A-Za-z]+)\.jsonl$")
_LOG = logging.getLogger("posthog")


@dataclass(frozen=True)
class EventSettings:
    """How events are built and delivered; `api_key` is the PostHog project key (never shown)."""

    api_key: str = field(repr=False)
    host: str
    run_id: str
    dataset: str
    target: str
    base_url: str
    event_name: str = EVENT_NAME
    prompt_capture: bool = True
    flush_timeout_s: float = 10.0
    max_retries: int = 6
    gzip: bool = True
    shutdown_join_s: float = 2.0
    flush_at: int = 100
    flush_interval_s: float = 0.5
    max_queue_size: int = 100_000
    request_timeout_s: float = 10.0
    threads: int = 2
    secrets: tuple[str, ...] = field(
        default=(), repr=False
    )  # other values to redact (e.g. the Anthropic key)


# ---------------------------------------------------------------- building


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def _cap(text: str) -> str:
    return text if len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS] + _TRUNCATED


def _iso(moment: datetime | None) -> str:
    if moment is None:
        moment = datetime.now(UTC)  # only for a record with no time mark at all
    elif moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()


def build_event(record: CallRecord, settings: EventSettings) -> dict[str, Any]:
    """The one PostHog event of a finished call (pure: same record, same event)."""
    latency = record.latency_s
    input_cost = record.input_cost_usd + record.cache_cost_usd
    is_error = record.status == "error"
    props: dict[str, Any] = {
        # PostHog's Claude tutorial
        "model": record.model,
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
        "input_cost_in_dollars": input_cost,
        "output_cost_in_dollars": record.output_cost_usd,
        "total_cost_in_dollars": record.total_cost_usd,
        # PostHog LLM analytics
        "$ai_model": record.model,
        "$ai_provider": "anthropic",
        "$ai_input_tokens": record.input_tokens,
        "$ai_output_tokens": record.output_tokens,
        "$ai_cache_read_input_tokens": record.cache_read_input_tokens,
        "$ai_cache_creation_input_tokens": record.cache_creation_input_tokens,
        "$ai_input_cost_usd": input_cost,
        "$ai_output_cost_usd": record.output_cost_usd,
        "$ai_total_cost_usd": record.total_cost_usd,
        "$ai_http_status": record.http_status,
        "$ai_is_error": is_error,
        "$ai_trace_id": settings.run_id,
        "$ai_span_id": record.call_id,
        "$ai_base_url": settings.base_url,
        "$ai_stream": record.stream,
        "$ai_stop_reason": record.stop_reason,
        # the run's own
        "run_id": settings.run_id,
        "call_id": record.call_id,
        "case_id": record.case_id,
        "dataset": settings.dataset,
        "model_reported": record.model_reported,
        "ttft_ms": _ms(record.ttft_s),
        "limiter_wait_ms": _ms(record.limiter_wait_s),
        "attempts": record.attempts,
        "status": record.status,
        "target": record.target or settings.target,
        "repeat": record.repeat,
        "error_kind": record.error_kind,
    }
    if latency is not None:
        props["response_time_in_ms"] = latency * 1000.0
        props["$ai_latency"] = latency
    if record.stream and record.ttft_s is not None:
        props["$ai_time_to_first_token"] = record.ttft_s
    if is_error:
        kind = record.error_kind or "error"
        props["$ai_error"] = f"{kind}: {record.error_message}" if record.error_message else kind
    if settings.prompt_capture:
        prompt = _cap(str(record.extra.get("prompt") or ""))
        answer = record.extra.get("response_text")
        answer = _cap(str(answer if answer is not None else (record.response_text or "")))
        props["prompt"] = prompt
        props["$ai_input"] = [{"role": "user", "content": prompt}]
        props["$ai_output_choices"] = [{"role": "assistant", "content": answer}]
    return {
        "event": settings.event_name,
        "distinct_id": record.user_id or f"run:{settings.run_id}",
        "properties": props,
        "timestamp": _iso(record.started_at or record.scheduled_at or record.finished_at),
        "uuid": record.event_uuid or event_uuid(settings.run_id, record.call_id),
    }


# ---------------------------------------------------------------- files


def read_events(path: Path) -> Iterator[dict[str, Any]]:
    """Events of a journal or outbox file, streaming; a torn or damaged line is skipped."""
    if not path.is_file():
        return
    with open(path, "rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                break  # torn last line: written when the process was killed
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(event, dict) and isinstance(event.get("uuid"), str):
                yield event


def _read_state(run_dir: Path) -> dict[str, Any]:
    try:
        state = orjson.loads((run_dir / STATE_NAME).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {"confirmed_sessions": []}
    return state if isinstance(state, dict) else {"confirmed_sessions": []}


def _append_lines(path: Path, lines: Iterable[bytes]) -> int:
    n = 0
    try:
        with open(path, "ab") as fh:
            for line in lines:
                fh.write(line)
                n += 1
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return n


# ---------------------------------------------------------------- delivery ledger


@dataclass(frozen=True)
class DeliveryStats:
    """What happened to the events: `delivered` = admitted − failed − pending (posthog-capture.md §5).

    handed: events given to `capture()` (this session's calls plus recovered ones);
    admitted: `capture()` returned a uuid; dropped: it returned None (lost at once);
    failed: in a batch the SDK gave up on (`on_error`); pending: admitted but neither
    delivered nor failed when `close()` ended (still queued, or dropped by the SDK with
    only a log line). Everything not delivered is in the outbox.
    """

    handed: int
    admitted: int
    dropped: int
    failed: int
    pending: int
    delivered: int
    sdk_warnings: int
    sdk_errors: int
    sdk_messages: list[str]
    upload_errors: list[str]


def _cache_system_context() -> None:
    """Compute the SDK's per-event OS/runtime properties once per process instead of per event.

    posthog 7.91's `capture()` calls `system_context()` (platform + distro lookups,
    ~90 µs) for every event, on the caller's thread: here, the event loop. The
    values cannot change while the process runs, and the SDK copies the dict it
    returns, so a cached copy sends the same properties. Skipped if the SDK's
    layout differs (then capture simply costs more).
    """
    import posthog.client as sdk_client

    current = getattr(sdk_client, "system_context", None)
    if callable(current) and not getattr(current, "_harness_cached", False):
        cached = functools.cache(current)
        cached._harness_cached = True  # type: ignore[attr-defined]
        sdk_client.system_context = cached


def _secrets_of(settings: EventSettings) -> list[str]:
    """The PostHog key, the caller's extra secrets and the API keys in the environment (8+ chars)."""
    keys = {settings.api_key, *settings.secrets, *default_secrets()}
    return sorted((k for k in keys if k and len(k) >= 8), key=len, reverse=True)


class _LogCounter(logging.Handler):
    """Counts the SDK's WARNING/ERROR records; keeps the first few (already redacted) for the manifest."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.warnings = 0
        self.errors = 0
        self.samples: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            self.errors += 1
        else:
            self.warnings += 1
        if len(self.samples) < 5:
            self.samples.append(record.getMessage()[:300])


class _Redactor(logging.Filter):
    """Rewrites a `posthog` log record that would show a secret; runs before any handler sees it."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True
        if any(s in message for s in self.secrets):
            record.msg = redact(message, self.secrets)
            record.args = None
        return True


class _Delivery:
    """One posthog client plus the ledger of what it admitted, delivered, failed or dropped."""

    def __init__(self, settings: EventSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self.handed = 0
        self.admitted = 0
        self.delivered_seen = 0
        self.outstanding: set[str] = set()
        self.failed: set[str] = set()
        self.dropped: set[str] = set()
        self.pending = 0
        self.finished = False
        self.errors_seen: list[str] = []
        self._secrets = _secrets_of(settings)
        self._redactor = _Redactor(self._secrets)
        self._counter = _LogCounter()
        _LOG.addFilter(self._redactor)
        _LOG.addHandler(self._counter)
        _cache_system_context()
        self.client = posthog.Posthog(
            project_api_key=settings.api_key,
            host=settings.host,
            flush_at=settings.flush_at,
            flush_interval=settings.flush_interval_s,
            max_queue_size=settings.max_queue_size,
            max_retries=settings.max_retries,
            timeout=settings.request_timeout_s,
            gzip=settings.gzip,
            thread=settings.threads,
            on_error=self._on_error,
        )
        self.tracking = self._wrap_consumers()

    def _wrap_consumers(self) -> bool:
        """Count a batch as delivered when the consumer's request returns (the SDK has no success hook)."""
        consumers = getattr(self.client, "consumers", None)
        if not consumers:
            return False
        for consumer in consumers:
            original = getattr(consumer, "request", None)
            if original is None:
                return False
            consumer.request = self._tracked(original)
        return True

    def _tracked(self, original: Callable[[list[Any]], None]) -> Callable[[list[Any]], None]:
        def request(batch: list[Any]) -> None:
            original(batch)  # raises on failure: then on_error accounts for the batch
            with self._lock:
                for message in batch:
                    uid = message.get("uuid") if isinstance(message, dict) else None
                    if uid in self.outstanding:
                        self.outstanding.discard(uid)
                        self.delivered_seen += 1

        return request

    def _on_error(self, exc: Exception, batch: list[Any]) -> None:
        with self._lock:
            for message in batch:
                uid = message.get("uuid") if isinstance(message, dict) else None
                if isinstance(uid, str):
                    self.outstanding.discard(uid)
                    self.failed.add(uid)
            if len(self.errors_seen) < 5:
                self.errors_seen.append(redact(f"{type(exc).__name__}: {exc}"[:300], self._secrets))

    def capture(self, event: dict[str, Any]) -> bool:
        """Hand one event to the SDK; False when it was not admitted (counted as dropped)."""
        uid = event["uuid"]
        with self._lock:
            self.handed += 1
            self.outstanding.add(uid)
        try:
            returned = self.client.capture(
                event["event"],
                distinct_id=event["distinct_id"],
                properties=dict(event["properties"]),  # the SDK adds its own keys in place
                timestamp=event["timestamp"],
                uuid=uid,
            )
        except Exception:  # noqa: BLE001 - the SDK must never break the run; counted as dropped
            returned = None
        with self._lock:
            if returned is None:
                self.outstanding.discard(uid)
                self.dropped.add(uid)
                return False
            self.admitted += 1
        return True

    def finish(self) -> set[str]:
        """Bounded end (flush, then shutdown or a joined daemon shutdown); returns uuids not known delivered."""
        if self.finished:
            return self.unknown()
        self.finished = True
        s = self.settings
        try:
            self.client.flush(timeout_seconds=s.flush_timeout_s)
            queued = self.client.queue.unfinished_tasks
            if queued == 0:
                self.client.shutdown()
            else:
                closer = threading.Thread(target=self.client.shutdown, name="posthog-shutdown", daemon=True)
                closer.start()
                closer.join(s.shutdown_join_s)
        finally:
            _LOG.removeHandler(self._counter)
            # The redactor stays while a daemon shutdown may still log; it is cheap and idempotent.
            if self.client.queue.unfinished_tasks == 0:
                _LOG.removeFilter(self._redactor)
        with self._lock:
            if not self.tracking and self.client.queue.unfinished_tasks == 0:
                self.delivered_seen += len(self.outstanding)
                self.outstanding.clear()
            self.pending = len(self.outstanding)
        return self.unknown()

    def unknown(self) -> set[str]:
        with self._lock:
            return set(self.failed) | set(self.dropped) | set(self.outstanding)

    def stats(self) -> DeliveryStats:
        with self._lock:
            failed = len(self.failed)
            pending = len(self.outstanding) if not self.finished else self.pending
            return DeliveryStats(
                handed=self.handed,
                admitted=self.admitted,
                dropped=len(self.dropped),
                failed=failed,
                pending=pending,
                delivered=self.admitted - failed - pending,
                sdk_warnings=self._counter.warnings,
                sdk_errors=self._counter.errors,
                sdk_messages=list(self._counter.samples),
                upload_errors=list(self.errors_seen),
            )


# ---------------------------------------------------------------- the sink


@runtime_checkable
class StoreLike(Protocol):
    """What `recover` needs of the results store (events.py does not import store internals)."""

    def sessions(self) -> list[str]: ...

    def records_of_sessions(self, sessions: set[str]) -> Iterator[CallRecord]: ...


def _store_session(run_dir: Path) -> str:
    """The session of the store that has the run open (the manifest's last), so confirmations match it."""
    try:
        sessions = orjson.loads((run_dir / "manifest.json").read_bytes()).get("sessions")
    except (OSError, orjson.JSONDecodeError, AttributeError):
        sessions = None
    if isinstance(sessions, list) and sessions and isinstance(sessions[-1], str):
        return sessions[-1]
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + os.urandom(2).hex()


class EventSink:
    """A `Sink`: one event per finished call (cancelled calls get none), journaled, then captured."""

    def __init__(self, settings: EventSettings, run_dir: Path, session: str | None = None) -> None:
        self.settings = settings
        self.run_dir = Path(run_dir)
        session = session or _store_session(self.run_dir)
        if not re.fullmatch(r"[0-9A-Za-z]+", session):
            raise ValueError("session must be alphanumeric (use the store's session id)")
        self.session = session
        self._secret_bytes = [s.encode() for s in _secrets_of(settings)]
        self._journal = self.run_dir / f"{JOURNAL_PREFIX}{session}.jsonl"
        try:
            self._fd: int | None = os.open(self._journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise StorageError(f"cannot write {self._journal}: {exc.strerror or exc}") from exc
        self._journal_errors = 0
        self._recovered_sessions: list[str] = []
        self._recovered = 0
        self._rebuilt = 0
        self._outboxed = 0
        self._closed = False
        self._stats: dict[str, Any] | None = None
        self._delivery = _Delivery(settings)

    def write(self, record: CallRecord) -> None:
        """Build, journal and capture the call's event: a queue write, never a network wait."""
        if record.status == "cancelled" or self._closed:
            return
        self._send(build_event(record, self.settings))

    def _send(self, event: dict[str, Any]) -> None:
        line = orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)
        if self._secret_bytes:
            clean = redact_bytes(line, self._secret_bytes)
            if clean is not line:  # rare: a secret inside an error message; send what is stored
                line, event = clean, orjson.loads(clean)
        if self._fd is not None:
            try:
                os.write(self._fd, line)
            except OSError:
                self._journal_errors += 1  # the store reports the disk; the event still goes out
        self._delivery.capture(event)

    # -- crash recovery

    def unconfirmed_sessions(self) -> set[str]:
        """Sessions with an events journal that no clean close confirmed (crashed runs)."""
        confirmed = set(_read_state(self.run_dir).get("confirmed_sessions") or [])
        found = set()
        for path in self.run_dir.glob(f"{JOURNAL_PREFIX}*.jsonl"):
            m = _JOURNAL_RE.match(path.name)
            if m and m.group(1) != self.session and m.group(1) not in confirmed:
                found.add(m.group(1))
        return found

    def recover(
        self,
        rows_of_sessions: StoreLike | Callable[[set[str]], Iterable[CallRecord]] | None = None,
        store_sessions: Iterable[str] = (),
    ) -> int:
        """On resume: re-capture the events of crashed sessions; returns how many were handed over.

        Events come byte-identical from each unconfirmed session's journal. Given
        the store (or its `records_of_sessions` plus `sessions()`), a stored row of
        an unconfirmed session whose event never reached a journal (a kill between
        the two sinks) gets one too, built from the row (its prompt is not stored,
        so such an event carries an empty prompt).
        """
        if isinstance(rows_of_sessions, StoreLike):
            store_sessions = rows_of_sessions.sessions()
            rows_of_sessions = rows_of_sessions.records_of_sessions
        confirmed = set(_read_state(self.run_dir).get("confirmed_sessions") or [])
        sessions = self.unconfirmed_sessions()
        sessions |= {s for s in store_sessions if s not in confirmed and s != self.session}
        seen: set[str] = set()
        for session in sorted(sessions):
            for event in read_events(self.run_dir / f"{JOURNAL_PREFIX}{session}.jsonl"):
                if event["uuid"] in seen:
                    continue
                seen.add(event["uuid"])
                self._delivery.capture(event)
                self._recovered += 1
        if rows_of_sessions is not None and sessions:
            for record in rows_of_sessions(sessions):
                uid = record.event_uuid or event_uuid(self.settings.run_id, record.call_id)
                if record.status == "cancelled" or uid in seen:
                    continue
                seen.add(uid)
                self._send(build_event(record, self.settings))
                self._rebuilt += 1
        self._recovered_sessions = sorted(sessions)
        return self._recovered + self._rebuilt

    # -- end of run

    def close(self) -> None:
        """Bounded flush; then outbox everything not known delivered and confirm the session(s)."""
        if self._closed:
            return
        self._closed = True
        unknown = self._delivery.finish()
        self._stats = self._collect()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        sessions = [self.session, *self._recovered_sessions]
        journals = [self.run_dir / f"{JOURNAL_PREFIX}{s}.jsonl" for s in sessions]
        outbox = self.run_dir / OUTBOX_NAME
        self._outboxed = _append_lines(outbox, _lines_for(journals, unknown, self._secret_bytes))
        state = _read_state(self.run_dir)
        confirmed = sorted(set(state.get("confirmed_sessions") or []) | set(sessions))
        state["confirmed_sessions"] = confirmed
        atomic_write_bytes(self.run_dir / STATE_NAME, orjson.dumps(state, option=orjson.OPT_INDENT_2) + b"\n")
        for journal in journals:
            with contextlib.suppress(OSError):
                journal.unlink()
        self._stats = self._collect()  # again: now with the outbox count

    def stats(self) -> dict[str, Any]:
        """DeliveryStats for the manifest: handed, admitted, dropped, failed, pending, delivered, …"""
        return self._stats if self._stats is not None else self._collect()

    def _collect(self) -> dict[str, Any]:
        stats = asdict(self._delivery.stats())
        stats.update(
            recovered=self._recovered,
            rebuilt=self._rebuilt,
            outboxed=self._outboxed,
            journal_errors=self._journal_errors,
            event_name=self.settings.event_name,
        )
        return stats


def _lines_for(journals: Sequence[Path], wanted: set[str], secret_bytes: Sequence[bytes]) -> Iterator[bytes]:
    """The journaled events whose uuid is in `wanted`, once each, as outbox lines."""
    if not wanted:
        return
    written: set[str] = set()
    for journal in journals:
        for event in read_events(journal):
            uid = event["uuid"]
            if uid in wanted and uid not in written:
                written.add(uid)
                yield redact_bytes(orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE), secret_bytes)


# ---------------------------------------------------------------- resend


def resend_outbox(
    run_dir: Path,
    api_key: str,
    host: str,
    *,
    max_retries: int = 6,
    flush_timeout_s: float = 30.0,
    shutdown_join_s: float = 2.0,
    gzip: bool = True,
    secrets: Sequence[str] = (),
) -> dict[str, Any]:
    """Re-send every outbox event with its original uuid; the outbox keeps only what still failed."""
    run_dir = Path(run_dir)
    outbox = run_dir / OUTBOX_NAME
    events: dict[str, dict[str, Any]] = {}
    for event in read_events(outbox):
        events.setdefault(event["uuid"], event)
    settings = EventSettings(
        api_key=api_key,
        host=host,
        run_id="",
        dataset="",
        target="",
        base_url="",
        flush_timeout_s=flush_timeout_s,
        shutdown_join_s=shutdown_join_s,
        max_retries=max_retries,
        gzip=gzip,
        secrets=tuple(secrets),
    )
    delivery = _Delivery(settings)
    for event in events.values():
        delivery.capture(event)
    still = delivery.finish()
    secret_bytes = [s.encode() for s in _secrets_of(settings)]
    body = b"".join(
        redact_bytes(orjson.dumps(e, option=orjson.OPT_APPEND_NEWLINE), secret_bytes)
        for uid, e in events.items()
        if uid in still
    )
    atomic_write_bytes(outbox, body)
    stats = delivery.stats()
    return {
        "resent": len(events),
        "delivered": len(events) - len(still),
        "still_failed": len(still),
        "sdk_errors": stats.sdk_errors,
        "upload_errors": stats.upload_errors,
    }
