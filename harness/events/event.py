"""The one PostHog event of a finished call, built from its `CallRecord` (pure: no I/O).

Properties: PostHog's Claude tutorial (`model`, `input_cost_in_dollars`, …,
`response_time_in_ms`), its LLM-analytics `$ai_*` properties, and the run's own.
The record's deterministic `event_uuid` and the call's start as `timestamp` make
any re-send a duplicate PostHog drops. The `distinct_id` rule is shared with the
report (`distinct_id`), so "cost per user" means the same in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from harness.events.child import DeliveryConfig
from harness.records import CallRecord, Case, event_uuid

if TYPE_CHECKING:
    from harness.config import RunConfig

__all__ = [
    "ANONYMOUS_PREFIX",
    "EVENT_NAME",
    "MAX_TEXT_CHARS",
    "EventSettings",
    "build_event",
    "distinct_id",
    "uuid_of",
]

EVENT_NAME = "claude_message_completion"
ANONYMOUS_PREFIX = "run:"  # distinct_id of a call without a user: one per run
# The SDK silently drops events over 900 KiB (serialised with ensure_ascii, so up to 6
# bytes per character); prompt and response each appear twice. 32k characters per text
# keeps the worst case under the limit.
MAX_TEXT_CHARS = 32_000
_TRUNCATED = "…[truncated]"


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


def _cap(text: str) -> str:
    return text if len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS] + _TRUNCATED


def _iso(moment: datetime | None) -> str:
    if moment is None:
        moment = datetime.now(UTC)  # only for a record with no time mark at all
    elif moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()


def build_event(record: CallRecord, settings: EventSettings, case: Case | None = None) -> dict[str, Any]:
    """The one PostHog event of a finished call (pure: same record and case, same event)."""
    latency = record.latency_s
    input_cost = record.input_cost_usd + record.cache_cost_usd
    is_error = record.status in ("error", "expired")  # expired: a batch request never answered
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
        "$ai_input_tokens": record.input_tokens,
        "$ai_output_tokens": record.output_tokens,
        "$ai_cache_read_input_tokens": record.cache_read_input_tokens,
        "$ai_cache_creation_input_tokens": record.cache_creation_input_tokens,
        "$ai_input_cost_usd": input_cost,
        "$ai_output_cost_usd": record.output_cost_usd,
        "$ai_total_cost_usd": record.total_cost_usd,
        "$ai_http_status": record.http_status,
        "$ai_is_error": is_error,
        "$ai_trace_id": record.run_id,
        "$ai_span_id": record.call_id,
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
        "thinking_tokens": record.thinking_tokens,
        "web_search_requests": record.web_search_requests,
        "limiter_wait_ms": _ms(record.limiter_wait_s),
        "attempts": record.attempts,
        "status": record.status,
        "target": record.target,
        "repeat": record.repeat,
        "error_kind": record.error_kind,
    }
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
    if settings.prompt_capture:
        prompt = _cap(case.prompt_text() if case is not None else "")
        answer = _cap(record.response_text or "")
        props["prompt"] = prompt
        props["$ai_input"] = [{"role": "user", "content": prompt}]
        props["$ai_output_choices"] = [{"role": "assistant", "content": answer}]
    return {
        "event": settings.event_name,
        "distinct_id": distinct_id(record.user_id, record.run_id),
        "properties": props,
        "timestamp": _iso(record.started_at or record.scheduled_at or record.finished_at),
        "uuid": uuid_of(record),
    }
