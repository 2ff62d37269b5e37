"""The async engine: schedules planned calls, paces them through the limiter, retries, and emits one record each.

Closed loop (`concurrency` workers, each sending the next call when the last one
returns) or open loop (calls released at their planned offsets whether or not
earlier ones returned, optionally capped by `max_in_flight`). A failed call is a
record with `status="error"`, never an exception that ends the run; only
run-level problems stop it (a 401/403, a storage failure, a signal), and then
in-flight calls finish within the grace period or are recorded as `cancelled`.

The runner owns the `Sink` protocol; it knows nothing of parquet, PostHog or
polars. Time marks come from `perf_counter_ns`; wall times are derived from one
anchor taken at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol

import orjson

from harness import selfdelay
from harness.callcost import usage_cost_columns
from harness.client import FIRST_TOKEN_HOOK, Attempt, max_tokens_of
from harness.errors import HarnessError, StorageError, TargetError
from harness.graders import judge_specs
from harness.guard import TimingGuard
from harness.judge import Judge, JudgeCall
from harness.limiter import estimate_call_input
from harness.quality import NO_VERDICT, Quality, Verdicts
from harness.quantiles import summarize_ms
from harness.records import CallRecord, Case, PlannedCall, event_uuid
from harness.secrets import ANTHROPIC_KEY_ENV

if TYPE_CHECKING:
    from harness.config import RunConfig
    from harness.pricing import PriceTable

__all__ = [
    "Engine",
    "LoopLagMonitor",
    "RunOutcome",
    "Runner",
    "RunnerSettings",
    "Sink",
    "StopReason",
    "deliver",
]

StopReason = Literal["budget", "duration", "signal", "abort", "storage"]


class Sink(Protocol):
    """Where finished records go; `write` runs on the loop and must be cheap."""

    def write(self, record: CallRecord) -> None: ...

    def close(self) -> None: ...


class CallClient(Protocol):
    async def call(self, call: PlannedCall, *, stream: bool, attempt: int) -> Attempt: ...


class Engine(Protocol):
    """Runs a plan and hands every finished record to its sinks: one process, worker processes or batches.

    The composition root drives every engine the same way; what differs (processes, pipes)
    stays inside the engine.
    """

    outcome: RunOutcome

    async def run(self, plan: Sequence[PlannedCall]) -> RunOutcome: ...

    def request_stop(self, reason: StopReason, *, now: bool = False) -> None:
        """Stop scheduling; `now` also skips the grace period for calls in flight (a second Ctrl-C)."""
        ...


class LimiterLike(Protocol):
    def pool_for(self, model: str) -> PoolLimiterLike: ...


class PoolLimiterLike(Protocol):
    async def acquire(self, input_tokens: int, max_tokens: int, *, front: bool = False) -> float: ...

    def settle(self, input_estimate: int, input_actual: int, max_tokens: int, output_actual: int) -> None: ...

    def observe_headers(self, headers: Any) -> None: ...

    def on_rate_limited(self, retry_after_s: float | None, message: str | None) -> None: ...


async def drain_tasks(tasks: set[asyncio.Task[Any]], grace_s: float, no_grace: asyncio.Event) -> None:
    """Let `tasks` finish within `grace_s` (ended early when `no_grace` is set), then cancel the rest.

    Each engine's stop: a cancelled task records its own outcome (a call `cancelled`, a judged
    answer dropped for a resume to redo)."""
    if not tasks:
        return
    deadline = time.perf_counter() + grace_s
    cut = asyncio.ensure_future(no_grace.wait())
    try:
        while tasks and not cut.done() and (left := deadline - time.perf_counter()) > 0:
            await asyncio.wait({*tasks, cut}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
    finally:
        cut.cancel()
    pending = set(tasks)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)


@dataclass(frozen=True)
class RunnerSettings:
    run_id: str
    target: str
    stream: bool = True
    concurrency: int = 16
    rate: float | None = None
    arrival: str = "closed"
    max_in_flight: int | None = None
    max_retries: int = 4
    duration_s: float | None = None
    max_cost_usd: float | None = None
    grace_s: float = 10.0
    seed: int = 0
    # Open loop: the plan's time zero (perf_counter_ns), shared by worker processes.
    start_ns: int | None = None
    ramp_up_s: float = 0.0  # closed loop: the workers start evenly spread over this long
    judge_model: str | None = None  # None: no case of the run needs a judge
    judge_repeats: int = 1
    timing_guard: bool = True  # closed loop: admit no more streams than the loop can time (harness.guard)

    @classmethod
    def from_config(cls, cfg: RunConfig, run_id: str) -> RunnerSettings:
        """The engine's share of the run's configuration (same names as the config's fields)."""
        return cls(
            run_id=run_id,
            target=cfg.target,
            stream=cfg.stream,
            concurrency=cfg.concurrency,
            ramp_up_s=cfg.ramp_up_s or 0.0,
            rate=cfg.rate,
            arrival=cfg.arrival,
            max_in_flight=cfg.max_in_flight,
            max_retries=cfg.max_retries,
            duration_s=cfg.duration_s,
            max_cost_usd=cfg.max_cost_usd,
            grace_s=cfg.grace_s,
            seed=cfg.seed,
            judge_model=cfg.judge_model,
            judge_repeats=cfg.judge_repeats,
            timing_guard=cfg.timing_guard,
        )


@dataclass
class RunOutcome:
    """How the run ended, for the manifest and the exit code."""

    planned: int = 0
    finished: int = 0
    cancelled: int = 0
    not_started: int = 0
    stopped_by: StopReason | None = None
    spent_usd: float = 0.0
    loop_lag: dict[str, float] = field(default_factory=dict)
    release_lateness: dict[str, float] = field(default_factory=dict)
    saturated: bool = False  # open loop: the harness could not keep to the schedule
    error: HarnessError | None = None
    workers: list[dict[str, Any]] = field(default_factory=list)  # per worker process, when there are several
    batches: dict[str, Any] = field(default_factory=dict)  # batch mode: the journal's summary at the end
    cpu_s: float | None = None  # this engine's process CPU while it ran (a worker sends it to the parent)
    wall_s: float | None = None  # how long it ran
    late_admissions: int = 0  # open loop: calls admitted more than one interval after their schedule
    released: int = 0  # open loop: calls released by the schedule
    guard: dict[str, Any] = field(default_factory=dict)  # harness.guard: what it measured and changed

    def count(self, record: CallRecord) -> None:
        """A finished record: counted as finished or cancelled, its cost spent."""
        if record.status == "cancelled":
            self.cancelled += 1
        else:
            self.finished += 1
        self.spent_usd += record.total_cost_usd + record.judge_cost_usd


class LoopLagMonitor:
    """Samples how late the event loop wakes a 10 ms timer: a lagging loop distorts every measurement."""

    def __init__(self, interval_s: float = 0.01, max_samples: int = 50_000) -> None:
        self.interval_s = interval_s
        self.samples: list[float] = []
        self._max = max_samples
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            expected = time.perf_counter() + self.interval_s
            await asyncio.sleep(self.interval_s)
            self.samples.append(max(0.0, time.perf_counter() - expected))
            if len(self.samples) >= self._max:
                self.samples = self.samples[::2]

    async def stop(self) -> dict[str, float]:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        return summarize_ms(self.samples)


class Runner:
    """Runs a plan to completion (or to a stop) and hands every finished call to the sinks."""

    def __init__(
        self,
        settings: RunnerSettings,
        client: CallClient,
        limiter: LimiterLike,
        pricer: PriceTable,
        sinks: Sequence[Sink],
    ) -> None:
        self.s = settings
        self.client = client
        self.limiter = limiter
        self.pricer = pricer
        self.sinks = list(sinks)
        self.outcome = RunOutcome()
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._inflight_worst = 0.0
        self._rng = random.Random(settings.seed)
        self._anchor_ns = time.perf_counter_ns()
        self._anchor_wall = datetime.now(UTC)
        self._lateness: list[float] = []
        self._late_admissions = 0
        self._grace_s = settings.grace_s
        self._no_grace = asyncio.Event()
        self.on_stop: Callable[[str], None] | None = None  # told once, when the run starts stopping
        judge = (
            Judge(settings.judge_model, self._judge_send, repeats=settings.judge_repeats)
            if settings.judge_model
            else None
        )
        self._verdicts = Verdicts(judge)
        # Cache warm-up: per cache group, set once its first call's answer has begun (see `_warm`).
        self._warm_groups: dict[str, asyncio.Event] = {}
        self._guard = TimingGuard(
            settings.concurrency, closed_loop=settings.arrival == "closed", enabled=settings.timing_guard
        )

    # -- public control --------------------------------------------------------------
    def request_stop(self, reason: StopReason, *, now: bool = False) -> None:
        """Stop scheduling new calls; in-flight calls get the grace period, none with `now`."""
        if now:
            self._grace_s = 0.0
            self._no_grace.set()
        if self.outcome.stopped_by is None:
            self.outcome.stopped_by = reason
        first = not self._stop.is_set()
        self._stop.set()
        if self._guard.gate is not None:
            self._guard.gate.close()
        if first and self.on_stop is not None:
            self.on_stop(reason)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def run(self, plan: Sequence[PlannedCall]) -> RunOutcome:
        self.outcome.planned = len(plan)
        monitor = LoopLagMonitor()
        monitor.start()
        clock = selfdelay.LoopClock()
        clock.start()
        self._guard.start()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        deadline = None
        if self.s.duration_s is not None:
            deadline = asyncio.get_running_loop().call_later(self.s.duration_s, self.request_stop, "duration")
        try:
            if self.s.arrival == "closed":
                await self._closed_loop(iter(plan))
            else:
                await self._open_loop(plan)
            await self._drain()
        finally:
            if deadline:
                deadline.cancel()
            clock.stop()
            self._guard.stop()
            self.outcome.cpu_s = round(time.process_time() - cpu0, 4)
            self.outcome.wall_s = round(time.perf_counter() - wall0, 4)
            self.outcome.guard = self._guard.summary()
            self.outcome.loop_lag = await monitor.stop()
            self.outcome.release_lateness = summarize_ms(self._lateness)
            self.outcome.late_admissions = self._late_admissions
            self.outcome.released = len(self._lateness)
            self.outcome.saturated = self._saturated()
        self.outcome.not_started = self.outcome.planned - self.outcome.finished - self.outcome.cancelled
        return self.outcome

    # -- scheduling ------------------------------------------------------------------
    async def _closed_loop(self, calls: Iterator[PlannedCall]) -> None:
        """`concurrency` workers, started `ramp_up_s / concurrency` apart.

        All at once, their requests are built in one burst and their equal-length calls stay
        in step, so every first token arrives while the loop is busy with the others: the
        harness would measure its own queue (issue #6, target 3).
        """
        spacing = self.s.ramp_up_s / max(1, self.s.concurrency)
        gate = self._guard.gate

        async def worker(k: int) -> None:
            if k and spacing:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=k * spacing)
            while not self.stopping:
                if gate is not None and k >= gate.allowed:
                    await gate.wait(k)  # the timing guard holds this stream (harness.guard)
                    if self.stopping:
                        return
                call = next(calls, None)
                if call is None:
                    if gate is not None:
                        gate.close()  # the plan ran out: no held stream has anything left to send
                    return
                await self._execute(call, time.perf_counter_ns())

        for k in range(self.s.concurrency):
            self._spawn(worker(k))
        await self._wait_tasks_or_stop()

    async def _open_loop(self, plan: Sequence[PlannedCall]) -> None:
        cap = asyncio.Semaphore(self.s.max_in_flight) if self.s.max_in_flight else None
        start_ns = self.s.start_ns or time.perf_counter_ns()
        start = start_ns * 1e-9
        for call in plan:
            offset = call.offset_s or 0.0
            delay = start + offset - time.perf_counter()
            if delay > 0.5:  # long gaps: wake early on a stop request
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=delay)
            elif delay > 0:
                await asyncio.sleep(delay)
            if self.stopping:
                break
            self._lateness.append(max(0.0, time.perf_counter() - start - offset))
            scheduled_ns = start_ns + int(offset * 1e9)
            if cap is not None:
                await cap.acquire()
            self._spawn(self._execute(call, scheduled_ns, cap))
        await self._wait_tasks_or_stop()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _wait_tasks_or_stop(self) -> None:
        while self._tasks and not self.stopping:
            stop_wait = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait({*self._tasks, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()

    async def _drain(self) -> None:
        """After a stop: give in-flight calls the grace period, then cancel (they record `cancelled`).

        A later `request_stop(now=True)` (a second Ctrl-C) ends the grace at once.
        """
        grace = 0.0 if self.outcome.stopped_by in ("abort", "storage") else self._grace_s
        await drain_tasks(self._tasks, grace, self._no_grace)

    # -- one call --------------------------------------------------------------------
    async def _execute(
        self, call: PlannedCall, scheduled_ns: int, cap: asyncio.Semaphore | None = None
    ) -> None:
        limiter = self.limiter.pool_for(call.model)
        est_input = estimate_call_input(call)
        max_tokens = max_tokens_of(call)
        # The worst case is only needed to guard a budget: no pricing on the hot path without one.
        worst = self.pricer.worst_case_usd(call.model, est_input, max_tokens) if self.s.max_cost_usd else 0.0
        state = _CallState(scheduled_ns=scheduled_ns)
        hook = None
        try:
            if call.cache_group is not None:
                hook = await self._warm(call.cache_group)
            # In open loop the release loop already waited on the cap: that wait counts from the schedule.
            await limiter.acquire(est_input, max_tokens)
            state.admitted_ns = time.perf_counter_ns()
            if self.s.rate and (state.admitted_ns - scheduled_ns) * 1e-9 > 1.0 / self.s.rate:
                self._late_admissions += 1
            if self._over_budget(worst):
                self.request_stop("budget")
                return
            self._inflight_worst += worst
            state.reserved = worst
            if hook is not None:
                with _first_token_hook(hook):
                    await self._attempts(call, limiter, est_input, max_tokens, state)
            else:
                await self._attempts(call, limiter, est_input, max_tokens, state)
            if judge_specs(call.case.expected) and state.last is not None and state.last.ok:
                # Judged in a task of its own: the arm's concurrency slot is free while the judge works.
                self._spawn(self._judge_then_emit(call, state))
            else:
                self._emit(self._record(call, state, await self._quality(call, state)))
        except asyncio.CancelledError:
            self._emit(self._record(call, state, NO_VERDICT, cancelled=True))
            raise
        except Exception as exc:  # noqa: BLE001 - a bug in one call must cost one row, not the run
            if state.last is None:
                state.last = Attempt()
            state.last.fail("harness_error", f"{type(exc).__name__}: {exc}")
            self._emit(self._record(call, state, await self._quality(call, state)))
        finally:
            if hook is not None:
                hook()  # a leader that failed or was cancelled still releases the calls waiting on it
            self._inflight_worst -= state.reserved
            state.reserved = 0.0
            if cap is not None:
                cap.release()

    async def _warm(self, group: str) -> Callable[[], None] | None:
        """Cache warm-up: the group's first call goes alone; the others wait until its answer begins.

        Only then is the API's cache entry usable, so N calls released together would each pay a
        write. Returns the leader's release hook (None for a follower, which has waited).
        """
        event = self._warm_groups.get(group)
        if event is None:
            event = self._warm_groups[group] = asyncio.Event()
            return event.set
        await event.wait()
        return None

    async def _quality(self, call: PlannedCall, st: _CallState) -> Quality:
        a = st.last
        ok = a is not None and a.ok
        return await self.verdict(
            call.case,
            ok,
            a.text if a else None,
            a.tool_calls if a else None,
            a.stop_reason if a else None,
            call.call_id,
        )

    async def verdict(
        self,
        case: Case,
        ok: bool,
        text: str | None,
        tool_calls: Sequence[Mapping[str, Any]] | None,
        stop_reason: str | None,
        call_id: str,
    ) -> Quality:
        """The quality of one answer (the judge through this engine's client, pools and prices).

        Public for `harness grade`, which re-grades stored answers with the same machinery, and
        for the batch engine, which grades the answers its batches bring back.
        """
        return await self._verdicts.of(case, ok, text, tool_calls, stop_reason, call_id)

    async def _judge_then_emit(self, call: PlannedCall, st: _CallState) -> None:
        """The judged call's row, written once with its verdict (or the judge's error)."""
        try:
            quality = await self._quality(call, st)
        except asyncio.CancelledError:
            self._emit(
                self._record(call, st, Quality(judge_error="the run stopped before the judge answered"))
            )
            raise
        except Exception as exc:  # noqa: BLE001 - a judging bug costs this row its verdict, not the run
            quality = Quality(judge_error=f"harness error while judging: {type(exc).__name__}: {exc}"[:300])
        self._emit(self._record(call, st, quality))

    async def _judge_send(self, case: Case, call_id: str) -> JudgeCall:
        """One judge request through the same client, retries and prices, in the judge model's own pool."""
        model = self.s.judge_model
        assert model is not None
        call = PlannedCall(call_id=call_id, case=case, model=model, repeat=0, index=-1, judge=True)
        limiter = self.limiter.pool_for(model)
        est_input, max_tokens = estimate_call_input(call), max_tokens_of(call)
        await limiter.acquire(est_input, max_tokens)
        state = _CallState(scheduled_ns=time.perf_counter_ns())
        await self._attempts(call, limiter, est_input, max_tokens, state, stream=False)
        a = state.last
        if a is None:
            return JudgeCall(
                ok=False, text=None, cost_usd=0.0, input_tokens=0, output_tokens=0, error="not sent"
            )
        cost = self.pricer.cost(
            model, a.input_tokens, a.output_tokens, a.cache_creation_input_tokens, a.cache_read_input_tokens
        )
        return JudgeCall(
            ok=a.ok,
            text=a.text,
            cost_usd=cost.total_usd,
            input_tokens=a.input_tokens,
            output_tokens=a.output_tokens,
            error=None if a.ok else f"{a.error_kind}: {a.error_message}"[:300],
        )

    def _saturated(self) -> bool:
        """Open loop only: calls left later than their schedule (release loop, cap or limiter).

        Then `latency_from_schedule_s` measures the harness's queue as well as the model.
        """
        if self.s.arrival == "closed" or not self._lateness:
            return False
        late_share = self._late_admissions / max(1, len(self._lateness))
        return self.outcome.release_lateness.get("p99_ms", 0.0) > 10.0 or late_share > 0.05

    def _over_budget(self, worst: float) -> bool:
        limit = self.s.max_cost_usd
        return limit is not None and self.outcome.spent_usd + self._inflight_worst + worst > limit

    async def _attempts(
        self,
        call: PlannedCall,
        limiter: PoolLimiterLike,
        est_input: int,
        max_tokens: int,
        state: _CallState,
        *,
        stream: bool | None = None,
    ) -> None:
        stream = self.s.stream if stream is None else stream
        for number in range(self.s.max_retries + 1):
            state.attempts = number + 1
            attempt = await self.client.call(call, stream=stream, attempt=number)
            state.last = attempt
            if state.first_sent_ns is None:
                state.first_sent_ns = attempt.sent_ns
            if attempt.headers is not None:
                limiter.observe_headers(attempt.headers)
            # ITPM counts uncached input plus cache writes; a failed attempt that produced nothing is refunded.
            limiter.settle(
                est_input,
                attempt.input_tokens + attempt.cache_creation_input_tokens,
                max_tokens,
                attempt.output_tokens,
            )
            if attempt.ok:
                return
            if attempt.fatal:
                self.outcome.error = TargetError(
                    f"the API refused the key ({attempt.status} {attempt.error_kind}) on {call.model}; "
                    f"check {ANTHROPIC_KEY_ENV} and the workspace's permissions"
                )
                self.request_stop("abort")
                return
            if not attempt.retryable or number == self.s.max_retries or self.stopping:
                return
            if attempt.error_kind == "rate_limit":
                limiter.on_rate_limited(attempt.retry_after_s, attempt.error_message)
            wait = attempt.retry_after_s
            if wait is None or wait <= 0:
                wait = min(0.5 * 2**number, 8.0) * self._rng.uniform(0.75, 1.0)
            began = time.perf_counter_ns()
            await asyncio.sleep(wait)
            await limiter.acquire(est_input, max_tokens, front=True)
            state.retry_wait_ns += time.perf_counter_ns() - began

    def _wall(self, ns: int | None) -> datetime | None:
        if ns is None:
            return None
        return self._anchor_wall + timedelta(microseconds=(ns - self._anchor_ns) / 1000)

    def _record(
        self, call: PlannedCall, st: _CallState, q: Quality, *, cancelled: bool = False
    ) -> CallRecord:
        a = st.last
        case = call.case
        s = 1e-9
        if cancelled:
            status = "cancelled"
        elif a is not None and a.ok:
            status = "ok"
        else:
            status = "error"
        ok = status == "ok"
        sent = a.sent_ns if a else None
        last = a.last_byte_ns if a and a.last_byte_ns else None
        first = a.first_token_ns if a else None
        text = a.text if a else None
        tool_calls = a.tool_calls if a else None
        tps = None
        if ok and first is not None and last is not None and last > first and a and a.output_tokens:
            tps = a.output_tokens / ((last - first) * s)

        quality = q.columns()
        if cancelled:  # a call that never answered fails a case that expects an answer
            quality["passed"] = False if case.expected else None

        def since_sent(mark: int | None) -> float | None:
            return (mark - sent) * s if mark is not None and sent is not None else None

        record = CallRecord(
            run_id=self.s.run_id,
            call_id=call.call_id,
            case_id=case.id,
            user_id=case.user_id,
            repeat=call.repeat,
            tags=list(case.tags),
            model=call.model,
            variant=call.variant,
            model_reported=a.model_reported if a else None,
            target=self.s.target,
            status=status,
            error_kind=("cancelled" if cancelled else (a.error_kind if a else None)) if not ok else None,
            error_message=None if ok or a is None else a.error_message,
            http_status=a.status if a else None,
            request_id=a.request_id if a else None,
            attempts=st.attempts,
            stop_reason=a.stop_reason if a else None,
            stream=self.s.stream,
            scheduled_at=self._wall(st.scheduled_ns),
            started_at=self._wall(st.first_sent_ns),
            finished_at=self._wall(last),
            limiter_wait_s=(st.admitted_ns - st.scheduled_ns) * s if st.admitted_ns else None,
            retry_wait_s=st.retry_wait_ns * s,
            ttft_s=since_sent(first),
            time_to_first_text_s=since_sent(a.first_text_ns) if a else None,
            time_to_first_thinking_s=since_sent(a.first_thinking_ns) if a else None,
            latency_s=(last - sent) * s if last is not None and sent is not None and not cancelled else None,
            latency_from_schedule_s=(last - st.scheduled_ns) * s
            if last is not None and not cancelled
            else None,
            output_tokens_per_s=tps,
            client_delay_first_token_s=a.first_token_delay_ns * s
            if a is not None and first is not None and a.first_token_delay_ns is not None
            else None,
            client_delay_last_byte_s=a.last_byte_delay_ns * s
            if a is not None and last is not None and a.last_byte_delay_ns is not None
            else None,
            **usage_cost_columns(self.pricer, call, a),
            **quality,
            response_text=text,
            tool_calls=orjson.dumps(tool_calls).decode() if tool_calls else None,
            event_uuid=event_uuid(self.s.run_id, call.call_id),
        )
        return record

    def _emit(self, record: CallRecord) -> None:
        self.outcome.count(record)
        if record.status != "cancelled":
            first, last = record.client_delay_first_token_s, record.client_delay_last_byte_s
            self._guard.observe(
                record.output_tokens,
                record.latency_s,
                last if first is None else (first if last is None or first > last else last),
            )
        problem = deliver(self.sinks, record)
        if problem is not None:
            self.outcome.error = problem
            self.request_stop("storage")


@contextlib.contextmanager
def _first_token_hook(hook: Callable[[], None]) -> Iterator[None]:
    token = FIRST_TOKEN_HOOK.set(hook)
    try:
        yield
    finally:
        FIRST_TOKEN_HOOK.reset(token)


def deliver(sinks: Sequence[Sink], record: CallRecord) -> StorageError | None:
    """Hand `record` to each sink in order; a storage failure stops the chain and is returned.

    Store first: a record a sink could not take goes to no later sink, so no PostHog
    event exists for a call whose row was not stored.
    """
    for sink in sinks:
        try:
            sink.write(record)
        except StorageError as exc:
            return exc
        except OSError as exc:
            return StorageError(f"cannot write results: {exc.strerror or exc}")
    return None


@dataclass(slots=True)
class _CallState:
    scheduled_ns: int
    admitted_ns: int | None = None
    attempts: int = 0
    retry_wait_ns: int = 0
    reserved: float = 0.0
    last: Attempt | None = None
    first_sent_ns: int | None = None
