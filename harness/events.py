"""The PostHog sink: exactly one capture per finished call, with delivery accounted for.

`build_event` turns a `CallRecord` into one event (PostHog's Claude-tutorial
properties, its `$ai_*` LLM-analytics properties, and the run's own), with the
record's deterministic `event_uuid` and the call's start as `timestamp`, so any
re-send is deduplicated by PostHog (and counted as a duplicate by the simulator).

`EventSink` hands events to one long-lived `posthog.Posthog` client in queue
mode (settings of posthog-capture.md §8) that runs in a child process,
`python -m harness.eventproc`: in this process the SDK cost ~330 µs of CPU per
event and its threads' share of the GIL made the event loop lag by tens of ms,
which corrupts every latency the harness measures. On the loop, `write()` only
builds the event, appends it to the journal and writes the same line into the
child's non-blocking stdin pipe (a writer thread takes over only while the pipe
is full). The key reaches the child through its environment, never argv; the
child ignores Ctrl-C (the harness handles it, then closes the sink) and dies
with the harness. The SDK can lose events silently, so the child keeps a ledger
(posthog-capture.md §5; `harness.eventproc.Delivery`):

- `capture()` returning None → lost at once ("dropped");
- `on_error(exc, batch)` → every uuid of the batch failed;
- each consumer's `request` is wrapped so a batch that returned counts as
  delivered; whatever is neither delivered nor failed at the end is "pending"
  (still queued, or dropped by the SDK with only a log line);
- WARNING/ERROR records on the `posthog` logger are counted (and redacted), in
  the child and in this process.

`close()` sends the end marker; the child ends within flush_timeout_s +
shutdown_join_s and reports its ledger and the uuids it did not deliver as one
JSON line. A child that died or hung (no report within those bounds plus a few
seconds) is killed and every event handed to it counts as pending (outboxed).

Durability: before it goes to the child, each event is appended (one `os.write`) to
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

import asyncio
import contextlib
import fcntl
import logging
import os
import re
import select
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import orjson

from harness import eventproc
from harness.config import SECRET_ENV_VARS
from harness.errors import StorageError
from harness.eventproc import (
    END_LINE,
    READY_LINE,
    Delivery,
    DeliveryConfig,
    DeliveryStats,
    LogCounter,
    Redactor,
)
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
_F_SETPIPE_SZ = 1031  # Linux: grow the pipe so bursts rarely reach the writer thread
_PIPE_BYTES = 1 << 20  # the unprivileged maximum (/proc/sys/fs/pipe-max-size)
_CHUNK_BYTES = 1 << 18  # the writer thread joins queued lines up to this size per write
_COALESCE_S = 0.002  # events finished within this long go to the delivery child in one write
_COALESCE_MAX = 256
_CHILD_GRACE_S = 5.0  # child start-up and catching up, on top of flush_timeout_s + shutdown_join_s
_REAP_S = 2.0  # after its report the child only exits


@dataclass(frozen=True, kw_only=True)
class EventSettings(DeliveryConfig):
    """How events are built, and (the inherited fields) how they are delivered.

    `api_key` is the PostHog project key (never shown); `secrets` are other values to
    redact (e.g. the Anthropic key).
    """

    run_id: str
    dataset: str
    target: str
    base_url: str
    event_name: str = EVENT_NAME
    prompt_capture: bool = True


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


# ---------------------------------------------------------------- the delivery process


def _secrets_of(settings: EventSettings) -> list[str]:
    """The PostHog key, the caller's extra secrets and the API keys in the environment (8+ chars)."""
    keys = {settings.api_key, *settings.secrets, *default_secrets()}
    return sorted((k for k in keys if k and len(k) >= 8), key=len, reverse=True)


def _config_of(settings: EventSettings) -> DeliveryConfig:
    """The delivery part of `settings`; its secrets are every value to redact except the key itself."""
    delivery = {f.name: getattr(settings, f.name) for f in fields(DeliveryConfig)}
    delivery["secrets"] = tuple(s for s in _secrets_of(settings) if s != settings.api_key)
    return DeliveryConfig(**delivery)


class _DeliveryProcess:
    """The parent's side of `harness.eventproc`: a non-blocking pipe in, one stats line out.

    `send()` runs on the event loop: one `os.write` of a ready line into a
    non-blocking pipe (enlarged to 1 MiB). When the child is behind and the pipe
    is full, the rest waits in a deque that a writer thread drains (it only
    writes bytes, which releases the GIL); order is kept because the loop writes
    directly only while that deque is empty, both under one lock.
    """

    def __init__(self, settings: EventSettings) -> None:
        self.settings = settings
        self.handed = 0
        self.delivered_seen = 0
        self.result: dict[str, Any] | None = None
        self.failure = ""
        self._secrets = _secrets_of(settings)
        # The parent's own `posthog` log records (a resend, or anyone's) are redacted and counted too.
        self._redactor = Redactor(self._secrets)
        self._counter = LogCounter()
        _LOG.addFilter(self._redactor)
        _LOG.addHandler(self._counter)
        # A child prestarted by the CLI has imported the SDK meanwhile; else start one now.
        self.proc, self._stderr = eventproc.take_prestarted() or eventproc.spawn(SECRET_ENV_VARS)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._fd = self.proc.stdin.fileno()
        with contextlib.suppress(OSError):  # the child is gone: `wait_ready` and `finish` report it
            eventproc.write_all(self._fd, eventproc.config_line(_config_of(settings)))
        with contextlib.suppress(OSError):
            fcntl.fcntl(self._fd, _F_SETPIPE_SZ, _PIPE_BYTES)
        os.set_blocking(self._fd, False)
        self._lock = threading.Lock()
        self._backlog: deque[bytes] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._dead = False
        self._ready = False
        self._writer = threading.Thread(target=self._drain, name="events-pipe-writer", daemon=True)
        self._writer.start()

    # -- hot path (event loop)

    def send(self, line: bytes, count: int = 1) -> None:
        """Hand `count` serialised events (newline-terminated lines) to the child without ever blocking."""
        with self._lock:
            self.handed += count
            self._put(line)

    def _put(self, line: bytes) -> None:
        if self._dead:
            return
        if self._backlog:
            self._backlog.append(line)  # the writer thread is draining: keep the order
            return
        n = self._write(line)
        if n < len(line):
            self._backlog.append(line[n:])
            self._wake.set()

    def _write(self, data: bytes) -> int:
        """Bytes written (0 when the pipe is full); a dead child swallows everything."""
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0
        except OSError as exc:  # EPIPE: the child died; its events are in the journal
            self._dead = True
            self._backlog.clear()
            self.failure = self.failure or f"delivery process gone ({exc.strerror or exc})"
            return len(data)

    # -- writer thread

    def _drain(self) -> None:
        while True:
            self._wake.wait()
            while True:
                with self._lock:
                    if self._dead or not self._backlog:
                        self._wake.clear()
                        stop = self._stopping
                        break
                    if len(self._backlog) > 1:
                        parts, size = [], 0
                        while self._backlog and size < _CHUNK_BYTES:
                            part = self._backlog.popleft()
                            parts.append(part)
                            size += len(part)
                        self._backlog.appendleft(b"".join(parts))
                    chunk = self._backlog[0]
                    n = self._write(chunk)
                    if n >= len(chunk):
                        self._backlog.popleft()
                    elif n:
                        self._backlog[0] = chunk[n:]
                    blocked = n < len(chunk) and not self._dead
                if blocked:
                    select.select([], [self._fd], [], 0.2)
            if stop:
                return

    # -- end of run (a worker thread, or the caller's)

    def wait_ready(self, timeout_s: float) -> bool:
        """Block until the child's client is up (its imports would otherwise compete with the first calls)."""
        stdout = self.proc.stdout
        assert stdout is not None
        fd = stdout.fileno()
        data = b""
        deadline = time.monotonic() + timeout_s
        while len(data) < len(READY_LINE):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return False
            chunk = os.read(fd, len(READY_LINE) - len(data))
            if not chunk:
                return False
            data += chunk
        self._ready = data == READY_LINE
        return self._ready

    def finish(self) -> set[str] | None:
        """End the child within its bounds; the uuids it did not deliver, or None when it could not say."""
        s = self.settings
        deadline = time.monotonic() + s.flush_timeout_s + s.shutdown_join_s + _CHILD_GRACE_S
        try:
            with self._lock:
                self._put(END_LINE)
                self._stopping = True
                self._wake.set()
            self._writer.join(max(0.0, deadline - time.monotonic()))
            if self._writer.is_alive():
                self.failure = "delivery process stopped reading its events"
            elif not self._dead:
                self.result = self._read_report(deadline)
        finally:
            self._end_process()
            _LOG.removeHandler(self._counter)
            _LOG.removeFilter(self._redactor)
        if self.result is None:
            return None
        self.delivered_seen = int(self.result.get("delivered_seen") or 0)
        return {u for u in self.result.get("unknown") or () if isinstance(u, str)}

    def _read_report(self, deadline: float) -> dict[str, Any] | None:
        stdout = self.proc.stdout
        assert stdout is not None and self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # EOF after END_LINE
        fd = stdout.fileno()
        data = bytearray()
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.failure = "delivery process did not report in time"
                return None
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                self.failure = self._stderr_tail() or "delivery process exited without a report"
                return None
            data += chunk
            if not self._ready and data.startswith(READY_LINE):
                del data[: len(READY_LINE)]
                self._ready = True
        try:
            report = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.failure = "delivery process sent an unreadable report"
            return None
        return report if isinstance(report, dict) else None

    def _end_process(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(_REAP_S if self.result is not None else 0.0)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._stderr.close()

    def _stderr_tail(self) -> str:
        """The child's last stderr line (a traceback's verdict), redacted: why it died."""
        with contextlib.suppress(OSError, ValueError):
            self._stderr.seek(0)
            lines = self._stderr.read()[-4000:].decode(errors="replace").strip().splitlines()
            if lines:
                return redact(f"delivery process failed: {lines[-1]}"[:300], self._secrets)
        return ""

    def stats(self) -> DeliveryStats:
        """The child's figures (plus the parent's own SDK log records); all pending when it never reported."""
        r = self.result
        if r is None:
            done = self.failure != "" or self._stopping
            return DeliveryStats(
                handed=self.handed,
                admitted=self.handed if done else 0,
                dropped=0,
                failed=0,
                pending=self.handed if done else 0,
                delivered=0,
                sdk_warnings=self._counter.warnings,
                sdk_errors=self._counter.errors,
                sdk_messages=list(self._counter.samples),
                upload_errors=[self.failure] if self.failure else [],
            )
        return DeliveryStats(
            handed=int(r["handed"]),
            admitted=int(r["admitted"]),
            dropped=int(r["dropped"]),
            failed=int(r["failed"]),
            pending=int(r["pending"]),
            delivered=int(r["delivered"]),
            sdk_warnings=int(r["sdk_warnings"]) + self._counter.warnings,
            sdk_errors=int(r["sdk_errors"]) + self._counter.errors,
            sdk_messages=(list(self._counter.samples) + list(r["sdk_messages"]))[:5],
            upload_errors=list(r["upload_errors"]),
            cpu_s=float(r.get("cpu_s", 0.0)),
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
        # The SDK runs in a child process (harness.eventproc): in this one its ~330 µs of CPU per
        # event and its threads' share of the GIL made the event loop lag (issue #6).
        self._delivery = _DeliveryProcess(settings)
        self._pending: list[bytes] = []
        self._pending_lock = threading.Lock()
        self._flush_handle: asyncio.TimerHandle | None = None

    def wait_ready(self, timeout_s: float = 15.0) -> bool:
        """Wait for the delivery child to be up, so its start-up does not share the first calls' CPU."""
        return self._delivery.wait_ready(timeout_s)

    def write(self, record: CallRecord) -> None:
        """Build, journal and hand over the call's event: two writes, never a network wait."""
        if record.status == "cancelled" or self._closed:
            return
        self._send(build_event(record, self.settings))

    def _send(self, event: dict[str, Any]) -> None:
        line = orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)
        if self._secret_bytes:
            line = redact_bytes(line, self._secret_bytes)  # rare: a secret in an error message
        if self._fd is not None:
            try:
                os.write(self._fd, line)
            except OSError:
                self._journal_errors += 1  # the store reports the disk; the event still goes out
        self._queue(line)  # the same bytes the journal holds

    def _queue(self, line: bytes) -> None:
        """Coalesce the pipe writes: events of the next ~2 ms go to the child in one write.

        One write per event cost ~0.1 ms of the loop's CPU and a wake-up of the child each
        (issue #6). Nothing is at risk meanwhile: the journal already holds the event.
        Outside an event loop (recovery, tests) the line goes at once.
        """
        with self._pending_lock:
            self._pending.append(line)
            if self._flush_handle is not None and len(self._pending) < _COALESCE_MAX:
                return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._flush()
            return
        if len(self._pending) >= _COALESCE_MAX:
            self._flush()
        else:
            self._flush_handle = loop.call_later(_COALESCE_S, self._flush)

    def _flush(self) -> None:
        with self._pending_lock:
            # A timer still due finds nothing to send (never cancelled here: close() runs on another thread).
            self._flush_handle = None
            lines, self._pending = self._pending, []
            if lines:
                self._delivery.send(b"".join(lines), len(lines))

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
                self._delivery.send(orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE))
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
        self._flush()
        self._closed = True
        unknown = self._delivery.finish()  # None: the child could not say, so nothing is known delivered
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


def _lines_for(
    journals: Sequence[Path], wanted: set[str] | None, secret_bytes: Sequence[bytes]
) -> Iterator[bytes]:
    """The journaled events whose uuid is in `wanted` (all of them for None), once each, as outbox lines."""
    if wanted is not None and not wanted:
        return
    written: set[str] = set()
    for journal in journals:
        for event in read_events(journal):
            uid = event["uuid"]
            if (wanted is None or uid in wanted) and uid not in written:
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
    delivery = Delivery(_config_of(settings))
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
