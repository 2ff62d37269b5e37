"""When a call may start: client-side rate limits per rate-limit pool.

Each pool has one dispatcher task, the only thing that ever waits on the limits:
callers enqueue and await a future, so admission is FIFO and there is no
polling storm however many calls wait (building-blocks §2.4). A call is admitted
atomically once the pool's "not before" gate is open and all three limits have
room, then it takes from all three at once:

- requests per minute: asyncio-throttle's sliding-window `Throttler` with a
  sub-second window (k requests per k·60/RPM seconds), so bursts stay a fraction
  of a second's budget; the dispatcher sleeps until the window has room rather
  than letting the throttle poll;
- input and output tokens per minute: weighted token buckets refilled at
  limit/60 per second, holding a few seconds of refill, allowed to go into debt
  (a request larger than the bucket is admitted from a full bucket). Output is
  reserved from `max_tokens` and settled from usage, as the API does.

Levels are re-synced from `anthropic-ratelimit-*` headers and a 429 closes the
gate for the whole pool. Open-loop pacing is the runner's job: this module only
says *when*; it must not send anything, retry, or sleep on the caller's behalf
beyond the admission wait.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from asyncio_throttle import Throttler

__all__ = [
    "Limiter",
    "PoolLimiter",
    "PoolLimits",
    "default_pool_key",
    "estimate_call_input",
    "estimate_input_tokens",
]

# Target RPM window (building-blocks §2.4: 0.1–1 s). No window holds more than its share of the
# per-second budget; timer lateness (epoll rounds up to 1 ms) costs lateness/window of the rate, ≈0.2 %.
_WINDOW_S = 0.5
_THROTTLE_EPS_S = 0.00005  # Throttler frees a slot strictly *after* `period`: wake just past it
# When tokens bind, sleep at least this long so that one wake-up admits several calls (the tokens
# keep accumulating in the bucket meanwhile, so no throughput is lost).
_MIN_TOKEN_SLEEP_S = 0.02
_DEFAULT_GATE_S = 1.0  # a 429 without retry-after still pauses the pool this long
_IMAGE_TOKENS = 1600  # Anthropic's cap for one image (~1.15 megapixels)
_MESSAGE_OVERHEAD = 8  # role and framing tokens per message, rounded up


@dataclass(frozen=True)
class PoolLimits:
    """A pool's per-minute limits; None means unlimited."""

    rpm: float | None = None
    itpm: float | None = None
    otpm: float | None = None

    def __post_init__(self) -> None:
        for name in ("rpm", "itpm", "otpm"):
            value = getattr(self, name)
            if value is not None and not (
                isinstance(value, int | float) and math.isfinite(value) and value > 0
            ):
                raise ValueError(f"{name} must be a positive number or None, got {value!r}")


def default_pool_key(model: str) -> str:
    """The API pools limits by model class: one pool per family, else the model id itself."""
    lowered = model.lower()
    for family in ("opus", "sonnet", "haiku"):
        if family in lowered:
            return family
    return model


def estimate_input_tokens(case_messages: Iterable[Mapping[str, Any]], system: Any = None) -> int:
    """A conservative input-token estimate for ITPM: one token per 3 characters, rounded up.

    English runs ~4 characters a token, code and other scripts fewer; 3 over-reserves a little,
    and `settle()` gives back the difference once usage is known. Each message adds a few
    framing tokens; an image counts as Anthropic's per-image maximum (1,600); other non-text
    blocks count their JSON-ish text.
    """
    chars = _text_chars(system)
    extra = 0
    for message in case_messages:
        extra += _MESSAGE_OVERHEAD
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
            continue
        for block in content or ():
            if not isinstance(block, Mapping):
                chars += len(str(block))
            elif block.get("type") == "image":
                extra += _IMAGE_TOKENS
            else:
                chars += _text_chars(block)
    return extra + -(-chars // 3)


def estimate_call_input(call: Any) -> int:
    """`estimate_input_tokens` of a planned call's case (what the runner reserves per call)."""
    return estimate_input_tokens(call.case.messages, call.case.system)


def _text_chars(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        return len(value)
    if isinstance(value, Mapping):
        if isinstance(value.get("text"), str):
            return len(value["text"])
        return sum(_text_chars(v) for v in value.values()) + 2 * len(value)
    if isinstance(value, list | tuple):
        return sum(_text_chars(v) for v in value)
    return len(str(value))


class _Bucket:
    """A weighted token bucket that may go into debt; `rate` is tokens per second."""

    __slots__ = ("capacity", "clock", "level", "limit", "rate", "stamp")

    def __init__(self, limit_per_min: float, burst_s: float, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.stamp = clock()
        self.level = self.capacity = math.inf  # starts full: set to the capacity just below
        self.set_limit(limit_per_min, burst_s)
        self.level = self.capacity

    def set_limit(self, limit_per_min: float, burst_s: float) -> None:
        self.refill()
        self.limit = limit_per_min
        self.rate = limit_per_min / 60.0
        self.capacity = max(1.0, self.rate * burst_s)

    def refill(self) -> float:
        now = self.clock()
        if now > self.stamp and self.level < self.capacity:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        return self.level

    def delay(self, amount: float) -> float:
        """Seconds until `amount` may be taken: a request larger than the bucket waits for a full bucket."""
        need = min(amount, self.capacity) - self.refill()
        return need / self.rate if need > 0 else 0.0

    def take(self, amount: float) -> None:
        self.refill()
        self.level -= amount

    def give(self, amount: float) -> None:
        self.refill()
        self.level = min(self.capacity, self.level + amount)

    def adjust(self, amount: float) -> float:
        """Give back (amount > 0) or charge more (amount < 0) after the fact."""
        if amount >= 0:
            self.give(amount)
        else:
            self.take(-amount)
        return amount

    def clamp(self, ceiling: float) -> None:
        self.refill()
        self.level = min(self.level, ceiling)


class _Waiter:
    __slots__ = ("enqueued", "future", "input_tokens", "max_tokens")

    def __init__(
        self, input_tokens: int, max_tokens: int, future: asyncio.Future[float], enqueued: float
    ) -> None:
        self.input_tokens = input_tokens
        self.max_tokens = max_tokens
        self.future = future
        self.enqueued = enqueued


class PoolLimiter:
    """Admission for one rate-limit pool: FIFO, atomic across RPM, ITPM and OTPM, one dispatcher task.

    Create it on the running loop. `burst_s` is how many seconds of refill a token
    bucket holds (never less than one token).
    """

    def __init__(
        self,
        name: str,
        limits: PoolLimits,
        *,
        clock: Callable[[], float] = time.monotonic,
        burst_s: float = 3.0,
    ) -> None:
        self.name = name
        self._configured = limits
        self._limits = limits
        self._clock = clock
        self._burst_s = burst_s
        self._min_token_sleep = min(_MIN_TOKEN_SLEEP_S, burst_s / 4)
        self._loop = asyncio.get_running_loop()
        self._queue: deque[_Waiter] = deque()
        self._throttler: Throttler | None = None
        self._itpm: _Bucket | None = None
        self._otpm: _Bucket | None = None
        self._apply(limits)
        self._gate = -math.inf  # clock time before which nothing is admitted
        self._task: asyncio.Task[None] | None = None
        self._sleeper: asyncio.Future[None] | None = None
        self._sleeping_on_tokens = False
        self._closed = False
        self.admitted = 0
        self.wakeups = 0  # dispatcher wake-ups: a polling storm would show here

    # -- public API --------------------------------------------------------------------
    @property
    def limits(self) -> PoolLimits:
        """The limits in force (the configured ones, lowered by what the headers said)."""
        return self._limits

    @property
    def waiting(self) -> int:
        return len(self._queue)

    async def acquire(self, input_tokens: int, max_tokens: int, *, front: bool = False) -> float:
        """Wait until a call with this input estimate and `max_tokens` may start; returns the seconds waited.

        `front=True` puts a retried call at the head of the queue.
        """
        if self._closed:
            raise RuntimeError(f"rate-limit pool {self.name} is closed")
        if not self._queue and self._admissible(input_tokens, max_tokens) and self._rpm_delay() <= 0:
            if self._throttler is not None:
                await self._throttler.acquire()  # has a free slot: returns without suspending
            self._take_tokens(input_tokens, max_tokens)
            self.admitted += 1
            return 0.0
        future: asyncio.Future[float] = self._loop.create_future()
        waiter = _Waiter(input_tokens, max_tokens, future, self._clock())
        if front:
            self._queue.appendleft(waiter)
        else:
            self._queue.append(waiter)
        if self._task is None:
            self._task = self._loop.create_task(self._dispatch(), name=f"limiter-{self.name}")
        elif front or len(self._queue) == 1:
            self._poke()
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # admitted as we were cancelled: give it back
                self.settle(input_tokens, 0, max_tokens, 0)
            else:
                self._poke()  # it may have been the head the dispatcher was sleeping for
            raise

    def settle(self, input_estimate: int, input_actual: int, max_tokens: int, output_actual: int) -> None:
        """Book a finished call: give back unused output tokens and correct the input estimate.

        `input_actual` is what ITPM counts: uncached input plus cache writes (cache reads are free).
        """
        refund = 0.0
        if self._otpm is not None:
            refund += self._otpm.adjust(max_tokens - output_actual)
        if self._itpm is not None:
            refund += self._itpm.adjust(input_estimate - input_actual)
        if refund > 0 and self._sleeping_on_tokens:
            self._poke()

    def observe_headers(self, headers: Mapping[str, str]) -> None:
        """Re-sync from `anthropic-ratelimit-*` headers: adopt a lower limit, clamp levels down to `-remaining`.

        A limit above the configured one is not adopted (the profile may share the pool on purpose);
        a pool configured as unlimited adopts the header's. Levels never go up: token remainders are
        rounded to the nearest thousand and other clients share the pool.
        """
        get = headers.get
        rpm_limit = _number(get("anthropic-ratelimit-requests-limit"))
        if rpm_limit is None and isinstance(headers, dict) and headers:
            lowered = {k.lower(): v for k, v in headers.items()}
            get = lowered.get
            rpm_limit = _number(get("anthropic-ratelimit-requests-limit"))
        in_limit = _number(get("anthropic-ratelimit-input-tokens-limit"))
        out_limit = _number(get("anthropic-ratelimit-output-tokens-limit"))
        c, cur = self._configured, self._limits
        rpm, itpm, otpm = (
            _lower(c.rpm, rpm_limit, cur.rpm),
            _lower(c.itpm, in_limit, cur.itpm),
            _lower(c.otpm, out_limit, cur.otpm),
        )
        if (rpm, itpm, otpm) != (cur.rpm, cur.itpm, cur.otpm):
            self._limits = PoolLimits(rpm, itpm, otpm)
            self._apply(self._limits)
            self._poke()
        in_left = _number(get("anthropic-ratelimit-input-tokens-remaining"))
        if in_left is not None and self._itpm is not None:
            self._itpm.clamp(in_left)
        out_left = _number(get("anthropic-ratelimit-output-tokens-remaining"))
        if out_left is not None and self._otpm is not None:
            self._otpm.clamp(out_left)
        req_left = _number(get("anthropic-ratelimit-requests-remaining"))
        if req_left is not None and req_left < 1 and self._limits.rpm:
            self._close_gate(60.0 / self._limits.rpm)  # the server's bucket is empty: one request's refill

    def on_rate_limited(self, retry_after_s: float | None, message: str | None) -> None:
        """A 429: close the pool until `retry-after` and empty the bucket the message names."""
        self._close_gate(_DEFAULT_GATE_S if retry_after_s is None else max(0.0, retry_after_s))
        text = (message or "").lower()
        if "input tokens" in text and self._itpm is not None:
            self._itpm.clamp(0.0)
        if "output tokens" in text and self._otpm is not None:
            self._otpm.clamp(0.0)

    def close(self) -> None:
        """Stop the dispatcher; calls still waiting get a RuntimeError."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        while self._queue:
            w = self._queue.popleft()
            if not w.future.done():
                w.future.set_exception(RuntimeError(f"rate-limit pool {self.name} closed"))

    async def aclose(self) -> None:
        self.close()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    # -- dispatcher --------------------------------------------------------------------
    async def _dispatch(self) -> None:
        """The only waiter on the limits: admit the head when everything has room, else sleep once."""
        queue = self._queue
        while True:
            while queue and queue[0].future.done():  # cancelled waiters
                queue.popleft()
            if not queue:
                await self._sleep(None)
                continue
            head = queue[0]
            now = self._clock()
            gate = self._gate - now
            tokens = self._token_delay(head.input_tokens, head.max_tokens)
            delay = max(gate, tokens, self._rpm_delay())
            if delay > 0:
                self._sleeping_on_tokens = tokens > 0 and tokens >= gate
                if self._sleeping_on_tokens:
                    delay = max(delay, self._min_token_sleep)
                await self._sleep(delay)
                continue
            if self._throttler is not None:
                await self._throttler.acquire()  # has room: returns at once (polls 1 ms only on a rare race)
                if not self._admissible(head.input_tokens, head.max_tokens) or head.future.done():
                    continue  # a 429 or a header arrived meanwhile: the slot is spent, admission re-checked
            queue.popleft()
            self._take_tokens(head.input_tokens, head.max_tokens)
            self.admitted += 1
            head.future.set_result(max(0.0, self._clock() - head.enqueued))

    async def _sleep(self, delay: float | None) -> None:
        """Sleep `delay` seconds (None: until poked); a state change pokes it awake early."""
        future: asyncio.Future[None] = self._loop.create_future()
        self._sleeper = future
        handle = None if delay is None else self._loop.call_later(delay, _wake, future)
        try:
            await future
        finally:
            if handle is not None:
                handle.cancel()
            self._sleeper = None
            self._sleeping_on_tokens = False
            self.wakeups += 1

    def _poke(self) -> None:
        if self._sleeper is not None:
            _wake(self._sleeper)

    # -- the limits --------------------------------------------------------------------
    def _apply(self, limits: PoolLimits) -> None:
        if limits.rpm is None:
            self._throttler = None
        else:
            per_s = limits.rpm / 60.0
            k = _window_size(limits.rpm)
            if self._throttler is None:
                self._throttler = Throttler(rate_limit=k, period=k / per_s, retry_interval=0.001)
            else:
                self._throttler.rate_limit = k
                self._throttler.period = k / per_s
        self._itpm = self._bucket(self._itpm, limits.itpm)
        self._otpm = self._bucket(self._otpm, limits.otpm)

    def _bucket(self, bucket: _Bucket | None, limit: float | None) -> _Bucket | None:
        if limit is None:
            return None
        if bucket is None:
            return _Bucket(limit, self._burst_s, self._clock)
        bucket.set_limit(limit, self._burst_s)
        bucket.level = min(bucket.level, bucket.capacity)
        return bucket

    def _token_delay(self, input_tokens: int, max_tokens: int) -> float:
        delay = 0.0
        if self._itpm is not None:
            delay = self._itpm.delay(input_tokens)
        if self._otpm is not None:
            delay = max(delay, self._otpm.delay(max_tokens))
        return delay

    def _rpm_delay(self) -> float:
        """Seconds until the throttle's sliding window has a free slot (asyncio-throttle's own rule)."""
        throttler = self._throttler
        if throttler is None:
            return 0.0
        throttler.flush()
        log = throttler._task_logs
        if len(log) < throttler.rate_limit:
            return 0.0
        # The (len − rate_limit)-th oldest grant must expire; it does strictly after `period`.
        oldest = log[len(log) - throttler.rate_limit]
        return max(0.0, oldest + throttler.period - time.monotonic()) + _THROTTLE_EPS_S

    def _admissible(self, input_tokens: int, max_tokens: int) -> bool:
        return self._clock() >= self._gate and self._token_delay(input_tokens, max_tokens) <= 0

    def _take_tokens(self, input_tokens: int, max_tokens: int) -> None:
        if self._itpm is not None:
            self._itpm.take(input_tokens)
        if self._otpm is not None:
            self._otpm.take(max_tokens)

    def _close_gate(self, seconds: float) -> None:
        until = self._clock() + seconds
        if until > self._gate:
            self._gate = until
            self._poke()  # the dispatcher re-computes its sleep


def _window_size(rpm: float) -> int:
    """Requests per throttle window: near `_WINDOW_S` of budget, preferably a divisor of the budget.

    With k dividing the per-second budget, no 1-second window can hold more than a second's budget
    (the throttle frees a slot strictly after its period); with k dividing the per-minute budget,
    no 60-second window exceeds the RPM. Otherwise a window may hold one extra batch of k.
    """
    per_s = rpm / 60.0
    target = max(1.0, per_s * _WINDOW_S)
    for budget in (per_s, rpm):
        whole = round(budget)
        if whole < 1 or abs(budget - whole) > 1e-9:
            continue
        low, high = max(1, math.ceil(target / 2)), min(whole, math.floor(target * 2))
        # Bounded search near the target: an unlimited pool that adopts a huge header limit
        # (e.g. 10^9 RPM) must not scan millions of candidates on the event loop (it took 1.2 s).
        low, high = max(low, round(target) - 5000), min(high, round(target) + 5000)
        divisors = [d for d in range(low, high + 1) if whole % d == 0]
        if divisors:
            return min(divisors, key=lambda d: (abs(d - target), d))
    return max(1, round(target))


class Limiter:
    """The pools of a run: models map to a pool key (configurable, default their family)."""

    def __init__(
        self,
        pools: Mapping[str, PoolLimits],
        model_pool: Mapping[str, str],
        *,
        clock: Callable[[], float] = time.monotonic,
        burst_s: float = 3.0,
    ) -> None:
        self._limits = dict(pools)
        self._model_pool = dict(model_pool)
        self._clock = clock
        self._burst_s = burst_s
        self._pools: dict[str, PoolLimiter] = {}
        self._by_model: dict[str, PoolLimiter] = {}

    def pool_key(self, model: str) -> str:
        return self._model_pool.get(model) or default_pool_key(model)

    def pool_for(self, model: str) -> PoolLimiter:
        """The model's pool, created on first use (on the running loop); unknown pools are unlimited."""
        pool = self._by_model.get(model)
        if pool is None:
            key = self.pool_key(model)
            pool = self._pools.get(key)
            if pool is None:
                limits = self._limits.get(key, PoolLimits())
                pool = PoolLimiter(key, limits, clock=self._clock, burst_s=self._burst_s)
                self._pools[key] = pool
            self._by_model[model] = pool
        return pool

    @property
    def pools(self) -> Mapping[str, PoolLimiter]:
        return self._pools

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _lower(configured: float | None, header: float | None, current: float | None) -> float | None:
    """The limit to use: the header's if it is lower (or nothing was configured), else the configured one.

    A response without the header keeps the `current` limit.
    """
    if header is None or header <= 0:
        return current
    return header if configured is None else min(configured, header)
