"""Server-sent event bytes of a Messages stream, pre-encoded where possible.

Every delta of the vocabulary is encoded once per (delta kind, block index) on first use,
so streaming one token costs a dict lookup. Every event has an `event:` line equal to its
data's `type`, as the SDK requires. This module must not write to sockets or decide anything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from harness.simulator.textgen import VOCAB

__all__ = [
    "BLOCK_START",
    "MESSAGE_STOP",
    "PING",
    "block_start",
    "block_stop",
    "delta_bytes",
    "delta_table",
    "error_event",
    "event",
    "json_delta",
    "message_delta",
    "message_start",
    "signature_delta",
    "text_delta",
    "thinking_delta",
]


def event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _content_delta(index: int, delta: dict[str, Any]) -> bytes:
    return event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


def text_delta(text: str, index: int = 0) -> bytes:
    return _content_delta(index, {"type": "text_delta", "text": text})


def thinking_delta(text: str, index: int = 0) -> bytes:
    return _content_delta(index, {"type": "thinking_delta", "thinking": text})


def json_delta(partial_json: str, index: int) -> bytes:
    return _content_delta(index, {"type": "input_json_delta", "partial_json": partial_json})


def signature_delta(signature: str, index: int) -> bytes:
    return _content_delta(index, {"type": "signature_delta", "signature": signature})


_ENCODERS: dict[str, Callable[[str, int], bytes]] = {"text": text_delta, "thinking": thinking_delta}
_TABLES: dict[tuple[str, int], dict[str, bytes]] = {}


def delta_table(kind: str, index: int) -> dict[str, bytes]:
    """Every vocabulary piece as a `text` or `thinking` delta of block `index`, encoded once."""
    table = _TABLES.get((kind, index))
    if table is None:
        encode = _ENCODERS[kind]
        table = _TABLES[(kind, index)] = {piece: encode(piece, index) for piece in VOCAB}
    return table


_DELTAS = delta_table("text", 0)


def block_start(index: int, block: dict[str, Any]) -> bytes:
    return event(
        "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}
    )


def block_stop(index: int) -> bytes:
    return event("content_block_stop", {"type": "content_block_stop", "index": index})


PING = event("ping", {"type": "ping"})
# content_block_start of a text block, then the ping the real API sends right after it.
BLOCK_START = block_start(0, {"type": "text", "text": ""}) + PING
MESSAGE_STOP = event("message_stop", {"type": "message_stop"})


def delta_bytes(piece: str) -> bytes:
    """A text delta of block 0."""
    found = _DELTAS.get(piece)
    return found if found is not None else text_delta(piece)


def message_start(message: dict[str, Any]) -> bytes:
    return event("message_start", {"type": "message_start", "message": message})


def message_delta(
    stop_reason: str,
    stop_sequence: str | None,
    usage: dict[str, Any],
    stop_details: dict[str, Any] | None = None,
) -> bytes:
    """message_delta with the cumulative usage (and `stop_details` when given), then message_stop."""
    delta: dict[str, Any] = {"stop_reason": stop_reason, "stop_sequence": stop_sequence}
    if stop_details is not None:
        delta["stop_details"] = stop_details
    return event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}) + MESSAGE_STOP


def error_event(error_type: str, message: str) -> bytes:
    return event("error", {"type": "error", "error": {"type": error_type, "message": message}})
