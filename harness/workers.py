"""Worker processes: one event loop each, a share of the plan each, the records merged into this process's sinks.

Why: one event loop saturates near one core, and a saturated loop reads first tokens
late (issue #6, target 3). Above a load threshold a run spreads its calls over worker
processes (`python -m harness.workerproc`); the parent keeps the sinks (store, PostHog,
progress), so a run's results are one journal and one `calls.parquet` as before.

How a run is split (documented in the README): call i goes to worker i mod n, each with
the same open-loop time zero (`perf_counter_ns` is the system's monotonic clock, shared
by processes), 1/n of the concurrency, of `--max-in-flight`, of every rate limit and of
`--max-cost`; `--duration` applies to each. A worker that meets a stop (401/403, budget)
tells the parent, which stops the others.

Wire (both directions): frames of a 4-byte big-endian length and a pickle.
parent → worker: `WorkerJob`, then ("go", start_ns) and possibly ("stop", now: bool).
worker → parent: ("ready",), ("record", CallRecord)…, ("stop", reason), ("outcome", RunOutcome).
The API key travels in the job frame, never in the environment or a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import pickle
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from harness import procs
from harness.errors import HarnessError, TargetError
from harness.limiter import PoolLimits
from harness.records import CallRecord, PlannedCall
from harness.runner import RunnerSettings, RunOutcome, Sink, StopReason, deliver

__all__ = [
    "CALLS_PER_S_PER_WORKER",
    "STREAMS_PER_WORKER",
    "WorkerJob",
    "WorkerPool",
    "auto_workers",
    "merge_guards",
    "read_frame",
    "split_job",
    "write_frame",
]

# One process holds these with its loop lag p99 under ~5 ms on a 2-core machine (make perf, T3 and T0d).
STREAMS_PER_WORKER = 200
CALLS_PER_S_PER_WORKER = 150.0
_HEADER = struct.Struct(">I")


def auto_workers(
    *, concurrency: int, rate: float | None, max_in_flight: int | None, local_simulator: bool
) -> int:
    """How many processes a run needs: 1 up to the per-process threshold, then one per threshold's worth.

    Capped by the CPUs this process may use, less one when the target runs on the same machine
    (the simulator, or any loopback URL).
    """
    if rate is not None:
        need = rate / CALLS_PER_S_PER_WORKER
        if max_in_flight:
            need = min(need, max_in_flight / STREAMS_PER_WORKER * 2)
    else:
        need = concurrency / STREAMS_PER_WORKER
    if need <= 1.0:
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(math.ceil(need), cpus - (1 if local_simulator else 0), 16))


@dataclass
class WorkerJob:
    """Everything a worker needs to run its share; pickled to it over its stdin."""

    index: int
    settings: RunnerSettings
    plan: list[PlannedCall]
    pools: dict[str, PoolLimits]
    model_pool: dict[str, str]
    prices: Any  # PriceTable
    client: dict[str, Any]  # ClaudeClient keyword arguments (holds the API key)
    warm: int
    event_loop: str


def _share(value: float | None, n: int) -> float | None:
    return None if value is None else value / n


def _split_int(total: int, n: int, k: int) -> int:
    return total // n + (1 if k < total % n else 0)


def split_job(
    n: int,
    settings: RunnerSettings,
    plan: Sequence[PlannedCall],
    pools: dict[str, PoolLimits],
    **common: Any,
) -> list[WorkerJob]:
    """n jobs: call i to worker i mod n; concurrency, caps, limits and budget divided by n."""
    jobs = []
    for k in range(n):
        shared = replace(
            settings,
            concurrency=max(1, _split_int(settings.concurrency, n, k)),
            max_in_flight=max(1, _split_int(settings.max_in_flight, n, k))
            if settings.max_in_flight
            else None,
            rate=_share(settings.rate, n),
            max_cost_usd=_share(settings.max_cost_usd, n),
            seed=settings.seed * 1000 + k,
        )
        limits = {
            key: PoolLimits(rpm=_share(p.rpm, n), itpm=_share(p.itpm, n), otpm=_share(p.otpm, n))
            for key, p in pools.items()
        }
        jobs.append(WorkerJob(index=k, settings=shared, plan=list(plan[k::n]), pools=limits, **common))
    return jobs


def merge_guards(guards: list[dict[str, Any]]) -> dict[str, Any]:
    """The workers' timing guards as one: streams summed, CPU per call over all their calls."""
    if not guards:
        return {}
    calls = sum(g.get("calls") or 0 for g in guards)
    cpu = sum(g.get("loop_cpu_s") or 0.0 for g in guards)
    capacities = [g.get("capacity_streams") for g in guards]
    return {
        "enabled": any(g.get("enabled") for g in guards),
        "asked": sum(g.get("asked") or 0 for g in guards),
        "final": sum(g.get("final") or 0 for g in guards),
        "lowest": sum(g.get("lowest") or 0 for g in guards),
        "changed": any(g.get("changed") for g in guards),
        "changes": [dict(c, worker=k) for k, g in enumerate(guards) for c in g.get("changes", [])][:50],
        "calls": calls,
        "deltas": sum(g.get("deltas") or 0 for g in guards),
        "loop_cpu_s": round(cpu, 4),
        "cpu_per_call_ms": round(1000 * cpu / calls, 4) if calls else None,
        # Each worker's own estimate, summed over the workers that made one.
        "capacity_streams": sum(c for c in capacities if c is not None) if any(capacities) else None,
        "workers": len(guards),
    }


def write_frame(fd: int, obj: Any) -> None:
    """Blocking write of one frame to a raw file descriptor (the worker's stdout)."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def frame(obj: Any) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


async def read_frame(reader: asyncio.StreamReader) -> Any:
    """The next frame, or None at end of stream (the other side is gone)."""
    try:
        header = await reader.readexactly(_HEADER.size)
        return pickle.loads(await reader.readexactly(_HEADER.unpack(header)[0]))
    except asyncio.IncompleteReadError:
        return None


class WorkerPool:
    """The `Engine` over `n` worker processes; every record they send goes to `sinks`, in arrival order.

    `job` holds what every worker gets besides its share of the plan and of the limits
    (see `WorkerJob`: pools, model_pool, prices, client, warm, event_loop).
    """

    def __init__(
        self,
        n: int,
        settings: RunnerSettings,
        sinks: Sequence[Sink],
        *,
        pools: dict[str, PoolLimits],
        **job: Any,
    ) -> None:
        self.n = n
        self.settings = settings
        self.pools = pools
        self.sinks = list(sinks)
        self._job = job
        self.jobs: list[WorkerJob] = []
        self.outcome = RunOutcome()
        self._procs: list[asyncio.subprocess.Process] = []
        self._stopping = False
        self._sink_failed = False

    async def run(self, plan: Sequence[PlannedCall], ready_timeout_s: float = 60.0) -> RunOutcome:
        self.jobs = split_job(self.n, self.settings, plan, self.pools, **self._job)
        self.outcome.planned = len(plan)
        try:
            for job in self.jobs:
                # Own session: Ctrl-C reaches the parent, which tells the workers; killed with the parent.
                proc = await procs.start_async(
                    "harness.workerproc",
                    [job.event_loop],
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    limit=2**20,
                )
                assert proc.stdin is not None
                proc.stdin.write(frame(job))
                self._procs.append(proc)
            await asyncio.wait_for(
                asyncio.gather(*(self._await_ready(p) for p in self._procs)), ready_timeout_s
            )
            start_ns = time.perf_counter_ns() + 20_000_000  # a shared time zero, just ahead of every worker
            for proc in self._procs:
                self._send(proc, ("go", start_ns))
            outcomes = await asyncio.gather(*(self._collect(p) for p in self._procs))
        except TimeoutError:
            raise HarnessError(f"worker processes did not start within {ready_timeout_s:g} s") from None
        finally:
            for proc in self._procs:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
        self._merge([o for o in outcomes if o is not None])
        return self.outcome

    def request_stop(self, reason: StopReason, *, now: bool = False) -> None:
        """Stop scheduling in every worker; `now` skips the grace period (a second Ctrl-C)."""
        if self.outcome.stopped_by is None:
            self.outcome.stopped_by = reason
        self._stopping = True
        for proc in self._procs:
            self._send(proc, ("stop", now))

    def _send(self, proc: asyncio.subprocess.Process, message: Any) -> None:
        if proc.stdin is not None and not proc.stdin.is_closing() and proc.returncode is None:
            proc.stdin.write(frame(message))

    async def _await_ready(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        message = await read_frame(proc.stdout)
        if message != ("ready",):
            raise HarnessError(
                f"a worker process failed to start (exit {await proc.wait()}); see its stderr above"
            )

    async def _collect(self, proc: asyncio.subprocess.Process) -> RunOutcome | None:
        assert proc.stdout is not None
        while True:
            message = await read_frame(proc.stdout)
            if message is None:
                await proc.wait()
                if self.outcome.error is None and not self._stopping:
                    self.outcome.error = HarnessError(f"a worker process died (exit {proc.returncode})")
                    self.request_stop("abort")
                return None
            kind = message[0]
            if kind == "record":
                self._take(message[1])
            elif kind == "stop":
                if not self._stopping:
                    self.request_stop(message[1])
            elif kind == "outcome":
                await proc.wait()
                return message[1]  # type: ignore[no-any-return]

    def _take(self, record: CallRecord) -> None:
        if self._sink_failed:
            return  # as in one process: after a storage failure no later record is written
        self.outcome.count(record)
        problem = deliver(self.sinks, record)
        if problem is not None:
            self._sink_failed = True
            self.outcome.error = problem
            self.outcome.stopped_by = "storage"
            self.request_stop("storage", now=True)

    def _merge(self, outcomes: list[RunOutcome]) -> None:
        """Counts come from the records received; stop reasons, errors and timing health from the workers."""
        out = self.outcome
        for k, o in enumerate(outcomes):
            out.workers.append(
                {
                    "worker": k,
                    "planned": o.planned,
                    "cpu_s": o.cpu_s,
                    "wall_s": o.wall_s,
                    "loop_lag": o.loop_lag,
                    "release_lateness": o.release_lateness,
                    "guard": o.guard,
                }
            )
            out.late_admissions += o.late_admissions
            out.released += o.released
            if out.stopped_by is None and o.stopped_by is not None:
                out.stopped_by = o.stopped_by
            if out.error is None and o.error is not None:
                out.error = o.error
            out.saturated = out.saturated or o.saturated
        worst = max(outcomes, key=lambda o: o.loop_lag.get("p99_ms", 0.0), default=None)
        late = max(outcomes, key=lambda o: o.release_lateness.get("p99_ms", 0.0), default=None)
        out.loop_lag = dict(worst.loop_lag) if worst else {}
        out.release_lateness = dict(late.release_lateness) if late else {}
        out.not_started = out.planned - out.finished - out.cancelled
        out.cpu_s = round(sum(o.cpu_s or 0.0 for o in outcomes), 4)
        out.wall_s = max((o.wall_s or 0.0 for o in outcomes), default=None)
        out.guard = merge_guards([o.guard for o in outcomes if o.guard])
        if isinstance(out.error, TargetError) and out.stopped_by not in ("abort", "storage"):
            out.stopped_by = "abort"
