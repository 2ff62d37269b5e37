"""write_report end to end on synthetic runs: significance, recommendation, edge cases, readers, insights."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from harness.errors import ConfigError, StorageError
from harness.report import (
    Constraints,
    posthog_insights_from_calls,
    posthog_insights_from_events,
    write_report,
)
from harness.report.summary import summary_schema
from harness.rundir import RunDir
from tests.synthetic import ModelSpec, synthetic_calls, write_run

FAST = ModelSpec("model-a", median_s=0.7, usd_per_output_token=4e-6, usd_per_input_token=1e-6)
SLOW = ModelSpec("model-b", median_s=1.0, usd_per_output_token=15e-6, usd_per_input_token=3e-6)


def _row(frame: pl.DataFrame, model: str, versus: str) -> dict:
    return frame.filter((pl.col("model") == model) & (pl.col("versus") == versus)).row(0, named=True)


def test_faster_cheaper_model_is_significant_and_recommended(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", synthetic_calls([SLOW, FAST], cases=300, repeats=2, seed=1))
    result = write_report(run, constraints=Constraints(max_p95_s=5.0, max_error_rate=0.05))
    assert result.recommended_model == "model-a"
    assert "Recommended: model-a" in result.recommendation_text
    comparison = pl.read_parquet(run / "comparison.parquet")
    assert comparison.height == 2
    a_vs_b = _row(comparison, "model-a", "model-b")
    assert a_vs_b["latency_p50_significant"] and a_vs_b["latency_p50_ratio_hi"] < 1.0
    assert a_vs_b["latency_p50_paired_cases"] == 300
    assert a_vs_b["latency_p95_significant"] and a_vs_b["latency_p95_ratio"] < 1.0
    assert a_vs_b["cost_mean_significant"] and a_vs_b["cost_mean_diff"] < 0
    b_vs_a = _row(comparison, "model-b", "model-a")
    assert b_vs_a["latency_p50_ratio"] == pytest.approx(1 / a_vs_b["latency_p50_ratio"])
    summary = pl.read_parquet(run / "summary.parquet")
    assert summary.schema == pl.Schema(summary_schema())
    assert summary["model"].to_list() == ["model-b", "model-a"]
    md = result.report_md.read_text()
    assert md.startswith("# Model selection report")
    for heading in (
        "## Latency",
        "## Time to first token",
        "## Cost",
        "## Errors",
        "## Quality",
        "## PostHog insights",
    ):
        assert heading in md
    for png in (
        "latency_cdf.png",
        "ttft_distribution.png",
        "quality_vs_cost.png",  # the run has quality checks: the Pareto chart is quality vs cost
        "latency_over_time.png",
        "cost_per_user.png",
    ):
        assert (run / png).stat().st_size > 1000
        assert f"]({png})" in md
    html = result.report_html.read_text()
    assert html.count("data:image/png;base64,") == 5 and "http" not in html.split("<body>")[1]


def test_identical_models_are_not_significant(tmp_path: Path) -> None:
    twin = ModelSpec("twin-2", median_s=1.0)
    run = write_run(
        tmp_path / "run", synthetic_calls([ModelSpec("twin-1"), twin], cases=300, repeats=2, seed=9)
    )
    write_report(run)
    comparison = pl.read_parquet(run / "comparison.parquet")
    for metric in ("latency_p50", "latency_p95", "ttft_p50", "cost_mean", "pass_rate"):
        assert not comparison[f"{metric}_significant"].any(), metric


def test_unconstrained_none_meets_and_wording(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", synthetic_calls([SLOW, FAST], cases=100, seed=2))
    tight = write_report(run, constraints=Constraints(max_p95_s=0.01, min_pass_rate=0.99))
    assert tight.recommended_model is None
    text = tight.recommendation_text
    assert "No model meets" in text and "model-a:" in text and "model-b:" in text
    assert "p95 latency" in text and "pass rate" in text
    free = write_report(run)
    assert free.recommended_model == "model-a"  # cheapest, no constraints


def test_report_with_errors_and_single_model(tmp_path: Path) -> None:
    flaky = ModelSpec("flaky", error_rate=0.3)
    run = write_run(tmp_path / "run", synthetic_calls([flaky], cases=200, seed=3))
    result = write_report(run, constraints=Constraints(max_error_rate=0.05))
    assert result.recommended_model is None
    assert "error rate" in result.recommendation_text
    assert "overloaded=" in result.report_md.read_text()
    assert pl.read_parquet(run / "comparison.parquet").height == 0
    ok = write_report(run)
    assert ok.recommended_model == "flaky"
    assert "Only one model was run" in ok.recommendation_text


def test_report_without_expected_fields(tmp_path: Path) -> None:
    run = write_run(
        tmp_path / "run", synthetic_calls([FAST, SLOW], cases=50, with_expected=False, stream=False)
    )
    result = write_report(run, constraints=Constraints(min_pass_rate=0.5))
    assert result.recommended_model is None
    assert "no quality checks" in result.recommendation_text
    md = result.report_md.read_text()
    assert "no quality checks (no `expected` in the dataset)" in md
    assert result.summary["pass_rate"].null_count() == 2
    assert result.summary["ttft_n"].to_list() == [0, 0]
    ttft = write_report(run, constraints=Constraints(max_ttft_p95_s=1.0, first_token="any"))
    assert "p95 TTFT: not measured" in ttft.recommendation_text


def test_report_with_one_call(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", synthetic_calls([FAST], cases=1))
    result = write_report(run, constraints=Constraints(max_p95_s=10.0))
    row = result.summary.row(0, named=True)
    assert row["calls"] == 1 and row["latency_p50_ci_ok"] is False and row["latency_p50_lo_s"] is None
    assert result.recommended_model is None  # one sample cannot bound a p95
    assert "too few to bound it" in result.recommendation_text
    assert "no CI: too few" in result.report_md.read_text()


def test_report_with_zero_successful_calls(tmp_path: Path) -> None:
    frame = synthetic_calls(
        [ModelSpec("down", error_rate=1.0), ModelSpec("down-2", error_rate=1.0)], cases=20
    )
    run = write_run(tmp_path / "run", frame)
    result = write_report(run)
    assert result.recommended_model is None
    assert "no successful calls" in result.recommendation_text
    assert result.summary["error_rate"].to_list() == [1.0, 1.0]
    assert result.report_html.stat().st_size > 1000


def test_report_of_an_empty_run(tmp_path: Path) -> None:
    run = tmp_path / "empty"
    (run / "parts").mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"run_id": "r0"}))
    result = write_report(run)
    assert result.recommended_model is None
    assert "No calls were recorded" in result.recommendation_text
    assert result.summary.height == 0
    with pytest.raises(StorageError):
        write_report(tmp_path / "missing")


def test_reader_accepts_parts_and_a_torn_journal(tmp_path: Path) -> None:
    frame = synthetic_calls([FAST, SLOW], cases=30)
    run = tmp_path / "run"
    (run / "parts").mkdir(parents=True)
    frame.slice(0, 40).write_parquet(run / "parts" / "part-s1-00001.parquet")
    tail = frame.slice(30, 30).with_columns(
        pl.col("scheduled_at", "started_at", "finished_at").dt.strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00")
    )
    journal = "\n".join(json.dumps(r) for r in tail.to_dicts()) + '\n{"run_id": "torn'
    (run / "parts" / "journal-s1-00002.jsonl").write_text(journal)
    calls = RunDir.read(run).load_calls().collect()
    assert calls.height == 60  # 40 + 30 − 10 overlapping call_ids
    assert calls.schema["started_at"] == pl.Datetime("us", "UTC")
    assert (
        calls.sort("call_id")["started_at"].to_list()
        == frame.slice(0, 60).sort("call_id")["started_at"].to_list()
    )
    assert write_report(run).summary["calls"].sum() == 60
    (run / "parts" / "part-s1-00001.parquet").rename(run / "parts" / "chunk-a.parquet")
    (run / "parts" / "journal-s1-00002.jsonl").rename(run / "parts" / "chunk-b.jsonl")
    # One reader, one rule: files the run directory's owner never writes are not rows.
    assert RunDir.read(run).load_calls().collect().height == 0


def test_constraints_from_mapping() -> None:
    c = Constraints.from_mapping({"max_p95_s": 2, "min_pass_rate": 0.9})
    assert c == Constraints(max_p95_s=2.0, min_pass_rate=0.9)
    with pytest.raises(ConfigError) as err:
        Constraints.from_mapping({"max_p99_s": 1})
    assert err.value.option == "select.max_p99_s"
    with pytest.raises(ConfigError, match=r"select\.max_error_rate"):
        Constraints.from_mapping({"max_error_rate": 5})


def _events_from(frame: pl.DataFrame) -> list[dict]:
    """Events as the simulator's capture endpoint stores them, one per call (and one duplicate)."""
    events = []
    for r in frame.to_dicts():
        props = {
            "model": r["model"],
            "total_cost_in_dollars": r["total_cost_usd"],
            "$ai_total_cost_usd": r["total_cost_usd"],
            "call_id": r["call_id"],
            "status": r["status"],
        }
        if r["latency_s"] is not None:
            props["response_time_in_ms"] = r["latency_s"] * 1000
        distinct = r["user_id"] or f"run:{r['run_id']}"
        events.append(
            {"event": "$ai_generation", "distinct_id": distinct, "uuid": r["call_id"], "properties": props}
        )
    events.append(dict(events[0]))  # a retried batch: PostHog dedups by uuid
    return events


def test_posthog_insights_from_events_equal_calls() -> None:
    frame = synthetic_calls([FAST, SLOW], cases=80, repeats=2, seed=7, users=6)
    frame = frame.with_columns(  # some anonymous calls: distinct_id falls back to the run
        pl.when(pl.col("case_id") == "case-3").then(None).otherwise(pl.col("user_id")).alias("user_id")
    )
    from_calls = posthog_insights_from_calls(frame)
    from_events = posthog_insights_from_events(_events_from(frame))
    assert from_calls["distinct_users"] == 7
    assert from_calls["total_cost_per_model"].keys() == {"model-a", "model-b"}
    for key in ("total_cost_per_model", "avg_response_time_ms_per_model"):
        for model, value in from_calls[key].items():
            assert from_events[key][model] == pytest.approx(value, rel=1e-12)
    assert from_events["avg_cost_per_user"] == pytest.approx(from_calls["avg_cost_per_user"], rel=1e-12)
    total = frame["total_cost_usd"].sum()
    assert from_calls["avg_cost_per_user"] == pytest.approx(total / 7)
    ok_ms = frame.filter(pl.col("model") == "model-a")["latency_s"].drop_nulls().mean() * 1000
    assert from_calls["avg_response_time_ms_per_model"]["model-a"] == pytest.approx(ok_ms)


def test_the_first_token_limit_reads_time_to_first_text_unless_told_otherwise(tmp_path: Path) -> None:
    """A model that thinks first has a fast TTFT and a slow first text: the default limit sees the wait."""
    frame = synthetic_calls([FAST, SLOW], cases=120, seed=5)
    thinking_first = pl.col("model") == "model-a"  # cheaper, but thinks ~2 s before its first text
    frame = frame.with_columns(
        pl.when(thinking_first)
        .then(pl.col("ttft_s") + 2.0)
        .otherwise(pl.col("ttft_s"))
        .alias("time_to_first_text_s")
    )
    run = write_run(tmp_path / "run", frame)
    by_text = write_report(run, constraints=Constraints(max_ttft_p95_s=1.5))
    assert by_text.recommended_model == "model-b", by_text.recommendation_text
    assert "p95 time to first text" in by_text.recommendation_text
    summary = by_text.summary.sort("arm")
    assert summary["first_text_p50_s"][0] > summary["ttft_p50_s"][0] + 1.9
    by_any = write_report(run, constraints=Constraints(max_ttft_p95_s=1.5, first_token="any"))
    assert by_any.recommended_model == "model-a", "on TTFT (any content) the cheaper model qualifies"
    md = by_text.report_md.read_text()
    assert "Time to first text" in md and "Time to first token" in md
    with pytest.raises(ConfigError, match=r"select\.first_token"):
        Constraints.from_mapping({"first_token": "thinking"})


def test_cost_per_passed_answer_decides_and_quality_is_paired(tmp_path: Path) -> None:
    """A cheaper model that fails half its answers loses to a better one that costs less per good answer."""
    cheap = ModelSpec(
        "cheap", median_s=0.7, usd_per_output_token=4e-6, usd_per_input_token=1e-6, pass_prob=0.45
    )
    good = ModelSpec(
        "good", median_s=0.8, usd_per_output_token=5e-6, usd_per_input_token=1e-6, pass_prob=0.95
    )
    frame = synthetic_calls([cheap, good], cases=240, seed=9)
    frame = frame.with_columns(pl.col("passed").cast(pl.Float64).alias("score"))
    result = write_report(write_run(tmp_path / "run", frame))
    summary = {r["arm"]: r for r in result.summary.iter_rows(named=True)}
    for arm in ("cheap", "good"):  # an independent computation of the figure
        rows = frame.filter(pl.col("model") == arm)
        expected = rows["total_cost_usd"].sum() / rows["passed"].sum()
        assert summary[arm]["cost_per_pass_usd"] == pytest.approx(expected)
        lo, hi = summary[arm]["cost_per_pass_lo_usd"], summary[arm]["cost_per_pass_hi_usd"]
        assert lo < summary[arm]["cost_per_pass_usd"] < hi
    assert summary["cheap"]["mean_cost_per_call_usd"] < summary["good"]["mean_cost_per_call_usd"]
    assert result.recommended_model == "good", result.recommendation_text
    assert "lowest cost per passed answer" in result.recommendation_text
    comparison = pl.read_parquet(tmp_path / "run" / "comparison.parquet")
    row = comparison.filter((pl.col("arm") == "good") & (pl.col("versus") == "cheap")).row(0, named=True)
    assert row["pass_rate_significant"] and row["pass_rate_diff"] > 0.3 and row["pass_rate_p_holm"] < 1e-6
    assert row["score_mean_diff"] == pytest.approx(row["pass_rate_diff"])


def test_arms_tied_on_quality_say_so_and_the_cheaper_wins(tmp_path: Path) -> None:
    one = ModelSpec("one", median_s=0.7, usd_per_output_token=4e-6, usd_per_input_token=1e-6, pass_prob=0.90)
    two = ModelSpec("two", median_s=0.7, usd_per_output_token=5e-6, usd_per_input_token=1e-6, pass_prob=0.92)
    frame = synthetic_calls([one, two], cases=60, seed=3)
    result = write_report(write_run(tmp_path / "run", frame))
    by_arm = {r["arm"]: r["pass_rate"] for r in result.summary.iter_rows(named=True)}
    assert by_arm["two"] > by_arm["one"], "seeded: the pricier arm passes a little more often"
    assert "statistically tied with two" in result.recommendation_text, result.recommendation_text
    assert result.recommended_model == "one", "not significantly worse, and cheaper per passed answer"
