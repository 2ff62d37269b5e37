"""The data that flows through a run: `Case`, `PlannedCall`, `CallRecord`, and `CALL_SCHEMA`.

The record and its parquet schema sit side by side so they cannot drift (a test
checks that every `CallRecord` field is a `CALL_SCHEMA` column, in order, and that
the README's table names the same columns). This module holds no logic beyond
small derivations: the event uuid, and the *arm* of a call (its model, or model and
variant), defined here once for Python values and once as the same polars expression
so the runner's records, the report, `compare` and the console name an arm alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, uuid5

import polars as pl

__all__ = [
    "CALL_SCHEMA",
    "STOP_REASONS",
    "CallRecord",
    "Case",
    "PlannedCall",
    "arm_expr",
    "arm_of",
    "arm_word",
    "event_uuid",
    "record_columns",
]

# Every `stop_reason` the Messages API documents, in the order the report shows them.
STOP_REASONS = (
    "end_turn",
    "max_tokens",
    "stop_sequence",
    "tool_use",
    "pause_turn",
    "refusal",
    "model_context_window_exceeded",
)


@dataclass(frozen=True, slots=True)
class Case:
    """One dataset row, normalised: `messages` is always Anthropic's message list."""

    id: str
    messages: tuple[dict[str, Any], ...]
    system: str | list[dict[str, Any]] | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    stop_sequences: tuple[str, ...] | None = None
    user_id: str | None = None
    tags: tuple[str, ...] = ()
    expected: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    params: dict[str, Any] | None = None  # API request features (thinking, tools, ...), see harness.features
    arrival_offset_s: float | None = None  # when the call started in recorded traffic (`--arrival trace`)
    line: int | None = None  # where it came from, for error messages

    def prompt_text(self) -> str:
        """The text of the last user turn: what a PostHog `prompt` property shows."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, str):
                    return content
                return "".join(
                    block.get("text", "")
                    for block in content or ()
                    if isinstance(block, dict) and block.get("type") == "text"
                )
        return ""


@dataclass(frozen=True, slots=True)
class PlannedCall:
    """One (case, model, repeat) to run; `offset_s` is the open-loop release time, else None."""

    call_id: str
    case: Case
    model: str
    repeat: int
    index: int
    offset_s: float | None = None
    variant: str | None = None  # the configuration variant (harness.variants), None without variants
    judge: bool = False  # a judge's request about another call's answer, not a planned call
    cache_eligible: bool | None = None  # its cached prefix is long enough to cache (None: no breakpoint)
    cache_group: str | None = None  # calls sharing a cache entry (model + prefix): the warm-up's unit


@dataclass(slots=True, kw_only=True)
class CallRecord:
    """One row of `calls.parquet`: everything measured about one planned call.

    Durations are seconds from monotonic marks; `_at` values are UTC wall times
    derived from one anchor taken at run start. Built by keyword only, so a column
    added with a default sits where it belongs in the table.
    """

    run_id: str
    call_id: str
    case_id: str
    user_id: str | None
    repeat: int
    tags: list[str]
    model: str
    variant: str | None  # the configuration variant (harness.variants); None without variants
    model_reported: str | None
    target: str
    status: str  # ok | error | expired (a batch request not processed in time) | cancelled
    error_kind: str | None
    error_message: str | None
    http_status: int | None
    request_id: str | None
    attempts: int
    stop_reason: str | None
    stream: bool
    scheduled_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    limiter_wait_s: float | None
    retry_wait_s: float
    ttft_s: float | None
    time_to_first_text_s: float | None = None
    time_to_first_thinking_s: float | None = None
    latency_s: float | None
    latency_from_schedule_s: float | None
    output_tokens_per_s: float | None
    batch_id: str | None = None  # the Message Batch that answered the call; null for a live call
    batch_created_at: datetime | None = None  # that batch's created_at (UTC)
    batch_ended_at: datetime | None = None  # its ended_at: created → ended is the batch's turnaround
    client_delay_first_token_s: float | None = None  # this process's own delay in ttft_s (harness.selfdelay)
    client_delay_last_byte_s: float | None = None  # this process's own delay in latency_s
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    cache_write_5m_input_tokens: int = 0
    cache_write_1h_input_tokens: int = 0
    cache_eligible: bool | None = None  # the prefix up to the last breakpoint reaches the model's minimum
    cache_hit: bool | None = None  # read some input from the cache (None: the request set no breakpoint)
    thinking_tokens: int | None = None
    web_search_requests: int | None = None
    web_fetch_requests: int | None = None
    service_tier: str | None = None
    inference_geo: str | None = None
    input_cost_usd: float
    output_cost_usd: float
    cache_cost_usd: float
    server_tool_cost_usd: float = 0.0
    total_cost_usd: float
    uncached_cost_usd: float | None = None  # the same call priced as if nothing was cached
    cache_savings_usd: float | None = None  # uncached − actual (negative: a write cost more than it saved)
    price_version: str | None = None  # the price table the costs come from (`PriceTable.version_label`)
    passed: bool | None
    score: float | None = None  # the grader's score in [0, 1] (harness.graders)
    grader: str | None = None  # the expectation's top-level kind
    judge_model: str | None = None
    judge_score: float | None = None
    judge_spread: float | None = None  # population sd of the verdicts with --judge-repeats > 1
    judge_rationale: str | None = None
    judge_error: str | None = None  # the judge could not give a verdict: `passed` is null
    judge_cost_usd: float = 0.0  # never part of total_cost_usd
    judge_input_tokens: int = 0
    judge_output_tokens: int = 0
    response_text: str | None
    tool_calls: str | None = None  # JSON: [{"name", "input"}, ...] of the model's tool_use blocks
    event_uuid: str | None = None


_TS = pl.Datetime("us", "UTC")

CALL_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.String(),
    "call_id": pl.String(),
    "case_id": pl.String(),
    "user_id": pl.String(),
    "repeat": pl.Int32(),
    "tags": pl.List(pl.String()),
    "model": pl.String(),
    "variant": pl.String(),
    "model_reported": pl.String(),
    "target": pl.String(),
    "status": pl.String(),
    "error_kind": pl.String(),
    "error_message": pl.String(),
    "http_status": pl.Int32(),
    "request_id": pl.String(),
    "attempts": pl.Int32(),
    "stop_reason": pl.String(),
    "stream": pl.Boolean(),
    "scheduled_at": _TS,
    "started_at": _TS,
    "finished_at": _TS,
    "limiter_wait_s": pl.Float64(),
    "retry_wait_s": pl.Float64(),
    "ttft_s": pl.Float64(),
    "time_to_first_text_s": pl.Float64(),
    "time_to_first_thinking_s": pl.Float64(),
    "latency_s": pl.Float64(),
    "latency_from_schedule_s": pl.Float64(),
    "output_tokens_per_s": pl.Float64(),
    "batch_id": pl.String(),
    "batch_created_at": _TS,
    "batch_ended_at": _TS,
    "client_delay_first_token_s": pl.Float64(),
    "client_delay_last_byte_s": pl.Float64(),
    "input_tokens": pl.Int64(),
    "output_tokens": pl.Int64(),
    "cache_creation_input_tokens": pl.Int64(),
    "cache_read_input_tokens": pl.Int64(),
    "cache_write_5m_input_tokens": pl.Int64(),
    "cache_write_1h_input_tokens": pl.Int64(),
    "cache_eligible": pl.Boolean(),
    "cache_hit": pl.Boolean(),
    "thinking_tokens": pl.Int64(),
    "web_search_requests": pl.Int64(),
    "web_fetch_requests": pl.Int64(),
    "service_tier": pl.String(),
    "inference_geo": pl.String(),
    "input_cost_usd": pl.Float64(),
    "output_cost_usd": pl.Float64(),
    "cache_cost_usd": pl.Float64(),
    "server_tool_cost_usd": pl.Float64(),
    "total_cost_usd": pl.Float64(),
    "uncached_cost_usd": pl.Float64(),
    "cache_savings_usd": pl.Float64(),
    "price_version": pl.String(),
    "passed": pl.Boolean(),
    "score": pl.Float64(),
    "grader": pl.String(),
    "judge_model": pl.String(),
    "judge_score": pl.Float64(),
    "judge_spread": pl.Float64(),
    "judge_rationale": pl.String(),
    "judge_error": pl.String(),
    "judge_cost_usd": pl.Float64(),
    "judge_input_tokens": pl.Int64(),
    "judge_output_tokens": pl.Int64(),
    "response_text": pl.String(),
    "tool_calls": pl.String(),
    "event_uuid": pl.String(),
}


def record_columns() -> list[str]:
    """The fields of `CallRecord`: the columns of `calls.parquet`, in schema order."""
    return [f.name for f in fields(CallRecord)]


def event_uuid(run_id: str, call_id: str, attempt: int = 1) -> str:
    """The PostHog event uuid of a call: deterministic, so a re-send is deduplicated.

    A call resubmitted in a later batch (`--retry-errored`, attempt 2, 3, …) is a new outcome of
    the call: its event gets a uuid of its own, or PostHog would keep the failed first one.
    """
    key = f"claude-bench:{run_id}:{call_id}" + (f":{attempt}" if attempt > 1 else "")
    return str(uuid5(NAMESPACE_URL, key))


def arm_of(model: str, variant: str | None) -> str:
    """What a run compares: the model alone without variants, else `model [variant]`.

    Without variants an arm is exactly the model id, so runs without variants read as before.
    """
    return model if variant is None else f"{model} [{variant}]"


def arm_expr() -> pl.Expr:
    """`arm_of` over the `model` and `variant` columns, as the column `arm`."""
    return (
        pl.when(pl.col("variant").is_null())
        .then(pl.col("model"))
        .otherwise(pl.format("{} [{}]", "model", "variant"))
        .alias("arm")
    )


def arm_word(variants: Iterable[str | None]) -> str:
    """How tables and sentences name what they compare: "model" unless a call had a variant."""
    return "arm" if any(v is not None for v in variants) else "model"
