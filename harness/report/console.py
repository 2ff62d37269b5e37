"""The end-of-run table on the console, rendered from the report's summary (never recomputed here).

Why: the console and `report.md` once computed "$ / 1k calls" two ways; now both show
`summarize()`'s figures, so one name means one number everywhere. One row per arm, named
as the report names it (`arm`, which is the model id when the run had no variants).
"""

from __future__ import annotations

import polars as pl
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.records import arm_word

__all__ = ["print_summary_table"]

# (header, summary column, format)
_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("calls", "calls", "int"),
    ("errors", "errors", "int"),
    ("TTFT p50", "ttft_p50_s", "s"),
    ("1st text p50", "first_text_p50_s", "s"),
    ("1st text p95", "first_text_p95_s", "s"),
    ("latency p50", "latency_p50_s", "s"),
    ("latency p95", "latency_p95_s", "s"),
    ("tok/s p50", "output_tps_p50", "rate"),
    ("total $", "total_cost_usd", "usd4"),
    ("$ / 1k calls", "cost_per_1k_calls_usd", "usd3"),
    ("pass rate", "pass_rate", "share"),
    ("$ / pass", "cost_per_pass_usd", "usd6"),
)


# A batch run has no latency: the turnaround of the calls' batches, and its expired calls, instead.
_BATCH_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("calls", "calls", "int"),
    ("errors", "errors", "int"),
    ("expired", "expired", "int"),
    ("turnaround p50", "turnaround_p50_s", "s"),
    ("turnaround max", "turnaround_max_s", "s"),
    ("total $", "total_cost_usd", "usd4"),
    ("$ / 1k calls", "cost_per_1k_calls_usd", "usd3"),
    ("pass rate", "pass_rate", "share"),
    ("$ / pass", "cost_per_pass_usd", "usd6"),
)


def _cell(value: object, fmt: str) -> str:
    if value is None:
        return "–"
    v = float(value)  # type: ignore[arg-type]
    if fmt == "int":
        return str(int(v))
    if fmt == "s":
        return f"{v:.3f}s"
    if fmt == "rate":
        return f"{v:.0f}"
    if fmt == "share":
        return f"{v:.1%}"
    return f"{v:.{int(fmt.removeprefix('usd'))}f}"


def print_summary_table(summary: pl.DataFrame, console: Console) -> None:
    """One row per arm of `summary.parquet`'s figures."""
    if not console.is_terminal:  # logs and CI: do not squeeze the table into 80 columns
        console = Console(file=console.file, width=170)
    word = arm_word(summary.get_column("variant"))
    batch = "turnaround_n" in summary.columns and not int(summary["latency_n"].sum() or 0)
    batch = batch and int(summary["turnaround_n"].sum() or 0) > 0
    columns = _BATCH_COLUMNS if batch else _COLUMNS
    table = Table(title=f"Per {word}" + (" (batch run: turnaround, not latency)" if batch else ""))
    table.add_column(word, justify="left")
    for header, _, _ in columns:
        table.add_column(header, justify="right")
    for row in summary.iter_rows(named=True):
        # An arm's "[variant]" is text, not rich markup.
        table.add_row(escape(str(row["arm"])), *(_cell(row.get(col), fmt) for _, col, fmt in columns))
    console.print(table)
