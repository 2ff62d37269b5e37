"""The parent's side of the PostHog delivery child: starting it, the pipe into it, its report.

`python -m harness.events.child` (protocol in that module) is started through
`harness.procs`, possibly early (`prestart`, while the harness imports the Anthropic
SDK: about 0.25 s of start-up). `DeliveryPipe.send()` runs on the event loop and
never blocks: one `os.write` into a non-blocking pipe, a writer thread only while
the pipe is full. This module is light (no polars): the CLI imports it first.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import select
import signal
import subprocess
import threading
import time
from collections import deque
from typing import Any

import orjson

from harness import procs
from harness.events.child import (
    END_LINE,
    READY_LINE,
    DeliveryConfig,
    DeliveryStats,
    LogCounter,
    config_line,
    write_all,
)
from harness.secrets import Redactor, redact

__all__ = ["DeliveryPipe", "discard_prestarted", "prestart", "spawn", "take_prestarted"]

_LOG = logging.getLogger("posthog")
_F_SETPIPE_SZ = 1031  # Linux: grow the pipe so bursts rarely reach the writer thread
_PIPE_BYTES = 1 << 20  # the unprivileged maximum (/proc/sys/fs/pipe-max-size)
_CHUNK_BYTES = 1 << 18  # the writer thread joins queued lines up to this size per write
_CHILD_GRACE_S = 5.0  # child start-up and catching up, on top of flush_timeout_s + shutdown_join_s
_REAP_S = 2.0  # after its report the child only exits

_PRESTARTED: list[procs.Child] = []


def spawn() -> procs.Child:
    """Start `python -m harness.events.child` unconfigured (stdin piped; the key comes in its first line)."""
    return procs.start("harness.events.child", stdin=subprocess.PIPE)


def prestart() -> None:
    """Start the child now, so that its SDK import overlaps the harness's own (about 0.25 s of start-up)."""
    if not _PRESTARTED:
        _PRESTARTED.append(spawn())


def discard_prestarted() -> None:
    """End a prestarted child nobody took (the run failed first); unconfigured, it exits at EOF."""
    while _PRESTARTED:
        child = _PRESTARTED.pop()
        if child.proc.stdin is not None:
            child.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.proc.wait(2.0)
        child.stop(signal.SIGKILL)


def take_prestarted() -> procs.Child | None:
    """The prestarted child, once, if it is still alive."""
    while _PRESTARTED:
        child = _PRESTARTED.pop()
        if child.proc.poll() is None:
            return child
        child.close()
    return None


class DeliveryPipe:
    """The parent's side of the delivery child: a non-blocking pipe in, one stats line out.

    `send()` runs on the event loop: one `os.write` of a ready line into a
    non-blocking pipe (enlarged to 1 MiB). When the child is behind and the pipe
    is full, the rest waits in a deque that a writer thread drains (it only
    writes bytes, which releases the GIL); order is kept because the loop writes
    directly only while that deque is empty, both under one lock. `backlog_bytes`
    says how much waits there: an engine whose results come faster than the child can
    take them (a batch's results file) waits on it instead of growing the deque.
    """

    def __init__(self, config: DeliveryConfig, secrets: list[str]) -> None:
        self.config = config
        self.handed = 0
        self.delivered_seen = 0
        self.result: dict[str, Any] | None = None
        self.failure = ""
        self._secrets = secrets
        # The parent's own `posthog` log records (a resend, or anyone's) are redacted and counted too.
        self._redactor = Redactor(self._secrets)
        self._counter = LogCounter()
        _LOG.addFilter(self._redactor)
        _LOG.addHandler(self._counter)
        # A child prestarted by the CLI has imported the SDK meanwhile; else start one now.
        self.child = take_prestarted() or spawn()
        self.proc = self.child.proc
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._fd = self.proc.stdin.fileno()
        with contextlib.suppress(OSError):  # the child is gone: `wait_ready` and `finish` report it
            write_all(self._fd, config_line(config))
        with contextlib.suppress(OSError):
            fcntl.fcntl(self._fd, _F_SETPIPE_SZ, _PIPE_BYTES)
        os.set_blocking(self._fd, False)
        self._lock = threading.Lock()
        self._backlog: deque[bytes] = deque()
        self._backlog_bytes = 0
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

    @property
    def backlog_bytes(self) -> int:
        """Bytes waiting in this process for the child to read them."""
        return self._backlog_bytes

    def _put(self, line: bytes) -> None:
        if self._dead:
            return
        if self._backlog:
            self._backlog.append(line)  # the writer thread is draining: keep the order
            self._backlog_bytes += len(line)
            return
        n = self._write(line)
        if n < len(line):
            self._backlog.append(line[n:])
            self._backlog_bytes += len(line) - n
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
                        self._backlog_bytes = 0
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
                    self._backlog_bytes -= min(n, len(chunk))
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
        try:
            self._ready = self.child.read_line(timeout_s) == READY_LINE
        except procs.ChildFailed:
            return False
        return self._ready

    def finish(self) -> set[str] | None:
        """End the child within its bounds; the uuids it did not deliver, or None when it could not say."""
        s = self.config
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
                self.failure = self._stderr_tail()
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
        self.child.stop(signal.SIGKILL, timeout_s=0.0)  # already gone, or ignoring SIGTERM: kill

    def _stderr_tail(self) -> str:
        """Why the child died (its last stderr line), redacted."""
        said = self.child.why("exited without a report")
        return redact(f"delivery process failed: {said}"[:300], self._secrets)

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
