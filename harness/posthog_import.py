"""`harness import posthog`: production LLM traffic exported from PostHog → a dataset the harness replays.

Why: a team wants to know what its *real* traffic would cost and how fast it would be on
another model. PostHog holds that traffic as `$ai_generation` events (written by PostHog's
Anthropic wrapper, or by this harness) or the tutorial's `claude_message_completion` events.

Reading (HogQL query API, `POST /api/projects/{id}/query/`, personal key as Bearer, on the app
host): since 30 April 2026 the prompt and output of `$ai_*` events live only in
`posthog.ai_events`; `events.properties` is the fallback (older events, custom event names,
instances without the split). Rows come in pages ordered by `(timestamp, uuid)` with keyset
pagination (never OFFSET) inside day-long windows, are de-duplicated on uuid, and have their
timestamps converted from the project's timezone to UTC; JSON-text columns are decoded here. A
429 `throttled_error` is waited out (Retry-After, else the seconds its detail names).

Mapping (`case_of`): system entries of `$ai_input` → `system`, the other turns → `messages`
(consecutive same-role turns merged); `max_tokens` and `temperature` from `$ai_model_parameters`;
`distinct_id` → `user_id` unless it is the trace id (the wrapper's anonymous convention); the
original model, tokens, latency, time to first token and cost under `metadata.posthog`; the
call's start as `arrival_offset_s` (seconds from the first imported call): the wrapper captures
at the end, so its start is the timestamp minus `$ai_latency`; the harness captures with the
call's start as the timestamp. Events that cannot be replayed are skipped and counted by reason.
"""

from __future__ import annotations

import csv
import re
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from harness.errors import ConfigError, HarnessError
from harness.secrets import POSTHOG_PERSONAL_KEY_ENV, Secret, redact_text, usable

__all__ = ["ImportResult", "QueryClient", "case_of", "export_events", "import_csv", "import_posthog"]

AI_EVENTS = "posthog.ai_events"
PAGE_ROWS = 1000
WINDOW = timedelta(days=1)
MAX_THROTTLE_WAIT_S = 120.0
_COLUMNS = ("uuid", "event", "timestamp", "distinct_id", "properties")
_DETAIL_SECONDS = re.compile(r"(\d+(?:\.\d+)?)\s*second")
_MEDIA_TYPES = {"image", "document", "file", "input_audio", "audio"}
_REDACTED_MEDIA = re.compile(
    r"\[(?:base64 )?\w* ?(?:image|file|document|media)[^\]]*redacted\]", re.IGNORECASE
)


@dataclass
class ImportResult:
    """What an import wrote and what it left out (by reason), for the console and the manifest."""

    path: Path
    cases: int = 0
    events: int = 0
    duplicates: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    window: tuple[str, str] | None = None


# ---------------------------------------------------------------- the query API


class QueryClient:
    """PostHog's HogQL query endpoint for one project, with the personal key (never logged)."""

    def __init__(self, host: str, project_id: str, key: Secret, *, timeout_s: float = 60.0) -> None:
        if not key:
            raise ConfigError(
                POSTHOG_PERSONAL_KEY_ENV, "a PostHog personal API key is required in the environment"
            )
        self.host = host.rstrip("/")
        self.project_id = project_id
        self._key = key
        self._timeout = timeout_s
        self._secrets = usable([key.get()])
        self.throttled = 0

    def timezone(self) -> ZoneInfo:
        """The project's timezone (HogQL renders timestamps in it)."""
        project = self._request("GET", f"/api/projects/{self.project_id}/")
        name = project.get("timezone") or "UTC"
        try:
            return ZoneInfo(str(name))
        except ZoneInfoNotFoundError:
            raise HarnessError(f"PostHog project {self.project_id}: unknown timezone {name!r}") from None

    def query(self, hogql: str) -> dict[str, Any]:
        """One HogQL query's `{columns, results, hasMore, …}`; waits out throttling."""
        body = {"query": {"kind": "HogQLQuery", "query": hogql}}
        return self._request("POST", f"/api/projects/{self.project_id}/query/", body)

    def _request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        waited = 0.0
        while True:
            request = urllib.request.Request(
                self.host + path,
                data=orjson.dumps(body) if body is not None else None,
                method=method,
                headers={"Authorization": f"Bearer {self._key.get()}", "Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=self._timeout) as response:
                    data = orjson.loads(response.read())
                    return data if isinstance(data, dict) else {"results": data}
            except urllib.error.HTTPError as exc:
                detail = self._detail(exc)
                if exc.code == 429:
                    pause = _retry_after(exc.headers.get("Retry-After"), detail)
                    if waited + pause > MAX_THROTTLE_WAIT_S:
                        raise HarnessError(f"PostHog kept throttling the query API ({detail})") from None
                    self.throttled += 1
                    waited += pause
                    time.sleep(pause)
                    continue
                if exc.code in (401, 403):
                    raise ConfigError(
                        POSTHOG_PERSONAL_KEY_ENV,
                        f"PostHog refused the personal API key ({exc.code}: {detail})",
                    ) from None
                raise HarnessError(f"PostHog {method} {path}: HTTP {exc.code}: {detail}") from None
            except (urllib.error.URLError, OSError) as exc:
                raise HarnessError(f"cannot reach PostHog at {self.host}: {exc}") from None

    def _detail(self, exc: urllib.error.HTTPError) -> str:
        try:
            body = orjson.loads(exc.read())
            text = str(body.get("detail") or body) if isinstance(body, dict) else str(body)
        except (orjson.JSONDecodeError, OSError):
            text = exc.reason if isinstance(exc.reason, str) else str(exc.code)
        return redact_text(text[:300], self._secrets)


def _retry_after(header: str | None, detail: str) -> float:
    """Seconds to wait: the Retry-After header, else the seconds PostHog's detail names, else 5."""
    if header:
        try:
            return max(0.0, float(header))
        except ValueError:
            pass
    found = _DETAIL_SECONDS.search(detail)
    return float(found.group(1)) if found else 5.0


# ---------------------------------------------------------------- export


def _literal(moment: datetime) -> str:
    """A UTC instant as a HogQL DateTime (explicitly UTC: a bare string would be the project's time)."""
    return f"toDateTime('{moment.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S.%f')}', 'UTC')"


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _page_query(table: str, event: str, start: datetime, end: datetime, after: tuple[str, str] | None,
                where: str | None, rows: int) -> str:  # fmt: skip
    conditions = [
        f"event = {_quote(event)}",
        f"timestamp >= {_literal(start)}",
        f"timestamp < {_literal(end)}",
    ]
    if after is not None:
        stamp, uuid = after
        conditions.append(f"(timestamp, toString(uuid)) > ({_quote(stamp)}, {_quote(uuid)})")
    if where:
        conditions.append(f"({where})")
    return (
        f"SELECT {', '.join(_COLUMNS)} FROM {table} WHERE {' AND '.join(conditions)} "
        f"ORDER BY timestamp, uuid LIMIT {rows}"
    )


def export_events(
    client: QueryClient,
    *,
    event: str,
    since: datetime,
    until: datetime,
    where: str | None = None,
    limit: int | None = None,
    page_rows: int = PAGE_ROWS,
) -> Iterator[dict[str, Any]]:
    """Every event in [since, until), oldest first, once each (uuid), with UTC timestamps and decoded properties."""
    tz = client.timezone()
    tables = [AI_EVENTS, "events"] if event == "$ai_generation" else ["events"]
    seen: set[str] = set()
    emitted = 0
    start = since
    while start < until:
        end = min(until, start + WINDOW)
        window: dict[str, dict[str, Any]] = {}
        for table in tables:
            for row in _pages(client, table, event, start, end, where, page_rows, tz):
                if row["uuid"] not in seen:  # the split table comes first: its copy keeps prompt and output
                    window.setdefault(row["uuid"], row)
        for row in sorted(window.values(), key=lambda r: (r["timestamp"], r["uuid"])):
            seen.add(row["uuid"])
            yield row
            emitted += 1
            if limit is not None and emitted >= limit:
                return
        start = end


def _pages(client: QueryClient, table: str, event: str, start: datetime, end: datetime, where: str | None,
           page_rows: int, tz: ZoneInfo) -> Iterator[dict[str, Any]]:  # fmt: skip
    after: tuple[str, str] | None = None
    while True:
        try:
            answer = client.query(_page_query(table, event, start, end, after, where, page_rows))
        except HarnessError as exc:
            if table == AI_EVENTS and "HTTP 400" in str(exc):
                return  # an instance without the split table: events has everything
            raise
        columns = [str(c) for c in answer.get("columns") or _COLUMNS]
        results = answer.get("results") or []
        for values in results:
            raw = dict(zip(columns, values, strict=False))
            yield _decoded(raw, tz)
            after = (str(raw["timestamp"]), str(raw["uuid"]))
        if not answer.get("hasMore") or not results:
            return


def _decoded(raw: Mapping[str, Any], tz: ZoneInfo) -> dict[str, Any]:
    """A row with its timestamp in UTC and its JSON-text properties decoded."""
    props = raw.get("properties")
    if isinstance(props, str | bytes):
        try:
            props = orjson.loads(props)
        except orjson.JSONDecodeError:
            props = {}
    return {
        "uuid": str(raw.get("uuid")),
        "event": raw.get("event"),
        "timestamp": _utc(raw.get("timestamp"), tz),
        "distinct_id": None if raw.get("distinct_id") is None else str(raw["distinct_id"]),
        "properties": props if isinstance(props, dict) else {},
    }


def _utc(value: Any, tz: ZoneInfo) -> datetime:
    moment = (
        value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    )
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment.astimezone(UTC)


# ---------------------------------------------------------------- mapping


def _json_field(props: Mapping[str, Any], name: str) -> Any:
    value = props.get(name)
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def _content(content: Any) -> tuple[Any, str | None]:
    """A turn's content as the API takes it, or a skip reason."""
    if isinstance(content, str):
        if _REDACTED_MEDIA.search(content):
            return None, "redacted media"
        return content, None
    if not isinstance(content, list):
        return None, "unreadable input"
    blocks = []
    for block in content:
        if isinstance(block, str):
            block = {"type": "text", "text": block}
        if not isinstance(block, dict):
            return None, "unreadable input"
        kind = block.get("type")
        if kind in _MEDIA_TYPES:
            return None, "redacted media"
        if kind == "text" and isinstance(block.get("text"), str) and _REDACTED_MEDIA.search(block["text"]):
            return None, "redacted media"
        blocks.append(block)
    return blocks, None


def _turns(ai_input: Any) -> tuple[str | list[dict[str, Any]] | None, list[dict[str, Any]], str | None]:
    """(system, messages, skip reason) from `$ai_input`."""
    if ai_input is None:
        return None, [], "no input (privacy mode or not captured)"
    if isinstance(ai_input, str):
        return None, [{"role": "user", "content": ai_input}], None
    if not isinstance(ai_input, list):
        return None, [], "unreadable input"
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for turn in ai_input:
        if not isinstance(turn, dict) or turn.get("role") not in ("system", "user", "assistant"):
            return None, [], "unreadable input"
        content, reason = _content(turn.get("content"))
        if reason:
            return None, [], reason
        if turn["role"] == "system":
            system.append(content if isinstance(content, str) else _text_of(content))
            continue
        if messages and messages[-1]["role"] == turn["role"]:
            messages[-1]["content"] = _merged(messages[-1]["content"], content)
        else:
            messages.append({"role": turn["role"], "content": content})
    if not messages or messages[0]["role"] != "user":
        return None, [], "no user turn"
    return ("\n\n".join(system) if system else None), messages, None


def _text_of(blocks: list[dict[str, Any]]) -> str:
    return "".join(b.get("text", "") for b in blocks if b.get("type") == "text")


def _merged(a: Any, b: Any) -> Any:
    if isinstance(a, str) and isinstance(b, str):
        return a + "\n\n" + b
    as_blocks = [{"type": "text", "text": a}] if isinstance(a, str) else list(a)
    return as_blocks + ([{"type": "text", "text": b}] if isinstance(b, str) else list(b))


def _uses_tools(messages: list[dict[str, Any]]) -> bool:
    return any(
        isinstance(m["content"], list)
        and any(b.get("type") in ("tool_use", "tool_result") for b in m["content"])
        for m in messages
    )


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def case_of(event: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """The dataset row of one exported event (without `arrival_offset_s`), or why it cannot be replayed."""
    props = event.get("properties") or {}
    ai_input = _json_field(props, "$ai_input")
    if ai_input is None and isinstance(props.get("prompt"), str) and props["prompt"]:
        ai_input = props["prompt"]  # the tutorial's event: the last user turn only
    system, messages, reason = _turns(ai_input)
    if reason:
        return None, reason
    tools = _json_field(props, "$ai_tools")
    if _uses_tools(messages) and not tools:
        return None, "tool conversation without its tool definitions"
    params = _json_field(props, "$ai_model_parameters") or {}
    if not isinstance(params, dict):
        params = {}
    row: dict[str, Any] = {"id": f"ph-{event['uuid']}", "messages": messages}
    if system:
        row["system"] = system
    max_tokens = params.get("max_tokens")
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and 1 <= max_tokens <= 128_000:
        row["max_tokens"] = max_tokens
    temperature = _number(params.get("temperature"))
    if temperature is not None and 0 <= temperature <= 1:
        row["temperature"] = temperature
    if isinstance(tools, list) and tools:
        row["tools"] = tools
    trace_id = props.get("$ai_trace_id")
    user = event.get("distinct_id")
    if user and user != trace_id and props.get("$process_person_profile") is not False:
        row["user_id"] = str(user)
    latency = _number(props.get("$ai_latency"))
    if latency is None and _number(props.get("response_time_in_ms")) is not None:
        latency = float(props["response_time_in_ms"]) / 1000
    ttft = _number(props.get("$ai_time_to_first_token"))
    if ttft is None and _number(props.get("ttft_ms")) is not None:
        ttft = float(props["ttft_ms"]) / 1000
    original = {
        "uuid": event["uuid"],
        "event": event.get("event"),
        "timestamp": event["timestamp"].isoformat() if isinstance(event.get("timestamp"), datetime) else None,
        "model": props.get("$ai_model") or props.get("model"),
        "input_tokens": props.get("$ai_input_tokens", props.get("input_tokens")),
        "output_tokens": props.get("$ai_output_tokens", props.get("output_tokens")),
        "latency_s": latency,
        "ttft_s": ttft,
        "cost_usd": _number(props.get("$ai_total_cost_usd", props.get("total_cost_in_dollars"))),
    }
    row["metadata"] = {"posthog": {k: v for k, v in original.items() if v is not None}}
    return row, None


def _start_of(event: Mapping[str, Any]) -> datetime:
    """When the original call started: the wrapper captures at its end, the harness at its start."""
    props = event.get("properties") or {}
    moment: datetime = event["timestamp"]
    if "call_id" in props and "run_id" in props:  # this harness's own event
        return moment
    latency = _number(props.get("$ai_latency"))
    return moment - timedelta(seconds=latency) if latency else moment


def _write(events: Iterable[dict[str, Any]], out: Path, result: ImportResult) -> ImportResult:
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
    rows.sort(key=lambda item: item[0])
    first = rows[0][0] if rows else None
    with open(out, "wb") as fh:
        for start, row in rows:
            row["arrival_offset_s"] = round((start - first).total_seconds(), 6) if first else 0.0
            fh.write(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_SORT_KEYS))
    result.cases = len(rows)
    return result


def import_posthog(
    client: QueryClient,
    out: Path,
    *,
    event: str,
    since: datetime,
    until: datetime,
    where: str | None = None,
    limit: int | None = None,
) -> ImportResult:
    """Export [since, until) and write the replayable cases to `out` (JSONL), oldest call first."""
    result = ImportResult(path=out, window=(since.isoformat(), until.isoformat()))
    events = export_events(client, event=event, since=since, until=until, where=where, limit=limit)
    return _write(events, out, result)


def import_csv(path: Path, out: Path, *, event: str | None = None) -> ImportResult:
    """The same from a CSV export of PostHog's UI (columns uuid, event, timestamp, distinct_id, properties)."""
    result = ImportResult(path=out)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            # PostHog's UI names columns `*.uuid` or `event.uuid` in some exports: keep the last part.
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
    except ValueError as exc:
        raise ConfigError("--from-csv", f"{path}: {exc}") from None
    return _write(events, out, result)
