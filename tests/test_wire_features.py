"""Claude's reply features through whole runs against the simulator process: thinking, tool calls, web
search, refusals, the time-to-first-text split, and mid-stream errors retried like their HTTP twins.

Every figure is checked against the simulator's ground truth (`GET /_sim/requests`) and every
cost against `genai_prices.calc_price`. Timing assertions compare with what the simulator says it
sent, with tolerances meant for a loaded 2-core machine, or compare order only.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from harness import loops
from harness.bench import execute_run
from harness.client import ClaudeClient
from harness.config import build_config
from harness.graders import Answer, grade_now
from harness.records import CALL_SCHEMA, Case, PlannedCall
from tests.helpers import genai_total_usd, make_runner, timed_profile
from tests.simproc import SimProc, start_simulator

MODEL = "claude-sonnet-4-6"  # thinking "enabled" draws no SDK warning on it
WEATHER = {
    "name": "get_weather",
    "description": "Current weather at a place.",
    "input_schema": {
        "type": "object",
        "properties": {
            "location": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer"},
        },
        "required": ["location", "unit", "days"],
    },
}
SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}
FORCED = {"tools": [WEATHER], "tool_choice": {"type": "tool", "name": "get_weather"}}
LISBON = "How warm is it in Lisbon this week?"  # the simulator fills `location` with "Lisbon"

CASES: list[dict[str, Any]] = [
    {"id": "plain", "prompt": "What is two plus two?", "expected": {"regex": "."}},
    {
        "id": "think",
        "prompt": "Why is the sky blue?",
        "max_tokens": 1400,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "expected": {"regex": "."},
    },
    {
        "id": "tool-pass",
        "prompt": LISBON,
        **FORCED,
        "expected": {
            "tool_call": {"name": "get_weather", "input": {"location": "Lisbon", "unit": "celsius"}}
        },
    },
    {
        "id": "tool-wrong-input",
        "prompt": LISBON,
        **FORCED,
        "expected": {"tool_call": {"name": "get_weather", "input": {"location": "Paris"}}},
    },
    {
        "id": "tool-wrong-name",
        "prompt": LISBON,
        **FORCED,
        "expected": {"tool_call": {"name": "get_time"}},
    },
    {
        "id": "tool-not-called",
        "prompt": "Tell me a short joke.",
        "tools": [WEATHER],
        "expected": {"tool_call": {"name": "get_weather"}},
    },
    {
        "id": "tool-auto",
        "prompt": "Use get_weather for Porto, please.",
        "tools": [WEATHER],
        "expected": {"tool_call": {"name": "get_weather", "input": {"location": "Porto"}}},
    },
    {"id": "search", "prompt": "Please search the tallest tower in Lisbon.", "tools": [SEARCH]},
    {"id": "refuse", "prompt": "Tell me [[refuse:3]] something.", "expected": {"regex": "."}},
    {"id": "refuse-now", "prompt": "Tell me [[refuse]] nothing.", "expected": {"contains": "x"}},
]
PASSED = {
    "plain": True,
    "think": True,
    "tool-pass": True,
    "tool-wrong-input": False,
    "tool-wrong-name": False,
    "tool-not-called": False,
    "tool-auto": True,
    "search": None,
    "refuse": False,
    "refuse-now": False,
}


def write_cases(path: Path, cases: list[dict[str, Any]]) -> Path:
    with path.open("w") as fh:
        for case in cases:
            fh.write(json.dumps({"max_tokens": 400, **case}) + "\n")
    return path


def run(tmp_path: Path, sim: SimProc, dataset: Path, **overrides: Any) -> tuple[pl.DataFrame, Path]:
    cli = {
        "dataset": dataset,
        "models": MODEL,
        "results_dir": tmp_path / "results",
        "base_url": sim.url,
        # custom, not simulator: the simulator's quality model (answers shaped to the case's
        # expectation) must stay out of this file's checks of the plain wire features
        "target": "custom",
        "progress": "off",
        "report": False,
        "posthog_host": sim.url,
        "posthog_flush_timeout_s": 10.0,
        **overrides,
    }
    cfg = build_config(cli, env={})
    result = loops.run(execute_run(cfg), cfg.event_loop)
    calls = pl.read_parquet(result.run_dir / "calls.parquet")
    assert dict(calls.schema) == CALL_SCHEMA
    return calls, result.run_dir


@pytest.fixture(scope="module")
def feature_runs(simulator_session: SimProc, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The feature dataset run streamed, then unstreamed, with each run's ground truth and events."""
    tmp = tmp_path_factory.mktemp("features")
    dataset = write_cases(tmp / "features.jsonl", CASES)
    out: dict[str, Any] = {}
    for stream in (True, False):
        simulator_session.reset()
        calls, _ = run(tmp / f"s{stream}", simulator_session, dataset, stream=stream, concurrency=4)
        truth = {r["call_id"]: r for r in simulator_session.requests()}
        events = {e["uuid"]: e for e in simulator_session.events()["events"]}
        out[stream] = (calls, truth, events)
    return out


def _rows(calls: pl.DataFrame) -> dict[str, dict[str, Any]]:
    return {row["case_id"]: row for row in calls.iter_rows(named=True)}


@pytest.mark.parametrize("stream", [True, False])
def test_every_row_agrees_with_the_ground_truth_and_genai_prices(feature_runs, stream):
    calls, truth, events = feature_runs[stream]
    assert calls.height == len(CASES)
    for row in calls.iter_rows(named=True):
        t = truth[row["call_id"]]
        case = row["case_id"]
        assert row["status"] == "ok", row
        assert row["stop_reason"] == t["stop_reason"]
        assert (row["input_tokens"], row["output_tokens"]) == (t["input_tokens"], t["output_tokens"]), case
        assert row["thinking_tokens"] == (t["thinking_tokens"] or None), case
        names = [c["name"] for c in json.loads(row["tool_calls"])] if row["tool_calls"] else []
        assert names == t["tool_calls"], case
        if case == "search":
            assert row["web_search_requests"] == t["web_search_requests"] >= 1
            assert row["web_fetch_requests"] == 0
            assert row["server_tool_cost_usd"] == pytest.approx(t["web_search_requests"] * 0.01, rel=1e-9)
        else:
            assert row["web_search_requests"] is None and row["web_fetch_requests"] is None
            assert row["server_tool_cost_usd"] == 0.0
        assert row["service_tier"] == "standard"
        assert row["total_cost_usd"] == pytest.approx(genai_total_usd(row), rel=1e-9), case
        assert row["total_cost_usd"] == pytest.approx(
            row["input_cost_usd"]
            + row["output_cost_usd"]
            + row["cache_cost_usd"]
            + row["server_tool_cost_usd"],
            rel=1e-12,
        )
        assert row["passed"] is PASSED[case], case
        props = events[row["event_uuid"]]["properties"]
        assert props["thinking_tokens"] == row["thinking_tokens"]
        assert props["web_search_requests"] == row["web_search_requests"]
        first_text = row["time_to_first_text_s"]
        assert props["time_to_first_text_ms"] == (
            None if first_text is None else pytest.approx(first_text * 1e3)
        )


def test_tool_calls_are_assembled_from_the_stream_and_kept_out_of_the_text(feature_runs):
    streamed, unstreamed = _rows(feature_runs[True][0]), _rows(feature_runs[False][0])
    for case in ("tool-pass", "tool-auto"):
        calls = json.loads(streamed[case]["tool_calls"])
        # The streamed pieces, joined and decoded once, equal the unstreamed reply's `input`.
        assert calls == json.loads(unstreamed[case]["tool_calls"])
        [call] = calls
        assert call["name"] == "get_weather" and set(call["input"]) == {"location", "unit", "days"}
        assert "location" not in streamed[case]["response_text"]
    assert streamed["tool-pass"]["response_text"] == ""  # a forced call has no text
    assert streamed["tool-auto"]["response_text"] == "Let me use get_weather."
    assert streamed["tool-not-called"]["tool_calls"] is None and streamed["tool-not-called"]["response_text"]
    # The web search's own tool_use (server_tool_use) is a count, not a call of the user's tools.
    search = streamed["search"]
    assert search["tool_calls"] is None and "query" not in search["response_text"]
    assert search["response_text"].startswith("Let me search the web.")


def test_refusals_are_recorded_with_their_final_usage_and_fail_their_check(feature_runs):
    rows = _rows(feature_runs[True][0])
    refused, now = rows["refuse"], rows["refuse-now"]
    assert (refused["stop_reason"], refused["output_tokens"]) == ("refusal", 3)
    assert refused["response_text"]  # three tokens of text came first: the regex alone would pass
    # message_start says output_tokens 1; the final usage says 0, and 0 wins.
    assert (now["stop_reason"], now["output_tokens"], now["response_text"]) == ("refusal", 0, "")
    assert refused["passed"] is False and now["passed"] is False


def test_first_text_and_first_thinking_marks_split_the_ttft(feature_runs):
    calls, truth, _ = feature_runs[True]
    rows = _rows(calls)
    think = rows["think"]
    assert think["time_to_first_thinking_s"] == think["ttft_s"]  # thinking comes first
    assert think["time_to_first_text_s"] > think["time_to_first_thinking_s"]
    for case in ("plain", "refuse", "tool-auto", "search"):
        assert rows[case]["time_to_first_text_s"] == rows[case]["ttft_s"], case
        assert rows[case]["time_to_first_thinking_s"] is None
    for case in ("tool-pass", "refuse-now"):  # no text at all (input_json deltas; nothing)
        assert rows[case]["time_to_first_text_s"] is None
    assert rows["tool-pass"]["ttft_s"] is not None and rows["refuse-now"]["ttft_s"] is None
    for row in calls.iter_rows(named=True):
        t = truth[row["call_id"]]
        if t["sent_first_text_s"] is not None:  # the client cannot see it before it left
            # (the simulator stamps after its write returns: a descheduled simulator stamps late)
            assert row["time_to_first_text_s"] >= t["sent_first_text_s"] - 0.05, row["case_id"]
    unstreamed = feature_runs[False][0]
    assert unstreamed["time_to_first_text_s"].is_null().all()
    assert unstreamed["time_to_first_thinking_s"].is_null().all()


# -- the checks themselves -----------------------------------------------------------------------


def check(expected, text, *, tool_calls, stop_reason):
    """The graders' verdict on one answer (None without an expectation)."""
    if not expected:
        return None
    return grade_now(expected, Answer(text=text, tool_calls=tool_calls or (), stop_reason=stop_reason)).passed


CALL = [
    {
        "name": "get_weather",
        "input": {"location": "Lisbon", "unit": "celsius", "days": 3, "detail": {"hourly": True}},
    }
]


@pytest.mark.parametrize(
    ("wanted", "passed"),
    [
        ({"name": "get_weather"}, True),
        ({"name": "get_weather", "input": {}}, True),
        ({"name": "get_weather", "input": {"location": "Lisbon"}}, True),
        ({"name": "get_weather", "input": {"detail": {"hourly": True}, "days": 3}}, True),
        ({"name": "get_weather", "input": {"days": 3.0}}, True),  # JSON numbers
        ({"name": "get_weather", "input": {"location": "lisbon"}}, False),
        ({"name": "get_weather", "input": {"detail": {"hourly": 1}}}, False),  # a boolean is not a number
        ({"name": "get_weather", "input": {"country": "PT"}}, False),
        ({"name": "get_time"}, False),
    ],
)
def test_tool_call_expectation_is_a_named_call_whose_input_contains_the_expected(wanted, passed):
    assert check({"tool_call": wanted}, "", tool_calls=CALL, stop_reason="tool_use") is passed
    assert check({"tool_call": wanted}, "Lisbon", tool_calls=None, stop_reason="end_turn") is False


@pytest.mark.parametrize(
    "expected",
    [{"regex": "."}, {"contains": "Lisbon"}, {"equals": "Lisbon"}, {"tool_call": {"name": "get_weather"}}],
)
def test_a_refusal_fails_every_expectation(expected):
    assert check(expected, "Lisbon", tool_calls=CALL, stop_reason="end_turn") is True
    assert check(expected, "Lisbon", tool_calls=CALL, stop_reason="refusal") is False
    assert check(None, "Lisbon", tool_calls=CALL, stop_reason="refusal") is None


# -- time to first text against the simulator's clock, with a thinking phase long enough to see ----------


@pytest.fixture(scope="module")
def timed_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProc]:
    profile = timed_profile(
        tmp_path_factory.mktemp("profile") / "thinking.toml",
        answer_tokens_max=30,
        thinking_tps={"claude-haiku-4-5": 1000.0},
    )
    sim = start_simulator("--profile", str(profile), "--time-scale", "1", "--seed", "5")
    yield sim
    sim.stop()


async def test_time_to_first_text_matches_what_the_simulator_sent(timed_sim):
    timed_sim.reset()
    thinking = {"type": "enabled", "budget_tokens": 1024}  # 359-871 thinking tokens: 0.36-0.87 s
    calls = [
        PlannedCall(
            call_id=f"t{i}",
            case=Case(
                id=f"t{i}",
                messages=({"role": "user", "content": f"Think about question {i}."},),
                max_tokens=1300,
                params={"thinking": thinking},
            ),
            model="claude-haiku-4-5",
            repeat=0,
            index=i,
        )
        for i in range(4)
    ]
    client = ClaudeClient(api_key="sk-test", base_url=timed_sim.url, timeout_s=30.0, tag_requests=True)
    try:
        runner, sink, _ = make_runner(client, concurrency=2)
        await runner.run(calls)
    finally:
        await client.aclose()
    truth = {r["call_id"]: r for r in timed_sim.requests()}
    errors: list[float] = []
    errors_thinking: list[float] = []
    for record in sink.records:
        t = truth[record.call_id]
        assert record.status == "ok", record.error_message
        assert record.thinking_tokens == t["thinking_tokens"] >= 359
        text, thought = record.time_to_first_text_s, record.time_to_first_thinking_s
        assert text is not None and thought is not None
        # The thinking phase (≥ 0.36 s) separates the two marks.
        assert text - thought > 0.25, (text, thought)
        errors.append(text - t["sent_first_text_s"])
        errors_thinking.append(thought - t["sent_first_thinking_s"])
    # Never before the simulator sent it (5 ms, as the TTFT tests allow; the median, since the
    # simulator stamps after its write returns and a descheduled process stamps late), and close
    # after it; one call may be held up by a busy machine.
    for found in (errors, errors_thinking):
        assert -0.005 <= statistics.median(found) < 0.1, found
        assert min(found) >= -0.05 and max(found) < 0.5, found


# -- an `error` event after the 200 is retried like the same error sent as a status ----------------------


def test_midstream_overload_is_retried_and_counted_in_attempts(simulator, tmp_path):
    simulator.set_faults({"midstream_error": 0.3})
    cases = [
        {"id": f"c{i}", "prompt": f"Question {i}: what is {i} plus {i}?", "max_tokens": 30} for i in range(30)
    ]
    dataset = write_cases(tmp_path / "d.jsonl", cases)
    calls, _ = run(tmp_path, simulator, dataset, concurrency=8, max_retries=6)
    by_call: dict[str, list[dict[str, Any]]] = {}
    for r in simulator.requests():
        by_call.setdefault(r["call_id"], []).append(r)
    retried_after_midstream = 0
    for row in calls.iter_rows(named=True):
        records = sorted(by_call[row["call_id"]], key=lambda r: r["received_unix"])
        assert row["attempts"] == len(records), row
        assert all(r.get("fault") == "midstream_error" and r["status"] == 200 for r in records[:-1]), records
        retried_after_midstream += len(records) > 1
        if records[-1].get("fault") == "midstream_error":  # out of retries: the same kind as a 529
            assert (row["status"], row["error_kind"], row["http_status"]) == ("error", "overloaded", 200)
        else:
            assert row["status"] == "ok" and row["output_tokens"] == records[-1]["output_tokens"], row
        if len(records) > 1:
            assert row["retry_wait_s"] > 0
    assert retried_after_midstream >= 1
