"""`comparison.parquet`: every ordered pair of arms, with intervals and Holm-adjusted significance.

An arm is a model, or a model and a variant (`records.arm_of`), so two thinking budgets of
one model are compared exactly like two models. Medians (latency, TTFT), mean cost and pass
rate and mean score are compared **paired by case** when the same cases ran on both arms
(every arm of a run runs every case): per-case log ratios (or differences), bootstrap over
cases, Wilcoxon signed-rank for the p50s, McNemar's exact test for pass/fail (pairs of
(case, repeat)), a paired bootstrap for the score. p95 latency is compared as a tail:
the ratio of the two p95s with a bootstrap interval, because a rank test can call A
faster while A's tail is twice B's. p-values are Holm-adjusted across the unordered
pairs of each metric; a difference is significant when the adjusted p < 0.05 and the
95 % interval excludes "no difference". Must not render or read files.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Any

import numpy as np
import polars as pl

from harness.report.prepared import Prepared
from harness.report.stats import (
    ALPHA,
    Resampler,
    boot_interval,
    boot_p_value,
    holm,
    mann_whitney_p,
    mcnemar_p,
    quantile_rows,
    wilcoxon_p,
)

__all__ = ["MIN_PAIRED_CASES", "compare_models", "comparison_schema"]

MIN_PAIRED_CASES = 10
COMPARE_CAP = 2000  # bootstrap subsample per sample (rescaled to the full n; see stats.py)
# (name in the table, column, kind): ratio metrics are reported as arm / versus.
_METRICS: tuple[tuple[str, str, str], ...] = (
    ("latency_p50", "latency_s", "median"),
    ("latency_p95", "latency_s", "p95"),
    ("ttft_p50", "ttft_s", "median"),
    ("first_text_p50", "time_to_first_text_s", "median"),
    ("cost_mean", "total_cost_usd", "mean"),
    ("pass_rate", "passed", "rate"),
    ("score_mean", "score", "mean"),
)
_RATIO = {"median", "p95"}


def _median(a: np.ndarray) -> np.ndarray:
    return quantile_rows(a, 0.5)


def _p95(a: np.ndarray) -> np.ndarray:
    return quantile_rows(a, 0.95)


def _mean(a: np.ndarray) -> np.ndarray:
    return np.asarray(a.mean(axis=-1))


_STAT = {"median": _median, "p95": _p95, "mean": _mean, "rate": _mean}


class _Pairs:
    """Per-(arm, case) aggregates, built with one group_by, for paired comparisons (repeats averaged)."""

    def __init__(self, prep: Prepared) -> None:
        self.prep = prep
        ok = pl.col("status") == "ok"
        self.by_case = (
            prep.calls.lazy()
            .group_by("arm", "case_id")
            .agg(
                pl.col("latency_s").filter(ok & (pl.col("latency_s") > 0)).log().mean().alias("latency_s"),
                pl.col("ttft_s").filter(ok & (pl.col("ttft_s") > 0)).log().mean().alias("ttft_s"),
                pl.col("time_to_first_text_s")
                .filter(ok & (pl.col("time_to_first_text_s") > 0))
                .log()
                .mean()
                .alias("time_to_first_text_s"),
                pl.col("total_cost_usd").filter(ok).mean().alias("total_cost_usd"),
                pl.col("passed").cast(pl.Float64).mean().alias("passed"),
                pl.col("score").mean().alias("score"),
            )
            .collect()
        )
        # Pass/fail per (case, repeat): the binary pairs McNemar's test needs.
        self.outcomes = (
            prep.calls.lazy()
            .filter(pl.col("passed").is_not_null())
            .group_by("arm", "case_id", "repeat")
            .agg(pl.col("passed").first())
            .collect()
        )
        self._cache: dict[str, pl.DataFrame] = {}

    def _of(self, arm: str) -> pl.DataFrame:
        if arm not in self._cache:
            self._cache[arm] = self.by_case.filter(pl.col("arm") == arm)
        return self._cache[arm]

    def discordant(self, a: str, b: str) -> tuple[int, int, int]:
        """(pairs passed by a only, by b only, pairs in all) over the (case, repeat)s both were graded on."""
        joined = (
            self.outcomes.filter(pl.col("arm") == a)
            .select("case_id", "repeat", pl.col("passed").alias("x"))
            .join(
                self.outcomes.filter(pl.col("arm") == b).select(
                    "case_id", "repeat", pl.col("passed").alias("y")
                ),
                on=["case_id", "repeat"],
            )
        )
        x, y = joined.get_column("x"), joined.get_column("y")
        return int((x & ~y).sum()), int((~x & y).sum()), joined.height

    def differences(self, a: str, b: str, column: str) -> np.ndarray:
        """Per-case value of `a` minus that of `b` (logs for latency: a log ratio)."""
        joined = (
            self._of(a)
            .select("case_id", pl.col(column).alias("x"))
            .join(self._of(b).select("case_id", pl.col(column).alias("y")), on="case_id")
            .drop_nulls()
        )
        return (joined.get_column("x") - joined.get_column("y")).to_numpy().astype(np.float64)


def _values(prep: Prepared, arm: str, column: str) -> np.ndarray:
    if column == "passed":
        return prep.outcomes(arm, "passed")
    return prep.values(arm, column)


def compare_models(prep: Prepared, *, seed: int = 0) -> pl.DataFrame:
    """One row per ordered pair of arms (arm, versus); empty (with the schema) below two arms."""
    rng = Resampler(seed + 1, cap=COMPARE_CAP)
    pairs = _Pairs(prep) if len(prep.arms) > 1 else None
    unordered = list(combinations(prep.arms, 2))
    marginal: dict[tuple[str, str], tuple[float, np.ndarray] | None] = {}

    def reps(arm: str, column: str, kind: str) -> tuple[float, np.ndarray] | None:
        key = (arm, f"{column}:{kind}")
        if key not in marginal:
            marginal[key] = rng.bootstrap(_values(prep, arm, column), _STAT[kind])
        return marginal[key]

    results: dict[tuple[str, str], dict[str, Any]] = {(a, b): {} for a, b in unordered}
    for name, column, kind in _METRICS:
        found: list[dict[str, Any]] = []
        for a, b in unordered:
            assert pairs is not None
            one = _one(pairs, a, b, column, kind, reps, rng)
            results[(a, b)][name] = one
            found.append(one)
        adjusted = holm([f["p"] for f in found])
        for f, p_adj in zip(found, adjusted, strict=True):
            f["p"] = p_adj
            null = 1.0 if kind in _RATIO else 0.0
            excludes = f["lo"] is not None and (f["lo"] > null or f["hi"] < null)
            f["significant"] = bool(excludes and p_adj < ALPHA)
    rows: list[dict[str, Any]] = []
    for (a, b), metrics in results.items():
        rows.append(_row(prep, a, b, metrics, flip=False))
        rows.append(_row(prep, b, a, metrics, flip=True))
    return pl.DataFrame(rows, schema=comparison_schema(), strict=False)


def _one(pairs: _Pairs, a: str, b: str, column: str, kind: str, reps: Any, rng: Resampler) -> dict[str, Any]:
    """Estimate, interval and raw p-value of a vs b for one metric."""
    out: dict[str, Any] = {"est": None, "lo": None, "hi": None, "p": 1.0, "paired": 0}
    if kind != "p95":
        d = pairs.differences(a, b, column)
        if len(d) >= MIN_PAIRED_CASES:
            stat = _median if kind == "median" else _mean
            boot = rng.bootstrap(d, stat)
            assert boot is not None
            est, r = boot
            lo, hi = boot_interval(r)
            out["paired"] = len(d)
            if kind == "median":  # log ratio → ratio
                out.update(est=math.exp(est), lo=math.exp(lo), hi=math.exp(hi), p=wilcoxon_p(d))
            elif kind == "rate":  # pass/fail pairs: McNemar's exact test on the discordant ones
                a_only, b_only, _n = pairs.discordant(a, b)
                out.update(est=est, lo=lo, hi=hi, p=mcnemar_p(a_only, b_only))
            else:
                out.update(est=est, lo=lo, hi=hi, p=boot_p_value(r))
            return out
    ra, rb = reps(a, column, kind), reps(b, column, kind)
    if ra is None or rb is None:
        return out
    if kind in _RATIO:
        if ra[0] <= 0 or rb[0] <= 0:
            return out
        diff = np.log(np.maximum(ra[1], 1e-12)) - np.log(np.maximum(rb[1], 1e-12))
        lo, hi = boot_interval(diff)
        out.update(est=ra[0] / rb[0], lo=math.exp(lo), hi=math.exp(hi))
        if kind == "median":
            out["p"] = mann_whitney_p(_values(pairs.prep, a, column), _values(pairs.prep, b, column))
        else:
            out["p"] = boot_p_value(diff)
    else:
        diff = ra[1] - rb[1]
        lo, hi = boot_interval(diff)
        out.update(est=ra[0] - rb[0], lo=lo, hi=hi, p=boot_p_value(diff))
    return out


def _row(
    prep: Prepared, arm: str, versus: str, metrics: dict[str, dict[str, Any]], *, flip: bool
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "model": prep.model_of[arm],
        "variant": prep.variant_of[arm],
        "arm": arm,
        "versus_model": prep.model_of[versus],
        "versus_variant": prep.variant_of[versus],
        "versus": versus,
    }
    for name, _column, kind in _METRICS:
        m = metrics[name]
        est, lo, hi = m["est"], m["lo"], m["hi"]
        if flip and est is not None:
            if kind in _RATIO:
                est, lo, hi = 1 / est, 1 / hi, 1 / lo
            else:
                est, lo, hi = -est, -hi, -lo
        suffix = "ratio" if kind in _RATIO else "diff"
        row[f"{name}_{suffix}"] = est
        row[f"{name}_{suffix}_lo"] = lo
        row[f"{name}_{suffix}_hi"] = hi
        row[f"{name}_p_holm"] = m["p"]
        row[f"{name}_significant"] = m.get("significant", False)
        row[f"{name}_paired_cases"] = m["paired"]
    return row


def comparison_schema() -> dict[str, pl.DataType]:
    """Fixed columns: the two arms (`arm`, `versus`) and their models and variants, then per metric
    `<metric>_ratio` (arm / versus) or `<metric>_diff` (arm − versus)."""
    schema: dict[str, pl.DataType] = {
        name: pl.String() for name in ("model", "variant", "arm", "versus_model", "versus_variant", "versus")
    }
    for name, _column, kind in _METRICS:
        suffix = "ratio" if kind in _RATIO else "diff"
        for part in ("", "_lo", "_hi"):
            schema[f"{name}_{suffix}{part}"] = pl.Float64()
        schema[f"{name}_p_holm"] = pl.Float64()
        schema[f"{name}_significant"] = pl.Boolean()
        schema[f"{name}_paired_cases"] = pl.Int64()
    return schema
