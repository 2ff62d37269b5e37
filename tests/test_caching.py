"""Cache modes: `off` strips every breakpoint, 5m/1h place them where they pay, prefixes are keyed once."""

from __future__ import annotations

import json

import pytest

from harness.caching import apply_cache, cache_prefix, min_cacheable_tokens, strip_cache_control
from harness.records import Case

DOC = "A long shared document. " * 400
TOOLS = [{"name": "a", "input_schema": {"type": "object"}}, {"name": "b", "input_schema": {"type": "object"}}]


def case(question: str, **kw) -> Case:
    content = [{"type": "text", "text": DOC}, {"type": "text", "text": question}]
    return Case(id=question, messages=({"role": "user", "content": content},), **kw)


def marks(value) -> list:
    found = []

    def walk(v, path):
        if isinstance(v, dict):
            if "cache_control" in v:
                found.append((path, v["cache_control"]))
            for k, x in v.items():
                walk(x, f"{path}.{k}")
        elif isinstance(v, list | tuple):
            for i, x in enumerate(v):
                walk(x, f"{path}[{i}]")

    walk(value, "")
    return found


def test_off_strips_every_breakpoint_the_dataset_set() -> None:
    marked = Case(
        id="m",
        system=[{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
        messages=(
            {
                "role": "user",
                "content": [{"type": "text", "text": "q", "cache_control": {"type": "ephemeral"}}],
            },
        ),
        params={"tools": [{**TOOLS[0], "cache_control": {"type": "ephemeral"}}]},
    )
    off = apply_cache(marked, "off")
    assert marks(off.system) == marks(list(off.messages)) == marks(off.params) == []
    assert cache_prefix(off) is None
    assert marks(marked.system), "the original case is not changed"


@pytest.mark.parametrize(("mode", "ttl"), [("5m", None), ("1h", "1h")])
def test_breakpoints_go_on_tools_system_and_the_stable_prefix(mode: str, ttl: str | None) -> None:
    cached = apply_cache(case("q1", system="You answer from the document.", params={"tools": TOOLS}), mode)
    expected = {"type": "ephemeral", **({"ttl": ttl} if ttl else {})}
    assert [m[1] for m in marks(cached.params)] == [expected] and "cache_control" in cached.params["tools"][
        -1
    ]
    assert isinstance(cached.system, list) and cached.system[-1]["cache_control"] == expected
    blocks = cached.messages[0]["content"]
    assert blocks[0]["cache_control"] == expected and "cache_control" not in blocks[1], (
        "the document, not the question"
    )
    total = len(marks(cached.params)) + len(marks(cached.system)) + len(marks(list(cached.messages)))
    assert total <= 4


def test_auto_is_the_apis_top_level_cache_control_and_calls_still_share_the_document() -> None:
    one = apply_cache(case("q1", system="sys"), "auto")
    assert one.params == {"cache_control": {"type": "ephemeral"}}
    assert marks(one.system) == marks(list(one.messages)) == [], "no explicit marks: the API places them"
    two = apply_cache(case("q2", system="sys"), "auto")
    assert cache_prefix(one) == cache_prefix(two) is not None
    assert apply_cache(one, "off").params is None


def test_in_a_conversation_the_previous_turn_ends_the_stable_prefix() -> None:
    chat = Case(
        id="c",
        messages=(
            {"role": "user", "content": DOC},
            {"role": "assistant", "content": "Noted."},
            {"role": "user", "content": "And the third point?"},
        ),
    )
    cached = apply_cache(chat, "5m")
    assert cached.messages[1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert cached.messages[2]["content"] == "And the third point?"


def test_calls_sharing_a_prefix_share_a_key() -> None:
    one, two = apply_cache(case("q1"), "5m"), apply_cache(case("q2"), "5m")
    assert cache_prefix(one) == cache_prefix(two) is not None
    other = apply_cache(case("q1", params={"thinking": {"type": "enabled", "budget_tokens": 2048}}), "5m")
    assert cache_prefix(other) != cache_prefix(one), "changing thinking invalidates message-level entries"
    assert json.loads(cache_prefix(one))[1][0][1]["text"] == DOC


def test_minimum_cacheable_lengths_come_from_one_table_with_overrides() -> None:
    assert min_cacheable_tokens("claude-haiku-4-5") == 4096
    assert min_cacheable_tokens("claude-sonnet-4-6") == 1024
    assert min_cacheable_tokens("claude-opus-4-7") == 2048
    assert min_cacheable_tokens("claude-opus-5-5") == 512
    assert min_cacheable_tokens("claude-sonnet-4-6", {"claude-sonnet-4-6": 2048}) == 2048
    assert strip_cache_control({"a": [{"cache_control": 1, "b": 2}]}) == {"a": [{"b": 2}]}


def test_the_counted_prefix_ends_at_the_last_breakpoint() -> None:
    from harness.caching import prefix_case

    cached = apply_cache(case("the question", system="sys"), "5m")
    prefix = prefix_case(cached)
    assert prefix is not None and prefix.max_tokens == 1
    assert [b["text"] for b in prefix.messages[0]["content"]] == [DOC], (
        "the question is not part of the prefix"
    )
    assert prefix_case(apply_cache(case("q"), "off")) is None


async def test_eligibility_is_counted_once_per_model_and_prefix() -> None:
    from harness.caching import eligible_prefixes
    from harness.records import PlannedCall

    counted: list[str] = []

    async def count(call: PlannedCall) -> int | None:
        counted.append(call.model)
        return 1500

    calls = [
        PlannedCall(call_id=f"{m}{i}", case=apply_cache(case(f"q{i}"), "5m"), model=m, repeat=0, index=i)
        for i in range(5)
        for m in ("claude-sonnet-4-6", "claude-haiku-4-5")
    ]
    got = await eligible_prefixes(calls, count, {})
    assert sorted(counted) == ["claude-haiku-4-5", "claude-sonnet-4-6"]
    assert {m: ok for (m, _), (_n, ok) in got.items()} == {
        "claude-sonnet-4-6": True,
        "claude-haiku-4-5": False,
    }
