"""Server-sent event bytes of a Messages stream, pre-encoded where possible.

Every delta of the vocabulary is encoded once at import, so streaming one token costs a
dict lookup. Every event has an `event:` line equal to its data's `type`, as the SDK
requires. This module must not write to sockets or decide anything.
"""

from __future__ import annotations

from typing import Any

import orjson

from harness.simulator.textgen import VOCAB

__all__ = [
    "BLOCK_START",
    "MESSAGE_STOP",
    "delta_bytes",
    "error_event",
    "event",
    "message_delta",
    "message_start",
]


def event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _delta(text: str) -> bytes:
    return event(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
    )


_DELTAS: dict[str, bytes] = {piece: _delta(piece) for piece in VOCAB}

# content_block_start, then the ping the real API sends right after it.
BLOCK_START = event(
    "content_block_start",
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
) + event("ping", {"type": "ping"})
BLOCK_STOP = event("content_block_stop", {"type": "content_block_stop", "index": 0})
MESSAGE_STOP = event("message_stop", {"type": "message_stop"})


def delta_bytes(piece: str) -> bytes:
    found = _DELTAS.get(piece)
    return found if found is not None else _delta(piece)


def message_start(message: dict[str, Any]) -> bytes:
    return event("message_start", {"type": "message_start", "message": message})


def message_delta(stop_reason: str, stop_sequence: str | None, usage: dict[str, Any]) -> bytes:
    """content_block_stop, message_delta with the cumulative usage, and message_stop."""
    return (
        BLOCK_STOP
        + event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                "usage": usage,
            },
        )
        + MESSAGE_STOP
    )


def error_event(error_type: str, message: str) -> bytes:
    return event("error", {"type": "error", "error": {"type": error_type, "message": message}})
