"""The simulator's prompt cache as pure functions: breakpoints and their 400s, prefix counts and
hashes, the 20-block lookback, the A/B/C billing of mixed TTLs, availability and expiry on a
fake clock. The end-to-end behaviour over sockets is in test_simulator_cache.py."""

from __future__ import annotations

from typing import Any

import pytest

from harness.simulator.promptcache import (
    BreakpointError,
    CachePlan,
    Prompt,
    PromptCache,
    build_prompt,
    find_breakpoints,
)
from harness.simulator.textgen import content_digest, count_input_tokens
from harness.simulator.validate import check_count_tokens, check_messages

EPH = {"type": "ephemeral"}
HOUR = {"type": "ephemeral", "ttl": "1h"}
TOOL = {"name": "lookup", "description": "Look a word up. " * 40, "input_schema": {"type": "object"}}


def _text(n: int, cache: dict[str, Any] | None = None, word: str = "x") -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": (word * 4 * n)[: 4 * n]}
    if cache is not None:
        block["cache_control"] = cache
    return block


def _body(**parts: Any) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-6",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
        **parts,
    }


def _prompt(body: dict[str, Any], key: str = "k", model: str = "m") -> Prompt:
    return build_prompt(
        body, key=key, model=model, breakpoints=find_breakpoints(body), total_tokens=count_input_tokens(body)
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _cache(scale: float = 1.0) -> tuple[PromptCache, Clock]:
    clock = Clock()
    return PromptCache(scale, clock=clock), clock


def _run(
    cache: PromptCache, clock: Clock, body: dict[str, Any], minimum: int = 1, ttft: float = 0.5
) -> CachePlan:
    """One request at the clock's instant: plan, then commit (usable after `ttft`)."""
    plan = cache.plan(_prompt(body), minimum, clock.now)
    cache.commit(plan, clock.now, clock.now + ttft)
    return plan


# -- breakpoints ----------------------------------------------------------------------------------


def test_breakpoints_in_prompt_order_and_the_automatic_one() -> None:
    body = _body(
        tools=[{**TOOL, "cache_control": HOUR}],
        system=[_text(10), _text(10, EPH)],
        messages=[{"role": "user", "content": [_text(5), {"type": "text", "text": "q"}]}],
    )
    assert [(b.position, b.ttl, b.path) for b in find_breakpoints(body)] == [
        (0, "1h", "tools.0"),
        (2, "5m", "system.1"),
    ]
    auto = find_breakpoints({**body, "cache_control": EPH})[-1]
    assert (auto.position, auto.path, auto.automatic) == (4, "messages.0.content.1", True)
    assert find_breakpoints(_body()) == []
    # The automatic breakpoint skips what cannot carry one (a thinking block, an empty text).
    turns = [
        {"role": "user", "content": "question"},
        {"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "thinking", "thinking": "t", "signature": "s"}]},
    ]  # fmt: skip
    assert find_breakpoints(_body(messages=turns, cache_control=EPH))[-1].path == "messages.1.content.0"


def test_an_automatic_breakpoint_on_a_marked_last_block() -> None:
    same = _body(messages=[{"role": "user", "content": [_text(5, EPH)]}], cache_control=EPH)
    assert len(find_breakpoints(same)) == 1  # the same TTL: a no-op
    with pytest.raises(
        BreakpointError, match=r"^cache_control.ttl: the top-level cache_control has ttl='1h'"
    ):
        find_breakpoints({**same, "cache_control": HOUR})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            _body(system=[_text(1, EPH), _text(1, EPH), _text(1, EPH), _text(1, EPH), _text(1, EPH)]),
            "A maximum of 4 blocks with cache_control may be provided. Found 5.",
        ),
        (
            _body(system=[_text(1, EPH), _text(1, EPH), _text(1, EPH), _text(1, EPH)], cache_control=EPH),
            "A maximum of 4 blocks with cache_control may be provided. Found 5.",
        ),
        (
            _body(system=[_text(1, EPH)], messages=[{"role": "user", "content": [_text(1), _text(1, HOUR)]}]),
            "messages.0.content.1.cache_control.ttl: a ttl='1h' cache_control block must not come after a "
            "ttl='5m' cache_control block. Note that blocks are processed in the following order: "
            "`tools`, `system`, `messages`.",
        ),
        (
            _body(system=[_text(1, EPH)], cache_control=HOUR),
            "cache_control.ttl: a ttl='1h' cache_control block must not come after a ttl='5m'",
        ),
    ],
)
def test_the_breakpoints_the_api_refuses(body: dict[str, Any], message: str) -> None:
    with pytest.raises(BreakpointError) as caught:
        find_breakpoints(body)
    assert str(caught.value).startswith(message)
    assert (check_messages(body, 64000) or "").startswith(message)
    assert (
        check_count_tokens({k: v for k, v in body.items() if k != "max_tokens"}) is None
    )  # counting ignores caching


def test_one_hour_before_five_minutes_is_fine() -> None:
    body = _body(
        tools=[{**TOOL, "cache_control": HOUR}], system=[_text(1, HOUR), _text(1, EPH)], cache_control=EPH
    )
    assert [b.ttl for b in find_breakpoints(body)] == ["1h", "1h", "5m", "5m"]


# -- prefixes ---------------------------------------------------------------------------------------

RICH = _body(
    tools=[TOOL, {**TOOL, "name": "other", "cache_control": EPH}],
    system=[_text(300), _text(200, EPH)],
    messages=[
        {
            "role": "user",
            "content": [_text(700, EPH), {"type": "image", "source": {"type": "url", "url": "u"}}],
        },
        {"role": "assistant", "content": "ok"},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "t", "content": "r"}, _text(3, EPH)],
        },
    ],
)


def test_prefix_counts_add_up_to_the_prompt_and_ignore_the_markers() -> None:
    prompt = _prompt(RICH)
    assert prompt.tokens[-1] == prompt.total_tokens == count_input_tokens(RICH)
    assert prompt.tokens == sorted(prompt.tokens)  # prefixes only grow
    bare = _strip(RICH)
    assert count_input_tokens(bare) == count_input_tokens(RICH)
    assert content_digest(bare) == content_digest(RICH)  # the answer does not depend on caching
    assert prompt.paths[-1] == "messages.2.content.1" and len(prompt.hashes) == len(prompt.tokens) == 9


def _strip(body: dict[str, Any]) -> dict[str, Any]:
    def clean(item: Any) -> Any:
        return {k: v for k, v in item.items() if k != "cache_control"} if isinstance(item, dict) else item

    messages = [
        {**m, "content": [clean(b) for b in m["content"]] if isinstance(m["content"], list) else m["content"]}
        for m in body["messages"]
    ]
    return {**body, "tools": [clean(t) for t in body["tools"]], "system": [clean(b) for b in body["system"]], "messages": messages}  # fmt: skip


def _levels(a: dict[str, Any], b: dict[str, Any]) -> tuple[bool, bool, bool]:
    """Whether the tools, system and messages prefixes of two bodies are the same."""
    pa, pb = _prompt(a), _prompt(b)
    at = {
        path.split(".")[0]: h for path, h in zip(pa.paths, pa.hashes, strict=True)
    }  # the last of each level
    bt = {path.split(".")[0]: h for path, h in zip(pb.paths, pb.hashes, strict=True)}
    return at["tools"] == bt["tools"], at["system"] == bt["system"], at["messages"] == bt["messages"]


@pytest.mark.parametrize(
    ("change", "kept"),
    [
        ({"tool_choice": {"type": "any"}}, (True, True, False)),
        ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, (True, True, False)),
        ({"thinking": {"type": "adaptive"}}, (True, True, False)),
        ({"speed": "fast"}, (True, False, False)),
        ({"system": [_text(300, word="y"), _text(200, EPH)]}, (True, False, False)),
        ({"tools": [TOOL, {**TOOL, "name": "renamed", "cache_control": EPH}]}, (False, False, False)),
        ({"tools": [TOOL, {**TOOL, "name": "other", "cache_control": EPH}, {"type": "web_search_20250305", "name": "web_search"}]}, (True, False, False)),
        ({"tool_choice": {"type": "auto"}}, (True, True, True)),  # the default, spelled out
        ({"thinking": {"type": "disabled"}}, (True, True, True)),
    ],
)  # fmt: skip
def test_what_invalidates_which_level(change: dict[str, Any], kept: tuple[bool, bool, bool]) -> None:
    assert _levels(RICH, {**RICH, **change}) == kept


def test_images_invalidate_the_messages_and_markers_invalidate_nothing() -> None:
    first = RICH["messages"][0]
    no_image = {**RICH, "messages": [{**first, "content": first["content"][:1]}, *RICH["messages"][1:]]}
    assert _levels(RICH, no_image) == (True, True, False)
    moved = {**RICH, "system": [_text(300, EPH), _text(200)]}  # a marker moved: the same prefixes
    assert _levels(RICH, moved) == (True, True, True)
    assert _prompt(RICH, key="other").hashes[0] != _prompt(RICH).hashes[0]
    assert _prompt(RICH, model="other").hashes[0] != _prompt(RICH).hashes[0]


# -- the cache ---------------------------------------------------------------------------------------


def _doc(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    return _body(messages=[{"role": "user", "content": blocks}])


def test_write_then_read_once_the_first_token_is_due() -> None:
    cache, clock = _cache()
    body = _doc([_text(2000, EPH), _text(10)])
    first = _run(cache, clock, body)
    assert (first.usage.read, first.usage.write_5m, first.uncached) == (0, 2000, 10)
    clock.now += 0.4  # before the writer's first token: a concurrent request writes too
    assert _run(cache, clock, body).usage.write_5m == 2000
    clock.now += 0.2
    again = _run(cache, clock, body)
    assert (again.usage.read, again.usage.write, again.hit_breakpoint) == (2000, 0, 0)


def test_ttl_counts_in_scaled_time_and_reads_refresh_it() -> None:
    cache, clock = _cache(scale=0.01)  # 5 minutes = 3 s
    body = _doc([_text(2000, EPH), _text(10)])
    _run(cache, clock, body, ttft=0.0)
    for _ in range(4):  # a read every 2.5 s keeps it alive past its first 3 s
        clock.now += 2.5
        assert _run(cache, clock, body).usage.read == 2000
    clock.now += 3.01
    assert _run(cache, clock, body).usage.write_5m == 2000  # expired: written again
    never, frozen = _cache(scale=0.0)
    _run(never, frozen, body, ttft=0.0)
    frozen.now += 1e9
    assert _run(never, frozen, body).usage.read == 2000  # time scale 0: nothing expires


def test_mixed_ttls_are_billed_as_documented() -> None:
    cache, clock = _cache(scale=0.01)
    body = _body(
        system=[_text(1500, HOUR)], messages=[{"role": "user", "content": [_text(2000, EPH), _text(7)]}]
    )
    first = _run(cache, clock, body, ttft=0.0)
    assert (first.usage.read, first.usage.write_1h, first.usage.write_5m, first.uncached) == (
        0,
        1500,
        2000,
        7,
    )
    clock.now += 4.0  # past 5 minutes, not past the hour
    later = _run(cache, clock, body)
    assert (later.usage.read, later.usage.write_1h, later.usage.write_5m) == (1500, 0, 2000)
    assert _prompt(body).paths[later.hit] == "system.0"


def test_the_twenty_block_lookback_of_the_docs() -> None:
    """The docs' example: 30 blocks with a breakpoint on the last one, then block 31."""
    blocks = [_text(40, word=f"{i:02d}") for i in range(1, 31)]
    cache, clock = _cache()
    _run(cache, clock, _doc([*blocks[:-1], {**blocks[-1], "cache_control": EPH}]))
    clock.now += 1.0

    def ask(changed: int | None, extra_at: int | None = None) -> CachePlan:
        sent = [_text(40, word="zz") if i + 1 == changed else dict(b) for i, b in enumerate(blocks)]
        if extra_at is not None:
            sent[extra_at - 1]["cache_control"] = EPH
        sent[-1]["cache_control"] = EPH
        return cache.plan(_prompt(_doc([*sent, _text(5)])), 1, clock.now)

    assert ask(None).hit == 29  # block 30 (position 29): a hit, only block 31 is new
    assert ask(25).hit == 23  # 30 → ... → 25 (changed) → 24: a hit
    assert ask(5).hit == -1  # 30 → ... → 11 is twenty checks: no hit
    assert ask(5, extra_at=5).hit == 3  # a breakpoint on block 5 looks back itself: block 4


def test_under_the_minimum_nothing_is_read_or_written() -> None:
    cache, clock = _cache()
    small = _doc([_text(900, EPH), _text(10)])
    plan = _run(cache, clock, small, minimum=1024)
    assert plan.eligible is False and plan.usage.write == 0 and plan.uncached == 910
    clock.now += 1
    assert _run(cache, clock, small, minimum=1024).usage.read == 0
    grown = _doc([_text(900), _text(300, EPH), _text(10)])  # the longer prefix is written, not a 900 one
    assert _run(cache, clock, grown, minimum=1024).usage.write_5m == 1200
    clock.now += 1
    assert _run(cache, clock, grown, minimum=1024).usage.read == 1200
    assert cache.plan(_prompt(small), 1024, clock.now).usage.read == 0


def test_a_read_refreshes_what_it_was_built_on_and_sweeps_forget_the_dead() -> None:
    cache, clock = _cache(scale=0.01)
    short = _doc([_text(1000, EPH), _text(5)])
    long = _doc([_text(1000), _text(1000, EPH), _text(5)])
    _run(cache, clock, short, ttft=0.0)
    clock.now += 1.0
    assert _run(cache, clock, long, ttft=0.0).usage.read == 1000
    for _ in range(3):  # only the long prefix is asked for; the short one lives on through it
        clock.now += 2.5
        assert _run(cache, clock, long).usage.read == 2000
    assert _run(cache, clock, short).usage.read == 1000
    assert len(cache) == 2
    clock.now += 10
    assert cache.sweep(clock.now) == 2 and len(cache) == 0
