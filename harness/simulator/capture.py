"""The PostHog side: the capture endpoints the posthog SDK posts to, and their event store.

Accepts v0 `/batch/` (gzip or not), the single-event `/i/v0/e/`, `/e/`, `/capture/`, the
AI lane `/i/v0/ai/batch/`, and v1 `/i/v1/analytics/events` (deflate too). Answers exactly
200. An `api_key` must be present (400 otherwise) but is never stored or echoed. This
module must not know about the Anthropic side.
"""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import orjson
from aiohttp import web

from harness.simulator.messages import STATE

__all__ = ["MAX_CAPTURE_BYTES", "routes"]

MAX_CAPTURE_BYTES = 20 * 1024 * 1024
_SECRET_FIELDS = ("api_key", "token")


def _decode(request: web.Request, raw: bytes) -> bytes:
    """The JSON bytes of a body. aiohttp already undoes a declared gzip/deflate encoding,
    so look at the bytes themselves; `?compression=gzip-js` bodies carry no header."""
    if raw[:2] == b"\x1f\x8b":
        return gzip.decompress(raw)
    if raw[:1] not in (b"{", b"[") and request.headers.get("Content-Encoding", "").lower() == "deflate":
        return zlib.decompress(raw)
    return raw


def _bad(message: str) -> web.Response:
    body = {"type": "validation_error", "code": "invalid_payload", "detail": message}
    return web.json_response(body, status=400, dumps=lambda o: orjson.dumps(o).decode())


def _key_present(request: web.Request, body: Any) -> bool:
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer " and auth[7:].strip():
        return True
    if any(request.query.get(name) for name in _SECRET_FIELDS):
        return True
    if isinstance(body, dict):
        if any(isinstance(body.get(name), str) and body[name] for name in _SECRET_FIELDS):
            return True
        props = body.get("properties")
        if isinstance(props, dict) and isinstance(props.get("token"), str) and props["token"]:
            return True
    return False


def _events_of(body: Any) -> list[Any]:
    if isinstance(body, list):
        return body
    if isinstance(body, dict):
        batch = body.get("batch")
        if isinstance(batch, list):
            return batch
        if "event" in body:
            return [body]
    raise ValueError("no events: expected a batch or an event")


def _scrub(event: dict[str, Any]) -> dict[str, Any]:
    """A copy without any api key the sender put inside the event."""
    clean = {k: v for k, v in event.items() if k not in _SECRET_FIELDS}
    props = clean.get("properties")
    if isinstance(props, dict) and "token" in props:
        clean["properties"] = {k: v for k, v in props.items() if k != "token"}
    return clean


async def capture(request: web.Request) -> web.StreamResponse:
    """Every capture path: check, decode, store, answer 200."""
    state = request.app[STATE]
    outage = state.outage("posthog")
    if outage == "refuse":
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=503)
    if outage == "500":
        return web.json_response({"error": "simulated outage"}, status=500)
    raw = await request.read()
    if len(raw) > MAX_CAPTURE_BYTES:
        return web.json_response({"error": "payload too large"}, status=413)
    try:
        body = orjson.loads(_decode(request, raw))
        events = _events_of(body)
    except (ValueError, OSError, zlib.error, EOFError) as exc:
        return _bad(f"invalid body: {exc}")
    if not _key_present(request, body):
        return _bad("api_key is required")
    uuids = [state.events.add(_scrub(e) if isinstance(e, dict) else {"value": e}) for e in events]
    if request.path.startswith("/i/v1/"):
        results = {u: {"result": "ok"} for u in uuids}
        return web.Response(body=orjson.dumps({"results": results}), content_type="application/json")
    return web.Response(body=b'{"status":1}', content_type="application/json")


def routes() -> list[web.RouteDef]:
    paths = ["/batch/", "/batch", "/i/v0/e/", "/i/v0/e", "/e/", "/e", "/capture/", "/capture"]
    paths += ["/i/v0/ai/batch/", "/i/v1/analytics/events", "/i/v1/analytics/events/"]
    return [web.post(p, capture) for p in paths]
