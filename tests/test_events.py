"""The PostHog sink against a real capture endpoint on loopback: one event per call, outages, resend, crashes."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from harness.events.event import (
    EVENT_BYTE_BUDGET,
    SDK_MAX_EVENT_BYTES,
    TRUNCATED_MARK,
    build_event,
)
from harness.events.journal import read_events
from harness.events.resend import resend_outbox
from harness.events.sink import EventSink
from harness.records import CallRecord, Case
from harness.rundir import RunDir
from harness.store import RunStore
from tests.helpers import POSTHOG_KEY as KEY
from tests.helpers import event_settings as settings_for
from tests.helpers import make_case, make_record
from tests.simproc import SimProc

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def capture(simulator: SimProc) -> SimProc:
    """The project's simulator (a separate process): its PostHog capture endpoint, reset per test."""
    return simulator


def received(sim: SimProc) -> dict[str, Any]:
    return sim.events()


def session(tmp_path: Path) -> RunDir:
    """A new writable session of the run `run-t` under `tmp_path` (the earlier one must be closed)."""
    if (tmp_path / "run-t").exists():
        return RunDir.resume(tmp_path, "run-t")
    return RunDir.create(tmp_path, "run-t", {"run_id": "run-t"})


# ---------------------------------------------------------------- build_event (pure)


def test_build_event_properties() -> None:
    settings = settings_for("http://127.0.0.1:1")
    record = make_record(7)
    event = build_event(record, settings, make_case(7))
    assert set(event) == {"event", "distinct_id", "properties", "timestamp", "uuid"}
    assert event["event"] == "claude_message_completion"
    assert event["uuid"] == record.event_uuid
    assert event["distinct_id"] == record.user_id == "user-2"
    assert event["timestamp"] == "2026-01-02T03:04:12.678901+00:00"
    p = event["properties"]
    assert p["model"] == p["$ai_model"] == record.model
    assert p["input_tokens"] == p["$ai_input_tokens"] == 107
    assert p["output_tokens"] == p["$ai_output_tokens"] == 214
    assert p["$ai_cache_read_input_tokens"] == 7 and p["$ai_cache_creation_input_tokens"] == 0
    assert p["input_cost_in_dollars"] == pytest.approx(107e-6 + 7e-7)
    assert p["$ai_input_cost_usd"] == p["input_cost_in_dollars"]
    assert p["output_cost_in_dollars"] == p["$ai_output_cost_usd"] == pytest.approx(214 * 5e-6)
    assert p["total_cost_in_dollars"] == p["$ai_total_cost_usd"] == record.total_cost_usd
    assert p["total_cost_in_dollars"] == pytest.approx(
        p["input_cost_in_dollars"] + p["output_cost_in_dollars"]
    )
    assert p["response_time_in_ms"] == pytest.approx(1507.0)
    assert p["$ai_latency"] == pytest.approx(1.507)
    assert p["$ai_time_to_first_token"] == pytest.approx(0.2007)
    assert p["ttft_ms"] == pytest.approx(200.7) and p["limiter_wait_ms"] == pytest.approx(5.0)
    assert p["$ai_provider"] == "anthropic" and p["$ai_http_status"] == 200 and p["$ai_is_error"] is False
    assert "$ai_error" not in p
    assert p["$ai_trace_id"] == p["call_id"] == record.call_id, "one trace per call"
    assert p["$ai_session_id"] == p["run_id"] == "run-t" and p["$ai_span_name"] == p["case_id"]
    assert "$ai_span_id" not in p and "$process_person_profile" not in p, "a real user gets a person"
    assert p["$ai_base_url"] == "http://127.0.0.1:1/" and p["$ai_stream"] is True
    assert p["$ai_stop_reason"] == "end_turn"
    assert (p["case_id"], p["dataset"], p["attempts"], p["status"], p["target"], p["repeat"]) == (
        "case-7",
        "datasets/smoke.jsonl",
        2,
        "ok",
        "simulator",
        1,
    )
    assert p["prompt"] == "question 7?"
    assert p["$ai_input"] == [{"role": "user", "content": "question 7?"}]
    assert p["$ai_output_choices"] == [
        {"role": "assistant", "content": [{"type": "text", "text": record.response_text}]}
    ]
    assert p["$ai_model_parameters"] == {"max_tokens": 1024, "stream": True}
    assert p["time_to_first_text_s"] is None and "truncated" not in p
    assert build_event(record, settings, make_case(7)) == event, "pure: same record and case, same event"


def test_build_event_error_no_latency_and_fallbacks() -> None:
    settings = settings_for("http://127.0.0.1:1", event_name="$ai_generation")
    record = make_record(3, status="error", latency_s=None, stream=False, user_id=None)
    event = build_event(record, settings)
    p = event["properties"]
    assert event["event"] == "$ai_generation"
    assert event["distinct_id"] == "run:run-t" and p["$process_person_profile"] is False
    assert p["$ai_is_error"] is True and p["$ai_http_status"] == 529
    assert p["$ai_error"] == "overloaded: server overloaded" and p["error_kind"] == "overloaded"
    assert "response_time_in_ms" not in p and "$ai_latency" not in p
    assert "$ai_time_to_first_token" not in p
    no_start = make_record(4, started_at=None)
    assert build_event(no_start, settings)["timestamp"] == "2026-01-02T03:04:09.673901+00:00"
    no_status = make_record(5, status="error", http_status=None, error_kind="connection")
    assert build_event(no_status, settings)["properties"]["$ai_http_status"] == 0, "as the wrapper: 0"


def test_no_prompt_capture_keeps_all_text_out() -> None:
    record = make_record(11, response_text="SECRET-ANSWER-TEXT")
    case = make_case(11, "SECRET-PROMPT-TEXT")
    with_text = orjson.dumps(build_event(record, settings_for("http://127.0.0.1:1"), case))
    assert b"SECRET-PROMPT-TEXT" in with_text and b"SECRET-ANSWER-TEXT" in with_text
    event = build_event(record, settings_for("http://127.0.0.1:1", prompt_capture=False), case)
    blob = orjson.dumps(event)
    assert b"SECRET-PROMPT-TEXT" not in blob and b"SECRET-ANSWER-TEXT" not in blob
    assert not {"prompt", "$ai_input", "$ai_output_choices"} & set(event["properties"])


def test_long_texts_are_capped_below_the_sdk_size_limit() -> None:
    record = make_record(1, response_text="字" * 200_000)
    event = build_event(record, settings_for("http://127.0.0.1:1"), make_case(1, "é" * 200_000))
    size = len(json.dumps(event).encode())  # what the SDK measures: ASCII-escaped
    assert EVENT_BYTE_BUDGET - 64 * 1024 < size <= EVENT_BYTE_BUDGET, "cut to fit, not far below"
    assert event["properties"]["prompt"].endswith("…[truncated]") and event["properties"]["truncated"] is True


def test_non_bmp_text_is_capped_by_serialised_bytes() -> None:
    """An emoji costs 12 bytes once escaped: 32,000 characters of them per text used to exceed 900 KiB."""
    record = make_record(2, response_text="😀" * 30_000)
    case = Case(
        id="case-2",
        system="🚀" * 30_000,
        messages=(
            {"role": "user", "content": "🎉" * 30_000},
            {"role": "assistant", "content": [{"type": "text", "text": "🙂" * 30_000}]},
            {"role": "user", "content": "🧪" * 30_000},
        ),
    )
    event = build_event(record, settings_for("http://127.0.0.1:1"), case)
    assert len(json.dumps(event).encode()) <= EVENT_BYTE_BUDGET < SDK_MAX_EVENT_BYTES
    p = event["properties"]
    assert p["truncated"] is True
    assert [t["role"] for t in p["$ai_input"]] == ["system", "user", "assistant", "user"], "every turn kept"
    assert p["$ai_input"][1]["content"].endswith(TRUNCATED_MARK)
    small = build_event(make_record(3), settings_for("http://127.0.0.1:1"), make_case(3, "😀" * 100))
    assert "truncated" not in small["properties"] and small["properties"]["prompt"] == "😀" * 100


# ---------------------------------------------------------------- delivery


def test_an_oversized_event_is_cut_and_still_delivered(capture: SimProc, tmp_path: Path) -> None:
    """A conversation of emoji far over 900 KiB once escaped: the SDK would drop it silently; cut, it arrives."""
    record = make_record(1, response_text="😀" * 50_000)
    case = Case(id=record.case_id, messages=({"role": "user", "content": "🎉" * 200_000},))
    sink = EventSink(settings_for(capture.url), session(tmp_path), {(record.case_id, None): case})
    sink.write(record)
    sink.close()
    stats = sink.stats()
    assert (stats["delivered"], stats["truncated"], stats["sdk_errors"]) == (1, 1, 0)
    (event,) = received(capture)["events"]
    assert event["properties"]["truncated"] is True
    assert event["properties"]["$ai_input"][0]["content"].startswith("🎉" * 100)


def test_a_capture_mode_in_the_environment_changes_nothing(
    capture: SimProc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """POSTHOG_CAPTURE_MODE=v1 would switch the SDK's protocol under the ledger: the child pins v0."""
    monkeypatch.setenv("POSTHOG_CAPTURE_MODE", "v1")
    sink = EventSink(settings_for(capture.url), session(tmp_path))
    for record in _records(30):
        sink.write(record)
    sink.close()
    stats = sink.stats()
    assert (stats["handed"], stats["delivered"], stats["failed"], stats["pending"]) == (30, 30, 0, 0)
    got = received(capture)
    assert got["unique"] == 30
    assert all("$lib" in e["properties"] for e in got["events"]), (
        "v0 keeps $lib in the properties; v1 moves it"
    )


def _records(n: int, *, run_id: str = "run-t", cancelled: tuple[int, ...] = ()) -> list[CallRecord]:
    return [make_record(i, run_id=run_id, status="cancelled" if i in cancelled else "ok") for i in range(n)]


def test_one_event_per_call(capture: SimProc, tmp_path: Path) -> None:
    records = _records(250, cancelled=(5, 77, 120))
    run = session(tmp_path)
    sink = EventSink(settings_for(capture.url), run)
    for record in records:
        sink.write(record)
    sink.close()
    stats = sink.stats()
    assert stats["handed"] == stats["admitted"] == stats["delivered"] == 247
    assert (stats["failed"], stats["pending"], stats["dropped"], stats["outboxed"]) == (0, 0, 0, 0)
    assert sink._delivery.delivered_seen == 247, "the per-batch ledger agrees with the formula"

    got = received(capture)
    assert got["unique"] == 247 and got["duplicates"] == 0
    by_uuid = {e["uuid"]: e for e in got["events"]}
    expected = {r.event_uuid: r for r in records if r.status != "cancelled"}
    assert set(by_uuid) == set(expected)
    for uid, event in list(by_uuid.items())[:25]:
        built = build_event(expected[uid], sink.settings)
        assert event["event"] == "claude_message_completion"
        assert event["distinct_id"] == built["distinct_id"]
        assert event["timestamp"] == built["timestamp"]
        for key, value in built["properties"].items():
            assert event["properties"][key] == value, key
        assert event["properties"]["$os"] and event["properties"]["$python_version"], "SDK context kept"
    assert KEY not in orjson.dumps(got).decode()

    assert run.events_outbox.read_bytes() == b""
    assert run.confirmed_event_sessions() == {run.session}
    assert not list(run.path.glob("events-journal-*"))


@pytest.mark.parametrize("mode", ["500", "refuse"])
def test_outage_goes_to_outbox_and_resend_delivers(capture: SimProc, tmp_path: Path, mode: str) -> None:
    records = _records(120)
    capture.outage("posthog", mode, 4.0)
    run = session(tmp_path)
    sink = EventSink(settings_for(capture.url, max_retries=1, flush_timeout_s=2.0, shutdown_join_s=0.5), run)
    for record in records[:60]:
        sink.write(record)
    began = time.monotonic()
    sink.close()
    assert time.monotonic() - began < 2.0 + 0.5 + 1.5, "close() is bounded by flush timeout + join"
    stats = sink.stats()
    assert stats["handed"] == stats["admitted"] == 60
    lost = stats["failed"] + stats["pending"]
    assert lost > 0 and stats["delivered"] == 60 - lost
    run.close()
    outbox = list(read_events(run.events_outbox))
    assert len(outbox) == stats["outboxed"] == lost
    assert stats["sdk_errors"] + stats["sdk_warnings"] > 0
    assert all(KEY not in m for m in stats["sdk_messages"] + stats["upload_errors"])

    # The endpoint comes back; a later session of the same run delivers the rest directly.
    deadline = time.monotonic() + 15
    while not endpoint_up(capture):
        assert time.monotonic() < deadline, "the simulated outage did not end"
    with session(tmp_path) as again:
        second = EventSink(settings_for(capture.url), again)
        for record in records[60:]:
            second.write(record)
        second.close()
    assert second.stats()["delivered"] == 60

    result = resend_outbox(run.path, KEY, capture.url, max_retries=2, flush_timeout_s=5.0)
    assert result["resent"] == lost and result["delivered"] == lost and result["still_failed"] == 0
    assert run.events_outbox.read_bytes() == b""
    got = received(capture)
    uuids = {e["uuid"] for e in got["events"]}
    assert got["unique"] == 120 and uuids == {r.event_uuid for r in records}
    resent_uuids = {e["uuid"] for e in outbox}
    by_uuid = {e["uuid"]: e for e in got["events"]}
    for event in outbox[:10]:
        assert by_uuid[event["uuid"]]["timestamp"] == event["timestamp"]
    assert resent_uuids <= uuids


def endpoint_up(sim: SimProc) -> bool:
    """Has the outage passed? (polled every 0.2 s)"""
    time.sleep(0.2)
    try:
        request = urllib.request.Request(
            sim.url + "/batch/", data=b'{"api_key":"x","batch":[]}', method="POST"
        )
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def test_resend_keeps_what_still_fails(capture: SimProc, tmp_path: Path) -> None:
    with session(tmp_path) as run:
        sink = EventSink(settings_for(capture.url), run)
        capture.outage("posthog", "500", 30.0)
        outbox_events = [build_event(r, sink.settings) for r in _records(5)]
        sink.close()
    run.events_outbox.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in outbox_events))
    result = resend_outbox(
        run.path, KEY, capture.url, max_retries=0, flush_timeout_s=1.0, shutdown_join_s=0.2
    )
    assert result == {**result, "resent": 5, "delivered": 0, "still_failed": 5}
    assert [e["uuid"] for e in read_events(run.events_outbox)] == [e["uuid"] for e in outbox_events]
    capture.outage("posthog", "500", 0.0)


def test_resend_cuts_an_outbox_event_written_too_large(capture: SimProc, tmp_path: Path) -> None:
    """An outbox from before events were cut to fit: the SDK would drop it on every resend."""
    with session(tmp_path) as run:
        EventSink(settings_for(capture.url), run).close()
    big = build_event(make_record(1), settings_for(capture.url), make_case(1))
    big["properties"]["prompt"] = big["properties"]["$ai_input"][0]["content"] = "😀" * 80_000
    assert len(json.dumps(big)) > SDK_MAX_EVENT_BYTES
    run.events_outbox.write_bytes(orjson.dumps(big) + b"\n")
    result = resend_outbox(run.path, KEY, capture.url, max_retries=0, flush_timeout_s=5.0)
    assert result == {**result, "resent": 1, "delivered": 1, "still_failed": 0, "sdk_errors": 0}
    (event,) = received(capture)["events"]
    assert event["uuid"] == big["uuid"] and event["properties"]["truncated"] is True


# ---------------------------------------------------------------- crash recovery


_CHILD = textwrap.dedent(
    """
    import sys
    from dataclasses import replace
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from harness.events.sink import EventSink
    from harness.store import RunStore
    from tests.helpers import event_settings, make_record
    store = RunStore.create(Path(sys.argv[2]), "run-t", {}, chunk_rows=40, secrets=[])
    # Nothing leaves the queue before the kill: a long interval and a huge batch.
    settings = event_settings(sys.argv[1], flush_interval_s=60.0, flush_at=100_000)
    sink = EventSink(settings, store.run)
    for i in range(100):
        record = make_record(i)
        store.write(record)
        if i < 99:  # the last call is killed between the two sinks
            sink.write(record)
    print("ready", flush=True)
    sys.stdin.read()
    """
)


def test_kill9_then_resume_recaptures_unconfirmed_events(capture: SimProc, tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, capture.url, str(tmp_path), str(ROOT)],
        stdout=subprocess.PIPE,
        stdin=subprocess.PIPE,
        cwd=ROOT,
    )
    assert child.stdout is not None and child.stdin is not None
    assert child.stdout.readline().strip() == b"ready"
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    child.stdout.close()
    child.stdin.close()
    assert received(capture)["unique"] == 0, "the killed process delivered nothing"

    store = RunStore.resume(tmp_path, "run-t", chunk_rows=40)
    cases = {make_case(i).id: make_case(i) for i in range(97)}
    sink = EventSink(settings_for(capture.url), store.run, cases)
    assert sink.session == store.session
    crashed = sink.unconfirmed_sessions()
    assert len(crashed) == 1
    handed = sink.recover()
    assert handed == 100
    for i in range(100, 110):  # the resumed run's own calls
        record = make_record(i)
        store.write(record)
        sink.write(record)
    sink.close()
    store.close()
    stats = sink.stats()
    assert (stats["recovered"], stats["rebuilt"], stats["delivered"]) == (99, 1, 110)
    got = received(capture)
    assert got["unique"] == 110 and got["duplicates"] == 0
    killed = make_record(99)
    rebuilt = next(e for e in got["events"] if e["uuid"] == killed.event_uuid)
    assert rebuilt["properties"]["prompt"] == cases[killed.case_id].prompt_text() == "question 2?", (
        "an event rebuilt from a stored row has its case's prompt"
    )
    assert store.run.confirmed_event_sessions() == crashed | {store.session}
    assert not list(store.run_dir.glob("events-journal-*"))
    # A second resume finds nothing left to recover.
    with session(tmp_path) as run:
        again = EventSink(settings_for(capture.url), run)
        assert again.unconfirmed_sessions() == set()
        again.close()


# ---------------------------------------------------------------- secrets


def test_keys_never_leak_to_events_logs_or_files(
    capture: SimProc, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    anthropic_key = "sk-ant-api03-" + os.urandom(10).hex()
    settings = settings_for(capture.url, secrets=(anthropic_key,), max_retries=0, flush_timeout_s=2.0)
    caplog.set_level(logging.WARNING, logger="posthog")
    run = session(tmp_path)
    sink = EventSink(settings, run, {make_case(1).id: make_case(1, f"prompt mentioning {KEY}")})
    logging.getLogger("posthog").error("upload to %s failed with key %s", capture.url, KEY)
    assert "failed with key [secure]" in caplog.text, "a posthog log line is redacted before any handler"
    record = make_record(1, status="error", error_message=f"401 bad key {anthropic_key}")
    sink.write(record)
    sink.close()
    run.close()
    capture.outage("posthog", "500", 3.0)
    with session(tmp_path) as run:
        failing = EventSink(settings, run)
        failing.write(make_record(2))
        failing.close()
    got = orjson.dumps(received(capture)).decode()
    assert anthropic_key not in got and KEY not in got and "[secure]" in got
    assert failing.stats()["failed"] == 1
    assert sink.stats()["sdk_errors"] >= 1 and any("[secure]" in m for m in sink.stats()["sdk_messages"])
    assert anthropic_key not in caplog.text and KEY not in caplog.text
    for path in (p for p in tmp_path.rglob("*") if p.is_file()):
        blob = path.read_bytes()
        assert anthropic_key.encode() not in blob and KEY.encode() not in blob, path.name
    assert KEY not in repr(settings)


# ---------------------------------------------------------------- hot path


def test_benchmark_build_event(benchmark) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for("http://127.0.0.1:1")
    record = make_record(5)
    event = benchmark(build_event, record, settings)
    assert event["uuid"] == record.event_uuid


def test_benchmark_sink_write(benchmark, capture: SimProc, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sink = EventSink(settings_for(capture.url), session(tmp_path))
    records = _records(200)
    state = {"i": 0}

    def one() -> None:
        sink.write(records[state["i"] % 200])
        state["i"] += 1

    benchmark(one)
    sink.close()
    assert sink.stats()["handed"] == state["i"]


# ---------------------------------------------------------------- the delivery child process


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_a_dead_or_frozen_delivery_child_outboxes_every_event(
    capture: SimProc, tmp_path: Path, how: str
) -> None:
    """The child holds the PostHog client; if it dies or hangs, close() is bounded and nothing is lost."""
    sink = EventSink(settings_for(capture.url, flush_timeout_s=1.0, shutdown_join_s=0.5), session(tmp_path))
    child = sink._delivery.proc
    child.send_signal(signal.SIGKILL if how == "kill" else signal.SIGSTOP)
    try:
        records = _records(40)
        for record in records:
            sink.write(record)
        began = time.monotonic()
        sink.close()
        elapsed = time.monotonic() - began
    finally:
        if child.poll() is None:
            child.kill()
    stats = sink.stats()
    assert stats["delivered"] == 0
    assert stats["outboxed"] == 40
    assert elapsed < 1.0 + 0.5 + 5.0 + 2.0
    outbox = {e["uuid"] for e in read_events(sink.run.events_outbox)}
    assert outbox == {r.event_uuid for r in records}


def test_the_delivery_child_ignores_a_terminal_ctrl_c(capture: SimProc, tmp_path: Path) -> None:
    sink = EventSink(settings_for(capture.url), session(tmp_path))
    child = sink._delivery.proc
    # A terminal's Ctrl-C goes to the foreground process group: the child is not in it.
    assert os.getsid(child.pid) != os.getsid(0)
    records = _records(30)
    for record in records[:10]:
        sink.write(record)
    deadline = time.monotonic() + 20
    while received(capture)["unique"] < 10 and time.monotonic() < deadline:
        time.sleep(0.05)  # the child is up and delivering
    child.send_signal(signal.SIGINT)
    child.send_signal(signal.SIGTERM)
    for record in records[10:]:
        sink.write(record)
    sink.close()
    assert sink.stats()["delivered"] == 30
    got = received(capture)
    assert got["unique"] == 30
    assert all("$lib" in e["properties"] for e in got["events"]), (
        "v0 keeps $lib in the properties; v1 moves it"
    )


def test_a_prestarted_delivery_child_is_adopted_and_gets_its_key_only_through_the_pipe(
    capture: SimProc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.events import pipe as eventproc

    monkeypatch.setenv("POSTHOG_API_KEY", KEY)  # as a user would have it: it must not reach the child's env
    eventproc.prestart()
    proc = eventproc._PRESTARTED[0].proc
    environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
    assert KEY.encode() not in environ and b"POSTHOG_API_KEY" not in environ
    sink = EventSink(settings_for(capture.url), session(tmp_path))
    assert sink._delivery.proc is proc and not eventproc._PRESTARTED
    assert sink.wait_ready()
    records = _records(20)
    for record in records:
        sink.write(record)
    sink.close()
    assert sink.stats()["delivered"] == 20
    assert received(capture)["unique"] == 20


def test_an_unconfigured_prestarted_child_exits_when_the_harness_does_not_need_it() -> None:
    from harness.events import pipe as eventproc

    eventproc.prestart()
    child = eventproc.take_prestarted()
    assert child is not None
    assert child.proc.stdin is not None
    child.proc.stdin.close()  # what a harness that failed before its first event amounts to
    assert child.proc.wait(timeout=20) == 3
    child.close()
