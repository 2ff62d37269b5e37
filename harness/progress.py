"""What a person sees while a run goes: a live bar on a terminal, plain periodic lines elsewhere, a table at the end.

`ProgressSink` is a `Sink`: it counts records as they finish and keeps a bounded
window of recent latencies for the running p50/p95. It never touches a record's
numbers and never prints a secret (records hold none).
"""

from __future__ import annotations

import sys
import time
from collections import deque
from typing import Any

import polars as pl
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from harness.records import CallRecord

__all__ = ["ProgressSink", "model_table", "print_model_table"]


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


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
        if mode == "bar":
            self._progress = Progress(
                TextColumn("[bold]calls"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
                refresh_per_second=4,
            )
            self._task = self._progress.add_task("run", total=planned, stats="")
            self._progress.start()

    def _stats(self) -> str:
        elapsed = max(1e-9, time.monotonic() - self.started)
        p50 = _pct(list(self.recent), 0.5)
        p95 = _pct(list(self.recent), 0.95)
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

    def close(self) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=self.done, stats=self._stats())
            self._progress.stop()
        elif self.mode == "plain":
            self.console.print(
                f"progress: {self.done}/{self.planned} calls  {self._stats()}", highlight=False
            )


def model_table(calls: pl.DataFrame) -> pl.DataFrame:
    """Per model: calls, errors, p50/p95 TTFT and latency, output tokens/s, total cost, cost per 1,000 calls."""
    ok = pl.col("status") == "ok"
    done = calls.filter(pl.col("status") != "cancelled")
    return (
        done.group_by("model")
        .agg(
            pl.len().alias("calls"),
            (~ok).sum().alias("errors"),
            pl.col("ttft_s").filter(ok).quantile(0.5, "linear").alias("ttft_p50_s"),
            pl.col("ttft_s").filter(ok).quantile(0.95, "linear").alias("ttft_p95_s"),
            pl.col("latency_s").filter(ok).quantile(0.5, "linear").alias("latency_p50_s"),
            pl.col("latency_s").filter(ok).quantile(0.95, "linear").alias("latency_p95_s"),
            pl.col("output_tokens_per_s").filter(ok).quantile(0.5, "linear").alias("tokens_per_s_p50"),
            pl.col("total_cost_usd").sum().alias("total_cost_usd"),
        )
        .with_columns((pl.col("total_cost_usd") / pl.col("calls") * 1000).alias("cost_per_1k_calls_usd"))
        .sort("model")
    )


def print_model_table(calls: pl.DataFrame, console: Console) -> None:
    if not console.is_terminal:  # logs and CI: do not squeeze the table into 80 columns
        console = Console(file=console.file, width=170)
    table = Table(title="Per model")
    for name in (
        "model",
        "calls",
        "errors",
        "TTFT p50",
        "TTFT p95",
        "latency p50",
        "latency p95",
        "tok/s p50",
    ):
        table.add_column(name, justify="left" if name == "model" else "right")
    table.add_column("total $", justify="right")
    table.add_column("$ / 1k calls", justify="right")

    def sec(v: float | None) -> str:
        return "–" if v is None else f"{v:.3f}s"

    for row in model_table(calls).iter_rows(named=True):
        table.add_row(
            row["model"],
            str(row["calls"]),
            str(row["errors"]),
            sec(row["ttft_p50_s"]),
            sec(row["ttft_p95_s"]),
            sec(row["latency_p50_s"]),
            sec(row["latency_p95_s"]),
            "–" if row["tokens_per_s_p50"] is None else f"{row['tokens_per_s_p50']:.0f}",
            f"{row['total_cost_usd']:.4f}",
            f"{row['cost_per_1k_calls_usd']:.3f}",
        )
    console.print(table)
