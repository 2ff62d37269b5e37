"""The harness's `$ai_generation` against PostHog's own Anthropic wrapper, on the same call.

The installed `posthog.ai.anthropic.AsyncAnthropic` is the reference for what PostHog's
LLM-analytics views read. Each case sends the same request twice to the simulator (same
content, so the same answer and usage): once through the wrapper, whose event is recorded
by a patched `capture`, and once through the harness's runner, whose record becomes the
harness's event. The wrapper's property names must all be there (except its library
identity and raw usage), with the same values for what both know and the same units.
"""

from __future__ import annotations

import asyncio
import base64
import math
from typing import Any

import posthog
import pytest
from posthog.ai.anthropic import AsyncAnthropic as WrappedAnthropic

from harness.client import ClaudeClient, request_params
from harness.events.event import build_event
from harness.plan import make_plan
from harness.records import Case
from tests.helpers import event_settings, make_runner
from tests.simproc import SimProc

MODEL = "claude-haiku-4-5"
# Identity and raw provider usage: the harness is not the posthog-ai library and keeps no raw usage.
WRAPPER_ONLY = {"$ai_lib", "$ai_lib_version", "$ai_tokens_source", "$ai_usage"}
SAME_VALUE = (
    "$ai_provider",
    "$ai_model",
    "$ai_input",
    "$ai_tools",
    "$ai_http_status",
    "$ai_input_tokens",
    "$ai_output_tokens",
    "$ai_cache_read_input_tokens",
    "$ai_cache_creation_input_tokens",
    "$ai_reasoning_tokens",
    "$ai_stop_reason",
    "$process_person_profile",
)
COUNTS = {"$ai_cache_read_input_tokens", "$ai_cache_creation_input_tokens", "$ai_reasoning_tokens"}
WEATHER = {
    "name": "get_weather",
    "description": "Current weather at a place.",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
    },
}
PNG = base64.b64encode(bytes(range(256)) * 2).decode()  # long enough to count as media

CONVERSATION = Case(
    id="conversation",
    system="You are a terse weather assistant.",
    messages=(
        {"role": "user", "content": "Hello there."},
        {"role": "assistant", "content": [{"type": "text", "text": "Hi. What place?"}]},
        {
            "role": "user",
            "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                {"type": "text", "text": "Use get_weather for the town in this picture, Lisbon."},
            ],
        },
    ),
    max_tokens=300,
    temperature=0.3,
    stop_sequences=("STOP-HERE",),
    params={"tools": [WEATHER]},
)
THINKING = Case(
    id="thinking",
    system=[{"type": "text", "text": "Think before answering."}],
    messages=({"role": "user", "content": "Why is the sky blue?"},),
    max_tokens=1400,
    params={"thinking": {"type": "enabled", "budget_tokens": 1024}},
)


def _harness_event(sim: SimProc, case: Case, stream: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the harness's event, the request it sent) for one call of `case`."""
    call = make_plan([case], [MODEL], repeats=1, seed=0, run_id="r1")[0]

    async def go() -> list[Any]:
        client = ClaudeClient(api_key="sk-ant-conformance", base_url=sim.url, timeout_s=30.0)
        try:
            runner, sink, _ = make_runner(client, stream=stream)
            await runner.run([call])
        finally:
            await client.aclose()
        return sink.records

    (record,) = asyncio.run(go())
    assert record.status == "ok", record.error_message
    settings = event_settings(sim.url, event_name="$ai_generation", base_url=sim.url)
    return build_event(record, settings, case), request_params(call, stream)


def _wrapper_event(sim: SimProc, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The event PostHog's wrapper captures for the same request (no distinct id given)."""
    captured: list[dict[str, Any]] = []
    ph = posthog.Posthog("phc_conformance_" + "x" * 16, host="http://127.0.0.1:9", send=False)
    ph.capture = lambda event, **kw: captured.append({"event": event, **kw})  # type: ignore[method-assign]

    async def go() -> None:
        client = WrappedAnthropic(
            posthog_client=ph, api_key="sk-ant-conformance", base_url=sim.url, max_retries=0
        )
        try:
            response = await client.messages.create(**kwargs)
            if kwargs.get("stream"):
                async for _ in response:
                    pass
        finally:
            await client.close()

    try:
        asyncio.run(go())
    finally:
        ph.shutdown()
    (event,) = captured
    return event


def _comparable_output(choices: list[dict[str, Any]]) -> list[Any]:
    """Text and tool calls of an `$ai_output_choices` (the harness keeps no thinking text or tool ids)."""
    out: list[Any] = []
    for message in choices:
        for block in message["content"]:
            if block["type"] == "text":
                out.append(("text", block["text"]))
            elif block["type"] == "function":
                out.append(("function", block["function"]["name"], block["function"]["arguments"]))
    return out


@pytest.mark.parametrize(
    ("case", "stream"),
    [(CONVERSATION, True), (CONVERSATION, False), (THINKING, True)],
    ids=["conversation-stream", "conversation-unary", "thinking-stream"],
)
def test_the_harness_event_has_the_wrappers_properties_and_units(simulator: SimProc, case, stream) -> None:
    ours, sent = _harness_event(simulator, case, stream)
    wrapper = _wrapper_event(simulator, sent)
    assert ours["event"] == wrapper["event"] == "$ai_generation"
    mine, theirs = ours["properties"], wrapper["properties"]

    missing = set(theirs) - WRAPPER_ONLY - set(mine)
    assert missing == set(), f"the wrapper sends {sorted(missing)} and the harness does not"
    for key in SAME_VALUE:
        if key in COUNTS:  # the unary wrapper leaves a zero count out; its stream sends it
            assert (mine.get(key) or 0) == (theirs.get(key) or 0), key
        else:
            assert mine.get(key) == theirs.get(key), key
    for key in set(theirs) & set(mine):  # same JSON types (an int stays an int, seconds stay floats)
        if theirs[key] is not None and mine[key] is not None:
            assert type(mine[key]) is type(theirs[key]), key

    # The conversation as the API received it: the system prompt first, every turn, media redacted.
    assert mine["$ai_input"][0]["role"] == "system"
    assert len(mine["$ai_input"]) == 1 + len(case.messages)
    assert "[base64 image redacted]" in str(mine["$ai_input"]) or case is not CONVERSATION
    assert PNG not in str(mine["$ai_input"])
    assert _comparable_output(mine["$ai_output_choices"]) == _comparable_output(theirs["$ai_output_choices"])
    # Model parameters: a superset, equal where both say something; temperature is the harness's extra.
    for key, value in theirs["$ai_model_parameters"].items():
        assert mine["$ai_model_parameters"][key] == value, key
    if case.temperature is not None:
        assert mine["$ai_model_parameters"]["temperature"] == case.temperature
    assert mine["$ai_model_parameters"]["max_tokens"] == case.max_tokens
    # Units: seconds for the latency (the wrapper's wall clock includes its own overhead).
    assert 0 < mine["$ai_latency"] < 30 and 0 < theirs["$ai_latency"] < 30
    assert abs(math.log(mine["$ai_latency"] / theirs["$ai_latency"])) < math.log(20)
    if stream:
        assert 0 < mine["$ai_time_to_first_token"] <= mine["$ai_latency"]
    if case is THINKING:
        assert mine["$ai_reasoning_tokens"] > 0
    # No real user: both make no person profile (the wrapper then uses the trace id as distinct_id,
    # the harness one anonymous id per run; see harness/events/event.py).
    assert theirs["$process_person_profile"] is False and wrapper["distinct_id"] == theirs["$ai_trace_id"]
    assert ours["distinct_id"] == f"run:{mine['run_id']}" and mine["$ai_trace_id"] == mine["call_id"]


def test_a_run_sends_what_each_variant_sent(simulator: SimProc, tmp_path) -> None:
    """Events of a run with variants: $ai_input is the request after the variant, one trace per call."""
    import json

    from harness import loops
    from harness.bench import execute_run
    from harness.config import build_config

    dataset = tmp_path / "d.jsonl"
    dataset.write_text(
        json.dumps({"id": "a", "system": "Be brief.", "prompt": "What is 2+2?", "max_tokens": 40}) + "\n"
        + json.dumps({"id": "b", "prompt": "Name a colour.", "max_tokens": 40, "user_id": "u1"}) + "\n"
    )  # fmt: skip
    variants = tmp_path / "variants.toml"
    variants.write_text(
        '[variants.plain]\n\n[variants.prefixed]\nsystem_prefix = "House rules."\ntemperature = 0.2\n'
    )
    cfg = build_config(
        {
            "dataset": dataset,
            "models": MODEL,
            "variants": variants,
            "results_dir": tmp_path / "results",
            "base_url": simulator.url,
            "target": "custom",
            "posthog_host": simulator.url,
            "event_name": "$ai_generation",
            "progress": "off",
            "report": False,
        },
        env={},
    )
    result = loops.run(execute_run(cfg), cfg.event_loop)
    events = [e for e in simulator.events()["events"] if e["event"] == "$ai_generation"]
    assert len(events) == 4 and result.delivery["delivered"] == 4
    by = {(e["properties"]["case_id"], e["properties"]["variant"]): e for e in events}
    assert by[("a", "plain")]["properties"]["$ai_input"][0] == {"role": "system", "content": "Be brief."}
    assert by[("a", "prefixed")]["properties"]["$ai_input"][0] == {
        "role": "system",
        "content": "House rules.\n\nBe brief.",
    }
    assert by[("b", "prefixed")]["properties"]["$ai_input"] == [
        {"role": "system", "content": "House rules."},
        {"role": "user", "content": "Name a colour."},
    ]
    params = by[("b", "prefixed")]["properties"]["$ai_model_parameters"]
    assert params == {"max_tokens": 40, "temperature": 0.2, "stream": True, "variant": "prefixed"}
    assert len({e["properties"]["$ai_trace_id"] for e in events}) == 4, "one trace per call"
    assert {e["properties"]["$ai_session_id"] for e in events} == {result.run_id}
    anonymous = [e for e in events if e["properties"]["case_id"] == "a"]
    assert all(e["properties"]["$process_person_profile"] is False for e in anonymous)
    assert all("$process_person_profile" not in e["properties"] for e in events if e not in anonymous)
