"""The report's charts as PNG bytes (matplotlib, Agg backend), drawn from a bounded subsample.

Each function returns (file name, title, PNG bytes); the caller writes them beside report.md
and embeds them in report.html. One series per arm (titled "per model" when the run had
no variants). Must not compute the report's statistics (it only plots) or touch the network.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from harness.report.prepared import Prepared
from harness.report.recommend import quality_known

__all__ = ["CHART_POINTS", "render_charts"]

CHART_POINTS = 5_000  # per arm: enough for a smooth CDF, bounded at any run size
Chart = tuple[str, str, bytes]  # file name, title, PNG


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, pil_kwargs={"compress_level": 3})
    plt.close(fig)
    return buf.getvalue()


def _thin(values: np.ndarray) -> np.ndarray:
    """Evenly spaced order statistics of a sorted array: the CDF's shape, bounded size."""
    if len(values) <= CHART_POINTS:
        return values
    return values[np.linspace(0, len(values) - 1, CHART_POINTS).astype(np.int64)]


def _empty(ax: Axes, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} to plot", ha="center", va="center", transform=ax.transAxes)


def latency_cdf(prep: Prepared) -> Chart:
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    drawn = False
    for arm in prep.arms:
        v = _thin(prep.values(arm, "latency_s"))
        if len(v):
            ax.plot(v, np.linspace(0, 1, len(v)), label=arm, drawstyle="steps-post")
            drawn = True
    if drawn:
        ax.set_xscale("log")
        ax.legend()
    else:
        _empty(ax, "successful calls")
    title = f"Latency CDF per {prep.word}"
    ax.set(xlabel="latency (s, log scale)", ylabel="fraction of calls ≤ x", title=title)
    ax.grid(alpha=0.3)
    return "latency_cdf.png", title, _png(fig)


def ttft_distribution(prep: Prepared) -> Chart:
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    series = {a: _thin(prep.values(a, "ttft_s")) for a in prep.arms}
    series = {m: v for m, v in series.items() if len(v)}
    if series:
        hi = max(float(np.quantile(v, 0.99)) for v in series.values())
        lo = min(float(v[0]) for v in series.values())
        bins = np.linspace(lo, hi if hi > lo else lo + 1e-3, 60)
        for arm, v in series.items():
            ax.hist(v, bins=bins.tolist(), histtype="step", density=True, label=arm, linewidth=1.5)
        ax.legend()
    else:
        _empty(ax, "time-to-first-token measurements (streaming off?)")
    title = f"Time to first token per {prep.word}"
    ax.set(xlabel="TTFT (s), up to the p99", ylabel="density", title=title)
    ax.grid(alpha=0.3)
    return "ttft_distribution.png", title, _png(fig)


def cost_vs_p95(summary: pl.DataFrame, pareto: list[str]) -> Chart:
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    pts = summary.filter(
        pl.col("cost_per_1k_calls_usd").is_not_null() & pl.col("latency_p95_s").is_not_null()
    )
    if pts.height:
        for r in pts.iter_rows(named=True):  # one point per arm
            on = r["arm"] in pareto
            ax.scatter(
                r["latency_p95_s"],
                r["cost_per_1k_calls_usd"],
                s=90 if on else 50,
                marker="*" if on else "o",
                label=r["arm"] + (" (Pareto)" if on else ""),
            )
            ax.annotate(r["arm"], (r["latency_p95_s"], r["cost_per_1k_calls_usd"]), fontsize=8)
        front = pts.filter(pl.col("arm").is_in(pareto)).sort("latency_p95_s")
        if front.height > 1:
            ax.plot(
                front["latency_p95_s"], front["cost_per_1k_calls_usd"], "k--", alpha=0.5, label="Pareto front"
            )
        ax.legend(fontsize=8)
    else:
        _empty(ax, "successful calls")
    ax.set(xlabel="p95 latency (s)", ylabel="cost per 1,000 calls (USD)", title="Cost vs p95 latency")
    ax.grid(alpha=0.3)
    return "cost_vs_p95.png", "Cost per 1,000 calls vs p95 latency (Pareto set starred)", _png(fig)


def cost_vs_quality(summary: pl.DataFrame, pareto: list[str]) -> Chart:
    """Pass rate (with its Wilson interval) against cost per 1,000 calls; p95 latency in the labels."""
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    pts = summary.filter(pl.col("cost_per_1k_calls_usd").is_not_null() & pl.col("pass_rate").is_not_null())
    for r in pts.iter_rows(named=True):
        on = r["arm"] in pareto
        err = [[r["pass_rate"] - r["pass_rate_lo"]], [r["pass_rate_hi"] - r["pass_rate"]]]
        ax.errorbar(
            r["cost_per_1k_calls_usd"],
            r["pass_rate"],
            yerr=err,
            fmt="*" if on else "o",
            markersize=11 if on else 7,
            capsize=3,
            label=r["arm"] + (" (Pareto)" if on else ""),
        )
        p95 = f", p95 {r['latency_p95_s']:.2g} s" if r["latency_p95_s"] is not None else ""
        ax.annotate(f"{r['arm']}{p95}", (r["cost_per_1k_calls_usd"], r["pass_rate"]), fontsize=8)
    if pts.height:
        ax.legend(fontsize=8)
    else:
        _empty(ax, "graded calls")
    ax.set(xlabel="cost per 1,000 calls (USD)", ylabel="pass rate", title="Quality vs cost")
    ax.grid(alpha=0.3)
    return (
        "quality_vs_cost.png",
        "Pass rate (95 % Wilson) vs cost per 1,000 calls (Pareto set starred)",
        _png(fig),
    )


def latency_over_time(prep: Prepared) -> Chart:
    """p95 per time bin per arm: spikes show as peaks shared across arms (service) or not."""
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    ok = prep.calls.lazy().filter((pl.col("status") == "ok") & pl.col("started_at").is_not_null())
    span = ok.select(
        (pl.col("started_at").max() - pl.col("started_at").min()).dt.total_microseconds()
    ).collect()
    total_us = span.item() if span.height else None
    if total_us is not None and total_us >= 0:
        every = max(1, int(total_us // 60) or 1)
        binned = (
            ok.with_columns(pl.col("started_at").dt.truncate(f"{every}us").alias("bin"))
            .group_by("arm", "bin")
            .agg(pl.col("latency_s").quantile(0.95, interpolation="linear").alias("p95"))
            .sort("bin")
            .collect()
        )
        for arm in prep.arms:
            part = binned.filter(pl.col("arm") == arm)
            if part.height:
                ax.plot(part["bin"].to_list(), part["p95"].to_numpy(), marker=".", label=arm)
        ax.legend()
        fig.autofmt_xdate()
    else:
        _empty(ax, "timed calls")
    ax.set(xlabel="time (UTC)", ylabel="p95 latency per bin (s)", title="Latency over the run")
    ax.grid(alpha=0.3)
    return "latency_over_time.png", "Latency over the run's time (p95 per bin)", _png(fig)


def cost_per_user(summary: pl.DataFrame, word: str) -> Chart:
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    pts = summary.filter(pl.col("avg_cost_per_user_usd").is_not_null())
    if pts.height:
        ax.bar(pts["arm"].to_list(), pts["avg_cost_per_user_usd"].to_numpy(), color="tab:blue")
    else:
        _empty(ax, "costs")
    ax.set(ylabel="USD per distinct user", title="Average cost per user (total cost / distinct users)")
    ax.grid(alpha=0.3, axis="y")
    return "cost_per_user.png", f"Average cost per user per {word}", _png(fig)


def batch_turnaround(prep: Prepared) -> Chart:
    """A batch run's wait: each batch's created → ended, at its creation time, one colour per arm set."""
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    batches = (
        prep.calls.lazy()
        .filter(pl.col("batch_id").is_not_null() & pl.col("turnaround_s").is_not_null())
        .group_by("batch_id")
        .agg(
            pl.col("batch_created_at").min().alias("created"),
            pl.col("turnaround_s").max().alias("turnaround"),
            pl.len().alias("calls"),
        )
        .sort("created")
        .collect()
    )
    if batches.height:
        labels = [f"{i + 1}" for i in range(batches.height)]
        ax.bar(labels, batches["turnaround"].to_numpy(), color="tab:blue")
        for i, (t, n) in enumerate(zip(batches["turnaround"], batches["calls"], strict=True)):
            ax.annotate(f"{n:,} calls", (i, t), ha="center", va="bottom", fontsize=8)
    else:
        _empty(ax, "ended batches")
    title = "Turnaround per batch (created → ended), in order of creation"
    ax.set(xlabel="batch", ylabel="turnaround (s)", title=title)
    ax.grid(alpha=0.3, axis="y")
    return "batch_turnaround.png", title, _png(fig)


def render_charts(prep: Prepared, summary: pl.DataFrame, pareto: list[str]) -> list[Chart]:
    """All charts, in the order the report shows them (a batch run: its turnaround, not latency)."""
    batched = any(len(prep.values(a, "turnaround_s")) for a in prep.arms)
    if batched and not any(len(prep.values(a, "latency_s")) for a in prep.arms):
        batch_makers: list[Callable[[], Chart]] = [lambda: batch_turnaround(prep)]
        if quality_known(summary):
            batch_makers.append(lambda: cost_vs_quality(summary, pareto))
        batch_makers.append(lambda: cost_per_user(summary, prep.word))
        return [make() for make in batch_makers]
    makers: list[Callable[[], Chart]] = [
        lambda: latency_cdf(prep),
        lambda: ttft_distribution(prep),
        # The Pareto chart shows the trade-off the Pareto set was computed on.
        (lambda: cost_vs_quality(summary, pareto))
        if quality_known(summary)
        else (lambda: cost_vs_p95(summary, pareto)),
        lambda: latency_over_time(prep),
        lambda: cost_per_user(summary, prep.word),
    ]
    return [make() for make in makers]
