"""`summary.parquet`: one row per arm (model, or model and variant) with point estimates and their 95 % intervals.

It also counts each call's stop reason per arm (`stop_<reason>`, plus `stop_other` and
`stop_error_no_reason`; together they sum to ok + errors), because refusals and
truncations are what a model chooser must see next to speed and price.

Percentiles are polars `quantile(q, interpolation="linear")` (numpy's default), one
expression per quantile; their intervals come from order statistics, means from a
seeded bootstrap, rates from Wilson. It must not loop over rows or render anything.

Error and expiry rates share one denominator, the calls that reached an outcome (ok, error,
or `expired`: a batch request Anthropic did not reach in 24 hours); cancelled calls count
against no arm. `summarize_batches` gives a batch run's table of batches (one row each, with
its turnaround), the figures behind the report's per-batch view.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from harness.records import STOP_REASONS
from harness.report.prepared import METRICS, Prepared
from harness.report.stats import Resampler, boot_interval, percentile_ci, ratio_interval, wilson

__all__ = ["QUANTILES", "STOP_COLUMNS", "summarize", "summarize_batches"]

QUANTILES: tuple[tuple[str, float], ...] = (("p50", 0.50), ("p90", 0.90), ("p95", 0.95), ("p99", 0.99))
# (label, summary column): every documented stop reason, then the rest of the finished calls.
STOP_COLUMNS: tuple[tuple[str, str], ...] = (
    *((reason, f"stop_{reason}") for reason in STOP_REASONS),
    ("other", "stop_other"),  # an undocumented stop reason, or a successful call without one
    ("error, no reason", "stop_error_no_reason"),
)


def _stop_counts() -> list[pl.Expr]:
    """Finished (ok or error) calls per stop reason, each in exactly one column; cancelled calls in none."""
    reason, status = pl.col("stop_reason"), pl.col("status")
    finished = status.is_in(["ok", "error"])
    known = reason.is_in(list(STOP_REASONS)).fill_null(False)
    error_without = (status == "error") & reason.is_null()
    exprs = [(finished & (reason == r).fill_null(False)).sum().alias(f"stop_{r}") for r in STOP_REASONS]
    exprs.append((finished & ~known & ~error_without).sum().alias("stop_other"))
    exprs.append(error_without.sum().alias("stop_error_no_reason"))
    return exprs


def _point_estimates(prep: Prepared) -> pl.DataFrame:
    """Counts, percentiles, means and sums per arm: one lazy group_by over all rows."""
    ok = pl.col("status") == "ok"
    aggs: list[pl.Expr] = [
        pl.len().alias("calls"),
        ok.sum().alias("ok"),
        (pl.col("status") == "error").sum().alias("errors"),
        (pl.col("status") == "cancelled").sum().alias("cancelled"),
        (pl.col("status") == "expired").sum().alias("expired"),
    ]
    for prefix, col in METRICS:
        x = pl.col(col).filter(ok & pl.col(col).is_not_null() & pl.col(col).is_not_nan())
        aggs.append(x.count().alias(f"{prefix}_n"))
        aggs.append(x.mean().alias(f"{prefix}_mean_s"))
        for name, q in QUANTILES:
            aggs.append(x.quantile(q, interpolation="linear").alias(f"{prefix}_{name}_s"))
        aggs.append(x.max().alias(f"{prefix}_max_s"))
    tps = pl.col("output_tokens_per_s").filter(ok)
    aggs += [
        tps.quantile(0.5, interpolation="linear").alias("output_tps_p50"),
        tps.mean().alias("output_tps_mean"),
        pl.col("started_at").min().alias("first_started_at"),
        pl.col("finished_at").max().alias("last_finished_at"),
        pl.col("input_tokens").sum().alias("input_tokens_sum"),
        pl.col("input_tokens").filter(ok).mean().alias("input_tokens_mean"),
        pl.col("output_tokens").sum().alias("output_tokens_sum"),
        pl.col("output_tokens").filter(ok).mean().alias("output_tokens_mean"),
        pl.col("total_cost_usd").sum().alias("total_cost_usd"),
        pl.col("total_cost_usd").filter(ok).mean().alias("mean_cost_per_call_usd"),
        pl.col("distinct_id").n_unique().alias("distinct_users"),
        pl.col("input_cost_usd").sum().alias("_input_cost"),
        pl.col("cache_cost_usd").sum().alias("_cache_cost"),
        (pl.col("cache_read_input_tokens") + pl.col("cache_creation_input_tokens"))
        .sum()
        .alias("_cache_tokens"),
        pl.col("passed").count().alias("pass_n"),
        pl.col("passed").sum().alias("passes"),
        pl.col("judge_cost_usd").sum().alias("judge_cost_usd"),
        pl.col("cache_eligible").is_not_null().sum().alias("cache_calls"),
        (pl.col("cache_eligible") == False).sum().alias("cache_ineligible"),  # noqa: E712 - polars, not Python
        pl.col("cache_hit").sum().alias("cache_hits"),
        pl.col("cache_read_input_tokens").sum().alias("cache_read_tokens"),
        (pl.col("input_tokens") + pl.col("cache_creation_input_tokens") + pl.col("cache_read_input_tokens"))
        .sum()
        .alias("all_input_tokens"),
        pl.col("cache_savings_usd").sum().alias("_per_call_savings"),
        pl.col("cache_savings_usd").count().alias("_per_call_savings_n"),
        pl.col("judge_error").is_not_null().sum().alias("judge_errors"),
        *_stop_counts(),
    ]
    return prep.calls.lazy().group_by("arm").agg(aggs).collect()


def _errors_by_kind(prep: Prepared) -> dict[str, str]:
    """'kind=count; …' per arm, most frequent first."""
    counts = (
        prep.calls.lazy()
        .filter(pl.col("status") == "error")
        .group_by("arm", pl.col("error_kind").fill_null("unknown"))
        .len()
        .sort(["arm", "len", "error_kind"], descending=[False, True, False])
        .collect()
    )
    out: dict[str, str] = {}
    for arm, kind, n in counts.iter_rows():  # one row per (arm, kind): a handful
        out[arm] = (out[arm] + "; " if arm in out else "") + f"{kind}={n}"
    return out


def summarize(prep: Prepared, *, seed: int = 0) -> pl.DataFrame:
    """The summary table; arms with no successful call get nulls, never an exception."""
    points = {row["arm"]: row for row in _point_estimates(prep).iter_rows(named=True)}
    kinds = _errors_by_kind(prep)
    boot = Resampler(seed)
    rows: list[dict[str, Any]] = []
    for arm in prep.arms:
        p = points[arm]
        row: dict[str, Any] = {"model": prep.model_of[arm], "variant": prep.variant_of[arm], "arm": arm}
        for key in ("calls", "ok", "errors", "cancelled", "expired"):
            row[key] = int(p[key] or 0)
        row["errors_by_kind"] = kinds.get(arm, "")
        attempted = row["ok"] + row["errors"] + row["expired"]
        row["error_rate"] = row["errors"] / attempted if attempted else None
        row["error_rate_lo"], row["error_rate_hi"] = wilson(row["errors"], attempted)
        row["expiry_rate"] = row["expired"] / attempted if attempted else None
        row["expiry_rate_lo"], row["expiry_rate_hi"] = wilson(row["expired"], attempted)
        for prefix, col in METRICS:
            values = prep.values(arm, col)
            row[f"{prefix}_n"] = int(p[f"{prefix}_n"] or 0)
            row[f"{prefix}_mean_s"] = p[f"{prefix}_mean_s"]
            got = boot.bootstrap(values)
            lo, hi = boot_interval(got[1]) if got else (None, None)
            row[f"{prefix}_mean_lo_s"], row[f"{prefix}_mean_hi_s"] = lo, hi
            for name, q in QUANTILES:
                row[f"{prefix}_{name}_s"] = p[f"{prefix}_{name}_s"]
                lo, hi = percentile_ci(values, q)
                row[f"{prefix}_{name}_lo_s"], row[f"{prefix}_{name}_hi_s"] = lo, hi
                row[f"{prefix}_{name}_ci_ok"] = lo is not None
            row[f"{prefix}_max_s"] = p[f"{prefix}_max_s"]
        row["output_tps_p50"] = p["output_tps_p50"]
        row["output_tps_mean"] = p["output_tps_mean"]
        first, last = p["first_started_at"], p["last_finished_at"]
        span = (last - first).total_seconds() if first is not None and last is not None else None
        row["duration_s"] = span
        if span is not None and span > 0:
            row["throughput_calls_per_s"] = row["ok"] / span
            row["throughput_output_tokens_per_s"] = (p["output_tokens_sum"] or 0) / span
        else:
            row["throughput_calls_per_s"] = row["throughput_output_tokens_per_s"] = None
        for key in ("input_tokens_sum", "input_tokens_mean", "output_tokens_sum", "output_tokens_mean"):
            row[key] = p[key]
        total = float(p["total_cost_usd"] or 0.0)
        row["total_cost_usd"] = total
        cost = prep.values(arm, "total_cost_usd")
        got = boot.bootstrap(cost)
        row["mean_cost_per_call_usd"] = p["mean_cost_per_call_usd"]
        lo, hi = boot_interval(got[1]) if got else (None, None)
        row["mean_cost_per_call_lo_usd"], row["mean_cost_per_call_hi_usd"] = lo, hi
        mean_cost = p["mean_cost_per_call_usd"]
        row["cost_per_1k_calls_usd"] = mean_cost * 1000 if mean_cost is not None else None
        users = int(p["distinct_users"] or 0)
        row["distinct_users"] = users
        row["avg_cost_per_user_usd"] = total / users if users else None
        row["cache_calls"] = int(p["cache_calls"] or 0)
        row["cache_ineligible"] = int(p["cache_ineligible"] or 0)
        eligible = row["cache_calls"] - row["cache_ineligible"]
        row["cache_hit_rate"] = (int(p["cache_hits"] or 0) / eligible) if eligible else None
        all_input = int(p["all_input_tokens"] or 0)
        row["cache_input_share"] = int(p["cache_read_tokens"] or 0) / all_input if all_input else None
        if p["_per_call_savings_n"]:  # each call priced with and without its cache tokens
            savings = prep.column(arm, "cache_savings_usd")
            got = boot.bootstrap(savings)
            row["cache_savings_usd"] = float(p["_per_call_savings"])
            lo, hi = boot_interval(got[1]) if got else (None, None)
            n = len(savings)
            row["cache_savings_lo_usd"] = lo * n if lo is not None else None
            row["cache_savings_hi_usd"] = hi * n if hi is not None else None
        else:  # a run recorded before the per-call figure: what the cached tokens would have cost
            row["cache_savings_usd"] = _cache_savings(p)
            row["cache_savings_lo_usd"] = row["cache_savings_hi_usd"] = None
        row["pass_n"] = int(p["pass_n"] or 0)
        passes = int(p["passes"] or 0)
        row["pass_rate"] = passes / row["pass_n"] if row["pass_n"] else None
        row["pass_rate_lo"], row["pass_rate_hi"] = wilson(passes, row["pass_n"])
        graded_cost, graded_pass, scores = prep.graded(arm)
        got = boot.bootstrap(scores)
        row["mean_score"] = got[0] if got else None
        row["mean_score_lo"], row["mean_score_hi"] = boot_interval(got[1]) if got else (None, None)
        # All spend of the graded calls (failed ones included) per passed answer; judging is apart.
        row["cost_per_pass_usd"] = float(graded_cost.sum()) / passes if passes else None
        row["cost_per_pass_lo_usd"], row["cost_per_pass_hi_usd"] = ratio_interval(
            graded_cost, graded_pass, seed
        )
        row["judge_cost_usd"] = float(p["judge_cost_usd"] or 0.0)
        row["judge_errors"] = int(p["judge_errors"] or 0)
        for _label, column in STOP_COLUMNS:
            row[column] = int(p[column] or 0)
        rows.append(row)
    return pl.DataFrame(rows, schema=summary_schema(), strict=False)


def _cache_savings(p: dict[str, Any]) -> float:
    """What the cached tokens would have cost as plain input, minus what they cost."""
    in_tokens = p["input_tokens_sum"] or 0
    if not in_tokens:
        return 0.0
    price = (p["_input_cost"] or 0.0) / in_tokens
    return float((p["_cache_tokens"] or 0) * price - (p["_cache_cost"] or 0.0))


def summary_schema() -> dict[str, pl.DataType]:
    """A fixed schema, so an empty or all-failed run still writes the same columns."""
    f, i, b, s = pl.Float64(), pl.Int64(), pl.Boolean(), pl.String()
    schema: dict[str, pl.DataType] = {"model": s, "variant": s, "arm": s}
    schema |= {"calls": i, "ok": i, "errors": i, "cancelled": i, "expired": i}
    schema |= {"errors_by_kind": s, "error_rate": f, "error_rate_lo": f, "error_rate_hi": f}
    schema |= {"expiry_rate": f, "expiry_rate_lo": f, "expiry_rate_hi": f}
    for prefix, _ in METRICS:
        schema[f"{prefix}_n"] = i
        schema |= {f"{prefix}_mean_s": f, f"{prefix}_mean_lo_s": f, f"{prefix}_mean_hi_s": f}
        for name, _q in QUANTILES:
            schema |= {f"{prefix}_{name}_s": f, f"{prefix}_{name}_lo_s": f, f"{prefix}_{name}_hi_s": f}
            schema[f"{prefix}_{name}_ci_ok"] = b
        schema[f"{prefix}_max_s"] = f
    for key in ("output_tps_p50", "output_tps_mean", "duration_s", "throughput_calls_per_s"):
        schema[key] = f
    schema["throughput_output_tokens_per_s"] = f
    schema |= {"input_tokens_sum": i, "input_tokens_mean": f, "output_tokens_sum": i, "output_tokens_mean": f}
    for key in ("total_cost_usd", "mean_cost_per_call_usd", "mean_cost_per_call_lo_usd"):
        schema[key] = f
    schema |= {"mean_cost_per_call_hi_usd": f, "cost_per_1k_calls_usd": f, "distinct_users": i}
    schema |= {"avg_cost_per_user_usd": f, "cache_savings_usd": f, "cache_savings_lo_usd": f}
    schema |= {"cache_savings_hi_usd": f, "cache_calls": i, "cache_ineligible": i, "cache_hit_rate": f}
    schema |= {"cache_input_share": f}
    schema |= {"pass_n": i, "pass_rate": f, "pass_rate_lo": f, "pass_rate_hi": f}
    schema |= {"mean_score": f, "mean_score_lo": f, "mean_score_hi": f}
    schema |= {"cost_per_pass_usd": f, "cost_per_pass_lo_usd": f, "cost_per_pass_hi_usd": f}
    schema |= {"judge_cost_usd": f, "judge_errors": i}
    schema |= {column: i for _label, column in STOP_COLUMNS}
    return schema


def summarize_batches(prep: Prepared) -> pl.DataFrame:
    """One row per Message Batch of the run (none for a live run): its calls by outcome, its
    created → ended turnaround, its cost; oldest first. A batch's calls share one turnaround."""
    status = pl.col("status")
    return (
        prep.calls.lazy()
        .filter(pl.col("batch_id").is_not_null())
        .group_by("batch_id")
        .agg(
            pl.col("arm").unique().sort().str.join(", ").alias("arms"),
            pl.len().alias("calls"),
            (status == "ok").sum().alias("ok"),
            (status == "error").sum().alias("errors"),
            (status == "expired").sum().alias("expired"),
            (status == "cancelled").sum().alias("cancelled"),
            pl.col("batch_created_at").min().alias("created_at"),
            pl.col("batch_ended_at").max().alias("ended_at"),
            pl.col("turnaround_s").max().alias("turnaround_s"),
            pl.col("total_cost_usd").sum().alias("total_cost_usd"),
        )
        .with_columns(
            (pl.col("errors") / (pl.col("calls") - pl.col("cancelled"))).alias("error_rate"),
            (pl.col("expired") / (pl.col("calls") - pl.col("cancelled"))).alias("expiry_rate"),
        )
        .sort("created_at", "batch_id")
        .collect()
    )
