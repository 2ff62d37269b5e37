"""The one PostHog event of a finished call, built from its `CallRecord` (pure: no I/O).

One builder for both event kinds: PostHog's Claude tutorial (`claude_message_completion`,
the default: `model`, `input_cost_in_dollars`, …, `response_time_in_ms`) and LLM analytics'
`$ai_generation`; every event carries both property families plus the run's own.

The `$ai_*` properties follow PostHog's Anthropic wrapper (`posthog.ai.anthropic`, the
reference; `tests/test_events_conformance.py` compares the two on the same call):

- one trace per call: `$ai_trace_id` = `call_id`, `$ai_session_id` = `run_id` (PostHog's
  Sessions view groups a run), `$ai_span_name` = the case id;
- `$ai_input` = the conversation as the API received it (the case after its variant:
  `client.request_params`): the system prompt first as `{"role": "system"}`, then every turn
  with its content blocks; base64 media replaced by the wrapper's placeholder
  (`[base64 image redacted]`); `$ai_output_choices` in the wrapper's shape (text blocks,
  `function` blocks for tool calls); `$ai_tools` when tools were offered;
- `$ai_model_parameters`: every request parameter that is not content (max_tokens,
  temperature, top_p/top_k, stop_sequences, stream, thinking, tool_choice, …) plus `variant`;
- units as the wrapper's: `$ai_latency`, `$ai_time_to_first_token` and
  `time_to_first_text_s` in seconds (the tutorial's `*_ms` properties stay in ms);
  `$ai_http_status` 0 when there was no HTTP status; cache read/write, `$ai_reasoning_tokens`
  (thinking) and `$ai_web_search_count` tokens/counts as Anthropic reports them.

Who is a user (`distinct_id`, shared with the report's `distinct_id_expr`): the dataset row's
`user_id`; a call without one goes to one anonymous id per run (`run:<run_id>`) and is sent
with `$process_person_profile: false`, so PostHog makes no (billed) person profile for it. The
tutorial's "average cost per user" and the report's therefore count every real user once
and each run's anonymous calls as one more.

Size: the SDK drops an event over 900 KiB of `json.dumps` (ASCII-escaped: a non-BMP
character costs 12 bytes) with only a log line, and a resend would drop it again. So the
text is cut by serialised bytes (`fit_event`): the longest strings of the prompt, input,
output and tools are shortened until the event fits the budget, and the event says
`truncated: true` (the sink counts these in the manifest).

The record's deterministic `event_uuid` and the call's start as `timestamp` make any
re-send a duplicate PostHog drops.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from harness.client import request_params
from harness.events.child import DeliveryConfig
from harness.events.size import EVENT_BYTE_BUDGET, SDK_MAX_EVENT_BYTES, TRUNCATED_MARK, fit_event, sdk_size
from harness.records import CallRecord, Case, PlannedCall, event_uuid

if TYPE_CHECKING:
    from harness.config import RunConfig

__all__ = [
    "ANONYMOUS_PREFIX",
    "EVENT_BYTE_BUDGET",
    "EVENT_NAME",
    "SDK_MAX_EVENT_BYTES",
    "TRUNCATED_MARK",
    "EventSettings",
    "build_event",
    "distinct_id",
    "fit_event",
    "sdk_size",
    "uuid_of",
]

EVENT_NAME = "claude_message_completion"
ANONYMOUS_PREFIX = "run:"  # distinct_id of a call without a user: one per run, personless
# Request fields that are content, not parameters: they go to $ai_input / $ai_tools, or nowhere.
_NOT_PARAMETERS = frozenset({"model", "messages", "system", "tools", "metadata", "extra_body"})


@dataclass(frozen=True, kw_only=True)
class EventSettings(DeliveryConfig):
    """How events are built, and (the inherited fields) how they are delivered.

    `api_key` is the PostHog project key (never shown); `secrets` are other values to
    redact (e.g. the Anthropic key).
    """

    dataset: str
    base_url: str
    event_name: str = EVENT_NAME
    prompt_capture: bool = True

    @classmethod
    def from_config(cls, cfg: RunConfig, *, api_key: str, host: str, base_url: str) -> EventSettings:
        """The run's event settings: names and capture from `cfg`, key and hosts from the resolved target."""
        return cls(
            api_key=api_key,
            host=host,
            base_url=base_url,
            dataset=str(cfg.dataset),
            event_name=cfg.event_name,
            prompt_capture=cfg.prompt_capture,
            flush_timeout_s=cfg.posthog_flush_timeout_s,
            max_retries=cfg.posthog_max_retries,
        )


def uuid_of(record: CallRecord) -> str:
    """The record's event uuid (the runner always sets it; derived the same way otherwise)."""
    return record.event_uuid or event_uuid(record.run_id, record.call_id)


def distinct_id(user_id: str | None, run_id: str) -> str:
    """The PostHog person of a call: its dataset row's user, else one anonymous id per run."""
    return user_id or f"{ANONYMOUS_PREFIX}{run_id}"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def _iso(moment: datetime | None) -> str:
    if moment is None:
        moment = datetime.now(UTC)  # only for a record with no time mark at all
    elif moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()


# ---------------------------------------------------------------- the request, as sent


def request_body(record: CallRecord, case: Case) -> dict[str, Any]:
    """The Messages API body the call sent (`client.request_params`, extra_body merged in)."""
    call = PlannedCall(
        call_id=record.call_id,
        case=case,
        model=record.model,
        repeat=record.repeat,
        index=0,
        variant=record.variant,
    )
    params = request_params(call, record.stream)
    body = {k: v for k, v in params.items() if k != "extra_body"}
    body.update(params.get("extra_body") or {})
    return body


def model_parameters(body: Mapping[str, Any] | None, record: CallRecord) -> dict[str, Any]:
    """`$ai_model_parameters`: what the request set besides its content, plus the variant's name."""
    params = {k: v for k, v in (body or {}).items() if k not in _NOT_PARAMETERS and v is not None}
    params["stream"] = record.stream
    if record.variant is not None:
        params["variant"] = record.variant
    return params


def ai_input(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The conversation as the wrapper's `format_anthropic_input` shows it, media redacted."""
    turns: list[dict[str, Any]] = []
    system = body.get("system")
    if system is not None:
        turns.append({"role": "system", "content": system})
    for message in body.get("messages") or ():
        turns.append({"role": message.get("role", "user"), "content": message.get("content", "")})
    return redact_media(turns)


def output_choices(record: CallRecord) -> list[dict[str, Any]]:
    """The reply in the wrapper's shape: one assistant message of text and `function` blocks."""
    content: list[dict[str, Any]] = []
    if record.response_text:
        content.append({"type": "text", "text": record.response_text})
    for call in _tool_calls(record.tool_calls):
        content.append(
            {"type": "function", "function": {"name": call.get("name"), "arguments": call.get("input")}}
        )
    return [{"role": "assistant", "content": content}] if content else []


def _tool_calls(text: str | None) -> list[dict[str, Any]]:
    if not text:
        return []
    try:
        calls = orjson.loads(text)
    except orjson.JSONDecodeError:
        return []
    return [c for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []


# The wrapper's structural media redaction (posthog/ai/sanitization.py), for what a dataset can hold:
# a data URL anywhere, or a long base64 string under a media key, becomes "[base64 <kind> redacted]".
_MEDIA_KEYS = frozenset({"data", "image_url", "imageUrl", "video_url", "videoUrl", "audio", "audio_data",
                         "audioData", "inline_data", "inlineData", "file_data", "fileData"})  # fmt: skip
_MIME_KEYS = ("mime_type", "mimeType", "media_type", "mediaType", "format")
_BASE64_MIN = 200
_BASE64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/_-=")


def _media_word(mime: str | None) -> str:
    if not mime:
        return "image"
    if "/" in mime:
        head = mime.split("/", 1)[0]
        return head if head in ("image", "video", "audio") else "file"
    low = mime.lower()
    if low in ("image", "video", "audio"):
        return low
    if low in ("wav", "mp3", "pcm16", "pcm", "flac", "opus", "aac", "ogg", "m4a"):
        return "audio"
    if low in ("mp4", "mov", "webm", "avi", "mkv"):
        return "video"
    return "image" if low in ("png", "jpg", "jpeg", "gif", "webp", "bmp", "svg") else "file"


def _hint(parent: Mapping[str, Any] | None) -> str | None:
    if parent is None:
        return None
    for key in _MIME_KEYS:
        if isinstance(parent.get(key), str):
            return str(parent[key])
    kind = parent.get("type")
    return kind if kind in ("image", "video", "audio") else None


def _redacted_string(
    value: str, key: str | None, parent: Mapping[str, Any] | None, parent_key: str | None
) -> str:
    if value.startswith("data:") and ";base64," in value[:100]:
        return f"[base64 {_media_word(value[5:].split(';', 1)[0])} redacted]"
    strong = key in _MEDIA_KEYS or (
        key == "url" and parent_key in ("image_url", "imageUrl", "video_url", "videoUrl")
    )
    if strong and len(value) >= _BASE64_MIN and set(value) <= _BASE64_CHARS:
        return f"[base64 {_media_word(_hint(parent))} redacted]"
    return value


def redact_media(value: Any) -> Any:
    """A copy of `value` with base64 media replaced as PostHog's wrapper does (shares what it leaves alone)."""

    def walk(node: Any, key: str | None, parent: Mapping[str, Any] | None, parent_key: str | None) -> Any:
        if isinstance(node, str):
            return _redacted_string(node, key, parent, parent_key)
        if isinstance(node, dict):
            return {k: walk(v, k, node, key) for k, v in node.items()}
        if isinstance(node, list | tuple):
            return [walk(item, key, parent, parent_key) for item in node]
        if isinstance(node, bytes):
            return f"[base64 {_media_word(_hint(parent))} redacted]"
        return node

    return walk(value, None, None, None)


# ---------------------------------------------------------------- the event


def build_event(record: CallRecord, settings: EventSettings, case: Case | None = None) -> dict[str, Any]:
    """The one PostHog event of a finished call (pure: same record and case, same event).

    `case` is the dataset row as the call sent it (after its variant); without it the event
    has no input, and its model parameters are only what the record knows.
    """
    latency = record.latency_s
    input_cost = record.input_cost_usd + record.cache_cost_usd
    is_error = record.status in ("error", "expired")  # expired: a batch request never answered
    body = request_body(record, case) if case is not None else None
    props: dict[str, Any] = {
        # PostHog's Claude tutorial
        "model": record.model,
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
        "input_cost_in_dollars": input_cost,
        "output_cost_in_dollars": record.output_cost_usd,
        "total_cost_in_dollars": record.total_cost_usd,
        # PostHog LLM analytics
        "$ai_model": record.model,
        "$ai_provider": "anthropic",
        "$ai_model_parameters": model_parameters(body, record),
        "$ai_input_tokens": record.input_tokens,
        "$ai_output_tokens": record.output_tokens,
        "$ai_cache_read_input_tokens": record.cache_read_input_tokens,
        "$ai_cache_creation_input_tokens": record.cache_creation_input_tokens,
        "$ai_input_cost_usd": input_cost,
        "$ai_output_cost_usd": record.output_cost_usd,
        "$ai_total_cost_usd": record.total_cost_usd,
        "$ai_http_status": record.http_status if record.http_status is not None else 0,
        "$ai_is_error": is_error,
        "$ai_trace_id": record.call_id,
        "$ai_session_id": record.run_id,
        "$ai_span_name": record.case_id,
        "$ai_base_url": settings.base_url,
        "$ai_stream": record.stream,
        "$ai_stop_reason": record.stop_reason,
        # the run's own
        "run_id": record.run_id,
        "call_id": record.call_id,
        "case_id": record.case_id,
        "dataset": settings.dataset,
        "model_reported": record.model_reported,
        "variant": record.variant,
        "ttft_ms": _ms(record.ttft_s),
        "time_to_first_text_ms": _ms(record.time_to_first_text_s),
        "time_to_first_text_s": record.time_to_first_text_s,
        "thinking_tokens": record.thinking_tokens,
        "web_search_requests": record.web_search_requests,
        "limiter_wait_ms": _ms(record.limiter_wait_s),
        "attempts": record.attempts,
        "status": record.status,
        "target": record.target,
        "repeat": record.repeat,
        "error_kind": record.error_kind,
    }
    optional = {
        "$ai_cache_creation_5m_input_tokens": record.cache_write_5m_input_tokens,
        "$ai_cache_creation_1h_input_tokens": record.cache_write_1h_input_tokens,
        "$ai_reasoning_tokens": record.thinking_tokens,
        "$ai_web_search_count": record.web_search_requests,
    }
    props.update({k: v for k, v in optional.items() if v})  # as the wrapper: only when > 0
    if record.service_tier is not None:
        props["$ai_service_tier"] = record.service_tier
    if record.batch_id is not None:  # batch mode: no latency of its own, the batch's turnaround
        props["batch_id"] = record.batch_id
        if record.batch_created_at is not None and record.batch_ended_at is not None:
            turnaround = (record.batch_ended_at - record.batch_created_at).total_seconds()
            props["batch_turnaround_s"] = turnaround
    if latency is not None:
        props["response_time_in_ms"] = latency * 1000.0
        props["$ai_latency"] = latency
    if record.stream and record.ttft_s is not None:
        props["$ai_time_to_first_token"] = record.ttft_s
    if is_error:
        kind = record.error_kind or "error"
        props["$ai_error"] = f"{kind}: {record.error_message}" if record.error_message else kind
    if record.user_id is None:
        props["$process_person_profile"] = False
    if settings.prompt_capture:
        props["prompt"] = case.prompt_text() if case is not None else ""
        props["$ai_input"] = ai_input(body) if body is not None else None
        props["$ai_output_choices"] = output_choices(record)
        if body is not None and body.get("tools"):
            props["$ai_tools"] = body["tools"]
    event = {
        "event": settings.event_name,
        "distinct_id": distinct_id(record.user_id, record.run_id),
        "properties": props,
        "timestamp": _iso(record.started_at or record.scheduled_at or record.finished_at),
        "uuid": uuid_of(record),
    }
    return fit_event(event)
