"""The simulated PostHog app API over real sockets: keys, HogQL queries over both tables,
timezones, the AI-events split, limits, throttling, capture → query, insights and dashboards."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import posthog
import pytest

from tests.simproc import SimProc, start_simulator

KEY = "phx_test_importer_key"
OTHER_KEY = "phx_test_second_key"
PROJECT = 7
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def sim_module() -> Iterator[SimProc]:
    sim = start_simulator(
        "--time-scale", "0",
        "--posthog-personal-key", KEY,
        "--posthog-personal-key", OTHER_KEY,
        "--posthog-project-id", str(PROJECT),
    )  # fmt: skip
    yield sim
    sim.stop()


@pytest.fixture
def sim(sim_module: SimProc) -> SimProc:
    sim_module.reset()
    return sim_module


def _call(
    sim: SimProc, method: str, path: str, body: Any = None, *, key: str | None = KEY
) -> tuple[int, dict[str, str], Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(sim.url + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read() or b"null")


def _query(sim: SimProc, sql: str, **values: Any) -> tuple[int, dict[str, str], Any]:
    node: dict[str, Any] = {"kind": "HogQLQuery", "query": sql}
    if values:
        node["values"] = values
    return _call(sim, "POST", f"/api/projects/{PROJECT}/query/", {"query": node})


def _ok(sim: SimProc, sql: str, **values: Any) -> dict[str, Any]:
    status, _, body = _query(sim, sql, **values)
    assert status == 200, body
    return body


def _seed(sim: SimProc, events: Any) -> dict[str, Any]:
    status, _, body = _call(sim, "POST", "/_sim/posthog/seed", events, key=None)
    assert status == 200, body
    return body


def _event(i: int, at: datetime, name: str = "$ai_generation", **props: Any) -> dict[str, Any]:
    return {
        "event": name,
        "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"api-test-{i}")),
        "distinct_id": f"user-{i % 5}",
        "timestamp": at.isoformat(),
        "properties": {"i": i, **props},
    }


def _log(sim: SimProc) -> list[dict[str, Any]]:
    return _call(sim, "GET", "/_sim/posthog/api-log", key=None)[2]["calls"]


def _utc_literal(rendered: str) -> str:
    """A result timestamp (project timezone, ISO 8601) as an unambiguous HogQL UTC literal."""
    moment = datetime.fromisoformat(rendered).astimezone(UTC)
    return f"toDateTime64('{moment.strftime('%Y-%m-%d %H:%M:%S.%f')}', 6, 'UTC')"


def test_keys_are_checked_with_posthogs_401_bodies(sim: SimProc) -> None:
    status, headers, body = _call(sim, "GET", f"/api/projects/{PROJECT}/", key=None)
    assert status == 401 and headers.get("WWW-Authenticate") == "Bearer"
    assert body == {
        "type": "authentication_error",
        "code": "not_authenticated",
        "detail": "Authentication credentials were not provided.",
        "attr": None,
    }
    status, _, body = _call(
        sim, "POST", f"/api/projects/{PROJECT}/query/", {}, key="phc_project_key_is_not_personal"
    )
    assert status == 401
    assert body == {
        "type": "authentication_error",
        "code": "authentication_failed",
        "detail": "Personal API key found in request Authorization header is invalid.",
        "attr": None,
    }
    status, _, project = _call(sim, "GET", f"/api/projects/{PROJECT}/", key=OTHER_KEY)
    assert status == 200
    assert project["id"] == PROJECT and project["timezone"] == "Europe/Berlin"
    assert _call(sim, "GET", "/api/projects/@current/")[2]["id"] == PROJECT
    assert _call(sim, "GET", "/api/projects/1/")[0] == 404
    assert [c["status"] for c in _log(sim)] == [401, 401, 200, 200, 404]


@pytest.mark.parametrize(("table", "form"), [("events", "tuple"), ("posthog.ai_events", "or")])
def test_keyset_pages_over_equal_timestamps_return_every_row_once(
    sim: SimProc, table: str, form: str
) -> None:
    start = NOW - timedelta(days=2)
    events = [_event(i, start + timedelta(seconds=i // 5), **{"$ai_input": [i]}) for i in range(37)]
    assert _seed(sim, events) == {"seeded": 37, "duplicates": 0, "total": 37}
    seen: list[str] = []
    where = ""
    for _ in range(20):
        body = _ok(sim, f"SELECT uuid, timestamp FROM {table} {where} ORDER BY timestamp, uuid LIMIT 6")
        if not body["results"]:
            break
        seen += [row[0] for row in body["results"]]
        last_uuid, last_ts = body["results"][-1]
        ts = _utc_literal(last_ts)
        where = (
            f"WHERE (timestamp, uuid) > ({ts}, '{last_uuid}')"
            if form == "tuple"
            else f"WHERE timestamp > {ts} OR (timestamp = {ts} AND uuid > '{last_uuid}')"
        )
    assert len(seen) == 37 and set(seen) == {e["uuid"] for e in events}
    assert sum(1 for c in _log(sim) if c["path"].endswith("/query/")) == 8  # 7 pages and the empty one


def test_timestamps_are_rendered_in_the_project_timezone(sim: SimProc) -> None:
    summer = datetime(2026, 7, 1, 10, 0, 0, 250000, tzinfo=UTC)
    winter = datetime(2026, 1, 15, 23, 30, 0, tzinfo=UTC)
    _seed(
        sim,
        [
            _event(1, summer, name="claude_message_completion"),
            _event(2, winter, name="claude_message_completion"),
        ],
    )
    body = _ok(sim, "SELECT properties.i, timestamp FROM events ORDER BY timestamp")
    assert body["results"] == [["2", "2026-01-16T00:30:00+01:00"], ["1", "2026-07-01T12:00:00.250000+02:00"]]
    assert (
        body["types"][1] == ["timestamp", "DateTime64(6, 'Europe/Berlin')"]
        and body["timezone"] == "Europe/Berlin"
    )
    assert datetime.fromisoformat(body["results"][1][1]) == summer
    # a bare string is local time in the project's timezone
    local = _ok(sim, "SELECT properties.i FROM events WHERE timestamp = '2026-07-01 12:00:00.25'")
    assert local["results"] == [["1"]]


def test_heavy_ai_properties_leave_events_after_the_cutover_but_stay_in_ai_events(sim: SimProc) -> None:
    heavy = {
        "$ai_input": [{"role": "user", "content": "q"}],
        "$ai_output_choices": [{"role": "assistant", "content": "a"}],
    }
    old = _event(1, datetime(2026, 4, 1, 12, tzinfo=UTC), **heavy, **{"$ai_model": "m"})
    new = _event(2, NOW - timedelta(days=1), **heavy, **{"$ai_model": "m", "$ai_trace_id": "trace-2"})
    custom = _event(3, NOW - timedelta(days=1), name="claude_message_completion", **heavy)
    _seed(sim, [old, new, custom])
    events = _ok(
        sim, "SELECT properties.i, properties.$ai_input, properties FROM events ORDER BY properties.i"
    )
    got = {row[0]: (row[1], json.loads(row[2])) for row in events["results"]}
    assert json.loads(got["1"][0]) == heavy["$ai_input"]  # before the cutover: kept
    assert got["2"][0] is None and "$ai_output_choices" not in got["2"][1] and got["2"][1]["$ai_model"] == "m"
    assert json.loads(got["3"][0]) == heavy["$ai_input"]  # not an $ai_ event: never split
    ai = _ok(sim, "SELECT uuid, trace_id, model, input, output_choices, properties FROM posthog.ai_events")
    [[row_uuid, trace, model, raw_in, raw_out, props]] = ai["results"]
    assert (row_uuid, trace, model) == (new["uuid"], "trace-2", "m")
    assert json.loads(raw_in) == heavy["$ai_input"] and json.loads(raw_out) == heavy["$ai_output_choices"]
    assert "$ai_input" not in json.loads(props)


def test_the_50000_row_cap_and_has_more(sim: SimProc) -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    _seed(sim, [{"event": "e", "uuid": str(uuid.UUID(int=i + 1)), "distinct_id": "d",
                 "timestamp": (start + timedelta(seconds=i)).isoformat()} for i in range(50_001)])  # fmt: skip
    capped = _ok(sim, "SELECT uuid FROM events ORDER BY timestamp LIMIT 60000")
    assert len(capped["results"]) == 50_000 and capped["hasMore"] is None and capped["limit"] is None
    default = _ok(sim, "SELECT uuid FROM events ORDER BY timestamp")
    assert (len(default["results"]), default["hasMore"], default["limit"], default["offset"]) == (
        100,
        True,
        100,
        0,
    )
    assert [c.get("rows") for c in _log(sim)] == [50_000, 100]


def test_the_throttle_fault_answers_429_with_retry_after(sim: SimProc) -> None:
    status, _, faults = _call(sim, "POST", "/_sim/faults",
                              {"posthog_throttle_every": 2, "posthog_retry_after_s": 2}, key=None)  # fmt: skip
    assert status == 200 and faults["posthog_throttle_every"] == 2
    statuses = []
    for _ in range(4):
        status, headers, body = _query(sim, "SELECT uuid FROM events LIMIT 1")
        statuses.append(status)
        if status == 429:
            assert headers["Retry-After"] == "2"
            assert body == {
                "type": "throttled_error",
                "code": "throttled",
                "detail": "Request was throttled. Expected available in 2 seconds.",
                "attr": None,
            }
    assert statuses == [200, 429, 200, 429]
    _call(
        sim,
        "POST",
        "/_sim/faults",
        {"rates": {"posthog_throttle": 1.0}, "posthog_throttle_every": 0},
        key=None,
    )
    assert _query(sim, "SELECT uuid FROM events LIMIT 1")[0] == 429
    assert _call(sim, "GET", f"/api/projects/{PROJECT}/insights/")[0] == 200  # only queries are throttled
    assert [c["status"] for c in _log(sim)].count(429) == 3
    sim.reset()  # restores the startup faults
    assert _query(sim, "SELECT uuid FROM events LIMIT 1")[0] == 200


def test_the_throttle_fault_from_the_command_line() -> None:
    with start_simulator(
        "--time-scale", "0", "--faults", "posthog_throttle_every=1,posthog_retry_after_s=0"
    ) as sim:
        status, headers, body = _call(
            sim, "POST", "/api/projects/1/query/", {}, key="phx_simulator_personal_api_key"
        )
        assert status == 429 and "Retry-After" not in headers and body["code"] == "throttled"
        assert _call(sim, "GET", "/_sim/faults", key=None)[2]["posthog_throttle_every"] == 1


@pytest.mark.parametrize(
    ("node", "code"),
    [
        ({"kind": "HogQLQuery", "query": "SELECT event, count() FROM events GROUP BY event"}, "hogql_query_error"),
        ({"kind": "HogQLQuery", "query": "SELECT uuid FROM events LIMIT 10 OFFSET 10"}, "hogql_query_error"),
        ({"kind": "HogQLQuery", "query": "SELEC uuid FROM events"}, "hogql_syntax_error"),
        ({"kind": "HogQLQuery", "query": "SELECT uuid FROM events WHERE timestamp > '2026-05-01T00:00:00Z'"},
         "cannot_parse_text"),
        ({"kind": "TrendsQuery", "series": []}, "invalid_input"),
    ],
)  # fmt: skip
def test_an_unsupported_query_is_a_400_in_posthogs_shape(
    sim: SimProc, node: dict[str, Any], code: str
) -> None:
    status, _, body = _call(sim, "POST", f"/api/projects/{PROJECT}/query/", {"query": node})
    assert status == 400 and body["type"] == "validation_error" and body["code"] == code
    assert set(body) == {"type", "code", "detail", "attr"} and body["detail"]


def test_events_captured_with_the_sdk_come_back_from_the_query(sim: SimProc) -> None:
    client = posthog.Posthog(project_api_key="phc_test", host=sim.url, flush_at=50, flush_interval=0.1)
    sent = {}
    for i, name in enumerate(["claude_message_completion", "$ai_generation"] * 3):
        props = {"$ai_input": [{"role": "user", "content": f"prompt {i}"}], "$ai_model": "claude-haiku-4-5"}
        sent[client.capture(name, distinct_id=f"user-{i}", properties=props)] = (name, i)
    client.flush()
    client.shutdown()
    assert sim.events(summary=True)["unique"] == 6
    body = _ok(
        sim, "SELECT uuid, event, distinct_id, properties.$ai_input FROM events ORDER BY timestamp, uuid"
    )
    assert {row[0]: (row[1], row[2]) for row in body["results"]} == {
        u: (name, f"user-{i}") for u, (name, i) in sent.items()
    }
    kept = [json.loads(row[3]) for row in body["results"] if row[1] == "claude_message_completion"]
    assert len(kept) == 3 and all(k[0]["role"] == "user" for k in kept)
    ai = _ok(sim, "SELECT uuid, input FROM posthog.ai_events WHERE event = {name}", name="$ai_generation")
    assert {row[0] for row in ai["results"]} == {
        u for u, (name, _) in sent.items() if name == "$ai_generation"
    }
    assert all(json.loads(row[1])[0]["content"].startswith("prompt ") for row in ai["results"])


def test_insights_and_dashboards(sim: SimProc) -> None:
    base = f"/api/projects/{PROJECT}"
    status, _, dash = _call(
        sim, "POST", f"{base}/dashboards/", {"name": "Claude usage", "description": "tutorial"}
    )
    assert (
        status == 201
        and dash["name"] == "Claude usage"
        and dash["tiles"] == []
        and isinstance(dash["id"], int)
    )
    query = {
        "kind": "InsightVizNode",
        "source": {"kind": "TrendsQuery", "series": [{"kind": "EventsNode", "event": "claude_message_completion",
                                                       "math": "sum", "math_property": "total_cost_in_dollars"}]},
    }  # fmt: skip
    status, _, ins = _call(
        sim, "POST", f"{base}/insights/", {"name": "Cost", "query": query, "dashboards": [dash["id"]]}
    )
    assert status == 201 and ins["query"] == query and ins["dashboards"] == [dash["id"]]
    assert len(ins["short_id"]) == 8 and ins["dashboard_tiles"][0]["dashboard_id"] == dash["id"]
    status, _, other = _call(sim, "POST", f"{base}/insights/", {"name": "Latency", "query": query})
    assert status == 201 and other["dashboards"] == []

    listed = _call(sim, "GET", f"{base}/insights/?search=cos")[2]
    assert listed["count"] == 1 and listed["results"][0]["id"] == ins["id"] and listed["next"] is None
    assert (
        _call(sim, "GET", f"{base}/insights/?short_id={other['short_id']}")[2]["results"][0]["name"]
        == "Latency"
    )
    page = _call(sim, "GET", f"{base}/insights/?limit=1")[2]
    assert (
        page["count"] == 2
        and len(page["results"]) == 1
        and page["next"].endswith(f"{base}/insights/?limit=1&offset=1")
    )

    status, _, patched = _call(sim, "PATCH", f"{base}/insights/{other['id']}/",
                               {"name": "Latency p95", "dashboards": [dash["id"]]})  # fmt: skip
    assert status == 200 and patched["name"] == "Latency p95" and patched["dashboards"] == [dash["id"]]
    status, _, renamed = _call(sim, "PATCH", f"{base}/dashboards/{dash['id']}/", {"name": "Claude costs"})
    assert status == 200 and renamed["name"] == "Claude costs"
    full = _call(sim, "GET", f"{base}/dashboards/{dash['id']}/")[2]
    assert [t["insight"]["name"] for t in full["tiles"]] == ["Cost", "Latency p95"]
    assert full["tiles"][0]["insight"]["query"] == query
    dashboards = _call(sim, "GET", f"{base}/dashboards/")[2]
    assert dashboards["count"] == 1 and "tiles" not in dashboards["results"][0]
    layout = {"sm": {"x": 0, "y": 0, "w": 6, "h": 5}}
    tile_id = full["tiles"][1]["id"]
    status, _, laid = _call(
        sim, "PATCH", f"{base}/dashboards/{dash['id']}/", {"tiles": [{"id": tile_id, "layouts": layout}]}
    )
    assert status == 200 and laid["tiles"][1]["layouts"] == layout
    assert _call(sim, "PATCH", f"{base}/dashboards/{dash['id']}/", {"tiles": [{"id": 999}]})[0] == 400
    assert _call(sim, "POST", f"{base}/dashboards/", [1, 2])[2]["code"] == "invalid_input"

    _call(sim, "PATCH", f"{base}/insights/{ins['id']}/", {"dashboards": []})
    assert [
        t["insight"]["id"] for t in _call(sim, "GET", f"{base}/dashboards/{dash['id']}/")[2]["tiles"]
    ] == [other["id"]]
    status, _, bad = _call(sim, "POST", f"{base}/insights/", {"name": "x", "dashboards": [999]})
    assert status == 400 and bad["code"] == "does_not_exist" and bad["attr"] == "dashboards"
    status, _, bad = _call(sim, "POST", f"{base}/insights/", {"query": {"kind": "InsightVizNode"}})
    assert status == 400 and bad["attr"] == "query"
    assert _call(sim, "DELETE", f"{base}/dashboards/{dash['id']}/")[0] == 405
    _call(sim, "PATCH", f"{base}/dashboards/{dash['id']}/", {"deleted": True})
    assert _call(sim, "GET", f"{base}/dashboards/{dash['id']}/")[0] == 404
    assert _call(sim, "GET", f"{base}/dashboards/")[2]["count"] == 0
    assert _call(sim, "GET", f"/api/environments/{PROJECT}/insights/")[2]["count"] == 2


def test_reset_forgets_seeds_insights_dashboards_and_the_log(sim: SimProc) -> None:
    _seed(sim, [_event(1, NOW - timedelta(hours=1))])
    _call(sim, "POST", f"/api/projects/{PROJECT}/dashboards/", {"name": "d"})
    _call(sim, "POST", f"/api/projects/{PROJECT}/insights/", {"name": "i"})
    assert len(_ok(sim, "SELECT uuid FROM posthog.ai_events")["results"]) == 1
    sim.reset()
    assert _log(sim) == []
    assert _ok(sim, "SELECT uuid FROM events")["results"] == []
    assert _call(sim, "GET", f"/api/projects/{PROJECT}/insights/")[2]["count"] == 0
    assert _call(sim, "GET", f"/api/projects/{PROJECT}/dashboards/")[2]["count"] == 0
    status, _, dash = _call(sim, "POST", f"/api/projects/{PROJECT}/dashboards/", {"name": "again"})
    assert status == 201 and dash["id"] == 1


def test_a_posthog_outage_covers_the_app_api(sim: SimProc) -> None:
    sim.outage("posthog", "500", 0.4)
    status, _, body = _query(sim, "SELECT uuid FROM events LIMIT 1")
    assert status == 500 and body == {
        "type": "server_error", "code": "error", "detail": "A server error occurred.", "attr": None,
    }  # fmt: skip
    time.sleep(0.5)
    assert _query(sim, "SELECT uuid FROM events LIMIT 1")[0] == 200
    assert [(c["status"], c["query_string"]) for c in _log(sim)] == [(500, ""), (200, "")]


def test_seed_rejects_a_malformed_event_and_stores_nothing(sim: SimProc) -> None:
    good = _event(1, NOW)
    status, _, body = _call(sim, "POST", "/_sim/posthog/seed", [good, {**good, "uuid": "nope"}], key=None)
    assert status == 400 and "events[1].uuid" in body["error"]
    assert _seed(sim, {"events": [good, good]}) == {"seeded": 1, "duplicates": 1, "total": 1}


def test_a_bad_posthog_option_stops_the_simulator_with_exit_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "harness.simulator", "--port", "0", "--posthog-timezone", "Mars/Olympus_Mons"],
        capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 2 and "--posthog-timezone" in done.stderr
