"""Pacing micro-benchmark of `harness.limiter`: achieved admission rate, burstiness, CPU and loop lag.

Method of building-blocks §2.3: 200 waiters loop acquire → record time → yield,
against one pool limited to the target rate (RPM = rate × 60; and once by an
output-token bucket), while a probe task measures the event loop's lag with
5 ms sleeps. CPU is the process's CPU time over wall time, net of the probe's own
cost measured alone beforehand. Open-loop release pacing is the runner's job and
is measured elsewhere; this measures only the limiter.

Run: `python -m benchmarks.pacing [--quick]` (≈37 s, quick ≈11 s).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from harness import loops
from harness.limiter import PoolLimiter, PoolLimits

WAITERS = 200
PROBE_S = 0.02  # a 20 ms probe: its own CPU (~50 wake-ups/s) stays small beside the limiter's
WARMUP_S = 0.5


class _RecordingDeque(deque):
    """The throttle's log, also copied into `record` (benchmark instrumentation only)."""

    def __init__(self, record: list[float]) -> None:
        super().__init__()
        self.record = record

    def append(self, x: float) -> None:
        self.record.append(x)
        super().append(x)


async def _probe(stop: asyncio.Event, lags: list[float]) -> None:
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(PROBE_S)
        lags.append(time.perf_counter() - t - PROBE_S)


async def _probe_alone(seconds: float) -> tuple[float, float]:
    """CPU share and lag p99 of the probe by itself: the baseline of this machine."""
    stop = asyncio.Event()
    lags: list[float] = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    task = asyncio.create_task(_probe(stop, lags))
    await asyncio.sleep(seconds)
    stop.set()
    await task
    return (time.process_time() - cpu0) / (time.perf_counter() - wall0), _pct(lags, 0.99)


def _max_in_window(times: list[float], window: float) -> int:
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def _slope(times: list[float]) -> float:
    n = len(times)
    if n < 2:
        return float("nan")
    mean_t, mean_i = sum(times) / n, (n - 1) / 2
    var = sum((t - mean_t) ** 2 for t in times)
    cov = sum((t - mean_t) * (i - mean_i) for i, t in enumerate(times))
    return cov / var if var > 0 else float("nan")


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _measure(target: float, seconds: float, mode: str, probe_cpu: float) -> dict[str, Any]:
    if mode == "rpm":
        limits, need = PoolLimits(rpm=target * 60), 0
    else:  # an output-token bucket as the binding limit: 100 tokens a call
        limits, need = PoolLimits(otpm=target * 60 * 100), 100
    pool = PoolLimiter(f"bench-{mode}-{target:g}", limits, burst_s=0.1)
    throttle_log: list[float] = []
    if pool._throttler is not None:  # record the throttle's own grant stamps: the authoritative times
        pool._throttler._task_logs = _RecordingDeque(throttle_log)
    grants: list[float] = []
    stop = asyncio.Event()
    lags: list[float] = []

    async def waiter() -> None:
        while not stop.is_set():
            # The admission time on the limiter's own clock: our stamp plus the wait it reports
            # (the time this task resumes can be a few ms later, and would blur the windows).
            before = time.monotonic()
            grants.append(before + await pool.acquire(0, need))
            await asyncio.sleep(0)

    cpu0, wall0 = time.process_time(), time.monotonic()
    probe = asyncio.create_task(_probe(stop, lags))
    tasks = [asyncio.create_task(waiter()) for _ in range(WAITERS)]
    await asyncio.sleep(seconds)
    stop.set()
    wall = time.monotonic() - wall0
    cpu = time.process_time() - cpu0
    pool.close()
    await asyncio.gather(*tasks, return_exceptions=True)
    await probe
    grants = sorted(g for g in grants if g <= wall0 + wall)
    # Steady rate: least-squares slope of the admission count over time, after the first `WARMUP_S`
    # (a token bucket starts full). Batches are steps, and a staircase's slope is its rate.
    steady = [g for g in grants if g >= grants[0] + WARMUP_S] if grants else []
    achieved = _slope(steady)
    return {
        "mode": mode,
        "target_per_s": target,
        "seconds": round(wall, 2),
        "admitted": len(grants),
        "achieved_per_s": achieved,
        # On the throttle's stamps when there is one; ours may be late by a preemption of the process.
        "max_in_1s": _max_in_window(sorted(throttle_log) if throttle_log else grants, 1.0),
        "cpu_pct": round(100 * max(0.0, cpu / wall - probe_cpu), 2),
        "cpu_raw_pct": round(100 * cpu / wall, 2),
        "loop_lag_p99_ms": round(1000 * _pct(lags, 0.99), 3),
        "dispatcher_wakeups_per_s": round(pool.wakeups / wall, 1),
    }


async def _run(quick: bool, print_fn: Callable[..., Any]) -> dict[str, Any]:
    seconds = 3.0 if quick else 10.0
    probe_cpu, idle_lag = await _probe_alone(0.5 if quick else 1.0)
    plan = [("rpm", 5.0), ("rpm", 50.0), ("rpm", 500.0), ("otpm", 500.0)]
    results = []
    print_fn(
        f"limiter pacing: {WAITERS} waiters, {seconds:g} s per rate; idle loop lag p99 "
        f"{1000 * idle_lag:.3f} ms, probe CPU {100 * probe_cpu:.2f} % (subtracted)"
    )
    print_fn(
        f"{'limit':>6} {'target/s':>9} {'achieved/s':>11} {'err %':>7} {'max in 1 s':>11} "
        f"{'CPU %':>7} {'raw CPU %':>10} {'lag p99 ms':>11} {'wakeups/s':>10}"
    )
    for mode, target in plan:
        r = await _measure(target, seconds if mode == "rpm" else seconds / 2, mode, probe_cpu)
        err = 100 * (r["achieved_per_s"] / target - 1)
        r["achieved_error_pct"] = round(err, 3)
        results.append(r)
        print_fn(
            f"{mode:>6} {target:>9g} {r['achieved_per_s']:>11.2f} {err:>+7.2f} {r['max_in_1s']:>11d} "
            f"{r['cpu_pct']:>7.2f} {r['cpu_raw_pct']:>10.2f} {r['loop_lag_p99_ms']:>11.3f} "
            f"{r['dispatcher_wakeups_per_s']:>10.1f}"
        )
    print_fn("targets: achieved within 1 %, max in 1 s ≤ target, limiter CPU < 2 % of a core at 500/s")
    return {
        "waiters": WAITERS,
        "seconds_per_rate": seconds,
        "probe_cpu_pct": round(100 * probe_cpu, 3),
        "idle_loop_lag_p99_ms": round(1000 * idle_lag, 3),
        "results": results,
    }


def run(print_fn: Callable[..., Any] = print, quick: bool = False) -> dict[str, Any]:
    """Measure the limiter at 5, 50 and 500 admissions/s; returns the figures (≈37 s, quick ≈11 s)."""
    return loops.run(_run(quick, print_fn))


if __name__ == "__main__":
    run(quick="--quick" in sys.argv[1:])
