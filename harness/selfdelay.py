"""The harness's own delay at a time mark: how long the data behind a mark waited in this process.

A time mark (`perf_counter_ns` when the first content delta or the last byte is read) is
late by however long the event loop was busy elsewhere after the bytes became readable:
that delay is in `ttft_s` and `latency_s`, and a saturated loop makes it tens of
milliseconds (issue #16). The socket's readiness is not observable from Python, but the
loop's iterations are, and `LoopClock` watches them cheaply:

- **While the loop is busy** a callback re-queued with `call_soon` runs at the head of
  every iteration's batch of ready callbacks (uvloop and asyncio both run the callbacks
  queued during one batch first in the next), so it notes when each batch began (`B`) and
  how long the previous iteration took (`gap`). Data read in this batch became readable
  during the previous iteration, so a mark taken at `t` waited about
  `(t - B) + gap / 2`: the batch so far, plus half an iteration on average before it.
- **While it is not** (an iteration shorter than 0.5 ms) the callback re-arms a 1 ms timer
  instead, so an idle loop still sleeps; a mark then costs nothing unless the timer is
  overdue (`t` past its due time plus uvloop's 1 ms timer granularity): the loop has been
  in one batch at least that long, a lower bound of the mark's wait. A timer found late
  switches back to the per-iteration mode.

The estimate is a subtraction and a comparison per mark (`delay_ns`), no allocation; the
clock costs one callback per loop iteration when busy and ~1,000 short ones per second when
idle.

Measured accuracy (`python -m benchmarks.perf --only selfdelay`: 256 streams, no timing
guard, against the simulator's ground truth; runs on this 2-core machine under the other
sessions' load): against the harness's own side of the TTFT error (its first-token mark −
the moment the simulator handed the delta to its socket, on one clock) the per-call
estimate's median is 0.87–1.03 of the error's and correlates 0.84–0.97 with it; against the
whole TTFT error, which also holds the simulator's own lateness in reading the request
(~20–30 ms at that load, a delay any client would see), 0.59–0.84 and 0.77–0.97. The
alternative the issue suggested, the lag of the 10 ms `LoopLagMonitor` samples bracketing
the mark, correlates 0.40–0.87 with the same error and its median is off by up to 77 %:
one sample per 10 ms (and fewer on a saturated loop) misses most iterations. Under light
load the estimate is 0 while the real wait is ~0.1–1 ms (the loop finishing another call's
chunk): it is made for the thresholds that matter (5 and 20 ms).
"""

from __future__ import annotations

import asyncio
import time

__all__ = ["LoopClock", "current"]

_BUSY_GAP_NS = 500_000  # an iteration longer than this keeps the per-iteration mode
_INTERVAL_S = 0.001  # the idle timer
_SLACK_NS = 2_000_000  # the idle timer is overdue past interval + uvloop's 1 ms granularity

_active: list[LoopClock] = []


def current() -> LoopClock | None:
    """The clock of this process's running engine, if any (the client's marks read it)."""
    return _active[-1] if _active else None


class LoopClock:
    """Notes the event loop's iterations and estimates the self-delay of a mark (see the module)."""

    __slots__ = ("_busy", "_due", "_gap", "_handle", "_last", "_loop", "busy_ticks", "ticks")

    def __init__(self) -> None:
        self._last = 0  # when the last tick ran (the head of that batch, when busy)
        self._gap = 0  # the iteration before it (busy mode)
        self._due = 0  # idle mode: past this, the timer is overdue
        self._busy = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.Handle | None = None
        self.ticks = 0
        self.busy_ticks = 0

    def start(self) -> None:
        """Start ticking on the running loop; the client's marks use this clock until `stop`."""
        self._loop = asyncio.get_running_loop()
        self._last = time.perf_counter_ns()
        self._due = self._last + _SLACK_NS
        self._handle = self._loop.call_later(_INTERVAL_S, self._tick)
        _active.append(self)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self in _active:
            _active.remove(self)

    def _tick(self) -> None:
        now = time.perf_counter_ns()
        self.ticks += 1
        gap = now - self._last
        busy = gap > _BUSY_GAP_NS if self._busy else now > self._due
        self._gap = gap
        self._last = now
        self._busy = busy
        loop = self._loop
        assert loop is not None
        if busy:
            self.busy_ticks += 1
            self._handle = loop.call_soon(self._tick)
        else:
            self._due = now + _SLACK_NS
            self._handle = loop.call_later(_INTERVAL_S, self._tick)

    def delay_ns(self, t: int) -> int:
        """The estimated self-delay of a mark taken at `t` (perf_counter_ns, on this loop), >= 0."""
        if self._busy:
            return t - self._last + (self._gap >> 1)
        late = t - self._due
        return late if late > 0 else 0
