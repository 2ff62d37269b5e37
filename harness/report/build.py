"""`write_report(run_dir)`: calls → summary, comparison, recommendation → files in the run directory.

The composition of the report package: it reads, calls the pure pieces in order and
writes summary.parquet, comparison.parquet, the chart PNGs, report.md and report.html.
Must not call the API.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from harness.errors import HarnessError
from harness.pricing import PriceTable
from harness.report.charts import render_charts
from harness.report.compare_models import compare_models
from harness.report.health import Health, health_tables, measure_health
from harness.report.insights import posthog_insights_from_calls
from harness.report.methodology import card_table, methodology
from harness.report.originals import original_vs_replayed
from harness.report.prepared import Prepared, prepare
from harness.report.recommend import Constraints, applicable, recommend
from harness.report.render_html import render_html
from harness.report.render_md import render_markdown
from harness.report.reprice import reprice_summary
from harness.report.summary import summarize, summarize_batches
from harness.report.tables import build_tables, originals_table, stop_reason_facts
from harness.rundir import RunDir

__all__ = ["ReportResult", "write_report"]


@dataclass(frozen=True)
class ReportResult:
    recommendation_text: str
    recommended_model: str | None  # the recommended arm's model
    recommended_arm: str | None  # the model id itself when the run had no variants
    report_md: Path
    report_html: Path
    summary: pl.DataFrame
    repriced: pl.DataFrame | None = None  # the summary at today's prices (`--reprice`)
    health: Health | None = None


def _facts(manifest: dict[str, Any], prep: Prepared, summary: pl.DataFrame) -> list[str]:
    facts = []
    prep_calls, word = prep.calls, prep.word
    ds = manifest.get("dataset")
    if isinstance(ds, dict):
        name = ds.get("path") or ds.get("name")
        sha = ds.get("sha256")
        facts.append(f"Dataset: {name}" + (f" (sha256 {str(sha)[:12]}…)" if sha else ""))
        imported = ds.get("import")
        if isinstance(imported, dict) and isinstance(imported.get("window"), dict):
            window = imported["window"]
            facts.append(
                f"Imported from PostHog ({imported.get('host')}, project {imported.get('project_id')}, "
                f"{imported.get('event')}): {window.get('since')} → {window.get('until')}"
            )
    elif isinstance(ds, str):
        facts.append(f"Dataset: {ds}")
    n = prep_calls.height
    ok = int(summary.get_column("ok").sum() or 0) if summary.height else 0
    facts.append(f"Calls: {n:,} ({ok:,} successful) across {summary.height} {word}(s)")
    variants = manifest.get("variants")
    if word == "arm" and isinstance(variants, dict):
        facts.append(
            "Arms: every model × variant ("
            + "; ".join(f"{name}: {_given(given)}" for name, given in variants.items())
            + ")"
        )
    if n:
        start = prep_calls.get_column("started_at").min()
        end = prep_calls.get_column("finished_at").max()
        if start is not None and end is not None:
            facts.append(f"Window: {start!s} → {end!s} (UTC)")
    if manifest.get("target"):
        facts.append(
            f"Target: {manifest['target'] if isinstance(manifest['target'], str) else 'see manifest'}"
        )
    if manifest.get("mode") == "batch":
        facts.append(
            "Batch run (Message Batches, batch prices): an answer arrives when its batch ends, so the "
            "report shows turnaround instead of latency, and latency limits do not apply"
        )
    facts += stop_reason_facts(summary)
    small = [r["arm"] for r in summary.iter_rows(named=True) if r["latency_n"] and not r["latency_p99_ci_ok"]]
    if small:
        facts.append(
            f"Too few successful calls for a bounded p99 on {', '.join(small)} "
            f"(needs ≥ 368 per {word}): read p95 and max instead."
        )
    return facts


def _given(overrides: Any) -> str:
    """A variant's parameters as `key = value` pairs (values as JSON), for the facts line."""
    if not isinstance(overrides, dict):
        return str(overrides)
    return ", ".join(f"{k} = {json.dumps(v, separators=(', ', ': '))}" for k, v in overrides.items())


def _break_even(summary: pl.DataFrame) -> dict[str, dict[str, int | None]]:
    """Cache break-even reuses per model at today's prices (models without a known price are left out)."""
    out: dict[str, dict[str, int | None]] = {}
    for model in summary.get_column("model").unique().to_list() if summary.height else []:
        try:
            out[model] = PriceTable.resolve([model]).cache_break_even(model)
        except HarnessError:
            continue
    return out


def write_report(
    run_dir: Path, *, constraints: Constraints | None = None, seed: int = 0, reprice: bool = False
) -> ReportResult:
    """Write the report files into `run_dir` and return the recommendation and the summary.

    Costs are the stored ones (the price table the run was run with); `reprice` adds a table of
    the same usage at today's prices, summarized by the same `summarize`.
    """
    run = RunDir.read(run_dir)
    manifest = run.manifest
    prep = prepare(run.load_calls(), manifest)
    summary = summarize(prep, seed=seed)
    comparison = compare_models(prep, seed=seed)
    rec = recommend(summary, constraints, comparison)
    insights = posthog_insights_from_calls(prep.calls)
    charts = render_charts(prep, summary, rec.pareto)
    tables = build_tables(summary, comparison, insights, _break_even(summary), summarize_batches(prep))
    originals = run.load_originals()
    if originals is not None and prep.calls.height:
        target = manifest.get("target") if isinstance(manifest.get("target"), str) else None
        if target and isinstance(manifest.get("base_url_host"), str):
            target = f"the {target} target at {manifest['base_url_host']}"
        tables.append(originals_table(original_vs_replayed(prep, originals), prep.word, target))
    health = measure_health(prep.calls, manifest)
    run_id: object = manifest.get("run_id") or (
        prep.calls.get_column("run_id")[0] if prep.calls.height else run.path.name
    )
    title = f"Model selection report — run {run_id!s}"
    facts = _facts(manifest, prep, summary)
    if constraints is not None and not applicable(constraints, summary).is_empty():
        facts.insert(
            0,
            f"Constraints: {applicable(constraints, summary).describe()} "
            "(met when the 95 % interval's worse end meets them)",
        )
    method = methodology(manifest, prep.calls)
    card = card_table([("", method)])
    repriced = None
    if reprice:
        repriced, table = reprice_summary(run.load_calls(), manifest, summary, method, seed=seed)
        tables.append(table)
        run.write_parquet("summary-repriced.parquet", repriced)
    if health.eventful:  # the harness distorted or changed what it measured: said first, shown in full
        tables = [*health_tables(health), *tables]
    else:
        facts.append(health.line())
    run.write_parquet("summary.parquet", summary)
    run.write_parquet("comparison.parquet", comparison)
    for file, _name, png in charts:
        run.write_atomic(file, png)
    md = render_markdown(
        title=title,
        warnings=health.notices,
        recommendation=rec.text,
        facts=facts,
        tables=tables,
        charts=[(f, n) for f, n, _ in charts],
        card=card,
    )
    html = render_html(
        title=title,
        warnings=health.notices,
        recommendation=rec.text,
        facts=facts,
        tables=tables,
        charts=charts,
        card=card,
    )
    return ReportResult(
        recommendation_text=rec.text,
        recommended_model=rec.model,
        recommended_arm=rec.arm,
        report_md=run.write_atomic("report.md", md.encode()),
        report_html=run.write_atomic("report.html", html.encode()),
        summary=summary,
        repriced=repriced,
        health=health,
    )
