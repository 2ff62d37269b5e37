"""What a reply contains: its content blocks (thinking, text, tool calls, web searches) and
the bytes of its stream, decided once per request.

`plan_reply` is a pure function of the seed, the model and the request body: which blocks
the reply has, their tokens, stop reason and usage extras. `stream_frames` turns a plan
into the bytes the server writes, one frame per delta, so the hot path only writes
pre-built bytes. This module must not know about HTTP, sockets or time; the rules it
implements are listed in the package docstring ("Simulator features").
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.simulator import sse
from harness.simulator.textgen import VOCAB, Answer
from harness.simulator.validate import thinking_on

__all__ = [
    "REFUSAL_MAGIC",
    "Block",
    "Frames",
    "Reply",
    "content_json",
    "plan_reply",
    "reply_inputs",
    "stream_frames",
]

# Anthropic's documented test string: a prompt carrying it is refused.
REFUSAL_MAGIC = (
    "ANTHROPIC_MAGIC_STRING_TRIGGER_REFUSAL_1FAEFB6177B4672DEE07F9D3AFC62588CCD2631EDCF22E8CCC1FB35B501C9C86"
)
_REFUSE = re.compile(r"\[\[refuse(?::(\d{1,7}))?\]\]")
_SEARCH_WORD = re.compile(r"\bsearch\b", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{2,}")
_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_EFFORT_THINKING = {"low": 0.25, "medium": 0.6, "high": 1.0, "xhigh": 1.6, "max": 2.5}
_ADAPTIVE_BASE = 1024
_SCHEMA_DEPTH = 4
_TEXT_SHELL = {"type": "text", "text": ""}
_REFUSAL_DETAILS = {"type": "refusal", "category": None, "explanation": None}
_PAGE_AGES = ("January 12, 2026", "3 days ago", None, "August 4, 2025", "2 weeks ago", None)
_SITES = ("example.com", "example.org", "example.net")


@dataclass(slots=True)
class Block:
    """One content block: its start shell, one piece per output token, and the whole block."""

    kind: str  # thinking | text | tool_use | server_tool_use | web_search_tool_result
    shell: dict[str, Any]
    pieces: list[str] = field(default_factory=list)
    whole: dict[str, Any] | None = None  # for non-text blocks; text and thinking join `pieces`
    signature: str = ""  # thinking
    hidden: bool = False  # thinking with display "omitted": tokens counted, text not sent
    pause_s: float = 0.0  # unscaled wait before the block (a web search's own time)


@dataclass(slots=True)
class Reply:
    """The planned reply: blocks in order, stop reason and what usage and ground truth report."""

    blocks: list[Block]
    stop_reason: str
    stop_sequence: str | None = None
    stop_details: dict[str, Any] | None = None
    thinking_tokens: int = 0
    tool_calls: list[str] = field(default_factory=list)
    web_search_offered: bool = False
    web_search_requests: int = 0
    search_input_tokens: int = 0  # what the search results add to the input (cumulative usage)
    refused: bool = False

    @property
    def output_tokens(self) -> int:
        return sum(len(b.pieces) for b in self.blocks)

    def add_usage(self, usage: dict[str, Any]) -> dict[str, Any]:
        """Add what this reply adds to a usage object: web search input and counts, thinking."""
        usage["input_tokens"] += self.search_input_tokens
        if self.web_search_offered:
            usage["server_tool_use"] = {
                "web_search_requests": self.web_search_requests,
                "web_fetch_requests": 0,
            }
        if self.thinking_tokens:
            usage["output_tokens_details"] = {"thinking_tokens": self.thinking_tokens}
        return usage


def _rng(seed: int, model: str, digest: bytes, purpose: str) -> random.Random:
    return random.Random(
        hashlib.blake2b(f"{seed}|{model}|{purpose}|".encode() + digest, digest_size=16).digest()
    )


def _ident(prefix: str, rng: random.Random) -> str:
    return prefix + "01" + "".join(rng.choice(_ID_ALPHABET) for _ in range(22))


def _last_user_text(body: dict[str, Any]) -> str:
    """The text of the last user turn (text blocks only)."""
    for message in reversed(body["messages"]):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(
                b["text"] for b in content if isinstance(b, dict) and b.get("type") == "text" and "text" in b
            )
        return ""
    return ""


def _refusal(text: str) -> int | None:
    """How many text tokens come before the refusal, or None when the prompt is not refused."""
    if REFUSAL_MAGIC in text:
        return 0
    if "[[refuse" not in text:
        return None
    found = _REFUSE.search(text)
    if found is None:
        return None
    return int(found.group(1) or 0)


def _words(text: str) -> list[str]:
    """Words of the prompt for string inputs: its capitalised words after the first (names,
    places) when it has some, else all its words."""
    words = _WORD.findall(_REFUSE.sub(" ", text[:4000]))
    names = [w for w in words[1:] if w[0].isupper()]
    return names or words


def _mentions(text: str, name: str) -> bool:
    pattern = r"(?<![A-Za-z0-9_-])" + re.escape(name) + r"(?![A-Za-z0-9_-])"
    return re.search(pattern, text, re.IGNORECASE) is not None


def _decide_tool(body: dict[str, Any], text: str, rng: random.Random) -> dict[str, Any] | None:
    """The tool the reply calls (a custom tool or the web search tool), or None.

    none: never. tool: the named one. any: the first offered tool the last user turn
    mentions by name, else one picked by the request hash. auto: the first mentioned tool
    (for the web search tool, the word "search" counts too), else none. Server tools other
    than web search are never called.
    """
    tools = [t for t in body.get("tools") or () if t.get("type") in (None, "custom") or _is_web_search(t)]
    choice = body.get("tool_choice") or {"type": "auto"}
    kind = choice.get("type")
    if not tools or kind == "none":
        return None
    if kind == "tool":
        return next((t for t in tools if t["name"] == choice.get("name")), None)
    for tool in tools:
        if _mentions(text, tool["name"]) or (_is_web_search(tool) and _SEARCH_WORD.search(text)):
            return tool
    if kind == "any":
        return tools[rng.randrange(len(tools))]
    return None


def _is_web_search(tool: dict[str, Any]) -> bool:
    kind = tool.get("type")
    return isinstance(kind, str) and kind.startswith("web_search_")


def _value(schema: Any, rng: random.Random, words: list[str], depth: int) -> Any:
    """A plausible value for a JSON Schema: const, enum's first, else by type."""
    if not isinstance(schema, dict):
        return rng.choice(words)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return _value(options[0], rng, words, depth)
    kind = schema.get("type", "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "integer":
        low = schema.get("minimum", 1)
        return low + rng.randrange(100) if isinstance(low, int) else rng.randrange(1, 100)
    if kind == "number":
        return round(rng.uniform(1, 100), 1)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "array":
        return [] if depth >= _SCHEMA_DEPTH else [_value(schema.get("items"), rng, words, depth + 1)]
    if kind == "object":
        return {} if depth >= _SCHEMA_DEPTH else _object(schema, rng, words, depth + 1)
    return rng.choice(words)


def _object(schema: dict[str, Any], rng: random.Random, words: list[str], depth: int) -> dict[str, Any]:
    """The required properties (all of them when none is required), at most 16."""
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return {}
    required = schema.get("required")
    names = (
        [n for n in required if n in properties]
        if isinstance(required, list) and required
        else list(properties)
    )
    return {name: _value(properties[name], rng, words, depth) for name in names[:16]}


def _json_pieces(text: str, rng: random.Random) -> list[str]:
    """The JSON text cut into chunks of 2-8 characters, one output token each."""
    pieces = []
    at = 0
    while at < len(text):
        step = rng.randint(2, 8)
        pieces.append(text[at : at + step])
        at += step
    return pieces


def _thinking_tokens(
    thinking: dict[str, Any], body: dict[str, Any], rng: random.Random, max_tokens: int
) -> int:
    """A fraction of the budget (`enabled`), or about 1k tokens scaled by effort (`adaptive`)."""
    if thinking["type"] == "enabled":
        return min(math.ceil(rng.uniform(0.35, 0.85) * thinking["budget_tokens"]), max_tokens - 1)
    config = body.get("output_config")
    effort = config.get("effort", "high") if isinstance(config, dict) else "high"
    wanted = math.ceil(rng.uniform(0.5, 1.5) * _ADAPTIVE_BASE * _EFFORT_THINKING.get(effort, 1.0))
    return max(0, min(wanted, max_tokens // 2))


def _signature(seed: int, model: str, digest: bytes) -> str:
    raw = b"".join(
        hashlib.blake2b(f"{seed}|{model}|signature|{i}|".encode() + digest, digest_size=64).digest()
        for i in range(3)
    )
    return base64.b64encode(raw).decode()


def _results(query: str, rng: random.Random) -> list[dict[str, Any]]:
    slug = "-".join(query.lower().split()[:4]) or "result"
    results = []
    for n in range(rng.randint(3, 5)):
        blob = bytes(rng.getrandbits(8) for _ in range(rng.randint(48, 144)))
        results.append(
            {
                "type": "web_search_result",
                "title": f"{query.title()} - {rng.choice(VOCAB).strip().capitalize() or 'Page'} {n + 1}",
                "url": f"https://{rng.choice(_SITES)}/{slug}/{n + 1}",
                "encrypted_content": base64.b64encode(blob).decode(),
                "page_age": rng.choice(_PAGE_AGES),
            }
        )
    return results


def _preamble(words: list[str]) -> list[str]:
    return [" " + w if i else w for i, w in enumerate(words)]


# What `plan_reply` (and the answer's stop sequences) read of a body besides its last user turn.
_REPLY_FIELDS = ("max_tokens", "stop_sequences", "thinking", "tools", "tool_choice", "output_config")


def reply_inputs(body: dict[str, Any], *, keep_text: bool = False) -> dict[str, Any]:
    """The part of a valid body that decides its reply, small enough to keep for every request
    of a large Message Batch until its results are read.

    The conversation shrinks to the last user turn's text, and to nothing when that text
    cannot change the reply: without tools it only matters through a refusal marker (the
    quality model reads it always: `keep_text`). `plan_reply` gives the same reply for this
    as for the whole body (with the digest of the whole body); a unit test holds the two
    together, so keep this next to `plan_reply`.
    """
    kept = {name: body[name] for name in _REPLY_FIELDS if name in body}
    text = _last_user_text(body)
    if not keep_text and not body.get("tools") and _refusal(text) is None:
        text = ""
    kept["messages"] = ({"role": "user", "content": text},) if text else ()
    return kept


def plan_reply(
    *,
    seed: int,
    model: str,
    digest: bytes,
    body: dict[str, Any],
    answer: Callable[[int], Answer],
    web_search_s: float,
) -> Reply:
    """The reply to a valid body; `answer(max_tokens)` draws the text answer (`make_answer`)."""
    max_tokens: int = body["max_tokens"]
    text = _last_user_text(body)
    refused = _refusal(text)
    if refused is not None:
        said = _rng(seed, model, digest, "refusal").choices(VOCAB, k=min(refused, max_tokens))
        kept = [Block("text", _TEXT_SHELL, said)] if said else []
        return Reply(kept, "refusal", stop_details=dict(_REFUSAL_DETAILS), refused=True)
    has_thinking = thinking_on(body)
    has_tools = bool(body.get("tools"))
    if not has_thinking and not has_tools:
        plain = answer(max_tokens)
        return Reply([Block("text", _TEXT_SHELL, plain.pieces)], plain.stop_reason, plain.stop_sequence)

    rng = _rng(seed, model, digest, "features")
    blocks: list[Block] = []
    room = max_tokens
    reply = Reply(blocks, "end_turn")
    reply.web_search_offered = any(_is_web_search(t) for t in body.get("tools") or ())
    if has_thinking:
        thinking = body["thinking"]
        count = _thinking_tokens(thinking, body, rng, max_tokens)
        if count > 0:
            pieces = rng.choices(VOCAB, k=count)
            block = Block("thinking", {"type": "thinking", "thinking": "", "signature": ""}, pieces)
            block.signature = _signature(seed, model, digest)
            block.hidden = thinking.get("display") == "omitted"
            blocks.append(block)
            reply.thinking_tokens = count
            room -= count
    tool = _decide_tool(body, text, rng) if has_tools else None
    forced = (body.get("tool_choice") or {}).get("type") in ("any", "tool")
    words = _words(text) or ["example"]
    if tool is not None and not forced and room > 0:
        intro = (
            ["Let", "me", "search", "the", "web."]
            if _is_web_search(tool)
            else ["Let", "me", "use", tool["name"] + "."]
        )
        said_pieces = _preamble(intro)[:room]
        blocks.append(Block("text", _TEXT_SHELL, said_pieces))
        room -= len(said_pieces)
    if tool is not None and not _is_web_search(tool):
        return _tool_call(reply, tool, rng, words, room)
    if tool is not None:
        room = _searches(reply, tool, rng, text, words, room, web_search_s)
        if reply.stop_reason == "max_tokens":
            return reply
    if room <= 0 and blocks:
        reply.stop_reason = "max_tokens"
        return reply
    final = answer(room)
    blocks.append(Block("text", _TEXT_SHELL, final.pieces))
    reply.stop_reason, reply.stop_sequence = final.stop_reason, final.stop_sequence
    return reply


def _tool_call(reply: Reply, tool: dict[str, Any], rng: random.Random, words: list[str], room: int) -> Reply:
    schema = tool.get("input_schema")
    value = _object(schema, rng, words, 1) if isinstance(schema, dict) else {}
    pieces = _json_pieces(json.dumps(value), rng)
    ident = _ident("toolu_", rng)
    complete = len(pieces) <= room
    kept = pieces[: max(0, room)]
    shell = {"type": "tool_use", "id": ident, "name": tool["name"], "input": {}}
    whole = dict(shell, input=value if complete else {})
    reply.blocks.append(Block("tool_use", shell, kept, whole))
    reply.tool_calls.append(tool["name"])
    reply.stop_reason = "tool_use" if complete else "max_tokens"
    return reply


def _searches(
    reply: Reply,
    tool: dict[str, Any],
    rng: random.Random,
    text: str,
    words: list[str],
    room: int,
    web_search_s: float,
) -> int:
    """One or two searches (at most `max_uses`): query block, then results block. Room left."""
    max_uses = tool.get("max_uses")
    limit = max_uses if isinstance(max_uses, int) and max_uses > 0 else 2
    query = " ".join(_WORD.findall(_REFUSE.sub(" ", text[:4000]))[:6]) or "example"
    for n in range(rng.randint(1, min(2, limit))):
        asked = query if n == 0 else f"{query} {rng.choice(words)}"
        pieces = _json_pieces(json.dumps({"query": asked}), rng)
        ident = _ident("srvtoolu_", rng)
        shell = {"type": "server_tool_use", "id": ident, "name": "web_search", "input": {}}
        whole = dict(shell, input={"query": asked})
        reply.blocks.append(Block("server_tool_use", shell, pieces[: max(0, room)], whole))
        if len(pieces) > room:
            reply.stop_reason = "max_tokens"
            return 0
        room -= len(pieces)
        found = {"type": "web_search_tool_result", "tool_use_id": ident, "content": _results(asked, rng)}
        reply.blocks.append(Block("web_search_tool_result", found, whole=found, pause_s=web_search_s))
        reply.web_search_requests += 1
        reply.search_input_tokens += rng.randint(1500, 4000)
    return room


def content_json(reply: Reply) -> list[dict[str, Any]]:
    """The content of a non-streamed reply."""
    content: list[dict[str, Any]] = []
    for block in reply.blocks:
        if block.kind == "text":
            content.append({"type": "text", "text": "".join(block.pieces)})
        elif block.kind == "thinking":
            thought = "" if block.hidden else "".join(block.pieces)
            content.append({"type": "thinking", "thinking": thought, "signature": block.signature})
        elif block.whole is not None:
            content.append(block.whole)
    return content


@dataclass(slots=True)
class Frames:
    """A reply as stream bytes: `head` right after message_start, one frame per delta, `tail`
    before message_delta. `tokens[i]` is how many output tokens frame i carries (0 or 1)."""

    head: bytes
    frames: list[bytes]
    tokens: list[int]
    tail: bytes
    thinking: int = 0  # leading frames at thinking speed
    pauses: dict[int, float] = field(default_factory=dict)
    first_text: int | None = None
    first_thinking: int | None = None


def stream_frames(reply: Reply) -> Frames:
    """Encode the blocks: each block's start, deltas and stop land in the frame they belong to.

    Block 0 starts in `head` (followed by the ping the real API sends); later blocks start in
    the frame of their first delta, right after the previous block's stop. Tool inputs open
    with an empty `input_json_delta` as the real API's do; a thinking block ends with its
    `signature_delta`. A web search results block has no deltas: its start and stop form a
    frame of their own, after the search's pause.
    """
    blocks = reply.blocks
    if len(blocks) == 1 and blocks[0].kind == "text":  # the common case, kept cheap
        table = sse.delta_table("text", 0)
        frames = [table.get(p) or sse.text_delta(p) for p in blocks[0].pieces]
        return Frames(
            sse.BLOCK_START, frames, [1] * len(frames), sse.block_stop(0), first_text=0 if frames else None
        )
    out = Frames(sse.PING, [], [], b"")
    pending = b""  # bytes that go out with the next frame
    open_index: int | None = None
    for i, block in enumerate(blocks):
        start = sse.block_start(i, block.shell)
        if i == 0:
            out.head = start + sse.PING
        else:
            pending += (sse.block_stop(open_index) if open_index is not None else b"") + start
        open_index = i
        if block.kind == "web_search_tool_result":
            out.pauses[len(out.frames)] = block.pause_s
            out.frames.append(pending + sse.block_stop(i))
            out.tokens.append(0)
            pending, open_index = b"", None
            continue
        if block.kind in ("tool_use", "server_tool_use"):
            pending += sse.json_delta("", i)
        if not block.pieces:
            continue
        first = len(out.frames)
        if block.kind == "text":
            table = sse.delta_table("text", i)
            encoded = [table.get(p) or sse.text_delta(p, i) for p in block.pieces]
            if out.first_text is None:
                out.first_text = first
        elif block.kind == "thinking":
            if block.hidden:
                encoded = [b""] * len(block.pieces)
            else:
                table = sse.delta_table("thinking", i)
                encoded = [table.get(p) or sse.thinking_delta(p, i) for p in block.pieces]
                if out.first_thinking is None:
                    out.first_thinking = first
            encoded[-1] += sse.signature_delta(block.signature, i)
            if first == 0:
                out.thinking = len(encoded)
        else:
            encoded = [sse.json_delta(p, i) for p in block.pieces]
        encoded[0] = pending + encoded[0]
        pending = b""
        out.frames.extend(encoded)
        out.tokens.extend([1] * len(encoded))
    out.tail = pending + (sse.block_stop(open_index) if open_index is not None else b"")
    return out
