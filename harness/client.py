"""The one importer of `anthropic`: one attempt of one call, streamed or not, with monotonic time marks.

Every SDK or transport failure is translated here, at one boundary, into an
`error_kind` (the table in `ERROR_KINDS`); nothing above this module sees an
SDK exception. The SDK's own retries are off (`max_retries=0`): the runner owns
retries, so each attempt is visible and counted. The SDK's OpenTelemetry call spans are off
(`open_telemetry=False`): the harness records its own marks, and building a span's attributes
costs CPU on every call whether or not a tracer records it (issue #16).

Streams are read from the SDK's raw streaming response and split into SSE events
here: the SDK's high-level stream helper costs several times more CPU per token
(building-blocks, issue #6), and the harness only needs the time marks, the text,
the tool calls, the usage and the stop reason. TTFT is taken at the first content
delta of any kind (never at `message_start`); the first `text_delta` and the first
`thinking_delta` are marked apart, since a thinking stream's first delta is not the
first text a user sees. A stream that ends without `message_stop` or a stop reason
is a failure even though the SDK would raise nothing; a complete stream whose last
event lacks its blank line is accepted at EOF, as the SDK does. An `error` event
after the 200 carrying a retryable type (`overloaded_error`, `api_error`,
`rate_limit_error`) is the same failure as that error sent as an HTTP status.
Usage is merged and read by `harness.usage`.

Message Batches (`harness.batch` drives them) go through the same client: create, retrieve,
list and cancel through `client.messages.batches` (one attempt each, a failure translated
into a `BatchCall`'s `error_kind` as above), and results streamed line by line from
`client.messages.batches.with_streaming_response.results`, never held whole. A create's body
is a stream of pre-encoded request lines of a known length, sent through the SDK's own
`post` (same auth, headers and error translation): `messages.batches.create` takes the
requests as Python objects and encodes the whole body in memory, twice the size of the
batch, which a 100,000-request batch cannot afford (issue #14: flat memory at 200,000
calls). A batch request is the Messages body `request_params` makes, unstreamed, with
the extra-body fields in place and `custom_id` = the call id; a succeeded result's message
is read by the same `_read_message` as a live answer.
"""

from __future__ import annotations

import asyncio
import base64
import sys
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anthropic
import httpx2
import orjson

from harness import selfdelay
from harness.records import PlannedCall
from harness.usage import apply_usage, merge_usage

__all__ = [
    "BATCH_HEADERS_KEY",
    "ERROR_KINDS",
    "Attempt",
    "BatchCall",
    "BatchDownloadError",
    "BatchStatus",
    "ClaudeClient",
    "StreamReader",
    "attempt_of_result",
    "batch_item",
    "max_tokens_of",
    "request_params",
]

DEFAULT_MAX_TOKENS = 1024

# error_kind → (retryable, aborts the run)
ERROR_KINDS: dict[str, tuple[bool, bool]] = {
    "rate_limit": (True, False),  # 429
    "overloaded": (True, False),  # 529
    "server_error": (True, False),  # 500 and other 5xx
    "timeout": (True, False),  # no (complete) answer within --timeout
    "connection": (True, False),  # refused / reset before a response
    "bad_request": (False, False),  # 400 and other 4xx
    "authentication": (False, True),  # 401
    "permission": (False, True),  # 403
    "not_found": (False, False),  # 404
    "request_too_large": (False, False),  # 413
    "stream_error": (False, False),  # an `error` event after the 200
    "stream_dropped": (False, False),  # connection lost inside the body
    "stream_truncated": (False, False),  # body ended without message_stop
    "client_error": (False, False),  # anything else raised by the client
    "harness_error": (False, False),  # a bug in the harness while handling the call
    "expired": (False, False),  # batch mode: not processed within the batch's 24 hours
}

_STATUS_KINDS = {
    400: "bad_request",
    401: "authentication",
    403: "permission",
    404: "not_found",
    413: "request_too_large",
    429: "rate_limit",
    529: "overloaded",
}

# `error.type` of an `error` event after the 200 → the kind of the same error sent as a status.
# Any other type ends the call as a final `stream_error`.
_STREAM_ERROR_KINDS = {
    "overloaded_error": "overloaded",
    "api_error": "server_error",
    "rate_limit_error": "rate_limit",
}


@dataclass(slots=True)
class Attempt:
    """What one HTTP attempt produced: marks in perf_counter nanoseconds, usage, outcome."""

    sent_ns: int = 0
    first_token_ns: int | None = None  # first content delta of any kind
    first_text_ns: int | None = None  # first text_delta
    first_thinking_ns: int | None = None  # first thinking_delta
    last_byte_ns: int = 0
    # This process's own delay at the first-token and last-byte marks (`harness.selfdelay`); None
    # outside a run (no loop clock) or without the mark.
    first_token_delay_ns: int | None = None
    last_byte_delay_ns: int | None = None
    status: int | None = None
    ok: bool = False
    error_kind: str | None = None
    error_message: str | None = None
    request_id: str | None = None
    retry_after_s: float | None = None
    headers: Mapping[str, str] | None = None
    model_reported: str | None = None
    stop_reason: str | None = None
    text: str = ""
    tool_calls: list[dict[str, Any]] | None = None  # the model's `tool_use` blocks: {"name", "input"}
    # Usage, as `harness.usage.apply_usage` reads it.
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_1h_input_tokens: int = 0
    thinking_tokens: int | None = None
    web_search_requests: int | None = None
    web_fetch_requests: int | None = None
    service_tier: str | None = None
    inference_geo: str | None = None

    @property
    def retryable(self) -> bool:
        return ERROR_KINDS.get(self.error_kind or "", (False, False))[0]

    @property
    def fatal(self) -> bool:
        return ERROR_KINDS.get(self.error_kind or "", (False, False))[1]

    def fail(self, kind: str, message: str, status: int | None = None) -> Attempt:
        self.ok = False
        self.error_kind = kind
        self.error_message = message[:500]
        if status is not None:
            self.status = status
        if not self.last_byte_ns:
            self.mark_last_byte(time.perf_counter_ns(), selfdelay.current())
        return self

    def mark_last_byte(self, now: int, clock: selfdelay.LoopClock | None) -> None:
        """The last-byte mark, with this process's own delay at it when a loop clock runs."""
        self.last_byte_ns = now
        if clock is not None:
            self.last_byte_delay_ns = clock.delay_ns(now)


# A batch result's `error.type` → the harness's error_kind (as the same error sent as a status).
_ERROR_TYPE_KINDS = {
    "invalid_request_error": "bad_request",
    "authentication_error": "authentication",
    "permission_error": "permission",
    "not_found_error": "not_found",
    "request_too_large": "request_too_large",
    "rate_limit_error": "rate_limit",
    "api_error": "server_error",
    "overloaded_error": "overloaded",
}
# The simulator's key for a batch request's harness headers (its `validate.BATCH_HEADERS_KEY`).
BATCH_HEADERS_KEY = "x-harness-headers"


@dataclass(frozen=True, slots=True)
class BatchStatus:
    """A Message Batch as the engine reads it (the API's `MessageBatch`)."""

    id: str
    processing_status: str  # in_progress | canceling | ended
    request_counts: dict[str, int]
    created_at: datetime | None
    ended_at: datetime | None = None
    expires_at: datetime | None = None
    cancel_initiated_at: datetime | None = None

    @property
    def requests(self) -> int:
        return sum(self.request_counts.values())


@dataclass(slots=True)
class BatchCall:
    """What one request to a batch endpoint produced: the batch(es), or a translated failure."""

    batch: BatchStatus | None = None
    page: list[BatchStatus] = field(default_factory=list)  # list: newest first
    has_more: bool = False
    status: int | None = None
    error_kind: str | None = None
    error_message: str | None = None
    retry_after_s: float | None = None
    headers: Mapping[str, str] | None = None

    @property
    def ok(self) -> bool:
        return self.error_kind is None

    @property
    def retryable(self) -> bool:
        return ERROR_KINDS.get(self.error_kind or "", (False, False))[0]

    @property
    def fatal(self) -> bool:
        return ERROR_KINDS.get(self.error_kind or "", (False, False))[1]


class BatchDownloadError(Exception):
    """A results download failed (the SDK's or the transport's error, translated here)."""

    def __init__(self, kind: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.retry_after_s = retry_after_s


def batch_item(call: PlannedCall, *, quality_headers: bool = False) -> dict[str, Any]:
    """One request of a Message Batch: `custom_id` is the call id, `params` the unstreamed body.

    The SDK's `extra_body` fields (temperature, top_k, top_p) go into the body itself; with
    `quality_headers` (the project's simulator only) the case's expectation rides along.
    """
    params = request_params(call, stream=False)
    params.update(params.pop("extra_body", None) or {})
    item: dict[str, Any] = {"custom_id": call.call_id, "params": params}
    if quality_headers:
        headers = simulator_quality_headers(call)
        if headers:
            item[BATCH_HEADERS_KEY] = headers
    return item


def attempt_of_result(result: Mapping[str, Any]) -> tuple[str, Attempt]:
    """A batch result (`{"type", ...}` of one JSONL line) → its type and the `Attempt` it amounts to.

    `succeeded`: the message read as a live unstreamed answer; `errored`: the API error's kind;
    `expired` / `canceled`: a failed attempt of that kind. No time marks: a batch has none per request.
    """
    kind = str(result.get("type"))
    a = Attempt()
    if kind == "succeeded":
        message = result.get("message")
        ClaudeClient._read_message_obj(message if isinstance(message, Mapping) else {}, a)
    elif kind == "errored":
        body = result.get("error")
        error = body.get("error") if isinstance(body, Mapping) else None
        error = error if isinstance(error, Mapping) else {}
        etype = str(error.get("type") or "error")
        a.fail(_ERROR_TYPE_KINDS.get(etype, "client_error"), f"{etype}: {error.get('message') or ''}")
        a.request_id = body.get("request_id") if isinstance(body, Mapping) else None
    elif kind == "expired":
        a.fail("expired", "not processed before the batch expired (24 hours)")
    elif kind == "canceled":
        a.fail("cancelled", "the batch was canceled before this request was processed")
    else:
        a.fail("client_error", f"unknown batch result type {kind!r}")
    a.last_byte_ns = 0
    return kind, a


def _batch_status(batch: Any) -> BatchStatus:
    counts = batch.request_counts
    return BatchStatus(
        id=batch.id,
        processing_status=batch.processing_status,
        request_counts={
            "processing": counts.processing,
            "succeeded": counts.succeeded,
            "errored": counts.errored,
            "canceled": counts.canceled,
            "expired": counts.expired,
        },
        created_at=batch.created_at,
        ended_at=batch.ended_at,
        expires_at=batch.expires_at,
        cancel_initiated_at=batch.cancel_initiated_at,
    )


_current_attempt: ContextVar[Attempt | None] = ContextVar("current_attempt", default=None)
# Called once when an answer's first content arrives (the engine's cache warm-up releases the calls
# that share this call's prefix then: the API's cache entry is usable once a response has begun).
FIRST_TOKEN_HOOK: ContextVar[Callable[[], None] | None] = ContextVar("first_token_hook", default=None)


async def _stamp_sent(request: httpx2.Request) -> None:
    """httpx request hook: the moment the request leaves the SDK is the attempt's `sent` mark.

    Taken here rather than before `create()` so the SDK's own request building
    (parameter transforms, headers) is not counted as the model's latency.
    """
    attempt = _current_attempt.get()
    if attempt is not None:
        attempt.sent_ns = time.perf_counter_ns()


async def _stamp_sent_at_write(request: httpx2.Request) -> None:
    """The aiohttp transport's request hook before Python 3.12: `sent` is when the body write starts.

    There aiohttp buffers the headers and writes the body from a task of its own (no eager
    tasks before 3.12), so the request leaves one loop iteration after this hook: on a busy
    loop tens of milliseconds that a mark taken here would count as the model's TTFT
    (measured: 101 ms median at concurrency 256, issue #16). A callback queued here runs just
    before that task's first step, so the mark is taken as the request goes out.
    """
    attempt = _current_attempt.get()
    if attempt is not None:
        attempt.sent_ns = time.perf_counter_ns()
        asyncio.get_running_loop().call_soon(_restamp, attempt)


def _restamp(attempt: Attempt) -> None:
    attempt.sent_ns = time.perf_counter_ns()


# Python 3.12+ starts aiohttp's body writer eagerly: the request leaves inside the hook's step.
_AIOHTTP_WRITES_LATER = sys.version_info < (3, 12)


def max_tokens_of(call: PlannedCall) -> int:
    """What the request will ask for (as `request_params` does), without building it."""
    return call.case.max_tokens or DEFAULT_MAX_TOKENS


_BODY_ONLY = frozenset({"top_k", "top_p"})  # no keyword for them in SDK 2.14's messages.create


def request_params(call: PlannedCall, stream: bool) -> dict[str, Any]:
    """The Messages API arguments for a planned call (temperature goes through extra_body in SDK 2.14)."""
    case = call.case
    params: dict[str, Any] = {
        "model": call.model,
        "max_tokens": max_tokens_of(call),
        "messages": list(case.messages),
    }
    if case.system:
        params["system"] = case.system
    if case.stop_sequences:
        params["stop_sequences"] = list(case.stop_sequences)
    if case.user_id:
        params["metadata"] = {"user_id": case.user_id}
    body: dict[str, Any] = {}
    if case.temperature is not None:
        body["temperature"] = case.temperature
    for key, value in (case.params or {}).items():
        # Thinking, tools, tool choice, effort and service tier are SDK arguments; the rest rides in the body.
        (body if key in _BODY_ONLY else params)[key] = value
    if body:
        params["extra_body"] = body
    if stream:
        params["stream"] = True
    return params


def simulator_quality_headers(call: PlannedCall) -> dict[str, str]:
    """What the project's simulator needs to answer like a model of a given quality, and nothing else.

    Sent only to the project's simulator (never the real API, nor a custom target that may be a
    proxy to it: answers must not reach a model under test): the case's expectation
    (base64url JSON, so it can pass or fail it as a model of the profile's quality would) and
    tags, or that the call is a judge's. A test checks they never reach another target.
    """
    if call.judge:
        return {"x-harness-judge": "1"}
    case = call.case
    headers: dict[str, str] = {}
    if case.expected:
        raw = orjson.dumps(case.expected, option=orjson.OPT_SORT_KEYS)
        headers["x-harness-expected"] = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    if case.tags:
        headers["x-harness-tags"] = ",".join(case.tags)
    return headers


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue
    return None


class ClaudeClient:
    """An `AsyncAnthropic` client with retries off, used one attempt at a time."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None,
        timeout_s: float,
        transport: str = "aiohttp",
        tag_requests: bool = False,
        quality_headers: bool = False,
        max_connections: int = 1000,
    ) -> None:
        limits = httpx2.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        timeout = httpx2.Timeout(timeout_s, connect=min(5.0, timeout_s))
        hooks = {"request": [_stamp_sent]}
        http_client: httpx2.AsyncClient
        if transport == "aiohttp":
            if _AIOHTTP_WRITES_LATER:
                hooks = {"request": [_stamp_sent_at_write]}
            http_client = anthropic.DefaultAioHttpClient(timeout=timeout, limits=limits, event_hooks=hooks)
        else:
            http_client = anthropic.DefaultAsyncHttpxClient(timeout=timeout, limits=limits, event_hooks=hooks)
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            timeout=timeout,
            http_client=http_client,
            open_telemetry=False,
        )
        self._tag = tag_requests
        self._quality_headers = quality_headers and tag_requests

    async def aclose(self) -> None:
        await self._client.close()

    async def count_tokens(self, call: PlannedCall) -> int | None:
        """Input tokens of a request (the free `count_tokens` endpoint); None when it could not say."""
        params = request_params(call, stream=False)
        for key in ("max_tokens", "stop_sequences", "metadata", "stream", "service_tier", "top_k", "top_p"):
            params.pop(key, None)
        body = params.pop("extra_body", None) or {}
        body.pop("temperature", None)
        if body:
            params["extra_body"] = body
        try:
            counted = await self._client.messages.count_tokens(**params)
        except (anthropic.APIError, httpx2.HTTPError):
            return None
        return int(counted.input_tokens)

    async def get_model(self, model: str) -> str | None:
        """Preflight: None when the model exists, else an `error_kind` (not_found, authentication…)."""
        try:
            await self._client.models.retrieve(model)
        except anthropic.APIStatusError as exc:
            return _STATUS_KINDS.get(
                exc.status_code, "server_error" if exc.status_code >= 500 else "bad_request"
            )
        except anthropic.APIConnectionError:
            return "connection"
        return None

    async def call(self, call: PlannedCall, *, stream: bool, attempt: int) -> Attempt:
        """Send one attempt and measure it; never raises for a failed call."""
        params = request_params(call, stream)
        if self._tag:
            params["extra_headers"] = {"x-harness-call-id": call.call_id, "x-harness-attempt": str(attempt)}
            if self._quality_headers:
                params["extra_headers"].update(simulator_quality_headers(call))
        a = Attempt()
        a.sent_ns = time.perf_counter_ns()  # replaced by the request hook when the request leaves
        token = _current_attempt.set(a)
        try:
            async with self._client.messages.with_streaming_response.create(**params) as resp:
                http = resp.http_response
                a.status = http.status_code
                a.headers = http.headers
                a.request_id = http.headers.get("request-id")
                if stream:
                    await self._read_stream(http, a)
                else:
                    body = await http.aread()
                    a.mark_last_byte(time.perf_counter_ns(), selfdelay.current())
                    self._read_message(body, a)
                    hook = FIRST_TOKEN_HOOK.get()
                    if hook is not None:
                        hook()
        except anthropic.APIStatusError as exc:
            a.headers = exc.response.headers
            a.request_id = exc.request_id or a.request_id
            a.retry_after_s = _retry_after(exc.response.headers)
            status = exc.status_code
            kind = _STATUS_KINDS.get(status) or ("server_error" if status >= 500 else "bad_request")
            a.fail(kind, f"{status} {getattr(exc, 'type', None) or ''}: {_api_message(exc)}", status)
        except anthropic.APITimeoutError:
            a.fail("timeout", "no response within the timeout")
        except anthropic.APIConnectionError as exc:
            a.fail("connection", f"connection failed: {type(exc.__cause__ or exc).__name__}")
        except httpx2.TimeoutException:
            a.fail("timeout", "stream stalled longer than the timeout")
        except httpx2.TransportError as exc:
            a.fail("stream_dropped", f"connection lost mid-stream: {type(exc).__name__}")
        except (anthropic.AnthropicError, ValueError, TypeError) as exc:
            a.fail("client_error", f"{type(exc).__name__}: {exc}")
        finally:
            _current_attempt.reset(token)
        return a

    # ------------------------------------------------------------ Message Batches

    async def _batch_call(self, request: Any) -> BatchCall:
        """Await one batch-endpoint request (a `with_raw_response` coroutine); failures translated."""
        out = BatchCall()
        try:
            raw = await request
            if hasattr(raw, "http_response"):  # a raw response: its headers carry the rate limits
                out.status = raw.http_response.status_code
                out.headers = raw.headers
                parsed = await raw.parse()
            else:
                out.status, parsed = 200, raw
        except anthropic.APIStatusError as exc:
            status = exc.status_code
            out.status, out.headers = status, exc.response.headers
            out.retry_after_s = _retry_after(exc.response.headers)
            out.error_kind = _STATUS_KINDS.get(status) or ("server_error" if status >= 500 else "bad_request")
            out.error_message = f"{status} {getattr(exc, 'type', None) or ''}: {_api_message(exc)}"[:500]
            return out
        except anthropic.APITimeoutError:
            out.error_kind, out.error_message = "timeout", "no response within the timeout"
            return out
        except (anthropic.APIConnectionError, httpx2.TransportError) as exc:
            out.error_kind = "connection"
            out.error_message = f"connection failed: {type(exc.__cause__ or exc).__name__}"
            return out
        except (anthropic.AnthropicError, ValueError, TypeError) as exc:
            out.error_kind, out.error_message = "client_error", f"{type(exc).__name__}: {exc}"[:500]
            return out
        if hasattr(parsed, "data"):  # a page of the list
            out.page = [_batch_status(b) for b in parsed.data]
            out.has_more = bool(parsed.has_more)
        else:
            out.batch = _batch_status(parsed)
        return out

    async def create_batch(
        self, body: AsyncIterable[bytes], size: int, *, tag: str | None = None
    ) -> BatchCall:
        """`POST /v1/messages/batches` with a streamed body of `size` bytes (see the module docstring)."""
        from anthropic.types.messages import MessageBatch

        headers = {"Content-Type": "application/json", "Content-Length": str(size)}
        if tag and self._tag:
            headers["x-harness-call-id"] = tag
        request = self._client.post(
            "/v1/messages/batches",
            content=body,
            cast_to=MessageBatch,
            options={"headers": headers},
        )
        return await self._batch_call(request)

    async def get_batch(self, batch_id: str) -> BatchCall:
        return await self._batch_call(self._client.messages.batches.with_raw_response.retrieve(batch_id))

    async def cancel_batch(self, batch_id: str) -> BatchCall:
        return await self._batch_call(self._client.messages.batches.with_raw_response.cancel(batch_id))

    async def list_batches(self, *, after_id: str | None = None, limit: int = 100) -> BatchCall:
        """One page of the key's batches, newest first (`after_id`: the page after that batch)."""
        batches = self._client.messages.batches.with_raw_response
        if after_id:
            return await self._batch_call(batches.list(limit=limit, after_id=after_id))
        return await self._batch_call(batches.list(limit=limit))

    async def batch_results(self, batch_id: str) -> AsyncIterator[dict[str, Any]]:
        """The results of an ended batch, one parsed JSONL line at a time (streamed, never held whole).

        Raises `BatchDownloadError` when the download fails or is cut; lines already yielded stand.
        """
        try:
            async with self._client.messages.batches.with_streaming_response.results(batch_id) as resp:
                pending = b""
                async for chunk in resp.http_response.aiter_bytes():
                    lines = (pending + chunk).split(b"\n")
                    pending = lines.pop()
                    for line in lines:
                        if line.strip():
                            yield orjson.loads(line)
                if pending.strip():
                    yield orjson.loads(pending)
        except anthropic.APIStatusError as exc:
            status = exc.status_code
            kind = _STATUS_KINDS.get(status) or ("server_error" if status >= 500 else "bad_request")
            raise BatchDownloadError(
                kind, f"{status}: {_api_message(exc)}", _retry_after(exc.response.headers)
            ) from None
        except anthropic.APITimeoutError:
            raise BatchDownloadError("timeout", "results download timed out") from None
        except (anthropic.APIConnectionError, httpx2.TransportError) as exc:
            raise BatchDownloadError("connection", f"results download cut: {type(exc).__name__}") from None
        except orjson.JSONDecodeError:
            raise BatchDownloadError("client_error", "a results line is not JSON") from None
        except anthropic.AnthropicError as exc:  # e.g. no results_url yet
            raise BatchDownloadError("client_error", f"{type(exc).__name__}: {exc}"[:300]) from None

    @staticmethod
    def _read_message(body: bytes, a: Attempt) -> None:
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError:
            a.fail("client_error", "response body is not JSON")
            return
        ClaudeClient._read_message_obj(message if isinstance(message, Mapping) else {}, a)

    @staticmethod
    def _read_message_obj(message: Mapping[str, Any], a: Attempt) -> None:
        """A complete (unstreamed or batch) message: text, tool calls, usage, stop reason."""
        a.model_reported = message.get("model")
        a.stop_reason = message.get("stop_reason")
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        for block in message.get("content") or ():
            kind = block.get("type")
            if kind == "text":
                texts.append(block.get("text", ""))
            elif kind == "tool_use":
                calls.append({"name": block.get("name"), "input": block.get("input")})
        a.text = "".join(texts)
        a.tool_calls = calls or None
        apply_usage(a, message.get("usage"))  # the body's usage is the only one
        if a.stop_reason is None:
            a.fail("stream_truncated", "message has no stop_reason")
        else:
            a.ok = True

    @staticmethod
    async def _read_stream(http: httpx2.Response, a: Attempt) -> None:
        """Feed the SSE body to a `StreamReader`; parse only what the record needs."""
        reader = StreamReader(a)
        async for chunk in http.aiter_bytes():
            if reader.feed(chunk, time.perf_counter_ns()):
                return
        reader.end(time.perf_counter_ns())


class StreamReader:
    """One stream's reading state: framing buffer, answer text, open tool blocks, running usage.

    `feed` takes the body's chunks as they arrive (any cut, LF or CRLF framing) and
    writes time marks, text, usage and the outcome into the attempt; `end` finishes
    at EOF. Each event is JSON-decoded once; a tool's `input_json_delta` pieces are
    joined and decoded once, at its `content_block_stop`.
    """

    __slots__ = ("a", "buffer", "calls", "clock", "parts", "stopped", "tools", "usage")

    def __init__(self, a: Attempt) -> None:
        self.a = a
        self.clock = selfdelay.current()
        self.buffer = b""
        self.parts: list[str] = []
        self.stopped = False
        # Open tool_use blocks: index → (name, input_json pieces, the start's input).
        self.tools: dict[Any, tuple[Any, list[str], Any]] = {}
        self.calls: list[dict[str, Any]] = []
        self.usage: dict[str, Any] = {}

    def feed(self, chunk: bytes, now: int) -> bool:
        """Read the complete events in `chunk`; True when an `error` event ended the attempt."""
        buffer = self.buffer + chunk if self.buffer else chunk
        if b"\r" in buffer:  # CRLF framing (allowed by SSE): normalise; a split CRLF waits for its LF
            buffer = buffer.replace(b"\r\n", b"\n")
        at = 0
        while True:
            end = buffer.find(b"\n\n", at)
            if end < 0:
                break
            raw = buffer[at:end]
            at = end + 2
            if raw and self.event(raw, now):
                return True
        self.buffer = buffer[at:] if at else buffer
        self.a.mark_last_byte(now, self.clock)
        return False

    def end(self, now: int) -> None:
        """EOF: a last event without its blank line still counts; then judge the stream complete or not."""
        a = self.a
        rest = self.buffer.strip()
        if rest:
            try:
                if self.event(rest, now):
                    return
            except ValueError:  # a torn last event: the stream is incomplete, judged below
                pass
            a.mark_last_byte(now, self.clock)
        self._close()
        if not self.stopped or a.stop_reason is None:
            a.fail("stream_truncated", "stream ended without message_stop")
            return
        a.ok = True

    def _close(self) -> None:
        for name, pieces, shell in self.tools.values():  # never stopped: kept, input None if cut short
            self.calls.append({"name": name, "input": _tool_input(pieces, shell)})
        self.tools.clear()
        self.a.text = "".join(self.parts)
        self.a.tool_calls = self.calls or None

    def event(self, raw: bytes, now: int) -> bool:
        """Handle one event (its lines, without the blank line); True when it is an `error`."""
        if raw.startswith(b"event: ping"):
            return False
        data_at = raw.find(b"data:")
        if data_at < 0:
            return False
        event = orjson.loads(raw[data_at + 5 :])  # orjson skips the optional leading space
        kind = event.get("type")
        a = self.a
        if kind == "content_block_delta":
            if a.first_token_ns is None:
                a.first_token_ns = now
                hook = FIRST_TOKEN_HOOK.get()
                if hook is not None:
                    hook()
                if self.clock is not None:
                    a.first_token_delay_ns = self.clock.delay_ns(now)
            delta = event.get("delta") or {}
            text = delta.get("text")
            if text is not None:  # text_delta: the only delta with a `text`
                if a.first_text_ns is None:
                    a.first_text_ns = now
                self.parts.append(text)
                return False
            dtype = delta.get("type")
            if dtype == "thinking_delta":
                if a.first_thinking_ns is None:
                    a.first_thinking_ns = now
            elif dtype == "input_json_delta":
                tool = self.tools.get(event.get("index"))
                if tool is not None:  # a server tool's input (web search query) is not a tool call
                    tool[1].append(delta.get("partial_json") or "")
        elif kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                self.tools[event.get("index")] = (block.get("name"), [], block.get("input"))
        elif kind == "content_block_stop":
            tool = self.tools.pop(event.get("index"), None)
            if tool is not None:
                self.calls.append({"name": tool[0], "input": _tool_input(tool[1], tool[2])})
        elif kind == "message_start":
            message = event.get("message") or {}
            a.model_reported = message.get("model")
            self.usage = merge_usage(None, message.get("usage"))
            apply_usage(a, self.usage)
        elif kind == "message_delta":
            a.stop_reason = (event.get("delta") or {}).get("stop_reason")
            self.usage = merge_usage(self.usage, event.get("usage"))
            apply_usage(a, self.usage)
        elif kind == "message_stop":
            self.stopped = True
        elif kind == "error":
            error = event.get("error") or {}
            etype = str(error.get("type"))
            self._close()
            a.mark_last_byte(now, self.clock)
            a.fail(_STREAM_ERROR_KINDS.get(etype, "stream_error"), f"{etype}: {error.get('message')}")
            return True
        return False


def _tool_input(pieces: list[str], shell: Any) -> Any:
    """A tool call's input: its streamed JSON decoded once; None when the JSON was cut short (max_tokens)."""
    joined = "".join(pieces)
    if not joined:
        return shell if shell is not None else {}
    try:
        return orjson.loads(joined)
    except orjson.JSONDecodeError:
        return None


def _api_message(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping):
            return str(error.get("message", ""))[:300]
    return str(exc.message)[:300]
