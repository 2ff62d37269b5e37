"""`harness compare BASELINE CURRENT`: per arm in both runs, flag significant regressions.

An arm is a model, or a model and a variant (`records.arm_of`); runs without variants
compare model by model as before, and two runs with the same variants compare each
model × variant with itself. A regression is a change beyond its threshold **and**
significant: the 95 % bootstrap interval of the change (the two runs' rows resampled
independently) lies wholly on the worse side of "no change". A check with fewer values on
either side than its test needs (`Thresholds.min_samples`, at least 20 for a p95; paired
cases for quality on the same dataset) is not judged: with no regression elsewhere the
comparison ends "not enough data to decide" (the CLI exits 3). Unusable input raises a
`HarnessError` (the CLI exits 2); an arm missing on one side or a different dataset is
reported, not fatal. When one run is a batch run and the other live, the comparison also
gets the batch-vs-live section (`batch_live.py`: cost ratio, turnaround against latency,
answer agreement, the break-even sentence). The methodology card of both runs heads
`compare.md`. Must not call the API.
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
from harness.report.methodology import card_markdown, methodology
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
    score_points: float = 3.0  # mean grader score, in points of the 0–1 scale
    min_samples: int = 10  # fewer values (or paired cases) on a side: the check is not judged


# Exit codes of `harness compare` (2, unusable input, is the HarnessError's).
NO_REGRESSION, REGRESSION, NOT_ENOUGH_DATA = 0, 1, 3


@dataclass
class CompareResult:
    exit_code: int
    markdown: str
    table: pl.DataFrame
    regressions: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    undecided: list[str] = field(default_factory=list)  # checks with too little data to judge
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
    ("mean score", "score", _mean, "points"),
)
_QUALITY = {"pass rate", "mean score"}  # higher is better; paired by case when the datasets agree


def _per_case(prep: Prepared, arm: str, column: str) -> pl.DataFrame:
    """Mean of a quality column per case (repeats averaged) over the arm's graded calls."""
    return (
        prep.calls.filter((pl.col("arm") == arm) & pl.col(column).is_not_null())
        .group_by("case_id")
        .agg(pl.col(column).cast(pl.Float64).mean().alias("v"))
    )


def _paired_differences(base: Prepared, cur: Prepared, arm: str, column: str) -> np.ndarray:
    """Per-case current − baseline over the cases graded in both runs."""
    joined = _per_case(cur, arm, column).join(_per_case(base, arm, column), on="case_id", suffix="_b")
    return (joined.get_column("v") - joined.get_column("v_b")).to_numpy().astype(np.float64)


def _values(prep: Prepared, arm: str, column: str) -> np.ndarray:
    if column in ("is_error", "passed"):
        return prep.outcomes(arm, column)
    return prep.values(arm, column)


def _needs(name: str, th: Thresholds) -> int:
    """Values each side needs for a check: a p95 needs 20 (below that it is close to the maximum)."""
    return max(th.min_samples, 20) if "p95" in name else th.min_samples


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
    same_cases = b_ds is not None and b_ds == c_ds
    rows: list[dict[str, Any]] = []
    for arm in common:
        for name, column, stat, kind in _CHECKS:
            b, c = _values(base, arm, column), _values(cur, arm, column)
            paired = _paired_differences(base, cur, arm, column) if same_cases and name in _QUALITY else None
            row = _check(arm, name, kind, stat, b, c, th, boot, paired)
            rows.append({"model": cur.model_of[arm], "variant": cur.variant_of[arm], **row})
    table = pl.DataFrame(rows, schema=_schema(), strict=False)
    regressions = [f"{r['arm']}: {r['metric']}" for r in rows if r["regression"]]
    undecided = [f"{r['arm']}: {r['metric']}" for r in rows if not r["decided"]]
    cards = [
        ("baseline", methodology(base_manifest, base.calls)),
        ("current", methodology(cur_manifest, cur.calls)),
    ]
    markdown = _markdown(
        table, warnings, regressions, baseline_dir, current_dir, word, undecided, card_markdown(cards)
    )
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
    code = REGRESSION if regressions else (NOT_ENOUGH_DATA if undecided else NO_REGRESSION)
    return CompareResult(
        code,
        markdown,
        table,
        regressions=regressions,
        warnings=warnings,
        undecided=undecided,
        batch_vs_live=versus,
    )


def _check(
    arm: str,
    name: str,
    kind: str,
    stat: Any,
    b: np.ndarray,
    c: np.ndarray,
    th: Thresholds,
    boot: Resampler,
    paired: np.ndarray | None = None,
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
        "decided": True,
        "note": "",
    }
    if kind == "ratio":
        row["threshold"] = (th.cost_pct if "cost" in name else th.latency_pct) / 100
    else:
        points = {"error rate": th.error_rate_points, "mean score": th.score_points}
        row["threshold"] = points.get(name, th.pass_rate_points) / 100
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
    elif paired is not None and len(paired) >= _needs(
        name, th
    ):  # the same cases in both runs: compare them case by case
        got = boot.bootstrap(paired)
        assert got is not None
        lo, hi = boot_interval(got[1])
        row["change"], row["change_lo"], row["change_hi"] = got[0], lo, hi
        row["note"] = f"paired over {len(paired)} cases"
    else:
        d = rc[1] - rb[1]
        lo, hi = boot_interval(d)
        row["change"], row["change_lo"], row["change_hi"] = rc[0] - rb[0], lo, hi
    worse_if_up = name not in _QUALITY
    if worse_if_up:
        row["significant"] = row["change_lo"] > 0
        row["regression"] = bool(row["significant"] and row["change"] > row["threshold"])
    else:
        row["significant"] = row["change_hi"] < 0
        row["regression"] = bool(row["significant"] and row["change"] < -row["threshold"])
    need = _needs(name, th)
    if paired is not None and name in _QUALITY and len(paired) < need:
        row["decided"] = False
        row["note"] = f"not enough data: {len(paired)} paired cases (needs ≥ {need})"
    elif min(len(b), len(c)) < need:
        row["decided"] = False
        row["note"] = f"not enough data: {len(b)} vs {len(c)} samples (needs ≥ {need})"
    elif min(len(b), len(c)) < 20:
        row["note"] = f"few samples ({len(b)} vs {len(c)})"
    elif name in _QUALITY and not row["note"]:
        row["note"] = "unpaired (different datasets)"
    if not row["decided"]:
        row["significant"] = row["regression"] = False
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
        "decided": pl.Boolean(),
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
    return f"{v * 100:+.1f} pts" if metric in ("error rate", "pass rate", "mean score") else f"{v:+.1%}"


def _markdown(
    table: pl.DataFrame,
    warnings: list[str],
    regressions: list[str],
    base: Path,
    cur: Path,
    word: str,
    undecided: list[str],
    card: str,
) -> str:
    if regressions:
        head = f"**{len(regressions)} regression(s)**: " + ", ".join(regressions)
    elif undecided:
        head = (
            f"**Not enough data to decide** ({len(undecided)} check(s) with too few samples): "
            + ", ".join(undecided)
        )
    else:
        head = "**No regression.**"
    rows = []
    for r in table.iter_rows(named=True):
        verdict = (
            "REGRESSION"
            if r["regression"]
            else ("significant, within threshold" if r["significant"] else "ok")
        )
        if not r["decided"]:
            verdict = "undecided"
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
    out = [f"# Compare: {Path(base).name} → {Path(cur).name}", "", card, head, ""]
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
