"""The quality model's pure parts, in process: regex and JSON Schema generation, the graders as the
simulator reads them, the pass probability and its draw, tokens, the profile table, the fault name."""

from __future__ import annotations

import math
import random
import re
from pathlib import Path

import pytest

from harness.simulator import graders, quality, regexgen, schemas
from harness.simulator.faults import FAULT_NAMES, FaultSettings, parse_fault_spec
from harness.simulator.profiles import DEFAULT_PROFILE_PATH, SimulatorConfigError, load_profiles

PATTERNS = [
    r"\b\d{3}-\d{4}\b",
    r"^(yes|no)$",
    r"[A-Z][a-z]+ \d+",
    r"(?i)colou?r",
    r"\w+@\w+\.com",
    r"total: (\d+)",
    r"[^abc]{2,4}",
    r"(ab)\1",
    r"^[A-D]\)",
    r"(?P<n>\d+(?:\.\d+)?) (apples|pears)",
    r"[a-f0-9]{8}",
]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_regex_generator_matches_and_near_misses_usually_do_not(pattern: str) -> None:
    compiled = re.compile(pattern)
    assert all(compiled.search(regexgen.matching(pattern, random.Random(i))) for i in range(40))
    misses = sum(compiled.search(regexgen.near_miss(pattern, random.Random(i))) is None for i in range(40))
    assert misses >= 10  # the caller redrafts when a near miss still matches
    assert regexgen.matching(r"total: (\d+)", random.Random(1), group=1, group_text="3500") == "total: 3500"


SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 2},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "email": {"type": "string", "format": "email"},
        "role": {"enum": ["admin", "user"]},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "uniqueItems": True},
        "address": {"$ref": "#/$defs/address"},
        "score": {"type": ["number", "null"], "exclusiveMaximum": 1},
    },
    "required": ["name", "age", "address", "role"],
    "additionalProperties": False,
    "$defs": {
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
            "required": ["city", "zip"],
        }
    },
}


def test_schema_instances_validate_and_spoiled_ones_mostly_do_not() -> None:
    for i in range(30):
        rng = random.Random(i)
        value = schemas.instance(SCHEMA, rng, ["Alice", "Paris"])
        assert schemas.errors(SCHEMA, value) == [], value
        assert set(SCHEMA["required"]) <= set(value)
        spoiled = schemas.spoiled(SCHEMA, value, rng)
        assert spoiled and sum(bool(schemas.errors(SCHEMA, s)) for s in spoiled) >= len(spoiled) * 0.8
    assert schemas.errors({"type": "integer"}, 3.0) == [] and schemas.errors({"type": "integer"}, True)
    assert schemas.errors({"oneOf": [{"type": "string"}, {"type": "integer"}]}, 4) == []
    assert schemas.errors({"anyOf": [{"type": "string"}, {"type": "integer"}]}, None)


def test_graders_parse_the_contract_shapes_and_apply_them() -> None:
    g = graders.parse(
        {"all": [{"contains": ["paris", "FRANCE"]}, {"any": [{"equals": "x"}, {"regex": r"\d"}]}]}
    )
    assert g is not None and g.kind == "all"
    assert graders.passes(g, "Paris is in France, 1", [])
    assert not graders.passes(g, "Paris is in France", [])
    number = graders.parse({"number": {"value": 3500, "tolerance": 0.01}})
    assert number is not None
    assert graders.passes(number, "About 3530 people.", []) and not graders.passes(number, "About 3540.", [])
    absolute = graders.parse({"number": {"value": 2.5, "tolerance": 0.1, "relative": False}})
    assert (
        absolute is not None
        and graders.passes(absolute, "2.59", [])
        and not graders.passes(absolute, "2.61", [])
    )
    tagged = graders.parse({"number": {"value": 7, "pattern": r"total: (\d+)"}})
    assert tagged is not None and graders.passes(tagged, "3 items, total: 7", [])
    as_json = graders.parse({"json": {"schema": {"type": "object", "required": ["a"]}}})
    assert as_json is not None
    assert graders.passes(as_json, 'Here:\n```json\n{"a": 1}\n```', []) and not graders.passes(
        as_json, "{}", []
    )
    call = graders.parse({"tool_call": {"name": "f", "input": {"a": {"b": 1}}}})
    assert call is not None
    assert graders.passes(call, "", [("f", {"a": {"b": 1.0, "c": 2}, "d": 3})])
    assert not graders.passes(call, "", [("f", {"a": {"b": 2}})]) and not graders.passes(
        call, "", [("g", {})]
    )
    judge = graders.parse({"judge": "rubric text"})
    assert judge is not None and judge.arg == ("rubric text", None, 0.7)
    assert graders.parse({"similarity": 0.9}) is None  # unknown here: answered as without an expectation
    for bad in ({"contains": []}, {"number": {"value": "x"}}, {"regex": "("}, {"json": 3}, {"all": []}):
        with pytest.raises(graders.ExpectationError):
            graders.parse(bad)


def test_judge_rule_scores_coverage_of_the_reference_or_the_rubric() -> None:
    reference = "Water boils at 100 degrees Celsius at sea level."
    assert graders.judge_score(
        "r", reference, "At sea level water boils at 100 degrees Celsius."
    ) == pytest.approx(0.95)
    assert graders.judge_score("r", reference, "It depends on the pan.") == pytest.approx(0.05)
    rubric = "The answer should mention photosynthesis and chlorophyll."
    assert graders.judge_score(rubric, None, "Photosynthesis uses chlorophyll.") == pytest.approx(0.95)


def test_pass_probability_uses_the_lowest_tag_and_thinking_raises_it() -> None:
    table = {"pass": 0.92, "hard": 0.75, "easy": 0.97}
    assert quality.pass_probability(table, (), {}) == 0.92
    assert quality.pass_probability(table, ("easy", "hard"), {}) == 0.75
    assert quality.pass_probability(table, ("easy", "other"), {}) == 0.97
    assert quality.pass_probability({}, (), {}) == quality.DEFAULT_PASS
    thinking = {"thinking": {"type": "enabled", "budget_tokens": 4096}}
    boosted = quality.pass_probability(table, ("hard",), thinking)
    assert boosted == pytest.approx(0.75 + 0.25 * 0.075 * math.log2(5))
    assert quality.pass_probability(
        table, ("hard",), {"thinking": {"type": "enabled", "budget_tokens": 10**6}}
    ) == (pytest.approx(0.75 + 0.25 * 0.3))


def test_the_draw_keeps_each_models_rate_and_shares_case_difficulty() -> None:
    cases = [f"case-{i}".encode() for i in range(4000)]
    low = [quality.decide(1, "haiku", c, 1, 0.75) for c in cases]
    high = [quality.decide(1, "opus", c, 1, 0.94) for c in cases]
    assert abs(sum(low) / len(cases) - 0.75) < 0.03 and abs(sum(high) / len(cases) - 0.94) < 0.02
    # Correlated: among the cases opus fails, haiku fails far more often than its 25%.
    both_fail = sum(1 for a, b in zip(low, high, strict=True) if not a and not b)
    assert both_fail / (len(cases) - sum(high)) > 0.5
    assert quality.decide(1, "haiku", b"x", 1, 0.5) == quality.decide(1, "haiku", b"x", 1, 0.5)


def test_tokens_join_back_to_the_text() -> None:
    for text in ("The answer is 3500.", '{"a": [1, 2.5, "x y"]}', "  naïve café — 東京\n\nok ", ""):
        pieces = quality.tokenize(text)
        assert "".join(pieces) == text
    assert quality.tokenize("The answer is 3500.") == ["The", " answer", " is", " 350", "0", "."]


def test_memo_gives_a_retry_its_first_attempts_occurrence() -> None:
    memo = quality.Memo()
    assert memo.occurrence(b"k", "call-1") == 1
    assert memo.occurrence(b"k", "call-1") == 1  # a retry
    assert memo.occurrence(b"k", "call-2") == 2  # a repeat
    assert memo.occurrence(b"k", None) == 3
    memo.clear()
    assert memo.occurrence(b"k", "call-2") == 1


def test_profiles_ship_illustrative_quality_tables(tmp_path: Path) -> None:
    profiles = load_profiles()
    haiku, sonnet, opus = (
        profiles.resolve(m) for m in ("claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-8")
    )
    assert haiku and sonnet and opus
    assert haiku.quality["hard"] < sonnet.quality["hard"] < opus.quality["hard"]
    assert haiku.quality["pass"] < sonnet.quality["pass"] < opus.quality["pass"]
    assert "PASS RATES ARE ILLUSTRATIVE" in DEFAULT_PROFILE_PATH.read_text()
    custom = tmp_path / "p.toml"
    custom.write_text(
        DEFAULT_PROFILE_PATH.read_text() + '\n[models."claude-opus-4-8".quality]\nhard = 0.5\n',
        encoding="utf-8",
    )
    opus_custom = load_profiles(custom).resolve("claude-opus-4-8")
    assert (
        opus_custom
        and opus_custom.quality["hard"] == 0.5
        and opus_custom.quality["pass"] == opus.quality["pass"]
    )
    custom.write_text(DEFAULT_PROFILE_PATH.read_text() + '\n[models."claude-opus-4-8".quality]\nhard = 2\n')
    with pytest.raises(SimulatorConfigError, match="hard"):
        load_profiles(custom)


def test_judge_malformed_is_a_fault_rate_outside_the_transport_faults() -> None:
    settings = FaultSettings()
    parse_fault_spec("judge_malformed=1,overloaded=0.5", settings, lambda m: m)
    assert settings.rates == {"judge_malformed": 1.0, "overloaded": 0.5}
    assert "judge_malformed" not in FAULT_NAMES
    assert settings.pick("m", 0.7) is None  # never picked as a transport fault
    settings.apply_json({"rates": {"judge_malformed": 0.3}}, lambda m: m)
    assert settings.rates == {"judge_malformed": 0.3}


def test_huge_quantifiers_and_minimums_are_capped_not_hung() -> None:
    assert len(regexgen.matching("x{999999999}", random.Random(1))) <= 20_001
    assert len(schemas.instance({"type": "array", "minItems": 10**9}, random.Random(1), ["a"])) == 100
    assert len(schemas.instance({"type": "string", "minLength": 10**9}, random.Random(1), ["a"])) <= 10_001
