"""Variants: named request configurations that make a run compare arms (model + variant), not only models."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.plan import call_id_for, make_plan
from harness.records import Case
from harness.variants import apply_variant, arm_of, load_variants_file, parse_variants

CASES = [
    Case(id=f"c{i}", messages=({"role": "user", "content": f"q{i}"},), max_tokens=8192, line=i + 1)
    for i in range(6)
]
MODELS = ["claude-haiku-4-5", "claude-sonnet-4-6"]


def _variants():
    return parse_variants(
        {
            "think-2k": {"thinking": {"type": "enabled", "budget_tokens": 2048}},
            "think-6k": {
                "thinking": {"type": "enabled", "budget_tokens": 6144},
                "system_prefix": "Be brief.",
            },
        },
        "profile p.toml",
    )


def test_plan_has_every_case_model_variant_repeat_once_with_distinct_ids():
    plan = make_plan(CASES, MODELS, repeats=2, seed=3, run_id="r", variants=_variants())
    keys = {(c.case.id, c.model, c.variant, c.repeat) for c in plan}
    assert len(plan) == len(keys) == 6 * 2 * 2 * 2
    assert len({c.call_id for c in plan}) == len(plan)
    budgets = {c.variant: c.case.params["thinking"]["budget_tokens"] for c in plan}
    assert budgets == {"think-2k": 2048, "think-6k": 6144}
    assert {c.case.system for c in plan if c.variant == "think-6k"} == {"Be brief."}


def test_without_variants_the_plan_and_its_call_ids_are_unchanged():
    plan = make_plan(CASES, MODELS, repeats=1, seed=3, run_id="r")
    assert {c.variant for c in plan} == {None}
    assert all(c.call_id == call_id_for("r", c.case.id, c.model, c.repeat) for c in plan)
    assert all(c.case is CASES[int(c.case.id[1:])] for c in plan)


def test_arms_are_interleaved_within_each_case():
    plan = make_plan(CASES, MODELS, repeats=1, seed=5, run_id="r", variants=_variants())
    first_four = {arm_of(c.model, c.variant) for c in plan[:4]}
    assert len(first_four) == 4  # one case's four arms come together, in a seeded order
    assert len({c.case.id for c in plan[:4]}) == 1


def test_a_variant_the_api_would_refuse_names_the_variant_the_case_and_the_field():
    bad = parse_variants({"huge": {"thinking": {"type": "enabled", "budget_tokens": 9000}}}, "profile p.toml")
    with pytest.raises(ConfigError) as raised:
        make_plan(
            CASES, MODELS, repeats=1, seed=1, run_id="r", variants=bad, variants_source="profile p.toml"
        )
    message = str(raised.value)
    assert "[variants.huge]" in message
    assert "'c0' (line 1)" in message
    assert "thinking.budget_tokens: must be below max_tokens (8192)" in message


def test_tools_false_removes_tools_and_tool_choice():
    tool = {"name": "f", "input_schema": {"type": "object"}}
    case = Case(
        id="t",
        messages=({"role": "user", "content": "x"},),
        params={"tools": [tool], "tool_choice": {"type": "auto"}, "top_k": 3},
    )
    (off,) = parse_variants({"no-tools": {"tools": False}}, "v.toml")
    assert apply_variant(case, off, "v.toml").params == {"top_k": 3}


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ({"bad name!": {}}, "variant name"),
        ({"v": {"temprature": 0.5}}, "unknown key"),
        ({"v": {"tools": "none"}}, "must be false"),
        ({"v": {"max_tokens": 0}}, "positive integer"),
        ({"v": 3}, "table of request parameters"),
    ],
)
def test_malformed_variants_are_config_errors_naming_the_section(table, words):
    with pytest.raises(ConfigError) as raised:
        parse_variants(table, "--variants v.toml")
    assert str(raised.value).startswith("--variants v.toml [variants.")
    assert words in str(raised.value)


def test_variants_file(tmp_path: Path):
    path = tmp_path / "v.toml"
    path.write_text(
        '[variants.low]\noutput_config = {effort = "low"}\n[variants.high]\noutput_config = {effort = "high"}\n'
    )
    assert [v.name for v in load_variants_file(path)] == ["low", "high"]
    path.write_text("not = [toml")
    with pytest.raises(ConfigError, match=r"--variants: .*not valid TOML"):
        load_variants_file(path)
