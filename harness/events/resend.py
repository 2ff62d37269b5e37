"""`harness events resend RUN_DIR`: deliver the outbox's events again, with their original uuids.

PostHog drops a second copy of a uuid it already has (eventually: its de-duplication is
best-effort until ClickHouse merges the copies), and only events not known delivered are in the
outbox; it keeps only what still failed. An outbox event over the SDK's size limit (written
before events were cut to fit) is cut the same way first, or the SDK would drop it again. The
SDK runs in this process (a resend measures nothing, so its CPU costs nothing that matters).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.events.child import Delivery, DeliveryConfig
from harness.events.journal import event_line, read_events
from harness.events.size import fit_event
from harness.rundir import RunDir
from harness.secrets import env_secrets, usable

__all__ = ["resend_outbox"]


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
    run = RunDir.read(run_dir)
    events: dict[str, dict[str, Any]] = {}
    for event in read_events(run.events_outbox):
        events.setdefault(event["uuid"], fit_event(event))
    hidden = usable([api_key, *secrets, *env_secrets()])
    delivery = Delivery(
        DeliveryConfig(
            api_key=api_key,
            host=host,
            flush_timeout_s=flush_timeout_s,
            shutdown_join_s=shutdown_join_s,
            max_retries=max_retries,
            gzip=gzip,
            secrets=tuple(s for s in hidden if s != api_key),
        )
    )
    for event in events.values():
        delivery.capture(event)
    still = delivery.finish()
    secret_bytes = [s.encode() for s in hidden]
    run.write_atomic(
        run.events_outbox.name, b"".join(event_line(e, secret_bytes) for u, e in events.items() if u in still)
    )
    stats = delivery.stats()
    return {
        "resent": len(events),
        "delivered": len(events) - len(still),
        "still_failed": len(still),
        "sdk_errors": stats.sdk_errors,
        "upload_errors": stats.upload_errors,
    }
