"""`harness import posthog`: production LLM traffic exported from PostHog → a dataset the harness replays.

Why: a team wants to know what its *real* traffic would cost and how fast it would be on
another model. PostHog holds that traffic as `$ai_generation` events (written by PostHog's
Anthropic wrapper, or by this harness) or the tutorial's `claude_message_completion` events.

Reading (`harness.posthog_api`: HogQL query API, personal key, app host). Since 30 April 2026
PostHog keeps the prompt and output of `$ai_*` events only in `posthog.ai_events` (as the
columns `input`, `output_choices`, `tools`; 30 days by default), so `$ai_*` events are read from
there first and from `events.properties` second (older events, rows past that retention,
instances without the split); any other event name only from `events`. The query text keeps to
what PostHog documents for personal-key exports:

- bounded windows of one day, each paged by keyset on `(timestamp, uuid)` in PostHog's order:
  `timestamp > X OR (timestamp = X AND uuid > 'Y')` (never OFFSET, which PostHog refuses; uuids
  are compared by ClickHouse, never here), `ORDER BY timestamp, uuid LIMIT 1000`; a query with a
  LIMIT has `hasMore` null, so a window ends at its first short page;
- instants always as `toDateTime64('…', 6, 'UTC')`: a bare string would be read in the project's
  timezone; timestamps come back in that timezone with its offset and are converted to UTC;
- `properties` is selected whole and decoded here (`properties.x` would be JSON-escaped text);
- rows are de-duplicated on uuid (the split table's copy wins: it keeps prompt and output);
  a 429 `throttled_error` is waited out by the API client.

Mapping (`case_of`): system entries of `$ai_input` → `system`, the other turns → `messages`
(consecutive same-role turns merged); `max_tokens`, `temperature`, `stop_sequences`, `top_p`,
`top_k`, `thinking`, `tool_choice`, … from `$ai_model_parameters`; `$ai_tools` → `tools`;
`distinct_id` → `user_id` unless the event was personless or it is the trace id (the wrapper's
anonymous convention); the original model, tokens, latency, time to first token and cost
under `metadata.posthog`; the call's start as `arrival_offset_s` (seconds from the first
imported call): the wrapper captures at the end, so its start is the timestamp minus
`$ai_latency`; the harness captures with the call's start as the timestamp. Every row is
checked with the dataset's own rules, so the output is a dataset `harness validate` accepts;
events that cannot be replayed are skipped and counted by reason (redacted media, privacy
mode, tool conversations without their tools, invalid rows).

Provenance: beside the output, `<file>.import.json` records the query window, host, project,
event, filter and counts with the file's sha256; a run on the file copies it into its
manifest (`dataset.import`).
"""

from __future__ import annotations

import csv
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import polars as pl

from harness.dataset import row_problems, write_provenance
from harness.errors import ConfigError, HarnessError
from harness.features import FEATURE_FIELDS
from harness.posthog_api import PosthogApi
from harness.records import Case

__all__ = [
    "AI_EVENTS",
    "ORIGINAL_SCHEMA",
    "PAGE_ROWS",
    "ImportResult",
    "case_of",
    "export_events",
    "import_csv",
    "import_posthog",
    "originals_of",
    "page_query",
    "parse_instant",
]

AI_EVENTS = "posthog.ai_events"
EVENTS = "events"
PAGE_ROWS = 1000
MAX_PAGE_ROWS = 50_000  # PostHog caps any LIMIT here
WINDOW = timedelta(days=1)
_COLUMNS = ("uuid", "event", "timestamp", "distinct_id", "properties")
# posthog.ai_events keeps these properties as columns (JSON text), not in `properties`
_AI_COLUMNS = {"input": "$ai_input", "output_choices": "$ai_output_choices", "tools": "$ai_tools"}
# `events` rows of a split event lack `$ai_input` (JSONExtractRaw gives '' for a missing key)
_WITH_INPUT = "JSONExtractRaw(properties, '$ai_input') != ''"
_WITHOUT_INPUT = "JSONExtractRaw(properties, '$ai_input') = ''"
NO_INPUT = "no input (not captured, or past posthog.ai_events retention)"
_REDACTED_MEDIA = re.compile(r"\[base64 \w+ redacted\]")
_MEDIA_BLOCKS = frozenset({"image", "document", "file", "audio", "input_audio", "video"})
_TOOL_BLOCKS = frozenset({"tool_use", "tool_result", "server_tool_use", "web_search_tool_result"})
# $ai_model_parameters → dataset fields (besides max_tokens and temperature, checked apart)
_PARAMETERS = (*(f for f in FEATURE_FIELDS if f != "tools"), "stop_sequences")
_OPTIONAL = frozenset({*_PARAMETERS, "max_tokens", "temperature"})


@dataclass
class ImportResult:
    """What an import wrote and what it left out (by reason), for the console and the provenance."""

    path: Path
    cases: int = 0
    events: int = 0
    duplicates: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    source: dict[str, Any] = field(default_factory=dict)
    tables: Counter[str] = field(default_factory=Counter)  # events kept from each table
    notes: list[str] = field(default_factory=list)
    first_start: str | None = None
    last_start: str | None = None

    def provenance(self) -> dict[str, Any]:
        """The sidecar's content (and a run manifest's `dataset.import`)."""
        return {
            **self.source,
            "imported_at": datetime.now(UTC).isoformat(),
            "events_read": self.events,
            "tables": dict(self.tables),
            "duplicates": self.duplicates,
            "cases": self.cases,
            "skipped": dict(self.skipped),
            "first_call_start": self.first_start,
            "last_call_start": self.last_start,
            "notes": self.notes,
        }


# ---------------------------------------------------------------- the query text


def parse_instant(text: str, option: str) -> datetime:
    """`2026-11-01`, `2026-11-01T08:00`, `…+01:00` or `…Z` as an aware UTC instant (no offset: UTC)."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(option, f"{text!r} is not a date or an ISO 8601 time (e.g. 2026-11-01)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _instant(moment: datetime) -> str:
    """A UTC instant as HogQL: explicitly UTC (a bare string would be the project's local time)."""
    return f"toDateTime64('{moment.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S.%f')}', 6, 'UTC')"


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _conditions(
    event: str, start: datetime, end: datetime, after: tuple[datetime, str] | None, extra: list[str | None]
) -> list[str]:
    conditions = [
        f"event = {_quote(event)}",
        f"timestamp >= {_instant(start)}",
        f"timestamp < {_instant(end)}",
    ]
    if after is not None:
        stamp, uuid = _instant(after[0]), _quote(after[1])
        conditions.append(f"(timestamp > {stamp} OR (timestamp = {stamp} AND uuid > {uuid}))")
    conditions += [f"({c})" for c in extra if c]
    return conditions


def page_query(
    table: str,
    event: str,
    start: datetime,
    end: datetime,
    after: tuple[datetime, str] | None,
    where: str | list[str | None] | None,
    rows: int,
) -> str:
    """One keyset page of `table`: events named `event` in [start, end) after `after` = (timestamp, uuid)."""
    columns = [*_COLUMNS, *(_AI_COLUMNS if table == AI_EVENTS else ())]
    extra = where if isinstance(where, list) else [where]
    return (
        f"SELECT {', '.join(columns)} FROM {table} WHERE {' AND '.join(_conditions(event, start, end, after, extra))} "
        f"ORDER BY timestamp, uuid LIMIT {rows}"
    )


# ---------------------------------------------------------------- export


def export_events(
    api: PosthogApi,
    *,
    event: str,
    since: datetime,
    until: datetime,
    where: str | None = None,
    limit: int | None = None,
    page_rows: int = PAGE_ROWS,
    result: ImportResult | None = None,
) -> Iterator[dict[str, Any]]:
    """Every event in [since, until), oldest first, once each (uuid), with UTC timestamps and decoded properties.

    For `$ai_*` events `posthog.ai_events` is read first; then only the `events` rows that still
    carry `$ai_input` (events from before the split), since the others are the same events
    without their prompt. Those are counted instead (a `count()` per window): any beyond the
    split table's rows lost their prompt (not captured, or past posthog.ai_events retention).
    """
    if not 1 <= page_rows <= MAX_PAGE_ROWS:
        raise ConfigError("page rows", f"must be from 1 to {MAX_PAGE_ROWS}")
    tz = api.timezone()
    split = event.startswith("$ai_")
    seen: set[str] = set()
    emitted = 0
    start = since
    while start < until:
        end = min(until, start + WINDOW)
        window: dict[str, dict[str, Any]] = {}
        from_split = 0
        if split:
            try:
                for row in _pages(api, AI_EVENTS, event, start, end, [where], page_rows, tz):
                    if row["uuid"] not in seen and row["uuid"] not in window:
                        window[row["uuid"]] = row
                        from_split += 1
            except _NoTable as exc:
                split = False  # an instance without the split: `events` has everything
                if result is not None:
                    result.notes.append(f"{AI_EVENTS} not queryable here ({exc}): read from events only")
        conditions = [where, _WITH_INPUT] if split else [where]
        from_events = 0
        for row in _pages(api, EVENTS, event, start, end, conditions, page_rows, tz):
            if row["uuid"] not in seen and row["uuid"] not in window:  # the split table's copy wins
                window[row["uuid"]] = row
                from_events += 1
        if result is not None:
            for table, n in ((AI_EVENTS, from_split), (EVENTS, from_events)):
                if n:
                    result.tables[table] += n
            if split:
                trimmed = _count(api, event, start, end, [where, _WITHOUT_INPUT])
                lost = max(0, trimmed - from_split)
                if lost:
                    result.events += lost
                    result.skipped[NO_INPUT] += lost
        for row in sorted(window.values(), key=lambda r: r["timestamp"]):
            seen.add(row["uuid"])
            yield row
            emitted += 1
            if limit is not None and emitted >= limit:
                return
        start = end


def _count(api: PosthogApi, event: str, start: datetime, end: datetime, conditions: list[str | None]) -> int:
    answer = api.query(
        f"SELECT count() FROM {EVENTS} WHERE {' AND '.join(_conditions(event, start, end, None, conditions))}"
    )
    results = answer.get("results") or [[0]]
    return int(results[0][0] or 0)


class _NoTable(Exception):
    pass


def _pages(api: PosthogApi, table: str, event: str, start: datetime, end: datetime, where: list[str | None],
           page_rows: int, tz: ZoneInfo) -> Iterator[dict[str, Any]]:  # fmt: skip
    after: tuple[datetime, str] | None = None
    while True:
        try:
            answer = api.query(page_query(table, event, start, end, after, where, page_rows))
        except HarnessError as exc:
            if table == AI_EVENTS and after is None and "HTTP 400" in str(exc) and "ai_events" in str(exc):
                raise _NoTable(str(exc).split(": ", 2)[-1]) from None
            raise
        columns = [str(c) for c in answer.get("columns") or ()]
        results = answer.get("results") or []
        last = after
        for values in results:
            row = _decoded(dict(zip(columns, values, strict=False)), tz)
            yield row
            after = (row["timestamp"], row["uuid"])
        if len(results) < page_rows:  # LIMIT given: hasMore is null, a short page is the end
            return
        if after == last:
            raise HarnessError(f"PostHog returned the same page twice for {table} (keyset did not advance)")


def _decoded(raw: Mapping[str, Any], tz: ZoneInfo) -> dict[str, Any]:
    """A row with its timestamp in UTC, its JSON-text properties (and split columns) decoded."""
    props = _json(raw.get("properties"))
    props = dict(props) if isinstance(props, dict) else {}
    for column, name in _AI_COLUMNS.items():
        if column in raw and raw[column] is not None:
            props[name] = _json(raw[column])
    return {
        "uuid": str(raw.get("uuid")),
        "event": raw.get("event"),
        "timestamp": _utc(raw.get("timestamp"), tz),
        "distinct_id": None if raw.get("distinct_id") in (None, "") else str(raw["distinct_id"]),
        "properties": props,
    }


def _json(value: Any) -> Any:
    if isinstance(value, str | bytes):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def _utc(value: Any, tz: ZoneInfo) -> datetime:
    if isinstance(value, datetime):
        moment = value
    else:
        text = str(value).strip().replace("Z", "+00:00")
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise HarnessError(f"PostHog returned a timestamp this importer cannot read: {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment.astimezone(UTC)


# ---------------------------------------------------------------- mapping


def _content(content: Any) -> tuple[Any, str | None]:
    """A turn's content as the API takes it, or a skip reason."""
    if isinstance(content, str):
        return (None, "redacted media") if _REDACTED_MEDIA.search(content) else (content, None)
    if not isinstance(content, list):
        return None, "unreadable $ai_input"
    blocks = []
    for block in content:
        if isinstance(block, str):
            block = {"type": "text", "text": block}
        if not isinstance(block, dict):
            return None, "unreadable $ai_input"
        checked = block.get("type") in _MEDIA_BLOCKS or block.get("type") == "text"
        if checked and _REDACTED_MEDIA.search(orjson.dumps(block).decode()):
            return None, "redacted media"
        blocks.append(block)
    return blocks, None


def _system_of(parts: list[Any]) -> str | list[dict[str, Any]] | None:
    """The system entries as one `system`: a string, or text blocks when any entry had blocks."""
    if not parts:
        return None
    if all(isinstance(p, str) for p in parts):
        return "\n\n".join(parts)
    blocks: list[dict[str, Any]] = []
    for part in parts:
        blocks.extend([{"type": "text", "text": part}] if isinstance(part, str) else part)
    return blocks


def _turns(ai_input: Any) -> tuple[str | list[dict[str, Any]] | None, list[dict[str, Any]], str | None]:
    """(system, messages, skip reason) from `$ai_input`."""
    if isinstance(ai_input, str):
        return None, [{"role": "user", "content": ai_input}], None
    if not isinstance(ai_input, list):
        return None, [], "unreadable $ai_input"
    system: list[Any] = []
    messages: list[dict[str, Any]] = []
    for turn in ai_input:
        if not isinstance(turn, dict) or turn.get("role") not in ("system", "user", "assistant"):
            return None, [], "unreadable $ai_input"
        content, reason = _content(turn.get("content"))
        if reason:
            return None, [], reason
        if turn["role"] == "system":
            system.append(content)
        elif messages and messages[-1]["role"] == turn["role"]:
            messages[-1]["content"] = _merged(messages[-1]["content"], content)
        else:
            messages.append({"role": turn["role"], "content": content})
    if not messages or messages[0]["role"] != "user":
        return None, [], "no user turn first"
    return _system_of(system), messages, None


def _merged(a: Any, b: Any) -> Any:
    if isinstance(a, str) and isinstance(b, str):
        return a + "\n\n" + b
    as_blocks = [{"type": "text", "text": a}] if isinstance(a, str) else list(a)
    return as_blocks + ([{"type": "text", "text": b}] if isinstance(b, str) else list(b))


def _uses_tools(messages: list[dict[str, Any]]) -> bool:
    return any(
        isinstance(m["content"], list) and any(b.get("type") in _TOOL_BLOCKS for b in m["content"])
        for m in messages
    )


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _integer(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None and number.is_integer() else None


def case_of(event: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """The dataset row of one exported event (without `arrival_offset_s`), or why it cannot be replayed."""
    props = event.get("properties") or {}
    if "$ai_input" in props:
        ai_input = props["$ai_input"]
        if ai_input is None:
            return None, "no input (privacy mode)"
    elif isinstance(props.get("prompt"), str) and props["prompt"].strip():
        ai_input = props["prompt"]  # an older tutorial event: the last user turn only
    else:
        return None, NO_INPUT
    system, messages, reason = _turns(ai_input)
    if reason:
        return None, reason
    tools = props.get("$ai_tools")
    if _uses_tools(messages) and not tools:
        return None, "tool conversation without its tool definitions"
    params = props.get("$ai_model_parameters")
    params = params if isinstance(params, dict) else {}
    row: dict[str, Any] = {"id": f"ph-{event['uuid']}", "messages": messages}
    if system:
        row["system"] = system
    max_tokens = _integer(params.get("max_tokens"))
    if max_tokens is not None:
        row["max_tokens"] = max_tokens
    temperature = _number(params.get("temperature"))
    if temperature is not None:
        row["temperature"] = temperature
    for name in _PARAMETERS:
        if params.get(name) is not None:
            row[name] = params[name]
    if isinstance(tools, list) and tools:
        row["tools"] = tools
    user = event.get("distinct_id")
    if user and user != props.get("$ai_trace_id") and props.get("$process_person_profile") is not False:
        row["user_id"] = str(user)
    row["metadata"] = {"posthog": _original(event, props)}
    problems = row_problems(row)
    # A parameter the API would refuse (e.g. the *served* service_tier "standard" the wrapper
    # records) costs the case only that parameter: replayed without it, and the drop is noted.
    dropped = sorted({_root(p.field) for p in problems} & _OPTIONAL)
    if dropped:
        for name in dropped:
            row.pop(name, None)
        row["metadata"]["posthog"]["dropped_parameters"] = dropped
        problems = row_problems(row)
    if problems:
        return None, f"not a valid case ({problems[0].field}: {problems[0].message})"
    return row, None


def _root(field_path: str) -> str:
    return re.split(r"[.\[]", field_path, maxsplit=1)[0]


def _original(event: Mapping[str, Any], props: Mapping[str, Any]) -> dict[str, Any]:
    """What production measured, for the report's "original vs replayed"."""
    latency = _number(props.get("$ai_latency"))
    if latency is None and _number(props.get("response_time_in_ms")) is not None:
        latency = float(props["response_time_in_ms"]) / 1000
    ttft = _number(props.get("$ai_time_to_first_token"))
    if ttft is None and _number(props.get("ttft_ms")) is not None:
        ttft = float(props["ttft_ms"]) / 1000
    is_error = props.get("$ai_is_error") in (True, "true") or props.get("status") == "error"
    original = {
        "uuid": event["uuid"],
        "event": event.get("event"),
        "timestamp": event["timestamp"].isoformat() if isinstance(event.get("timestamp"), datetime) else None,
        "model": props.get("$ai_model") or props.get("model"),
        "input_tokens": _integer(props.get("$ai_input_tokens", props.get("input_tokens"))),
        "output_tokens": _integer(props.get("$ai_output_tokens", props.get("output_tokens"))),
        "latency_s": latency,
        "ttft_s": ttft,
        "cost_usd": _number(props.get("$ai_total_cost_usd", props.get("total_cost_in_dollars"))),
        "error": True if is_error else None,
        "trace_id": props.get("$ai_trace_id"),
        "case_id": props.get("case_id") or props.get("$ai_span_name"),
    }
    return {k: v for k, v in original.items() if v is not None}


ORIGINAL_SCHEMA: dict[str, pl.DataType] = {
    "case_id": pl.String(),
    "model": pl.String(),
    "latency_s": pl.Float64(),
    "ttft_s": pl.Float64(),
    "cost_usd": pl.Float64(),
    "input_tokens": pl.Int64(),
    "output_tokens": pl.Int64(),
    "error": pl.Boolean(),
    "timestamp": pl.String(),
}


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def originals_of(cases: Iterable[Case]) -> pl.DataFrame | None:
    """One row per case that carries `metadata.posthog`; None when no case does."""
    rows = []
    for case in cases:
        meta = (case.metadata or {}).get("posthog")
        if not isinstance(meta, dict):
            continue
        rows.append(
            {
                "case_id": case.id,
                "model": meta.get("model") if isinstance(meta.get("model"), str) else None,
                "latency_s": _float(meta.get("latency_s")),
                "ttft_s": _float(meta.get("ttft_s")),
                "cost_usd": _float(meta.get("cost_usd")),
                "input_tokens": _int(meta.get("input_tokens")),
                "output_tokens": _int(meta.get("output_tokens")),
                "error": bool(meta.get("error")),
                "timestamp": meta.get("timestamp") if isinstance(meta.get("timestamp"), str) else None,
            }
        )
    return pl.DataFrame(rows, schema=ORIGINAL_SCHEMA) if rows else None


def _start_of(event: Mapping[str, Any]) -> datetime:
    """When the original call started: the wrapper captures at its end, the harness at its start."""
    props = event.get("properties") or {}
    moment: datetime = event["timestamp"]
    if "call_id" in props and "run_id" in props:  # this harness's own event
        return moment
    latency = _number(props.get("$ai_latency"))
    return moment - timedelta(seconds=latency) if latency else moment


def _write(events: Iterable[dict[str, Any]], out: Path, result: ImportResult) -> ImportResult:
    """Map, order by original start, write `out` atomically (the caller adds the provenance)."""
    rows: list[tuple[datetime, dict[str, Any]]] = []
    seen: set[str] = set()
    for event in events:
        result.events += 1
        if event["uuid"] in seen:
            result.duplicates += 1
            continue
        seen.add(event["uuid"])
        row, reason = case_of(event)
        if row is None:
            result.skipped[reason or "unknown"] += 1
            continue
        rows.append((_start_of(event), row))
    if not rows:
        raise HarnessError(
            f"no replayable event ({result.events} read"
            + (f"; skipped: {_reasons(result.skipped)}" if result.skipped else "")
            + f"): {out} not written"
        )
    rows.sort(key=lambda item: item[0])
    first = rows[0][0]
    result.first_start, result.last_start = first.isoformat(), rows[-1][0].isoformat()
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            for start, row in rows:
                row["arrival_offset_s"] = round((start - first).total_seconds(), 6)
                fh.write(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError("-o", f"{out}: cannot write: {exc.strerror or exc}") from None
    result.cases = len(rows)
    return result


def _reasons(skipped: Counter[str]) -> str:
    return ", ".join(f"{reason} × {n}" for reason, n in skipped.most_common())


def import_posthog(
    api: PosthogApi,
    out: Path,
    *,
    event: str,
    since: datetime,
    until: datetime,
    where: str | None = None,
    limit: int | None = None,
    page_rows: int = PAGE_ROWS,
) -> ImportResult:
    """Export [since, until) and write the replayable cases to `out` (JSONL), oldest call first."""
    if since >= until:
        raise ConfigError("--since", f"{since.isoformat()} is not before --until {until.isoformat()}")
    result = ImportResult(path=out)
    result.source = {
        "source": "posthog",
        "host": api.host,
        "project_id": api.project_id,
        "event": event,
        "window": {"since": since.isoformat(), "until": until.isoformat()},
        "where": where,
        "limit": limit,
    }
    events = export_events(
        api,
        event=event,
        since=since,
        until=until,
        where=where,
        limit=limit,
        page_rows=page_rows,
        result=result,
    )
    _write(events, out, result)
    result.source["throttled"] = {"times": api.throttled, "seconds": api.throttled_s}
    write_provenance(out, result.provenance())
    return result


def import_csv(path: Path, out: Path, *, event: str | None = None) -> ImportResult:
    """The same from a CSV export of PostHog's UI (columns uuid, event, timestamp, distinct_id, properties).

    Column names may be qualified (`events.uuid`); timestamps without an offset are read as UTC.
    """
    result = ImportResult(path=out)
    result.source = {"source": "csv", "file": path.name, "event": event}
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a properties cell holds whole conversations
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            names = {name: name.rsplit(".", 1)[-1] for name in reader.fieldnames or ()}
            missing = {"uuid", "timestamp", "properties"} - set(names.values())
            if missing:
                raise ConfigError("--from-csv", f"{path}: missing column(s) {', '.join(sorted(missing))}")
            rows = ({names[k]: v for k, v in row.items() if k in names} for row in reader)
            events = [
                _decoded(row, ZoneInfo("UTC"))
                for row in rows
                if event is None or row.get("event") in (None, "", event)
            ]
    except OSError as exc:
        raise ConfigError("--from-csv", f"{path}: cannot read: {exc.strerror or exc}") from None
    except (ValueError, csv.Error) as exc:
        raise ConfigError("--from-csv", f"{path}: {exc}") from None
    _write(events, out, result)
    write_provenance(out, result.provenance())
    return result
