"""`harness report --reprice`: a run's stored usage priced again with today's price table, beside the stored costs.

A report prices with the table the run was run with: the costs stored in each row, whose
`price_version` names that table. `--reprice` resolves today's table (the installed
genai-prices at today's date, the run's own `[prices]` overrides, batch prices for a batch
run), prices each row's stored usage again with `PriceTable.cost` (once per distinct usage,
not per row), and the report adds a table with both figures per arm, each taken from
`summarize` over the stored rows and over the repriced rows (no second way to compute a cost).
Must not call the API.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import polars as pl

from harness.pricing import PriceTable
from harness.records import arm_word
from harness.report.methodology import Methodology
from harness.report.prepared import prepare
from harness.report.summary import summarize
from harness.report.tables import Table

__all__ = ["USAGE_COLUMNS", "reprice_calls", "reprice_summary", "reprice_table"]

USAGE_COLUMNS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "cache_write_1h_input_tokens",
    "web_search_requests",
)
_COSTS = ("input_cost_usd", "output_cost_usd", "cache_cost_usd", "server_tool_cost_usd", "total_cost_usd")


def _overrides(manifest: Mapping[str, Any]) -> dict[str, Any]:
    config = manifest.get("config")
    prices = config.get("prices") if isinstance(config, Mapping) else None
    return dict(prices) if isinstance(prices, Mapping) else {}


def reprice_calls(
    calls: pl.LazyFrame, manifest: Mapping[str, Any], *, at: datetime | None = None
) -> tuple[pl.LazyFrame, PriceTable]:
    """`calls` with every cost column (and `price_version`) recomputed with the table in force at `at` (now)."""
    frame = calls.collect()
    models = [m for m in frame.get_column("model").unique().to_list() if m is not None]
    context = {"processing": "batch"} if manifest.get("mode") == "batch" else None
    table = PriceTable.resolve(models, _overrides(manifest), at, price_context=context)
    keys = ["model", *USAGE_COLUMNS]
    usage = frame.select(pl.col("model"), *(pl.col(c).fill_null(0).cast(pl.Int64) for c in USAGE_COLUMNS))
    distinct = usage.unique()
    priced: dict[str, list[Any]] = {k: [] for k in (*keys, *_COSTS, "_uncached")}
    for row in distinct.iter_rows(named=True):  # one price per distinct usage: a handful per model
        if row["model"] is None:
            continue
        c = table.cost(
            row["model"],
            row["input_tokens"],
            row["output_tokens"],
            row["cache_creation_input_tokens"],
            row["cache_read_input_tokens"],
            row["cache_write_1h_input_tokens"],
            web_searches=row["web_search_requests"],
        )
        cached = row["cache_creation_input_tokens"] + row["cache_read_input_tokens"]
        uncached = (
            table.cost(
                row["model"],
                row["input_tokens"] + cached,
                row["output_tokens"],
                web_searches=row["web_search_requests"],
            ).total_usd
            if cached
            else c.total_usd
        )
        for k in keys:
            priced[k].append(row[k])
        for k, v in zip(
            _COSTS, (c.input_usd, c.output_usd, c.cache_usd, c.server_tool_usd, c.total_usd), strict=True
        ):
            priced[k].append(v)
        priced["_uncached"].append(uncached)
    schema = {**{k: usage.schema[k] for k in keys}, **{k: pl.Float64() for k in (*_COSTS, "_uncached")}}
    prices = pl.DataFrame(priced, schema=schema)
    joined = (
        frame.with_columns(*(pl.col(c).fill_null(0).cast(pl.Int64).alias(f"_k_{c}") for c in USAGE_COLUMNS))
        .drop(list(_COSTS))
        .join(
            prices.rename({c: f"_k_{c}" for c in USAGE_COLUMNS}),
            on=["model", *(f"_k_{c}" for c in USAGE_COLUMNS)],
            how="left",
            maintain_order="left",
        )
        .with_columns(
            # A row that had an uncached figure gets today's; the rule is the runner's.
            pl.when(pl.col("uncached_cost_usd").is_not_null())
            .then(pl.col("_uncached"))
            .alias("uncached_cost_usd"),
            pl.lit(table.version_label).alias("price_version"),
        )
        .with_columns(
            pl.when(pl.col("uncached_cost_usd").is_not_null())
            .then(pl.col("uncached_cost_usd") - pl.col("total_cost_usd"))
            .alias("cache_savings_usd")
        )
    )
    return joined.select(frame.columns).lazy(), table


def _usd(v: float | None) -> str:
    if v is None:
        return "–"
    return f"${v:.6f}" if abs(v) < 0.01 else f"${v:,.4f}"


def _change(new: float | None, old: float | None) -> str:
    if new is None or old is None or old == 0:
        return "–"
    return f"{new / old - 1:+.1%}"


def reprice_table(
    stored: pl.DataFrame, repriced: pl.DataFrame, stored_version: str | None, today_version: str
) -> Table:
    """Per arm: cost per 1,000 calls, per passed answer and in total, as stored and at today's prices."""
    word = arm_word(stored.get_column("variant")) if stored.height else "model"
    t = Table(
        "Costs repriced with today's price table",
        [
            word,
            "per 1k calls (stored)",
            "per 1k calls (today)",
            "change",
            "per passed answer (stored)",
            "per passed answer (today)",
            "change",
            "total (stored)",
            "total (today)",
        ],
        note=(
            f"Stored: the costs recorded by the run, priced with {stored_version or 'a table not recorded'}. "
            f"Today: the same usage priced with {today_version}. Every other table of this report uses the "
            "stored costs."
        ),
    )
    today = {r["arm"]: r for r in repriced.iter_rows(named=True)}
    for r in stored.iter_rows(named=True):
        n = today.get(r["arm"], {})
        t.rows.append(
            [
                r["arm"],
                _usd(r["cost_per_1k_calls_usd"]),
                _usd(n.get("cost_per_1k_calls_usd")),
                _change(n.get("cost_per_1k_calls_usd"), r["cost_per_1k_calls_usd"]),
                _usd(r["cost_per_pass_usd"]),
                _usd(n.get("cost_per_pass_usd")),
                _change(n.get("cost_per_pass_usd"), r["cost_per_pass_usd"]),
                _usd(r["total_cost_usd"]),
                _usd(n.get("total_cost_usd")),
            ]
        )
    return t


def reprice_summary(
    calls: pl.LazyFrame,
    manifest: Mapping[str, Any],
    stored: pl.DataFrame,
    method: Methodology,
    *,
    seed: int = 0,
    at: datetime | None = None,
) -> tuple[pl.DataFrame, Table]:
    """The summary of the repriced rows and the table comparing it with the stored `summary`."""
    repriced_calls, today = reprice_calls(calls, manifest, at=at)
    repriced = summarize(prepare(repriced_calls, dict(manifest)), seed=seed)
    return repriced, reprice_table(stored, repriced, method.facts["price_version"], today.version_label)
