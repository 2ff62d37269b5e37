"""The simulated PostHog's two queryable tables, `events` and `posthog.ai_events`, and how an
event becomes their rows (PostHog's ingestion, reduced to what an importer can observe).

Since PostHog splits AI events at ingestion, an event named `$ai_*` (e.g. `$ai_generation`)
captured on or after the cutover date has a trimmed copy in `events` (without the large
properties `$ai_input`, `$ai_output`, `$ai_output_choices`, `$ai_input_state`,
`$ai_output_state`, `$ai_tools`) and a full copy in `posthog.ai_events`, where those six are
the columns `input`, `output`, `output_choices`, `input_state`, `output_state`, `tools` (raw
JSON text) and are left out of its `properties`; an `ai_events` row is dropped
`retention_days` (30) after its day. Other events (`claude_message_completion` included)
keep every property in `events` and have no `ai_events` row. The cutover is compared with the
event's own timestamp (the simulator has no ingestion history). Column lists and types follow
PostHog's HogQL schema (`posthog/hogql/database/schema/ai_events.py`) and ClickHouse table.
This module must not handle HTTP.
"""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from harness.simulator.hogql import Column, Table, json_text

__all__ = [
    "AI_EVENTS",
    "AI_PREFIX",
    "EVENTS",
    "HEAVY_AI_PROPERTIES",
    "StoredEvent",
    "ai_events_row",
    "ai_row_visible",
    "events_row",
    "is_split",
    "parse_timestamp",
    "stored_event",
]

AI_PREFIX = "$ai_"
HEAVY_AI_PROPERTIES = (
    "$ai_input",
    "$ai_output",
    "$ai_output_choices",
    "$ai_input_state",
    "$ai_output_state",
    "$ai_tools",
)

_DT = "DateTime64(6, '{tz}')"


def _columns(*cols: Column) -> dict[str, Column]:
    return {c.name: c for c in cols}


EVENTS = Table(
    "events",
    frozenset({"events"}),
    _columns(
        Column("uuid", "uuid", "UUID"),
        Column("event", "string", "String"),
        Column("properties", "string", "String", json=True),
        Column("timestamp", "datetime", _DT),
        Column("distinct_id", "string", "String"),
        Column("person_id", "uuid", "UUID"),
        Column("elements_chain", "string", "String"),
        Column("$session_id", "string", "String"),
    ),
)

_S, _NS, _LNS = "String", "Nullable(String)", "LowCardinality(Nullable(String))"
_NI, _NF = "Nullable(Int64)", "Nullable(Float64)"

# column, property it comes from, kind, ClickHouse type
_AI_SCALARS: tuple[tuple[str, str, str, str], ...] = (
    ("session_id", "$ai_session_id", "string", _NS),
    ("parent_id", "$ai_parent_id", "string", _NS),
    ("span_id", "$ai_span_id", "string", _NS),
    ("span_type", "$ai_span_type", "string", _LNS),
    ("generation_id", "$ai_generation_id", "string", _NS),
    ("experiment_id", "$ai_experiment_id", "string", _NS),
    ("span_name", "$ai_span_name", "string", _NS),
    ("trace_name", "$ai_trace_name", "string", _NS),
    ("prompt_name", "$ai_prompt_name", "string", _NS),
    ("model", "$ai_model", "string", _LNS),
    ("provider", "$ai_provider", "string", _LNS),
    ("framework", "$ai_framework", "string", _LNS),
    *(
        (name, f"$ai_{name}", "int", _NI)
        for name in (
            "total_tokens", "input_tokens", "output_tokens", "text_input_tokens", "text_output_tokens",
            "image_input_tokens", "image_output_tokens", "audio_input_tokens", "audio_output_tokens",
            "video_input_tokens", "video_output_tokens", "reasoning_tokens", "cache_read_input_tokens",
            "cache_creation_input_tokens", "web_search_count",
        )
    ),
    *(
        (name, f"$ai_{name}", "float", _NF)
        for name in (
            "input_cost_usd", "output_cost_usd", "total_cost_usd", "request_cost_usd", "web_search_cost_usd",
            "audio_cost_usd", "image_cost_usd", "video_cost_usd", "latency", "time_to_first_token",
        )
    ),
    ("error", "$ai_error", "string", _NS),
    ("error_type", "$ai_error_type", "string", _LNS),
    ("error_normalized", "$ai_error_normalized", "string", _NS),
)  # fmt: skip

AI_EVENTS = Table(
    "posthog.ai_events",
    frozenset({"ai_events", "posthog.ai_events"}),
    _columns(
        Column("uuid", "uuid", "UUID"),
        Column("event", "string", "LowCardinality(String)"),
        Column("timestamp", "datetime", _DT),
        Column("distinct_id", "string", _S),
        Column("person_id", "uuid", "UUID"),
        Column("properties", "string", _S, json=True),
        Column("retention_days", "number", "Int16"),
        Column("trace_id", "string", _S),
        *(Column(name, "string" if kind == "string" else "number", ch) for name, _, kind, ch in _AI_SCALARS),
        Column("is_error", "number", "UInt8"),
        *(Column(p.removeprefix("$ai_"), "string", _NS, json=True) for p in HEAVY_AI_PROPERTIES),
    ),
)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One event as ingested: canonical uuid, aware UTC timestamp (microseconds), properties."""

    uuid: str
    event: str
    distinct_id: str
    timestamp: datetime
    properties: dict[str, Any]


def parse_timestamp(value: Any) -> datetime | None:
    """An ISO 8601 time (offset or `Z`; none means UTC) as an aware UTC datetime, or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def stored_event(raw: dict[str, Any], *, key: str, fallback: datetime, strict: bool) -> StoredEvent:
    """An event as sent (SDK or seed) → `StoredEvent`; `strict` (seeds) raises ValueError on
    a missing or bad field, otherwise (captured events) the gaps are filled like ingestion:
    a uuid derived from `key`, `fallback` as the time."""
    event = raw.get("event")
    if not isinstance(event, str) or not event:
        if strict:
            raise ValueError("event: a non-empty string is required")
        event = str(event or "")
    try:
        uuid = str(uuidlib.UUID(str(raw.get("uuid"))))
    except ValueError:
        if strict:
            raise ValueError(f"uuid: {raw.get('uuid')!r} is not a UUID") from None
        uuid = str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"posthog-sim:{key}"))
    moment = parse_timestamp(raw.get("timestamp"))
    if moment is None:
        if strict:
            raise ValueError(f"timestamp: {raw.get('timestamp')!r} is not an ISO 8601 time")
        moment = fallback
    distinct_id = raw.get("distinct_id")
    if strict and (not isinstance(distinct_id, str) or not distinct_id):
        raise ValueError("distinct_id: a non-empty string is required")
    properties = raw.get("properties")
    if strict and properties is not None and not isinstance(properties, dict):
        raise ValueError("properties: must be an object")
    return StoredEvent(
        uuid=uuid,
        event=event,
        distinct_id="" if distinct_id is None else str(distinct_id),
        timestamp=moment,
        properties=dict(properties) if isinstance(properties, dict) else {},
    )


def _person_id(distinct_id: str) -> str:
    return str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"posthog-sim-person:{distinct_id}"))


def is_split(event: StoredEvent, cutover: datetime) -> bool:
    """Whether ingestion splits this event between `events` and `posthog.ai_events`."""
    return event.event.startswith(AI_PREFIX) and event.timestamp >= cutover


def events_row(event: StoredEvent, *, split: bool) -> dict[str, Any]:
    """The `events` row: a split event loses its large AI properties here."""
    props = event.properties
    if split:
        props = {k: v for k, v in props.items() if k not in HEAVY_AI_PROPERTIES}
    session = props.get("$session_id")
    return {
        "uuid": event.uuid,
        "event": event.event,
        "properties": json_text(props),
        "properties#obj": props,
        "timestamp": event.timestamp,
        "distinct_id": event.distinct_id,
        "person_id": _person_id(event.distinct_id),
        "elements_chain": "",
        "$session_id": session if isinstance(session, str) else "",
    }


def _typed(value: Any, kind: str) -> Any:
    if kind == "string":
        return value if isinstance(value, str) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if kind == "int":
        return int(value) if float(value).is_integer() else None
    return float(value)


def ai_events_row(event: StoredEvent, *, retention_days: int) -> dict[str, Any]:
    """The `posthog.ai_events` row: split columns, heavy columns, properties without them."""
    props = event.properties
    row: dict[str, Any] = {
        "uuid": event.uuid,
        "event": event.event,
        "timestamp": event.timestamp,
        "distinct_id": event.distinct_id,
        "person_id": _person_id(event.distinct_id),
        "retention_days": retention_days,
        "trace_id": props["$ai_trace_id"] if isinstance(props.get("$ai_trace_id"), str) else "",
        "is_error": 1 if props.get("$ai_is_error") in (True, "true") else 0,
    }
    light = {k: v for k, v in props.items() if k not in HEAVY_AI_PROPERTIES}
    row["properties"] = json_text(light)
    row["properties#obj"] = light
    for name, source, kind, _ in _AI_SCALARS:
        row[name] = _typed(props.get(source), kind)
    for prop in HEAVY_AI_PROPERTIES:
        name = prop.removeprefix("$ai_")
        value = props.get(prop)
        row[name] = None if prop not in props else json_text(value)
        row[name + "#obj"] = value
    return row


def ai_row_visible(row: dict[str, Any], today: date) -> bool:
    """ClickHouse's TTL: the row goes on its drop date, the day of its timestamp + retention_days."""
    days = row["retention_days"]
    return days <= 0 or today < row["timestamp"].date() + timedelta(days=days)
