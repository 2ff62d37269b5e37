"""limiter.py: FIFO admission, RPM windows, token buckets, header re-sync, the 429 gate, and no polling storm.

Timing assertions are lower bounds (the limiter can only be late, never early) or
generous upper bounds; ordering and wake-up counts carry the rest.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from harness.limiter import Limiter, PoolLimiter, PoolLimits, default_pool_key, estimate_input_tokens

EPS = 1e-6


async def _timed(
    pool: PoolLimiter, input_tokens: int, max_tokens: int, order: list[int], i: int
) -> tuple[float, float]:
    """Acquire and report (lower bound of the admission time, time resumed)."""
    before = time.monotonic()
    waited = await pool.acquire(input_tokens, max_tokens)
    order.append(i)
    return before + waited, time.monotonic()


def _max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


async def test_rpm_is_fifo_and_no_window_exceeds_its_budget() -> None:
    pool = PoolLimiter("rpm", PoolLimits(rpm=6000))  # 100/s: windows of 50 per 0.5 s
    order: list[int] = []
    n = 120
    results = await asyncio.gather(*(_timed(pool, 0, 0, order, i) for i in range(n)))
    await pool.aclose()
    assert order == list(range(n))
    admitted = [lower for lower, _ in results]
    # Slightly shorter windows than the throttle's, to absorb the µs between our stamp and the limiter's.
    assert _max_in_window(admitted, 0.5 - 0.002) <= 50
    assert _max_in_window(admitted, 1.0 - 0.002) <= 100
    # 120 calls at 100/s need two window turnovers: the last one cannot start before 1 s.
    assert max(resumed for _, resumed in results) >= min(admitted) + 1.0 - 0.002
    assert pool.admitted == n


async def test_token_bucket_is_fifo_a_large_request_is_not_starved() -> None:
    pool = PoolLimiter("otpm", PoolLimits(otpm=60_000), burst_s=0.2)  # 1,000 tokens/s, bucket of 200
    order: list[int] = []
    await pool.acquire(0, 200)  # empties the bucket
    tasks = [asyncio.create_task(_timed(pool, 0, 200, order, 0))]
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(_timed(pool, 0, 10, order, i)) for i in range(1, 21)]
    await asyncio.gather(*tasks)
    await pool.aclose()
    assert order == list(range(21))  # the small ones never overtake the big one (aiolimiter's flaw)


async def test_no_admission_before_its_tokens_have_refilled() -> None:
    t0 = time.monotonic()
    pool = PoolLimiter("sched", PoolLimits(otpm=6000), burst_s=0.5)  # 100 tokens/s, bucket of 50 (full)
    order: list[int] = []
    results = await asyncio.gather(*(_timed(pool, 0, 25, order, i) for i in range(8)))
    await pool.aclose()
    assert order == list(range(8))
    for i, (_, resumed) in enumerate(results):
        # Call i needs (i + 1) × 25 tokens in all; 50 were there at the start, the rest refill at 100/s.
        earliest = t0 + max(0, (i + 1) * 25 - 50) / 100
        assert resumed >= earliest - EPS, (i, resumed - t0)
    assert results[-1][1] - t0 < 5.0  # and not absurdly late either


async def test_settle_gives_back_unused_output_tokens() -> None:
    pool = PoolLimiter("refund", PoolLimits(otpm=6000), burst_s=1.0)  # 100 tokens/s, bucket of 100
    assert await pool.acquire(0, 100) == 0.0
    waiter = asyncio.create_task(pool.acquire(0, 100))  # would need a full second of refill
    await asyncio.sleep(0.05)
    assert not waiter.done()
    pool.settle(0, 0, 100, 10)  # the first call wrote 10 of its 100: 90 come back
    waited = await asyncio.wait_for(waiter, 2.0)
    await pool.aclose()
    assert waited < 0.5


@pytest.mark.timing
async def test_settle_charges_input_beyond_the_estimate() -> None:
    pool = PoolLimiter("itpm", PoolLimits(itpm=60_000), burst_s=0.1)  # 1,000 tokens/s, bucket of 100
    await pool.acquire(100, 0)
    pool.settle(100, 400, 0, 0)  # the call really had 400 input tokens: the bucket owes 300
    before = time.monotonic()
    await pool.acquire(50, 0)
    waited_s = time.monotonic() - before
    await pool.aclose()
    assert waited_s >= 0.35 - 0.01  # 350 tokens at 1,000/s (10 ms of slack for the settle → acquire gap)


@pytest.mark.timing
async def test_headers_adopt_lower_limits_and_clamp_levels_down_never_up() -> None:
    pool = PoolLimiter("hdr", PoolLimits(rpm=600, otpm=600_000), burst_s=1.0)
    pool.observe_headers(
        {
            "anthropic-ratelimit-requests-limit": "6000",  # higher than configured: kept at 600
            "anthropic-ratelimit-requests-remaining": "5999",
            "anthropic-ratelimit-input-tokens-limit": "80000",  # unconfigured: adopted
            "anthropic-ratelimit-input-tokens-remaining": "80000",
            "anthropic-ratelimit-output-tokens-limit": "6000",  # lower: adopted
            "anthropic-ratelimit-output-tokens-remaining": "0",
        }
    )
    assert pool.limits == PoolLimits(rpm=600, itpm=80_000, otpm=6000)
    # A later header saying plenty is left must not raise the local level.
    pool.observe_headers({"Anthropic-Ratelimit-Output-Tokens-Remaining": "6000"})
    before = time.monotonic()
    await pool.acquire(10, 50)
    waited_s = time.monotonic() - before
    await pool.aclose()
    assert waited_s >= 0.5 - 0.01  # the bucket was clamped to 0 and refills at 100 tokens/s


async def test_header_keys_in_any_case() -> None:
    pool = PoolLimiter("case", PoolLimits())
    pool.observe_headers({"Anthropic-RateLimit-Requests-Limit": "120", "anthropic-ratelimit-other": "x"})
    assert pool.limits.rpm == 120
    await pool.aclose()


async def test_retry_after_gate_holds_every_waiter_until_it_opens() -> None:
    pool = PoolLimiter("gate", PoolLimits(rpm=60_000))
    order: list[int] = []
    t_call = time.monotonic()
    pool.on_rate_limited(0.3, "Number of requests has exceeded your per-minute rate limit")
    results = await asyncio.gather(*(_timed(pool, 0, 0, order, i) for i in range(20)))
    assert order == list(range(20))
    assert all(resumed >= t_call + 0.3 - EPS for _, resumed in results)
    # A gate closed while calls already wait on a bucket holds them too.
    pool2 = PoolLimiter("gate2", PoolLimits(otpm=60_000), burst_s=0.1)  # 1,000/s, bucket of 100
    await pool2.acquire(0, 100)
    queued = asyncio.create_task(pool2.acquire(0, 50))  # due in ~50 ms
    await asyncio.sleep(0.01)
    t_gate = time.monotonic()
    pool2.on_rate_limited(0.25, None)
    await queued
    assert time.monotonic() >= t_gate + 0.25 - EPS
    await pool.aclose()
    await pool2.aclose()


@pytest.mark.timing
async def test_rate_limit_message_empties_the_named_bucket() -> None:
    pool = PoolLimiter(
        "named", PoolLimits(itpm=60_000, otpm=60_000), burst_s=1.0
    )  # 1,000/s, buckets of 1,000
    pool.on_rate_limited(
        0.0, "This request would exceed your organization's rate limit of 60,000 input tokens per minute"
    )
    before = time.monotonic()
    await pool.acquire(10, 900)  # output bucket is untouched: only the 10 input tokens wait
    assert time.monotonic() - before < 0.5
    before = time.monotonic()
    await pool.acquire(400, 0)  # input bucket was emptied: 400 tokens at 1,000/s
    assert time.monotonic() - before >= 0.4 - 0.02
    await pool.aclose()


async def test_many_blocked_waiters_cost_no_cpu_and_few_wakeups() -> None:
    pool = PoolLimiter("idle", PoolLimits(rpm=600_000))
    pool.on_rate_limited(1.0, "requests")
    order: list[int] = []
    cpu0 = time.process_time()
    tasks = [asyncio.create_task(_timed(pool, 0, 0, order, i)) for i in range(200)]
    await asyncio.sleep(0.9)
    cpu_blocked = time.process_time() - cpu0
    wakeups_blocked = pool.wakeups
    assert not any(t.done() for t in tasks)
    await asyncio.gather(*tasks)
    await pool.aclose()
    assert order == list(range(200))
    assert wakeups_blocked <= 3  # one sleep for the gate, not a poll per waiter per millisecond
    assert cpu_blocked < 0.2 * 0.9  # < 20 % of a core (the polling design costs 50–60 %)


async def test_cancelled_waiter_is_skipped_and_front_goes_first() -> None:
    pool = PoolLimiter("cancel", PoolLimits(rpm=60_000))
    pool.on_rate_limited(0.15, None)
    order: list[int] = []
    a = asyncio.create_task(_timed(pool, 0, 0, order, 1))
    b = asyncio.create_task(_timed(pool, 0, 0, order, 2))
    c = asyncio.create_task(_timed(pool, 0, 0, order, 3))
    await asyncio.sleep(0.01)
    b.cancel()

    async def retried() -> None:
        await pool.acquire(0, 0, front=True)
        order.append(0)

    d = asyncio.create_task(retried())
    await asyncio.gather(a, c, d)
    with pytest.raises(asyncio.CancelledError):
        await b
    await pool.aclose()
    assert order == [0, 1, 3]
    assert pool.admitted == 3


async def test_close_fails_waiters_and_later_calls() -> None:
    pool = PoolLimiter("closing", PoolLimits(rpm=60))
    pool.on_rate_limited(10.0, None)
    waiter = asyncio.create_task(pool.acquire(0, 0))
    await asyncio.sleep(0.01)
    await pool.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await waiter
    with pytest.raises(RuntimeError, match="closed"):
        await pool.acquire(0, 0)


async def test_limiter_routes_models_to_pools() -> None:
    limiter = Limiter(
        {"opus": PoolLimits(rpm=50), "special": PoolLimits(rpm=60, otpm=1000)},
        {"claude-haiku-4-5": "special"},
    )
    opus = limiter.pool_for("claude-opus-4-7")
    assert limiter.pool_for("claude-opus-4-1") is opus
    assert opus.limits.rpm == 50
    assert limiter.pool_for("claude-haiku-4-5").limits == PoolLimits(rpm=60, otpm=1000)
    other = limiter.pool_for("my-local-model")
    assert other.name == "my-local-model"
    assert other.limits == PoolLimits()
    assert await other.acquire(10**9, 10**9) == 0.0  # unlimited
    assert set(limiter.pools) == {"opus", "special", "my-local-model"}
    await limiter.aclose()


def test_default_pool_key_is_the_family() -> None:
    assert default_pool_key("claude-opus-4-1-20250805") == "opus"
    assert default_pool_key("claude-3-5-Sonnet-latest") == "sonnet"
    assert default_pool_key("claude-haiku-5-5") == "haiku"
    assert default_pool_key("claude-fable-5-2") == "claude-fable-5-2"


def test_pool_limits_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="rpm"):
        PoolLimits(rpm=0)
    with pytest.raises(ValueError, match="otpm"):
        PoolLimits(otpm=float("nan"))


def test_estimate_input_tokens_is_conservative() -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 100  # ~4.4 characters a token in English
    est = estimate_input_tokens([{"role": "user", "content": text}], "Be brief.")
    assert est >= len(text) / 3
    assert est < len(text)  # conservative, not absurd
    blocks = [
        {"role": "user", "content": [{"type": "text", "text": "a" * 300}]},
        {"role": "assistant", "content": "b" * 30},
        {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "x" * 100_000}}]},
    ]
    est_blocks = estimate_input_tokens(blocks, [{"type": "text", "text": "s" * 60}])
    assert 100 + 10 + 20 + 1600 <= est_blocks < 2000  # the image counts as 1,600, not its base64 length
    assert estimate_input_tokens([], None) == 0
