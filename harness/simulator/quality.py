"""The quality model: answers that pass or fail a case's grader as often as the model would,
and the judge's verdicts.

Only requests carrying the harness's headers are shaped here; without them the reply is
exactly what `blocks.plan_reply` makes of the request (the filler answer).

- `x-harness-expected`: base64url (no padding) of the UTF-8 JSON of the case's `expected`
  object; `x-harness-tags`: the case's tags, comma-joined. The simulator decides whether
  this answer passes (`decide`), writes an answer that does or a plausible wrong one that
  does not (`_draft`), checks it with its own grader (`graders.passes`, redrafting up to
  eight times), and records what the reply it sends actually scores.
- `x-harness-judge: 1`: the request is a judge call; the reply is a JSON verdict
  `{"score", "reason"}` on the `<answer>` against the `<reference>` (or the `<rubric>`).

The decision is a function of the seed, the canonical model id, the request content
(system, messages, tools, tool_choice: `textgen.content_digest`), the expectation and the
tags, and the occurrence number of that content for that model (`Memo`): retries (the
same `x-harness-call-id`) agree with their first attempt, while repeats of a case (new
call ids) are new draws, as sampling a real model is; the same requests in the same
order on a fresh simulator with the same seed get the same answers. Models share a
per-case difficulty (a Gaussian copula with correlation `RHO`), so a case one model
fails is more often failed by another, while each model's pass rate stays its profile's
probability. This module must not know about HTTP or time.
"""

from __future__ import annotations

import base64
import binascii
import decimal
import hashlib
import json
import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import orjson

from harness.simulator import graders, regexgen, schemas
from harness.simulator.blocks import (
    _EFFORT_THINKING,
    Block,
    Reply,
    _ident,
    _is_web_search,
    _json_pieces,
    _last_user_text,
    _words,
    plan_reply,
)
from harness.simulator.graders import Grader
from harness.simulator.textgen import Answer, _apply_stop

__all__ = [
    "DEFAULT_PASS",
    "HEADER_EXPECTED",
    "HEADER_JUDGE",
    "HEADER_TAGS",
    "RHO",
    "Ask",
    "HeaderError",
    "Memo",
    "Shaped",
    "decide",
    "pass_probability",
    "read_headers",
    "shape",
    "tokenize",
]

HEADER_EXPECTED = "x-harness-expected"
HEADER_TAGS = "x-harness-tags"
HEADER_JUDGE = "x-harness-judge"
DEFAULT_PASS = 0.9  # a profile without a quality table
RHO = 0.5  # how much of a case's outcome is the case's own difficulty, shared by every model
_THINKING_BOOST_MAX = 0.3
_DRAFTS = 8
_NORMAL = NormalDist()
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_PIECE = re.compile(r"\s*[A-Za-z]{1,10}|\s*[0-9]{1,3}|\s*[^\sA-Za-z0-9]|\s+")
_DIGITS = re.compile(r"[0-9]")
_NUMERIC = re.compile(r"[-+]?\d+(?:\.\d+)?")

_LEADS = ("The answer is {}.", "It's {}.", "That would be {}.", "Short answer: {}.", "I'd say {}.")
_NUMBER_LEADS = ("The answer is {}.", "That comes to {}.", "It works out to {}.", "The result is {}.")
_PATTERN_LEADS = ("{}.", "Here it is: {}.", "So, {}.")  # around text a pattern asked for
_HEDGES = (
    "I'm not sure; the question doesn't give me enough to go on.",
    "It depends on details that aren't given here.",
    "I can't tell that from the information provided.",
    "That isn't something I can determine without more context.",
)
_NO_TOOL = (
    "I can answer that directly without looking anything up.",
    "I don't think a tool is needed for this.",
)
_PAIRS = {
    "yes": "no", "true": "false", "positive": "negative", "correct": "incorrect", "valid": "invalid",
    "spam": "ham", "pass": "fail", "high": "low", "increase": "decrease", "left": "right",
    "agree": "disagree", "safe": "unsafe", "relevant": "irrelevant", "accept": "reject",
}  # fmt: skip
_PAIRS.update({v: k for k, v in list(_PAIRS.items())})
# Stand-ins for a name when the prompt offers no other (a wrong city, person or place).
_NAMES = ("London", "Berlin", "Madrid", "Lisbon", "Boston", "Oslo", "Alice", "Martin")
_SEPARATORS = re.compile(r"[,/|;:()\[\]\"“”\n?]|\s+or\s+|\s+and\s+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_TAG_CACHE: dict[str, re.Pattern[str]] = {}


class HeaderError(ValueError):
    """A harness header the simulator cannot read (answered 400, naming the header)."""


@dataclass(frozen=True, slots=True)
class Ask:
    """What the harness's headers ask of one request."""

    judge: bool
    grader: Grader | None = None  # None: no expectation, or one of a grader unknown here
    kind: str | None = None  # the expectation's top-level grader (ground truth)
    key: bytes = b""  # the expectation and tags, as part of the draw's key
    tags: tuple[str, ...] = ()


def read_headers(headers: Mapping[str, str]) -> Ask | None:
    """The request's `Ask`, or None without any harness quality header."""
    judge = headers.get(HEADER_JUDGE, "").strip().lower() not in ("", "0", "false", "no")
    raw = headers.get(HEADER_EXPECTED)
    if judge:
        return Ask(judge=True)
    if raw is None:
        return None
    tags = tuple(t.strip().lower() for t in headers.get(HEADER_TAGS, "").split(",") if t.strip())
    text = raw.strip()
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise HeaderError(f"{HEADER_EXPECTED}: not base64url without padding")
    try:
        expected = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, orjson.JSONDecodeError, UnicodeDecodeError):
        raise HeaderError(f"{HEADER_EXPECTED}: not base64url of UTF-8 JSON") from None
    try:
        grader = graders.parse(expected, HEADER_EXPECTED)
    except graders.ExpectationError as exc:
        raise HeaderError(str(exc)) from None
    kind = next((k for k in expected if k in graders.KINDS), None)
    if kind is None:
        kind = next(iter(expected), None)
    key = orjson.dumps(expected, option=orjson.OPT_SORT_KEYS) + b"|" + ",".join(tags).encode()
    return Ask(judge=False, grader=grader, kind=kind, key=key, tags=tags)


class Memo:
    """How many times each (model, content, expectation) has been asked, and which occurrence
    each call id got, so a retry is answered like its first attempt. Cleared by a reset."""

    def __init__(self) -> None:
        self._seen: dict[bytes, int] = {}
        self._calls: dict[tuple[str, bytes], int] = {}

    def occurrence(self, key: bytes, call_id: str | None) -> int:
        if call_id is not None:
            found = self._calls.get((call_id, key))
            if found is not None:
                return found
        count = self._seen.get(key, 0) + 1
        self._seen[key] = count
        if call_id is not None:
            self._calls[(call_id, key)] = count
        return count

    def clear(self) -> None:
        self._seen.clear()
        self._calls.clear()


# ---------------------------------------------------------------- the decision


def _thinking_boost(body: dict[str, Any]) -> float:
    """The share of failures that thinking removes: 0.075 per doubling of (1 + budget/1024), at most 0.3.

    `enabled` uses its budget_tokens; `adaptive` 1,024 tokens times its effort's factor."""
    thinking = body.get("thinking")
    if not isinstance(thinking, dict):
        return 0.0
    if thinking.get("type") == "enabled" and isinstance(thinking.get("budget_tokens"), int):
        budget = float(thinking["budget_tokens"])
    elif thinking.get("type") == "adaptive":
        config = body.get("output_config")
        effort = config.get("effort", "high") if isinstance(config, dict) else "high"
        budget = 1024 * _EFFORT_THINKING.get(effort, 1.0)
    else:
        return 0.0
    return min(_THINKING_BOOST_MAX, 0.075 * math.log2(1 + max(0.0, budget) / 1024))


def pass_probability(table: Mapping[str, float], tags: tuple[str, ...], body: dict[str, Any]) -> float:
    """The profile's `pass`, or the lowest value of the request's tags that the table names;
    then raised by thinking: p + (1 - p) × boost."""
    tagged = [table[t] for t in tags if t != "pass" and t in table]
    p = min(tagged) if tagged else table.get("pass", DEFAULT_PASS)
    return p + (1 - p) * _thinking_boost(body)


def _unit(*parts: bytes | str | int) -> float:
    """A uniform number in (0, 1) from a hash of the parts."""
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        h.update(part if isinstance(part, bytes) else str(part).encode())
        h.update(b"\x1f")
    return (int.from_bytes(h.digest(), "big") >> 11 | 1) / 2**53


def decide(seed: int, model: str, case: bytes, occurrence: int, p: float) -> bool:
    """Pass when Φ(√ρ·z_case + √(1-ρ)·z_model) < p: z_case is the case's difficulty (every
    model, every repeat), z_model this model's draw for this occurrence."""
    z_case = _NORMAL.inv_cdf(_unit(seed, "quality-case", case))
    z_model = _NORMAL.inv_cdf(_unit(seed, "quality-model", model, occurrence, case))
    return _NORMAL.cdf(math.sqrt(RHO) * z_case + math.sqrt(1 - RHO) * z_model) < p


# ---------------------------------------------------------------- answers


def tokenize(text: str) -> list[str]:
    """The answer cut into output tokens: a word (up to 10 letters), up to 3 digits or one other
    character, each with the whitespace before it. Joining them gives the text back."""
    pieces = _PIECE.findall(text)
    return pieces if "".join(pieces) == text else list(text)


def _format_number(value: float, like: float) -> str:
    """Plain decimal notation, an integer when `like` is one."""
    if float(like).is_integer() and float(value).is_integer():
        return str(int(value))
    text = format(decimal.Decimal(repr(float(value))), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _near_number(value: float, tolerance: float, rng: random.Random) -> float:
    """A number outside the tolerance, read as relative or as absolute: a near miss."""
    allowed = max(tolerance * abs(value), tolerance)
    integral = float(value).is_integer()
    if allowed > 0:
        delta = allowed * rng.uniform(1.5, 4.0)
    else:
        delta = abs(value) * rng.uniform(0.02, 0.15)
    if integral:
        delta = max(math.ceil(delta), math.floor(allowed) + 1, 1)
    elif delta == 0:
        delta = 1.0
    miss = value + delta if rng.random() < 0.5 or value - delta < 0 <= value else value - delta
    if not integral:
        digits = max(2, len(_format_number(value, value).partition(".")[2]))
        miss = round(miss, digits)
        while abs(miss - value) <= allowed:
            miss = round(miss + math.copysign(max(allowed, 10**-digits), miss - value or 1), digits)
    return miss


def _options(prompt: str, value: str) -> list[str]:
    """Other labels the prompt offers beside `value` (items of the lists around it)."""
    folded = value.casefold().strip()
    sentences = [s for s in _SENTENCE.split(prompt) if s.strip()]
    near = [s for s in sentences if folded and folded in s.casefold()]
    pool = near or [s for s in sentences if len(_SEPARATORS.findall(s)) >= 2]
    size = len(value.split())
    found: list[str] = []
    for sentence in pool:
        for item in _SEPARATORS.split(sentence):
            item = item.strip(" .'`*-")
            if (
                item
                and item.casefold() != folded
                and folded not in item.casefold()
                and len(item.split()) == size
                and len(item) <= 40
                and item not in found
            ):
                found.append(item)
    return found


def _prompt_words(prompt: str) -> list[str]:
    """The prompt's names (its capitalised words after the first, not acronyms), else its words."""
    words = [w[:-2] if w.endswith("'s") else w for w in _words(prompt)]
    kept = [w for w in words if not (len(w) > 1 and w.isupper())] or words
    return list(dict.fromkeys(kept)) or ["example"]


def _wrong(value: str, ctx: _Context) -> str | None:
    """A plausible wrong answer instead of `value`: a near-miss number, the opposite label, another
    option the prompt lists, another letter, or another name from the prompt."""
    stripped = value.strip()
    if _NUMERIC.fullmatch(stripped):
        number = float(stripped)
        return _format_number(_near_number(number, 0.0, ctx.rng), number)
    pair = _PAIRS.get(stripped.lower())
    if pair is not None:
        return pair.upper() if stripped.isupper() else pair.capitalize() if stripped[:1].isupper() else pair
    if len(stripped) == 1 and stripped.upper() in "ABCDE":
        other = ctx.rng.choice([c for c in "ABCD" if c != stripped.upper()])
        return other if stripped.isupper() else other.lower()
    options = [o for o in _options(ctx.prompt, stripped) if o.isalpha() or " " in o]
    if options and ctx.rng.random() < 0.8:
        return ctx.rng.choice(options[:6])
    folded = stripped.casefold()
    names = [w for w in ctx.words if folded not in w.casefold()]
    if names:
        return ctx.rng.choice(names)
    if stripped[:1].isupper() and stripped.isalpha():
        return ctx.rng.choice([n for n in _NAMES if folded not in n.casefold()])
    return None


@dataclass
class _Context:
    """What a draft may use: the prompt, its words, the tools that can be called, the rng."""

    prompt: str
    words: list[str]
    tools: dict[str, dict[str, Any]]  # custom tools by name
    choice: str  # auto | any | tool | none
    forced_name: str | None
    rng: random.Random
    attempt: int
    used: set[str] = field(default_factory=set)

    def lead(self, templates: tuple[str, ...], core: str) -> str:
        """One sentence around `core`, with a lead not used yet in this answer."""
        fresh = [t for t in templates if t not in self.used] or list(templates)
        template = self.rng.choice(fresh)
        self.used.add(template)
        return template.format(core)


@dataclass
class _Draft:
    """An answer in the making: sentences, or one exact whole text; and at most one tool call."""

    parts: list[str] = field(default_factory=list)
    whole: str | None = None
    call: tuple[str, dict[str, Any]] | None = None

    def join(self, other: _Draft) -> _Draft:
        return _Draft(
            self.parts + other.parts,
            self.whole if self.whole is not None else other.whole,
            self.call if self.call is not None else other.call,
        )


def _listing(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _anchored(pattern: str) -> bool:
    return pattern.startswith(("^", "\\A")) or pattern.endswith(("$", "\\Z", "\\z"))


def _draft(grader: Grader, want: bool, ctx: _Context) -> _Draft:
    """A draft meant to pass (`want`) or fail the grader; the caller checks it."""
    rng, kind, arg = ctx.rng, grader.kind, grader.arg
    if kind == "all":
        # Fail one of them (the others pass), or pass them all.
        bad = rng.randrange(len(grader.children)) if not want else -1
        return _join([_draft(g, i != bad, ctx) for i, g in enumerate(grader.children)])
    if kind == "any":
        if want:
            return _draft(rng.choice(grader.children), True, ctx)
        return _join([_draft(g, False, ctx) for g in grader.children])
    if kind == "contains":
        needles = list(arg)
        if not want:
            at = rng.randrange(len(needles))
            other = _wrong(needles[at], ctx)
            if other is None or (len(needles) > 1 and rng.random() < 0.4):
                del needles[at]
            else:
                needles[at] = other
            if not needles:
                return _Draft([rng.choice(_HEDGES)])
        return _Draft([ctx.lead(_LEADS, _listing(needles))])
    if kind == "equals":
        if want:
            return _Draft(whole=arg)
        other = _wrong(arg, ctx)
        if other is None or rng.random() < 0.25:
            return _Draft(whole=ctx.lead(_LEADS, arg.strip()))  # right, but not alone
        return _Draft(whole=other)
    if kind == "regex":
        make = regexgen.matching if want else regexgen.near_miss
        core = make(arg, rng)
        if not want and (not core or ctx.attempt >= _DRAFTS // 2):
            return _Draft([rng.choice(_HEDGES)])
        if _anchored(arg) != (ctx.attempt % 2 == 1):
            return _Draft(whole=core)
        return _Draft([ctx.lead(_LEADS, core)])
    if kind == "number":
        value, tolerance, _relative, pattern = arg
        number = value if want else _near_number(value, tolerance, rng)
        text = _format_number(number, value)
        if pattern is not None:
            core = regexgen.matching(pattern, rng, group=1, group_text=text)
            if _anchored(pattern) != (ctx.attempt % 2 == 1):
                return _Draft(whole=core)
            return _Draft([ctx.lead(_PATTERN_LEADS, core)])
        return _Draft([ctx.lead(_NUMBER_LEADS, text)])
    if kind == "json":
        return _json_draft(arg, want, ctx)
    if kind == "tool_call":
        return _tool_draft(arg, want, ctx)
    rubric, reference, _pass_score = arg
    if want:
        return _Draft([reference.strip() if reference else _restate(rubric)])
    return _Draft([rng.choice(_HEDGES)])


def _join(drafts: list[_Draft]) -> _Draft:
    # Numbers first: a number grader reads the first number of the answer.
    drafts = sorted(drafts, key=lambda d: not any(_DIGITS.search(p) for p in d.parts))
    out = _Draft()
    for d in drafts:
        out = out.join(d)
    return out


_RUBRIC_LEAD = re.compile(
    r"^\s*(?:the\s+)?(?:answer|response)?\s*(?:should|must)?\s*(?:correctly\s+|clearly\s+)?"
    r"(?:say|state|explain|mention|note|identify|describe|give|provide|include)s?\s+(?:that\s+)?",
    re.IGNORECASE,
)


def _restate(rubric: str) -> str:
    """A rubric turned into the statement it asks for ("Explains that X" → "X.")."""
    text = _RUBRIC_LEAD.sub("", rubric.strip(), count=1).strip() or rubric.strip()
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def _json_draft(schema: dict[str, Any] | None, want: bool, ctx: _Context) -> _Draft:
    rng = ctx.rng
    if schema is None:
        value: Any = {"answer": " ".join(ctx.words[:2]) or "example"}
    else:
        value = schemas.instance(schema, rng, ctx.words)
    text = json.dumps(value, ensure_ascii=False)
    if want:
        return _Draft(whole=text)
    misses = schemas.spoiled(schema, value, rng) if schema is not None else []
    if misses and rng.random() < 0.7:
        return _Draft(whole=json.dumps(misses[0], ensure_ascii=False))
    broken = rng.randrange(3)
    if broken == 0 and isinstance(value, dict | list):
        return _Draft(whole=repr(value))  # a Python literal, not JSON
    if broken == 1 and len(text) > 2:
        return _Draft(whole=text[: max(1, len(text) - rng.randint(1, min(8, len(text) - 1)))])
    return _Draft(whole="Sure, here is the data: " + text.strip("{}[]").replace('"', ""))


def _tool_input(name: str, ctx: _Context) -> dict[str, Any]:
    schema = ctx.tools.get(name, {}).get("input_schema")
    value = schemas.instance(schema, ctx.rng, ctx.words) if isinstance(schema, dict) else {}
    return value if isinstance(value, dict) else {}


def _merge(base: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in wanted.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _spoil_input(wanted: dict[str, Any], ctx: _Context) -> dict[str, Any]:
    """The wanted input with one value changed (a near miss)."""
    key = ctx.rng.choice(list(wanted))
    value = wanted[key]
    if isinstance(value, dict) and value:
        new: Any = _spoil_input(value, ctx)
    elif isinstance(value, bool):
        new = not value
    elif isinstance(value, int | float):
        new = _near_number(value, 0.0, ctx.rng)
        new = int(new) if isinstance(value, int) else new
    elif isinstance(value, str):
        new = _wrong(value, ctx) or (value + " (approx.)")
    elif isinstance(value, list):
        new = value[:-1] if value else ["none"]
    else:
        new = "none"
    return {**wanted, key: new}


def _tool_draft(arg: tuple[str, dict[str, Any]], want: bool, ctx: _Context) -> _Draft:
    """Call the tool with at least the wanted input; or call another tool, none, or the tool
    with one wanted value wrong, whichever the tool choice allows."""
    name, wanted = arg
    rng = ctx.rng
    if ctx.choice == "none":
        callable_names: list[str] = []
    elif ctx.choice == "tool":
        callable_names = [ctx.forced_name] if ctx.forced_name in ctx.tools else []
    else:
        callable_names = list(ctx.tools)
    right = _Draft(call=(name, _merge(_tool_input(name, ctx), wanted))) if name in callable_names else None
    if want and right is not None:
        return right
    options = []
    others = [n for n in callable_names if n != name]
    if others:
        options.append("other")
    if ctx.choice in ("auto", "none"):
        options.append("none")
    if name in callable_names and wanted:
        options.append("input")
    if not options:
        return right or _Draft([rng.choice(_NO_TOOL)])
    pick = rng.choice(options)
    if pick == "other":
        other = rng.choice(others)
        return _Draft(call=(other, _tool_input(other, ctx)))
    if pick == "input":
        return _Draft(call=(name, _merge(_tool_input(name, ctx), _spoil_input(wanted, ctx))))
    return _Draft([rng.choice(_NO_TOOL)])


# ---------------------------------------------------------------- replies


@dataclass(frozen=True, slots=True)
class Shaped:
    """A shaped reply and its ground truth (`expected_kind`, `quality_pass`, `judge_score`, ...)."""

    reply: Reply
    truth: dict[str, Any]


def _rng(seed: int, model: str, digest: bytes, purpose: str) -> random.Random:
    return random.Random(
        hashlib.blake2b(f"{seed}|{model}|{purpose}|".encode() + digest, digest_size=16).digest()
    )


def _reply_text(reply: Reply) -> str:
    return "".join("".join(b.pieces) for b in reply.blocks if b.kind == "text")


def _reply_calls(reply: Reply) -> list[tuple[str, Any]]:
    return [
        (b.whole["name"], b.whole.get("input", {}))
        for b in reply.blocks
        if b.kind == "tool_use" and b.whole is not None
    ]


def _build(
    text: str,
    call: tuple[str, dict[str, Any]] | None,
    *,
    seed: int,
    model: str,
    digest: bytes,
    body: dict[str, Any],
    web_search_s: float,
    rng: random.Random,
) -> Reply:
    """The reply: thinking and web searches as `plan_reply` makes them, then this text (cut
    at max_tokens or a stop sequence), then the tool call if it still fits."""
    pieces = tokenize(text)
    stops = body.get("stop_sequences")

    def answer(room: int) -> Answer:
        kept = pieces[: max(room, 0)]
        reason = "end_turn" if len(pieces) <= room else "max_tokens"
        return _apply_stop(kept, reason, stops) if stops else Answer(kept, reason, None)

    tools = body.get("tools") or []
    choice = (body.get("tool_choice") or {}).get("type", "auto")
    if call is None and choice in ("any", "tool"):
        planned = body  # a forced call happens whatever the expectation; the text graders then fail
    elif choice == "none":
        planned = body
    elif choice == "auto":
        searches = [t for t in tools if _is_web_search(t)]
        planned = {k: v for k, v in body.items() if k not in ("tools", "tool_choice")}
        if searches:
            planned["tools"] = searches
    else:
        planned = {k: v for k, v in body.items() if k not in ("tools", "tool_choice")}
    reply = plan_reply(
        seed=seed, model=model, digest=digest, body=planned, answer=answer, web_search_s=web_search_s
    )
    reply.web_search_offered = any(_is_web_search(t) for t in tools)
    if call is None or reply.stop_reason != "end_turn":
        return reply
    reply.blocks[:] = [b for b in reply.blocks if b.kind != "text" or b.pieces]
    name, value = call
    room = body["max_tokens"] - reply.output_tokens
    chunks = _json_pieces(json.dumps(value), rng)
    complete = len(chunks) <= room
    shell = {"type": "tool_use", "id": _ident("toolu_", rng), "name": name, "input": {}}
    reply.blocks.append(
        Block("tool_use", shell, chunks[: max(0, room)], dict(shell, input=value if complete else {}))
    )
    reply.tool_calls.append(name)
    reply.stop_reason = "tool_use" if complete else "max_tokens"
    return reply


def shape(
    ask: Ask,
    *,
    seed: int,
    model: str,
    table: Mapping[str, float],
    digest: bytes,
    body: dict[str, Any],
    web_search_s: float,
    memo: Memo,
    call_id: str | None,
    judge_malformed: float,
) -> Shaped | None:
    """The reply to a request with harness headers, or None to answer as without them."""
    if ask.judge:
        return _judge(
            seed=seed, model=model, digest=digest, body=body, web_search_s=web_search_s, rate=judge_malformed
        )
    if ask.grader is None:
        return None
    case = digest + b"|" + ask.key
    occurrence = memo.occurrence(model.encode() + b"|" + case, call_id)
    p = pass_probability(table, ask.tags, body)
    want = decide(seed, model, case, occurrence, p)
    prompt = _last_user_text(body)
    tools = {
        t["name"]: t
        for t in body.get("tools") or ()
        if isinstance(t, dict) and t.get("type") in (None, "custom") and isinstance(t.get("name"), str)
    }
    choice = body.get("tool_choice") or {"type": "auto"}
    base = _rng(seed, model, case, f"quality-answer|{occurrence}")
    # The first draft that comes out as decided, else the first draft.
    chosen: tuple[str, tuple[str, dict[str, Any]] | None] | None = None
    for attempt in range(_DRAFTS):
        ctx = _Context(
            prompt=prompt,
            words=_prompt_words(prompt),
            tools=tools,
            choice=choice.get("type", "auto"),
            forced_name=choice.get("name"),
            rng=random.Random(base.random()),
            attempt=attempt,
        )
        draft = _draft(ask.grader, want, ctx)
        text = draft.whole if draft.whole is not None else " ".join(draft.parts)
        if not text and draft.call is not None and ctx.choice == "auto":
            text = f"Let me use {draft.call[0]}."
        candidate = (text, draft.call)
        if chosen is None:
            chosen = candidate
        calls = [draft.call] if draft.call is not None else []
        if graders.passes(ask.grader, text, calls) == want:
            chosen = candidate
            break
    assert chosen is not None
    reply = _build(
        chosen[0],
        chosen[1],
        seed=seed,
        model=model,
        digest=digest,
        body=body,
        web_search_s=web_search_s,
        rng=base,
    )
    outcome = graders.passes(ask.grader, _reply_text(reply), _reply_calls(reply))
    return Shaped(reply, {"quality_pass": outcome})


# ---------------------------------------------------------------- the judge


def _texts(body: dict[str, Any]) -> tuple[str, int]:
    """System and user turns' text, joined; and how many user turns there are."""
    out: list[str] = []

    def add(content: Any) -> None:
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out.extend(b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str))

    add(body.get("system"))
    users = 0
    for message in body.get("messages") or ():
        if isinstance(message, dict) and message.get("role") == "user":
            users += 1
            add(message.get("content"))
    return "\n".join(out), users


def _tagged(text: str, name: str) -> str | None:
    pattern = _TAG_CACHE.get(name)
    if pattern is None:
        pattern = _TAG_CACHE[name] = re.compile(rf"<{name}>(.*?)</{name}>", re.DOTALL)
    found = pattern.findall(text)
    return found[-1].strip() if found else None


def _reason(cover: float, missing: list[str], against: str) -> str:
    if cover >= 0.8:
        return f"The answer covers the key points of the {against}."
    named = ", ".join(f"'{w}'" for w in missing[:2])
    if cover >= 0.4:
        return f"The answer covers some of the {against}'s key points but misses others such as {named}."
    return f"The answer does not address the {against}'s key points, such as {named}."


def _judge(
    *, seed: int, model: str, digest: bytes, body: dict[str, Any], web_search_s: float, rate: float
) -> Shaped:
    """A verdict: score = 0.05 + 0.9 × coverage of the key words ± 0.05, in [0, 1], two decimals;
    malformed (prose, no score, or cut JSON) with probability `rate`, except on a re-ask."""
    text, users = _texts(body)
    rubric = _tagged(text, "rubric") or ""
    reference = _tagged(text, "reference")
    answer = _tagged(text, "answer")
    if answer is None:
        answer = ""
    keys = graders.key_words(rubric, reference)
    cover = graders.coverage(answer, keys)
    verdict_key = orjson.dumps([rubric, reference, answer])
    noise = _rng(seed, model, verdict_key, "judge-noise")
    score = round(min(1.0, max(0.0, 0.05 + 0.9 * cover + noise.uniform(-0.05, 0.05))), 2)
    missing = sorted(keys - graders.content_words(answer))
    reason = _reason(cover, missing, "reference" if reference else "rubric")
    malformed = rate >= 1 or (users <= 1 and _unit(seed, "judge-malformed", model, verdict_key) < rate)
    verdict = json.dumps({"score": score, "reason": reason})
    if malformed:
        style = noise.randrange(3)
        if style == 0:
            verdict = f"I would give this answer {score} out of 1. {reason}"
        elif style == 1:
            verdict = json.dumps({"reason": reason})
        else:
            verdict = verdict[: len(verdict) // 2]
    rng = _rng(seed, model, digest, "judge")
    reply = _build(
        verdict, None, seed=seed, model=model, digest=digest, body=body, web_search_s=web_search_s, rng=rng
    )
    return Shaped(reply, {"judge_score": score, "judge_malformed": malformed})
