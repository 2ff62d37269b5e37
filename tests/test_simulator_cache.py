"""Prompt caching in the simulator, end to end: the unchanged SDK over real sockets against the
simulator process, usage checked against the ground truth at /_sim/requests.

Two processes: one at time scale 1/200 (5 minutes pass in 1.5 s, an hour in 18 s) for the
cache's rules, one at time scale 1 with a noise-free profile where the time to the first
token and concurrent writes can be observed."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from tests.simproc import SimProc, start_simulator

KEY = "sk-test-not-a-real-key"
HAIKU = "claude-haiku-4-5"  # minimum cacheable prompt 4,096 tokens
SONNET = "claude-sonnet-4-6"  # 1,024
SCALE = 1 / 200
FIVE_MINUTES = 300 * SCALE  # real seconds
EPH = {"type": "ephemeral"}
HOUR = {"type": "ephemeral", "ttl": "1h"}
WORDS = [
    "river",
    "mountain",
    "harbor",
    "lantern",
    "meadow",
    "canyon",
    "orchard",
    "glacier",
    "village",
    "market",
    "bridge",
    "forest",
]


def _text(tokens: int, salt: str) -> str:
    """About `tokens` tokens (the simulator counts four characters a token) of prose."""
    words = (f"{salt} {WORDS[i % len(WORDS)]}{i % 7}" for i in range(tokens))
    return " ".join(words)[: 4 * tokens]


DOC = _text(5000, "doc")  # the shared ~5,000-token prefix


@pytest.fixture(scope="module")
def sim_module() -> Iterator[SimProc]:
    sim = start_simulator("--time-scale", str(SCALE), "--seed", "5")
    yield sim
    sim.stop()


@pytest.fixture
def sim(sim_module: SimProc) -> SimProc:
    sim_module.reset()  # also forgets the prompt cache
    return sim_module


@pytest.fixture
def client(sim: SimProc) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(api_key=KEY, base_url=sim.url, max_retries=0) as client:
        yield client


def _system(doc: str = DOC, cache: dict[str, Any] = EPH) -> list[dict[str, Any]]:
    return [
        {"type": "text", "text": "Answer questions about the document below."},
        {"type": "text", "text": doc, "cache_control": cache},
    ]


def _ask(
    client: anthropic.Anthropic, question: str, model: str = HAIKU, **params: Any
) -> anthropic.types.Message:
    params.setdefault("system", _system())
    return client.messages.create(
        model=model,
        max_tokens=params.pop("max_tokens", 40),
        messages=[{"role": "user", "content": question}],
        **params,
    )


def _usage(message: anthropic.types.Message) -> tuple[int, int, int, int, int]:
    """(input, read, write, 5m write, 1h write), checking that the parts add up."""
    u = message.usage
    assert u.cache_creation is not None
    five, hour = u.cache_creation.ephemeral_5m_input_tokens, u.cache_creation.ephemeral_1h_input_tokens
    assert u.cache_creation_input_tokens == five + hour
    return u.input_tokens, u.cache_read_input_tokens or 0, u.cache_creation_input_tokens or 0, five, hour


def _agrees(message: anthropic.types.Message, truth: dict[str, Any]) -> None:
    """The usage the client read is the simulator's ground truth."""
    inp, read, _, five, hour = _usage(message)
    assert (truth["input_tokens"], truth["cache_read_tokens"]) == (inp, read)
    assert (truth["cache_write_5m_tokens"], truth["cache_write_1h_tokens"]) == (five, hour)
    assert truth["cache_hit"] == (read > 0)


def test_fifty_questions_on_one_prefix_write_once_and_read_49_times(
    sim: SimProc, client: anthropic.Anthropic
) -> None:
    answers = [_ask(client, f"Question {i}: what does paragraph {i} say?") for i in range(50)]
    truth = sim.requests()
    assert len(truth) == 50
    for message, record in zip(answers, truth, strict=True):
        _agrees(message, record)
        assert record["cache_eligible"] is True and record["cache_min_tokens"] == 4096
    prefix = truth[0]["cache_prefix_tokens"]
    assert prefix > 5000
    assert _usage(answers[0])[1:] == (0, prefix, prefix, 0)
    assert all(_usage(m)[1:] == (prefix, 0, 0, 0) for m in answers[1:])
    assert [r["cache_hit"] for r in truth].count(True) == 49
    assert {(r["cache_hit_at"], r["cache_hit_breakpoint"]) for r in truth[1:]} == {("system.1", 0)}
    asked = [{"role": "user", "content": "Question 0: what does paragraph 0 say?"}]
    total = client.messages.count_tokens(model=HAIKU, system=_system(), messages=asked).input_tokens  # type: ignore[arg-type]
    bare = [{"type": "text", "text": b["text"]} for b in _system()]
    # count_tokens takes the markers and ignores caching; its count is the three parts' sum.
    assert total == client.messages.count_tokens(model=HAIKU, system=bare, messages=asked).input_tokens  # type: ignore[arg-type]
    assert total == sum(_usage(answers[0])[:3]) == prefix + truth[0]["input_tokens"]


def test_a_prefix_under_the_model_minimum_is_silently_not_cached(
    sim: SimProc, client: anthropic.Anthropic
) -> None:
    short = _system(_text(3000, "short"))  # under Haiku 4.5's 4,096, over Sonnet 4.6's 1,024
    first, second = (_ask(client, q, system=short) for q in ("One?", "Two?"))
    for message in (first, second):
        assert _usage(message)[1:] == (0, 0, 0, 0)
    on_sonnet = [_ask(client, q, model=SONNET, system=short) for q in ("One?", "Two?")]
    haiku_truth, _, _, sonnet_truth = sim.requests()
    assert haiku_truth["cache_eligible"] is False and haiku_truth["cache_hit"] is False
    assert first.usage.input_tokens == haiku_truth["input_tokens"] == haiku_truth["cache_prefix_tokens"] + 1
    assert _usage(on_sonnet[1])[1] == sonnet_truth["cache_read_tokens"] > 2900


def test_an_entry_expires_after_its_scaled_ttl_unless_read(sim: SimProc, client: anthropic.Anthropic) -> None:
    doc = _system(_text(2000, "ttl"))
    kinds = []
    for pause in (0.0, 0.6 * FIVE_MINUTES, 0.6 * FIVE_MINUTES, 1.3 * FIVE_MINUTES):
        time.sleep(pause)
        _, read, write, _, _ = _usage(_ask(client, "Again?", model=SONNET, system=doc))
        kinds.append("read" if read else "write" if write else "none")
    # The third request comes 1.2 TTLs after the write: alive only because the second read refreshed it.
    assert kinds == ["write", "read", "read", "write"]


def test_one_hour_entries_outlive_five_minute_ones(sim: SimProc, client: anthropic.Anthropic) -> None:
    system = [{"type": "text", "text": _text(1500, "rules"), "cache_control": HOUR}]
    question = [
        {"type": "text", "text": _text(2000, "case"), "cache_control": EPH},
        {"type": "text", "text": "Why?"},
    ]

    def ask() -> tuple[int, int, int, int, int]:
        message = client.messages.create(
            model=SONNET, max_tokens=20, system=system, messages=[{"role": "user", "content": question}]
        )
        return _usage(message)

    first = ask()
    time.sleep(1.3 * FIVE_MINUTES)
    later = ask()
    assert first[1:] == (0, 3500, 2000, 1500)  # (read, write, 5m, 1h): 1h for the system, 5m for the case
    assert later[1:] == (1500, 2000, 2000, 0)  # the hour-long entry is read, the 5-minute one written again
    assert [r["cache_hit_at"] for r in sim.requests()] == [None, "system.0"]


TOOLS = [
    {
        "name": "find_clause",
        "description": _text(1500, "tooldoc"),
        "input_schema": {"type": "object", "properties": {"clause": {"type": "string"}}},
        "cache_control": EPH,
    }
]
LAYERS = {
    "tools": TOOLS,
    "system": [{"type": "text", "text": _text(1500, "policy"), "cache_control": EPH}],
}


def _layered(client: anthropic.Anthropic, question: str, **change: Any) -> None:
    params: dict[str, Any] = {**LAYERS, "max_tokens": 2048, **change}
    content = [
        {"type": "text", "text": _text(1500, "contract"), "cache_control": EPH},
        {"type": "text", "text": question},
    ]
    client.messages.create(model=SONNET, messages=[{"role": "user", "content": content}], **params)


def test_tool_choice_and_thinking_invalidate_message_entries_only(
    sim: SimProc, client: anthropic.Anthropic
) -> None:
    _layered(client, "First?")
    _layered(client, "Second?")
    _layered(client, "Third?", tool_choice={"type": "any"})
    _layered(client, "Fourth?", tool_choice={"type": "any"})
    _layered(client, "Fifth?", thinking={"type": "enabled", "budget_tokens": 1024})
    _layered(client, "Sixth?", system=[{"type": "text", "text": _text(1500, "other"), "cache_control": EPH}])
    _layered(client, "Seventh?", tools=[{**TOOLS[0], "description": _text(1500, "changed")}])
    truth = sim.requests()
    assert all(r["status"] == 200 for r in truth)
    hits = [(r["cache_hit_at"], r["cache_hit_breakpoint"]) for r in truth]
    assert hits == [
        (None, None),  # everything written
        ("messages.0.content.0", 2),  # everything read
        ("system.0", 2),  # tool_choice changed: tools and system read, the messages written again
        ("messages.0.content.0", 2),  # ... and read with the same tool_choice
        ("system.0", 2),  # thinking turned on: the same
        ("tools.0", 2),  # the system changed: only the tools read
        (None, None),  # a tool changed: nothing read
    ]
    tools, system, messages = 1500 + 1, 3000 + 1, 4500 + 1  # prefix tokens (JSON around the tool)
    reads = [r["cache_read_tokens"] for r in truth]
    assert reads[2] - reads[5] == reads[4] - reads[5] == system - tools
    assert (
        reads[1]
        == reads[3]
        == truth[0]["cache_write_5m_tokens"]
        == reads[2] + truth[2]["cache_write_5m_tokens"]
    )
    assert abs(reads[1] - messages) < 40  # the tool's JSON is a little longer than its description


def test_streamed_and_whole_replies_report_the_same_usage(sim: SimProc, client: anthropic.Anthropic) -> None:
    system = _system(_text(2000, "stream"), HOUR)
    whole = _ask(client, "Is this written?", model=SONNET, system=system)
    sim.reset()
    with client.messages.stream(
        model=SONNET, max_tokens=40, system=system, messages=[{"role": "user", "content": "Is this written?"}]
    ) as stream:
        events = list(stream)
        streamed = stream.get_final_message()
    assert streamed.usage == whole.usage and _usage(whole)[4] > 2000  # a 1-hour write, both ways
    start = next(e for e in events if e.type == "message_start").message.usage
    final = next(e for e in events if e.type == "message_delta").usage
    assert start.cache_creation is not None and start.cache_creation.ephemeral_1h_input_tokens > 2000
    assert (final.cache_creation_input_tokens, final.cache_read_input_tokens) == (
        start.cache_creation_input_tokens,
        start.cache_read_input_tokens,
    )
    read_whole = _ask(client, "And now?", model=SONNET, system=system)
    with client.messages.stream(
        model=SONNET, max_tokens=40, system=system, messages=[{"role": "user", "content": "And now?"}]
    ) as stream:
        read_streamed = stream.get_final_message()
    assert read_streamed.usage == read_whole.usage and _usage(read_whole)[1] > 2000
    for message, record in zip([streamed, read_whole, read_streamed], sim.requests(), strict=True):
        _agrees(message, record)


def test_automatic_caching_moves_forward_with_the_conversation(
    sim: SimProc, client: anthropic.Anthropic
) -> None:
    turns: list[dict[str, Any]] = [{"role": "user", "content": _text(1200, "turn")}]
    seen = []
    for question in ("What next?", "And then?"):
        reply = client.messages.create(
            model=SONNET, max_tokens=30, cache_control=EPH, system=_text(300, "sys"), messages=turns
        )
        seen.append(_usage(reply))
        turns += [
            {"role": "assistant", "content": reply.content[0].text},
            {"role": "user", "content": question},
        ]  # type: ignore[union-attr]
    first, second = seen
    assert first[0] == 0 and first[1] == 0 and first[2] >= 1500  # all written: nothing follows the breakpoint
    assert (
        second[0] == 0 and second[1] == first[2] and second[2] > 0
    )  # the first turn read, the new part written
    assert [r["cache_hit_at"] for r in sim.requests()] == [None, "messages.0"]


@pytest.mark.parametrize(
    ("system", "message"),
    [
        ([{"type": "text", "text": f"part {i}", "cache_control": EPH} for i in range(5)], "A maximum of 4 blocks with cache_control may be provided. Found 5."),
        ([{"type": "text", "text": "a", "cache_control": EPH}, {"type": "text", "text": "b", "cache_control": HOUR}], "system.1.cache_control.ttl: a ttl='1h' cache_control block must not come after a ttl='5m' cache_control block."),
    ],
)  # fmt: skip
def test_breakpoints_the_api_refuses_are_400s(
    sim: SimProc, client: anthropic.Anthropic, system: Any, message: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        _ask(client, "Hi", model=SONNET, system=system)
    assert caught.value.body["error"]["message"].startswith(message)  # type: ignore[index]
    assert sim.requests()[0]["status"] == 400


def test_batch_requests_share_the_cache_in_processing_order(
    sim: SimProc, client: anthropic.Anthropic
) -> None:
    system = _system(_text(2000, "batch"))
    requests = [
        {
            "custom_id": f"q{i}",
            "params": {"model": SONNET, "max_tokens": 20, "system": system, "messages": [{"role": "user", "content": f"Q{i}?"}]},
        }
        for i in range(5)
    ]  # fmt: skip
    batch = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    deadline = time.monotonic() + 10
    while client.messages.batches.retrieve(batch.id).processing_status != "ended":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    usages = [r.result.message.usage for r in client.messages.batches.results(batch.id)]  # type: ignore[union-attr]
    writes = [u.cache_creation_input_tokens for u in usages if u.cache_creation_input_tokens]
    reads = [u.cache_read_input_tokens for u in usages if u.cache_read_input_tokens]
    assert len(writes) == 1 and len(reads) == 4 and set(reads) == set(writes)
    with urllib.request.urlopen(sim.url + "/_sim/batches", timeout=10) as response:
        [truth] = [json.loads(line) for line in response.read().splitlines()]
    assert truth["cache"] == {
        "read_tokens": sum(reads),
        "write_5m_tokens": writes[0],
        "write_1h_tokens": 0,
        "hits": 4,
    }
    live = _ask(client, "Live?", model=SONNET, system=system)  # the batch's entry serves live calls too
    assert _usage(live)[1] == writes[0]


# -- timing: a noise-free profile at time scale 1 ------------------------------------------------------

TIMED_PROFILE = """
[defaults]
ttft_median_s = 0.05
ttft_sigma = 0.0
ttft_per_1k_input_s = 0.06
speed_median_tps = 2000.0
speed_sigma = 0.0
gap_sigma = 0.0
verbosity = 0.5
verbosity_sigma = 0.0
answer_tokens_max = 20
max_tokens = 64000
max_input_tokens = 200000
cache_min_tokens = 1024

[models."claude-sonnet-4-6"]
"""


@pytest.fixture(scope="module")
def timed_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProc]:
    profile = tmp_path_factory.mktemp("profile") / "cache.toml"
    profile.write_text(TIMED_PROFILE)
    sim = start_simulator("--profile", str(profile), "--time-scale", "1", "--seed", "2")
    yield sim
    sim.stop()


@pytest.fixture
def timed(timed_module: SimProc) -> SimProc:
    timed_module.reset()
    return timed_module


def _first_token_s(client: anthropic.Anthropic, question: str) -> float:
    sent = time.perf_counter()
    with client.messages.stream(
        model=SONNET, max_tokens=20, system=_system(), messages=[{"role": "user", "content": question}]
    ) as stream:
        for event in stream:
            if event.type == "content_block_delta":
                return time.perf_counter() - sent
    raise AssertionError("no content")


def test_a_cached_prompt_starts_sooner(timed: SimProc) -> None:
    with anthropic.Anthropic(api_key=KEY, base_url=timed.url, max_retries=0) as client:
        uncached = _first_token_s(client, "First question?")
        cached = _first_token_s(client, "Second question?")
    write, read = timed.requests()
    assert (write["cache_hit"], read["cache_hit"]) == (False, True)
    assert read["intended_ttft_s"] < write["intended_ttft_s"]  # 0.05 + 0.06/1k of 5,000 vs of 500
    assert read["sent_ttft_s"] < write["sent_ttft_s"]
    assert cached < uncached


async def test_concurrent_requests_before_the_first_token_all_write(timed: SimProc) -> None:
    client = anthropic.AsyncAnthropic(api_key=KEY, base_url=timed.url, max_retries=0)

    async def ask(i: int) -> anthropic.types.Message:
        return await client.messages.create(
            model=SONNET, max_tokens=20, system=_system(), messages=[{"role": "user", "content": f"Q{i}?"}]
        )

    try:
        answers = await asyncio.gather(*(ask(i) for i in range(50)))
        after = await ask(50)
    finally:
        await client.close()
    truth = timed.requests()
    by_id = {r["request_id"]: r for r in truth}
    for message in answers:
        assert message._request_id is not None
        _agrees(message, by_id[message._request_id])
    writes = sum(1 for m in answers if m.usage.cache_creation_input_tokens)
    reads = sum(1 for m in answers if m.usage.cache_read_input_tokens)
    # The first token of an uncached 5,000-token prompt is due after 0.35 s: requests that arrive
    # before it cannot read the entry, so they all pay the write.
    assert writes + reads == 50 and writes >= 10
    assert _usage(after)[1] > 5000 and _usage(after)[2] == 0
