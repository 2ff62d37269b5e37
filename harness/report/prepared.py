"""The calls of one run, collected once and cut per model for the report's statistics.

Its job is projection and partitioning: read only the columns the report uses, add
the PostHog `distinct_id` and `response_time_in_ms`, and hold per-model sorted arrays
so no statistic re-reads the frame. It computes no statistic itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

__all__ = ["METRICS", "Prepared", "distinct_id_expr", "prepare"]

# (prefix in the report, column in calls.parquet)
METRICS: tuple[tuple[str, str], ...] = (
    ("latency", "latency_s"),
    ("ttft", "ttft_s"),
    ("sched_latency", "latency_from_schedule_s"),
    ("limiter_wait", "limiter_wait_s"),
)

_USED = [
    "run_id",
    "call_id",
    "case_id",
    "user_id",
    "model",
    "status",
    "error_kind",
    "started_at",
    "finished_at",
    "limiter_wait_s",
    "ttft_s",
    "latency_s",
    "latency_from_schedule_s",
    "output_tokens_per_s",
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "input_cost_usd",
    "cache_cost_usd",
    "total_cost_usd",
    "passed",
]


_NUMERIC = [c for _, c in METRICS] + ["total_cost_usd", "output_tokens_per_s"]


def distinct_id_expr() -> pl.Expr:
    """PostHog's person for a call: the dataset's user, else one anonymous id per run."""
    return pl.coalesce(pl.col("user_id"), pl.lit("run:") + pl.col("run_id").fill_null("")).alias(
        "distinct_id"
    )


@dataclass
class Prepared:
    """One run's rows plus per-model views; `models` keeps the manifest's order when known."""

    calls: pl.DataFrame
    models: list[str]
    ok: dict[str, pl.DataFrame] = field(default_factory=dict)
    _sorted: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    _outcomes: dict[str, pl.DataFrame] | None = None

    def outcomes(self, model: str, column: str) -> np.ndarray:
        """0/1 per call: `passed` (calls with a check) or `is_error` (ok + error calls); one partition, cached."""
        if self._outcomes is None:
            frame = self.calls.select(
                "model",
                pl.col("passed").cast(pl.Float64),
                pl.when(pl.col("status").is_in(["ok", "error"]))
                .then((pl.col("status") == "error").cast(pl.Float64))
                .alias("is_error"),
            )
            self._outcomes = {
                str(k[0]): v for k, v in frame.partition_by("model", as_dict=True).items() if k[0] is not None
            }
        got = self._outcomes.get(model)
        if got is None:
            return np.empty(0)
        return got.get_column(column).drop_nulls().to_numpy().astype(np.float64)

    def values(self, model: str, column: str) -> np.ndarray:
        """Sorted non-null values of a numeric `column` over the model's successful calls (cached)."""
        key = (model, column)
        if key not in self._sorted:
            frame = self.ok.get(model)
            if frame is None or frame.height == 0:
                arr = np.empty(0)
            else:
                arr = frame.get_column(column).drop_nulls().drop_nans().to_numpy().astype(np.float64)
                arr.sort()
            self._sorted[key] = arr
        return self._sorted[key]


def prepare(lazy: pl.LazyFrame, manifest: dict[str, Any] | None = None) -> Prepared:
    """Collect the used columns once and split them by model."""
    calls = lazy.select(_USED).with_columns(distinct_id_expr()).collect()
    seen = calls.get_column("model").drop_nulls().unique(maintain_order=True).to_list()
    order = [m for m in _manifest_models(manifest or {}) if m in seen]
    models = order + sorted(m for m in seen if m not in order)
    prepared = Prepared(calls=calls, models=models)
    numeric = calls.filter(pl.col("status") == "ok").select("model", *_NUMERIC)
    for key, frame in numeric.partition_by("model", as_dict=True, maintain_order=True).items():
        if key[0] is not None:
            prepared.ok[str(key[0])] = frame
    return prepared


def _manifest_models(manifest: dict[str, Any]) -> list[str]:
    models = manifest.get("models")
    names: list[str] = []
    if isinstance(models, list):
        for item in models:
            if isinstance(item, str):
                names.append(item)
            elif isinstance(item, dict) and isinstance(item.get("name") or item.get("model"), str):
                names.append(item.get("name") or item["model"])
    elif isinstance(models, dict):
        names = [str(k) for k in models]
    return names
