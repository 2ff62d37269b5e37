"""An event's size as the PostHog SDK measures it, and cutting an event's texts to fit (pure).

The SDK drops an event over 900 KiB of `json.dumps` (ASCII-escaped: a non-BMP character costs
12 bytes) with only a log line, and a resend would drop it again. `fit_event` cuts the longest
strings of the prompt, input, output and tools until the event fits `EVENT_BYTE_BUDGET`, marks
each cut text with `TRUNCATED_MARK` and the event with `truncated: true`. Light (no SDK, no
harness imports): `event` uses it for new events, `resend` for outbox events written before it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

__all__ = ["EVENT_BYTE_BUDGET", "SDK_MAX_EVENT_BYTES", "TRUNCATED_MARK", "fit_event", "sdk_size"]

SDK_MAX_EVENT_BYTES = 900 * 1024  # posthog.consumer.MAX_MSG_SIZE: larger events are dropped
# What the SDK adds before it measures ($lib, $lib_version, system context, its envelope): ~1 KiB
# measured; the rest is headroom.
EVENT_BYTE_BUDGET = SDK_MAX_EVENT_BYTES - 16 * 1024
TRUNCATED_MARK = "…[truncated]"
_HEAVY = ("prompt", "$ai_input", "$ai_output_choices", "$ai_tools")


def sdk_size(event: Mapping[str, Any]) -> int:
    """The event's size as the SDK measures it (`json.dumps`: ASCII-escaped, default separators).

    Exact once it matters; far below the budget an upper bound from the compact form (escaping
    at most triples a byte, a separator adds one byte to each `,` and `:`), which saves the
    slow `json.dumps` on every ordinary event.
    """
    compact = orjson.dumps(event)
    separators = compact.count(b",") + compact.count(b":")
    if compact.isascii():
        if len(compact) + separators < EVENT_BYTE_BUDGET // 2:
            return len(compact) + separators
    elif 3 * len(compact) + separators < EVENT_BYTE_BUDGET // 2:
        return 3 * len(compact) + separators
    return len(json.dumps(event, default=str).encode())


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def _capped(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + TRUNCATED_MARK
    if isinstance(value, dict):
        return {k: _capped(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_capped(v, limit) for v in value]
    return value


def fit_event(event: dict[str, Any], budget: int = EVENT_BYTE_BUDGET) -> dict[str, Any]:
    """`event` itself when it fits `budget` serialised bytes, else a copy whose longest texts are cut to fit.

    Every string of the prompt, input, output and tools longer than a limit is cut to that
    limit (plus a mark); the limit is the largest that fits, found in a few measured steps.
    """
    size = sdk_size(event)
    if size <= budget:
        return event
    props = event.get("properties")
    if not isinstance(props, dict):
        return event  # nothing this function may cut
    heavy = {k: props[k] for k in _HEAVY if k in props}

    def trial(limit: int) -> dict[str, Any]:
        capped = {k: _capped(v, limit) for k, v in heavy.items()}
        return {**event, "properties": {**props, **capped, "truncated": True}}

    too_long = max((len(s) for s in _strings(heavy)), default=0)
    limit, best = too_long, None
    while best is None and limit > 0:
        # Shrink in proportion to the excess (texts dominate an oversized event), at least by a tenth.
        limit = max(0, min(int(limit * budget / size), limit - max(1, limit // 10)))
        candidate = trial(limit)
        size = sdk_size(candidate)
        if size <= budget:
            best = candidate
        else:
            too_long = limit
    if best is None:  # not even empty texts fit: leave the content out
        return {
            **event,
            "properties": {**{k: v for k, v in props.items() if k not in _HEAVY}, "truncated": True},
        }
    for _ in range(4):  # a few halvings towards the largest limit that fits
        middle = (limit + too_long) // 2
        if middle <= limit:
            break
        candidate = trial(middle)
        if sdk_size(candidate) <= budget:
            limit, best = middle, candidate
        else:
            too_long = middle
    return best
