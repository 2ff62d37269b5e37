"""`harness compare LIVE BATCH`: what batch mode costs and gives up against a live run of the same plan.

Per arm in both runs: the cost ratio (batch cost over live cost of the same successful calls,
paired by (case, repeat), with a paired bootstrap interval), the batch's turnaround (created → ended of each call's batch) against the live
latency, and answer agreement paired by case: the pass rates of both, the share of
(case, repeat) pairs whose pass/fail differs, and McNemar's exact test on those pairs. Then
the break-even sentence: what batch saves, and how soon an answer must be needed for live to
be worth its price. The figures are computed here once; `regress.py` renders them into the
comparison. Must not call the API or write files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from harness.report.prepared import Prepared
from harness.report.render_md import md_table
from harness.report.stats import Resampler, boot_interval, mcnemar_p, ratio_interval

__all__ = ["BatchVsLive", "batch_vs_live", "is_batch_run"]


@dataclass
class BatchVsLive:
    table: pl.DataFrame  # one row per arm in both runs
    sentence: str
    markdown: str


def is_batch_run(prep: Prepared, manifest: dict[str, Any]) -> bool:
    """A run of batch mode: said by its manifest, else by its rows (an older manifest)."""
    if manifest.get("mode") in ("batch", "live"):
        return bool(manifest["mode"] == "batch")
    return prep.calls.height > 0 and prep.calls.get_column("batch_id").null_count() < prep.calls.height


def _pairs(live: Prepared, batch: Prepared, arm: str) -> tuple[int, int, int]:
    """(pairs, live pass only, batch pass only) over the (case, repeat) both runs graded."""
    cols = ["case_id", "repeat", "passed"]
    a = live.calls.filter((pl.col("arm") == arm) & pl.col("passed").is_not_null()).select(cols)
    b = batch.calls.filter((pl.col("arm") == arm) & pl.col("passed").is_not_null()).select(cols)
    joined = a.join(b, on=["case_id", "repeat"], how="inner", suffix="_batch")
    live_only = int((joined["passed"] & ~joined["passed_batch"]).sum())
    batch_only = int((~joined["passed"] & joined["passed_batch"]).sum())
    return joined.height, live_only, batch_only


def _paired_costs(live: Prepared, batch: Prepared, arm: str) -> tuple[np.ndarray, np.ndarray]:
    """(live, batch) cost of the calls both runs answered, paired by (case, repeat)."""
    cols = ["case_id", "repeat", "total_cost_usd"]
    ok = (pl.col("arm") == arm) & (pl.col("status") == "ok")
    a = live.calls.filter(ok).select(cols)
    b = batch.calls.filter(ok).select(cols)
    joined = a.join(b, on=["case_id", "repeat"], how="inner", suffix="_batch")
    return (
        joined.get_column("total_cost_usd").to_numpy().astype(np.float64),
        joined.get_column("total_cost_usd_batch").to_numpy().astype(np.float64),
    )


def _rate(prep: Prepared, arm: str) -> float | None:
    passed = prep.outcomes(arm, "passed")
    return float(passed.mean()) if len(passed) else None


def _q(values: np.ndarray, q: float) -> float | None:
    return float(np.quantile(values, q)) if len(values) else None


def batch_vs_live(live: Prepared, batch: Prepared, arms: list[str], seed: int = 0) -> BatchVsLive:
    boot = Resampler(seed + 11)
    rows: list[dict[str, Any]] = []
    for arm in arms:
        lc, bc = live.values(arm, "total_cost_usd"), batch.values(arm, "total_cost_usd")
        row: dict[str, Any] = {"arm": arm, "live_cost_per_call_usd": None, "batch_cost_per_call_usd": None}
        row |= {"cost_ratio": None, "cost_ratio_lo": None, "cost_ratio_hi": None}
        rl, rb = boot.bootstrap(lc), boot.bootstrap(bc)
        pl_cost, pb_cost = _paired_costs(live, batch, arm)
        if len(pl_cost) >= 2 and pl_cost.sum() > 0 and pb_cost.sum() > 0:
            # The same calls on both sides: their costs move together, so pair them.
            lo, hi = ratio_interval(pb_cost, pl_cost, seed + 13)
            row |= {
                "live_cost_per_call_usd": float(lc.mean()),
                "batch_cost_per_call_usd": float(bc.mean()),
                "cost_ratio": float(pb_cost.sum() / pl_cost.sum()),
                "cost_ratio_lo": lo,
                "cost_ratio_hi": hi,
            }
        elif rl is not None and rb is not None and rl[0] > 0 and rb[0] > 0:
            d = np.log(np.maximum(rb[1], 1e-15)) - np.log(np.maximum(rl[1], 1e-15))
            lo, hi = boot_interval(d)
            row |= {
                "live_cost_per_call_usd": rl[0],
                "batch_cost_per_call_usd": rb[0],
                "cost_ratio": rb[0] / rl[0],
                "cost_ratio_lo": math.exp(lo),
                "cost_ratio_hi": math.exp(hi),
            }
        latency, turnaround = live.values(arm, "latency_s"), batch.values(arm, "turnaround_s")
        row |= {
            "live_latency_p50_s": _q(latency, 0.5),
            "live_latency_p95_s": _q(latency, 0.95),
            "batch_turnaround_p50_s": _q(turnaround, 0.5),
            "batch_turnaround_max_s": float(turnaround.max()) if len(turnaround) else None,
        }
        pairs, live_only, batch_only = _pairs(live, batch, arm)
        row |= {
            "live_pass_rate": _rate(live, arm),
            "batch_pass_rate": _rate(batch, arm),
            "paired_cases": pairs,
            "live_pass_only": live_only,
            "batch_pass_only": batch_only,
            "differ_share": (live_only + batch_only) / pairs if pairs else None,
            "mcnemar_p": mcnemar_p(live_only, batch_only) if pairs else None,
        }
        rows.append(row)
    table = pl.DataFrame(rows, schema=_schema(), strict=False)
    sentence = _sentence(live, batch, table)
    return BatchVsLive(table, sentence, _markdown(table, sentence))


def _schema() -> dict[str, pl.DataType]:
    f, i = pl.Float64(), pl.Int64()
    return {
        "arm": pl.String(),
        "live_cost_per_call_usd": f,
        "batch_cost_per_call_usd": f,
        "cost_ratio": f,
        "cost_ratio_lo": f,
        "cost_ratio_hi": f,
        "live_latency_p50_s": f,
        "live_latency_p95_s": f,
        "batch_turnaround_p50_s": f,
        "batch_turnaround_max_s": f,
        "live_pass_rate": f,
        "batch_pass_rate": f,
        "paired_cases": i,
        "live_pass_only": i,
        "batch_pass_only": i,
        "differ_share": f,
        "mcnemar_p": f,
    }


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _sentence(live: Prepared, batch: Prepared, table: pl.DataFrame) -> str:
    """What batch saves over the whole plan, and the break-even: how soon answers must be needed."""
    arms = table.get_column("arm").to_list()
    ok = pl.col("status") == "ok"
    spent_live = _mean(live.calls.filter(pl.col("arm").is_in(arms) & ok)["total_cost_usd"])
    spent_batch = _mean(batch.calls.filter(pl.col("arm").is_in(arms) & ok)["total_cost_usd"])
    if spent_live <= 0 or spent_batch <= 0:
        return "Batch vs live: no successful calls on both sides to compare."
    ratio = spent_batch / spent_live
    saving = (spent_live - spent_batch) * 1000
    turn = batch.calls.filter(pl.col("arm").is_in(arms) & ok)["turnaround_s"].drop_nulls()
    slowest = float(turn.max()) if len(turn) else None  # type: ignore[arg-type]
    lat = live.calls.filter(pl.col("arm").is_in(arms) & ok)["latency_s"].drop_nulls()
    p95 = float(lat.quantile(0.95, interpolation="linear")) if len(lat) else None  # type: ignore[arg-type]
    verb = "halves the cost" if 0.45 <= ratio <= 0.55 else f"costs ×{ratio:.2f} of live"
    text = f"Batch {verb} (${saving:.4f} saved per 1,000 calls)"
    differ = [r for r in table.iter_rows(named=True) if r["mcnemar_p"] is not None and r["mcnemar_p"] < 0.05]
    if differ:
        text += "; the answers differ significantly on " + ", ".join(r["arm"] for r in differ) + " (McNemar)"
    elif table.get_column("paired_cases").sum():
        text += " with answers that pass as often (no significant difference, McNemar)"
    text += (
        f". Use live only if you need answers within {_duration(slowest)}: that is how long the slowest "
        f"batch here took (live answered at p95 {_duration(p95)}), and the API allows up to 24 h."
    )
    return text


def _mean(values: pl.Series) -> float:
    return float(values.drop_nulls().to_numpy().mean()) if values.drop_nulls().len() else 0.0


def _markdown(table: pl.DataFrame, sentence: str) -> str:
    rows = []
    for r in table.iter_rows(named=True):
        ratio = (
            "–"
            if r["cost_ratio"] is None
            else f"×{r['cost_ratio']:.3f} [{r['cost_ratio_lo']:.3f}–{r['cost_ratio_hi']:.3f}]"
        )
        pct = lambda v: "–" if v is None else f"{v:.1%}"  # noqa: E731
        p = "–" if r["mcnemar_p"] is None else f"{r['mcnemar_p']:.3g}"
        rows.append(
            [
                r["arm"],
                "–" if r["live_cost_per_call_usd"] is None else f"${r['live_cost_per_call_usd']:.6f}",
                "–" if r["batch_cost_per_call_usd"] is None else f"${r['batch_cost_per_call_usd']:.6f}",
                ratio,
                f"{_duration(r['live_latency_p50_s'])} / {_duration(r['live_latency_p95_s'])}",
                f"{_duration(r['batch_turnaround_p50_s'])} / {_duration(r['batch_turnaround_max_s'])}",
                f"{pct(r['live_pass_rate'])} / {pct(r['batch_pass_rate'])}",
                f"{pct(r['differ_share'])} of {r['paired_cases']}",
                p,
            ]
        )
    head = [
        "arm",
        "live $/call",
        "batch $/call",
        "cost ratio [95 % CI]",
        "live latency p50 / p95",
        "batch turnaround p50 / max",
        "pass rate live / batch",
        "pass/fail differs",
        "McNemar p",
    ]
    return "\n".join(
        [
            "## Batch vs live",
            "",
            sentence,
            "",
            md_table(head, rows),
            "",
            "_Cost ratio: what the calls answered on both sides cost in batch over live, paired by (case, "
            "repeat) (paired bootstrap interval; unpaired means when no case pairs). Turnaround: "
            "created → ended of the call's batch. Pass/fail is paired by (case, repeat); McNemar's exact "
            "test counts only the pairs that differ._",
            "",
        ]
    )
