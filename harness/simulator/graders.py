"""The graders of a case's `expected` object, as the simulator reads and applies them.

`parse(expected)` checks the shape (raising `ExpectationError` with a path for a known
grader written wrong) and returns a `Grader` tree, or None when it names a grader this
simulator does not know (the caller then answers as if there were no expectation).
`passes(grader, text, calls)` applies it to an answer: its text (the text blocks joined)
and its tool calls (name, input). The rules mirror the harness's contract:

- `contains`: every string, case-insensitively; `equals`: equal after trimming both;
  `regex`: `re.search`;
- `number`: `{value, tolerance=0, relative=true, pattern?}`: the first number of the
  answer (or group 1 of `pattern`) within `tolerance` (a fraction of `value` when
  relative, else absolute);
- `json`: `true` or `{"schema": {...}}`: the answer (or its first ```json fence) parses
  and validates (`schemas.errors`);
- `tool_call`: `{name, input?}`: a call of that tool whose input contains `input`
  (objects compared key by key, other values equal);
- `judge`: `"rubric"` or `{rubric, reference?, pass_score=0.7}`: here, the simulated
  judge's score without its noise (`judge_score`) reaches `pass_score`;
- `all` / `any`: lists of graders, nested.

`judge_score` is the simulated judge's rule (the package docstring gives it). Pure: no
state, no I/O.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from harness.simulator import schemas

__all__ = [
    "KINDS",
    "ExpectationError",
    "Grader",
    "content_words",
    "coverage",
    "first_number",
    "judge_score",
    "key_words",
    "parse",
    "passes",
]

KINDS = ("contains", "equals", "regex", "number", "json", "tool_call", "judge", "all", "any")
DEFAULT_PASS_SCORE = 0.7
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?")
_FENCE = re.compile(r"```(?:json|JSON)?[ \t]*\n?(.*?)\n?[ \t]*```", re.DOTALL)
_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    """a about above after again against all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had has
    have having he her here hers him his how i if in into is it its itself just me more most my no nor
    not now of off on once only or other our out over own same she should so some such than that the
    their them then there these they this those through to too under until up very was we were what
    when where which while who whom why will with would you your yours""".split()  # noqa: SIM905
)
# Words a rubric uses to talk about the answer rather than its subject.
_META = frozenset(
    """answer answers response responses should must mention mentions mentioned explain explains
    explained state states stated correct correctly clearly include includes included identify
    identifies identified whether question user say says note notes describe describes concise
    accurate accurately give gives provide provides reference rubric point points full credit score
    good well fully complete completely brief briefly discuss discusses need needs""".split()  # noqa: SIM905
)


class ExpectationError(ValueError):
    """An `expected` object of a known grader written wrong; the message starts with its path."""


@dataclass(frozen=True, slots=True)
class Grader:
    """One node: `kind` (one of KINDS), its normalized argument, and children for all/any."""

    kind: str
    arg: Any = None
    children: tuple[Grader, ...] = ()


def _fail(path: str, reason: str) -> ExpectationError:
    return ExpectationError(f"{path}: {reason}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def parse(expected: Any, path: str = "expected") -> Grader | None:
    """The grader tree of an `expected` object; None when a grader in it is unknown."""
    if not isinstance(expected, dict):
        raise _fail(path, "must be an object with one grader key")
    known = [k for k in expected if k in KINDS]
    if len(known) > 1:
        raise _fail(path, f"has {len(known)} graders ({', '.join(known)}); combine them with all/any")
    if not known:
        return None
    kind = known[0]
    value = expected[kind]
    where = f"{path}.{kind}"
    if kind in ("all", "any"):
        if not isinstance(value, list) or not value:
            raise _fail(where, "must be a non-empty list of graders")
        children = [parse(item, f"{where}[{i}]") for i, item in enumerate(value)]
        if any(c is None for c in children):
            return None
        return Grader(kind, children=tuple(c for c in children if c is not None))
    if kind == "contains":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items or not all(isinstance(s, str) and s for s in items):
            raise _fail(where, "must be a non-empty string or a non-empty list of non-empty strings")
        return Grader(kind, tuple(items))
    if kind == "equals":
        if not isinstance(value, str):
            raise _fail(where, "must be a string")
        return Grader(kind, value)
    if kind == "regex":
        return Grader(kind, _pattern(where, value))
    if kind == "number":
        return Grader(kind, _number_arg(where, value))
    if kind == "json":
        if value is True:
            return Grader(kind, None)
        if isinstance(value, dict) and isinstance(value.get("schema", {}), dict | bool):
            schema = value.get("schema")
            return Grader(kind, schema if isinstance(schema, dict) else None)
        raise _fail(where, 'must be true or {"schema": {...}}')
    if kind == "tool_call":
        if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"]:
            raise _fail(where, "must be an object with a tool `name` (and optionally an `input` object)")
        wanted = value.get("input", {})
        if not isinstance(wanted, dict):
            raise _fail(f"{where}.input", "must be an object")
        return Grader(kind, (value["name"], wanted))
    return Grader(kind, _judge_arg(where, value))


def _pattern(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _fail(where, "must be a string")
    try:
        _compiled(value)
    except re.error as exc:
        raise _fail(where, f"invalid regular expression: {exc}") from None
    return value


def _number_arg(where: str, value: Any) -> tuple[float, float, bool, str | None]:
    if not isinstance(value, dict) or not _is_number(value.get("value")):
        raise _fail(where, "must be an object with a numeric `value`")
    tolerance = value.get("tolerance", 0)
    if not _is_number(tolerance) or tolerance < 0:
        raise _fail(f"{where}.tolerance", "must be a number >= 0")
    relative = value.get("relative", True)
    if not isinstance(relative, bool):
        raise _fail(f"{where}.relative", "must be true or false")
    pattern = value.get("pattern")
    if pattern is not None:
        pattern = _pattern(f"{where}.pattern", pattern)
        if _compiled(pattern).groups < 1:
            raise _fail(f"{where}.pattern", "must have a group around the number")
    return (value["value"], float(tolerance), relative, pattern)


def _judge_arg(where: str, value: Any) -> tuple[str, str | None, float]:
    if isinstance(value, str) and value.strip():
        return (value, None, DEFAULT_PASS_SCORE)
    if not isinstance(value, dict) or not isinstance(value.get("rubric"), str) or not value["rubric"].strip():
        raise _fail(where, "must be a rubric string or an object with a `rubric`")
    reference = value.get("reference")
    if reference is not None and not isinstance(reference, str):
        raise _fail(f"{where}.reference", "must be a string")
    pass_score = value.get("pass_score", DEFAULT_PASS_SCORE)
    if not _is_number(pass_score) or not 0 <= pass_score <= 1:
        raise _fail(f"{where}.pass_score", "must be a number between 0 and 1")
    return (value["rubric"], reference or None, float(pass_score))


@lru_cache(maxsize=512)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


# ---------------------------------------------------------------- applying


def first_number(text: str, pattern: str | None = None) -> float | None:
    """The first number of the text, or group 1 of `pattern`'s first match, as a float."""
    if pattern is not None:
        found = _compiled(pattern).search(text)
        if found is None or found.group(1) is None:
            return None
        inner = _NUMBER.search(found.group(1).replace(",", ""))
        return float(inner.group()) if inner else None
    match = _NUMBER.search(text)
    return float(match.group()) if match else None


def within(got: float, value: float, tolerance: float, relative: bool) -> bool:
    allowed = tolerance * abs(value) if relative else tolerance
    return abs(got - value) <= allowed + 1e-9 * max(1.0, abs(value))


def json_value(text: str) -> tuple[bool, Any]:
    """(parsed, value) of the answer, or of its first fenced block."""
    for candidate in (text.strip(), *(m.group(1) for m in _FENCE.finditer(text))):
        try:
            return True, json.loads(candidate)
        except ValueError:
            continue
    return False, None


def contains_input(wanted: Any, got: Any) -> bool:
    """Objects: every wanted key present with a matching value; anything else: JSON-equal."""
    if isinstance(wanted, dict):
        return isinstance(got, dict) and all(
            k in got and contains_input(v, got[k]) for k, v in wanted.items()
        )
    return schemas.errors({"const": wanted}, got) == []


def passes(grader: Grader, text: str, calls: list[tuple[str, Any]]) -> bool:
    """Whether an answer (its text and tool calls) meets the grader."""
    kind, arg = grader.kind, grader.arg
    if kind == "all":
        return all(passes(g, text, calls) for g in grader.children)
    if kind == "any":
        return any(passes(g, text, calls) for g in grader.children)
    if kind == "contains":
        lowered = text.casefold()
        return all(n.casefold() in lowered for n in arg)
    if kind == "equals":
        return text.strip() == arg.strip()
    if kind == "regex":
        return _compiled(arg).search(text) is not None
    if kind == "number":
        value, tolerance, relative, pattern = arg
        got = first_number(text, pattern)
        return got is not None and within(got, value, tolerance, relative)
    if kind == "json":
        ok, value = json_value(text)
        return ok and (arg is None or not schemas.errors(arg, value))
    if kind == "tool_call":
        name, wanted = arg
        return any(n == name and contains_input(wanted, i) for n, i in calls)
    rubric, reference, pass_score = arg
    return judge_score(rubric, reference, text) >= pass_score


# ---------------------------------------------------------------- the simulated judge


def _stem(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def content_words(text: str) -> set[str]:
    """The words that carry content: lower-cased, no stop words, a plural's s removed."""
    return {_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP and (len(w) > 2 or w.isdigit())}


def key_words(rubric: str, reference: str | None) -> set[str]:
    """What a good answer must say: the reference's content words, else the rubric's."""
    if reference:
        return content_words(reference)
    return {w for w in content_words(rubric) if w not in _META}


def coverage(answer: str, keys: set[str]) -> float:
    """The share of the key words that the answer says (1 when there are none and it says anything)."""
    if not answer.strip():
        return 0.0
    if not keys:
        return 1.0
    return len(keys & content_words(answer)) / len(keys)


def judge_score(rubric: str, reference: str | None, answer: str) -> float:
    """The simulated judge's score before its noise: 0.05 + 0.9 × coverage of the key words."""
    return 0.05 + 0.9 * coverage(answer, key_words(rubric, reference))
