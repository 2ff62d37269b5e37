"""The timing guard: keeps the streams a process admits within what its event loop can time.

A loop that always has work reads every delta late, and the marks carry that wait
(issue #16: at concurrency 256 one process's TTFT was 95 ms above the truth). No fixed
threshold fits every machine and stream shape, so the guard measures while the run goes.
Every 0.25 s it reads the loop thread's time on a CPU and time waiting for one
(`harness.health.thread_sched`; the loop's *demand* is their sum: a loop that waited for a
CPU had work too), and the calls finished since: their deltas, latencies and self-delays
(`harness.selfdelay`). From windows of at least 8 calls it keeps

- `cpu_per_call_ms`: loop-thread CPU per finished call (request, stream, record, sinks),
  and `cpu_per_delta_us` when the windows' mixes let a least-squares fit separate the
  fixed cost of a call from its cost per delta;
- the capacity: with calls of mean duration T (their latency less their own self-delay)
  each needing D seconds of the loop (CPU and waiting for it), N streams keep the loop
  busy N·D/T of the time, so it can time about `TARGET_UTILISATION`·T/D streams.

In a closed loop it acts on that. When the loop's demand passes 85 % of the window (or 70 %
with over 5 % of the window's calls delayed by more than 5 ms) it lowers the streams it
admits to the capacity, by at least a fifth; while the demand is under 60 % it raises them
again, by at most a quarter at a time, up to the asked concurrency. So the ramp stops
where the capacity is. Marks delayed while the loop's demand is low are not the load's
doing (a busy machine waking the process late, the hypervisor): no cap would help them.

An open loop keeps its schedule (changing it would change what is measured): the guard
only measures, and the run is `saturated` when it could not keep to it. Every change is
kept (`changes`) for the manifest and the report; `--no-timing-guard` keeps the asked
concurrency.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from harness.health import thread_sched

__all__ = ["TARGET_UTILISATION", "Gate", "TimingGuard"]

WINDOW_S = 0.25
TARGET_UTILISATION = 0.7  # share of the time the loop may be busy and still time its marks
_BUSY = 0.85
_ROOM = 0.6
_LATE_NS = 5_000_000
_LATE_SHARE = 0.05
_MIN_CALLS = 8  # calls since the last decision before the next one
_MAX_WINDOW_S = 2.0  # fewer calls than that in this long: only room to grow is looked at


class Gate:
    """How many closed-loop streams may run: stream k starts its next call only while k < allowed."""

    def __init__(self, allowed: int) -> None:
        self.allowed = allowed
        self.closed = False  # the plan ran out or the run stops: every waiter leaves
        self._opened = asyncio.Event()

    async def wait(self, k: int) -> None:
        while k >= self.allowed and not self.closed:
            await self._opened.wait()

    def set(self, allowed: int) -> None:
        grew = allowed > self.allowed
        self.allowed = allowed
        if grew:
            self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        opened, self._opened = self._opened, asyncio.Event()
        opened.set()


def _loop_times() -> tuple[float, float]:
    """(CPU s, waiting-for-a-CPU s) of the calling thread; the wait is 0 where the kernel does not say."""
    sched = thread_sched()
    if sched is None:
        return time.thread_time(), 0.0
    return sched[0] * 1e-9, sched[1] * 1e-9


class TimingGuard:
    """Measures the loop's cost per call and its capacity; in a closed loop, sets the `gate`."""

    def __init__(self, asked: int, *, closed_loop: bool, enabled: bool) -> None:
        self.asked = asked
        self.enabled = enabled and closed_loop
        self.gate: Gate | None = Gate(asked) if self.enabled else None
        self.changes: list[dict[str, Any]] = []
        self._handle: asyncio.TimerHandle | None = None
        self._t0 = 0.0
        self._start = self._last = (0.0, 0.0, 0.0)  # (wall, cpu, wait)
        # calls since the last decision
        self._calls = self._deltas = self._late = 0
        self._latency = 0.0
        # the whole run
        self.calls = self.deltas = self.late = 0
        self.cpu_s = self.wait_s = 0.0
        self.windows: list[tuple[int, int, float]] = []  # (calls, deltas, loop CPU s) per decision
        self.demand: list[float] = []  # per decision: the loop's (CPU + wait) share of the window
        self._cost: float | None = None  # smoothed loop demand per call (s)
        self._duration: float | None = None  # smoothed call duration less its self-delay (s)
        self.capacity: int | None = None

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._start = self._last = (self._t0, *_loop_times())
        self._handle = asyncio.get_running_loop().call_later(WINDOW_S, self._window)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self.gate is not None:
            self.gate.close()
        self.calls += self._calls
        self.deltas += self._deltas
        self.late += self._late
        self._calls = self._deltas = self._late = 0
        cpu, wait = _loop_times()
        self.cpu_s, self.wait_s = cpu - self._start[1], wait - self._start[2]

    def observe(self, output_tokens: int, latency_s: float | None, delay_s: float | None) -> None:
        """A finished call: its deltas, its latency and its largest self-delay (seconds)."""
        self._calls += 1
        self._deltas += output_tokens
        if latency_s is not None:
            self._latency += latency_s - (delay_s or 0.0)
        if delay_s is not None and delay_s * 1e9 > _LATE_NS:
            self._late += 1

    def _window(self) -> None:
        """Every 0.25 s; a decision once the calls since the last one are enough (or 2 s passed)."""
        now = time.perf_counter()
        wall = now - self._last[0]
        calls = self._calls
        if calls >= _MIN_CALLS or wall >= _MAX_WINDOW_S:
            cpu, wait = _loop_times()
            used, waited = cpu - self._last[1], wait - self._last[2]
            self._last = (now, cpu, wait)
            deltas, late, latency = self._deltas, self._late, self._latency
            self._calls = self._deltas = self._late = 0
            self._latency = 0.0
            self.calls += calls
            self.deltas += deltas
            self.late += late
            demand = min(1.0, (used + waited) / wall) if wall > 0 else 0.0
            self.demand.append(demand)
            if calls >= _MIN_CALLS:
                self.windows.append((calls, deltas, used))
                self._cost = _smooth(self._cost, (used + waited) / calls)
                self._duration = _smooth(self._duration, latency / calls)
                if self._cost > 0:
                    self.capacity = max(1, int(TARGET_UTILISATION * self._duration / self._cost))
            if self.gate is not None:
                self._steer(demand, late / calls if calls >= _MIN_CALLS else 0.0, now)
        self._handle = asyncio.get_running_loop().call_later(WINDOW_S, self._window)

    def _steer(self, demand: float, late_share: float, now: float) -> None:
        """Down to the capacity while the loop is busy timing its load; up again while it has room."""
        assert self.gate is not None
        allowed = self.gate.allowed
        if self.capacity is not None and (
            demand > _BUSY or (demand > TARGET_UTILISATION and late_share > _LATE_SHARE)
        ):
            target = max(1, min(self.capacity, allowed - max(1, allowed // 5)))
            why = f"loop busy {demand:.0%} of the time, {late_share:.0%} of calls over 5 ms of self-delay"
            self._change(target, why, now)
        elif demand < _ROOM and allowed < self.asked:
            grow = max(allowed + 1, allowed + allowed // 4)
            target = min(
                self.asked, grow if self.capacity is None else max(allowed + 1, min(grow, self.capacity))
            )
            self._change(target, f"room again: loop busy {demand:.0%} of the time", now)

    def _change(self, target: int, why: str, now: float) -> None:
        assert self.gate is not None
        was = self.gate.allowed
        if target == was:
            return
        self.gate.set(target)
        self.changes.append({"at_s": round(now - self._t0, 2), "allowed": target, "was": was, "why": why})

    def summary(self) -> dict[str, Any]:
        """For the run's outcome: what the guard measured and did."""
        per_call, per_delta = _split_cost(self.windows)
        wall = max(time.perf_counter() - self._t0, 1e-9)
        return {
            "enabled": self.enabled,
            "asked": self.asked,
            "final": self.gate.allowed if self.gate is not None else self.asked,
            "lowest": min([self.asked, *(c["allowed"] for c in self.changes)]),
            "changed": bool(self.changes),
            "changes": self.changes[:50],
            "calls": self.calls,
            "deltas": self.deltas,
            "loop_cpu_s": round(self.cpu_s, 4),
            "loop_wait_s": round(self.wait_s, 4),
            "loop_cpu_share": round(self.cpu_s / wall, 4),
            "loop_wait_share": round(self.wait_s / wall, 4),
            "cpu_per_call_ms": round(1000 * self.cpu_s / self.calls, 4) if self.calls else None,
            "fixed_cpu_per_call_ms": None if per_call is None else round(1000 * per_call, 4),
            "cpu_per_delta_us": None if per_delta is None else round(1e6 * per_delta, 3),
            "capacity_streams": self.capacity,
            "busy_p50": _median(self.demand),
            "busy_max": round(max(self.demand), 3) if self.demand else None,
        }


def _smooth(old: float | None, new: float) -> float:
    return new if old is None else 0.7 * old + 0.3 * new


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[len(ordered) // 2], 3)


def _split_cost(windows: list[tuple[int, int, float]]) -> tuple[float | None, float | None]:
    """Least squares cpu = a·calls + b·deltas over the windows: (a, b), or (None, None).

    Only when the windows' deltas per call vary enough to tell the two apart.
    """
    if len(windows) < 4:
        return None, None
    scc = sum(c * c for c, _, _ in windows)
    sdd = sum(d * d for _, d, _ in windows)
    scd = sum(c * d for c, d, _ in windows)
    scy = sum(c * y for c, _, y in windows)
    sdy = sum(d * y for _, d, y in windows)
    det = scc * sdd - scd * scd
    if det <= 1e-6 * scc * sdd:
        return None, None
    a = (scy * sdd - sdy * scd) / det
    b = (scc * sdy - scd * scy) / det
    if a < 0 or b < 0:
        return None, None
    return a, b
