"""What a person sees while a run goes: a live bar on a terminal, plain periodic lines elsewhere.

`ProgressSink` is a `Sink`: it counts records as they finish and keeps a bounded
window of recent latencies for the running p50/p95. It never touches a record's
numbers and never prints a secret (records hold none). In batch mode the engine also
reports each batch's status and request counts (`batch`): a bar per batch under the
calls bar, or a plain line whenever a batch's status changes.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from harness.quantiles import quantile
from harness.records import CallRecord

__all__ = ["ProgressSink"]


class ProgressSink:
    """Counts finished calls and renders progress; `mode` is bar, plain or off."""

    def __init__(self, planned: int, *, mode: str = "auto", console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "plain"
        self.mode = mode
        self.planned = planned
        self.done = 0
        self.errors = 0
        self.spent = 0.0
        self.recent: deque[float] = deque(maxlen=2000)
        self.started = time.monotonic()
        self._last_line = self.started
        self._progress: Progress | None = None
        self._task: Any = None
        self._batches: dict[str, tuple[Any, str]] = {}  # key → (bar task, last status line)
        if mode == "bar":
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
                refresh_per_second=4,
            )
            self._task = self._progress.add_task("calls", total=planned, stats="")
            self._progress.start()

    def _stats(self) -> str:
        elapsed = max(1e-9, time.monotonic() - self.started)
        p50 = quantile(self.recent, 0.5)
        p95 = quantile(self.recent, 0.95)
        lat = f"p50 {p50:.2f}s p95 {p95:.2f}s" if p50 is not None and p95 is not None else "p50 – p95 –"
        return f"{self.done / elapsed:.1f}/s  errors {self.errors}  {lat}  ${self.spent:.4f}"

    def write(self, record: CallRecord) -> None:
        self.done += 1
        self.spent += record.total_cost_usd
        if record.status != "ok":
            self.errors += 1
        elif record.latency_s is not None:
            self.recent.append(record.latency_s)
        if self._progress is not None:
            now = time.monotonic()
            if now - self._last_line >= 0.25:  # percentiles sort a window: not on every record
                self._last_line = now
                self._progress.update(self._task, completed=self.done, stats=self._stats())
        elif self.mode == "plain":
            now = time.monotonic()
            if now - self._last_line >= 5.0:
                self._last_line = now
                self.console.print(
                    f"progress: {self.done}/{self.planned} calls  {self._stats()}", highlight=False
                )

    def batch(
        self, key: str, batch_id: str | None, status: str, counts: Mapping[str, int], requests: int
    ) -> None:
        """A batch's state as last polled: `counts` are the API's request counts."""
        done = requests - int(counts.get("processing", 0)) if status == "ended" else 0
        shown = ", ".join(f"{k} {v:,}" for k, v in counts.items() if v)
        line = f"{status}  {shown}" if shown else status
        task, last = self._batches.get(key, (None, ""))
        if self._progress is not None:
            if task is None:
                task = self._progress.add_task(f"batch {key}", total=max(1, requests), stats=line)
            self._progress.update(task, completed=done, stats=f"{line}  {batch_id or ''}")
        elif self.mode == "plain" and line != last:
            self.console.print(f"batch {key} {batch_id or '(not created)'}: {line}", highlight=False)
        self._batches[key] = (task, line)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=self.done, stats=self._stats())
            self._progress.stop()
        elif self.mode == "plain":
            self.console.print(
                f"progress: {self.done}/{self.planned} calls  {self._stats()}", highlight=False
            )
