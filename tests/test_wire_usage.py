"""Usage and stream handling on the wire: the final usage wins (an explicit 0 too), cache writes by TTL,
server-tool counts and their prices, every stop reason, retryable `error` events after the 200, and a
stream whose last event has no blank line.

The wire cases use a tiny aiohttp server in a thread (real sockets, the real SDK under
`harness.client.ClaudeClient`, the real runner and price table): it answers with the exact
bytes each case needs, which the simulator does not send. Prices are checked against
`genai_prices.calc_price` for the same usage.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.client import Attempt, ClaudeClient
from harness.pricing import PriceTable
from harness.records import CallRecord, Case, PlannedCall
from harness.usage import apply_usage, merge_usage
from tests.helpers import genai_total_usd, make_runner

MODEL = "claude-haiku-4-5"
KEY = "sk-test-not-a-real-key"


# -- the merge rule, over generated usage objects ------------------------------------------------

_LEAF = st.one_of(st.none(), st.integers(0, 10**6), st.sampled_from(["standard", "priority", "us"]))
_NESTED = st.dictionaries(
    st.sampled_from(["ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens", "web_search_requests"]),
    _LEAF,
    max_size=3,
)
_USAGE = st.dictionaries(
    st.sampled_from(
        [
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "cache_creation",
            "server_tool_use",
            "output_tokens_details",
            "service_tier",
        ]
    ),
    st.one_of(_LEAF, _NESTED),
    max_size=8,
)


def _assert_rule(start: Mapping[str, Any], final: Mapping[str, Any], merged: Mapping[str, Any]) -> None:
    assert set(merged) <= set(start) | set(final)
    for key in set(start) | set(final):
        new, old = final.get(key), start.get(key)
        if new is None:  # absent (or null, as the SDK reads it): the start value stays
            assert merged.get(key, "absent") == start.get(key, "absent"), key
        elif isinstance(new, Mapping) and isinstance(old, Mapping):
            _assert_rule(old, new, merged[key])
        else:  # present: replaces, an explicit 0 included
            assert merged[key] == new, key


@settings(max_examples=400, deadline=None)
@given(start=_USAGE, final=_USAGE)
def test_final_usage_replaces_field_by_field_and_keeps_absent_fields(start, final):
    frozen = json.dumps([start, final], sort_keys=True)
    merged = merge_usage(start, final)
    _assert_rule(start, final, merged)
    assert json.dumps([start, final], sort_keys=True) == frozen, "inputs left untouched"
    a = Attempt()
    apply_usage(a, merged)
    expected_read = merged.get("cache_read_input_tokens")
    assert a.cache_read_input_tokens == (expected_read if isinstance(expected_read, int) else 0)
    assert 0 <= a.cache_creation_1h_input_tokens <= a.cache_creation_input_tokens


def test_an_explicit_zero_wins_and_absent_nested_fields_keep_their_start():
    start = {
        "input_tokens": 2479,
        "output_tokens": 1,
        "cache_read_input_tokens": 55096,
        "cache_creation_input_tokens": 5000,
        "cache_creation": {"ephemeral_5m_input_tokens": 2000, "ephemeral_1h_input_tokens": 3000},
        "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 1},
    }
    final = {
        "input_tokens": 404500,
        "output_tokens": 0,
        "cache_read_input_tokens": 0,
        "server_tool_use": {"web_search_requests": 10},
    }
    merged = merge_usage(start, final)
    a = Attempt()
    apply_usage(a, merged)
    assert (a.input_tokens, a.output_tokens, a.cache_read_input_tokens) == (404500, 0, 0)
    assert (a.cache_creation_input_tokens, a.cache_creation_1h_input_tokens) == (5000, 3000)
    assert (a.web_search_requests, a.web_fetch_requests) == (10, 1)
    assert a.thinking_tokens is None and a.service_tier is None


def test_the_one_hour_part_never_exceeds_the_total_of_writes():
    a = Attempt()
    apply_usage(a, {"cache_creation_input_tokens": 100, "cache_creation": {"ephemeral_1h_input_tokens": 900}})
    assert (a.cache_creation_input_tokens, a.cache_creation_1h_input_tokens) == (100, 100)


# -- a tiny server with hand-made wire bytes -------------------------------------------------------


def _event(data: dict[str, Any]) -> bytes:
    return b"event: " + data["type"].encode() + b"\ndata: " + json.dumps(data).encode() + b"\n\n"


def _start(usage: dict[str, Any]) -> dict[str, Any]:
    message = {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }
    return {"type": "message_start", "message": message}


def _text(text: str, index: int = 0) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}


def _stream(
    start_usage: dict[str, Any],
    final_usage: dict[str, Any],
    *,
    stop_reason: str = "end_turn",
    words: tuple[str, ...] = ("Hello", " there."),
) -> list[dict[str, Any]]:
    events = [_start(start_usage)]
    if words:
        events.append(
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
        )
        events += [_text(w) for w in words]
        events.append({"type": "content_block_stop", "index": 0})
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": final_usage,
        }
    )
    events.append({"type": "message_stop"})
    return events


def _whole(usage: dict[str, Any], stop_reason: str, words: tuple[str, ...]) -> dict[str, Any]:
    message = _start(usage)["message"]
    content = [{"type": "text", "text": "".join(words)}] if words else []
    return {**message, "content": content, "stop_reason": stop_reason}


# -- the reader over any chunking: thinking, server tools, tool inputs ------------------------------


def _delta(index: int, delta: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": delta}


def _block(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def _stop(index: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


_TOOL_JSON = '{"city": "S\\u00e3o \\"Paulo\\"", "days": [1, 2], "hourly": true}'
FEATURE_STREAM = [
    _start({"input_tokens": 30, "output_tokens": 1}),
    _block(0, {"type": "thinking", "thinking": "", "signature": ""}),
    _delta(0, {"type": "thinking_delta", "thinking": "Let me think"}),
    _delta(0, {"type": "signature_delta", "signature": "c2ln"}),
    _stop(0),
    _block(1, {"type": "text", "text": ""}),
    _text("Checking.", 1),
    _stop(1),
    _block(2, {"type": "server_tool_use", "id": "srvtoolu_01", "name": "web_search", "input": {}}),
    _delta(2, {"type": "input_json_delta", "partial_json": '{"query": "weather"}'}),
    _stop(2),
    _block(3, {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_01", "content": []}),
    _stop(3),
    _block(4, {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {}}),
    *[
        _delta(4, {"type": "input_json_delta", "partial_json": _TOOL_JSON[i : i + 5]})
        for i in range(0, len(_TOOL_JSON), 5)
    ],
    _stop(4),
    _block(5, {"type": "tool_use", "id": "toolu_02", "name": "get_time", "input": {}}),
    _delta(5, {"type": "input_json_delta", "partial_json": ""}),
    _stop(5),
    _block(6, {"type": "tool_use", "id": "toolu_03", "name": "get_news", "input": {}}),
    _delta(6, {"type": "input_json_delta", "partial_json": '{"topic": "ra'}),  # max_tokens cut it here
    _stop(6),
    {
        "type": "message_delta",
        "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
        "usage": {"output_tokens": 40, "server_tool_use": {"web_search_requests": 1}},
    },
    {"type": "message_stop"},
]


class _Chunks:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def aiter_bytes(self) -> Any:
        for chunk in self.chunks:
            yield chunk


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(0, 100_000), max_size=16), crlf=st.booleans(), bare_end=st.booleans())
async def test_tool_calls_text_and_marks_from_any_chunking(cuts, crlf, bare_end):
    wire = b"".join(_event(e) for e in FEATURE_STREAM)
    if bare_end:
        wire = wire[:-2]
    if crlf:
        wire = wire.replace(b"\n", b"\r\n")
    points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
    chunks = [wire[a:b] for a, b in itertools.pairwise(points) if b > a]
    a = Attempt(sent_ns=1)
    await ClaudeClient._read_stream(_Chunks(chunks), a)  # type: ignore[arg-type]
    assert a.ok, a.error_message
    assert a.text == "Checking." and a.stop_reason == "max_tokens"
    assert a.tool_calls == [
        {"name": "get_weather", "input": {"city": 'São "Paulo"', "days": [1, 2], "hourly": True}},
        {"name": "get_time", "input": {}},
        {"name": "get_news", "input": None},
    ]
    assert (a.web_search_requests, a.output_tokens, a.input_tokens) == (1, 40, 30)
    assert a.first_token_ns == a.first_thinking_ns is not None
    assert a.first_text_ns is not None and a.first_text_ns >= a.first_thinking_ns


COMPACTION_START = {"input_tokens": 2479, "output_tokens": 1, "cache_read_input_tokens": 55096}
COMPACTION_FINAL = {"input_tokens": 404500, "output_tokens": 9, "cache_read_input_tokens": 0}
SPLIT_USAGE = {
    "input_tokens": 100,
    "output_tokens": 1,
    "cache_creation_input_tokens": 5000,
    "cache_read_input_tokens": 700,
    "cache_creation": {"ephemeral_5m_input_tokens": 2000, "ephemeral_1h_input_tokens": 3000},
    "service_tier": "priority",
    "inference_geo": "us",
}
# The breakdown at message_start only (as recorded streams show); the totals repeated at the end.
SPLIT_FINAL = {
    "input_tokens": 100,
    "output_tokens": 20,
    "cache_creation_input_tokens": 5000,
    "cache_read_input_tokens": 700,
}
PLAIN = {"input_tokens": 12, "output_tokens": 1}
PLAIN_FINAL = {"output_tokens": 7}


def _reply(case: str, attempt: int, stream: bool) -> tuple[bytes, str]:
    """The body for a case named by the prompt (`name` or `name:arg`) and the attempt number."""
    name, _, arg = case.partition(":")
    if name == "compaction":
        start, final, stop, words = COMPACTION_START, COMPACTION_FINAL, "end_turn", ("Hello", " there.")
    elif name == "split":
        start, final, stop, words = SPLIT_USAGE, SPLIT_FINAL, "end_turn", ("Hello", " there.")
    elif name == "refusal":  # no content block; output_tokens 1 at the start, 0 at the end
        start, final, stop, words = PLAIN, {"output_tokens": 0}, "refusal", ()
    elif name == "stop":
        start, final, stop, words = PLAIN, PLAIN_FINAL, arg, ("Hello", " there.")
    else:
        start, final, stop, words = PLAIN, PLAIN_FINAL, "end_turn", ("Hello", " there.")
    if not stream:
        body = _whole(merge_usage(start, final), stop, words)
        return json.dumps(body).encode(), "application/json"
    events = _stream(start, final, stop_reason=stop, words=words)
    wire = b"".join(_event(e) for e in events)
    if name == "eof":
        if arg == "bare":  # the last event's data line without any newline after it
            wire = wire[:-2]
        elif arg == "one-newline":
            wire = wire[:-1]
        elif arg == "torn":  # cut inside the last event's JSON
            wire = wire[:-12]
        elif arg == "no-stop":  # ends after message_delta, itself without its blank line
            wire = b"".join(_event(e) for e in events[:-1])[:-2]
    if name == "error" and attempt == 0:
        error = {"type": "error", "error": {"type": arg, "message": "injected"}}
        wire = b"".join(_event(e) for e in events[:3]) + _event(error)
    return wire, "text/event-stream"


@dataclass
class TinyServer:
    url: str
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    runner: web.AppRunner
    seen: list[tuple[str, int]]


def _serve() -> TinyServer:
    seen: list[tuple[str, int]] = []

    async def messages(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        case = body["messages"][-1]["content"]
        attempt = int(request.headers.get("x-harness-attempt", "0"))
        seen.append((case, attempt))
        data, content_type = _reply(case, attempt, bool(body.get("stream")))
        response = web.StreamResponse(headers={"content-type": content_type, "request-id": "req_tiny"})
        await response.prepare(request)
        await response.write(data)
        await response.write_eof()
        return response

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/v1/messages", messages)
    runner = web.AppRunner(app)
    ready = threading.Event()
    holder: dict[str, Any] = {}

    def main() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        holder["port"] = runner.addresses[0][1]
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=main, name="tiny-anthropic", daemon=True)
    thread.start()
    assert ready.wait(10)
    return TinyServer(f"http://127.0.0.1:{holder['port']}", loop, thread, runner, seen)


@pytest.fixture(scope="module")
def tiny() -> Iterator[TinyServer]:
    server = _serve()
    yield server
    asyncio.run_coroutine_threadsafe(server.runner.cleanup(), server.loop).result(10)
    server.loop.call_soon_threadsafe(server.loop.stop)
    server.thread.join(10)
    server.loop.close()


def _call(case: str) -> PlannedCall:
    return PlannedCall(
        call_id=f"k-{case}",
        case=Case(id=case, messages=({"role": "user", "content": case},), max_tokens=64),
        model=MODEL,
        repeat=0,
        index=0,
    )


async def _attempt(tiny: TinyServer, case: str, *, stream: bool = True) -> Attempt:
    client = ClaudeClient(api_key=KEY, base_url=tiny.url, timeout_s=10.0, tag_requests=True)
    try:
        return await client.call(_call(case), stream=stream, attempt=0)
    finally:
        await client.aclose()


async def _records(
    tiny: TinyServer, cases: list[str], *, stream: bool = True, **settings_kw: Any
) -> list[CallRecord]:
    client = ClaudeClient(api_key=KEY, base_url=tiny.url, timeout_s=10.0, tag_requests=True)
    try:
        runner, sink, _ = make_runner(client, stream=stream, **settings_kw)
        await runner.run([_call(c) for c in cases])
    finally:
        await client.aclose()
    return sorted(sink.records, key=lambda r: cases.index(r.case_id))


def genai_total(record: CallRecord) -> float:
    return genai_total_usd(asdict(record))


@pytest.mark.parametrize("stream", [True, False])
async def test_a_final_zero_replaces_the_start_and_the_cost_follows(tiny, stream):
    [record] = await _records(tiny, ["compaction"], stream=stream)
    assert record.status == "ok", record.error_message
    # message_start said 2,479 input and 55,096 cache reads; the final usage 404,500 and 0.
    assert (record.input_tokens, record.cache_read_input_tokens, record.output_tokens) == (404500, 0, 9)
    assert record.cache_cost_usd == 0.0
    assert record.total_cost_usd == pytest.approx(genai_total(record), rel=1e-9)
    assert record.total_cost_usd == pytest.approx(404500 * 1e-6 + 9 * 5e-6, rel=1e-9)  # Haiku 4.5: $1 / $5


@pytest.mark.parametrize("stream", [True, False])
async def test_cache_writes_by_ttl_are_recorded_and_priced_at_their_rates(tiny, stream):
    [record] = await _records(tiny, ["split"], stream=stream)
    assert record.status == "ok", record.error_message
    assert record.cache_creation_input_tokens == 5000
    assert (record.cache_write_5m_input_tokens, record.cache_write_1h_input_tokens) == (2000, 3000)
    assert (record.service_tier, record.inference_geo) == ("priority", "us")
    assert record.thinking_tokens is None and record.web_search_requests is None
    # Haiku 4.5 input $1/MTok: 5-minute writes 1.25×, 1-hour writes 2×, reads 0.1×.
    assert record.cache_cost_usd == pytest.approx(2000 * 1.25e-6 + 3000 * 2e-6 + 700 * 0.1e-6, rel=1e-9)
    assert record.total_cost_usd == pytest.approx(genai_total(record), rel=1e-9)
    one_ttl = PriceTable.resolve([MODEL]).cost(MODEL, 100, 20, 5000, 700)  # all written at 5 minutes
    assert record.total_cost_usd > one_ttl.total_usd


async def test_a_refusal_whose_output_drops_to_zero_is_ok_and_fails_its_expectation(tiny):
    call = _call("refusal")
    call = replace(call, case=replace(call.case, expected={"regex": ""}))
    client = ClaudeClient(api_key=KEY, base_url=tiny.url, timeout_s=10.0)
    try:
        runner, sink, _ = make_runner(client)
        await runner.run([call])
    finally:
        await client.aclose()
    [record] = sink.records
    assert (record.status, record.stop_reason, record.output_tokens) == ("ok", "refusal", 0)
    assert record.response_text == "" and record.tool_calls is None
    assert record.passed is False  # an empty regex matches any text: only the refusal fails it


STOP_REASONS = [
    "end_turn",
    "max_tokens",
    "stop_sequence",
    "tool_use",
    "pause_turn",
    "refusal",
    "model_context_window_exceeded",
]


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("reason", STOP_REASONS)
async def test_every_stop_reason_is_recorded_as_sent(tiny, reason, stream):
    a = await _attempt(tiny, f"stop:{reason}", stream=stream)
    assert a.ok and a.error_kind is None, a.error_message
    assert a.stop_reason == reason
    assert a.text == "Hello there."


@pytest.mark.parametrize("ending", ["bare", "one-newline"])
async def test_a_complete_stream_without_its_last_blank_line_is_accepted(tiny, ending):
    a = await _attempt(tiny, f"eof:{ending}")
    assert a.ok, a.error_message
    assert (a.text, a.stop_reason, a.output_tokens) == ("Hello there.", "end_turn", 7)


@pytest.mark.parametrize("ending", ["torn", "no-stop"])
async def test_an_incomplete_stream_at_eof_is_still_truncated(tiny, ending):
    a = await _attempt(tiny, f"eof:{ending}")
    assert not a.ok and a.error_kind == "stream_truncated"


@pytest.mark.parametrize(
    ("error_type", "kind"),
    [("overloaded_error", "overloaded"), ("api_error", "server_error"), ("rate_limit_error", "rate_limit")],
)
async def test_a_retryable_error_event_is_retried_and_counted(tiny, error_type, kind):
    case = f"error:{error_type}"
    first = await _attempt(tiny, case)
    assert (first.ok, first.error_kind, first.status, first.retryable) == (False, kind, 200, True)
    assert first.text == "Hello"  # what came before the error is kept
    tiny.seen.clear()
    [record] = await _records(tiny, [case], max_retries=3)
    assert record.status == "ok" and record.attempts == 2, record.error_message
    assert [a for c, a in tiny.seen if c == case] == [0, 1]
    assert record.retry_wait_s > 0


async def test_another_error_event_type_is_final(tiny):
    case = "error:invalid_request_error"
    tiny.seen.clear()
    [record] = await _records(tiny, [case], max_retries=3)
    assert (record.status, record.error_kind, record.attempts, record.http_status) == (
        "error",
        "stream_error",
        1,
        200,
    )
    assert len([c for c, _ in tiny.seen if c == case]) == 1
