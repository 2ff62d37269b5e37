"""Drift: tonight's figure of an arm against that arm's own history (`harness history`).

The rule, per metric of `DRIFT_METRICS` (latency and cost figures on the log scale, so a
change is a ratio; rates in points):

1. A *series* is one arm on one dataset (sha256) against one target (kind and host): runs
   of another dataset or target never enter it.
2. Tonight is the latest run (or the one named); its history is the previous `window` runs
   of the same series (default 14) that measured the metric. With fewer than `min_history`
   (default 5) the verdict is `insufficient history`.
3. centre = the median of the history; spread = the larger of two estimates of its standard
   deviation, each scaled to equal it for normal data at this number of nights k:
   - 1.4826 × the median absolute deviation (MAD) × Croux and Rousseeuw's small-sample
     factor (1.206 at k = 5, k / (k − 0.8) above 9): unmoved by up to half the nights going
     wild, but with a dozen nights or fewer often small by chance (it reads the middle of
     the history only);
   - with five nights or more, 1.2533 × k / (k − 2.4) × the mean absolute deviation of all
     but the most deviant night: it reads every other night, so a history whose middle
     happens to agree does not look quieter than it is, and leaving the most deviant night
     out keeps one bad night (an incident, a loaded runner) from hiding later drifts.
   On the simulated nightly series the rule was chosen with (README), this pair raised no
   false alarm in 870 checks where the corrected MAD alone raised 11.
4. scale = the spread; for the rates and the cost per passed answer (which moves with the
   pass count), at least tonight's own standard error, (hi − lo) / 3.92 of its 95 %
   interval (for the cost per passed answer, also of the pass rate's Wilson interval on the
   log scale, since a bootstrap of 8 passes out of 8 has no spread at all): a rate is never
   judged more precisely than its binomial noise allows, so a history of identical rates
   (spread 0, e.g. 100 % every night) does not turn one failed case into a drift. Percentiles and the cost per call use the history's spread alone: the
   same cases run every night, so the night-to-night spread is the noise that matters (an
   interval computed as if tonight's calls were independent draws overstates it when the
   cases differ in length), and with a spread of 0 the practical minimum below decides.
5. robust z = (tonight − centre) / scale. **drift** when |z| ≥ `z` (default 3.5, Iglewicz and
   Hoaglin's outlier cut-off for this modified z-score) **and** the change from the centre is
   at least the practical minimum (default: 10 % for a median, 20 % for a p95, 5 % for a cost,
   2 points of error rate, 3 points of pass rate); otherwise **ok**.
6. Each drift has a direction, worse or better (higher latency, cost or error rate is worse;
   a lower pass rate is worse). `--fail-on-drift` fails on a drift for the worse only. A
   timing drift on a night whose event loop lagged by a quarter of the change or more
   (the manifest's loop lag, a methodology fact) says so: the client may have added it.

Pure: a history frame in, a verdict frame out; no I/O, no rendering.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from harness.errors import ConfigError

__all__ = [
    "DRIFT",
    "DRIFT_METRICS",
    "INSUFFICIENT",
    "OK",
    "DriftMetric",
    "DriftRule",
    "history_spread",
    "judge_drift",
    "series_key",
    "verdict_schema",
]

DRIFT, OK, INSUFFICIENT = "drift", "ok", "insufficient history"
MAD_TO_SD = 1.4826
MEAN_AD_TO_SD = 1.2533  # sqrt(pi / 2)
# Croux and Rousseeuw (1992): the MAD's small-sample bias factors (k / (k - 0.8) above 9).
_MAD_SMALL = {2: 1.196, 3: 1.495, 4: 1.363, 5: 1.206, 6: 1.200, 7: 1.140, 8: 1.129, 9: 1.107}
Z95 = 3.919927969080108  # width of a 95 % interval in standard errors


@dataclass(frozen=True)
class DriftMetric:
    column: str  # the history.parquet column (a summary.parquet column, or its ×1000)
    label: str
    kind: str  # "ratio" (log scale) or "points"
    threshold: str  # the DriftRule field of its practical minimum
    higher_is_worse: bool = True
    count_noise: bool = False  # driven by a count of events: tonight's interval floors the scale
    noise_of: str | None = None  # ... and so does that count's rate's interval (relative)

    @property
    def lo(self) -> str:
        return _bound(self.column, "lo")

    @property
    def hi(self) -> str:
        return _bound(self.column, "hi")


def _bound(column: str, end: str) -> str:
    for unit in ("_s", "_usd"):
        if column.endswith(unit):
            return f"{column[: -len(unit)]}_{end}{unit}"
    return f"{column}_{end}"


DRIFT_METRICS: tuple[DriftMetric, ...] = (
    DriftMetric("ttft_p50_s", "TTFT p50", "ratio", "median_pct"),
    DriftMetric("ttft_p95_s", "TTFT p95", "ratio", "tail_pct"),
    DriftMetric("first_text_p50_s", "time to first text p50", "ratio", "median_pct"),
    DriftMetric("first_text_p95_s", "time to first text p95", "ratio", "tail_pct"),
    DriftMetric("latency_p50_s", "latency p50", "ratio", "median_pct"),
    DriftMetric("latency_p95_s", "latency p95", "ratio", "tail_pct"),
    DriftMetric("error_rate", "error rate", "points", "error_points", count_noise=True),
    DriftMetric("cost_per_1k_calls_usd", "cost per 1k calls", "ratio", "cost_pct"),
    DriftMetric(
        "cost_per_pass_usd",
        "cost per passed answer",
        "ratio",
        "cost_pct",
        count_noise=True,
        noise_of="pass_rate",
    ),
    DriftMetric("pass_rate", "pass rate", "points", "pass_points", higher_is_worse=False, count_noise=True),
)


@dataclass(frozen=True)
class DriftRule:
    """The drift rule's parameters (module docstring); percentages and points as numbers (10 = 10 %)."""

    window: int = 14
    min_history: int = 5
    z: float = 3.5
    median_pct: float = 10.0
    tail_pct: float = 20.0
    cost_pct: float = 5.0
    error_points: float = 2.0
    pass_points: float = 3.0

    def __post_init__(self) -> None:
        """Refuse parameters no rule can use, naming `harness history`'s flag."""
        if self.window < 1 or self.min_history < 1:
            name = "--window" if self.window < 1 else "--min-history"
            raise ConfigError(name, "must be at least 1")
        if self.min_history > self.window:
            raise ConfigError("--min-history", f"{self.min_history} is more than --window {self.window}")
        if not self.z > 0:
            raise ConfigError("--z", "must be above 0")
        for name in ("median_pct", "tail_pct", "cost_pct", "error_points", "pass_points"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError("--" + name.replace("_", "-"), f"must be a number ≥ 0, got {value}")

    def minimum(self, metric: DriftMetric) -> float:
        """The practical minimum change as a fraction (ratio) or a share (points)."""
        return float(getattr(self, metric.threshold)) / 100

    def describe(self) -> str:
        return (
            f"tonight vs the median of the arm's last {self.window} runs (at least {self.min_history}); "
            f"drift when |robust z| ≥ {self.z:g} and the change ≥ {self.median_pct:g} % (p50), "
            f"{self.tail_pct:g} % (p95), {self.cost_pct:g} % (cost), {self.error_points:g} pts (error rate), "
            f"{self.pass_points:g} pts (pass rate)"
        )


def series_key(dataset_sha256: Any, dataset_path: Any, target: Any, target_host: Any) -> str:
    """What a series shares besides the arm: the dataset (its sha256, else its path) and the target."""
    ds = str(dataset_sha256)[:12] if dataset_sha256 else f"path {dataset_path or '?'}"
    where = f"{target or 'target not recorded'}" + (f"@{target_host}" if target_host else "")
    return f"dataset {ds} · {where}"


def verdict_schema() -> dict[str, pl.DataType]:
    f, s = pl.Float64(), pl.String()
    return {
        "run_id": s,
        "series": s,
        "arm": s,
        "metric": s,
        "label": s,
        "value": f,
        "history_n": pl.Int64(),
        "median": f,
        "change": f,
        "kind": s,
        "z": f,
        "spread": f,  # the history's spread (log scale for ratios): step 3
        "scale": f,  # what z divides by: the spread, or tonight's own noise when larger (step 4)
        "minimum": f,
        "verdict": s,
        "direction": s,
        "note": s,
    }


def _t(kind: str, v: float) -> float:
    return math.log(v) if kind == "ratio" else v


def _usable(kind: str, v: Any) -> bool:
    return v is not None and math.isfinite(v) and (kind != "ratio" or v > 0)


def _value(kind: str, v: Any) -> float | None:
    """`v` as a float when the metric can use it (finite; positive on the log scale), else None."""
    return float(v) if _usable(kind, v) else None


def history_spread(t: np.ndarray) -> float:
    """The larger of the two standard-deviation estimates of step 3 (module docstring)."""
    k = len(t)
    if k < 2:
        return 0.0
    deviations = np.sort(np.abs(t - float(np.median(t))))
    spread = MAD_TO_SD * _MAD_SMALL.get(k, k / (k - 0.8)) * float(np.median(deviations))
    if k >= 5:
        trimmed = float(np.mean(deviations[:-1]))
        spread = max(spread, MEAN_AD_TO_SD * k / (k - 2.4) * trimmed)
    return spread


def _own_noise(metric: DriftMetric, tonight: dict[str, Any]) -> float:
    """Tonight's own standard error on the metric's scale (step 4); 0 for the other metrics."""
    if not metric.count_noise:
        return 0.0
    kind = metric.kind
    lo, hi = _value(kind, tonight.get(metric.lo)), _value(kind, tonight.get(metric.hi))
    own = (_t(kind, hi) - _t(kind, lo)) / Z95 if lo is not None and hi is not None else 0.0
    if metric.noise_of:  # a ratio over a count: at least the count's relative noise (its Wilson interval)
        base = DriftMetric(metric.noise_of, "", "ratio", "")
        c_lo, c_hi = tonight.get(base.lo), tonight.get(base.hi)
        if c_hi is not None and c_hi > 0 and c_lo is not None:
            own = max(own, (math.log(c_hi) - math.log(c_lo)) / Z95 if c_lo > 0 else math.inf)
    return own


def _judge_one(
    metric: DriftMetric, tonight: dict[str, Any], past: list[dict[str, Any]], rule: DriftRule
) -> dict[str, Any] | None:
    kind = metric.kind
    value = _value(kind, tonight.get(metric.column))
    if value is None:
        return None  # not measured tonight: nothing to judge
    hist = [v for v in (_value(kind, r.get(metric.column)) for r in past) if v is not None][-rule.window :]
    row: dict[str, Any] = {
        "metric": metric.column,
        "label": metric.label,
        "value": value,
        "history_n": len(hist),
        "median": None,
        "change": None,
        "kind": kind,
        "z": None,
        "spread": None,
        "scale": None,
        "minimum": rule.minimum(metric),
        "verdict": INSUFFICIENT,
        "direction": None,
        "note": "",
    }
    if len(hist) < rule.min_history:
        row["note"] = f"{len(hist)} earlier run(s) of this series; needs {rule.min_history}"
        return row
    t = np.array([_t(kind, v) for v in hist])
    centre = float(np.median(t))
    spread = history_spread(t)
    own = _own_noise(metric, tonight)
    scale = max(spread, own)
    diff = _t(kind, value) - centre
    z = diff / scale if scale > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))
    change = math.expm1(diff) if kind == "ratio" else diff
    row["median"] = math.exp(centre) if kind == "ratio" else centre
    row["change"], row["z"] = change, z
    row["spread"], row["scale"] = spread, scale
    if abs(z) >= rule.z and abs(change) >= row["minimum"]:
        row["verdict"] = DRIFT
        row["direction"] = "worse" if (change > 0) == metric.higher_is_worse else "better"
        lag = tonight.get("loop_lag_max_ms")
        moved_ms = abs(value - row["median"]) * 1000
        if metric.column.endswith("_s") and isinstance(lag, int | float) and lag >= 0.25 * moved_ms:
            row["note"] = (
                f"the harness's event loop lagged up to {lag:.0f} ms tonight (measurement health): "
                "part of this may be the client's own delay"
            )
    else:
        row["verdict"] = OK
    return row


def judge_drift(
    history: pl.DataFrame, rule: DriftRule | None = None, run_id: str | None = None
) -> pl.DataFrame:
    """One verdict per (arm of tonight's run, metric it measured): `verdict_schema()` columns.

    `history` holds `history.parquet`'s rows (`run_id`, `run_start`, `series`, `arm` and the
    metric columns with their `_lo`/`_hi` bounds); tonight is `run_id`, else the latest run.
    """
    rule = rule or DriftRule()
    if history.height == 0:
        return pl.DataFrame(schema=verdict_schema())
    runs = history.select("run_id", "run_start").unique("run_id").sort("run_start", nulls_last=False)
    tonight_id = run_id or str(runs.get_column("run_id")[-1])
    tonight_rows = history.filter(pl.col("run_id") == tonight_id)
    if tonight_rows.height == 0:
        return pl.DataFrame(schema=verdict_schema())
    start = tonight_rows.get_column("run_start")[0]
    earlier = history.filter((pl.col("run_id") != tonight_id) & (pl.col("run_start") < start)).sort(
        "run_start"
    )
    out: list[dict[str, Any]] = []
    for tonight in tonight_rows.iter_rows(named=True):
        past = earlier.filter(
            (pl.col("series") == tonight["series"]) & (pl.col("arm") == tonight["arm"])
        ).to_dicts()
        for metric in DRIFT_METRICS:
            row = _judge_one(metric, tonight, past, rule)
            if row is not None:
                out.append({"run_id": tonight_id, "series": tonight["series"], "arm": tonight["arm"], **row})
    return pl.DataFrame(out, schema=verdict_schema(), strict=False)
