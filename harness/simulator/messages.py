"""The Anthropic side: `POST /v1/messages` (streamed or not), count_tokens, and models.

Decides everything about a request at receipt (status, fault, answer, delays), records
it as ground truth, then paces the reply against absolute deadlines measured from the
receipt so delays never drift. Survives clients that hang up. Also owns what the other
Anthropic endpoints share with it (`preamble`: outage, key and version checks;
`error_response`; `plan_for` / `base_message` / `finish_message`, so a Message Batch
result is built exactly as a non-streamed reply). This module must not import anything
of the harness outside `harness.simulator`.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import orjson
from aiohttp import web

from harness.simulator import quality, sse
from harness.simulator.blocks import Frames, Reply, content_json, plan_reply, stream_frames
from harness.simulator.profiles import ModelProfile
from harness.simulator.promptcache import (
    NO_CACHE,
    CachePlan,
    CacheUsage,
    build_prompt,
    find_breakpoints,
    truth_fields,
)
from harness.simulator.ratelimit import key_id
from harness.simulator.state import SimState
from harness.simulator.textgen import Answer, content_digest, count_input_tokens, make_answer
from harness.simulator.timing import draw_timing, request_rng
from harness.simulator.validate import check_count_tokens, check_messages, model_of

__all__ = [
    "MAX_BODY_BYTES",
    "STATE",
    "base_message",
    "error_response",
    "finish_message",
    "new_id",
    "plan_for",
    "preamble",
    "routes",
]

STATE: web.AppKey[SimState] = web.AppKey("sim_state", SimState)
MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_RECORDED_GAPS = 4096
_COALESCE_MAX = 256  # deltas written in one go when several are due at once
_SPIN_S = 0.0015  # how long before the first token's deadline a stream stops sleeping

_ERROR_MESSAGES = {
    "rate_limit_error": "Number of requests has exceeded your rate limit. Please try again later.",
    "overloaded_error": "Overloaded",
    "api_error": "Internal server error",
}


def new_id(prefix: str) -> str:
    return prefix + "01" + secrets.token_hex(11)


def plan_for(seed: int, profile: ModelProfile, body: dict[str, Any], digest: bytes) -> Reply:
    """The reply to a valid body (`digest` = `content_digest` of the whole body): one function
    for live calls and batch results, so a batch result equals the live answer."""

    def answer(tokens: int) -> Answer:
        return make_answer(
            seed=seed,
            model=profile.id,
            digest=digest,
            max_tokens=tokens,
            verbosity=profile.verbosity,
            verbosity_sigma=profile.verbosity_sigma,
            answer_tokens_max=profile.answer_tokens_max,
            stop_sequences=body.get("stop_sequences"),
        )

    return plan_reply(
        seed=seed,
        model=profile.id,
        digest=digest,
        body=body,
        answer=answer,
        web_search_s=profile.web_search_s,
    )


def base_message(
    message_id: str, model: str, input_tokens: int, service_tier: str, cache: CacheUsage = NO_CACHE
) -> dict[str, Any]:
    """A Message before its content: what message_start carries, and the base of the whole reply.

    `input_tokens` is the prompt's uncached part (after the last cache breakpoint); `cache` what
    the prompt cache read and wrote (`promptcache.py`)."""
    usage: dict[str, Any] = {
        "input_tokens": input_tokens,
        "output_tokens": 0,
        "cache_creation_input_tokens": cache.write,
        "cache_read_input_tokens": cache.read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": cache.write_5m,
            "ephemeral_1h_input_tokens": cache.write_1h,
        },
        "service_tier": service_tier,
    }
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }


def finish_message(message: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """Fill in a `base_message` with the whole reply (content, stop, final usage); returns it."""
    message["content"] = content_json(reply)
    message["stop_reason"] = reply.stop_reason
    message["stop_sequence"] = reply.stop_sequence
    if reply.stop_details is not None:
        message["stop_details"] = reply.stop_details
    message["usage"]["output_tokens"] = reply.output_tokens
    reply.add_usage(message["usage"])
    return message


def error_response(status: int, kind: str, message: str, headers: dict[str, str]) -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": headers["request-id"]}
    return web.Response(
        status=status, body=orjson.dumps(body), headers=headers, content_type="application/json"
    )


def _api_key(request: web.Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer " and auth[7:].strip():
        return auth[7:].strip()
    return None


async def _read_json(request: web.Request, headers: dict[str, str]) -> tuple[Any, web.Response | None]:
    """The parsed body, or the error response (413 above 32 MB, 400 for bad JSON)."""
    if (request.content_length or 0) > MAX_BODY_BYTES:
        return None, error_response(
            413, "request_too_large", "Request exceeds the maximum allowed number of bytes.", headers
        )
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return None, error_response(
            413, "request_too_large", "Request exceeds the maximum allowed number of bytes.", headers
        )
    if len(raw) > MAX_BODY_BYTES:
        return None, error_response(
            413, "request_too_large", "Request exceeds the maximum allowed number of bytes.", headers
        )
    try:
        return orjson.loads(raw), None
    except orjson.JSONDecodeError:
        return None, error_response(400, "invalid_request_error", "body: Input should be valid JSON", headers)


REVOKED_KEY_PREFIX = "sk-ant-revoked"
NO_PERMISSION_KEY_PREFIX = "sk-ant-noperm"


def preamble(
    request: web.Request, state: SimState, headers: dict[str, str]
) -> tuple[str | None, web.Response | None]:
    """Outage, key and version checks shared by the Anthropic endpoints."""
    if state.outage("anthropic") == "500":
        return None, error_response(500, "api_error", "Internal server error", headers)
    key = _api_key(request)
    if key is None:
        return None, error_response(401, "authentication_error", "x-api-key header is required", headers)
    # Test hooks: keys with these prefixes are refused the way the real API refuses bad keys.
    if key.startswith(REVOKED_KEY_PREFIX):
        return None, error_response(401, "authentication_error", "invalid x-api-key", headers)
    if key.startswith(NO_PERMISSION_KEY_PREFIX):
        return None, error_response(
            403, "permission_error", "Your API key does not have permission to use this resource.", headers
        )
    if not request.headers.get("anthropic-version"):
        return None, error_response(
            400, "invalid_request_error", "anthropic-version: header is required", headers
        )
    return key, None


def _int_header(request: web.Request, name: str) -> int | None:
    try:
        return int(request.headers[name])
    except (KeyError, ValueError):
        return None


async def create_message(request: web.Request) -> web.StreamResponse:
    """`POST /v1/messages`."""
    t0 = time.perf_counter()
    state = request.app[STATE]
    headers = {"request-id": new_id("req_")}
    record: dict[str, Any] = {
        "request_id": headers["request-id"],
        "model": None,
        "call_id": request.headers.get("x-harness-call-id"),
        "attempt": _int_header(request, "x-harness-attempt"),
        "stream": False,
        "received_unix": time.time(),
        "status": None,
        "fault": None,
        "intended_ttft_s": None,
        "intended_gaps_s": [],
        "intended_total_s": 0.0,
        "input_tokens": 0,
        "output_tokens": 0,
        "stop_reason": None,
        "retry_after": None,
        "thinking_tokens": 0,
        "tool_calls": [],
        "web_search_requests": 0,
        "refused": False,
        "intended_first_text_s": None,
        "sent_first_text_s": None,
        "sent_first_thinking_s": None,
        "expected_kind": None,
        "quality_pass": None,
        "judge_score": None,
        **truth_fields(None),
    }

    def reject(response: web.Response, fault: str | None = None) -> web.Response:
        record["status"] = response.status
        record["fault"] = fault
        state.records.append(record)
        return response

    key, failure = preamble(request, state, headers)
    if failure is not None:
        return reject(failure, "outage" if failure.status == 500 else None)
    assert key is not None
    body, failure = await _read_json(request, headers)
    if failure is not None:
        return reject(failure)
    model = model_of(body)
    profile = state.profiles.resolve(model) if model is not None else None
    record["model"] = model
    record["stream"] = isinstance(body, dict) and body.get("stream") is True
    if model is not None and profile is None:
        return reject(error_response(404, "not_found_error", f"model: {model}", headers))
    problem = check_messages(body, profile.max_tokens if profile else None)
    if problem is not None or profile is None:
        return reject(
            error_response(400, "invalid_request_error", problem or "model: Field required", headers)
        )
    input_tokens = count_input_tokens(body)
    record["input_tokens"] = input_tokens
    if input_tokens > profile.max_input_tokens:
        message = f"prompt is too long: {input_tokens} tokens > {profile.max_input_tokens} maximum"
        return reject(error_response(400, "invalid_request_error", message, headers))
    try:
        ask = quality.read_headers(request.headers)
    except quality.HeaderError as exc:
        return reject(error_response(400, "invalid_request_error", str(exc), headers))
    if ask is not None:
        record["expected_kind"] = ask.kind
    return await _serve(request, state, profile, key_id(key), body, input_tokens, headers, record, t0, ask)


async def _serve(
    request: web.Request,
    state: SimState,
    profile: ModelProfile,
    key: str,
    body: dict[str, Any],
    input_tokens: int,
    headers: dict[str, str],
    record: dict[str, Any],
    t0: float,
    ask: quality.Ask | None = None,
) -> web.StreamResponse:
    """Draw fault, answer and timing; check the limits; then answer."""
    rng = request_rng(state.seed, state.next_counter())
    fault = state.faults.pick(profile.id, rng.random())
    max_tokens = body["max_tokens"]
    stream = body.get("stream") is True
    limiter = state.limiter
    if fault in ("rate_limit", "overloaded", "api_error"):
        headers.update(limiter.peek(key, profile.pool, profile.limits))
        record["fault"] = fault
        if fault == "rate_limit":
            retry_after = state.faults.retry_after_s
            text = f"{retry_after:g}"
            headers["retry-after"] = text
            record["retry_after"] = float(text)
            response = error_response(429, "rate_limit_error", _ERROR_MESSAGES["rate_limit_error"], headers)
        elif fault == "overloaded":
            response = error_response(529, "overloaded_error", "Overloaded", headers)
        else:
            response = error_response(500, "api_error", "Internal server error", headers)
        record["status"] = response.status
        state.records.append(record)
        return response
    # The prompt cache, decided at receipt and applied once the request is admitted.
    plan = _cache_plan(state, profile, key, body, input_tokens)
    cache = plan.usage if plan is not None else NO_CACHE
    uncached = plan.uncached if plan is not None else input_tokens
    # Input tokens per minute count the uncached and written tokens, not those read from the cache.
    admission = limiter.admit(key, profile.pool, profile.limits, uncached + cache.write, max_tokens)
    headers.update(admission.headers)
    if not admission.ok:
        headers["retry-after"] = str(admission.retry_after)
        record["retry_after"] = admission.retry_after
        record["status"] = 429
        record["limited"] = admission.limited
        state.records.append(record)
        reason = f"This request would exceed your rate limit for {admission.limited} per minute."
        return error_response(429, "rate_limit_error", reason, headers)

    digest = content_digest(body)
    shaped = None
    if ask is not None:  # the harness's quality headers (simulator mode only)
        shaped = quality.shape(
            ask,
            seed=state.seed,
            model=profile.id,
            table=profile.quality,
            digest=digest,
            body=body,
            web_search_s=profile.web_search_s,
            memo=state.quality,
            call_id=record["call_id"],
            judge_malformed=state.faults.rates_for(profile.id).get("judge_malformed", 0.0),
        )
    if shaped is not None:
        reply = shaped.reply
        record.update(shaped.truth)
    else:
        reply = plan_for(state.seed, profile, body, digest)
    frames = stream_frames(reply)
    count = len(frames.frames)
    prefill = plan.effective_tokens(profile.ttft_cache_read_factor) if plan is not None else input_tokens
    timing = draw_timing(
        profile, rng, count, prefill, state.time_scale, thinking=frames.thinking, pauses=frames.pauses
    )
    shift = state.faults.slow_first_byte_s if fault == "slow_first_byte" else 0.0
    if plan is not None:  # what it wrote is usable once its first token is due (from receipt)
        now = time.monotonic()
        received = now - (time.perf_counter() - t0)
        state.cache.commit(plan, now, received + shift + timing.ttft_s)
    # How many deltas go out before an in-stream fault strikes.
    cut = count
    if fault in ("midstream_error", "drop", "truncate"):
        cut = rng.randint(1, count - 1) if count > 1 else count
    offsets = timing.offsets[:cut]
    sent_tokens = sum(frames.tokens[:cut]) if cut < count else reply.output_tokens
    final_input = uncached + reply.search_input_tokens
    record.update(
        fault=fault,
        status=200,
        model=body["model"],
        stream=stream,
        intended_ttft_s=shift + timing.ttft_s,
        intended_gaps_s=timing.gaps_s[: max(0, cut - 1)] if cut <= MAX_RECORDED_GAPS else None,
        intended_total_s=shift + (offsets[-1] if offsets else timing.ttft_s),
        input_tokens=final_input,
        output_tokens=sent_tokens,
        stop_reason=reply.stop_reason if fault in (None, "slow_first_byte") else None,
        thinking_tokens=reply.thinking_tokens,
        tool_calls=reply.tool_calls,
        web_search_requests=reply.web_search_requests,
        refused=reply.refused,
        **truth_fields(plan),
    )
    if frames.first_text is not None and frames.first_text < cut:
        record["intended_first_text_s"] = shift + timing.offsets[frames.first_text]
    if fault in ("midstream_error", "drop", "truncate"):
        record["fault_after_tokens"] = sent_tokens
    if not stream and fault == "midstream_error":
        record["status"] = 529
    elif not stream and fault in ("drop", "truncate"):
        record["status"] = None  # the connection is cut before any response
    state.records.append(record)
    message = base_message(new_id("msg_"), profile.id, uncached, "standard", cache)
    message["usage"]["output_tokens"] = reply.output_tokens
    try:
        if shift:
            await asyncio.sleep(shift)
        if stream:
            return await _stream(request, headers, message, reply, frames, offsets, fault, t0 + shift, record)
        return await _whole(
            request, headers, message, reply, fault, t0 + shift + (offsets[-1] if offsets else 0.0)
        )
    finally:
        state.limiter.settle(key, profile.pool, profile.limits, max_tokens - sent_tokens)


def _cache_plan(
    state: SimState, profile: ModelProfile, key: str, body: dict[str, Any], input_tokens: int
) -> CachePlan | None:
    """What the request reads from and writes to the prompt cache; None without a breakpoint."""
    breakpoints = find_breakpoints(body)  # judged valid already
    if not breakpoints:
        return None
    prompt = build_prompt(body, key=key, model=profile.id, breakpoints=breakpoints, total_tokens=input_tokens)
    return state.cache.plan(prompt, profile.cache_min_tokens, time.monotonic())


async def _sleep_until(deadline: float) -> None:
    delay = deadline - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


async def _sleep_precisely(deadline: float) -> None:
    """Wake at `deadline` itself, not up to 1 ms after it.

    The event loop rounds its wait up to whole milliseconds, so a plain sleep ends 0-1 ms
    late. For the first token (the TTFT a client measures) sleep until just before the
    deadline, then yield to the loop until it passes (other tasks keep running).
    """
    early = deadline - time.perf_counter() - _SPIN_S
    if early > 0:
        await asyncio.sleep(early)
    while time.perf_counter() < deadline:  # noqa: ASYNC110 - a deliberate, sub-millisecond yield loop
        await asyncio.sleep(0)


async def _whole(
    request: web.Request,
    headers: dict[str, str],
    message: dict[str, Any],
    reply: Reply,
    fault: str | None,
    deadline: float,
) -> web.StreamResponse:
    """A non-streamed reply, sent when its last token would have been generated."""
    await _sleep_until(deadline)
    if fault in ("drop", "truncate"):
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=200)
    if fault == "midstream_error":
        return error_response(529, "overloaded_error", "Overloaded", headers)
    finish_message(message, reply)
    return web.Response(body=orjson.dumps(message), headers=headers, content_type="application/json")


async def _stream(
    request: web.Request,
    headers: dict[str, str],
    message: dict[str, Any],
    reply: Reply,
    plan: Frames,
    offsets: list[float],
    fault: str | None,
    t0: float,
    record: dict[str, Any],
) -> web.StreamResponse:
    """The SSE reply: start events at once, then one frame (delta) per token at its deadline.

    Records what it actually did beside what it intended: `sent_ttft_s` / `sent_total_s`
    (receipt → first delta / last byte handed to the socket), `sent_first_text_s` /
    `sent_first_thinking_s` (the first text_delta / thinking_delta), so a client's error can
    be told apart from the simulator's own lateness under load.
    """
    perf_counter = time.perf_counter
    headers["content-type"] = "text/event-stream; charset=utf-8"
    headers["cache-control"] = "no-cache"
    response = web.StreamResponse(status=200, headers=headers)
    start = dict(message, usage=dict(message["usage"], output_tokens=1))
    frames = plan.frames
    count = len(offsets)
    # Frames whose sending time is recorded: the first text and thinking deltas.
    text_at = plan.first_text if plan.first_text is not None else -1
    think_at = plan.first_thinking if plan.first_thinking is not None else -1
    try:
        await response.prepare(request)
        await response.write(sse.message_start(start) + plan.head)
        i = 0
        while i < count:
            deadline = t0 + offsets[i]
            now = perf_counter()
            if deadline > now:
                if i == 0 or i == text_at:
                    await _sleep_precisely(deadline)
                else:
                    await asyncio.sleep(deadline - now)
                now = perf_counter()
            j = i + 1
            while j < count and j - i < _COALESCE_MAX and t0 + offsets[j] <= now and j != text_at:
                j += 1
            data = frames[i] if j == i + 1 else b"".join(frames[i:j])
            if data:
                await response.write(data)
            if i == 0 or i <= text_at < j or i <= think_at < j:
                sent = perf_counter() - t0
                if i == 0:
                    record["sent_ttft_s"] = sent
                if i <= text_at < j:
                    record["sent_first_text_s"] = sent
                if i <= think_at < j:
                    record["sent_first_thinking_s"] = sent
            i = j
        if count == 0:
            await _sleep_until(t0 + record["intended_total_s"])
        if fault == "midstream_error":
            await response.write(sse.error_event("overloaded_error", "Overloaded"))
        elif fault == "drop":
            if request.transport is not None:
                request.transport.abort()
            return response
        elif fault != "truncate":
            # Cumulative, repeating the input and cache counts, as the real API's final usage does.
            usage = {
                "input_tokens": message["usage"]["input_tokens"],
                "cache_creation_input_tokens": message["usage"]["cache_creation_input_tokens"],
                "cache_read_input_tokens": message["usage"]["cache_read_input_tokens"],
                "output_tokens": reply.output_tokens,
            }
            final = sse.message_delta(
                reply.stop_reason, reply.stop_sequence, reply.add_usage(usage), reply.stop_details
            )
            await response.write(plan.tail + final)
        record["sent_total_s"] = perf_counter() - t0
        await response.write_eof()
    except (ConnectionError, RuntimeError):
        # The client hung up (or the transport is gone): stop quietly.
        record["client_closed"] = True
    return response


async def count_tokens(request: web.Request) -> web.Response:
    """`POST /v1/messages/count_tokens`: the same estimate as Messages usage (the sum of its
    input, cache read and cache write tokens); `cache_control` is accepted and caches nothing."""
    state = request.app[STATE]
    headers = {"request-id": new_id("req_")}
    _, failure = preamble(request, state, headers)
    if failure is not None:
        return failure
    body, failure = await _read_json(request, headers)
    if failure is not None:
        return failure
    model = model_of(body)
    if model is not None and state.profiles.resolve(model) is None:
        return error_response(404, "not_found_error", f"model: {model}", headers)
    problem = check_count_tokens(body)
    if problem is not None:
        return error_response(400, "invalid_request_error", problem, headers)
    payload = orjson.dumps({"input_tokens": count_input_tokens(body)})
    return web.Response(body=payload, headers=headers, content_type="application/json")


async def list_models(request: web.Request) -> web.Response:
    """`GET /v1/models`, newest first, with `limit`/`after_id`/`before_id` paging."""
    state = request.app[STATE]
    headers = {"request-id": new_id("req_")}
    _, failure = preamble(request, state, headers)
    if failure is not None:
        return failure
    models = state.profiles.newest_first()
    try:
        limit = int(request.query.get("limit", "20"))
    except ValueError:
        limit = -1
    if not 1 <= limit <= 1000:
        return error_response(
            400, "invalid_request_error", "limit: Input should be between 1 and 1000", headers
        )
    ids = [m.id for m in models]
    after, before = request.query.get("after_id"), request.query.get("before_id")
    if after is not None:
        models = models[ids.index(after) + 1 :] if after in ids else []
        page = models[:limit]
        has_more = len(models) > limit
    elif before is not None:
        models = models[: ids.index(before)] if before in ids else []
        page = models[-limit:]
        has_more = len(models) > limit
    else:
        page = models[:limit]
        has_more = len(models) > limit
    data = [m.info() for m in page]
    payload = {
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
    return web.Response(body=orjson.dumps(payload), headers=headers, content_type="application/json")


async def get_model(request: web.Request) -> web.Response:
    """`GET /v1/models/{id}` (aliases resolve to the dated id)."""
    state = request.app[STATE]
    headers = {"request-id": new_id("req_")}
    _, failure = preamble(request, state, headers)
    if failure is not None:
        return failure
    model_id = request.match_info["model_id"]
    profile = state.profiles.resolve(model_id)
    if profile is None:
        return error_response(404, "not_found_error", f"model: {model_id}", headers)
    return web.Response(body=orjson.dumps(profile.info()), headers=headers, content_type="application/json")


def routes() -> list[web.RouteDef]:
    return [
        web.post("/v1/messages", create_message),
        web.post("/v1/messages/count_tokens", count_tokens),
        web.get("/v1/models", list_models),
        web.get("/v1/models/{model_id}", get_model),
    ]
