"""`harness history RUN_DIR... --out DIR`: each arm's figures run after run, and drift against its own history.

Inputs, in any mix: run directories, results directories (every run directory directly
inside), and earlier histories (a `history.parquet`, or a directory holding one: what the
nightly workflow downloads). Each run directory is read through its `RunDir`, prepared and
summarized by the report's own `summarize` (the figures are the report's, computed once),
and becomes one row per arm beside its methodology facts (`report.methodology`). Rows of
an earlier history are kept as they were, except for a run read again here (the fresh row
wins). The newest `keep` runs are kept.

Writes into `--out`: `history.parquet` (every row), `drift.parquet` (tonight's verdicts,
`report.drift`), `history.md` and `history.html` (the methodology card of tonight's run,
the verdicts, the last nights' table, a trend chart per metric), and the charts' PNGs.
A series is an arm on one dataset and one target: the tables and charts show tonight's
series only and name the others. Must not call the API.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from harness.errors import HarnessError, StorageError
from harness.report.drift import DRIFT, INSUFFICIENT, OK, DriftRule, judge_drift, series_key
from harness.report.methodology import Methodology, card_from_facts, card_table, methodology
from harness.report.prepared import prepare
from harness.report.render_html import render_html
from harness.report.render_md import render_markdown
from harness.report.summary import summarize
from harness.report.tables import Table, ci, fmt_s
from harness.report.trends import trend_charts
from harness.rundir import RunDir, atomic_write_bytes

__all__ = [
    "HISTORY_FILE",
    "SUMMARY_COLUMNS",
    "HistoryResult",
    "history_rows",
    "write_history",
]

HISTORY_FILE = "history.parquet"
DRIFT_FILE = "drift.parquet"

# summary.parquet columns each history row copies as they are.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "model",
    "variant",
    "arm",
    "calls",
    "ok",
    "errors",
    "cancelled",
    "error_rate",
    "error_rate_lo",
    "error_rate_hi",
    *(
        f"{prefix}_{name}{end}_s"
        for prefix in ("ttft", "first_text", "latency")
        for name in ("p50", "p95")
        for end in ("", "_lo", "_hi")
    ),
    "ttft_n",
    "first_text_n",
    "latency_n",
    "mean_cost_per_call_usd",
    "mean_cost_per_call_lo_usd",
    "mean_cost_per_call_hi_usd",
    "cost_per_1k_calls_usd",
    "total_cost_usd",
    "cost_per_pass_usd",
    "cost_per_pass_lo_usd",
    "cost_per_pass_hi_usd",
    "pass_n",
    "pass_rate",
    "pass_rate_lo",
    "pass_rate_hi",
)


@dataclass
class HistoryResult:
    history: pl.DataFrame
    verdicts: pl.DataFrame
    markdown: str
    history_md: Path
    history_html: Path
    drift: list[str] = field(default_factory=list)  # "arm: metric" drifting for the worse
    better: list[str] = field(default_factory=list)  # drifting for the better (reported, never failing)
    insufficient: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def history_rows(run: RunDir, *, seed: int = 0) -> pl.DataFrame:
    """One row per arm of a run: the summary's figures and the run's methodology facts."""
    manifest = run.manifest
    prep = prepare(run.load_calls(), manifest)
    summary = summarize(prep, seed=seed)
    facts = methodology(manifest, prep.calls).facts
    run_id = str(manifest.get("run_id") or run.path.name)
    start = facts["window_start"]
    status = manifest.get("status")
    rows = []
    for r in summary.select([c for c in SUMMARY_COLUMNS if c in summary.columns]).iter_rows(named=True):
        rows.append(
            {
                "run_id": run_id,
                "run_start": start,
                "run_status": status if isinstance(status, str) else None,
                "series": series_key(
                    facts["dataset_sha256"], facts["dataset_path"], facts["target"], facts["target_host"]
                ),
                **r,
                # The same interval as the mean cost per call, in the unit of cost_per_1k_calls_usd.
                "cost_per_1k_calls_lo_usd": _times(r["mean_cost_per_call_lo_usd"], 1000),
                "cost_per_1k_calls_hi_usd": _times(r["mean_cost_per_call_hi_usd"], 1000),
                **facts,
            }
        )
    if not rows:
        return pl.DataFrame()
    return pl.DataFrame(rows, strict=False).with_columns(
        pl.col("run_start", "window_start", "window_end").cast(pl.Datetime("us", "UTC"))
    )


def _times(v: float | None, k: float) -> float | None:
    return None if v is None else v * k


def _read_history(path: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise StorageError(f"{path}: not a readable history ({exc})") from exc


def collect(paths: Iterable[Path], *, seed: int = 0) -> tuple[pl.DataFrame, list[str]]:
    """Every row of the inputs (see the module docstring) and the warnings about skipped inputs."""
    fresh: list[pl.DataFrame] = []
    earlier: list[pl.DataFrame] = []
    warnings: list[str] = []
    for path in map(Path, paths):
        if path.is_file():
            if path.suffix != ".parquet":
                raise HarnessError(f"{path}: not a run directory, results directory or history.parquet")
            earlier.append(_read_history(path))
            continue
        if not path.is_dir():
            raise HarnessError(f"{path}: no such run directory, results directory or history")
        if (path / HISTORY_FILE).is_file():
            earlier.append(_read_history(path / HISTORY_FILE))
        runs = (
            [path] if RunDir.is_run_dir(path) else sorted(c for c in path.iterdir() if RunDir.is_run_dir(c))
        )
        for run_dir in runs:
            rows = history_rows(RunDir.read(run_dir), seed=seed)
            if rows.height == 0:
                warnings.append(f"{run_dir}: no call records, left out")
            else:
                fresh.append(rows)
    new = pl.concat(fresh, how="diagonal_relaxed") if fresh else pl.DataFrame()
    old = [h for h in earlier if h.height and "run_id" in h.columns]
    if new.height:
        ids = new.get_column("run_id").unique().to_list()
        old = [h.filter(~pl.col("run_id").is_in(ids)) for h in old]
    frames = [f for f in (new, *old) if f.height]
    if not frames:
        return pl.DataFrame(), warnings
    rows = pl.concat(frames, how="diagonal_relaxed")
    rows = rows.unique(["run_id", "arm"], keep="first", maintain_order=True)
    return rows.sort(["run_start", "arm"], nulls_last=False), warnings


def _keep(rows: pl.DataFrame, keep: int) -> pl.DataFrame:
    runs = rows.select("run_id", "run_start").unique("run_id").sort("run_start", nulls_last=False)
    kept = runs.tail(keep).get_column("run_id").to_list()
    return rows.filter(pl.col("run_id").is_in(kept))


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v:.1%}"


def _usd(v: float | None) -> str:
    if v is None:
        return "–"
    return f"${v:.6f}" if abs(v) < 0.01 else f"${v:,.4f}"


def _fmt(metric: str, v: float | None) -> str:
    if metric.endswith("_s"):
        return fmt_s(v)
    if metric.endswith("_usd"):
        return _usd(v)
    return _pct(v)


def _change(kind: str, v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:+.1%}" if kind == "ratio" else f"{v * 100:+.1f} pts"


def _when(v: Any) -> str:
    return f"{v:%Y-%m-%d %H:%M}" if isinstance(v, datetime) else "–"


def _verdict_table(verdicts: pl.DataFrame, rule: DriftRule) -> Table:
    t = Table(
        "Drift: tonight against each arm's own history",
        ["arm", "metric", "tonight", "history median (runs)", "change", "robust z", "minimum", "verdict"],
        note=f"Rule: {rule.describe()}. robust z = (tonight − median) / scale; the scale is the history's "
        "spread (the larger of the small-sample-corrected MAD and mean absolute deviation without the most "
        "deviant night), and for rates and the cost per passed answer at least tonight's own binomial noise. "
        "Latency and cost are compared as ratios, rates in points.",
    )
    for r in verdicts.iter_rows(named=True):
        verdict = r["verdict"] if r["verdict"] != DRIFT else f"**DRIFT ({r['direction']})**"
        z = (
            "–"
            if r["z"] is None
            else (f"{r['z']:+.1f}" if abs(r["z"]) < 1e6 else ("+∞" if r["z"] > 0 else "−∞"))
        )
        t.rows.append(
            [
                r["arm"],
                r["label"],
                _fmt(r["metric"], r["value"]),
                f"{_fmt(r['metric'], r['median'])} ({r['history_n']})",
                _change(r["kind"], r["change"]),
                z,
                _change(r["kind"], r["minimum"]).lstrip("+"),
                verdict if r["verdict"] == OK or not r["note"] else f"{verdict} ({r['note']})",
            ]
        )
    return t


def _nights_table(series: pl.DataFrame, nights: int) -> Table:
    runs = series.select("run_id", "run_start").unique("run_id").sort("run_start", nulls_last=False)
    last = runs.tail(nights).get_column("run_id").to_list()
    rows = series.filter(pl.col("run_id").is_in(last)).sort(["run_start", "arm"], nulls_last=False)
    t = Table(
        f"Last {len(last)} night(s)",
        [
            "run",
            "start (UTC)",
            "arm",
            "calls",
            "error rate",
            "TTFT p50",
            "TTFT p95",
            "first text p50",
            "latency p50",
            "latency p95",
            "cost / 1k calls",
            "cost / passed answer",
            "pass rate",
            "prices",
        ],
        note="[lo–hi]: the run's 95 % interval (order statistics for percentiles, Wilson for rates, "
        "bootstrap for costs), as in each run's report.",
    )

    def g(r: dict[str, Any], k: str) -> Any:
        return r.get(k)

    for r in rows.iter_rows(named=True):
        t.rows.append(
            [
                str(r["run_id"]),
                _when(r["run_start"]),
                r["arm"],
                str(g(r, "calls") or 0),
                _pct(g(r, "error_rate")),
                fmt_s(g(r, "ttft_p50_s")),
                fmt_s(g(r, "ttft_p95_s")),
                fmt_s(g(r, "first_text_p50_s")),
                ci(g(r, "latency_p50_s"), g(r, "latency_p50_lo_s"), g(r, "latency_p50_hi_s")),
                fmt_s(g(r, "latency_p95_s")),
                _usd(g(r, "cost_per_1k_calls_usd")),
                _usd(g(r, "cost_per_pass_usd")),
                ci(g(r, "pass_rate"), g(r, "pass_rate_lo"), g(r, "pass_rate_hi"), _pct),
                str(g(r, "price_version") or "–"),
            ]
        )
    return t


# Methodology facts whose change within the series is worth a line (a figure may move because of them).
_WATCHED = (
    ("harness_version", "harness"),
    ("sdk_version", "SDK"),
    ("python_version", "Python"),
    ("event_loop", "event loop"),
    ("client_cpus", "CPUs"),
    ("load_mode", "load"),
    ("concurrency", "concurrency"),
    ("rate_per_s", "rate"),
    ("price_version", "price table"),
)


def _changes(series: pl.DataFrame) -> list[str]:
    out = []
    ordered = series.sort("run_start", nulls_last=False)
    for column, name in _WATCHED:
        if column not in ordered.columns:
            continue
        values = ordered.select("run_start", column).unique(column, keep="first", maintain_order=True)
        if values.height > 1:
            steps = [f"{v[column]} (from {_when(v['run_start'])})" for v in values.iter_rows(named=True)]
            out.append(f"{name} changed within this series: " + " → ".join(steps))
    return out


def _headline(verdicts: pl.DataFrame, drift: list[str], better: list[str], insufficient: list[str]) -> str:
    if verdicts.height == 0:
        return "No verdict: tonight's run measured nothing to judge."
    if drift:
        return f"Drift for the worse in {len(drift)} check(s): " + ", ".join(drift)
    judged = verdicts.filter(pl.col("verdict") != INSUFFICIENT).height
    parts = []
    if insufficient:
        parts.append(f"Insufficient history for {len(insufficient)} check(s)")
    if better:
        parts.append(f"drift for the better in {len(better)} check(s): " + ", ".join(better))
    if judged:
        parts.append(f"no drift for the worse in {judged} judged check(s)")
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def write_history(
    paths: Sequence[Path],
    out_dir: Path,
    *,
    rule: DriftRule | None = None,
    nights: int = 10,
    keep: int = 365,
    run_id: str | None = None,
    seed: int = 0,
) -> HistoryResult:
    """Collect, judge and write (see the module docstring); raise HarnessError when nothing was found."""
    rule = rule or DriftRule()
    rows, warnings = collect(paths, seed=seed)
    if rows.height == 0:
        raise HarnessError("no run with call records in " + ", ".join(str(p) for p in paths))
    rows = _keep(rows, max(1, keep))
    if run_id is not None and run_id not in set(rows.get_column("run_id").to_list()):
        raise HarnessError(f"--run {run_id}: not in the history")
    verdicts = judge_drift(rows, rule, run_id)
    tonight_id = run_id or str(rows.sort("run_start", nulls_last=False).get_column("run_id")[-1])
    tonight = rows.filter(pl.col("run_id") == tonight_id)
    series_name = str(tonight.get_column("series")[0])
    series = rows.filter(pl.col("series") == series_name)
    others = rows.filter(pl.col("series") != series_name)

    def names(verdict: str, direction: str | None = None) -> list[str]:
        sel = verdicts.filter(pl.col("verdict") == verdict)
        if direction is not None:
            sel = sel.filter(pl.col("direction") == direction)
        return [f"{r['arm']}: {r['label']}" for r in sel.iter_rows(named=True)]

    drift, better, insufficient = names(DRIFT, "worse"), names(DRIFT, "better"), names(INSUFFICIENT)
    headline = _headline(verdicts, drift, better, insufficient)
    facts = [
        f"Series: {series_name} ({series.get_column('run_id').n_unique()} run(s), "
        f"{_when(series.get_column('run_start').min())} → {_when(series.get_column('run_start').max())} UTC); "
        f"tonight: run {tonight_id}",
        f"Drift rule: {rule.describe()}",
        *_changes(series),
    ]
    if others.height:
        for name, group in others.group_by("series", maintain_order=True):
            facts.append(
                f"Not shown (another dataset or target, never mixed): {name[0]} — "
                f"{group.get_column('run_id').n_unique()} run(s), last {_when(group.get_column('run_start').max())}"
            )
    facts += [f"warning: {w}" for w in warnings]
    facts_tonight = tonight.row(0, named=True)
    card = card_table([("", Methodology(facts_tonight, card_from_facts(facts_tonight)))])
    tables = [_verdict_table(verdicts, rule), _nights_table(series, nights)]
    charts = trend_charts(series, verdicts)
    title = f"Nightly history — {series_name}"
    md = render_markdown(
        title=title,
        recommendation=headline,
        facts=facts,
        tables=tables,
        charts=[(f, n) for f, n, _ in charts],
        card=card,
    ).replace("`report.html`", "`history.html`")
    html = render_html(
        title=title, recommendation=headline, facts=facts, tables=tables, charts=charts, card=card
    )
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"{out}: cannot create the history directory ({exc.strerror or exc})") from exc
    atomic_write_bytes(out / HISTORY_FILE, _parquet(rows))
    atomic_write_bytes(out / DRIFT_FILE, _parquet(verdicts))
    for file, _name, png in charts:
        atomic_write_bytes(out / file, png)
    return HistoryResult(
        history=rows,
        verdicts=verdicts,
        markdown=md,
        history_md=atomic_write_bytes(out / "history.md", md.encode()),
        history_html=atomic_write_bytes(out / "history.html", html.encode()),
        drift=drift,
        better=better,
        insufficient=insufficient,
        warnings=warnings,
    )


def _parquet(frame: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.write_parquet(buf)
    return buf.getvalue()
