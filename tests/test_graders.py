"""Graders: each kind's verdict and score, combinations, refusals, and every invalid expectation named by field."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.dataset import load_cases
from harness.errors import DatasetInvalid
from harness.graders import Answer, JudgeSpec, Verdict, grade, grade_now, judge_specs, kind_of, validate


def verdict(expected: dict[str, Any], text: str | None = None, **answer: Any) -> Verdict:
    return grade_now(expected, Answer(text=text, **answer))


def problems(expected: Any) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    validate(expected, lambda field, message: found.append((field, message)))
    return found


# ---------------------------------------------------------------- each kind


def test_contains_equals_regex() -> None:
    assert verdict({"contains": ["Ottawa", "Canada"]}, "ottawa is in CANADA") == Verdict(1.0, True)
    assert verdict({"contains": ["Ottawa", "Paris"]}, "Ottawa") == Verdict(0.5, False), "score = share found"
    assert verdict({"equals": "billing"}, "  billing\n").passed
    assert not verdict({"equals": "billing"}, "billing team").passed
    assert verdict({"regex": r"\b\d{4}\b"}, "in 2026").passed
    assert not verdict({"regex": r"^\d+$"}, "x1").passed


def test_number_first_number_or_pattern_with_tolerance() -> None:
    assert verdict({"number": 3500}, "That is 3500 metres.").passed
    assert verdict({"number": {"value": 3500, "tolerance": 0.01}}, "about 3,520 m").passed
    assert not verdict({"number": {"value": 3500, "tolerance": 0.001}}, "about 3,520 m").passed
    assert verdict({"number": {"value": 2, "tolerance": 0.5, "relative": False}}, "2.4").passed
    assert not verdict({"number": {"value": 2, "tolerance": 0.3, "relative": False}}, "2.4").passed
    spec = {"number": {"value": 42, "pattern": r"answer: (\d+)"}}
    assert verdict(spec, "step 1: 7, answer: 42").passed, "the pattern's group, not the first number"
    assert not verdict({"number": 5}, "no digits here").passed


@settings(max_examples=200, deadline=None)
@given(
    value=st.floats(min_value=-1e9, max_value=1e9, allow_nan=False).filter(lambda v: abs(v) > 1e-6),
    rel=st.floats(min_value=0, max_value=0.5),
    factor=st.floats(min_value=-2, max_value=2),
)
def test_number_relative_tolerance_property(value: float, rel: float, factor: float) -> None:
    got = value * (1 + factor * rel)
    text = f"The result is {got!r} units."
    passed = verdict({"number": {"value": value, "tolerance": rel}}, text).passed
    inside = abs(got - value) <= rel * abs(value) * (1 - 1e-9)
    outside = abs(got - value) > rel * abs(value) * (1 + 1e-9) + 1e-9
    if inside:
        assert passed
    if outside:
        assert not passed


SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
}


def test_json_parses_validates_and_scores() -> None:
    assert verdict({"json": True}, '{"a": 1}') == Verdict(1.0, True)
    assert verdict({"json": True}, '```json\n{"a": 1}\n```').passed, "a fenced answer is JSON too"
    assert verdict({"json": True}, "not json") == Verdict(0.0, False)
    assert verdict({"json": {"schema": SCHEMA}}, '{"name": "Ada", "age": 36}').passed
    assert verdict({"json": {"schema": SCHEMA}}, '{"name": "Ada"}') == Verdict(0.5, False), "parses, invalid"


@settings(max_examples=150, deadline=None)
@given(
    doc=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=10,
    )
)
def test_json_agrees_with_the_jsonschema_library(doc: Any) -> None:
    text = json.dumps(doc)
    ours = verdict({"json": {"schema": SCHEMA}}, text).passed
    theirs = jsonschema.Draft202012Validator(SCHEMA).is_valid(doc)
    assert ours == theirs


def test_tool_call_needs_the_name_and_a_superset_of_the_input() -> None:
    calls = [{"name": "get_weather", "input": {"city": "Oslo", "unit": "celsius"}}]
    assert verdict({"tool_call": {"name": "get_weather"}}, None, tool_calls=calls).passed
    assert verdict(
        {"tool_call": {"name": "get_weather", "input": {"city": "Oslo"}}}, None, tool_calls=calls
    ).passed
    wrong_input = verdict(
        {"tool_call": {"name": "get_weather", "input": {"city": "Rome"}}}, None, tool_calls=calls
    )
    assert wrong_input == Verdict(0.5, False), "right tool, wrong input: half"
    assert verdict({"tool_call": {"name": "lookup"}}, "text", tool_calls=calls) == Verdict(0.0, False)


def test_all_and_any_combine_scores_and_verdicts() -> None:
    both = {"all": [{"contains": "Ottawa"}, {"number": 1857}]}
    assert verdict(both, "Ottawa, since 1857").passed
    assert verdict(both, "Ottawa") == Verdict(0.5, False)
    either = {"any": [{"equals": "yes"}, {"equals": "y"}]}
    assert verdict(either, "y").passed and not verdict(either, "no").passed


def test_a_refusal_never_passes() -> None:
    assert verdict({"contains": "sorry"}, "sorry, I can't help", stop_reason="refusal") == Verdict(0.0, False)


async def test_judge_graders_are_scored_by_the_judge_in_order() -> None:
    expected = {"all": [{"contains": "Ottawa"}, {"judge": {"rubric": "names the river", "pass_score": 0.6}}]}
    assert [s.rubric for s in judge_specs(expected)] == ["names the river"]
    seen: list[JudgeSpec] = []

    async def judge(spec: JudgeSpec, answer: Answer) -> float:
        seen.append(spec)
        return 0.8

    result = await grade(expected, Answer(text="Ottawa, on the Ottawa River"), judge)
    assert result == Verdict(0.9, True) and len(seen) == 1
    assert judge_specs({"judge": "short rubric"})[0].pass_score == 0.7
    refused = await grade(expected, Answer(text="no", stop_reason="refusal"), judge)
    assert refused == Verdict(0.0, False) and len(seen) == 1, "a refusal is not sent to the judge"
    assert kind_of(expected) == "all" and kind_of(None) is None


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("expected", "field"),
    [
        ({"containz": "x"}, "expected"),
        ({"contains": "x", "equals": "x"}, "expected"),
        ({"contains": []}, "expected.contains"),
        ({"regex": "(unclosed"}, "expected.regex"),
        ({"number": "3500"}, "expected.number"),
        ({"number": {"value": math.inf}}, "expected.number.value"),
        ({"number": {"value": 1, "tolerance": -1}}, "expected.number.tolerance"),
        ({"number": {"value": 1, "pattern": r"\d+"}}, "expected.number.pattern"),
        ({"json": {"schema": {"type": "not-a-type"}}}, "expected.json.schema"),
        ({"json": {"schmea": {}}}, "expected.json"),
        ({"tool_call": {"input": {}}}, "expected.tool_call"),
        ({"judge": ""}, "expected.judge"),
        ({"judge": {"reference": "x"}}, "expected.judge.rubric"),
        ({"judge": {"rubric": "r", "pass_score": 2}}, "expected.judge.pass_score"),
        ({"all": []}, "expected.all"),
        ({"any": [{"equals": "a"}, {"regex": "("}]}, "expected.any.1.regex"),
    ],
)
def test_invalid_expectations_name_their_field(expected: Any, field: str) -> None:
    found = problems(expected)
    assert found, expected
    assert found[0][0] == field


def test_a_bad_expectation_is_a_dataset_error_with_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    rows = [
        {"id": "ok", "prompt": "2+2?", "expected": {"number": 4}},
        {"id": "bad", "prompt": "json please", "expected": {"json": {"schema": {"type": 12}}}},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DatasetInvalid) as caught:
        load_cases(path)
    text = str(caught.value)
    assert "d.jsonl:2" in text and "expected.json.schema" in text
