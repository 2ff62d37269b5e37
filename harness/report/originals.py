"""Original vs replayed: production's own measurements of an imported dataset against the run's arms.

A dataset made by `harness import posthog` carries, per case, what production measured
(`metadata.posthog`: model, latency, time to first token, cost), kept as one row per case in
the run directory's `originals.parquet` (`posthog_import.originals_of`, when the run starts);
`original_vs_replayed` pairs it by case with each arm's successful calls (a case's repeats
averaged first) and gives per arm: the paired cases, production's model, latency and TTFT
percentiles on both sides, the median per-case latency ratio, and cost per 1,000 calls on
both sides with their ratio. Production calls that failed, and cases an arm never answered,
are left out of that arm's pairs. Pure: no I/O, no wording.
"""

from __future__ import annotations

import polars as pl

from harness.report.prepared import Prepared

__all__ = ["original_vs_replayed"]


def original_vs_replayed(prep: Prepared, originals: pl.DataFrame) -> pl.DataFrame:
    """Per arm (in the report's order): production vs replay, paired by case."""
    replay = (
        prep.calls.filter(pl.col("status") == "ok")
        .group_by("arm", "case_id")
        .agg(
            pl.col("latency_s").mean().alias("r_latency"),
            pl.col("ttft_s").mean().alias("r_ttft"),
            pl.col("total_cost_usd").mean().alias("r_cost"),
        )
    )
    orig = originals.filter(~pl.col("error") & pl.col("latency_s").is_not_null()).select(
        "case_id",
        pl.col("model").alias("o_model"),
        pl.col("latency_s").alias("o_latency"),
        pl.col("ttft_s").alias("o_ttft"),
        pl.col("cost_usd").alias("o_cost"),
    )
    paired = replay.join(orig, on="case_id", how="inner").filter(pl.col("r_latency").is_not_null())
    both_ttft = pl.col("o_ttft").is_not_null() & pl.col("r_ttft").is_not_null()
    both_cost = pl.col("o_cost").is_not_null() & pl.col("r_cost").is_not_null()
    per_arm = paired.group_by("arm").agg(
        pl.len().alias("pairs"),
        pl.col("o_model").drop_nulls().mode().sort().first().alias("production_model"),
        pl.col("o_model").drop_nulls().n_unique().alias("production_models"),
        pl.col("o_latency").median().alias("orig_latency_p50_s"),
        pl.col("r_latency").median().alias("replay_latency_p50_s"),
        pl.col("o_latency").quantile(0.95, "linear").alias("orig_latency_p95_s"),
        pl.col("r_latency").quantile(0.95, "linear").alias("replay_latency_p95_s"),
        (pl.col("r_latency") / pl.col("o_latency")).median().alias("latency_ratio_median"),
        pl.col("o_ttft").filter(both_ttft).median().alias("orig_ttft_p50_s"),
        pl.col("r_ttft").filter(both_ttft).median().alias("replay_ttft_p50_s"),
        both_cost.sum().alias("cost_pairs"),
        (pl.col("o_cost").filter(both_cost).mean() * 1000).alias("orig_cost_per_1k_usd"),
        (pl.col("r_cost").filter(both_cost).mean() * 1000).alias("replay_cost_per_1k_usd"),
        (pl.col("r_cost").filter(both_cost).sum() / pl.col("o_cost").filter(both_cost).sum()).alias(
            "cost_ratio"
        ),
    )
    order = pl.DataFrame(
        {"arm": prep.arms, "_order": list(range(len(prep.arms)))},
        schema={"arm": pl.String(), "_order": pl.Int64()},
    )
    return per_arm.join(order, on="arm", how="left").sort("_order", nulls_last=True).drop("_order")
