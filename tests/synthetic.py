"""Synthetic `calls.parquet` frames that follow CALL_SCHEMA, for report tests and the scale benchmark.

Latencies are lognormal per model with a shared per-case factor (so pairing by case
matters), costs scale with tokens, some calls fail. Vectorised: a million rows in
about a second.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from harness.records import CALL_SCHEMA


@dataclass(frozen=True)
class ModelSpec:
    name: str
    median_s: float = 1.0
    sigma: float = 0.3
    ttft_share: float = 0.3
    usd_per_output_token: float = 15e-6
    usd_per_input_token: float = 3e-6
    error_rate: float = 0.0
    pass_prob: float | None = 0.8


def synthetic_calls(
    models: list[ModelSpec],
    *,
    cases: int = 200,
    repeats: int = 1,
    seed: int = 0,
    users: int = 10,
    case_sigma: float = 0.5,
    run_id: str = "run-synth",
    stream: bool = True,
    with_expected: bool = True,
    start: datetime | None = None,
) -> pl.DataFrame:
    """One row per (case, model, repeat), interleaved in time like the real plan."""
    rng = np.random.default_rng(seed)
    k = len(models)
    case_idx = np.repeat(np.arange(cases), k * repeats)
    model_idx = np.tile(np.repeat(np.arange(k), repeats), cases)
    rep = np.tile(np.arange(repeats), cases * k)
    n = len(case_idx)
    case_factor = rng.normal(0.0, case_sigma, cases)[case_idx]
    medians = np.array([m.median_s for m in models])[model_idx]
    sigmas = np.array([m.sigma for m in models])[model_idx]
    latency = medians * np.exp(case_factor + rng.normal(0.0, 1.0, n) * sigmas)
    ttft = latency * np.array([m.ttft_share for m in models])[model_idx] * rng.uniform(0.8, 1.2, n)
    in_tok = (200 * np.exp(case_factor * 0.5)).astype(np.int64) + 20
    out_tok = np.maximum(1, (latency * 80).astype(np.int64))
    err_p = np.array([m.error_rate for m in models])[model_idx]
    failed = rng.uniform(size=n) < err_p
    in_cost = in_tok * np.array([m.usd_per_input_token for m in models])[model_idx]
    out_cost = out_tok * np.array([m.usd_per_output_token for m in models])[model_idx]
    in_cost = np.where(failed, 0.0, in_cost)
    out_cost = np.where(failed, 0.0, out_cost)
    pass_p = np.array([np.nan if m.pass_prob is None else m.pass_prob for m in models])[model_idx]
    passed = rng.uniform(size=n) < pass_p
    start = start or datetime(2026, 1, 1, tzinfo=UTC)
    order = rng.permutation(n)  # interleaved schedule
    offsets = np.empty(n)
    offsets[order] = np.arange(n) * 0.05
    started = np.datetime64(start.replace(tzinfo=None), "us") + (offsets * 1e6).astype("timedelta64[us]")
    lat_or_nan = np.where(failed, np.nan, latency)
    frame = pl.DataFrame(
        {
            "call_id": np.arange(n),
            "case_id": case_idx,
            "user_id": case_idx % max(1, users),
            "repeat": rep.astype(np.int32),
            "model": model_idx,
            "failed": failed,
            "http_status": np.where(failed, 529, 200).astype(np.int32),
            "attempts": np.ones(n, dtype=np.int32),
            "stream": np.full(n, stream),
            "scheduled_at": started,
            "started_at": started,
            "limiter_wait_s": np.zeros(n),
            "retry_wait_s": np.zeros(n),
            "ttft_s": np.where(failed, np.nan, ttft),
            "latency_s": lat_or_nan,
            "latency_from_schedule_s": lat_or_nan,
            "output_tokens_per_s": np.where(failed, np.nan, out_tok / np.maximum(latency - ttft, 1e-3)),
            "input_tokens": np.where(failed, 0, in_tok),
            "output_tokens": np.where(failed, 0, out_tok),
            "cache_creation_input_tokens": np.zeros(n, dtype=np.int64),
            "cache_read_input_tokens": np.zeros(n, dtype=np.int64),
            "input_cost_usd": in_cost,
            "output_cost_usd": out_cost,
            "cache_cost_usd": np.zeros(n),
            "total_cost_usd": in_cost + out_cost,
        },
        strict=False,
    )
    frame = frame.with_columns(
        pl.col("ttft_s", "latency_s", "latency_from_schedule_s", "output_tokens_per_s").fill_nan(None),
        pl.lit(run_id).alias("run_id"),
        pl.when(pl.col("failed")).then(pl.lit("error")).otherwise(pl.lit("ok")).alias("status"),
        pl.when(pl.col("failed")).then(pl.lit("overloaded")).alias("error_kind"),
        pl.format("c{}", "call_id").alias("call_id"),
        pl.format("case-{}", "case_id").alias("case_id"),
        pl.format("user-{}", "user_id").alias("user_id"),
        pl.col("model").replace_strict(list(range(k)), [m.name for m in models], return_dtype=pl.String()),
    ).with_columns(
        (
            pl.col("started_at")
            + pl.duration(microseconds=(pl.col("latency_s").fill_null(0.1) * 1e6).cast(pl.Int64))
        ).alias("finished_at"),
        pl.Series("passed", passed).alias("passed"),
        pl.lit(None, dtype=pl.String()).alias("response_text"),
    )
    if not with_expected:
        frame = frame.with_columns(pl.lit(None, dtype=pl.Boolean()).alias("passed"))
    else:
        frame = frame.with_columns(
            pl.when(pl.Series(np.isnan(pass_p))).then(None).otherwise(pl.col("passed")).alias("passed")
        )
    if not stream:
        frame = frame.with_columns(pl.lit(None, dtype=pl.Float64()).alias("ttft_s"))
    missing = {c: pl.lit(None, dtype=d) for c, d in CALL_SCHEMA.items() if c not in frame.columns}
    frame = frame.with_columns(**missing).with_columns(
        pl.lit(None, dtype=pl.List(pl.String())).alias("tags"),
        pl.lit("simulator").alias("target"),
    )
    return frame.select([pl.col(c).cast(d) for c, d in CALL_SCHEMA.items()])


def write_run(run_dir: Path, frame: pl.DataFrame, *, dataset_sha: str = "sha-1") -> Path:
    """A run directory as the store leaves it: calls.parquet plus manifest.json."""
    run_dir.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(run_dir / "calls.parquet")
    models = frame.get_column("model").unique(maintain_order=True).to_list()
    run_id = frame.get_column("run_id")[0] if frame.height else run_dir.name
    manifest = {
        "run_id": run_id,
        "models": models,
        "dataset": {"path": "synthetic.jsonl", "sha256": dataset_sha},
    }
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    return run_dir


def started(frame: pl.DataFrame) -> timedelta:
    """The run's span, for assertions on throughput."""
    col = frame.get_column("started_at")
    return col.max() - col.min()  # type: ignore[operator]
