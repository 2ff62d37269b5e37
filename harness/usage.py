"""The Messages API's `usage` object: how a stream's final usage meets its start, and what is read from it.

Why a module of its own: the merge rule is easy to get wrong (`new or old` turns an
explicit 0 into the old value, and a compaction stream that starts with 55,096 cache
reads and ends with 0 would be billed for them), and streamed and unstreamed replies
must be read by the same rule. Pure functions over dicts; no I/O, no SDK.

Rules (anthropic-wire.md, addendum):

- The final `message_delta` usage is cumulative and authoritative: every field it
  carries replaces the `message_start` value, an explicit 0 included; a field it does
  not carry (or carries as null, as the SDK reads it) keeps the start value. Nested
  objects (`cache_creation`, `server_tool_use`, `output_tokens_details`) merge field
  by field under the same rule.
- `cache_creation_input_tokens` is the total of cache writes; the `cache_creation`
  breakdown only splits it (it may be sent at `message_start` only): the 1-hour part
  is its `ephemeral_1h_input_tokens` capped at the total, and every other write is a
  5-minute write (the API's default TTL).
- Server-tool counts (`server_tool_use.*`) are recorded as columns; `SERVER_TOOL_COUNTS`
  is the one list of them. They are null when the reply has no `server_tool_use`
  (no server tool offered), a count otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["SERVER_TOOL_COUNTS", "UsageTarget", "apply_usage", "merge_usage"]

# `server_tool_use` field → the genai-prices `Usage` key that prices it, or None when the
# count is not billed by itself. Web fetches cost only the tokens they add (Anthropic's
# pricing), and genai-prices has no unit for them.
SERVER_TOOL_COUNTS: dict[str, str | None] = {
    "web_search_requests": "web_searches",
    "web_fetch_requests": None,
}


class UsageTarget(Protocol):
    """What `apply_usage` writes: the usage fields of `harness.client.Attempt`."""

    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    cache_creation_1h_input_tokens: int
    thinking_tokens: int | None
    web_search_requests: int | None
    web_fetch_requests: int | None
    service_tier: str | None
    inference_geo: str | None


def merge_usage(start: Mapping[str, Any] | None, final: Mapping[str, Any] | None) -> dict[str, Any]:
    """`start` updated by `final`: present fields replace (0 included), absent or null ones keep."""
    merged = dict(start) if start else {}
    if not final:
        return merged
    for key, value in final.items():
        if value is None:
            continue
        before = merged.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            merged[key] = merge_usage(before, value)
        else:
            merged[key] = value
    return merged


def _count(value: Any) -> int:
    """A token count as sent; a missing or malformed one is 0 (as the SDK's optional fields are)."""
    return value if type(value) is int else (int(value) if isinstance(value, int | float) else 0)


def _maybe_count(parent: Any, key: str) -> int | None:
    if not isinstance(parent, Mapping):
        return None
    value = parent.get(key)
    return None if value is None else _count(value)


def apply_usage(target: UsageTarget, usage: Mapping[str, Any] | None) -> None:
    """Set `target`'s usage fields from a (merged) usage object: the only reader of usage fields."""
    u = usage or {}
    target.input_tokens = _count(u.get("input_tokens"))
    target.output_tokens = _count(u.get("output_tokens"))
    total_writes = _count(u.get("cache_creation_input_tokens"))
    target.cache_creation_input_tokens = total_writes
    target.cache_read_input_tokens = _count(u.get("cache_read_input_tokens"))
    one_hour = _maybe_count(u.get("cache_creation"), "ephemeral_1h_input_tokens") or 0
    target.cache_creation_1h_input_tokens = max(0, min(one_hour, total_writes))
    target.thinking_tokens = _maybe_count(u.get("output_tokens_details"), "thinking_tokens")
    tools = u.get("server_tool_use")
    for name in SERVER_TOOL_COUNTS:
        setattr(target, name, _maybe_count(tools, name))
    tier, geo = u.get("service_tier"), u.get("inference_geo")
    target.service_tier = tier if isinstance(tier, str) else None
    target.inference_geo = geo if isinstance(geo, str) else None
