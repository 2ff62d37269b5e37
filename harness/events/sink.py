"""The PostHog sink: exactly one capture per finished call, with delivery accounted for.

On the event loop `write()` only builds the event (`harness.events.event`), appends
it to this session's events journal (one `os.write`) and queues the same bytes for
the delivery child (`harness.events.pipe`; ~2 ms of events go in one pipe write).
The SDK runs in that child: in this process its ~330 µs of CPU per event and its
threads' share of the GIL made the event loop lag by tens of ms.

At a clean `close()` every event not known delivered is appended to the outbox
(created empty when all arrived), the session is confirmed in the run directory's
event state, and its journal is deleted. After a `kill -9` the journal survives; on
`--resume`, `recover()` re-captures the events of every unconfirmed session from its
journal, byte-identical (same uuid, timestamp and properties), plus an event for any
stored row of such a session whose event never reached the journal (a kill between
the two sinks), rebuilt from the row and its case (a resume runs the same dataset).

Wiring (the composition root; store before events, so a row exists before its event)::

    run = RunDir.create(...)  or  RunDir.resume(...)
    events = EventSink(settings, run, cases)          # {(case id, variant): the case as sent}
    events.recover()                                  # on resume
    ... engine with sinks [RunStore(run), events, …] ...
    events.close(); store.close(); run.update_manifest(events=events.stats())

This module never touches a record's numbers, and never writes or logs the PostHog
key (or any other known secret: they become `[secure]`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import Any

import orjson

from harness.errors import StorageError
from harness.events.child import DeliveryConfig
from harness.events.event import EventSettings, build_event, uuid_of
from harness.events.journal import append_lines, event_line, outbox_lines, read_events
from harness.events.pipe import DeliveryPipe
from harness.records import CallRecord, Case
from harness.rundir import RunDir
from harness.secrets import env_secrets, usable

__all__ = ["EventSink", "delivery_config", "secrets_of"]

_COALESCE_S = 0.002  # events finished within this long go to the delivery child in one write
_COALESCE_MAX = 256


def secrets_of(settings: EventSettings) -> list[str]:
    """The PostHog key, the caller's extra secrets and the keys in the environment (8+ chars)."""
    return usable([settings.api_key, *settings.secrets, *env_secrets()])


def delivery_config(settings: EventSettings) -> DeliveryConfig:
    """The delivery part of `settings`; its secrets are every value to redact except the key itself."""
    delivery = {f.name: getattr(settings, f.name) for f in fields(DeliveryConfig)}
    delivery["secrets"] = tuple(s for s in secrets_of(settings) if s != settings.api_key)
    return DeliveryConfig(**delivery)


class EventSink:
    """A `Sink`: one event per finished call (cancelled calls get none), journaled, then captured.

    `cases` maps `(case id, variant)` to the case as the call sent it (after its variant), so
    `$ai_input` shows what the API received; a plain case id is accepted as well.
    """

    def __init__(self, settings: EventSettings, run: RunDir, cases: Mapping[Any, Case] | None = None) -> None:
        assert run.session is not None, "events are written into a RunDir opened for writing"
        self.settings = settings
        self.run = run
        self.session = run.session
        self._cases = cases or {}
        self._secrets = secrets_of(settings)
        self._secret_bytes = [s.encode() for s in self._secrets]
        self._journal = run.events_journal()
        try:
            self._fd: int | None = os.open(self._journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise StorageError(f"cannot write {self._journal}: {exc.strerror or exc}") from exc
        self._journal_errors = 0
        self._recovered_sessions: list[str] = []
        self._recovered = 0
        self._rebuilt = 0
        self._outboxed = 0
        self._truncated = 0
        self._closed = False
        self._stats: dict[str, Any] | None = None
        self._delivery = DeliveryPipe(delivery_config(settings), self._secrets)
        self._pending: list[bytes] = []
        self._pending_lock = threading.Lock()
        self._flush_handle: asyncio.TimerHandle | None = None

    def wait_ready(self, timeout_s: float = 15.0) -> bool:
        """Wait for the delivery child to be up, so its start-up does not share the first calls' CPU."""
        return self._delivery.wait_ready(timeout_s)

    def backlog_bytes(self) -> int:
        """Events built but not yet taken by the delivery child (a producer may wait on it)."""
        with self._pending_lock:
            pending = sum(len(line) for line in self._pending)
        return pending + self._delivery.backlog_bytes

    def event_of(self, record: CallRecord) -> dict[str, Any]:
        """The event this sink sends for `record`."""
        case = self._cases.get((record.case_id, record.variant)) or self._cases.get(record.case_id)
        return build_event(record, self.settings, case)

    def write(self, record: CallRecord) -> None:
        """Build, journal and hand over the call's event: two writes, never a network wait."""
        if record.status == "cancelled" or self._closed:
            return
        self._send(self.event_of(record))

    def _send(self, event: dict[str, Any]) -> None:
        if event["properties"].get("truncated"):
            self._truncated += 1  # cut to fit the SDK's size limit: counted in the manifest
        line = event_line(event, self._secret_bytes)  # a secret can hide in an error message
        if self._fd is not None:
            try:
                os.write(self._fd, line)
            except OSError:
                self._journal_errors += 1  # the store reports the disk; the event still goes out
        self._queue(line)  # the same bytes the journal holds

    def _queue(self, line: bytes) -> None:
        """Coalesce the pipe writes: events of the next ~2 ms go to the child in one write.

        One write per event cost ~0.1 ms of the loop's CPU and a wake-up of the child each.
        Nothing is at risk meanwhile: the journal already holds the event. Outside an
        event loop (recovery, tests) the line goes at once.
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
        """Earlier sessions with calls or an events journal that no clean close confirmed (crashed runs)."""
        confirmed = self.run.confirmed_event_sessions()
        found = self.run.events_journal_sessions() | set(self.run.sessions())
        return {s for s in found if s != self.session and s not in confirmed}

    def recover(self) -> int:
        """On resume: re-capture the events of crashed sessions; returns how many were handed over."""
        sessions = self.unconfirmed_sessions()
        seen: set[str] = set()
        for session in sorted(sessions):
            for event in read_events(self.run.events_journal(session)):
                if event["uuid"] in seen:
                    continue
                seen.add(event["uuid"])
                self._delivery.send(orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE))
                self._recovered += 1
        for record in self.run.records_of_sessions(sessions):
            uid = uuid_of(record)
            if record.status == "cancelled" or uid in seen:
                continue
            seen.add(uid)
            self._send(self.event_of(record))
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
        journals = [self.run.events_journal(s) for s in sessions]
        lines = outbox_lines(journals, unknown, self._secret_bytes)
        self._outboxed = append_lines(self.run.events_outbox, lines)
        self.run.confirm_event_sessions(sessions)
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
            truncated=self._truncated,
            journal_errors=self._journal_errors,
            event_name=self.settings.event_name,
        )
        return stats
