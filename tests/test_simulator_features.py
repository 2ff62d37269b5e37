"""Claude's request features on the wire: thinking, tool use, web search, refusals, final usage,
their validation errors and ground truth, against the simulator process over real sockets,
read by the unchanged SDK and, where the wire itself matters, as raw SSE bytes."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import aiohttp
import anthropic
import pytest

from tests.helpers import timed_profile
from tests.simproc import SimProc, start_simulator

KEY = "sk-test-not-a-real-key"
MODEL = "claude-sonnet-4-6"  # thinking "enabled" is allowed (no SDK warning) and it is not deprecated
HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01", "content-type": "application/json"}
WEATHER = {
    "name": "get_weather",
    "description": "Current weather at a place.",
    "input_schema": {
        "type": "object",
        "properties": {
            "location": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer"},
            "detail": {
                "type": "object",
                "properties": {"hourly": {"type": "boolean"}},
                "required": ["hourly"],
            },
            "ignored": {"type": "string"},
        },
        "required": ["location", "unit", "days", "detail"],
    },
}
CLOCK = {"name": "get_time", "description": "The time.", "input_schema": {"type": "object", "properties": {}}}
SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}


@pytest.fixture(scope="module")
def sim_module() -> Iterator[SimProc]:
    sim = start_simulator("--time-scale", "0.05", "--seed", "11")
    yield sim
    sim.stop()


@pytest.fixture
def sim(sim_module: SimProc) -> SimProc:
    sim_module.reset()
    return sim_module


@pytest.fixture(scope="module")
def instant_module() -> Iterator[SimProc]:
    sim = start_simulator("--time-scale", "0", "--seed", "11")
    yield sim
    sim.stop()


@pytest.fixture
def instant(instant_module: SimProc) -> SimProc:
    """No delays at all: for tests that count tokens and check shapes, not time."""
    instant_module.reset()
    return instant_module


def _client(sim: SimProc, **kwargs: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=KEY, base_url=sim.url, max_retries=0, **kwargs)


def _user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def _post(sim: SimProc, body: dict[str, Any]) -> tuple[int, bytes]:
    request = urllib.request.Request(
        sim.url + "/v1/messages", data=json.dumps(body).encode(), method="POST", headers=HEADERS
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of every SSE event, checking the name equals the data's type."""
    out = []
    for chunk in raw.decode().split("\n\n"):
        if not chunk.strip():
            continue
        lines = dict(line.split(": ", 1) for line in chunk.split("\n"))
        data = json.loads(lines["data"])
        assert lines["event"] == data["type"]
        out.append((lines["event"], data))
    return out


def _stream_events(sim: SimProc, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    status, raw = _post(sim, {**body, "stream": True})
    assert status == 200, raw
    return _events(raw)


def _content(blocks: list[Any]) -> list[dict[str, Any]]:
    """Blocks as dicts, whether the SDK built them from a stream (Parsed*) or a whole reply."""
    return [{k: v for k, v in b.to_dict().items() if k != "parsed_output"} for b in blocks]


def _deltas(events: list[tuple[str, dict[str, Any]]], kind: str) -> list[dict[str, Any]]:
    return [d["delta"] for e, d in events if e == "content_block_delta" and d["delta"]["type"] == kind]


# -- extended thinking ---------------------------------------------------------------------------


def test_thinking_stream_parsed_by_the_sdk_and_counted_in_output_tokens(sim: SimProc) -> None:
    ask = {
        "model": MODEL,
        "max_tokens": 2300,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "messages": _user("Why is the sky blue?"),
    }
    with _client(sim) as client:
        kinds: list[str] = []
        with client.messages.stream(**ask) as stream:
            for event in stream:
                if event.type == "content_block_delta":
                    kinds.append(event.delta.type)
            final = stream.get_final_message()
        whole = client.messages.create(**ask)
    thinking, text = final.content
    assert thinking.type == "thinking" and text.type == "text"
    assert thinking.thinking and len(thinking.signature) > 100 and text.text
    first_text = kinds.index("text_delta")
    assert set(kinds[: first_text - 1]) == {"thinking_delta"} and kinds[first_text - 1] == "signature_delta"
    assert kinds.count("signature_delta") == 1 and set(kinds[first_text:]) == {"text_delta"}
    thought = kinds.count("thinking_delta")
    usage = final.usage
    assert usage.output_tokens_details is not None and usage.output_tokens_details.thinking_tokens == thought
    assert 0.35 * 2048 <= thought <= 0.85 * 2048
    assert usage.output_tokens == thought + kinds.count("text_delta")
    assert _content(whole.content) == _content(final.content)  # same thinking, signature, text
    assert whole.usage.output_tokens == usage.output_tokens
    assert whole.usage.output_tokens_details == usage.output_tokens_details
    streamed, unstreamed = sim.requests()
    assert streamed["thinking_tokens"] == unstreamed["thinking_tokens"] == thought
    assert streamed["output_tokens"] == usage.output_tokens
    assert streamed["sent_first_thinking_s"] == streamed["sent_ttft_s"] < streamed["sent_first_text_s"]
    assert unstreamed["sent_first_text_s"] is None and unstreamed["sent_first_thinking_s"] is None


def test_thinking_grows_with_budget_and_adaptive_with_effort(instant: SimProc) -> None:
    def thought(**extra: Any) -> int:
        body = {"model": MODEL, "max_tokens": 20000, "messages": _user("Plan a garden."), **extra}
        status, raw = _post(instant, body)
        assert status == 200, raw
        return json.loads(raw)["usage"]["output_tokens_details"]["thinking_tokens"]

    small = thought(thinking={"type": "enabled", "budget_tokens": 1024})
    large = thought(thinking={"type": "enabled", "budget_tokens": 16000})
    assert small <= 0.85 * 1024 < 0.35 * 16000 <= large
    low = thought(thinking={"type": "adaptive"}, output_config={"effort": "low"})
    high = thought(thinking={"type": "adaptive"}, output_config={"effort": "max"})
    assert 0 < low < high
    assert thought(thinking={"type": "adaptive"}) == thought(thinking={"type": "adaptive"})  # deterministic


def test_omitted_thinking_sends_only_the_signature(sim: SimProc) -> None:
    events = _stream_events(
        sim,
        {
            "model": MODEL,
            "max_tokens": 1300,
            "thinking": {"type": "enabled", "budget_tokens": 1024, "display": "omitted"},
            "messages": _user("Think quietly."),
        },
    )
    assert not _deltas(events, "thinking_delta") and len(_deltas(events, "signature_delta")) == 1
    usage = events[-2][1]["usage"]
    assert usage["output_tokens_details"]["thinking_tokens"] > 300
    assert usage["output_tokens"] == usage["output_tokens_details"]["thinking_tokens"] + len(
        _deltas(events, "text_delta")
    )
    [truth] = sim.requests()
    assert truth["sent_first_thinking_s"] is None and truth["sent_first_text_s"] > truth["sent_ttft_s"]


# -- time to first text --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def timed_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProc]:
    profile = timed_profile(
        tmp_path_factory.mktemp("profile") / "thinking.toml",
        answer_tokens_max=50,
        thinking_tps={"claude-sonnet-4-6": 4000.0, "claude-haiku-4-5": 1000.0},
    )
    sim = start_simulator("--profile", str(profile), "--time-scale", "1", "--seed", "2")
    yield sim
    sim.stop()


async def _time_to_first_text(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> float:
    """Send → the first text_delta, reading the raw stream."""
    sent = time.perf_counter()
    async with session.post(url + "/v1/messages", json={**body, "stream": True}, headers=HEADERS) as response:
        assert response.status == 200
        first = None
        async for line in response.content:
            if first is None and b'"text_delta"' in line:
                first = time.perf_counter() - sent
        assert first is not None
        return first


async def test_time_to_first_text_grows_with_the_thinking_budget(timed_sim: SimProc) -> None:
    timed_sim.reset()

    def body(budget: int, model: str = MODEL) -> dict[str, Any]:
        thinking = {"type": "enabled", "budget_tokens": budget}
        return {"model": model, "max_tokens": 12000, "thinking": thinking, "messages": _user("Count stars.")}

    async with aiohttp.ClientSession() as session:
        small = await _time_to_first_text(session, timed_sim.url, body(1024))
        large = await _time_to_first_text(session, timed_sim.url, body(8192))
        slow = await _time_to_first_text(session, timed_sim.url, body(1024, "claude-haiku-4-5"))
    t_small, t_large, t_slow = timed_sim.requests()
    # 1,024 → at most 871 thinking tokens (≤ 0.27 s); 8,192 → at least 2,868 (≥ 0.76 s) at 4,000/s.
    assert t_small["thinking_tokens"] <= 871 < 2868 <= t_large["thinking_tokens"]
    assert large > small + 0.3, (small, large)
    assert t_large["sent_first_text_s"] > t_small["sent_first_text_s"] + 0.3
    for measured, truth in ((small, t_small), (large, t_large)):
        assert truth["sent_first_text_s"] >= truth["intended_first_text_s"] - 1e-4
        assert measured >= truth["sent_first_text_s"] - 0.005  # the client cannot see it before it left
    # The thinking speed is the profile's: 1,000/s on haiku, 4,000/s on sonnet (intended, so exact).
    per_token = {
        t["model"]: (t["intended_first_text_s"] - t["intended_ttft_s"]) / t["thinking_tokens"]
        for t in (t_small, t_slow)
    }
    assert per_token["claude-haiku-4-5"] == pytest.approx(1 / 1000, rel=0.02)
    assert per_token[MODEL] == pytest.approx(1 / 4000, rel=0.02)
    assert slow > t_slow["thinking_tokens"] / 1000


# -- tool use ------------------------------------------------------------------------------------


@pytest.mark.parametrize("choice", [{"type": "tool", "name": "get_weather"}, {"type": "any"}])
def test_forced_tool_use_streams_input_json_the_sdk_assembles(sim: SimProc, choice: dict[str, Any]) -> None:
    ask = {
        "model": MODEL,
        "max_tokens": 500,
        "tools": [CLOCK, WEATHER] if choice["type"] == "tool" else [WEATHER],
        "tool_choice": choice,
        "messages": _user("How warm is it in Lisbon this week?"),
    }
    with _client(sim) as client:
        partial: list[str] = []
        with client.messages.stream(**ask) as stream:
            for event in stream:
                if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                    partial.append(event.delta.partial_json)
            final = stream.get_final_message()
        whole = client.messages.create(**ask)
    [call] = final.content  # a forced call comes without a text preamble
    assert call.type == "tool_use" and call.name == "get_weather" and call.id.startswith("toolu_01")
    assert partial[0] == "" and len(partial) > 3
    assert json.loads("".join(partial)) == call.input
    assert call.input["location"] == "Lisbon" and call.input["unit"] == "celsius"
    assert isinstance(call.input["days"], int) and isinstance(call.input["detail"]["hourly"], bool)
    assert "ignored" not in call.input  # only the required properties
    assert final.stop_reason == "tool_use" and final.usage.output_tokens == len(partial) - 1
    assert _content(whole.content) == _content(final.content) and whole.stop_reason == "tool_use"
    truth = sim.requests()
    assert [t["tool_calls"] for t in truth] == [["get_weather"], ["get_weather"]]


def test_auto_calls_a_mentioned_tool_and_none_never_calls(instant: SimProc) -> None:
    tools = [CLOCK, WEATHER]
    with _client(instant) as client:
        mentioned = client.messages.create(
            model=MODEL, max_tokens=300, tools=tools, messages=_user("Please call get_time for me.")
        )
        unmentioned = [
            client.messages.create(
                model=MODEL, max_tokens=300, tools=tools, messages=_user(f"Tell me a tale {i}.")
            )
            for i in range(5)
        ]
        never = [
            client.messages.create(
                model=MODEL,
                max_tokens=300,
                tools=tools,
                tool_choice={"type": "none"},
                messages=_user(f"Call get_weather and get_time now, {i}."),
            )
            for i in range(5)
        ]
    preamble, call = mentioned.content
    assert preamble.type == "text" and "get_time" in preamble.text
    assert call.type == "tool_use" and call.name == "get_time" and call.input == {}
    assert mentioned.stop_reason == "tool_use"
    for reply in unmentioned + never:
        assert [b.type for b in reply.content] == ["text"] and reply.stop_reason in ("end_turn", "max_tokens")
    assert [t["tool_calls"] for t in instant.requests()] == [["get_time"]] + [[]] * 10


def test_max_tokens_can_end_a_reply_inside_the_tool_input(sim: SimProc) -> None:
    ask = {
        "model": MODEL,
        "max_tokens": 3,
        "tools": [WEATHER],
        "tool_choice": {"type": "any"},
        "messages": _user("Weather in Oslo?"),
    }
    events = _stream_events(sim, ask)
    chunks = [d["partial_json"] for d in _deltas(events, "input_json_delta")]
    assert len(chunks) == 4 and chunks[0] == ""  # the opening empty delta, then 3 tokens
    with pytest.raises(ValueError):
        json.loads("".join(chunks))
    assert (
        events[-2][1]["delta"]["stop_reason"] == "max_tokens" and events[-2][1]["usage"]["output_tokens"] == 3
    )
    status, raw = _post(sim, ask)
    reply = json.loads(raw)
    assert status == 200 and reply["stop_reason"] == "max_tokens" and reply["content"][0]["input"] == {}


def test_thinking_comes_before_the_tool_call(sim: SimProc) -> None:
    events = _stream_events(
        sim,
        {
            "model": MODEL,
            "max_tokens": 1100,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "tools": [WEATHER],
            "messages": _user("Use get_weather for Rome."),
        },
    )
    starts = [d["content_block"]["type"] for e, d in events if e == "content_block_start"]
    assert starts == ["thinking", "text", "tool_use"]
    indexes = [d["index"] for e, d in events if e == "content_block_start"]
    stops = [d["index"] for e, d in events if e == "content_block_stop"]
    assert indexes == stops == [0, 1, 2]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    [truth] = sim.requests()
    assert truth["tool_calls"] == ["get_weather"] and truth["thinking_tokens"] > 0


# -- web search ----------------------------------------------------------------------------------


def test_web_search_blocks_and_usage_read_by_the_sdk(sim: SimProc) -> None:
    with _client(sim) as client:
        with client.messages.stream(
            model=MODEL, max_tokens=400, tools=[SEARCH], messages=_user("Search the latest Mars rover news.")
        ) as stream:
            final = stream.get_final_message()
        once = client.messages.create(
            model=MODEL,
            max_tokens=400,
            tools=[{**SEARCH, "max_uses": 1}],
            messages=_user("Search the latest Mars rover news."),
        )
        plain = client.messages.create(
            model=MODEL, max_tokens=400, tools=[SEARCH], messages=_user("Write a poem about rain.")
        )
    kinds = [b.type for b in final.content]
    searches = kinds.count("web_search_tool_result")
    assert kinds[0] == "text" and kinds[-1] == "text" and searches >= 1
    assert kinds[1:-1] == ["server_tool_use", "web_search_tool_result"] * searches
    for use, found in zip(final.content[1:-1:2], final.content[2:-1:2], strict=True):
        assert use.name == "web_search" and use.id.startswith("srvtoolu_01") and "Mars" in use.input["query"]
        assert found.tool_use_id == use.id and len(found.content) >= 3
        assert all(r.url.startswith("https://") and r.title and r.encrypted_content for r in found.content)
    assert final.usage.server_tool_use is not None
    assert final.usage.server_tool_use.web_search_requests == searches
    assert once.usage.server_tool_use is not None and once.usage.server_tool_use.web_search_requests == 1
    assert plain.usage.server_tool_use is not None and plain.usage.server_tool_use.web_search_requests == 0
    assert [b.type for b in plain.content] == ["text"]
    truth = sim.requests()
    assert [t["web_search_requests"] for t in truth] == [searches, 1, 0]
    assert truth[0]["input_tokens"] == final.usage.input_tokens  # the final, cumulative count


def test_web_search_results_add_input_tokens_in_the_final_usage(sim: SimProc) -> None:
    events = _stream_events(
        sim, {"model": MODEL, "max_tokens": 300, "tools": [SEARCH], "messages": _user("search: tide tables")}
    )
    start = events[0][1]["message"]["usage"]
    final = events[-2][1]["usage"]
    assert final["input_tokens"] > start["input_tokens"] + 1000
    assert (
        final["server_tool_use"]["web_search_requests"] >= 1
        and final["server_tool_use"]["web_fetch_requests"] == 0
    )
    result = next(
        d
        for e, d in events
        if e == "content_block_start" and d["content_block"]["type"] == "web_search_tool_result"
    )
    later = [e for e, d in events if d.get("index") == result["index"]]
    assert later == ["content_block_start", "content_block_stop"]  # the results arrive whole, no deltas


# -- refusals ------------------------------------------------------------------------------------


def test_refusal_marker_and_the_documented_magic_string(sim: SimProc) -> None:
    magic = "ANTHROPIC_MAGIC_STRING_TRIGGER_REFUSAL_1FAEFB6177B4672DEE07F9D3AFC62588CCD2631EDCF22E8CCC1FB35B501C9C86"
    bare = _stream_events(sim, {"model": MODEL, "max_tokens": 200, "messages": _user("Hi [[refuse]]")})
    assert bare[0][1]["message"]["usage"]["output_tokens"] == 1
    assert [e for e, _ in bare] == ["message_start", "ping", "message_delta", "message_stop"]
    delta = bare[-2][1]
    assert delta["delta"]["stop_reason"] == "refusal" and delta["delta"]["stop_details"]["type"] == "refusal"
    assert delta["usage"]["output_tokens"] == 0
    with _client(sim) as client:
        with client.messages.stream(
            model=MODEL, max_tokens=200, messages=_user("Go on [[refuse:4]]")
        ) as stream:
            partial = stream.get_final_message()
        official = client.messages.create(model=MODEL, max_tokens=200, messages=_user(magic))
        fine = client.messages.create(model=MODEL, max_tokens=200, messages=_user("[[refuse later]]"))
    assert partial.stop_reason == "refusal" and partial.usage.output_tokens == 4
    assert partial.stop_details is not None and partial.stop_details.type == "refusal"
    assert [b.type for b in partial.content] == ["text"] and partial.content[0].text
    assert official.stop_reason == "refusal" and official.content == [] and official.usage.output_tokens == 0
    assert fine.stop_reason != "refusal"
    assert [t["refused"] for t in sim.requests()] == [True, True, True, False]


# -- final usage on the wire ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "keys"),
    [
        ({}, set()),
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, {"output_tokens_details"}),
        ({"tools": [SEARCH], "messages": _user("search the news")}, {"server_tool_use"}),
    ],
)
async def test_final_message_delta_repeats_input_and_cache_counts(
    sim: SimProc, extra: dict[str, Any], keys: set[str]
) -> None:
    body = {"model": MODEL, "max_tokens": 1200, "stream": True, "messages": _user("Hello there."), **extra}
    async with (
        aiohttp.ClientSession() as session,
        session.post(sim.url + "/v1/messages", json=body, headers=HEADERS) as response,
    ):
        raw = await response.read()
    events = _events(raw)
    start = events[0][1]["message"]["usage"]
    assert start["output_tokens"] == 1
    assert [e for e, _ in events[-2:]] == ["message_delta", "message_stop"]
    final = events[-2][1]["usage"]
    base = {"input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens"}
    assert set(final) == base | keys
    assert final["cache_creation_input_tokens"] == final["cache_read_input_tokens"] == 0
    deltas = [d for e, d in events if e == "content_block_delta" and d["delta"]["type"] != "signature_delta"]
    assert final["output_tokens"] == len([d for d in deltas if d["delta"].get("partial_json", "x")])
    if "server_tool_use" not in keys:
        assert final["input_tokens"] == start["input_tokens"]
    [truth] = sim.requests()
    assert truth["input_tokens"] == final["input_tokens"] and truth["output_tokens"] == final["output_tokens"]


# -- validation ----------------------------------------------------------------------------------

THINK = {"type": "enabled", "budget_tokens": 2048}
BAD = [
    ({"thinking": {"type": "enabled", "budget_tokens": 512}}, "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"),
    ({"thinking": THINK, "max_tokens": 2048}, "`max_tokens` must be greater than `thinking.budget_tokens`."),
    ({"thinking": THINK, "tools": [WEATHER], "tool_choice": {"type": "any"}}, "Thinking may not be enabled when tool_choice forces tool use."),
    ({"thinking": {"type": "adaptive"}, "tools": [WEATHER], "tool_choice": {"type": "tool", "name": "get_weather"}}, "Thinking may not be enabled when tool_choice forces tool use."),
    ({"thinking": THINK, "temperature": 0.5}, "`temperature` may only be set to 1 when thinking is enabled or in adaptive mode."),
    ({"thinking": {"type": "adaptive"}, "temperature": 0}, "`temperature` may only be set to 1 when thinking is enabled or in adaptive mode."),
    ({"thinking": THINK, "top_k": 5}, "`top_k` must be unset when thinking is enabled or in adaptive mode"),
    ({"thinking": THINK, "top_p": 0.5}, "`top_p` must be greater than or equal to 0.95 or unset when thinking is enabled"),
    ({"tools": [WEATHER], "tool_choice": {"type": "tool", "name": "nope"}}, "tool_choice.name: Tool 'nope' not found in tools"),
    ({"tools": [WEATHER, {**CLOCK, "name": "get_weather"}]}, "tools: Tool names must be unique."),
    ({"tool_choice": {"type": "any"}}, "tool_choice may only be specified while providing tools."),
    ({"tools": [{**CLOCK, "name": "get time"}]}, "tools.0.custom.name: String should match pattern '^[a-zA-Z0-9_-]{1,128}$'"),
    ({"tools": [{**SEARCH, "name": "search"}]}, "tools.0.web_search_20250305.name: Input should be 'web_search'"),
]  # fmt: skip


@pytest.mark.parametrize(("extra", "message"), BAD)
def test_validation_errors_are_the_api_s_400s(instant: SimProc, extra: dict[str, Any], message: str) -> None:
    body = {"model": MODEL, "max_tokens": 4096, "messages": _user("hello"), **extra}
    status, raw = _post(instant, body)
    error = json.loads(raw)
    assert status == 400 and error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert error["error"]["message"].startswith(message)
    sampling = {k: body.pop(k) for k in ("temperature", "top_k", "top_p") if k in body}
    with _client(instant) as client, pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(**body, extra_body=sampling or None)
    assert caught.value.status_code == 400 and message in str(caught.value)
    assert [t["status"] for t in instant.requests()] == [400, 400]


def test_what_thinking_allows_is_accepted(instant: SimProc) -> None:
    with _client(instant) as client:
        reply = client.messages.create(
            model=MODEL,
            max_tokens=3000,
            thinking=THINK,
            tools=[WEATHER],
            tool_choice={"type": "auto"},
            messages=_user("hello"),
            extra_body={"temperature": 1, "top_p": 0.95},
        )
    assert reply.content[0].type == "thinking" and reply.stop_reason in ("end_turn", "max_tokens")


def test_count_tokens_takes_tools_and_thinking(instant: SimProc) -> None:
    ask = {
        "model": MODEL,
        "messages": _user("Use get_weather for Quito."),
        "tools": [WEATHER, CLOCK],
        "tool_choice": {"type": "auto"},
        "thinking": THINK,
    }
    with _client(instant) as client:
        counted = client.messages.count_tokens(**ask)
        reply = client.messages.create(max_tokens=4000, **ask)
    assert counted.input_tokens == reply.usage.input_tokens > len(json.dumps([WEATHER, CLOCK])) // 5


# -- the SDK's strict validation and faults ------------------------------------------------------


def test_every_new_shape_passes_the_sdk_strict_validation(instant: SimProc) -> None:
    asks = [
        {"thinking": THINK},
        {"thinking": {"type": "adaptive"}, "tools": [WEATHER], "messages": _user("get_weather in Bern")},
        {"tools": [WEATHER], "tool_choice": {"type": "any"}},
        {"tools": [SEARCH], "messages": _user("search for ferries")},
        {"messages": _user("[[refuse:2]]")},
        {"messages": _user("[[refuse]]")},
    ]
    with _client(instant, _strict_response_validation=True) as client:
        for extra in asks:
            ask = {"model": MODEL, "max_tokens": 3000, "messages": _user("hello"), **extra}
            whole = client.messages.create(**ask)
            with client.messages.stream(**ask) as stream:
                final = stream.get_final_message()
            assert [b.type for b in final.content] == [b.type for b in whole.content]
            assert final.stop_reason == whole.stop_reason and final.usage == whole.usage


def test_a_fault_inside_a_thinking_stream_records_the_tokens_sent(sim: SimProc) -> None:
    sim.set_faults({"midstream_error": 1.0})
    status, raw = _post(
        sim,
        {
            "model": MODEL,
            "max_tokens": 1500,
            "stream": True,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "tools": [SEARCH],
            "messages": _user("search the tides"),
        },
    )
    events = _events(raw)
    assert status == 200 and events[-1][0] == "error"
    sent = [d for e, d in events if e == "content_block_delta" and d["delta"]["type"] != "signature_delta"]
    sent = [d for d in sent if d["delta"].get("partial_json", "x")]
    [truth] = sim.requests()
    assert truth["fault"] == "midstream_error" and truth["fault_after_tokens"] == truth[
        "output_tokens"
    ] == len(sent)


def test_plain_requests_keep_their_one_block_shape(sim: SimProc) -> None:
    events = _stream_events(sim, {"model": MODEL, "max_tokens": 50, "messages": _user("plain")})
    names = [e for e, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert {d["index"] for e, d in events if "index" in d} == {0}
    [truth] = sim.requests()
    assert truth["thinking_tokens"] == 0 and truth["tool_calls"] == [] and truth["refused"] is False
    assert truth["sent_first_text_s"] == truth["sent_ttft_s"] and truth["sent_first_thinking_s"] is None
