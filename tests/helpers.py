"""Helpers shared by several test modules (no test module imports another one).

- `make_record(i)` / `make_case(i)`: a realistic finished call and its dataset row;
- `ListSink`, `FreeLimiter`, `FakeClient`, `make_runner`, `plan`: the runner without sockets;
- `run_args`, `resume_args`, `wait_for`: `harness run` command lines for subprocess tests;
- `event_settings`: PostHog event settings for a capture endpoint;
- `genai_total_usd(row)`: genai-prices' own `calc_price` total for a row's usage;
- `cli_commands()`: the CLI's commands and flags, read from the typer app (imported lazily);
- `wrapper_event(i, end)` / `production_week(...)`: `$ai_generation` events as PostHog's Anthropic
  wrapper captures them (production traffic to seed the simulated PostHog with).

Other helper modules, each imported as `tests.<name>`: `tests.simproc` (the simulator
process), `tests.synthetic` (synthetic run directories), `tests.reliability_matrix`.
"""

from __future__ import annotations

import asyncio
import functools
import math
import random
import time
import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import genai_prices

from harness.client import Attempt
from harness.events.event import EventSettings
from harness.limiter import estimate_call_input
from harness.plan import make_plan
from harness.pricing import PriceTable
from harness.records import CallRecord, Case, PlannedCall, event_uuid
from harness.runner import Runner, RunnerSettings
from harness.usage import SERVER_TOOL_COUNTS
from tests import reliability_matrix as rm

POSTHOG_KEY = "phc_test_" + "k" * 24

T0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def make_record(i: int, *, run_id: str = "run-t", status: str = "ok", **over: object) -> CallRecord:
    """A realistic finished call; `i` varies every number so mixed-up rows are caught."""
    start = T0 + timedelta(seconds=i)
    ok = status == "ok"
    values: dict[str, object] = dict(
        run_id=run_id,
        call_id=f"call-{i:06d}",
        case_id=f"case-{i % 97}",
        user_id=f"user-{i % 5}" if i % 3 else None,
        repeat=i % 2,
        tags=["t1", f"t{i % 4}"],
        model=("claude-haiku-4-5", "claude-sonnet-4-5")[i % 2],
        variant=None,
        model_reported="claude-haiku-4-5-20251001" if ok else None,
        target="simulator",
        status=status,
        error_kind=None if ok else ("cancelled" if status == "cancelled" else "overloaded"),
        error_message=None if ok else "server overloaded",
        http_status=200 if ok else (None if status == "cancelled" else 529),
        request_id=f"req_{i}",
        attempts=1 + i % 3,
        stop_reason="end_turn" if ok else None,
        stream=bool(i % 4),
        scheduled_at=start - timedelta(milliseconds=5),
        started_at=start,
        finished_at=start + timedelta(seconds=1.5),
        limiter_wait_s=0.005,
        retry_wait_s=0.25 * (i % 3),
        ttft_s=0.2 + i / 1e4 if ok else None,
        latency_s=1.5 + i / 1e3 if status != "cancelled" else None,
        latency_from_schedule_s=1.505 + i / 1e3,
        output_tokens_per_s=55.5,
        input_tokens=100 + i,
        output_tokens=200 + 2 * i,
        cache_creation_input_tokens=i % 7,
        cache_read_input_tokens=i % 11,
        input_cost_usd=(100 + i) * 1e-6,
        output_cost_usd=(200 + 2 * i) * 5e-6,
        cache_cost_usd=(i % 11) * 1e-7,
        total_cost_usd=(100 + i) * 1e-6 + (200 + 2 * i) * 5e-6 + (i % 11) * 1e-7,
        passed=None if i % 5 else True,
        response_text=f"answer {i} " * 8 if ok else None,
        event_uuid=event_uuid(run_id, f"call-{i:06d}"),
    )
    values.update(over)
    return CallRecord(**values)  # type: ignore[arg-type]


def make_case(i: int, prompt: str | None = None) -> Case:
    """The dataset row of `make_record(i)`: its prompt is `question {i}?`."""
    return Case(id=f"case-{i % 97}", messages=({"role": "user", "content": prompt or f"question {i}?"},))


class ListSink:
    def __init__(self) -> None:
        self.records: list = []

    def write(self, record) -> None:
        self.records.append(record)

    def close(self) -> None:
        pass


class FreeLimiter:
    def __init__(self) -> None:
        self.rate_limited: list = []

    async def acquire(self, input_tokens, max_tokens, *, front=False) -> float:
        return 0.0

    def settle(self, *args) -> None:
        pass

    def observe_headers(self, headers) -> None:
        pass

    def pool_for(self, model: str) -> FreeLimiter:
        return self

    def on_rate_limited(self, retry_after_s, message) -> None:
        self.rate_limited.append(retry_after_s)


class FakeClient:
    """Answers after `delay`; the first `fail_first` attempts of every call fail with `kind`."""

    def __init__(self, delay=0.001, fail_first=0, kind="overloaded", retry_after=None, explode=()):
        self.delay, self.fail_first, self.kind, self.retry_after = delay, fail_first, kind, retry_after
        self.explode = set(explode)
        self.sent: list[tuple[str, int, float]] = []

    async def call(self, call: PlannedCall, *, stream: bool, attempt: int) -> Attempt:
        if call.case.id in self.explode:
            raise RuntimeError("boom")
        a = Attempt(sent_ns=time.perf_counter_ns())
        self.sent.append((call.call_id, attempt, time.monotonic()))
        await asyncio.sleep(self.delay)
        a.first_token_ns = time.perf_counter_ns()
        a.last_byte_ns = time.perf_counter_ns()
        if attempt < self.fail_first:
            a.retry_after_s = self.retry_after
            return a.fail(self.kind, "injected", 529 if self.kind == "overloaded" else 429)
        a.ok, a.status, a.stop_reason, a.text = True, 200, "end_turn", "hello"
        # The runner reserves its own input estimate: report exactly that, so a budget test is exact.
        a.input_tokens, a.output_tokens = estimate_call_input(call), 50
        return a


CASES = [Case(id=f"c{i}", messages=({"role": "user", "content": f"q{i}"},), max_tokens=64) for i in range(20)]
PRICES = PriceTable.resolve(["claude-haiku-4-5", "claude-opus-4-8"])


def make_runner(client, **settings_kw):
    sink = ListSink()
    limiter = FreeLimiter()
    runner = Runner(
        RunnerSettings(run_id="r1", target="simulator", **settings_kw), client, limiter, PRICES, [sink]
    )
    return runner, sink, limiter


def plan(n_models=2, **kw):
    models = ["claude-haiku-4-5", "claude-opus-4-8"][:n_models]
    return make_plan(CASES, models, repeats=1, seed=1, run_id="r1", **kw)


def run_args(
    dataset: Path, sim, results: Path, *, repeats: int, concurrency: int = 32, extra=()
) -> list[str]:
    return [
        "run",
        "--dataset",
        str(dataset),
        "--models",
        rm.MODELS,
        "--repeats",
        str(repeats),
        "--concurrency",
        str(concurrency),
        "--max-retries",
        "3",
        "--target",
        "custom",
        "--base-url",
        sim.url,
        "--progress",
        "plain",
        "--no-report",
        "--results-dir",
        str(results),
        *extra,
    ]


def resume_args(run_id: str, results: Path, *extra: str) -> list[str]:
    return [
        "run",
        "--resume",
        run_id,
        "--results-dir",
        str(results),
        "--progress",
        "plain",
        "--no-report",
        *extra,
    ]


def wait_for(predicate, timeout: float, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def event_settings(url: str, **over: Any) -> EventSettings:
    base = EventSettings(
        api_key=POSTHOG_KEY,
        host=url,
        dataset="datasets/smoke.jsonl",
        base_url="http://127.0.0.1:1/",
        flush_interval_s=0.1,
        flush_timeout_s=5.0,
    )
    return replace(base, **over)


@functools.cache
def cli_commands() -> dict[str, set[str]]:
    """The real CLI's commands and their flags, read from the typer app itself."""
    import typer

    from harness.cli import app

    group = typer.main.get_command(app)
    assert hasattr(group, "commands")
    found: dict[str, set[str]] = {}
    for name, command in group.commands.items():
        flags = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        if hasattr(command, "commands"):
            for sub in command.commands.values():
                flags |= {opt for param in sub.params for opt in (*param.opts, *param.secondary_opts)}
        found[name] = {f for f in flags if f.startswith("--")}
    return found


def genai_total_usd(row: Mapping[str, Any], price_context: Mapping[str, str] | None = None) -> float:
    """genai-prices' own total for a `calls.parquet` row's usage (`dataclasses.asdict` of a record
    works too), every priced key given explicitly: the reference the fast price path must equal.
    `price_context` selects a price variant (`{"processing": "batch"}` for a batch row)."""
    counts = {key: row[column] or 0 for column, key in SERVER_TOOL_COUNTS.items() if key is not None}
    usage = genai_prices.Usage(
        input_tokens=row["input_tokens"]
        + row["cache_creation_input_tokens"]
        + row["cache_read_input_tokens"],
        output_tokens=row["output_tokens"],
        cache_read_tokens=row["cache_read_input_tokens"],
        cache_write_tokens=row["cache_creation_input_tokens"],
        cache_write_5m_tokens=row["cache_write_5m_input_tokens"],
        cache_write_1h_tokens=row["cache_write_1h_input_tokens"],
        **counts,
    )
    price = genai_prices.calc_price(
        usage,
        row["model"],
        provider_id="anthropic",
        price_context=dict(price_context) if price_context else None,  # type: ignore[arg-type]
    )
    return float(price.total_price)
    return float(genai_prices.calc_price(usage, row["model"], provider_id="anthropic").total_price)


def timed_profile(path: Path, *, answer_tokens_max: int, thinking_tps: dict[str, float]) -> Path:
    """A simulator profile with exact, noise-free timing (50 ms TTFT, 1,000 tok/s) and per-model thinking speeds."""
    models = "".join(f'\n[models."{m}"]\nthinking_tokens_per_s = {tps}\n' for m, tps in thinking_tps.items())
    path.write_text(
        "[defaults]\nttft_median_s = 0.05\nttft_sigma = 0.0\nttft_per_1k_input_s = 0.0\n"
        "speed_median_tps = 1000.0\nspeed_sigma = 0.0\ngap_sigma = 0.0\nverbosity = 0.005\nverbosity_sigma = 0.0\n"
        f"answer_tokens_max = {answer_tokens_max}\nmax_tokens = 64000\nmax_input_tokens = 200000\n\n"
        "[defaults.limits]\nrpm = 100000\nitpm = 100000000\notpm = 100000000\n" + models
    )
    return path


PRODUCTION_MODEL = "claude-sonnet-4-5"
_SYSTEM = "You are the support assistant of a bicycle shop. Answer in two sentences."
_QUESTIONS = [
    "Which tyre pressure suits a 28 mm road tyre?",
    "How often should I oil a chain?",
    "My gears skip under load: what should I check first?",
    "Is a carbon frame worth it for commuting?",
    "What does a bike fit include?",
    "How do I stop disc brakes from squealing?",
]


def wrapper_event(i: int, end: datetime, *, kind: str = "plain", user: str | None = None) -> dict[str, Any]:
    """Call `i` as `posthog.ai.anthropic` captures it: at the call's end, a uuid4-like id, the trace id as
    distinct_id (personless) without a user. `kind`: plain | multi | media | privacy | tools."""
    rng = random.Random(i)
    latency = round(0.6 + rng.lognormvariate(0, 0.5), 6)
    trace = str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"trace-{i}"))
    question = _QUESTIONS[i % len(_QUESTIONS)] + f" (ticket {i})"
    turns: list[dict[str, Any]] = [{"role": "system", "content": _SYSTEM}]
    if kind == "multi":
        turns += [
            {"role": "user", "content": [{"type": "text", "text": "Hi, quick question."}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Sure, go ahead."}]},
        ]
    if kind == "media":
        image = {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/jpeg", "data": "[base64 image redacted]"},
        }
        turns.append({"role": "user", "content": [image, {"type": "text", "text": question}]})
    elif kind == "tools":
        turns += [
            {"role": "user", "content": question},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": f"toolu_{i}", "name": "stock", "input": {}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": f"toolu_{i}", "content": "3"}],
            },
        ]
    else:
        turns.append({"role": "user", "content": question})
    input_tokens, output_tokens = 40 + 3 * len(question), 30 + rng.randrange(120)
    props: dict[str, Any] = {
        "$ai_lib": "posthog-ai",
        "$ai_provider": "anthropic",
        "$ai_model": PRODUCTION_MODEL,
        "$ai_model_parameters": {"max_tokens": 300, "temperature": 0.5, "stream": True},
        "$ai_input": None if kind == "privacy" else turns,
        "$ai_output_choices": None
        if kind == "privacy"
        else [{"role": "assistant", "content": [{"type": "text", "text": "Answer."}]}],
        "$ai_http_status": 200,
        "$ai_input_tokens": input_tokens,
        "$ai_output_tokens": output_tokens,
        "$ai_cache_read_input_tokens": 0,
        "$ai_cache_creation_input_tokens": 0,
        "$ai_latency": latency,
        "$ai_trace_id": trace,
        "$ai_base_url": "https://api.anthropic.com",
        "$ai_stop_reason": "end_turn",
        "$ai_total_cost_usd": input_tokens * 3e-6 + output_tokens * 15e-6,
    }
    if user is None:
        props["$process_person_profile"] = False
    return {
        "event": "$ai_generation",
        "uuid": str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"production-call-{i}")),
        "distinct_id": user or trace,
        "timestamp": end.isoformat(),
        "properties": props,
    }


def production_week(start: datetime, calls: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """`calls` wrapper events over 7 days from `start`: busier by day than by night, bursty, some users
    repeat; about 1 in 12 carries redacted media, 1 in 15 is in privacy mode, 1 in 20 uses tools it
    does not show, 1 in 6 is a multi-turn conversation."""
    rng = random.Random(seed)
    moments: list[datetime] = []
    while len(moments) < calls:
        at = start + timedelta(seconds=rng.uniform(0, 7 * 86400))
        hour = at.hour + at.minute / 60
        if rng.random() < 0.15 + 0.85 * max(0.0, math.sin(math.pi * (hour - 6) / 16)):  # 06-22 h busy
            moments.append(at)
            if rng.random() < 0.2:  # a burst: a few more within seconds
                moments += [at + timedelta(seconds=rng.uniform(0, 5)) for _ in range(rng.randrange(1, 4))]
    moments = sorted(moments[:calls])
    events = []
    for i, at in enumerate(moments):
        kind = (
            "media" if i % 12 == 5 else "privacy" if i % 15 == 7 else "tools" if i % 20 == 9
            else "multi" if i % 6 == 1 else "plain"
        )  # fmt: skip
        user = f"customer-{rng.randrange(40)}" if rng.random() < 0.7 else None
        events.append(wrapper_event(i, at, kind=kind, user=user))
    return events
