"""Prompt caching as the API documents it: breakpoints, cached prefixes, reads and writes.

A request's prompt is read as one sequence of blocks in the API's order: `tools` (each
definition), `system` (the string, or each text block), then `messages` (each message's
string, or each content block). A breakpoint is a `cache_control: {"type": "ephemeral",
"ttl"?: "5m" | "1h"}` on one of those blocks, or the top-level `cache_control` (automatic
caching), which lands on the last block that can carry one (not a thinking block, not an
empty text). `find_breakpoints` also judges them (400s, the API's messages where recorded):
at most 4 (the automatic one included), a 1-hour one never after a 5-minute one, and an
automatic one whose TTL differs from an explicit marker on the same block.

Prefixes are keyed by (API key, model, exact content up to the block): one chained hash
per block, computed once per request and only up to the last breakpoint, without the
markers themselves (moving a marker changes no prefix and no token count). Changes are
mixed in where the docs' invalidation table puts them: offering web search, enabling
citations or `speed` change the system and message prefixes (not the tools); `tool_choice`,
the thinking settings (type and budget) and whether the messages hold an image change the
message prefixes only; a changed tool definition changes everything after it.

Lookup (`PromptCache.plan`): from each breakpoint, last first, the block itself and up to
19 blocks before it are checked for a usable entry (the documented 20-block lookback); the
first found is the read, A. Then, as the docs bill mixed TTLs: B = the last 1-hour
breakpoint after A (else A), C = the last breakpoint: read A tokens, write B - A at 1 hour
and C - B at 5 minutes; `input_tokens` is what follows C. A prefix under the model's
`cache_min_tokens` is neither read nor written (no error): when the prefix at C is under
it, nothing is cached at all.

Entries (`PromptCache.commit`): a write registers every block boundary it covers (those at
or above the minimum) as usable from `available_at` (the writer's first token: the docs'
"available after the first response begins", so concurrent requests all write) until its
TTL has passed; a read refreshes the entry it hit and the entries that one was built on.
TTLs are simulated time: 300 or 3,600 s times `--time-scale` (never expiring at time
scale 0). One monotonic clock (`time.monotonic()`) throughout. This module must not
handle HTTP or draw random numbers.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from harness.simulator.textgen import block_text, has_cache_markers, tokens_of, tool_json

__all__ = [
    "LOOKBACK_BLOCKS",
    "MAX_BREAKPOINTS",
    "NO_CACHE",
    "TTL_S",
    "Breakpoint",
    "BreakpointError",
    "CachePlan",
    "CacheUsage",
    "Prompt",
    "PromptCache",
    "build_prompt",
    "find_breakpoints",
    "truth_fields",
]

TTL_S = {"5m": 300.0, "1h": 3600.0}
LOOKBACK_BLOCKS = 20
MAX_BREAKPOINTS = 4
_SWEEP_EVERY = 512  # commits between two sweeps of expired entries
_TOOLS, _SYSTEM, _MESSAGES = 0, 1, 2
_UNCACHEABLE = ("thinking", "redacted_thinking")

MSG_TOO_MANY = "A maximum of 4 blocks with cache_control may be provided. Found {found}."
MSG_TTL_ORDER = (
    "{path}.ttl: a ttl='1h' cache_control block must not come after a ttl='5m' cache_control block. "
    "Note that blocks are processed in the following order: `tools`, `system`, `messages`."
)
# Not recorded from the real API (the docs only say it is a 400): worded like its neighbours.
MSG_AUTO_TTL = (
    "cache_control.ttl: the top-level cache_control has ttl='{auto}' but the last cacheable block "
    "({path}) already has a cache_control with ttl='{explicit}'"
)


class BreakpointError(ValueError):
    """A request's breakpoints the API refuses (400 invalid_request_error, this message)."""


@dataclass(frozen=True, slots=True)
class Breakpoint:
    """A breakpoint: the block's index in prompt order, its TTL and the block's JSON path."""

    position: int
    ttl: str
    path: str
    automatic: bool = False


@dataclass(frozen=True, slots=True)
class CacheUsage:
    """Tokens read from the cache and written to it (per TTL) by one request."""

    read: int = 0
    write_5m: int = 0
    write_1h: int = 0

    @property
    def write(self) -> int:
        return self.write_5m + self.write_1h


NO_CACHE = CacheUsage()


def _eligible(block: Any) -> bool:
    """Whether a content block can carry a breakpoint (thinking and empty text cannot)."""
    if not isinstance(block, dict):
        return False
    kind = block.get("type")
    if kind in _UNCACHEABLE:
        return False
    return kind != "text" or bool(block.get("text"))


def _walk(body: dict[str, Any]) -> Iterator[tuple[int, int, str, Any, bool]]:
    """(level, index of the tool / system block / message, JSON path, the tool or block or
    string, whether it can carry a breakpoint), in prompt order."""
    tools = body.get("tools")
    if isinstance(tools, list):
        for i, tool in enumerate(tools):
            yield _TOOLS, i, f"tools.{i}", tool, isinstance(tool, dict)
    system = body.get("system")
    if isinstance(system, str):
        yield _SYSTEM, 0, "system", system, bool(system)
    elif isinstance(system, list):
        for i, block in enumerate(system):
            yield _SYSTEM, i, f"system.{i}", block, _eligible(block)
    for m, message in enumerate(body.get("messages") or ()):
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            yield _MESSAGES, m, f"messages.{m}", content, bool(content)
        elif isinstance(content, list):
            for j, block in enumerate(content):
                yield _MESSAGES, m, f"messages.{m}.content.{j}", block, _eligible(block)


def _ttl(control: Any) -> str:
    ttl = control.get("ttl") if isinstance(control, dict) else None
    return ttl if ttl in TTL_S else "5m"


def find_breakpoints(body: dict[str, Any]) -> list[Breakpoint]:
    """The request's breakpoints in prompt order (the automatic one placed); [] without any.

    Raises `BreakpointError` for what the API refuses. A marker on a block that cannot be
    cached (a thinking block) counts toward the four but caches nothing.
    """
    top = body.get("cache_control")
    if top is None and not has_cache_markers(body):
        return []
    found: list[Breakpoint] = []
    markers = 0
    last: tuple[int, str] | None = None  # the last block that can carry a breakpoint
    for position, (_, _, path, item, eligible) in enumerate(_walk(body)):
        if eligible:
            last = (position, path)
        control = item.get("cache_control") if isinstance(item, dict) else None
        if control is None:
            continue
        markers += 1
        if eligible:
            found.append(Breakpoint(position, _ttl(control), path))
    if top is not None:
        ttl = _ttl(top)
        explicit = found[-1] if found and last is not None and found[-1].position == last[0] else None
        if explicit is not None and explicit.ttl != ttl:
            raise BreakpointError(MSG_AUTO_TTL.format(auto=ttl, path=explicit.path, explicit=explicit.ttl))
        if explicit is None:  # the same TTL on the last block already: a no-op
            markers += 1
            if last is not None:
                found.append(Breakpoint(last[0], ttl, last[1], automatic=True))
    if markers > MAX_BREAKPOINTS:
        raise BreakpointError(MSG_TOO_MANY.format(found=markers))
    short = False
    for breakpoint in found:
        if breakpoint.ttl == "5m":
            short = True
        elif short:
            path = "cache_control" if breakpoint.automatic else f"{breakpoint.path}.cache_control"
            raise BreakpointError(MSG_TTL_ORDER.format(path=path))
    return found


@dataclass(slots=True)
class Prompt:
    """What the cache needs of one request: per block up to the last breakpoint, the tokens of
    the prefix through it and that prefix's hash."""

    breakpoints: list[Breakpoint]
    tokens: list[int]
    hashes: list[bytes]
    paths: list[str]
    total_tokens: int


def _salts(body: dict[str, Any]) -> tuple[bytes, bytes]:
    """What changes the system prefixes (web search, citations, speed) and the message
    prefixes (tool_choice, thinking settings, images), as the invalidation table lists."""
    tools = body.get("tools") or ()
    web_search = any(
        isinstance(t, dict) and isinstance(t.get("type"), str) and t["type"].startswith("web_search_")
        for t in tools
    )
    citations = images = False
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for block in content:
            if not isinstance(block, dict):
                continue
            kind = block.get("type")
            if kind == "image":
                images = True
            elif kind == "document" and isinstance(block.get("citations"), dict):
                citations = citations or block["citations"].get("enabled") is True
            elif kind == "tool_result" and isinstance(block.get("content"), list):
                images = images or any(
                    isinstance(b, dict) and b.get("type") == "image" for b in block["content"]
                )
    thinking = body.get("thinking")
    settings: list[Any] = ["disabled"]
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        settings = ["enabled", thinking.get("budget_tokens")]
    elif isinstance(thinking, dict) and thinking.get("type") == "adaptive":
        settings = ["adaptive"]
    choice = body.get("tool_choice") or {"type": "auto"}
    system = orjson.dumps([web_search, citations, body.get("speed")])
    messages = orjson.dumps([choice, settings, images], option=orjson.OPT_SORT_KEYS)
    return system, messages


def _framed(hasher: Any, tag: bytes, data: bytes) -> None:
    hasher.update(tag + len(data).to_bytes(8, "little"))
    hasher.update(data)


def build_prompt(
    body: dict[str, Any], *, key: str, model: str, breakpoints: list[Breakpoint], total_tokens: int
) -> Prompt:
    """Token counts and chained hashes of every prefix up to the last breakpoint, in one pass.

    The counts use the pieces `count_input_tokens` adds up (the tools' JSON, its brackets and
    commas given to the tools they follow), so the prefix through the last block is the whole
    prompt's count.
    """
    stop = breakpoints[-1].position
    system_salt, messages_salt = _salts(body)
    hasher = hashlib.blake2b(digest_size=16)
    _framed(hasher, b"K", key.encode() + b"\x00" + model.encode())
    tools = body.get("tools")
    last_tool = len(tools) - 1 if isinstance(tools, list) else -1
    tokens: list[int] = []
    hashes: list[bytes] = []
    paths: list[str] = []
    chars = 0
    level_seen = _TOOLS
    message = -1
    for position, (level, index, path, item, _) in enumerate(_walk(body)):
        if position > stop:
            break
        if level > level_seen:
            if level_seen < _SYSTEM:
                _framed(hasher, b"S", system_salt)
            if level == _MESSAGES:
                _framed(hasher, b"M", messages_salt)
            level_seen = level
        if level == _TOOLS:
            data = tool_json(item)
            chars += len(data) + 1 + (1 if index == last_tool else 0)  # "[" or ",", and "]"
            kind = item.get("type") if isinstance(item, dict) else None
            if not (isinstance(kind, str) and kind.startswith("web_search_")):
                _framed(hasher, b"T", data)  # web search is part of the system prompt instead
        else:
            text = item if isinstance(item, str) else block_text(item)
            chars += len(text)
            if level == _MESSAGES and index != message:
                message = index
                _framed(hasher, b"R", str(body["messages"][index].get("role", "")).encode())
            typed = isinstance(item, dict) and item.get("type") != "text"
            _framed(hasher, b"J" if typed else b"X", text.encode())
        tokens.append(min(total_tokens, tokens_of(chars)) if chars else 0)
        hashes.append(hasher.copy().digest())
        paths.append(path)
    return Prompt(breakpoints, tokens, hashes, paths, total_tokens)


@dataclass(slots=True, eq=False)
class _Entry:
    """One write: the boundaries it registered share it (and its refreshes)."""

    ttl: str
    available_at: float
    expires_at: float
    parent: _Entry | None = None

    def usable(self, now: float) -> bool:
        return self.available_at <= now < self.expires_at


@dataclass(slots=True)
class CachePlan:
    """What one request reads and writes, decided at receipt; `PromptCache.commit` applies it."""

    prompt: Prompt
    usage: CacheUsage
    uncached: int  # the prompt's tokens after the last breakpoint (all of them when not cached)
    eligible: bool  # the prefix at the last breakpoint reaches the model's minimum
    hit: int = -1  # the block position read from (A), -1 for none
    hit_breakpoint: int | None = None  # which breakpoint's lookback found it (0 = the first)
    split: int = -1  # B: the last position written with a 1-hour TTL
    entry: _Entry | None = None
    min_tokens: int = 0

    @property
    def prefix_tokens(self) -> int:
        """Tokens through the last breakpoint."""
        return self.prompt.tokens[self.prompt.breakpoints[-1].position]

    def effective_tokens(self, factor: float) -> float:
        """The prompt as TTFT sees it: a token read from the cache costs `factor` of one that is not."""
        total = self.uncached + self.usage.read + self.usage.write
        return total - self.usage.read * (1.0 - factor)


def truth_fields(plan: CachePlan | None) -> dict[str, Any]:
    """The ground-truth record's cache fields (`plan` None: the request has no breakpoint)."""
    if plan is None:
        return {
            "cache_read_tokens": 0,
            "cache_write_5m_tokens": 0,
            "cache_write_1h_tokens": 0,
            "cache_eligible": None,
            "cache_hit": False,
            "cache_breakpoints": 0,
            "cache_prefix_tokens": 0,
            "cache_min_tokens": None,
            "cache_hit_breakpoint": None,
            "cache_hit_at": None,
        }
    usage = plan.usage
    return {
        "cache_read_tokens": usage.read,
        "cache_write_5m_tokens": usage.write_5m,
        "cache_write_1h_tokens": usage.write_1h,
        "cache_eligible": plan.eligible,
        "cache_hit": usage.read > 0,
        "cache_breakpoints": len(plan.prompt.breakpoints),
        "cache_prefix_tokens": plan.prefix_tokens,
        "cache_min_tokens": plan.min_tokens,
        "cache_hit_breakpoint": plan.hit_breakpoint,
        "cache_hit_at": plan.prompt.paths[plan.hit] if plan.hit >= 0 else None,
    }


class PromptCache:
    """Every live entry, by prefix hash (the key and model are inside the hash).

    `plan` and `commit` take their instant from the caller: a Message Batch runs its requests
    at the (future) instants they are processed. Forgetting expired entries follows `clock`.
    """

    def __init__(self, time_scale: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.time_scale = time_scale
        self._clock = clock
        self._entries: dict[bytes, _Entry] = {}
        self._commits = 0

    def ttl_seconds(self, ttl: str) -> float:
        """A TTL on the monotonic clock: simulated seconds times the time scale."""
        return TTL_S[ttl] * self.time_scale if self.time_scale > 0 else math.inf

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self._commits = 0

    def plan(self, prompt: Prompt, min_tokens: int, now: float) -> CachePlan:
        """What `prompt` reads and writes at `now` (nothing changes until `commit`)."""
        breakpoints, tokens, hashes = prompt.breakpoints, prompt.tokens, prompt.hashes
        last = breakpoints[-1].position
        if tokens[last] < min_tokens:
            return CachePlan(prompt, NO_CACHE, prompt.total_tokens, False, min_tokens=min_tokens)
        entries = self._entries
        hit, found, entry = -1, None, None
        for k in range(len(breakpoints) - 1, -1, -1):
            start = breakpoints[k].position
            for position in range(start, max(-1, start - LOOKBACK_BLOCKS), -1):
                if tokens[position] < min_tokens:
                    break
                candidate = entries.get(hashes[position])
                if candidate is not None and candidate.usable(now):
                    hit, found, entry = position, k, candidate
                    break
            if hit >= 0:
                break
        read = tokens[hit] if hit >= 0 else 0
        split = hit
        for breakpoint in breakpoints:
            if breakpoint.ttl == "1h" and breakpoint.position > hit:
                split = breakpoint.position
        long_end = tokens[split] if split > hit else read
        usage = CacheUsage(read=read, write_1h=long_end - read, write_5m=tokens[last] - long_end)
        return CachePlan(
            prompt,
            usage,
            prompt.total_tokens - tokens[last],
            True,
            hit=hit,
            hit_breakpoint=found,
            split=split,
            entry=entry,
            min_tokens=min_tokens,
        )

    def commit(self, plan: CachePlan, now: float, available_at: float) -> None:
        """Apply a plan: refresh what it read (at `now`), register what it wrote, usable from
        `available_at` (the writer's first token)."""
        prompt = plan.prompt
        if not plan.eligible:
            return
        entry = plan.entry
        depth = 0
        while entry is not None and depth < 64:  # the read, and what it was built on
            entry.expires_at = max(entry.expires_at, now + self.ttl_seconds(entry.ttl))
            entry, depth = entry.parent, depth + 1
        last = prompt.breakpoints[-1].position
        if last > plan.hit:
            long = short = None
            if plan.split > plan.hit:
                long = _Entry("1h", available_at, available_at + self.ttl_seconds("1h"), plan.entry)
            if last > plan.split:
                short = _Entry("5m", available_at, available_at + self.ttl_seconds("5m"), long or plan.entry)
            tokens, hashes, minimum = prompt.tokens, prompt.hashes, plan.min_tokens
            for position in range(plan.hit + 1, last + 1):
                if tokens[position] >= minimum:
                    written = long if position <= plan.split else short
                    assert written is not None
                    self._put(hashes[position], written, now)
        self._commits += 1
        if self._commits % _SWEEP_EVERY == 0:
            self.sweep(self._clock())

    def _put(self, key: bytes, new: _Entry, now: float) -> None:
        old = self._entries.get(key)
        if old is None or old.expires_at <= min(now, self._clock()):
            self._entries[key] = new
            return
        # A live entry for the same prefix (concurrent writers, or a rewrite): one entry usable
        # from the earlier availability to the later expiry.
        old.available_at = min(old.available_at, new.available_at)
        old.expires_at = max(old.expires_at, new.expires_at)

    def sweep(self, now: float) -> int:
        """Forget expired entries; how many boundaries went."""
        dead = [key for key, entry in self._entries.items() if entry.expires_at <= now]
        for key in dead:
            del self._entries[key]
        return len(dead)
