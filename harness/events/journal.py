"""The events journal and outbox format: one JSON event per line, appended whole.

The paths come from the run directory (`harness.rundir.RunDir`); this module owns
what a line is. A torn last line (a kill mid-write) or a damaged one is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from harness.errors import StorageError
from harness.secrets import redact_bytes

__all__ = ["append_lines", "event_line", "outbox_lines", "read_events"]


def event_line(event: dict[str, Any], secret_bytes: Sequence[bytes]) -> bytes:
    """One event as a journal/outbox/pipe line, secrets redacted."""
    line = orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)
    return redact_bytes(line, secret_bytes) if secret_bytes else line


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


def append_lines(path: Path, lines: Iterable[bytes]) -> int:
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


def outbox_lines(
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
                yield event_line(event, secret_bytes)
