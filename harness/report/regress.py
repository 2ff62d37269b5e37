"""`harness compare BASELINE CURRENT`: per arm in both runs, flag significant regressions.

An arm is a model, or a model and a variant (`records.arm_of`); runs without variants
compare model by model as before, and two runs with the same variants compare each
model × variant with itself. A regression is a change beyond its threshold **and**
significant: the 95 % bootstrap interval of the change (the two runs' rows resampled
independently) lies wholly on the worse side of "no change". Unusable input raises a
`HarnessError` (the CLI exits 2); an arm missing on one side or a different dataset is
reported, not fatal. When one run is a batch run and the other live, the comparison also
gets the batch-vs-live section (`batch_live.py`: cost ratio, turnaround against latency,
answer agreement, the break-even sentence). Must not call the API.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from harness.errors import HarnessError, StorageError
from harness.records import arm_word
from harness.report.batch_live import BatchVsLive, batch_vs_live, is_batch_run
from harness.report.prepared import Prepared, prepare
from harness.report.render_md import md_table
from harness.report.stats import Resampler, boot_interval, quantile_rows
from harness.rundir import RunDir

__all__ = ["CompareResult", "Thresholds", "compare_runs"]


@dataclass(frozen=True)
class Thresholds:
    """How much worse counts as a regression: percentages for latency/cost, points for rates."""

    latency_pct: float = 10.0
    error_rate_points: float = 2.0
    cost_pct: float = 5.0
    pass_rate_points: float = 3.0


@dataclass
class CompareResult:
    exit_code: int
    markdown: str
    table: pl.DataFrame
    regressions: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    batch_vs_live: BatchVsLive | None = None


def _q(q: float) -> Any:
    return lambda a: quantile_rows(a, q)


def _mean(a: np.ndarray) -> np.ndarray:
    return np.asarray(a.mean(axis=-1))


# name, column, statistic, kind ("ratio": relative change; "points": absolute change of a rate)
_CHECKS: tuple[tuple[str, str, Any, str], ...] = (
    ("p50 latency", "latency_s", _q(0.5), "ratio"),
    ("p95 latency", "latency_s", _q(0.95), "ratio"),
    ("p95 TTFT", "ttft_s", _q(0.95), "ratio"),
    ("error rate", "is_error", _mean, "points"),
    ("mean cost per call", "total_cost_usd", _mean, "ratio"),
    ("pass rate", "passed", _mean, "points"),
)


def _values(prep: Prepared, arm: str, column: str) -> np.ndarray:
    if column in ("is_error", "passed"):
        return prep.outcomes(arm, column)
    return prep.values(arm, column)


def _load(run_dir: Path, role: str) -> tuple[Prepared, dict[str, Any]]:
    try:
        run = RunDir.read(run_dir)
    except StorageError as exc:
        raise StorageError(f"{role} run: {exc}") from None
    manifest = run.manifest
    prep = prepare(run.load_calls(), manifest)
    if prep.calls.height == 0:
        raise StorageError(f"{role} run {run_dir}: no call records")
    return prep, manifest


def _dataset_id(manifest: dict[str, Any]) -> str | None:
    ds = manifest.get("dataset")
    if isinstance(ds, dict):
        return ds.get("sha256") or ds.get("path")
    return ds if isinstance(ds, str) else None


def compare_runs(
    baseline_dir: Path,
    current_dir: Path,
    *,
    thresholds: Thresholds | None = None,
    out_dir: Path | None = None,
    seed: int = 0,
) -> CompareResult:
    """Compare two runs, write compare.md and compare.parquet into `out_dir` (default: current)."""
    th = thresholds or Thresholds()
    base, base_manifest = _load(baseline_dir, "baseline")
    cur, cur_manifest = _load(current_dir, "current")
    warnings: list[str] = []
    b_ds, c_ds = _dataset_id(base_manifest), _dataset_id(cur_manifest)
    if b_ds and c_ds and b_ds != c_ds:
        warnings.append(
            "the two runs used different datasets: differences may come from the prompts, not the models"
        )
    word = arm_word([*base.variant_of.values(), *cur.variant_of.values()])
    common = [a for a in cur.arms if a in base.arms]
    for a in base.arms:
        if a not in common:
            warnings.append(f"{word} {a} is in the baseline only: not compared")
    for a in cur.arms:
        if a not in common:
            warnings.append(f"{word} {a} is in the current run only: not compared")
    if not common:
        raise HarnessError(
            f"no {word} in common between {baseline_dir} and {current_dir}: nothing to compare"
        )
    boot = Resampler(seed + 7)
    rows: list[dict[str, Any]] = []
    for arm in common:
        for name, column, stat, kind in _CHECKS:
            row = _check(
                arm, name, kind, stat, _values(base, arm, column), _values(cur, arm, column), th, boot
            )
            rows.append({"model": cur.model_of[arm], "variant": cur.variant_of[arm], **row})
    table = pl.DataFrame(rows, schema=_schema(), strict=False)
    regressions = [f"{r['arm']}: {r['metric']}" for r in rows if r["regression"]]
    markdown = _markdown(table, warnings, regressions, baseline_dir, current_dir, word)
    versus = None
    base_batch, cur_batch = is_batch_run(base, base_manifest), is_batch_run(cur, cur_manifest)
    if base_batch != cur_batch:
        live, batch = (cur, base) if base_batch else (base, cur)
        versus = batch_vs_live(live, batch, common, seed=seed)
        markdown += "\n" + versus.markdown
    if out_dir is None:  # into the current run's directory, through its owner
        run = RunDir.read(current_dir)
        run.write_atomic("compare.md", markdown.encode())
        run.write_parquet("compare.parquet", table)
        if versus is not None:
            run.write_parquet("compare-batch-live.parquet", versus.table)
    else:
        out = Path(out_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
            (out / "compare.md").write_text(markdown)
            table.write_parquet(out / "compare.parquet")
            if versus is not None:
                versus.table.write_parquet(out / "compare-batch-live.parquet")
        except OSError as exc:
            raise StorageError(f"{out}: cannot write the comparison ({exc.strerror or exc})") from exc
    return CompareResult(1 if regressions else 0, markdown, table, regressions, warnings, versus)


def _check(
    arm: str, name: str, kind: str, stat: Any, b: np.ndarray, c: np.ndarray, th: Thresholds, boot: Resampler
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "arm": arm,
        "metric": name,
        "baseline": None,
        "current": None,
        "change": None,
        "change_lo": None,
        "change_hi": None,
        "threshold": None,
        "significant": False,
        "regression": False,
        "note": "",
    }
    if kind == "ratio":
        row["threshold"] = (th.cost_pct if "cost" in name else th.latency_pct) / 100
    else:
        row["threshold"] = (th.error_rate_points if "error" in name else th.pass_rate_points) / 100
    rb, rc = boot.bootstrap(b, stat), boot.bootstrap(c, stat)
    if rb is None or rc is None:
        row["note"] = "not measured in " + (
            "either run" if rb is None and rc is None else ("baseline" if rb is None else "current")
        )
        return row
    row["baseline"], row["current"] = rb[0], rc[0]
    if kind == "ratio":
        if rb[0] <= 0 or rc[0] <= 0:
            row["note"] = "zero baseline"
            return row
        d = np.log(np.maximum(rc[1], 1e-15)) - np.log(np.maximum(rb[1], 1e-15))
        lo, hi = boot_interval(d)
        row["change"], row["change_lo"], row["change_hi"] = (
            rc[0] / rb[0] - 1,
            math.exp(lo) - 1,
            math.exp(hi) - 1,
        )
    else:
        d = rc[1] - rb[1]
        lo, hi = boot_interval(d)
        row["change"], row["change_lo"], row["change_hi"] = rc[0] - rb[0], lo, hi
    worse_if_up = name != "pass rate"
    if worse_if_up:
        row["significant"] = row["change_lo"] > 0
        row["regression"] = bool(row["significant"] and row["change"] > row["threshold"])
    else:
        row["significant"] = row["change_hi"] < 0
        row["regression"] = bool(row["significant"] and row["change"] < -row["threshold"])
    if min(len(b), len(c)) < 20:
        row["note"] = f"few samples ({len(b)} vs {len(c)})"
    return row


def _schema() -> dict[str, pl.DataType]:
    f = pl.Float64()
    return {
        "model": pl.String(),
        "variant": pl.String(),
        "arm": pl.String(),
        "metric": pl.String(),
        "baseline": f,
        "current": f,
        "change": f,
        "change_lo": f,
        "change_hi": f,
        "threshold": f,
        "significant": pl.Boolean(),
        "regression": pl.Boolean(),
        "note": pl.String(),
    }


def _fmt(metric: str, v: float | None) -> str:
    if v is None:
        return "–"
    if "latency" in metric or "TTFT" in metric:
        return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"
    if "cost" in metric:
        return f"${v:.6f}"
    return f"{v:.1%}"


def _change(metric: str, v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v * 100:+.1f} pts" if metric in ("error rate", "pass rate") else f"{v:+.1%}"


def _markdown(
    table: pl.DataFrame, warnings: list[str], regressions: list[str], base: Path, cur: Path, word: str
) -> str:
    head = (
        (f"**{len(regressions)} regression(s)**: " + ", ".join(regressions))
        if regressions
        else "**No regression.**"
    )
    rows = []
    for r in table.iter_rows(named=True):
        verdict = (
            "REGRESSION"
            if r["regression"]
            else ("significant, within threshold" if r["significant"] else "ok")
        )
        if r["note"]:
            verdict += f" ({r['note']})"
        ci = (
            "–"
            if r["change_lo"] is None
            else f"{_change(r['metric'], r['change_lo'])} … {_change(r['metric'], r['change_hi'])}"
        )
        rows.append(
            [
                r["arm"],
                r["metric"],
                _fmt(r["metric"], r["baseline"]),
                _fmt(r["metric"], r["current"]),
                _change(r["metric"], r["change"]),
                ci,
                _change(r["metric"], r["threshold"]).lstrip("+"),
                verdict,
            ]
        )
    out = [f"# Compare: {Path(base).name} → {Path(cur).name}", "", head, ""]
    out += [f"- warning: {w}" for w in warnings]
    if warnings:
        out.append("")
    out.append(
        md_table(
            [word, "metric", "baseline", "current", "change", "95 % CI of change", "threshold", "verdict"],
            rows,
        )
    )
    out += [
        "",
        "_A regression is a change beyond its threshold whose 95 % bootstrap interval lies wholly on the worse side._",
    ]
    return "\n".join(out) + "\n"
