"""The history's trend charts as PNG bytes: one chart per metric, one line per arm with its 95 % band.

Drawn from `history.parquet` rows of one series (one dataset, one target): x is each run's
start, y the arm's figure, the band its interval (`_lo`/`_hi` columns; no band where a night
had none), and tonight's point ringed in red when the drift rule flagged it. Must not
compute a statistic (it only plots what `summarize` and the drift rule produced).
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from matplotlib.figure import Figure

from harness.report.drift import DRIFT, DRIFT_METRICS, DriftMetric

__all__ = ["TREND_METRICS", "trend_charts"]


def _unit(column: str) -> tuple[str, float]:
    """The y-axis unit of a history column and the factor from its stored unit."""
    if column.endswith("_s"):
        return "ms", 1000.0
    if column.endswith("_usd"):
        return "USD", 1.0
    return "%", 100.0


# (metric, y-axis unit, factor from the stored unit): the drift rule's metrics, in its order.
TREND_METRICS: tuple[tuple[DriftMetric, str, float], ...] = tuple(
    (m, *_unit(m.column)) for m in DRIFT_METRICS
)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, pil_kwargs={"compress_level": 3})
    plt.close(fig)
    return buf.getvalue()


def _column(frame: pl.DataFrame, name: str, factor: float) -> np.ndarray:
    if name not in frame.columns:
        return np.full(frame.height, np.nan)
    return frame.get_column(name).cast(pl.Float64).fill_null(np.nan).to_numpy() * factor


def trend_charts(
    series: pl.DataFrame, verdicts: pl.DataFrame, title: str = ""
) -> list[tuple[str, str, bytes]]:
    """(file name, title, PNG) per metric with at least one value in `series`."""
    charts: list[tuple[str, str, bytes]] = []
    if series.height == 0:
        return charts
    flagged = {
        (r["arm"], r["metric"], r["run_id"]) for r in verdicts.iter_rows(named=True) if r["verdict"] == DRIFT
    }
    arms = series.get_column("arm").unique(maintain_order=True).to_list()
    for metric, unit, factor in TREND_METRICS:
        if (
            metric.column not in series.columns
            or series.get_column(metric.column).null_count() == series.height
        ):
            continue
        fig, ax = plt.subplots(figsize=(8, 3.6), layout="constrained")
        for i, arm in enumerate(arms):
            rows = series.filter(pl.col("arm") == arm).sort("run_start")
            x = rows.get_column("run_start").to_list()
            y = _column(rows, metric.column, factor)
            lo, hi = _column(rows, metric.lo, factor), _column(rows, metric.hi, factor)
            colour = f"C{i % 10}"
            ax.plot(x, y, marker="o", markersize=3, linewidth=1.5, color=colour, label=arm)
            ax.fill_between(x, lo, hi, color=colour, alpha=0.18, linewidth=0)
            ids = rows.get_column("run_id").to_list()
            for xi, yi, run_id in zip(x, y, ids, strict=True):
                if (arm, metric.column, run_id) in flagged:
                    ax.plot([xi], [yi], marker="o", markersize=11, markerfacecolor="none", color="red")
        name = f"{metric.label[0].upper()}{metric.label[1:]} per night"
        ax.set(title=f"{name}{' — ' + title if title else ''}", ylabel=unit)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="best")
        charts.append((f"trend_{metric.column}.png", name, _png(fig)))
    return charts
