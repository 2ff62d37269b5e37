"""The simulated PostHog app API: HogQL queries, insights, dashboards (what `harness import
posthog` and `harness posthog dashboard` use), on the simulator's own port.

Every `/api/...` call needs a personal API key, `Authorization: Bearer phx_...` (or the
`personal_api_key` query parameter); the accepted keys come from `--posthog-personal-key`
(repeatable; default `DEFAULT_PERSONAL_KEY`). Missing → 401 `not_authenticated`, unknown →
401 `authentication_failed`, with PostHog's error body `{"type", "code", "detail", "attr"}`.
`/api/projects/{id}/` and `/api/environments/{id}/` both work; `{id}` is `--posthog-project-id`
(default 1) or `@current`; anything else is 404.

- `GET /api/projects/` and `GET /api/projects/{id}/`: the project (`id`, `uuid`, `name`,
  `timezone` from `--posthog-timezone`, default Europe/Berlin, `api_token`, ...).
- `POST /api/projects/{id}/query/` `{"query": {"kind": "HogQLQuery", "query": "...",
  "values"?: {...}}}` → PostHog's HogQL response (`columns`, `types` as [name, type] pairs,
  `results`, `hasMore`, `limit`, `offset`, `timezone`, `is_cached`, `last_refresh`, ...), over
  the captured events plus the seeded ones; the SQL subset is in `hogql.py`, the tables in
  `posthog_data.py`. Bad SQL → 400 `{"type": "validation_error", "code":
  "hogql_syntax_error" | "hogql_query_error" | "cannot_parse_text", ...}`. The fault
  `posthog_throttle` (a rate) and the setting `posthog_throttle_every` (every Nth query) turn
  a query into 429 `throttled_error` with `Retry-After` (`posthog_retry_after_s`, default 3).
- `GET|POST /api/projects/{id}/insights/`, `GET|PATCH .../insights/{id}/`: insights (`id`,
  `short_id`, `name`, `query`, `dashboards`, `dashboard_tiles`, ...); list filters `search`,
  `short_id`, `saved`; `dashboards: [ids]` places the insight on dashboards (tiles).
- `GET|POST /api/projects/{id}/dashboards/`, `GET|PATCH .../dashboards/{id}/`: dashboards;
  the detail (and create/patch answers) carry `tiles` with each tile's full `insight`.
- Lists are PostHog's limit/offset pages: `{"count", "next", "previous", "results"}`.
  DELETE is 405, as PostHog (soft delete: PATCH `{"deleted": true}`).

Control: `POST /_sim/posthog/seed` (a JSON list of events, or `{"events": [...]}`, each with
`event`, `uuid`, `distinct_id`, `timestamp`, `properties`) adds rows to both tables;
`GET /_sim/posthog/api-log` → `{"calls": [{"method", "path", "query_string", "status", "unix",
"rows"?}]}`; `POST /_sim/reset` forgets seeds, insights, dashboards, the log and the query
count. A `posthog` outage (`POST /_sim/outage`) covers this API as well as capture. This
module must not know about the Anthropic side.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import math
import random
import re
import time
import uuid as uuidlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from aiohttp import web

from harness.simulator.hogql import HogQLError, run_query
from harness.simulator.messages import STATE
from harness.simulator.posthog_data import (
    AI_EVENTS,
    EVENTS,
    StoredEvent,
    ai_events_row,
    ai_row_visible,
    events_row,
    is_split,
    stored_event,
)
from harness.simulator.profiles import SimulatorConfigError
from harness.simulator.state import EventStore

__all__ = [
    "DEFAULT_PERSONAL_KEY",
    "POSTHOG_API",
    "PosthogApi",
    "PosthogApiConfig",
    "add_arguments",
    "config_from_args",
    "install",
    "reset",
]

DEFAULT_PERSONAL_KEY = "phx_simulator_personal_api_key"
PAGE_SIZE = 100  # PostHog's REST_FRAMEWORK PAGE_SIZE (LimitOffsetPagination)


@dataclass(frozen=True, slots=True)
class PosthogApiConfig:
    """The simulated PostHog project: keys, id, timezone, and the AI-events split."""

    personal_keys: tuple[str, ...] = (DEFAULT_PERSONAL_KEY,)
    project_id: int = 1
    timezone: str = "Europe/Berlin"
    ai_cutover: str = "2026-04-30"  # from this UTC day on, $ai_* events are split
    ai_retention_days: int = 30  # 0: posthog.ai_events keeps rows forever


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `--posthog-*` options of `python -m harness.simulator`."""
    parser.add_argument(
        "--posthog-personal-key",
        action="append",
        dest="posthog_personal_keys",
        metavar="KEY",
        help=f"personal API key the PostHog app API accepts (repeatable; default {DEFAULT_PERSONAL_KEY})",
    )
    parser.add_argument("--posthog-project-id", type=int, default=1, help="PostHog project id (default 1)")
    parser.add_argument(
        "--posthog-timezone",
        default="Europe/Berlin",
        help="project timezone of HogQL results (default Europe/Berlin)",
    )
    parser.add_argument(
        "--posthog-ai-cutover",
        default="2026-04-30",
        metavar="DATE",
        help="UTC day from which $ai_* events lose their large properties in `events` (default 2026-04-30)",
    )
    parser.add_argument(
        "--posthog-ai-retention-days",
        type=int,
        default=30,
        help="days posthog.ai_events keeps a row (0 = forever; default 30)",
    )


def config_from_args(args: argparse.Namespace) -> PosthogApiConfig:
    return PosthogApiConfig(
        personal_keys=tuple(args.posthog_personal_keys or (DEFAULT_PERSONAL_KEY,)),
        project_id=args.posthog_project_id,
        timezone=args.posthog_timezone,
        ai_cutover=args.posthog_ai_cutover,
        ai_retention_days=args.posthog_ai_retention_days,
    )


# -- PostHog's response shapes ----------------------------------------------------------------


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # PostHog renders with orjson and OPT_UTC_Z: aware datetimes keep their offset, UTC is "Z"
    body = orjson.dumps(payload, option=orjson.OPT_UTC_Z)
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)


def _error(
    status: int, type_: str, code: str, detail: str, attr: str | None = None, **headers: str
) -> web.Response:
    return _json({"type": type_, "code": code, "detail": detail, "attr": attr}, status, headers or None)


def _not_found() -> web.Response:
    return _error(404, "invalid_request", "not_found", "Not found.")


def _invalid(detail: str, attr: str | None, code: str = "invalid_input") -> web.Response:
    return _error(400, "validation_error", code, detail, attr)


class _Invalid(Exception):
    def __init__(self, detail: str, attr: str | None, code: str = "invalid_input") -> None:
        super().__init__(detail)
        self.response = _invalid(detail, attr, code)


def _throttled(wait_s: float) -> web.Response:
    """DRF's Throttled through drf-exceptions-hog: the wait rounded up, Retry-After when > 0."""
    wait = math.ceil(wait_s)
    detail = f"Request was throttled. Expected available in {wait} second{'' if wait == 1 else 's'}."
    headers = {"Retry-After": str(wait)} if wait else {}
    return _error(429, "throttled_error", "throttled", detail, **headers)


# -- the state --------------------------------------------------------------------------------

_ROUTE = re.compile(
    r"^/api/(?:projects|environments)(?:/(?P<project>[^/]+)"
    r"(?:/(?P<resource>query|insights|dashboards)(?:/(?P<item>[^/]+))?)?)?/?$"
)
_SHORT_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


class PosthogApi:
    """Seeds, ingested rows, insights, dashboards, the call log, and the handlers over them."""

    def __init__(self, config: PosthogApiConfig) -> None:
        if not config.personal_keys or not all(k.strip() == k and k for k in config.personal_keys):
            raise SimulatorConfigError("--posthog-personal-key: keys must be non-empty, without spaces")
        if config.project_id < 1:
            raise SimulatorConfigError("--posthog-project-id: must be >= 1")
        try:
            self.tz = ZoneInfo(config.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise SimulatorConfigError(f"--posthog-timezone: unknown timezone {config.timezone!r}") from None
        try:
            cutover = datetime.fromisoformat(config.ai_cutover)
        except ValueError:
            raise SimulatorConfigError(f"--posthog-ai-cutover: {config.ai_cutover!r} is not a date") from None
        if config.ai_retention_days < 0:
            raise SimulatorConfigError("--posthog-ai-retention-days: must be >= 0")
        self.config = config
        self.cutover = cutover.replace(tzinfo=UTC) if cutover.tzinfo is None else cutover.astimezone(UTC)
        self.created_at = datetime.now(UTC)
        self.project_uuid = str(
            uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"posthog-sim-project:{config.project_id}")
        )
        self.user = {
            "id": 1,
            "uuid": str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, "posthog-sim-user")),
            "distinct_id": "simulated-user",
            "first_name": "Simulated",
            "last_name": "User",
            "email": "simulated.user@example.com",
            "is_email_verified": True,
            "hedgehog_config": None,
            "role_at_organization": None,
        }
        self.reset()

    def reset(self) -> None:
        self.seeded: dict[str, StoredEvent] = {}
        self._captured: dict[str, StoredEvent] = {}
        self._rows: dict[str, tuple[dict[str, Any], dict[str, Any] | None]] = {}
        self.insights: dict[int, dict[str, Any]] = {}
        self.dashboards: dict[int, dict[str, Any]] = {}
        self.tiles: dict[int, dict[str, Any]] = {}
        self._next = {"insight": 0, "dashboard": 0, "tile": 0}
        self.calls: list[dict[str, Any]] = []
        self.query_count = 0

    def _new_id(self, kind: str) -> int:
        self._next[kind] += 1
        return self._next[kind]

    # -- data ----------------------------------------------------------------------------------

    def seed(self, raw_events: list[Any]) -> dict[str, int]:
        """Validate every event, then add the new ones (the first copy of a uuid is kept)."""
        fallback = datetime.now(UTC)
        parsed = []
        for i, raw in enumerate(raw_events):
            if not isinstance(raw, dict):
                raise ValueError(f"events[{i}]: must be an object")
            try:
                parsed.append(stored_event(raw, key="", fallback=fallback, strict=True))
            except ValueError as exc:
                raise ValueError(f"events[{i}].{exc}") from None
        added = 0
        for event in parsed:
            if event.uuid not in self.seeded:
                self.seeded[event.uuid] = event
                added += 1
        return {"seeded": added, "duplicates": len(parsed) - added, "total": len(self.seeded)}

    def _sync_captured(self, store: EventStore) -> None:
        by_uuid = store.by_uuid
        stale = len(by_uuid) < len(self._captured) or (
            self._captured and next(iter(by_uuid), None) != next(iter(self._captured))
        )
        if stale:
            for key in self._captured:
                self._rows.pop("c:" + key, None)
            self._captured.clear()
        if len(by_uuid) > len(self._captured):
            now = datetime.now(UTC)
            for key, raw in itertools.islice(by_uuid.items(), len(self._captured), None):
                self._captured[key] = stored_event(raw, key=key, fallback=now, strict=False)

    def _row_pair(self, cache_key: str, event: StoredEvent) -> tuple[dict[str, Any], dict[str, Any] | None]:
        pair = self._rows.get(cache_key)
        if pair is None:
            split = is_split(event, self.cutover)
            ai = ai_events_row(event, retention_days=self.config.ai_retention_days) if split else None
            pair = (events_row(event, split=split), ai)
            self._rows[cache_key] = pair
        return pair

    def tables(self, store: EventStore) -> dict[str, tuple[Any, list[dict[str, Any]]]]:
        """Both tables' rows: the captured events, then the seeded ones (one row per uuid)."""
        self._sync_captured(store)
        seen: set[str] = set()
        events_rows: list[dict[str, Any]] = []
        ai_rows: list[dict[str, Any]] = []
        today = datetime.now(UTC).date()
        sources = itertools.chain(
            (("c:" + k, e) for k, e in self._captured.items()),
            (("s:" + k, e) for k, e in self.seeded.items()),
        )
        for cache_key, event in sources:
            if event.uuid in seen:
                continue
            seen.add(event.uuid)
            row, ai = self._row_pair(cache_key, event)
            events_rows.append(row)
            if ai is not None and ai_row_visible(ai, today):
                ai_rows.append(ai)
        return {"events": (EVENTS, events_rows), "posthog.ai_events": (AI_EVENTS, ai_rows)}

    # -- the project -----------------------------------------------------------------------------

    def project_json(self, store: EventStore) -> dict[str, Any]:
        return {
            "id": self.config.project_id,
            "uuid": self.project_uuid,
            "organization": str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, "posthog-sim-organization")),
            "api_token": "phc_simulator_project_token",
            "name": "Simulated project",
            "timezone": self.config.timezone,
            "week_start_day": None,
            "created_at": self.created_at,
            "is_demo": False,
            "ingested_event": bool(store.by_uuid or self.seeded),
        }

    # -- insights and dashboards --------------------------------------------------------------

    def _short_id(self, insight_id: int) -> str:
        digest = hashlib.sha256(f"posthog-sim:{self.config.project_id}:{insight_id}".encode()).digest()
        return "".join(_SHORT_ID_ALPHABET[b % len(_SHORT_ID_ALPHABET)] for b in digest[:8])

    def _live_tiles(
        self, *, insight: int | None = None, dashboard: int | None = None
    ) -> list[dict[str, Any]]:
        out = []
        for tile in self.tiles.values():
            if tile["deleted"] or (insight is not None and tile["insight"] != insight):
                continue
            if dashboard is not None and tile["dashboard"] != dashboard:
                continue
            if self.dashboards[tile["dashboard"]]["deleted"] or self.insights[tile["insight"]]["deleted"]:
                continue
            out.append(tile)
        return out

    def insight_json(self, ins: dict[str, Any]) -> dict[str, Any]:
        tiles = self._live_tiles(insight=ins["id"])
        return {
            "id": ins["id"],
            "short_id": ins["short_id"],
            "name": ins["name"],
            "derived_name": ins["derived_name"],
            "query": ins["query"],
            "order": None,
            "deleted": ins["deleted"],
            "dashboards": [t["dashboard"] for t in tiles],
            "dashboard_tiles": [
                {"id": t["id"], "dashboard_id": t["dashboard"], "deleted": False} for t in tiles
            ],
            "last_refresh": None,
            "cache_target_age": None,
            "next_allowed_client_refresh": None,
            "result": None,
            "hasMore": None,
            "columns": None,
            "created_at": ins["created_at"],
            "created_by": self.user,
            "description": ins["description"],
            "updated_at": ins["last_modified_at"],
            "tags": ins["tags"],
            "favorited": ins["favorited"],
            "last_modified_at": ins["last_modified_at"],
            "last_modified_by": self.user,
            "is_sample": False,
            "effective_restriction_level": 21,
            "effective_privilege_level": 37,
            "user_access_level": "editor",
            "timezone": self.config.timezone,
            "is_cached": False,
            "query_status": None,
            "hogql": None,
            "types": None,
            "saved": ins["saved"],
        }

    def dashboard_json(self, dash: dict[str, Any], *, with_tiles: bool) -> dict[str, Any]:
        out = {
            "id": dash["id"],
            "name": dash["name"],
            "description": dash["description"],
            "pinned": dash["pinned"],
            "created_at": dash["created_at"],
            "created_by": self.user,
            "last_accessed_at": None,
            "last_viewed_at": None,
            "is_shared": False,
            "deleted": dash["deleted"],
            "creation_mode": "default",
            "tags": dash["tags"],
            "restriction_level": 21,
            "effective_restriction_level": 21,
            "effective_privilege_level": 37,
            "user_access_level": "editor",
            "access_control_version": "v2",
            "last_refresh": None,
            "team_id": self.config.project_id,
        }
        if with_tiles:
            out |= {
                "filters": {},
                "variables": {},
                "breakdown_colors": [],
                "data_color_theme_id": None,
                "persisted_filters": None,
                "persisted_variables": None,
                "quick_filter_ids": [],
                "tiles": [
                    {
                        "id": t["id"],
                        "layouts": t["layouts"],
                        "color": t["color"],
                        "insight": self.insight_json(self.insights[t["insight"]]),
                        "text": None,
                        "button_tile": None,
                        "order": i,
                        "last_refresh": None,
                        "is_cached": False,
                    }
                    for i, t in enumerate(self._live_tiles(dashboard=dash["id"]))
                ],
            }
        return out

    def _check_dashboards(self, value: Any) -> list[int]:
        if not isinstance(value, list):
            raise _Invalid(f'Expected a list of items but got type "{type(value).__name__}".', "dashboards")
        ids = []
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int):
                raise _Invalid(
                    f"Incorrect type. Expected pk value, received {type(item).__name__}.", "dashboards"
                )
            dash = self.dashboards.get(item)
            if dash is None or dash["deleted"]:
                raise _Invalid(
                    f'Invalid pk "{item}" - object does not exist.', "dashboards", "does_not_exist"
                )
            ids.append(item)
        return ids

    def _place(self, insight_id: int, dashboard_ids: list[int]) -> None:
        """Make the insight's tiles match `dashboard_ids` (PostHog's `dashboards` field)."""
        current = {
            t["dashboard"]: t for t in self.tiles.values() if t["insight"] == insight_id and not t["deleted"]
        }
        for dash_id, tile in current.items():
            if dash_id not in dashboard_ids:
                tile["deleted"] = True
        for dash_id in dashboard_ids:
            if dash_id not in current:
                tile_id = self._new_id("tile")
                self.tiles[tile_id] = {
                    "id": tile_id,
                    "dashboard": dash_id,
                    "insight": insight_id,
                    "layouts": {},
                    "color": None,
                    "deleted": False,
                }

    def create_insight(self, body: dict[str, Any]) -> dict[str, Any]:
        fields = _fields(body, _INSIGHT_FIELDS)
        dashboards = self._check_dashboards(body["dashboards"]) if "dashboards" in body else []
        now = datetime.now(UTC)
        insight_id = self._new_id("insight")
        ins = {
            "id": insight_id,
            "short_id": self._short_id(insight_id),
            "name": None,
            "derived_name": None,
            "description": None,
            "query": None,
            "deleted": False,
            "saved": False,
            "favorited": False,
            "tags": [],
            "created_at": now,
            "last_modified_at": now,
        } | fields
        self.insights[insight_id] = ins
        self._place(insight_id, dashboards)
        return ins

    def update_insight(self, ins: dict[str, Any], body: dict[str, Any]) -> None:
        fields = _fields(body, _INSIGHT_FIELDS)
        dashboards = self._check_dashboards(body["dashboards"]) if "dashboards" in body else None
        ins.update(fields)
        ins["last_modified_at"] = datetime.now(UTC)
        if dashboards is not None:
            self._place(ins["id"], dashboards)

    def create_dashboard(self, body: dict[str, Any]) -> dict[str, Any]:
        fields = _fields(body, _DASHBOARD_FIELDS)
        dash_id = self._new_id("dashboard")
        dash = {
            "id": dash_id,
            "name": "",
            "description": "",
            "pinned": False,
            "deleted": False,
            "tags": [],
            "created_at": datetime.now(UTC),
        } | fields
        self.dashboards[dash_id] = dash
        return dash

    def update_dashboard(self, dash: dict[str, Any], body: dict[str, Any]) -> None:
        fields = _fields(body, _DASHBOARD_FIELDS)
        tiles = body.get("tiles")
        if tiles is not None:
            if not isinstance(tiles, list) or not all(isinstance(t, dict) for t in tiles):
                raise _Invalid("Expected a list of tiles.", "tiles")
            for i, change in enumerate(tiles):
                tile_id = change.get("id")
                tile = self.tiles.get(tile_id) if isinstance(tile_id, int) else None
                if tile is None or tile["dashboard"] != dash["id"]:
                    raise _Invalid(f"Tile {change.get('id')!r} is not on this dashboard.", f"tiles__{i}__id")
                if "layouts" in change and not isinstance(change["layouts"], dict):
                    raise _Invalid("Expected a dictionary of items.", f"tiles__{i}__layouts")
                if "color" in change and not isinstance(change["color"], str | None):
                    raise _Invalid("Not a valid string.", f"tiles__{i}__color")
                if "deleted" in change and not isinstance(change["deleted"], bool):
                    raise _Invalid("Must be a valid boolean.", f"tiles__{i}__deleted")
            for change in tiles:
                tile = self.tiles[change["id"]]
                tile.update({k: change[k] for k in ("layouts", "color", "deleted") if k in change})
        dash.update(fields)


def _check_query(value: Any) -> Any:
    """Light check of an insight's query: a node with a `kind`; InsightVizNode needs a `source` node."""
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("kind"), str):
        raise _Invalid("query: expected an object with a string `kind` (e.g. InsightVizNode)", "query")
    if value["kind"] in ("InsightVizNode", "DataTableNode", "DataVisualizationNode"):
        source = value.get("source")
        if not isinstance(source, dict) or not isinstance(source.get("kind"), str):
            raise _Invalid(f"query: a {value['kind']} needs a `source` object with a string `kind`", "query")
    return value


def _check_str(value: Any, attr: str) -> Any:
    if value is not None and not isinstance(value, str):
        raise _Invalid("Not a valid string.", attr)
    return value


def _check_bool(value: Any, attr: str) -> bool:
    if not isinstance(value, bool):
        raise _Invalid("Must be a valid boolean.", attr)
    return value


def _check_tags(value: Any, attr: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise _Invalid("Expected a list of strings.", attr)
    return value


_INSIGHT_FIELDS: dict[str, Callable[[Any, str], Any]] = {
    "name": _check_str,
    "derived_name": _check_str,
    "description": _check_str,
    "query": lambda v, _: _check_query(v),
    "deleted": _check_bool,
    "saved": _check_bool,
    "favorited": _check_bool,
    "tags": _check_tags,
}
_DASHBOARD_FIELDS: dict[str, Callable[[Any, str], Any]] = {
    "name": _check_str,
    "description": lambda v, a: _check_str(v, a) or "",
    "pinned": _check_bool,
    "deleted": _check_bool,
    "tags": _check_tags,
}


def _fields(body: dict[str, Any], checks: dict[str, Callable[[Any, str], Any]]) -> dict[str, Any]:
    """The writable fields present in `body`, checked (unknown fields are ignored, as DRF does)."""
    return {name: check(body[name], name) for name, check in checks.items() if name in body}


POSTHOG_API: web.AppKey[PosthogApi] = web.AppKey("posthog_api", PosthogApi)


# -- handlers --------------------------------------------------------------------------------


def _page(request: web.Request, items: list[dict[str, Any]]) -> dict[str, Any]:
    """DRF's LimitOffsetPagination: `limit` (default 100) and `offset`, absolute next/previous links."""
    limit = _int_param(request, "limit", PAGE_SIZE, 1)
    offset = _int_param(request, "offset", 0, 0)
    base = f"{request.scheme}://{request.host}{request.path}"

    def link(new_offset: int) -> str:
        params = {k: v for k, v in request.query.items() if k not in ("limit", "offset")}
        params["limit"] = str(limit)
        if new_offset > 0:
            params["offset"] = str(new_offset)
        return f"{base}?{urlencode(params)}"

    return {
        "count": len(items),
        "next": link(offset + limit) if offset + limit < len(items) else None,
        "previous": link(max(offset - limit, 0)) if offset > 0 else None,
        "results": items[offset : offset + limit],
    }


def _int_param(request: web.Request, name: str, default: int, minimum: int) -> int:
    try:
        value = int(request.query.get(name, default))
    except ValueError:
        return default
    return value if value >= minimum else default


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _ParseError(f"JSON parse error - {exc}") from None
    if not isinstance(body, dict):
        raise _Invalid(f"Invalid data. Expected a dictionary, but got {type(body).__name__}.", None)
    return body


class _ParseError(Exception):
    pass


Handler = Callable[[web.Request, PosthogApi, str | None], Awaitable[web.Response]]


async def _project(request: web.Request, api: PosthogApi, item: str | None) -> web.Response:
    return _json(api.project_json(request.app[STATE].events))


async def _projects(request: web.Request, api: PosthogApi, item: str | None) -> web.Response:
    return _json(_page(request, [api.project_json(request.app[STATE].events)]))


async def _query(request: web.Request, api: PosthogApi, item: str | None) -> web.Response:
    state = request.app[STATE]
    # DRF runs the throttles before the view reads the body
    api.query_count += 1
    faults = state.faults
    every = int(faults.posthog_throttle_every)
    hit = every > 0 and api.query_count % every == 0
    rate = faults.rates.get("posthog_throttle", 0.0)
    if not hit and rate > 0:
        hit = random.Random(f"{state.seed}:posthog_throttle:{api.query_count}").random() < rate
    if hit:
        return _throttled(faults.posthog_retry_after_s)
    body = await _body(request)
    node = body.get("query")
    if not isinstance(node, dict):
        return _invalid("This field is required.", "query", "required")
    if node.get("kind") != "HogQLQuery":
        return _invalid(f"The simulator's query API runs only HogQLQuery (got {node.get('kind')!r})", "query")
    text = node.get("query")
    if not isinstance(text, str) or not text.strip():
        return _invalid("query.query: a HogQL string is required", "query")
    values = node.get("values")
    if values is not None and not isinstance(values, dict):
        return _invalid("query.values: must be an object", "query")
    try:
        result = run_query(text, api.tables(state.events), tz_name=api.config.timezone, values=values)
    except HogQLError as exc:
        return _invalid(exc.message, None, exc.code)
    request["rows"] = len(result.results)
    now = datetime.now(UTC)
    key = hashlib.sha256(
        f"{api.config.project_id}:{text}:{orjson.dumps(values).decode()}".encode()
    ).hexdigest()
    return _json(
        {
            "cache_key": f"cache_{key[:32]}",
            "cache_target_age": None,
            "calculation_trigger": None,
            "columns": result.columns,
            "error": None,
            "hasMore": result.has_more,
            "hogql": " ".join(text.split()),
            "is_cached": False,
            "last_refresh": now,
            "limit": result.limit,
            "next_allowed_client_refresh": now + timedelta(minutes=1),
            "offset": result.offset,
            "query": text,
            "query_status": None,
            "results": result.results,
            "timezone": api.config.timezone,
            "types": result.types,
        }
    )


def _search(obj: dict[str, Any], text: str, fields: tuple[str, ...]) -> bool:
    text = text.lower()
    return any(isinstance(obj.get(f), str) and text in obj[f].lower() for f in fields)


async def _insights(request: web.Request, api: PosthogApi, item: str | None) -> web.Response:
    if request.method == "POST":
        ins = api.create_insight(await _body(request))
        return _json(api.insight_json(ins), 201)
    found = [i for i in api.insights.values() if not i["deleted"]]
    if "short_id" in request.query:
        found = [i for i in found if i["short_id"] == request.query["short_id"]]
    if "search" in request.query:
        found = [
            i for i in found if _search(i, request.query["search"], ("name", "derived_name", "description"))
        ]
    if "saved" in request.query:
        wanted = request.query["saved"].lower() in ("true", "1")
        found = [i for i in found if i["saved"] == wanted]
    found.sort(key=lambda i: (i["last_modified_at"], i["id"]), reverse=True)
    return _json(_page(request, [api.insight_json(i) for i in found]))


async def _insight(request: web.Request, api: PosthogApi, item: str | None) -> web.Response:
    ins = api.insights.get(int(item)) if item and item.isdigit() else None
    if ins is None or ins["deleted"]:
        return _not_found()
    if request.method == "PATCH":
        api.update_insight(ins, await _body(request))
    return _json(api.insight_json(ins))


async def _dashboards(request: web.Request, api: PosthogApi, item: str | None) -> web.Response:
    if request.method == "POST":
        dash = api.create_dashboard(await _body(request))
        return _json(api.dashboard_json(dash, with_tiles=True), 201)
    found = [d for d in api.dashboards.values() if not d["deleted"]]
    if "search" in request.query:
        found = [d for d in found if _search(d, request.query["search"], ("name", "description"))]
    found.sort(key=lambda d: (not d["pinned"], d["name"].lower(), d["id"]))
    return _json(_page(request, [api.dashboard_json(d, with_tiles=False) for d in found]))


async def _dashboard(request: web.Request, api: PosthogApi, item: str | None) -> web.Response:
    dash = api.dashboards.get(int(item)) if item and item.isdigit() else None
    if dash is None or dash["deleted"]:
        return _not_found()
    if request.method == "PATCH":
        api.update_dashboard(dash, await _body(request))
    return _json(api.dashboard_json(dash, with_tiles=True))


# (resource, has item) -> allowed methods -> handler
_DISPATCH: dict[tuple[str | None, bool], dict[str, Handler]] = {
    (None, False): {"GET": _project},
    ("query", False): {"POST": _query},
    ("insights", False): {"GET": _insights, "POST": _insights},
    ("insights", True): {"GET": _insight, "PATCH": _insight},
    ("dashboards", False): {"GET": _dashboards, "POST": _dashboards},
    ("dashboards", True): {"GET": _dashboard, "PATCH": _dashboard},
}


def _authenticate(request: web.Request, api: PosthogApi) -> web.Response | None:
    """PostHog's PersonalAPIKeyAuthentication: the Bearer header, else `personal_api_key`."""
    key = source = None
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        key, source = token.strip(), "Authorization header"
    elif request.query.get("personal_api_key"):
        key, source = request.query["personal_api_key"], "query string"
    if key is None:
        return _error(
            401,
            "authentication_error",
            "not_authenticated",
            "Authentication credentials were not provided.",
            **{"WWW-Authenticate": "Bearer"},
        )
    if key not in api.config.personal_keys:
        return _error(
            401,
            "authentication_error",
            "authentication_failed",
            f"Personal API key found in request {source} is invalid.",
            **{"WWW-Authenticate": "Bearer"},
        )
    return None


async def _route(request: web.Request, api: PosthogApi) -> web.Response:
    state = request.app[STATE]
    outage = state.outage("posthog")
    if outage == "refuse":
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=503)
    if outage == "500":
        return _error(500, "server_error", "error", "A server error occurred.")
    denied = _authenticate(request, api)
    if denied is not None:
        return denied
    match = _ROUTE.match(request.path)
    if match is None:
        return _not_found()
    project, resource, item = match.group("project"), match.group("resource"), match.group("item")
    if project is None:
        return (
            await _projects(request, api, None) if request.method == "GET" else _method_not_allowed(request)
        )
    if project not in (str(api.config.project_id), "@current"):
        return _not_found()
    methods = _DISPATCH[(resource, item is not None)]
    handler = methods.get(request.method)
    if handler is None:
        return _method_not_allowed(request)
    try:
        return await handler(request, api, item)
    except _Invalid as exc:
        return exc.response
    except _ParseError as exc:
        return _error(400, "invalid_request", "parse_error", str(exc))


def _method_not_allowed(request: web.Request) -> web.Response:
    return _error(405, "invalid_request", "method_not_allowed", f'Method "{request.method}" not allowed.')


async def _api(request: web.Request) -> web.StreamResponse:
    api = request.app[POSTHOG_API]
    response = await _route(request, api)
    entry: dict[str, Any] = {
        "method": request.method,
        "path": request.path,
        "query_string": request.query_string,
        "status": response.status,
        "unix": time.time(),
    }
    if "rows" in request:
        entry["rows"] = request["rows"]
    api.calls.append(entry)
    return response


async def _seed(request: web.Request) -> web.Response:
    api = request.app[POSTHOG_API]
    try:
        body = orjson.loads(await request.read())
        events = body.get("events") if isinstance(body, dict) else body
        if not isinstance(events, list):
            raise ValueError('expected a JSON list of events or {"events": [...]}')
        return _json(api.seed(events))
    except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
        return _json({"error": str(exc)}, 400)


async def _api_log(request: web.Request) -> web.Response:
    return _json({"calls": request.app[POSTHOG_API].calls})


def install(app: web.Application, config: PosthogApiConfig) -> None:
    """Add the app API and its control endpoints to the simulator's application."""
    app[POSTHOG_API] = PosthogApi(config)
    app.add_routes(
        [
            web.route("*", "/api/{tail:.*}", _api),
            web.post("/_sim/posthog/seed", _seed),
            web.get("/_sim/posthog/api-log", _api_log),
        ]
    )


def reset(app: web.Application) -> None:
    """`POST /_sim/reset`: forget seeds, insights, dashboards, the call log and the query count."""
    app[POSTHOG_API].reset()
