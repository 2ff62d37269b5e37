"""The three insights of PostHog's Claude tutorial, from `calls.parquet` and from captured events.

Total cost per model (sum of `total_cost_in_dollars` by `model`), average cost per user
(formula A/B: total cost / distinct `distinct_id`s), and average response time per
model (mean of `response_time_in_ms`, over events that carry it). Both functions return
the same shape so a test can compare them exactly. Must not send anything.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import polars as pl

from harness.report.prepared import distinct_id_expr

__all__ = ["posthog_insights_from_calls", "posthog_insights_from_events"]


def _insights(frame: pl.DataFrame) -> dict[str, Any]:
    """frame columns: model, distinct_id, total_cost_in_dollars, response_time_in_ms (nullable)."""
    per_model = (
        frame.lazy()
        .group_by("model")
        .agg(
            pl.col("total_cost_in_dollars").sum().alias("cost"),
            pl.col("response_time_in_ms").mean().alias("rt"),
            pl.col("distinct_id").n_unique().alias("users"),
            pl.len().alias("events"),
        )
        .sort("model")
        .collect()
    )
    total = float(frame.get_column("total_cost_in_dollars").sum() or 0.0) if frame.height else 0.0
    users = int(frame.get_column("distinct_id").n_unique()) if frame.height else 0
    return {
        "total_cost_per_model": {
            r["model"]: float(r["cost"] or 0.0) for r in per_model.iter_rows(named=True)
        },
        "avg_cost_per_user": total / users if users else None,
        "total_cost": total,
        "distinct_users": users,
        "avg_response_time_ms_per_model": {
            r["model"]: (None if r["rt"] is None else float(r["rt"])) for r in per_model.iter_rows(named=True)
        },
        "events_per_model": {r["model"]: int(r["events"]) for r in per_model.iter_rows(named=True)},
    }


def posthog_insights_from_calls(df: pl.DataFrame | pl.LazyFrame) -> dict[str, Any]:
    """The insights as PostHog would compute them from one event per call row."""
    lazy = df.lazy() if isinstance(df, pl.DataFrame) else df
    frame = (
        lazy.filter(pl.col("status") != "cancelled")
        .select(  # cancelled calls send no event
            pl.col("model"),
            distinct_id_expr(),
            pl.col("total_cost_usd").alias("total_cost_in_dollars"),
            (pl.col("latency_s") * 1000.0).alias("response_time_in_ms"),
        )
        .collect()
    )
    return _insights(frame)


def posthog_insights_from_events(
    events: Iterable[dict[str, Any]], *, event_name: str | None = None
) -> dict[str, Any]:
    """The insights from captured events (deduplicated by uuid, as PostHog does)."""
    seen: set[str] = set()
    rows: list[dict[str, Any]] = []
    for event in events:  # events arrive as JSON dicts; one pass to project them
        if event_name is not None and event.get("event") != event_name:
            continue
        props = event.get("properties") or {}
        if "model" not in props:
            continue
        key = event.get("uuid") or props.get("call_id")
        if key is not None:
            if key in seen:
                continue
            seen.add(str(key))
        rt = props.get("response_time_in_ms")
        rows.append(
            {
                "model": props.get("model"),
                "distinct_id": None if event.get("distinct_id") is None else str(event["distinct_id"]),
                "total_cost_in_dollars": float(props.get("total_cost_in_dollars") or 0.0),
                "response_time_in_ms": None if rt is None else float(rt),
            }
        )
    schema = {
        "model": pl.String(),
        "distinct_id": pl.String(),
        "total_cost_in_dollars": pl.Float64(),
        "response_time_in_ms": pl.Float64(),
    }
    return _insights(pl.DataFrame(rows, schema=schema))
