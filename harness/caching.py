"""Prompt caching as a run setting: where breakpoints go, and which prefixes are long enough to cache.

A `cache` mode applies to a case (from a variant's `cache = ...` or `--cache`):

- `off`: every `cache_control` is stripped (tools, system blocks, message blocks), so latency and
  cost are measured without caching and do not depend on what the dataset happened to mark;
- `5m` / `1h`: the dataset's own marks are replaced by breakpoints where they pay, with that TTL:
  on the last tool definition, on the last system block (a string system becomes one text block),
  and on the long stable prefix of the messages (the last block before the final user content:
  the previous turn's last block, or the final user turn's next-to-last block). At most the API's
  four breakpoints; a 1-hour entry never follows a 5-minute one (all get the same TTL);
- `auto`: the API's own automatic caching (a top-level `cache_control`, generally available on the
  first-party API): it marks the last cacheable block of each request, so every call writes its
  own tail and reads the longest earlier prefix it finds (the API looks back 20 blocks).

Without a mode the dataset's breakpoints are sent as written. A prefix shorter than the model's
minimum cacheable length is silently not cached by the API (no error): `min_cacheable_tokens`
says what that length is (one maintained table; a profile may override it), and the engine
flags such calls (`cache_eligible = false`) instead of counting them as misses.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson

from harness.records import Case, PlannedCall

if TYPE_CHECKING:
    from harness.client import Attempt
    from harness.pricing import PriceTable

__all__ = [
    "CACHE_MODES",
    "MAX_BREAKPOINTS",
    "apply_cache",
    "cache_columns",
    "cache_prefix",
    "eligible_prefixes",
    "min_cacheable_tokens",
    "prefix_case",
    "strip_cache_control",
]

CACHE_MODES = ("off", "5m", "1h", "auto")
MAX_BREAKPOINTS = 4

# Minimum cacheable prompt length (tokens) per model, as Anthropic's prompt-caching docs list them
# ("Cache limitations", quoted 2026-07 to 2026-10); the first matching prefix wins. A profile may
# override it per model: [models."<id>"] cache_min_tokens = N.
_MIN_TOKENS: tuple[tuple[str, int], ...] = (
    ("claude-opus-5-5", 512),
    ("claude-sonnet-5-5", 512),
    ("claude-haiku-5-5", 512),
    ("claude-opus-5", 512),
    ("claude-sonnet-5", 1024),
    ("claude-opus-4-8", 1024),
    ("claude-opus-4-7", 2048),
    ("claude-opus-4-6", 4096),
    ("claude-opus-4-5", 4096),
    ("claude-haiku-4-5", 4096),
    ("claude-sonnet-4", 1024),
    ("claude-opus-4", 1024),
)
DEFAULT_MIN_TOKENS = 1024


def min_cacheable_tokens(model: str, overrides: Mapping[str, int] | None = None) -> int:
    """The shortest prefix the API caches for `model` (a profile override first)."""
    if overrides and model in overrides:
        return int(overrides[model])
    return next((n for prefix, n in _MIN_TOKENS if model.startswith(prefix)), DEFAULT_MIN_TOKENS)


def strip_cache_control(value: Any) -> Any:
    """A copy of a request part without any `cache_control` key, at any depth."""
    if isinstance(value, dict):
        return {k: strip_cache_control(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list | tuple):
        return [strip_cache_control(v) for v in value]
    return value


def _mark(block: dict[str, Any], ttl: str | None) -> None:
    block["cache_control"] = {"type": "ephemeral", **({"ttl": ttl} if ttl else {})}


def _as_blocks(content: Any) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def apply_cache(case: Case, mode: str) -> Case:
    """The case with its breakpoints set by `mode` (see the module docstring)."""
    if mode not in CACHE_MODES:
        raise ValueError(f"unknown cache mode {mode!r}")
    params = strip_cache_control(dict(case.params or {}))
    system = strip_cache_control(case.system) if isinstance(case.system, list) else case.system
    messages = [strip_cache_control(dict(m)) for m in case.messages]
    params.pop("cache_control", None)
    if mode == "off":
        return replace(case, params=params or None, system=system, messages=tuple(messages))
    if mode == "auto":
        params["cache_control"] = {"type": "ephemeral"}
        return replace(case, params=params, system=system, messages=tuple(messages))
    ttl = None if mode == "5m" else "1h"
    tools = params.get("tools")
    if isinstance(tools, list) and tools:
        params["tools"] = copy.deepcopy(tools)
        _mark(params["tools"][-1], ttl)
    if system:
        system = _as_blocks(system)
        _mark(system[-1], ttl)
    stable = _stable_block(messages)
    if stable is not None:
        turn, index = stable
        blocks = _as_blocks(messages[turn]["content"])
        _mark(blocks[index], ttl)
        messages[turn]["content"] = blocks
    return replace(case, params=params or None, system=system, messages=tuple(messages))


def _stable_block(messages: list[dict[str, Any]]) -> tuple[int, int] | None:
    """(turn, block) that ends the stable prefix of the conversation, if it has one."""
    last = len(messages) - 1
    final = _as_blocks(messages[last]["content"])
    if len(final) >= 2:
        return last, len(final) - 2  # e.g. a long document block, then the question
    if last >= 1:
        return last - 1, len(_as_blocks(messages[last - 1]["content"])) - 1
    return None


def cache_prefix(case: Case) -> bytes | None:
    """A key of the request prefix up to its last breakpoint (tools → system → messages); None without one.

    Calls with the same key share a cache entry: the engine's warm-up sends the first of them
    alone, and counts each distinct prefix's length once.
    """
    parts: list[Any] = []
    cut: int | None = None
    for tool in (case.params or {}).get("tools") or ():
        parts.append(("tool", tool))
        if isinstance(tool, dict) and "cache_control" in tool:
            cut = len(parts)
    for block in _as_blocks(case.system) if case.system else ():
        parts.append(("system", block))
        if isinstance(block, dict) and "cache_control" in block:
            cut = len(parts)
    stable = _stable_block([dict(m) for m in case.messages])
    for t, turn in enumerate(case.messages):
        for b, block in enumerate(_as_blocks(turn["content"])):
            parts.append((turn["role"], block))
            if isinstance(block, dict) and "cache_control" in block:
                cut = len(parts)
            if (t, b) == stable and "cache_control" in (case.params or {}):
                cut = max(cut or 0, len(parts))  # automatic caching: calls share up to the stable prefix
    if cut is None and "cache_control" in (case.params or {}):
        cut = len(parts) - 1 if len(parts) > 1 else None
    if cut is None:
        return None
    # Changing thinking or tool_choice invalidates message-level entries: calls that differ there share none.
    settings = {k: (case.params or {}).get(k) for k in ("thinking", "tool_choice")}
    return orjson.dumps([settings, strip_cache_control(parts[:cut])], option=orjson.OPT_SORT_KEYS)


def prefix_case(case: Case) -> Case | None:
    """The request up to and including its last breakpoint (what is cached), for counting; None without one."""
    marked: tuple[int, int] | None = None
    for t, message in enumerate(case.messages):
        for b, block in enumerate(_as_blocks(message["content"])):
            if isinstance(block, dict) and "cache_control" in block:
                marked = (t, b)
    if marked is not None:
        last_turn, last_block = marked
        messages = [dict(m) for m in case.messages[: last_turn + 1]]
        messages[-1]["content"] = _as_blocks(messages[-1]["content"])[: last_block + 1]
        if messages[-1]["role"] != "user":  # a request ends with a user turn (or a prefill after one)
            messages.append({"role": "user", "content": "."})
    elif "cache_control" in (case.params or {}):  # automatic caching: the whole prompt is the prefix
        messages = list(case.messages)
    elif cache_prefix(case) is not None:  # a breakpoint on tools or system only
        messages = [{"role": "user", "content": "."}]
    else:
        return None
    return replace(case, messages=tuple(messages), max_tokens=1)


async def eligible_prefixes(
    calls: Iterable[PlannedCall],
    count: Callable[[PlannedCall], Awaitable[int | None]],
    overrides: Mapping[str, int],
) -> dict[tuple[str, bytes], tuple[int | None, bool]]:
    """(model, prefix key) → (prefix tokens, long enough to cache) for every distinct prefix, counted once.

    A prefix the endpoint could not count is given the benefit of the doubt (eligible).
    """
    todo: dict[tuple[str, bytes], PlannedCall] = {}
    for call in calls:
        key = cache_prefix(call.case)
        if key is not None and (call.model, key) not in todo:
            prefix = prefix_case(call.case)
            if prefix is not None:
                todo[(call.model, key)] = replace(call, case=prefix)
    counted = await asyncio.gather(*(count(c) for c in todo.values()))
    return {
        key: (tokens, tokens is None or tokens >= min_cacheable_tokens(key[0], overrides))
        for key, tokens in zip(todo, counted, strict=True)
    }


def cache_columns(
    prices: PriceTable, call: PlannedCall, a: Attempt | None, total_usd: float
) -> dict[str, Any]:
    """A row's cache columns: eligibility, hit, and what the call would have cost uncached.

    The uncached cost prices every cached token (read or written) as plain input; a row with
    no cache traffic and no cache eligibility has no such figure (None), one that was eligible
    but missed has its own cost.
    """
    uncached: float | None = None
    if a is not None and (a.cache_creation_input_tokens or a.cache_read_input_tokens):
        uncached = prices.cost(
            call.model,
            a.input_tokens + a.cache_creation_input_tokens + a.cache_read_input_tokens,
            a.output_tokens,
            web_searches=a.web_search_requests or 0,
        ).total_usd
    elif a is not None and call.cache_eligible is not None:
        uncached = total_usd
    return {
        "cache_eligible": call.cache_eligible,
        "cache_hit": (a is not None and a.cache_read_input_tokens > 0)
        if call.cache_eligible is not None
        else None,
        "uncached_cost_usd": uncached,
        "cache_savings_usd": None if uncached is None else uncached - total_usd,
    }
