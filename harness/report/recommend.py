"""The recommendation: the cheapest arm (model, or model + variant) meeting the constraints *with confidence*.

"With confidence" means the 95 % interval's pessimistic end meets the limit: the upper
bound of p95 latency, p95 TTFT and error rate, the lower bound of pass rate. Also the
cost–latency Pareto set and a plain-English paragraph. Works from the summary table
alone; must not compute statistics over calls or render files.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import polars as pl

from harness.errors import ConfigError
from harness.records import arm_word

__all__ = [
    "FIRST_TOKENS",
    "Constraints",
    "Recommendation",
    "applicable",
    "pareto_set",
    "quality_known",
    "recommend",
]

FIRST_TOKENS = ("text", "any")


@dataclass(frozen=True)
class Constraints:
    """Limits an arm must meet; None means no limit. Latencies in seconds, rates as 0–1."""

    max_p95_s: float | None = None
    max_ttft_p95_s: float | None = None  # applies to the first token of `first_token`'s kind
    max_error_rate: float | None = None
    min_pass_rate: float | None = None
    min_score: float | None = None
    # What "first token" means for max_ttft_p95_s: "text" (default: what a reader of the answer waits
    # for; later than TTFT when the model thinks or calls a tool first) or "any" (TTFT, any content).
    first_token: str = "text"

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], name: Callable[[str], str] = lambda key: f"select.{key}"
    ) -> Constraints:
        """From a profile's [select] table (or flags); an unknown key or a bad value is named by `name`."""
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                raise ConfigError(name(key), f"unknown key (known: {', '.join(sorted(known))})")
            if key == "first_token":
                if value not in FIRST_TOKENS:
                    raise ConfigError(name(key), f"must be one of {', '.join(FIRST_TOKENS)}, got {value!r}")
                values[key] = value
                continue
            if value is None:
                values[key] = None
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(name(key), f"must be a number, got {value!r}")
            if value < 0 or ((key.endswith("rate") or key == "min_score") and value > 1):
                raise ConfigError(name(key), f"out of range: {value!r}")
            values[key] = float(value)
        return cls(**values)

    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self) if f.name != "first_token")

    @property
    def first_token_prefix(self) -> str:
        """The summary columns the first-token limit reads."""
        return "first_text" if self.first_token == "text" else "ttft"

    @property
    def first_token_label(self) -> str:
        return "p95 time to first text" if self.first_token == "text" else "p95 TTFT"

    def describe(self) -> str:
        parts = []
        if self.max_p95_s is not None:
            parts.append(f"p95 latency ≤ {self.max_p95_s:g} s")
        if self.max_ttft_p95_s is not None:
            parts.append(f"{self.first_token_label} ≤ {self.max_ttft_p95_s:g} s")
        if self.max_error_rate is not None:
            parts.append(f"error rate ≤ {self.max_error_rate:.1%}")
        if self.min_pass_rate is not None:
            parts.append(f"pass rate ≥ {self.min_pass_rate:.1%}")
        if self.min_score is not None:
            parts.append(f"mean score ≥ {self.min_score:.2f}")
        return ", ".join(parts) if parts else "no constraints"


@dataclass(frozen=True)
class Recommendation:
    arm: str | None
    model: str | None  # the recommended arm's model
    text: str
    pareto: list[str]  # arms
    failures: dict[str, list[str]]  # arm -> reasons it was not eligible


def _check(row: dict[str, Any], c: Constraints) -> list[str]:
    """Why an arm does not meet the constraints with confidence (empty: it does)."""
    why: list[str] = []
    if not row["ok"]:
        return ["no successful calls"]
    checks = (
        (c.max_p95_s, "latency", "p95 latency"),
        (c.max_ttft_p95_s, c.first_token_prefix, c.first_token_label),
    )
    for limit, metric, label in checks:
        if limit is None:
            continue
        est, hi = row[f"{metric}_p95_s"], row[f"{metric}_p95_hi_s"]
        if est is None:
            why.append(f"{label}: not measured")
        elif hi is None:
            why.append(
                f"{label}: {est:.3g} s but only {row[f'{metric}_n']} samples, "
                f"too few to bound it at 95 % (limit {limit:g} s)"
            )
        elif hi > limit:
            why.append(f"{label}: {est:.3g} s (95 % CI upper bound {hi:.3g} s) > limit {limit:g} s")
    if c.max_error_rate is not None:
        rate, hi = row["error_rate"], row["error_rate_hi"]
        if rate is None or hi is None:
            why.append("error rate: no completed calls")
        elif hi > c.max_error_rate:
            why.append(f"error rate: {rate:.1%} (upper bound {hi:.1%}) > limit {c.max_error_rate:.1%}")
    if c.min_pass_rate is not None:
        rate, lo = row["pass_rate"], row["pass_rate_lo"]
        if rate is None or lo is None:
            why.append("pass rate: no quality checks (no `expected` in the dataset)")
        elif lo < c.min_pass_rate:
            why.append(f"pass rate: {rate:.1%} (lower bound {lo:.1%}) < minimum {c.min_pass_rate:.1%}")
    if c.min_score is not None:
        score, lo = row["mean_score"], row["mean_score_lo"]
        if score is None or lo is None:
            why.append("mean score: no graded answers")
        elif lo < c.min_score:
            why.append(f"mean score: {score:.2f} (lower bound {lo:.2f}) < minimum {c.min_score:.2f}")
    return why


def _by_quality(rows: list[dict[str, Any]]) -> bool:
    """Choose by cost per passed answer when every candidate was graded and passed at least once."""
    return bool(rows) and all(r["cost_per_pass_usd"] is not None for r in rows)


def _tie(best: dict[str, Any], eligible: list[dict[str, Any]], comparison: pl.DataFrame | None) -> str:
    """A sentence when an arm with a higher pass rate is not significantly better than the choice."""
    if comparison is None or comparison.height == 0 or best["pass_rate"] is None:
        return ""
    better = [r for r in eligible if r is not best and (r["pass_rate"] or 0) > best["pass_rate"]]
    tied = []
    for r in better:
        pair = comparison.filter((pl.col("arm") == r["arm"]) & (pl.col("versus") == best["arm"]))
        if pair.height and not pair["pass_rate_significant"][0] and pair["pass_rate_paired_cases"][0]:
            tied.append(f"{r['arm']} ({r['pass_rate']:.1%}, McNemar p = {pair['pass_rate_p_holm'][0]:.2g})")
    if not tied:
        return ""
    return (
        f" On quality it is statistically tied with {', '.join(tied)}: the higher pass rate is not "
        "significant on these cases, so the cheaper answer wins."
    )


def applicable(c: Constraints, summary: pl.DataFrame) -> Constraints:
    """The constraints that apply to the run: a batch run has no latency (an answer comes when its
    batch ends, see its turnaround), so its latency and first-token limits are dropped."""
    batch = (
        summary.height > 0
        and "turnaround_n" in summary.columns
        and not int(summary.get_column("latency_n").sum() or 0)
        and int(summary.get_column("turnaround_n").sum() or 0) > 0
    )
    return replace(c, max_p95_s=None, max_ttft_p95_s=None) if batch else c


def quality_known(summary: pl.DataFrame) -> bool:
    """Every arm has a pass rate: the trade-off to show is cost against quality, not latency."""
    return summary.height > 0 and summary.get_column("pass_rate").null_count() == 0


def pareto_set(summary: pl.DataFrame) -> list[str]:
    """Arms not dominated on (mean cost per call, failure rate), or on (cost, p95 latency) without
    quality checks: nothing cheaper *and* better."""
    quality = quality_known(summary)
    points = [
        (r["arm"], r["mean_cost_per_call_usd"], 1 - r["pass_rate"] if quality else r["latency_p95_s"])
        for r in summary.iter_rows(named=True)
        if r["mean_cost_per_call_usd"] is not None and (quality or r["latency_p95_s"] is not None)
    ]
    keep = []
    for name, cost, p95 in points:
        dominated = any(
            (c2 <= cost and l2 <= p95) and (c2 < cost or l2 < p95) for n2, c2, l2 in points if n2 != name
        )
        if not dominated:
            keep.append(name)
    return keep


def recommend(
    summary: pl.DataFrame, constraints: Constraints | None = None, comparison: pl.DataFrame | None = None
) -> Recommendation:
    """Pick the cheapest eligible arm (ties: lower p95) and explain the choice in one paragraph.

    Sentences say "model" when the run had no variants and "arm" when it had: the same text as
    before variants existed, and no "model" that is really a model with a thinking budget.
    """
    c = applicable(constraints or Constraints(), summary)
    rows = list(summary.iter_rows(named=True))
    if not rows:
        return Recommendation(None, None, "No calls were recorded, so there is nothing to recommend.", [], {})
    word = arm_word(summary.get_column("variant"))
    failures = {r["arm"]: _check(r, c) for r in rows}
    eligible = [r for r in rows if not failures[r["arm"]]]
    pareto = pareto_set(summary)
    if not eligible:
        lines = "; ".join(f"{m}: {', '.join(w)}" for m, w in failures.items())
        text = (
            f"No {word} meets the constraints ({c.describe()}) with 95 % confidence. "
            f"Why each {word} fails — {lines}."
        )
        return Recommendation(None, None, text, pareto, failures)
    quality = _by_quality(eligible)
    if quality:  # what a team pays for: a good answer, not a call
        eligible.sort(key=lambda r: (r["cost_per_pass_usd"], r["latency_p95_s"] or math.inf))
    else:
        eligible.sort(key=lambda r: (r["mean_cost_per_call_usd"] or 0.0, r["latency_p95_s"] or math.inf))
    best = eligible[0]
    name = best["arm"]
    among = (
        "with successful calls (no constraints given)"
        if c.is_empty()
        else f"that meet {c.describe()} with 95 % confidence"
    )
    if quality:
        lo, hi = best["cost_per_pass_lo_usd"], best["cost_per_pass_hi_usd"]
        upper = f"${hi:.6f}" if hi is not None else "unbounded"
        ci = f"95 % CI ${lo:.6f}–{upper}" if lo is not None else "no interval"
        parts = [
            f"Recommended: {name}. It has the lowest cost per passed answer of the {len(eligible)} {word}(s) "
            f"{among}: ${best['cost_per_pass_usd']:.6f} per passed answer ({ci}), pass rate "
            f"{best['pass_rate']:.1%} (95 % CI {best['pass_rate_lo']:.1%}–{best['pass_rate_hi']:.1%})",
            f"${best['mean_cost_per_call_usd']:.6f} per call",
        ]
    else:
        parts = [
            f"Recommended: {name}. It is the cheapest of the {len(eligible)} {word}(s) {among}, at "
            f"${best['mean_cost_per_call_usd']:.6f} per call (${best['cost_per_1k_calls_usd']:.4f} per 1,000 calls)"
        ]
    if best["latency_p95_s"] is not None:
        p95 = f"p95 latency {best['latency_p95_s']:.3g} s"
        if best["latency_p95_hi_s"] is not None:
            p95 += f" (95 % CI {best['latency_p95_lo_s']:.3g}–{best['latency_p95_hi_s']:.3g} s)"
        else:
            p95 += f" (only {best['latency_n']} samples: too few for an interval)"
        parts.append(p95)
    if best["error_rate"] is not None:
        parts.append(f"error rate {best['error_rate']:.1%}")
    if best["pass_rate"] is not None and not quality:
        parts.append(f"pass rate {best['pass_rate']:.1%}")
    text = ", ".join(parts) + "."
    if quality:
        text += _tie(best, eligible, comparison)
    faster = [
        r for r in eligible[1:] if (r["latency_p95_s"] or math.inf) < (best["latency_p95_s"] or math.inf)
    ]
    if faster:
        f = min(faster, key=lambda r: r["latency_p95_s"])
        text += (
            f" If latency matters more than cost, {f['arm']} has a lower p95 ({f['latency_p95_s']:.3g} s) "
            f"at ${f['mean_cost_per_call_usd']:.6f} per call."
        )
    trade = "quality" if quality_known(summary) else "latency"
    text += f" Cost–{trade} Pareto set: {', '.join(pareto) if pareto else 'none'}."
    excluded = {m: w for m, w in failures.items() if w}
    if excluded:
        text += " Not eligible: " + "; ".join(f"{m} ({', '.join(w)})" for m, w in excluded.items()) + "."
    if len(rows) == 1:
        text += f" Only one {word} was run, so this is a check against the constraints, not a comparison."
    return Recommendation(name, best["model"], text, pareto, failures)
