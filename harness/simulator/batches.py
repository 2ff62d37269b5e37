"""The Message Batches API over HTTP: create, retrieve, list, cancel, delete and results.

Speaks the real API's shapes so the unchanged SDK's `client.messages.batches` works
through `base_url`. Every endpoint first runs the Messages preamble (outage, key,
version), then the batch API's own requests-per-minute limit (per key, shared by every
model); create also checks the processing-queue limit. Both answer 429 with
`retry-after`. Create judges only the envelope (400 on a bad one, 413 above 256 MB):
each request's params are judged when the batch is built, and a bad one becomes that
request's `errored` result, as the real API reports params errors after processing.

Results are streamed as JSON Lines in a seeded shuffle, each line rendered from the
stored request just before it is written, with `messages.plan_for` and
`finish_message`: a succeeded result carries the content and usage a non-streamed call
with the same params gets live, with `usage.service_tier` "batch". A request carrying the
harness's headers in the envelope's `x-harness-headers` object (`validate.BATCH_HEADERS_KEY`,
the simulator's one extension: batch requests have no HTTP headers of their own) gets the
quality model's answer, drawn as live (its `custom_id` is the call id the draw is keyed by);
a judge mark there is ignored. This module must not import anything of the harness outside
`harness.simulator`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from harness.simulator import quality
from harness.simulator.batchstore import DAY_S, ERRORED, SUCCEEDED, Batch, BatchBuilder
from harness.simulator.messages import (
    STATE,
    base_message,
    error_response,
    finish_message,
    new_id,
    plan_for,
    preamble,
)
from harness.simulator.profiles import Profiles
from harness.simulator.ratelimit import key_id
from harness.simulator.state import SimState
from harness.simulator.validate import BATCH_HEADERS_KEY, check_batch_create

__all__ = ["MAX_BATCH_BYTES", "batch_json", "routes"]

MAX_BATCH_BYTES = 256 * 1024 * 1024
_YIELD_EVERY = 500  # requests built between two yields to the event loop
_CHUNK_BYTES = 256 * 1024  # results written per socket write
_READ_BYTES = 1024 * 1024
_TOO_LARGE = "Request exceeds the maximum allowed number of bytes."
MSG_RPM = "This request would exceed your rate limit for Message Batches API requests per minute."


def _rfc3339(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json(payload: Any, headers: dict[str, str], status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(payload), status=status, headers=headers, content_type="application/json"
    )


def batch_json(batch: Batch, now_mono: float, base_url: str) -> dict[str, Any]:
    """The `MessageBatch` object as of `now_mono`."""
    status = batch.status(now_mono)
    ended = status == "ended"
    return {
        "id": batch.id,
        "type": "message_batch",
        "processing_status": status,
        "request_counts": batch.counts(now_mono),
        "ended_at": _rfc3339(batch.created_unix + batch.end_s()) if ended else None,
        "created_at": _rfc3339(batch.created_unix),
        "expires_at": _rfc3339(batch.created_unix + DAY_S),
        "cancel_initiated_at": _rfc3339(batch.cancel_unix) if batch.cancel_unix is not None else None,
        "archived_at": None,
        "results_url": f"{base_url}/v1/messages/batches/{batch.id}/results" if ended else None,
    }


def _base_url(request: web.Request) -> str:
    """Where the client reached us: `results_url` must lead back here, not to the real API."""
    return f"{request.scheme}://{request.host}"


def _begin(request: web.Request) -> tuple[SimState, str, dict[str, str], web.Response | None]:
    """Preamble and the batch requests-per-minute limit; (state, key hash, headers, failure)."""
    state = request.app[STATE]
    headers = {"request-id": new_id("req_")}
    api_key, failure = preamble(request, state, headers)
    if failure is not None or api_key is None:
        return state, "", headers, failure
    key = key_id(api_key)
    admission = state.batch_limiter.admit(key, state.profiles.batch_limits.rpm)
    headers.update(admission.headers)
    if not admission.ok:
        headers["retry-after"] = str(admission.retry_after)
        return state, key, headers, error_response(429, "rate_limit_error", MSG_RPM, headers)
    return state, key, headers, None


def _not_found(batch_id: str, headers: dict[str, str]) -> web.Response:
    return error_response(404, "not_found_error", f"message_batch: {batch_id} not found", headers)


def _begin_on_batch(request: web.Request) -> tuple[dict[str, str], Batch] | web.Response:
    """`_begin`, then the key's batch named in the path: (headers, batch), or the failure to answer."""
    state, key, headers, failure = _begin(request)
    if failure is not None:
        return failure
    batch_id = request.match_info["batch_id"]
    batch = state.batches.get(key, batch_id)
    return _not_found(batch_id, headers) if batch is None else (headers, batch)


async def _read_body(request: web.Request) -> bytes | None:
    """The whole body, or None above 256 MB (read from the stream: the app's size cap is the
    Messages one, 32 MB)."""
    if (request.content_length or 0) > MAX_BATCH_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(_READ_BYTES):
        size += len(chunk)
        if size > MAX_BATCH_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _queue_full(
    state: SimState, key: str, now_mono: float, room: int, headers: dict[str, str]
) -> web.Response | None:
    """429 when `room` more requests would overflow the key's processing queue, else None."""
    limit = state.profiles.batch_limits.queue
    if state.batches.queued(key, now_mono) + room <= limit:
        return None
    wait = state.batches.wait_for_room(key, now_mono, room, limit)
    headers["retry-after"] = str(max(1, int(wait + 0.999)))
    message = f"This request would exceed your rate limit of {limit} batch requests in the processing queue."
    return error_response(429, "rate_limit_error", message, headers)


def _int_header(request: web.Request, name: str) -> int | None:
    try:
        return int(request.headers[name])
    except (KeyError, ValueError):
        return None


async def create_batch(request: web.Request) -> web.Response:
    """`POST /v1/messages/batches`."""
    state, key, headers, failure = _begin(request)
    if failure is not None:
        return failure
    raw = await _read_body(request)
    if raw is None:
        return error_response(413, "request_too_large", _TOO_LARGE, headers)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return error_response(400, "invalid_request_error", "body: Input should be valid JSON", headers)
    del raw
    problem = check_batch_create(body)
    if problem is not None:
        return error_response(400, "invalid_request_error", problem, headers)
    items = body["requests"]
    full = _queue_full(state, key, time.monotonic(), len(items), headers)
    if full is not None:
        return full
    builder = BatchBuilder(
        number=state.batches.next_number(),
        seed=state.seed,
        time_scale=state.time_scale,
        profiles=state.profiles,
        faults=state.faults,
        key=key,
        cache=state.cache,
    )
    for i, item in enumerate(items):
        try:
            ask = quality.read_headers(item.get(BATCH_HEADERS_KEY) or {})
        except quality.HeaderError as exc:
            return error_response(400, "invalid_request_error", f"requests.{i}.{exc}", headers)
        builder.add(item["custom_id"], item["params"], ask if ask is not None and not ask.judge else None)
        if i % _YIELD_EVERY == _YIELD_EVERY - 1:
            await asyncio.sleep(0)  # a 100,000-request batch must not stall live streams
    now = time.monotonic()
    full = _queue_full(state, key, now, len(items), headers)  # other creates ran meanwhile
    if full is not None:
        return full
    batch = builder.build(
        batch_id=new_id("msgbatch_"),
        key=key,
        created_unix=time.time(),
        created_mono=now,
        call_id=request.headers.get("x-harness-call-id"),
        attempt=_int_header(request, "x-harness-attempt"),
    )
    state.batches.add(batch)
    return _json(batch_json(batch, now, _base_url(request)), headers)


async def retrieve_batch(request: web.Request) -> web.Response:
    """`GET /v1/messages/batches/{id}`: poll it as often as the rate limit allows."""
    found = _begin_on_batch(request)
    if isinstance(found, web.Response):
        return found
    headers, batch = found
    return _json(batch_json(batch, time.monotonic(), _base_url(request)), headers)


async def list_batches(request: web.Request) -> web.Response:
    """`GET /v1/messages/batches`: the key's batches newest first, `limit`/`after_id`/`before_id`."""
    state, key, headers, failure = _begin(request)
    if failure is not None:
        return failure
    try:
        limit = int(request.query.get("limit", "20"))
    except ValueError:
        limit = -1
    if not 1 <= limit <= 1000:
        return error_response(
            400, "invalid_request_error", "limit: Input should be between 1 and 1000", headers
        )
    batches = state.batches.newest_first(key)
    ids = [b.id for b in batches]
    after, before = request.query.get("after_id"), request.query.get("before_id")
    if after is not None:
        batches = batches[ids.index(after) + 1 :] if after in ids else []
        page = batches[:limit]
    elif before is not None:
        batches = batches[: ids.index(before)] if before in ids else []
        page = batches[-limit:]
    else:
        page = batches[:limit]
    now = time.monotonic()
    base = _base_url(request)
    data = [batch_json(b, now, base) for b in page]
    payload = {
        "data": data,
        "has_more": len(batches) > limit,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
    return _json(payload, headers)


async def cancel_batch(request: web.Request) -> web.Response:
    """`POST /v1/messages/batches/{id}/cancel`: `canceling` now, `ended` once in-flight work is done."""
    found = _begin_on_batch(request)
    if isinstance(found, web.Response):
        return found
    headers, batch = found
    batch_id = batch.id
    now = time.monotonic()
    if batch.status(now) == "ended":
        message = f"Message Batch {batch_id} has already ended and can no longer be canceled."
        return error_response(400, "invalid_request_error", message, headers)
    batch.cancel(now, time.time())
    return _json(batch_json(batch, now, _base_url(request)), headers)


async def delete_batch(request: web.Request) -> web.Response:
    """`DELETE /v1/messages/batches/{id}`: only an ended batch (cancel an in-progress one first)."""
    found = _begin_on_batch(request)
    if isinstance(found, web.Response):
        return found
    headers, batch = found
    batch_id = batch.id
    status = batch.status(time.monotonic())
    if status != "ended":
        message = (
            f"Message Batch {batch_id} cannot be deleted while it is {status}; "
            "cancel it and wait for processing to end first."
        )
        return error_response(400, "invalid_request_error", message, headers)
    batch.deleted_unix = time.time()
    return _json({"id": batch_id, "type": "message_batch_deleted"}, headers)


def _message_id(seed: int, batch_id: str, index: int) -> str:
    """Stable across downloads of the same results."""
    return "msg_01" + hashlib.blake2b(f"{seed}|{batch_id}|{index}".encode(), digest_size=11).hexdigest()


def result_line(
    seed: int, profiles: Profiles, batch: Batch, index: int, memo: quality.Memo | None = None
) -> bytes:
    """One line of the results file for request `index` of an ended batch.

    `memo` holds the quality model's occurrences (the simulator's, so a re-download repeats the
    answers: each request's draw is keyed by its custom_id)."""
    request = batch.requests[index]
    outcome = batch.outcome(request)
    result: dict[str, Any]
    if outcome == SUCCEEDED and request.model is not None and request.inputs is not None:
        profile = profiles.models[request.model]
        shaped = None
        if request.ask is not None:
            shaped = quality.shape(
                request.ask,
                seed=seed,
                model=profile.id,
                table=profile.quality,
                digest=request.digest,
                body=request.inputs,
                web_search_s=profile.web_search_s,
                memo=memo if memo is not None else quality.Memo(),
                call_id=request.custom_id,
                judge_malformed=0.0,
            )
        reply = (
            shaped.reply if shaped is not None else plan_for(seed, profile, request.inputs, request.digest)
        )
        message = base_message(
            _message_id(seed, batch.id, index), profile.id, request.input_tokens, "batch", request.cache
        )
        result = {"type": SUCCEEDED, "message": finish_message(message, reply)}
    elif outcome == ERRORED and request.error is not None:
        kind, text = request.error
        error = {"type": "error", "error": {"type": kind, "message": text}, "request_id": None}
        result = {"type": ERRORED, "error": error}
    else:
        result = {"type": outcome}
    return orjson.dumps({"custom_id": request.custom_id, "result": result}, option=orjson.OPT_APPEND_NEWLINE)


async def batch_results(request: web.Request) -> web.StreamResponse:
    """`GET /v1/messages/batches/{id}/results`: JSON Lines, streamed in chunks, never held whole."""
    found = _begin_on_batch(request)
    if isinstance(found, web.Response):
        return found
    headers, batch = found
    batch_id = batch.id
    if batch.status(time.monotonic()) != "ended":
        message = f"Message Batch {batch_id} has not ended yet; its results are available once it has."
        return error_response(400, "invalid_request_error", message, headers)
    headers["content-type"] = "application/x-jsonl"
    headers["content-disposition"] = f"attachment; filename*=utf-8''{batch_id}_results.jsonl"
    response = web.StreamResponse(status=200, headers=headers)
    state = request.app[STATE]
    seed, profiles = state.seed, state.profiles
    try:
        await response.prepare(request)
        chunk: list[bytes] = []
        size = 0
        for index in batch.order(seed):
            line = result_line(seed, profiles, batch, index, state.quality)
            chunk.append(line)
            size += len(line)
            if size >= _CHUNK_BYTES:
                await response.write(b"".join(chunk))
                chunk.clear()
                size = 0
                await asyncio.sleep(0)  # let live streams run between chunks
        if chunk:
            await response.write(b"".join(chunk))
        await response.write_eof()
    except (ConnectionError, RuntimeError):
        pass  # the client hung up
    return response


def routes() -> list[web.RouteDef]:
    return [
        web.post("/v1/messages/batches", create_batch),
        web.get("/v1/messages/batches", list_batches),
        web.get("/v1/messages/batches/{batch_id}", retrieve_batch),
        web.delete("/v1/messages/batches/{batch_id}", delete_batch),
        web.post("/v1/messages/batches/{batch_id}/cancel", cancel_batch),
        web.get("/v1/messages/batches/{batch_id}/results", batch_results),
    ]
