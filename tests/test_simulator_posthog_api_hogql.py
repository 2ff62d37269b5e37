"""The simulator's HogQL subset, in process: parsing, PostHog's value semantics, limits, refusals."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from harness.simulator.hogql import HogQLError, ch_uuid_key, parse_query, run_query
from harness.simulator.posthog_data import (
    AI_EVENTS,
    EVENTS,
    ai_events_row,
    events_row,
    is_split,
    stored_event,
)

TZ = "Europe/Berlin"
T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


def _event(i: int, *, at: datetime = T0, name: str = "$ai_generation", **props: Any) -> dict[str, Any]:
    return {
        "event": name,
        "uuid": str(uuid.UUID(int=(i * 0x9E3779B97F4A7C15 + 12345) % (1 << 128))),
        "distinct_id": f"user-{i % 3}",
        "timestamp": at.isoformat(),
        "properties": {"i": i, **props},
    }


def _tables(raw: list[dict[str, Any]], cutover: datetime = T0) -> dict[str, Any]:
    events, ai = [], []
    for r in raw:
        ev = stored_event(r, key="", fallback=T0, strict=True)
        split = is_split(ev, cutover)
        events.append(events_row(ev, split=split))
        if split:
            ai.append(ai_events_row(ev, retention_days=0))
    return {"events": (EVENTS, events), "posthog.ai_events": (AI_EVENTS, ai)}


def _run(sql: str, raw: list[dict[str, Any]], **kw: Any) -> Any:
    return run_query(sql, _tables(raw), tz_name=TZ, **kw)


def _error(sql: str, raw: list[dict[str, Any]] | None = None) -> HogQLError:
    with pytest.raises(HogQLError) as info:
        _run(sql, raw or [_event(1)])
    return info.value


def test_property_access_is_hogqls_text_and_jsonextractraw_is_raw_json() -> None:
    raw = [_event(1, text='say "hi"\nbye', arr=[{"a": 1}], num=2.5, flag=True, nothing=None)]
    res = _run(
        "SELECT properties.text, properties['arr'], properties.num, properties.flag, properties.nothing, "
        "properties.missing, JSONExtractRaw(properties, 'text'), JSONExtractRaw(properties, 'missing'), "
        "properties.arr.1.a FROM events",
        raw,
    )
    [row] = res.results
    # a string loses its outer quotes but stays JSON-escaped; objects/arrays are compact JSON
    assert row == [
        'say \\"hi\\"\\nbye',
        '[{"a":1}]',
        "2.5",
        "true",
        None,
        None,
        '"say \\"hi\\"\\nbye"',
        "",
        "1",
    ]
    assert res.types[0] == ["properties.text", "Nullable(String)"]
    assert res.types[6] == ["JSONExtractRaw(properties, 'text')", "String"]
    assert json.loads(row[1]) == [{"a": 1}]


def test_timestamps_come_back_in_the_project_timezone_and_strings_are_read_there() -> None:
    raw = [_event(1, at=T0), _event(2, at=T0 + timedelta(hours=1))]
    res = _run(
        "SELECT timestamp, toString(timestamp) FROM events WHERE timestamp = '2026-05-01 14:00:00'", raw
    )
    [[moment, text]] = res.results
    assert moment.isoformat() == "2026-05-01T14:00:00+02:00" and moment == T0
    assert text == "2026-05-01 14:00:00.000000"
    assert res.types[0] == ["timestamp", "DateTime64(6, 'Europe/Berlin')"]
    utc = _run(
        "SELECT uuid FROM events WHERE timestamp >= toDateTime64('2026-05-01 12:30:00', 6, 'UTC')", raw
    )
    assert len(utc.results) == 1
    assert (
        _error("SELECT uuid FROM events WHERE timestamp > '2026-05-01T12:00:00Z'").code == "cannot_parse_text"
    )
    assert (
        _error("SELECT uuid FROM events WHERE timestamp > '2026-05-01 12:00:00+00:00'").code
        == "cannot_parse_text"
    )


def test_uuids_sort_by_their_second_half_as_in_clickhouse() -> None:
    a = "ffffffff-ffff-4fff-8000-000000000001"
    b = "00000000-0000-4000-8000-000000000002"
    assert ch_uuid_key(a) < ch_uuid_key(b)  # lexicographically a > b
    raw = [{**_event(1), "uuid": b}, {**_event(2), "uuid": a}]
    assert [r[0] for r in _run("SELECT uuid FROM events ORDER BY uuid", raw).results] == [a, b]
    assert [r[0] for r in _run(f"SELECT uuid FROM events WHERE uuid > '{a}'", raw).results] == [b]


@pytest.mark.parametrize("form", ["tuple", "or"])
def test_keyset_pages_over_equal_timestamps_return_every_row_once(form: str) -> None:
    raw = [_event(i, at=T0 + timedelta(seconds=i // 4)) for i in range(23)]  # runs of 4 equal timestamps
    seen: list[str] = []
    last: tuple[str, str] | None = None
    for _ in range(20):
        where = ""
        if last is not None:
            ts, uid = last
            lit = f"toDateTime64('{ts}', 6, 'UTC')"
            where = (
                f"WHERE (timestamp, uuid) > ({lit}, '{uid}')"
                if form == "tuple"
                else f"WHERE timestamp > {lit} OR (timestamp = {lit} AND uuid > '{uid}')"
            )
        res = _run(f"SELECT uuid, timestamp FROM events {where} ORDER BY timestamp, uuid LIMIT 3", raw)
        if not res.results:
            break
        seen += [r[0] for r in res.results]
        uid, moment = res.results[-1]
        last = (moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"), uid)
    assert sorted(seen) == sorted(r["uuid"] for r in raw) and len(seen) == len(set(seen))


def test_limits_follow_posthogs_runner() -> None:
    raw = [_event(i) for i in range(150)]
    page = _run("SELECT uuid FROM events", raw)
    assert (len(page.results), page.has_more, page.limit, page.offset) == (100, True, 100, 0)
    small = _run("SELECT uuid FROM events WHERE properties.i = 3", raw)
    assert (len(small.results), small.has_more) == (1, False)
    explicit = _run("SELECT uuid FROM events LIMIT 120", raw)
    assert (len(explicit.results), explicit.has_more, explicit.limit, explicit.offset) == (
        120,
        None,
        None,
        None,
    )
    many = [{"uuid": str(uuid.UUID(int=i)), "event": "e"} for i in range(50_010)]
    capped = run_query("SELECT uuid FROM events LIMIT 60000", {"events": (EVENTS, many)}, tz_name=TZ)
    assert len(capped.results) == 50_000 and capped.has_more is None


def test_conditions_nulls_in_and_aliases() -> None:
    raw = [_event(1, model="a"), _event(2, model="b"), _event(3), _event(4, name="other", model="a")]
    ids = lambda sql: sorted(r[0] for r in _run(sql, raw).results)  # noqa: E731
    assert ids("SELECT properties.i FROM events WHERE properties.model = 'a'") == ["1", "4"]
    assert ids("SELECT properties.i FROM events WHERE properties.model != 'a'") == ["2"]  # NULL is not kept
    assert ids("SELECT properties.i FROM events WHERE properties.model IS NULL") == ["3"]
    assert ids("SELECT properties.i FROM events WHERE event IN ('other', 'x') OR NOT properties.i < 3") == [
        "3",
        "4",
    ]
    assert ids("SELECT properties.i AS n FROM events WHERE n > 2 AND event = '$ai_generation'") == ["3"]
    ordered = _run("SELECT properties.i AS n FROM events ORDER BY n DESC", raw).results
    assert [r[0] for r in ordered] == ["4", "3", "2", "1"]
    assert _run("SELECT count() FROM events WHERE properties.model = 'a'", raw).results == [[2]]


def test_ai_events_has_the_split_columns_and_events_lost_the_heavy_properties() -> None:
    before = _event(1, at=T0 - timedelta(days=1), **{"$ai_input": [1], "$ai_model": "m"})
    after = _event(
        2, at=T0, **{"$ai_input": [2], "$ai_output_choices": ["x"], "$ai_model": "m", "$ai_trace_id": "t"}
    )
    other = _event(3, at=T0, name="claude_message_completion", **{"$ai_input": [3]})
    tables = _tables([before, after, other])
    ev = run_query(
        "SELECT properties.i, properties.$ai_input FROM events ORDER BY properties.i", tables, tz_name=TZ
    )
    assert ev.results == [["1", "[1]"], ["2", None], ["3", "[3]"]]
    ai = run_query(
        "SELECT ai_events.uuid, trace_id, model, input, output_choices, properties.$ai_input, is_error "
        "FROM posthog.ai_events AS ai_events",
        tables,
        tz_name=TZ,
    )
    assert ai.results == [[after["uuid"], "t", "m", "[2]", '["x"]', None, 0]]
    assert ai.columns[0] == "uuid"


def test_placeholders_fill_values() -> None:
    raw = [_event(1), _event(2, at=T0 + timedelta(hours=2))]
    res = _run(
        "SELECT uuid FROM events WHERE timestamp >= toDateTime64({since}, 6, 'UTC') LIMIT {n}",
        raw,
        values={"since": "2026-05-01 13:00:00", "n": 5},
    )
    assert [r[0] for r in res.results] == [raw[1]["uuid"]]
    assert "Placeholder" in _error("SELECT uuid FROM events WHERE event = {nope}").message


@pytest.mark.parametrize(
    ("sql", "code", "needle"),
    [
        ("SELECT * FROM events", "hogql_query_error", "SELECT *"),
        ("SELECT event, count() FROM events GROUP BY event", "hogql_query_error", "GROUP BY"),
        ("SELECT e.uuid FROM events e JOIN persons p ON p.id = e.person_id", "hogql_query_error", "JOIN"),
        ("SELECT uuid FROM events LIMIT 10 OFFSET 10", "hogql_query_error", "keyset pagination"),
        ("SELECT uuid FROM events LIMIT 10, 10", "hogql_query_error", "OFFSET"),
        ("SELECT uuid FROM persons", "hogql_query_error", "Unknown table `persons`"),
        ("SELECT nope FROM events", "hogql_query_error", "Unable to resolve field: nope"),
        ("SELECT uuid FROM events WHERE uuid > 'not-a-uuid'", "cannot_parse_text", "uuid"),
        ("SELECT uuid FROM events WHERE timestamp > 5", "hogql_query_error", "Cannot compare"),
        ("SELECT lower(event) FROM events", "hogql_query_error", "lower()"),
        ("SELECT uuid FROM events WHERE", "hogql_syntax_error", "end of query"),
        ("SELECT uuid events", "hogql_syntax_error", "FROM"),
        ("SELECT 'open FROM events", "hogql_syntax_error", "unterminated"),
        ("SELECT uuid FROM events WHERE uuid", "hogql_query_error", "condition"),
        ("SELECT uuid FROM (SELECT uuid FROM events)", "hogql_query_error", "subquery"),
    ],
)
def test_anything_outside_the_subset_is_a_named_error(sql: str, code: str, needle: str) -> None:
    err = _error(sql)
    assert err.code == code and needle in err.message, err.message


def test_the_parser_reads_quotes_escapes_and_keywords_in_any_case() -> None:
    q = parse_query(
        "select `uuid`, \"event\" as e from events where event = 'it''s \\'x\\'' order by timestamp desc;"
    )
    assert [i.alias for i in q.select] == [None, "e"] and q.order[0][1] is True
    assert q.where.right.value == "it's 'x'"
