"""Deterministic answers and token counts.

The answer's text and length are a function of (seed, model, request content) only, so
replaying a dataset gives the same tokens; each token is one word-piece of a fixed
vocabulary. Input tokens are estimated as ceil(characters / 4) of every text the request
carries (system, messages, tools), the same function for Messages and count_tokens.
This module must not know about timing or HTTP.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = [
    "VOCAB",
    "Answer",
    "block_text",
    "content_digest",
    "count_input_tokens",
    "has_cache_markers",
    "make_answer",
    "tokens_of",
    "tool_json",
    "without_cache_control",
]

_WORDS = """
the of and to in is that for it as with was on be by this are at from or an have not
which but all were when we there can more if has their one will would about so what up
out them some time than only its into other then two also these may like first any new
could very our after most where through how much before must back years way well down
should because each just those people state over between both under never same another
while last might great old still public own part against system life however general
world early case order number model answer token stream request latency window cache
signal value measure result simple careful steady rapid quiet clear bright distant local
river mountain garden harbor village market library engine bridge canvas lantern meadow
forest valley island desert ocean cloud thunder summer winter autumn spring morning
evening reason method pattern detail context example question problem solution idea
theory practice design structure process pipeline record schema benchmark harness sample
metric percentile median variance budget limit retry backoff schedule arrival queue
worker thread socket packet header payload buffer channel server client session event
""".split()  # noqa: SIM905 - a word list reads better as text

# Word-pieces: most tokens are " word"; a few are punctuation or paragraph breaks.
VOCAB: tuple[str, ...] = tuple(
    [" " + w for w in _WORDS] + [" " + w.capitalize() for w in _WORDS[:60]] + [".", ",", ";", "\n\n"]
)


def without_cache_control(item: Any) -> Any:
    """The block or tool as the model reads it: a `cache_control` marker is no content."""
    if isinstance(item, dict) and "cache_control" in item:
        return {k: v for k, v in item.items() if k != "cache_control"}
    return item


def block_text(block: Any) -> str:
    """What one content block counts as: a text block's text, else its JSON (without the marker)."""
    if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
        return block["text"]
    return (
        orjson.dumps(without_cache_control(block), option=orjson.OPT_SORT_KEYS).decode()
        if block is not None
        else ""
    )


def tool_json(tool: Any) -> bytes:
    """One tool definition as counted (sorted JSON, without the marker)."""
    return orjson.dumps(without_cache_control(tool), option=orjson.OPT_SORT_KEYS)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(block_text(b) for b in content)
    return ""


def count_input_tokens(body: dict[str, Any]) -> int:
    """About four characters a token, over system, message contents and tool definitions.

    `cache_control` markers are not content: moving one changes no count (`promptcache.py`
    counts every prefix with the same pieces, so a prefix and the whole prompt agree).
    """
    chars = len(_content_text(body.get("system")))
    for message in body.get("messages") or ():
        if isinstance(message, dict):
            chars += len(_content_text(message.get("content")))
    tools = body.get("tools")
    if tools:
        chars += len(orjson.dumps([without_cache_control(t) for t in tools], option=orjson.OPT_SORT_KEYS))
    return tokens_of(chars)


def tokens_of(chars: int) -> int:
    """The token estimate of `chars` characters (at least 1)."""
    return max(1, math.ceil(chars / 4))


def content_digest(body: dict[str, Any]) -> bytes:
    """A hash of what the model 'reads': system, messages and tools (not max_tokens).

    Without the `cache_control` markers: caching never changes the answer (as documented).
    """
    system, messages, tools = body.get("system"), body.get("messages"), body.get("tools")
    if has_cache_markers(body):
        if isinstance(system, list):
            system = [without_cache_control(b) for b in system]
        if isinstance(tools, list):
            tools = [without_cache_control(t) for t in tools]
        if isinstance(messages, list):
            messages = [_message_without_markers(m) for m in messages]
    content = [system, messages, tools, body.get("tool_choice")]
    return hashlib.blake2b(orjson.dumps(content, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()


def _message_without_markers(message: Any) -> Any:
    if isinstance(message, dict) and isinstance(message.get("content"), list):
        return {**message, "content": [without_cache_control(b) for b in message["content"]]}
    return message


def has_cache_markers(body: dict[str, Any]) -> bool:
    """Whether a `cache_control` marker sits on a tool, a system block or a message block."""
    for name in ("tools", "system"):
        items = body.get(name)
        if isinstance(items, list):
            for item in items:
                if isinstance(item, dict) and item.get("cache_control") is not None:
                    return True
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            for block in content:
                if isinstance(block, dict) and block.get("cache_control") is not None:
                    return True
    return False


@dataclass(frozen=True, slots=True)
class Answer:
    """The reply: one entry of `pieces` per output token (and per stream delta)."""

    pieces: list[str]
    stop_reason: str
    stop_sequence: str | None

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def make_answer(
    *,
    seed: int,
    model: str,
    digest: bytes,
    max_tokens: int,
    verbosity: float,
    verbosity_sigma: float,
    answer_tokens_max: int,
    stop_sequences: list[str] | None = None,
) -> Answer:
    """Draw the answer's length (relative to max_tokens) and its word-pieces.

    The pieces are a prefix of one endless sequence per (seed, model, content), so a larger
    `max_tokens` extends the same answer instead of changing it.
    """
    rng = random.Random(hashlib.blake2b(f"{seed}|{model}|".encode() + digest, digest_size=16).digest())
    fraction = verbosity * rng.lognormvariate(0.0, verbosity_sigma) if verbosity > 0 else 0.0
    natural = max(1, min(answer_tokens_max, math.ceil(fraction * max_tokens)))
    if natural >= max_tokens:
        count, stop_reason = max_tokens, "max_tokens"
    else:
        count, stop_reason = natural, "end_turn"
    pieces = rng.choices(VOCAB, k=count)
    if stop_sequences:
        return _apply_stop(pieces, stop_reason, stop_sequences)
    return Answer(pieces, stop_reason, None)


def _apply_stop(pieces: list[str], stop_reason: str, stop_sequences: list[str]) -> Answer:
    """Cut the text where the earliest stop sequence starts; the sequence itself is not sent."""
    text = "".join(pieces)
    best: tuple[int, str] | None = None
    for seq in stop_sequences:
        if not seq:
            continue
        at = text.find(seq)
        if at >= 0 and (best is None or at < best[0]):
            best = (at, seq)
    if best is None:
        return Answer(pieces, stop_reason, None)
    cut, seq = best
    kept: list[str] = []
    used = 0
    for piece in pieces:
        if used + len(piece) <= cut:
            kept.append(piece)
            used += len(piece)
            continue
        if cut > used:
            kept.append(piece[: cut - used])
        break
    return Answer(kept, "stop_sequence", seq)
