"""The unchanged posthog SDK against the simulator's capture endpoints."""

from __future__ import annotations

import gzip
import json
import time
import urllib.error
import urllib.request
import uuid

import posthog
import pytest

from tests.simproc import SimProc


def _client(sim: SimProc, **kwargs: object) -> posthog.Posthog:
    return posthog.Posthog(
        project_api_key="phc_test", host=sim.url, flush_at=100, flush_interval=0.1, **kwargs
    )


@pytest.mark.parametrize("mode", ["v0", "v0-gzip", "v1", "v1-gzip"])
def test_2000_events_arrive_exactly_once(simulator: SimProc, mode: str) -> None:
    options: dict[str, object] = {"gzip": mode.endswith("gzip")}
    if mode.startswith("v1"):
        options["capture_mode"] = "v1"
    failed: list[object] = []
    client = _client(simulator, on_error=lambda exc, batch: failed.append(exc), **options)
    sent = {str(uuid.uuid5(uuid.NAMESPACE_URL, f"{mode}-{i}")) for i in range(2000)}
    for i, event_uuid in enumerate(sorted(sent)):
        assert client.capture("claude_message_completion", distinct_id=f"u{i % 7}", uuid=event_uuid,
                              properties={"$ai_latency": 0.5, "i": i}) == event_uuid  # fmt: skip
    client.flush()
    client.shutdown()
    got = simulator.events()
    assert failed == []
    assert (got["received"], got["unique"], got["duplicates"]) == (2000, 2000, 0)
    assert {e["uuid"] for e in got["events"]} == sent
    assert all(e["event"] == "claude_message_completion" for e in got["events"])
    assert "phc_test" not in json.dumps(got)


def _raw(sim: SimProc, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(sim.url + path, data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_duplicates_are_counted_and_single_event_paths_work(simulator: SimProc) -> None:
    event = {
        "event": "e",
        "distinct_id": "d",
        "uuid": "00000000-0000-4000-8000-000000000001",
        "properties": {},
    }
    batch = json.dumps({"api_key": "phc_test", "batch": [event, event]}).encode()
    assert _raw(simulator, "/batch/", gzip.compress(batch), {"Content-Encoding": "gzip"})[0] == 200
    single = json.dumps({**event, "api_key": "phc_test"}).encode()
    for path in ("/i/v0/e/", "/e/", "/capture/"):
        assert _raw(simulator, path, single)[0] == 200
    summary = simulator.events(summary=True)
    assert summary == {"received": 5, "unique": 1, "duplicates": 4}
    assert "events" not in summary
    [stored] = simulator.events()["events"]
    assert "api_key" not in stored


def test_missing_api_key_is_400_and_stores_nothing(simulator: SimProc) -> None:
    body = json.dumps({"batch": [{"event": "e", "distinct_id": "d", "uuid": str(uuid.uuid4())}]}).encode()
    status, payload = _raw(simulator, "/batch/", body)
    assert status == 400 and b"api_key" in payload
    assert _raw(simulator, "/batch/", b"not json")[0] == 400
    assert simulator.events(summary=True)["received"] == 0


def test_posthog_outage_500_then_delivered_by_retry(simulator: SimProc) -> None:
    simulator.outage("posthog", "500", 0.8)
    assert _raw(simulator, "/batch/", json.dumps({"api_key": "k", "batch": []}).encode())[0] == 500
    client = _client(simulator, max_retries=3)
    for i in range(50):
        client.capture("e", distinct_id="d", uuid=str(uuid.uuid5(uuid.NAMESPACE_URL, f"outage-{i}")))
    client.flush()
    client.shutdown()
    assert simulator.events(summary=True) == {"received": 50, "unique": 50, "duplicates": 0}


def test_posthog_outage_refuse_drops_connections_then_recovers(simulator: SimProc) -> None:
    simulator.outage("posthog", "refuse", 0.5)
    body = json.dumps(
        {"api_key": "k", "batch": [{"event": "e", "distinct_id": "d", "uuid": str(uuid.uuid4())}]}
    ).encode()
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        _raw(simulator, "/batch/", body)
    assert simulator.events(summary=True)["received"] == 0  # the control API still answers
    time.sleep(0.6)
    assert _raw(simulator, "/batch/", body)[0] == 200
    assert simulator.events(summary=True)["received"] == 1
