"""Process and machine figures of a run's measurement health: CPU, waiting for a CPU, hypervisor steal.

The loop's own self-delay per mark is `harness.selfdelay`'s; what the report and the
end-of-run warning make of the calls is `harness.report.health`'s. This module only reads
the kernel's counters (Linux `/proc`; elsewhere the figures are None) and keeps a run's
before/after pair of them (`MachineSample`), so the composition root and the guard read
them one way.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["MachineSample", "cpu_ticks", "steal_share", "thread_sched"]

_SCHEDSTAT = Path("/proc/thread-self/schedstat")


def thread_sched() -> tuple[int, int] | None:
    """(ns on a CPU, ns runnable but waiting for one) of the calling thread, or None without /proc.

    The wait is the machine's doing: other processes (or the hypervisor) had the CPUs
    while this thread had work.
    """
    try:
        fields = _SCHEDSTAT.read_bytes().split()
        return int(fields[0]), int(fields[1])
    except (OSError, ValueError, IndexError):
        return None


def cpu_ticks() -> list[int]:
    """The machine's CPU time by state (/proc/stat's first line); empty where there is none."""
    try:
        return [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return []


def steal_share(before: list[int], after: list[int]) -> float | None:
    """Share of the machine's CPU time the hypervisor stole between two `cpu_ticks` (the 8th field)."""
    if len(before) < 8 or len(after) < 8:
        return None
    delta = [b - a for a, b in zip(before, after, strict=False)]
    total = sum(delta)
    return delta[7] / total if total > 0 else 0.0


@dataclass
class MachineSample:
    """Counters at one moment: wall, this process's CPU, the loop thread's CPU and wait, the machine's ticks."""

    wall: float
    cpu: float
    sched: tuple[int, int] | None
    ticks: list[int]

    @classmethod
    def now(cls) -> MachineSample:
        return cls(time.perf_counter(), time.process_time(), thread_sched(), cpu_ticks())

    def since(self, start: MachineSample) -> dict[str, Any]:
        """The figures between `start` and this sample (taken on the same thread)."""
        wall = max(self.wall - start.wall, 1e-9)
        out: dict[str, Any] = {
            "wall_s": round(wall, 4),
            "process_cpu_s": round(self.cpu - start.cpu, 4),
            "loop_cpu_share": None,
            "loop_wait_share": None,
            "steal_share": steal_share(start.ticks, self.ticks),
            "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        }
        if self.sched is not None and start.sched is not None:
            out["loop_cpu_share"] = round((self.sched[0] - start.sched[0]) * 1e-9 / wall, 4)
            out["loop_wait_share"] = round((self.sched[1] - start.sched[1]) * 1e-9 / wall, 4)
        if out["steal_share"] is not None:
            out["steal_share"] = round(out["steal_share"], 5)
        return out
