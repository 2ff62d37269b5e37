"""The calls of one run, collected once and cut per arm for the report's statistics.

Its job is projection and partitioning: read only the columns the report uses, add
the PostHog `distinct_id` and the call's `arm` (`records.arm_expr`: the model, or the
model and its variant), and hold per-arm sorted arrays so no statistic re-reads the
frame. Everything downstream (summary, comparison, charts, `compare`) groups by `arm`,
which is the model id when the run had no variants. It computes no statistic itself. A batch
run's rows have no latency of their own; `turnaround_s` (the batch's created → ended: the wait
for that answer) is derived here once and is a metric like the latencies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from harness.records import arm_expr, arm_of, arm_word

__all__ = ["ATTEMPTED", "METRICS", "Prepared", "distinct_id_expr", "prepare", "turnaround_expr"]

# (prefix in the report, column in calls.parquet)
METRICS: tuple[tuple[str, str], ...] = (
    ("latency", "latency_s"),
    ("ttft", "ttft_s"),
    ("first_text", "time_to_first_text_s"),
    ("sched_latency", "latency_from_schedule_s"),
    ("limiter_wait", "limiter_wait_s"),
    ("turnaround", "turnaround_s"),  # batch mode: created → ended of the call's batch
)

_USED = [
    "run_id",
    "call_id",
    "case_id",
    "user_id",
    "model",
    "variant",
    "status",
    "error_kind",
    "stop_reason",
    "repeat",
    "started_at",
    "finished_at",
    "limiter_wait_s",
    "ttft_s",
    "time_to_first_text_s",
    "latency_s",
    "latency_from_schedule_s",
    "output_tokens_per_s",
    "batch_id",
    "batch_created_at",
    "batch_ended_at",
    "client_delay_first_token_s",
    "client_delay_last_byte_s",
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "cache_eligible",
    "cache_hit",
    "cache_savings_usd",
    "input_cost_usd",
    "cache_cost_usd",
    "total_cost_usd",
    "passed",
    "score",
    "judge_cost_usd",
    "judge_error",
    "price_version",
]


_NUMERIC = [c for _, c in METRICS] + ["total_cost_usd", "output_tokens_per_s", "score"]
# The statuses of calls that reached an outcome: an error rate's denominator (expired: a batch's).
ATTEMPTED = ["ok", "error", "expired"]


def turnaround_expr() -> pl.Expr:
    """Seconds from the call's batch's creation to its end (null for a live call)."""
    return ((pl.col("batch_ended_at") - pl.col("batch_created_at")).dt.total_microseconds() / 1e6).alias(
        "turnaround_s"
    )


def distinct_id_expr() -> pl.Expr:
    """PostHog's person for a call: the dataset's user, else one anonymous id per run."""
    return pl.coalesce(pl.col("user_id"), pl.lit("run:") + pl.col("run_id").fill_null("")).alias(
        "distinct_id"
    )


@dataclass
class Prepared:
    """One run's rows plus per-arm views; `arms` follows the manifest's models × variants when known.

    `word` is how tables and sentences name an arm: "model" when no call had a variant.
    """

    calls: pl.DataFrame
    arms: list[str]
    word: str = "model"
    model_of: dict[str, str] = field(default_factory=dict)
    variant_of: dict[str, str | None] = field(default_factory=dict)
    ok: dict[str, pl.DataFrame] = field(default_factory=dict)
    _sorted: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    _outcomes: dict[str, pl.DataFrame] | None = None

    def outcomes(self, arm: str, column: str) -> np.ndarray:
        """0/1 per call: `passed` (calls with a check) or `is_error` (attempted calls); one partition, cached."""
        if self._outcomes is None:
            frame = self.calls.select(
                "arm",
                pl.col("passed").cast(pl.Float64),
                pl.when(pl.col("status").is_in(ATTEMPTED))
                .then((pl.col("status") == "error").cast(pl.Float64))
                .alias("is_error"),
            )
            self._outcomes = {
                str(k[0]): v for k, v in frame.partition_by("arm", as_dict=True).items() if k[0] is not None
            }
        got = self._outcomes.get(arm)
        if got is None:
            return np.empty(0)
        return got.get_column(column).drop_nulls().to_numpy().astype(np.float64)

    def graded(self, arm: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(cost, passed 0/1, score) of the arm's calls that had a verdict (failed calls included)."""
        frame = self.calls.filter((pl.col("arm") == arm) & pl.col("passed").is_not_null())
        return (
            frame.get_column("total_cost_usd").fill_null(0.0).to_numpy().astype(np.float64),
            frame.get_column("passed").cast(pl.Float64).to_numpy(),
            frame.get_column("score").drop_nulls().to_numpy().astype(np.float64),
        )

    def column(self, arm: str, column: str) -> np.ndarray:
        """Non-null values of a numeric `column` over all the arm's calls (failed ones too), unsorted."""
        frame = self.calls.filter((pl.col("arm") == arm) & pl.col(column).is_not_null())
        return frame.get_column(column).cast(pl.Float64).to_numpy()

    def values(self, arm: str, column: str) -> np.ndarray:
        """Sorted non-null values of a numeric `column` over the arm's successful calls (cached)."""
        key = (arm, column)
        if key not in self._sorted:
            frame = self.ok.get(arm)
            if frame is None or frame.height == 0:
                arr = np.empty(0)
            else:
                arr = frame.get_column(column).drop_nulls().drop_nans().to_numpy().astype(np.float64)
                arr.sort()
            self._sorted[key] = arr
        return self._sorted[key]


def prepare(lazy: pl.LazyFrame, manifest: dict[str, Any] | None = None) -> Prepared:
    """Collect the used columns once and split them by arm."""
    calls = lazy.select(_USED).with_columns(distinct_id_expr(), arm_expr(), turnaround_expr()).collect()
    kinds = calls.select("arm", "model", "variant").unique(maintain_order=True).drop_nulls("arm")
    model_of = dict(zip(kinds["arm"].to_list(), kinds["model"].to_list(), strict=True))
    variant_of = dict(zip(kinds["arm"].to_list(), kinds["variant"].to_list(), strict=True))
    manifest = manifest or {}
    variants: list[str | None] = [*_manifest_variants(manifest)] or [None]
    planned = [arm_of(m, v) for m in _manifest_models(manifest) for v in variants]
    order = [a for a in planned if a in model_of]
    arms = order + sorted(a for a in model_of if a not in order)
    prepared = Prepared(
        calls=calls,
        arms=arms,
        word=arm_word(variant_of.values()),
        model_of=model_of,
        variant_of=variant_of,
    )
    numeric = calls.filter(pl.col("status") == "ok").select("arm", *_NUMERIC)
    for key, frame in numeric.partition_by("arm", as_dict=True, maintain_order=True).items():
        if key[0] is not None:
            prepared.ok[str(key[0])] = frame
    return prepared


def _manifest_variants(manifest: dict[str, Any]) -> list[str]:
    variants = manifest.get("variants")
    return [str(name) for name in variants] if isinstance(variants, dict | list) else []


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
