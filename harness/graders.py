"""Graders: does an answer meet its case's `expected`? Checked once when the dataset loads, applied per call.

Kinds (each an object with exactly one key):

- `contains` (a string or a list: all must appear, case-insensitive), `equals` (after trimming),
  `regex` (Python `re.search`);
- `number`: `{"value": 3500, "tolerance": 0.01, "relative": true, "pattern": "..."}` — the first
  number in the answer (or the first group of `pattern`) is within the tolerance of `value`
  (relative by default; absolute with `"relative": false`; a bare number means tolerance 0);
- `json`: `true`, or `{"schema": {...}}` — the answer is JSON (a ```json fence is allowed) and, with a
  schema, validates against it (the `jsonschema` library, Draft 2020-12 unless `$schema` says otherwise);
- `tool_call`: `{"name": "...", "input": {...}}` — a call of that tool whose input contains that input;
- `judge`: `{"rubric": "...", "reference": "...", "pass_score": 0.7}` or a rubric string — a Claude
  judge scores the answer (`harness.judge`);
- `all` / `any`: a list of graders, all of which / one of which must pass.

Every grader yields a score in [0, 1] and `passed`. A refusal (`stop_reason: refusal`) never passes.
`validate` reports every problem with its field path (`expected.number.value`), so a bad expectation
is a dataset error before any call; `grade` then assumes a valid expectation.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jsonschema
import orjson

__all__ = [
    "KINDS",
    "Answer",
    "JudgeSpec",
    "Verdict",
    "grade",
    "grade_now",
    "judge_specs",
    "kind_of",
    "validate",
]

KINDS = ("contains", "equals", "regex", "number", "json", "tool_call", "judge", "all", "any")
DEFAULT_PASS_SCORE = 0.7
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")
_FENCE = re.compile(r"^```(?:json)?\s*\n?(.*?)\n?```\s*$", re.DOTALL)

Bad = Callable[[str, str], None]


@dataclass(frozen=True, slots=True)
class Answer:
    """What the model returned: its text, its tool calls (`[{"name", "input"}]`) and why it stopped."""

    text: str | None
    tool_calls: Sequence[Mapping[str, Any]] = ()
    stop_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    score: float
    passed: bool


@dataclass(frozen=True, slots=True)
class JudgeSpec:
    rubric: str
    reference: str | None
    pass_score: float


JudgeFn = Callable[[JudgeSpec, Answer], Awaitable[float]]


def kind_of(expected: Mapping[str, Any] | None) -> str | None:
    """The top-level grader kind (the `grader` column), None without an expectation."""
    return next(iter(expected)) if expected else None


# ---------------------------------------------------------------- validation


def validate(expected: Any, bad: Bad, path: str = "expected") -> None:
    """Every problem of an expectation, reported as `bad(field path, message)`."""
    if not isinstance(expected, dict) or len(expected) != 1 or next(iter(expected)) not in KINDS:
        found = ", ".join(map(repr, expected)) if isinstance(expected, dict) else type(expected).__name__
        bad(
            path,
            f"must be an object with exactly one of {', '.join(map(repr, KINDS))}; found {found or 'none'}",
        )
        return
    kind, value = next(iter(expected.items()))
    where = f"{path}.{kind}"
    if kind == "contains":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items or not all(isinstance(s, str) and s for s in items):
            bad(where, "must be a non-empty string or a non-empty list of non-empty strings")
    elif kind == "equals":
        if not isinstance(value, str):
            bad(where, f"must be a string, got {type(value).__name__}")
    elif kind == "regex":
        if not isinstance(value, str):
            bad(where, f"must be a string, got {type(value).__name__}")
        else:
            _check_regex(value, where, bad)
    elif kind == "number":
        _validate_number(value, where, bad)
    elif kind == "json":
        _validate_json(value, where, bad)
    elif kind == "tool_call":
        if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"]:
            bad(where, "must be an object with a tool `name` (and optionally an `input` object)")
        elif not isinstance(value.get("input", {}), dict):
            bad(f"{where}.input", f"must be an object, got {type(value['input']).__name__}")
    elif kind == "judge":
        _validate_judge(value, where, bad)
    else:  # all / any
        if not isinstance(value, list) or not value:
            bad(where, "must be a non-empty list of graders")
            return
        for i, item in enumerate(value):
            validate(item, bad, f"{where}.{i}")


def _check_regex(pattern: str, where: str, bad: Bad) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        bad(where, f"invalid regular expression: {exc}")


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _validate_number(value: Any, where: str, bad: Bad) -> None:
    if _finite(value):
        return
    if not isinstance(value, dict):
        bad(where, f"must be a number or an object with `value`, got {type(value).__name__}")
        return
    unknown = set(value) - {"value", "tolerance", "relative", "pattern"}
    if unknown:
        bad(where, f"unknown key(s) {', '.join(sorted(map(repr, unknown)))}")
    if not _finite(value.get("value")):
        bad(f"{where}.value", "must be a finite number")
    tolerance = value.get("tolerance", 0)
    if not _finite(tolerance) or tolerance < 0:
        bad(f"{where}.tolerance", f"must be a number >= 0, got {tolerance!r}")
    if not isinstance(value.get("relative", True), bool):
        bad(f"{where}.relative", "must be true or false")
    if "pattern" in value:
        pattern = value["pattern"]
        if not isinstance(pattern, str):
            bad(f"{where}.pattern", "must be a string")
        else:
            try:
                if re.compile(pattern).groups != 1:
                    bad(f"{where}.pattern", "must have exactly one group: the number")
            except re.error as exc:
                bad(f"{where}.pattern", f"invalid regular expression: {exc}")


def _validate_json(value: Any, where: str, bad: Bad) -> None:
    if value is True:
        return
    if not isinstance(value, dict) or set(value) - {"schema"}:
        bad(where, "must be true or an object {'schema': {...}}")
        return
    schema = value.get("schema")
    if schema is None:
        return
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        bad(f"{where}.schema", f"not a valid JSON Schema: {exc.message}")
    except (TypeError, AttributeError):
        bad(f"{where}.schema", "must be an object (a JSON Schema)")


def _validate_judge(value: Any, where: str, bad: Bad) -> None:
    if isinstance(value, str):
        if not value.strip():
            bad(where, "needs a rubric: a non-empty string")
        return
    if not isinstance(value, dict):
        bad(where, f"must be a rubric string or an object with `rubric`, got {type(value).__name__}")
        return
    unknown = set(value) - {"rubric", "reference", "pass_score"}
    if unknown:
        bad(where, f"unknown key(s) {', '.join(sorted(map(repr, unknown)))}")
    rubric = value.get("rubric")
    if not isinstance(rubric, str) or not rubric.strip():
        bad(f"{where}.rubric", "is required: what a good answer does")
    if "reference" in value and not isinstance(value["reference"], str):
        bad(f"{where}.reference", "must be a string")
    score = value.get("pass_score", DEFAULT_PASS_SCORE)
    if not _finite(score) or not 0 <= score <= 1:
        bad(f"{where}.pass_score", f"must be a number from 0 to 1, got {score!r}")


# ---------------------------------------------------------------- grading


def judge_specs(expected: Mapping[str, Any] | None) -> list[JudgeSpec]:
    """The judge graders inside an expectation (none: the call needs no judge)."""
    if not expected:
        return []
    kind, value = next(iter(expected.items()))
    if kind == "judge":
        return [_judge_spec(value)]
    if kind in ("all", "any"):
        return [spec for item in value for spec in judge_specs(item)]
    return []


def _judge_spec(value: Any) -> JudgeSpec:
    if isinstance(value, str):
        return JudgeSpec(rubric=value, reference=None, pass_score=DEFAULT_PASS_SCORE)
    return JudgeSpec(
        rubric=value["rubric"],
        reference=value.get("reference"),
        pass_score=float(value.get("pass_score", DEFAULT_PASS_SCORE)),
    )


def grade_now(expected: Mapping[str, Any], answer: Answer, judged: Sequence[float] = ()) -> Verdict:
    """The verdict, given the scores of the expectation's judge graders in `judge_specs` order."""
    if answer.stop_reason == "refusal":
        return Verdict(0.0, False)
    return _grade(expected, answer, list(judged))


async def grade(expected: Mapping[str, Any], answer: Answer, judge: JudgeFn | None = None) -> Verdict:
    """Grade `answer`; judge graders call `judge` (a refusal is not sent to a judge)."""
    specs = judge_specs(expected)
    if answer.stop_reason == "refusal" or not specs:
        return grade_now(expected, answer)
    if judge is None:
        raise ValueError("this expectation needs a judge")
    return grade_now(expected, answer, [await judge(spec, answer) for spec in specs])


def _grade(expected: Mapping[str, Any], answer: Answer, judged: list[float]) -> Verdict:
    kind, value = next(iter(expected.items()))
    text = answer.text or ""
    if kind in ("all", "any"):
        parts = [_grade(item, answer, judged) for item in value]
        if kind == "all":
            return Verdict(sum(p.score for p in parts) / len(parts), all(p.passed for p in parts))
        return Verdict(max(p.score for p in parts), any(p.passed for p in parts))
    if kind == "judge":
        score = min(1.0, max(0.0, judged.pop(0)))
        return Verdict(score, score >= _judge_spec(value).pass_score)
    if kind == "contains":
        needles = [value] if isinstance(value, str) else list(value)
        lowered = text.casefold()
        found = sum(n.casefold() in lowered for n in needles)
        return Verdict(found / len(needles), found == len(needles))
    if kind == "equals":
        return _binary(text.strip() == value.strip())
    if kind == "regex":
        return _binary(_compiled(value).search(text) is not None)
    if kind == "number":
        return _binary(_number_matches(value, text))
    if kind == "json":
        return _json_verdict(value, text)
    if kind == "tool_call":
        return _tool_verdict(value, answer.tool_calls)
    raise ValueError(f"unknown grader {kind!r}")  # validate() refuses it first


def _binary(ok: bool) -> Verdict:
    return Verdict(1.0 if ok else 0.0, ok)


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _number_matches(spec: Any, text: str) -> bool:
    if _finite(spec):
        spec = {"value": spec}
    if "pattern" in spec:
        m = _compiled(spec["pattern"]).search(text)
        raw = m.group(1) if m else None
    else:
        m = _NUMBER.search(text)
        raw = m.group(0) if m else None
    if raw is None:
        return False
    try:
        got = float(raw.replace(",", ""))
    except ValueError:
        return False
    want = float(spec["value"])
    tolerance = float(spec.get("tolerance", 0))
    if spec.get("relative", True):
        return abs(got - want) <= tolerance * abs(want) + 1e-12
    return abs(got - want) <= tolerance + 1e-12


def _json_verdict(spec: Any, text: str) -> Verdict:
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1)
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return Verdict(0.0, False)
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if schema is None:
        return Verdict(1.0, True)
    validator = _validator(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))
    errors = sum(1 for _ in validator.iter_errors(doc))
    return Verdict(1.0, True) if errors == 0 else Verdict(0.5, False)


@lru_cache(maxsize=256)
def _validator(schema_json: bytes) -> Any:
    schema = orjson.loads(schema_json)
    return jsonschema.validators.validator_for(schema)(schema)


def _tool_verdict(spec: Mapping[str, Any], calls: Sequence[Mapping[str, Any]]) -> Verdict:
    wanted = spec.get("input") or {}
    named = [c for c in calls if c.get("name") == spec["name"]]
    if any(_contains(c.get("input"), wanted) for c in named):
        return Verdict(1.0, True)
    return Verdict(0.5 if named else 0.0, False)


def _contains(got: Any, wanted: Any) -> bool:
    """`got` matches `wanted`: objects a superset (recursively), lists element by element, other
    values equal, and a JSON boolean never equal to a number (`True == 1` in Python)."""
    if isinstance(wanted, Mapping):
        return isinstance(got, Mapping) and all(k in got and _contains(got[k], v) for k, v in wanted.items())
    if isinstance(wanted, list):
        return (
            isinstance(got, list)
            and len(got) == len(wanted)
            and all(_contains(g, w) for g, w in zip(got, wanted, strict=True))
        )
    if isinstance(wanted, bool) or isinstance(got, bool):
        return got is wanted
    return bool(got == wanted)
