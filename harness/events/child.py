"""The PostHog delivery child: runs the `posthog` SDK and its delivery ledger away from the event loop.

The SDK costs ~330 µs of CPU per event, and its consumer threads share the GIL
with whatever runs beside them; inside the harness that made the event loop lag
by tens of milliseconds and corrupted every latency it measured. So
the event sink (`harness.events.sink`) has `harness.events.pipe` start
`python -m harness.events.child` once per run and only writes one orjson line per
event into its stdin. This module is both that child's entry point and the home of
the ledger (`Delivery`), which `harness.events.resend` also uses in-process.

Protocol (one way in, one line out):

- stdin, first line: the configuration, JSON `{"api_key": …, **DeliveryConfig.public()}`
  (host, batching, retries, the secrets to redact from log lines). The key goes
  through the pipe: never argv (which `ps` shows), never the environment. The child
  imports the SDK before it reads that line, so a child started early (`prestart`,
  while the harness imports the Anthropic SDK) is ready as soon as it is configured;
- stdout: `READY_LINE` once the client is up;
- stdin, then: one event per line, as journaled; then the line `END_LINE`;
- stdout, after `END_LINE`: the bounded end (`flush(flush_timeout_s)`, then
  `shutdown()`, joined for `shutdown_join_s` when events are still queued) and
  one JSON line: `DeliveryStats` plus `delivered_seen` and `unknown` (the uuids
  not known delivered, which the parent writes to the outbox from its journals).

End of stdin without `END_LINE` means the parent died: the child exits at once
without sending (the parent's journal keeps the events for `recover`). The child
runs in its own session and ignores SIGINT and SIGTERM (the parent handles
Ctrl-C, then ends the child through the protocol), and is killed with its
parent (started through `harness.procs`). It must import nothing heavy (no polars;
of the harness only `harness.secrets`), never print the key, and never write files.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from harness.secrets import Redactor, redact_text, usable

__all__ = [
    "END_LINE",
    "READY_LINE",
    "Delivery",
    "DeliveryConfig",
    "DeliveryStats",
    "LogCounter",
    "config_line",
    "main",
    "write_all",
]

CAPTURE_MODE = "v0"  # posthog's legacy /batch/ protocol: what the ledger and the simulator's sink speak
END_LINE = b'"end"\n'  # a JSON string: never an event (events are objects)
READY_LINE = b'"ready"\n'  # stdout, once the client is up: the parent starts its clock after it
_LOG = logging.getLogger("posthog")


@dataclass(frozen=True)
class DeliveryConfig:
    """The client settings of posthog-capture.md §8, plus the secrets its log lines must never show."""

    api_key: str = field(repr=False)
    host: str
    flush_timeout_s: float = 10.0
    max_retries: int = 6
    gzip: bool = True
    shutdown_join_s: float = 2.0
    flush_at: int = 100
    flush_interval_s: float = 0.5
    max_queue_size: int = 100_000
    request_timeout_s: float = 10.0
    threads: int = 2
    secrets: tuple[str, ...] = field(default=(), repr=False)

    def public(self) -> dict[str, Any]:
        """Everything but the key (what may be logged or compared; `config_line` adds the key)."""
        out = asdict(self)
        del out["api_key"]
        return out


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
    cpu_s: float = 0.0  # the delivery child's CPU from ready to its report (start-up excluded)


def _cache_system_context() -> None:
    """Compute the SDK's per-event OS/runtime properties once per process instead of per event.

    posthog 7.91's `capture()` calls `system_context()` (platform + distro lookups,
    ~90 µs) for every event. The values cannot change while the process runs, and
    the SDK copies the dict it returns, so a cached copy sends the same
    properties. Skipped if the SDK's layout differs (then capture simply costs more).
    """
    import posthog.client as sdk_client

    current = getattr(sdk_client, "system_context", None)
    if callable(current) and not getattr(current, "_harness_cached", False):
        cached = functools.cache(current)
        cached._harness_cached = True  # type: ignore[attr-defined]
        sdk_client.system_context = cached


class LogCounter(logging.Handler):
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


class Delivery:
    """One posthog client plus the ledger of what it admitted, delivered, failed or dropped."""

    def __init__(self, config: DeliveryConfig) -> None:
        import posthog  # here, not at the top: the harness process only needs it for `resend`

        self.config = config
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
        self._stalled = False
        self._secrets = usable([config.api_key, *config.secrets])
        self._redactor = Redactor(self._secrets)
        self._counter = LogCounter()
        _LOG.addFilter(self._redactor)
        _LOG.addHandler(self._counter)
        _cache_system_context()
        self.client = posthog.Posthog(
            project_api_key=config.api_key,
            host=config.host,
            flush_at=config.flush_at,
            flush_interval=config.flush_interval_s,
            max_queue_size=config.max_queue_size,
            max_retries=config.max_retries,
            timeout=config.request_timeout_s,
            gzip=config.gzip,
            thread=config.threads,
            on_error=self._on_error,
            # Pinned: POSTHOG_CAPTURE_MODE in the user's environment would otherwise switch to the v1
            # protocol, whose per-event results this ledger does not read (it counts v0 batches).
            capture_mode=CAPTURE_MODE,
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
                self.errors_seen.append(redact_text(f"{type(exc).__name__}: {exc}"[:300], self._secrets))

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

    def wait_for_room(self) -> None:
        """Hold the next event while the SDK's queue is nearly full, for at most `flush_timeout_s`.

        The pipe then fills behind us and a producer faster than the capture endpoint (a batch's
        results file) waits on it, where the SDK would drop events once its queue is full. A
        capture endpoint that stays away costs one such wait; then events are admitted (and
        dropped to the outbox) as before, until the queue has room again.
        """
        queue = getattr(self.client, "queue", None)
        if queue is None:
            return
        limit = int(self.config.max_queue_size * 0.9)
        if queue.qsize() < limit:
            self._stalled = False
            return
        deadline = time.monotonic() + self.config.flush_timeout_s
        while not self._stalled and queue.qsize() >= limit and time.monotonic() < deadline:
            time.sleep(0.005)
        self._stalled = queue.qsize() >= limit

    def finish(self) -> set[str]:
        """Bounded end (flush, then shutdown or a joined daemon shutdown); returns uuids not known delivered."""
        if self.finished:
            return self.unknown()
        self.finished = True
        c = self.config
        try:
            self.client.flush(timeout_seconds=c.flush_timeout_s)
            queued = self.client.queue.unfinished_tasks
            if queued == 0:
                self.client.shutdown()
            else:
                closer = threading.Thread(target=self.client.shutdown, name="posthog-shutdown", daemon=True)
                closer.start()
                closer.join(c.shutdown_join_s)
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


# ---------------------------------------------------------------- the child process


def config_line(config: DeliveryConfig) -> bytes:
    """The first line the child reads: its whole configuration, the key included."""
    return orjson.dumps({"api_key": config.api_key, **config.public()}, option=orjson.OPT_APPEND_NEWLINE)


def _config_from_line(line: bytes) -> DeliveryConfig:
    options = orjson.loads(line)
    options["secrets"] = tuple(options.get("secrets") or ())
    return DeliveryConfig(**options)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main() -> int:
    """Capture every line of stdin until `END_LINE`, end the client within its bounds, report on stdout."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's; it ends us by the protocol
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    import posthog  # noqa: F401 - the slow part of starting, done before the configuration arrives

    first = sys.stdin.buffer.readline()
    if not first.strip():
        os._exit(3)  # the parent went away (or never needed us) before configuring us
    delivery = Delivery(_config_from_line(first))
    write_all(sys.stdout.fileno(), READY_LINE)
    cpu_at_ready = time.process_time()
    ended = False
    for line in sys.stdin.buffer:
        if line == END_LINE:
            ended = True
            break
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # cannot happen with the parent's writer; never worth a crash
        if isinstance(event, dict) and isinstance(event.get("uuid"), str):
            delivery.wait_for_room()
            delivery.capture(event)
    if not ended:
        os._exit(3)  # the parent is gone: its journal keeps the events for `recover`
    unknown = delivery.finish()
    report = asdict(delivery.stats())
    report.update(delivered_seen=delivery.delivered_seen, unknown=sorted(unknown))
    report["cpu_s"] = round(time.process_time() - cpu_at_ready, 4)
    write_all(sys.stdout.fileno(), orjson.dumps(report) + b"\n")
    # os._exit: the SDK's atexit join could wait on a daemon shutdown still retrying a dead host.
    os._exit(0)


if __name__ == "__main__":
    main()
