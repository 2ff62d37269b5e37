"""The report's tables as plain data (title, header, rows, note), shared by the markdown and HTML renderers.

Its job is wording and number formatting: one table per concern, each estimate with
its interval, one row per arm (named "model" when the run had no variants). A batch run
shows its turnaround (per call, and per batch) instead of latency tables it has no
figures for, and its expiry rate beside its error rate. Also the
report's one-line stop-reason facts, so the table and the facts show the same shares.
Must not compute statistics or write files.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from harness.records import arm_word
from harness.report.summary import QUANTILES, STOP_COLUMNS

__all__ = ["Table", "build_tables", "ci", "fmt_s", "originals_table", "stop_reason_facts"]


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    note: str = ""


def fmt_s(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


def ci(est: float | None, lo: float | None, hi: float | None, fmt: Any = fmt_s) -> str:
    """'est [lo–hi]', or 'est (n too small for CI)' when the interval is unbounded."""
    if est is None:
        return "–"
    if lo is None or hi is None:
        return f"{fmt(est)} (no CI: too few)"
    return f"{fmt(est)} [{fmt(lo)}–{fmt(hi)}]"


def _usd(v: float | None) -> str:
    if v is None:
        return "–"
    return f"${v:.6f}" if abs(v) < 0.01 else f"${v:,.4f}"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v:.1%}"


def _score(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def _word(summary: pl.DataFrame) -> str:
    return arm_word(summary.get_column("variant"))


def _latency_table(summary: pl.DataFrame, prefix: str, title: str, note: str) -> Table:
    names = [name for name, _ in QUANTILES]
    t = Table(title, [_word(summary), "n", "mean", *names, "max"], note=note)
    for r in summary.iter_rows(named=True):
        row = [r["arm"], str(r[f"{prefix}_n"])]
        row.append(ci(r[f"{prefix}_mean_s"], r[f"{prefix}_mean_lo_s"], r[f"{prefix}_mean_hi_s"]))
        for name in names:
            key = f"{prefix}_{name}"
            row.append(ci(r[f"{key}_s"], r[f"{key}_lo_s"], r[f"{key}_hi_s"]))
        row.append(fmt_s(r[f"{prefix}_max_s"]))
        t.rows.append(row)
    return t


def _has(summary: pl.DataFrame, column: str) -> bool:
    return summary.height > 0 and int(summary.get_column(column).sum() or 0) > 0


def build_tables(
    summary: pl.DataFrame,
    comparison: pl.DataFrame,
    insights: dict[str, Any],
    break_even: Mapping[str, Mapping[str, int | None]] | None = None,
    batches: pl.DataFrame | None = None,
) -> list[Table]:
    """Every table of the report, in reading order; `break_even`: reuses a cached prefix needs, per
    model; `batches`: `summary.summarize_batches`."""
    word = _word(summary)
    batched = batches is not None and batches.height > 0
    live = _has(summary, "latency_n") or not batched
    ci_note = (
        "Percentiles use linear interpolation (numpy's default). [lo–hi] is a 95 % interval: "
        "distribution-free order statistics for percentiles, a seeded bootstrap for means. "
        "'no CI: too few' means the run has too few samples to bound that percentile "
        "(a two-sided interval for p99 needs at least 368)."
    )
    tables = _batch_tables(summary, batches, ci_note) if batched else []
    if live:
        tables += _live_latency_tables(summary, ci_note)
    _rest(tables, summary, comparison, insights, word, batched, break_even or {})
    return tables


def _batch_tables(summary: pl.DataFrame, batches: Any, ci_note: str) -> list[Table]:
    """Per call: the turnaround of the batch that answered it; per batch: its outcomes and cost."""
    turnaround = _latency_table(
        summary,
        "turnaround",
        "Batch turnaround (created → ended of the call's batch: when its answer could be read)",
        ci_note + " Over the successful calls; every call of a batch has that batch's turnaround.",
    )
    per_batch = Table(
        "Batches",
        [
            "batch",
            "arms",
            "calls",
            "ok",
            "errors",
            "expired",
            "cancelled",
            "created (UTC)",
            "turnaround",
            "cost",
        ],
        note="Turnaround of the batches: "
        + _spread(batches.get_column("turnaround_s").drop_nulls().to_list())
        + ". Error and expiry rates per batch are over its calls not cancelled.",
    )
    for r in batches.iter_rows(named=True):
        created = r["created_at"]
        per_batch.rows.append(
            [
                r["batch_id"],
                r["arms"],
                str(r["calls"]),
                str(r["ok"]),
                _share(r["errors"], r["calls"] - r["cancelled"]),
                _share(r["expired"], r["calls"] - r["cancelled"]),
                str(r["cancelled"]),
                "–" if created is None else created.strftime("%Y-%m-%d %H:%M:%S"),
                fmt_s(r["turnaround_s"]),
                _usd(r["total_cost_usd"]),
            ]
        )
    return [turnaround, per_batch]


def _spread(values: list[float]) -> str:
    """min / median / max of a few values, as words."""
    if not values:
        return "none ended"
    if len(values) == 1:
        return f"{fmt_s(values[0])} (one batch)"
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"min {fmt_s(low)}, median {fmt_s(mid)}, max {fmt_s(high)} over {len(values)} batches"


def _live_latency_tables(summary: pl.DataFrame, ci_note: str) -> list[Table]:
    return [
        _latency_table(summary, "latency", "Latency (sent → last byte)", ci_note),
        _latency_table(
            summary,
            "sched_latency",
            "Latency from schedule (intended start → last byte: what a user waits)",
            "Includes limiter wait and retries; differs from latency when the harness queued calls.",
        ),
        _latency_table(
            summary,
            "ttft",
            "Time to first token (any content: thinking, text or a tool call)",
            "Only streamed calls have a TTFT.",
        ),
        _latency_table(
            summary,
            "first_text",
            "Time to first text (what a reader of the answer waits for)",
            "The first text delta; equal to TTFT without thinking or tool calls first. "
            "Only streamed calls that sent text have one.",
        ),
    ]


def _rest(
    tables: list[Table],
    summary: pl.DataFrame,
    comparison: pl.DataFrame,
    insights: dict[str, Any],
    word: str,
    batched: bool,
    break_even: Mapping[str, Mapping[str, int | None]],
) -> None:
    thr = Table(
        "Throughput and tokens",
        [
            word,
            "calls/s",
            "output tok/s (run)",
            "output tok/s per call p50",
            "input tokens (sum / mean)",
            "output tokens (sum / mean)",
        ],
    )
    for r in summary.iter_rows(named=True):
        thr.rows.append(
            [
                r["arm"],
                "–" if r["throughput_calls_per_s"] is None else f"{r['throughput_calls_per_s']:.2f}",
                "–"
                if r["throughput_output_tokens_per_s"] is None
                else f"{r['throughput_output_tokens_per_s']:.0f}",
                "–" if r["output_tps_p50"] is None else f"{r['output_tps_p50']:.0f}",
                f"{r['input_tokens_sum'] or 0:,} / {r['input_tokens_mean'] or 0:.0f}",
                f"{r['output_tokens_sum'] or 0:,} / {r['output_tokens_mean'] or 0:.0f}",
            ]
        )
    tables.append(thr)
    cost = Table(
        "Cost",
        [word, "total", "mean per call", "per 1,000 calls", "distinct users", "per user", "cache savings"],
        note="Mean per call is over successful calls, with a bootstrap 95 % interval.",
    )
    for r in summary.iter_rows(named=True):
        cost.rows.append(
            [
                r["arm"],
                _usd(r["total_cost_usd"]),
                ci(
                    r["mean_cost_per_call_usd"],
                    r["mean_cost_per_call_lo_usd"],
                    r["mean_cost_per_call_hi_usd"],
                    _usd,
                ),
                _usd(r["cost_per_1k_calls_usd"]),
                str(r["distinct_users"]),
                _usd(r["avg_cost_per_user_usd"]),
                _usd(r["cache_savings_usd"]),
            ]
        )
    tables.append(cost)
    if summary.height and summary["cache_calls"].sum():
        tables.append(_caching_table(summary, word, break_even))
    expiring = batched or _has(summary, "expired")
    err = Table(
        "Errors",
        [
            word,
            "calls",
            "ok",
            "errors",
            *(["expired"] if expiring else []),
            "cancelled",
            "error rate [95 % Wilson]",
            *(["expiry rate [95 % Wilson]"] if expiring else []),
            "by kind",
        ],
        note=(
            "Error rate = errors / (ok + errors + expired)"
            if expiring
            else "Error rate = errors / (ok + errors)"
        )
        + "; cancelled calls are not counted against "
        + ("an arm." if word == "arm" else "a model.")
        + (" Expired: batch requests not processed within the batch's 24 hours." if expiring else ""),
    )
    for r in summary.iter_rows(named=True):
        err.rows.append(
            [
                r["arm"],
                str(r["calls"]),
                str(r["ok"]),
                str(r["errors"]),
                *([str(r["expired"])] if expiring else []),
                str(r["cancelled"]),
                ci(r["error_rate"], r["error_rate_lo"], r["error_rate_hi"], _pct),
                *([ci(r["expiry_rate"], r["expiry_rate_lo"], r["expiry_rate_hi"], _pct)] if expiring else []),
                r["errors_by_kind"] or "–",
            ]
        )
    tables.append(err)
    tables.append(_stop_reason_table(summary, word))
    quality = Table(
        "Quality",
        [
            word,
            "checked calls",
            "pass rate [95 % Wilson]",
            "mean score [95 % bootstrap]",
            "cost per passed answer [95 % bootstrap]",
            "evaluation cost (judge)",
        ],
        note=(
            "Cost per passed answer: every dollar the checked calls cost (failed calls included) over the "
            "answers that passed. The judge's cost is the evaluation's, never the model's."
        ),
    )
    for r in summary.iter_rows(named=True):
        if not r["pass_n"]:
            quality.rows.append(
                [r["arm"], "0", "no quality checks (no `expected` in the dataset)", "–", "–", "–"]
            )
            continue
        per_pass = (
            ci(r["cost_per_pass_usd"], r["cost_per_pass_lo_usd"], r["cost_per_pass_hi_usd"], _usd)
            if r["cost_per_pass_usd"] is not None
            else "no passed answer"
        )
        judge = f"${r['judge_cost_usd']:.4f}" + (
            f" ({r['judge_errors']} judge errors)" if r["judge_errors"] else ""
        )
        quality.rows.append(
            [
                r["arm"],
                str(r["pass_n"]),
                ci(r["pass_rate"], r["pass_rate_lo"], r["pass_rate_hi"], _pct),
                ci(r["mean_score"], r["mean_score_lo"], r["mean_score_hi"], _score),
                per_pass,
                judge,
            ]
        )
    tables.append(quality)
    if comparison.height:
        tables.append(_comparison_table(comparison, word))
    ph = Table(
        "PostHog insights (as the Claude tutorial computes them)",
        ["model", "total cost", "average response time"],
        note=(
            f"Average cost per user (A/B: total cost / distinct users): "
            f"{_usd(insights.get('avg_cost_per_user'))} over {insights.get('distinct_users', 0)} users."
            + (
                " Grouped by the events' `model` property, as PostHog does: variants together."
                if word == "arm"
                else ""
            )
        ),
    )
    for model, total in insights.get("total_cost_per_model", {}).items():
        rt = insights["avg_response_time_ms_per_model"].get(model)
        ph.rows.append([model, _usd(total), "–" if rt is None else f"{rt:.0f} ms"])
    tables.append(ph)


def originals_table(frame: pl.DataFrame, word: str, target: str | None) -> Table:
    """Production (the imported events' own figures) vs this run's arms, paired by case."""
    t = Table(
        "Original vs replayed (production traffic imported from PostHog)",
        [
            word,
            "paired cases",
            "production model",
            "latency p50 prod → replay",
            "latency p95 prod → replay",
            "median latency ratio",
            "TTFT p50 prod → replay",
            "cost / 1k calls prod → replay",
            "cost ratio",
        ],
        note=(
            "Each imported call is paired with the same case's successful replayed calls (its repeats "
            "averaged); failed production calls are left out. Production's latency includes its own "
            "network, load and time of day"
            + (f"; the replay ran against {target}" if target else "")
            + ". Ratios are replay / production: below 1 is faster or cheaper."
        ),
    )

    def arrow(a: float | None, b: float | None, fmt: Any) -> str:
        return f"{fmt(a)} → {fmt(b)}" if a is not None or b is not None else "–"

    def times(v: float | None) -> str:
        return "–" if v is None or v != v or v in (float("inf"), float("-inf")) else f"×{v:.2f}"

    for r in frame.iter_rows(named=True):
        model = r["production_model"] or "–"
        if (r["production_models"] or 0) > 1:
            model += f" (+{r['production_models'] - 1} more)"
        t.rows.append(
            [
                r["arm"],
                str(r["pairs"]),
                model,
                arrow(r["orig_latency_p50_s"], r["replay_latency_p50_s"], fmt_s),
                arrow(r["orig_latency_p95_s"], r["replay_latency_p95_s"], fmt_s),
                times(r["latency_ratio_median"]),
                arrow(r["orig_ttft_p50_s"], r["replay_ttft_p50_s"], fmt_s),
                arrow(r["orig_cost_per_1k_usd"], r["replay_cost_per_1k_usd"], _usd)
                if r["cost_pairs"]
                else "–",
                times(r["cost_ratio"]) if r["cost_pairs"] else "–",
            ]
        )
    return t


def _ratio(r: dict[str, Any], name: str) -> str:
    est = r[f"{name}_ratio"]
    if est is None:
        return "–"
    mark = " **sig.**" if r[f"{name}_significant"] else ""
    return f"×{est:.3f} [{r[f'{name}_ratio_lo']:.3f}–{r[f'{name}_ratio_hi']:.3f}]{mark}"


def _diff(r: dict[str, Any], name: str, fmt: Any) -> str:
    est = r[f"{name}_diff"]
    if est is None:
        return "–"
    mark = " **sig.**" if r[f"{name}_significant"] else ""
    return f"{fmt(est)} [{fmt(r[f'{name}_diff_lo'])} – {fmt(r[f'{name}_diff_hi'])}]{mark}"


def _share(n: int, of: int) -> str:
    return f"{n} ({n / of:.1%})" if of else str(n)


def _stop_reason_table(summary: pl.DataFrame, word: str) -> Table:
    t = Table(
        "Stop reasons",
        [word, "finished calls", *(label for label, _ in STOP_COLUMNS)],
        note=(
            "Count (share of finished calls: ok + errors) of each `stop_reason`. Refusals and max_tokens "
            "truncations are answers a user would not accept however fast or cheap they are; "
            "'error, no reason' are failed calls that ended without one, 'other' any other stop reason."
        ),
    )
    for r in summary.iter_rows(named=True):
        finished = r["ok"] + r["errors"]
        t.rows.append([r["arm"], str(finished), *(_share(r[column], finished) for _, column in STOP_COLUMNS)])
    return t


# (what the fact calls them, summary columns): the stop reasons a model chooser must not miss.
_STOP_FACTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Refusals", ("stop_refusal",)),
    ("Truncated (max_tokens or context window)", ("stop_max_tokens", "stop_model_context_window_exceeded")),
)


def stop_reason_facts(summary: pl.DataFrame) -> list[str]:
    """One line per kind of unusable answer that some arm gave, with each such arm's count and share."""
    facts = []
    for label, columns in _STOP_FACTS:
        hits = []
        for r in summary.iter_rows(named=True):
            n = sum(r[c] for c in columns)
            if n:
                hits.append(f"{r['arm']} {_share(n, r['ok'] + r['errors'])}")
        if hits:
            facts.append(f"{label}: " + ", ".join(hits) + " (see Stop reasons)")
    return facts


def _caching_table(
    summary: pl.DataFrame, word: str, break_even: Mapping[str, Mapping[str, int | None]]
) -> Table:
    t = Table(
        "Prompt caching",
        [
            word,
            "calls with a breakpoint",
            "below the minimum (not cached)",
            "hit rate",
            "input served from cache",
            "saved [95 % bootstrap]",
            "break-even reuses 5 m / 1 h",
        ],
        note=(
            "Hit rate: calls that read from the cache, over calls whose prefix is long enough to cache. "
            "Saved: each call priced as if nothing were cached, minus its price (negative: writes cost more "
            "than they saved). Break-even: reads within the TTL a prefix needs to pay for its write at this "
            f"model's prices. TTFT and time to first text with and without cache: the {word} vs {word} table, "
            "paired by case."
        ),
    )
    for r in summary.iter_rows(named=True):
        if not r["cache_calls"]:
            t.rows.append([r["arm"], "0", "–", "–", "–", "–", "–"])
            continue
        saved = ci(r["cache_savings_usd"], r["cache_savings_lo_usd"], r["cache_savings_hi_usd"], _usd)
        even = break_even.get(r["model"], {})
        t.rows.append(
            [
                r["arm"],
                str(r["cache_calls"]),
                str(r["cache_ineligible"]),
                _pct(r["cache_hit_rate"]),
                _pct(r["cache_input_share"]),
                saved,
                f"{even.get('5m', '–')} / {even.get('1h', '–')}" if even else "–",
            ]
        )
    return t


def _comparison_table(comparison: pl.DataFrame, word: str) -> Table:
    t = Table(
        f"{word.capitalize()} vs {word}",
        [
            word,
            "versus",
            "p50 latency",
            "p95 latency",
            "p50 TTFT",
            "p50 first text",
            "mean cost per call",
            "pass rate",
            "mean score",
            "paired cases",
        ],
        note=(
            f"Ratios are {word} / versus (×0.8 = 20 % faster); differences are {word} − versus. "
            f"p50s, cost, pass rate and score are paired by case where both {word}s ran the same cases "
            "(bootstrap over cases; Wilcoxon for p50s, McNemar's exact test for pass/fail); p95 is compared "
            "as a tail (ratio of p95s, bootstrap). "
            "**sig.** = Holm-adjusted p < 0.05 and the 95 % interval excludes no difference."
        ),
    )
    signed_usd = lambda v: "–" if v is None else f"{v:+.6f}"  # noqa: E731
    signed_pts = lambda v: "–" if v is None else f"{v * 100:+.1f} pts"  # noqa: E731
    signed_score = lambda v: "–" if v is None else f"{v:+.3f}"  # noqa: E731
    for r in comparison.iter_rows(named=True):
        t.rows.append(
            [
                r["arm"],
                r["versus"],
                _ratio(r, "latency_p50"),
                _ratio(r, "latency_p95"),
                _ratio(r, "ttft_p50"),
                _ratio(r, "first_text_p50"),
                _diff(r, "cost_mean", signed_usd),
                _diff(r, "pass_rate", signed_pts),
                _diff(r, "score_mean", signed_score),
                str(r["latency_p50_paired_cases"]),
            ]
        )
    return t
