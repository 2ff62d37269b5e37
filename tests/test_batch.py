"""Batch mode end to end, in this process, against the simulator's Message Batches over sockets:
rows and events at batch prices, splitting by the limits, errored and expired results retried,
--no-wait then --resume, --max-cost before submission, cancel, and the judge asked live.

The simulator's ground truth (`GET /_sim/batches?custom_ids=1`) says which batches were created
and what each held, so "no batch created twice" is checked against the server, not the journal.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from rich.console import Console

from harness.bench import cancel_batches, execute_run
from harness.config import build_config
from harness.pricing import BATCH_CONTEXT, PriceTable
from harness.rundir import RunDir
from tests import reliability_matrix as rm
from tests.helpers import genai_total_usd
from tests.simproc import SimProc, start_simulator

MODELS = "claude-haiku-4-5,claude-sonnet-4-6"


@pytest.fixture(scope="module")
def sim_module():
    # A batch of a few hundred requests ends ~0.3 s after its creation.
    proc = start_simulator("--time-scale", "0.002", "--seed", "11")
    yield proc
    proc.stop()


@pytest.fixture
def sim(sim_module: SimProc) -> SimProc:
    sim_module.reset()
    return sim_module


def config(sim: SimProc, tmp_path: Path, dataset: Path, **over: Any):
    cli: dict[str, Any] = {
        "dataset": str(dataset),
        "models": MODELS,
        "mode": "batch",
        "target": "custom",
        "base_url": sim.url,
        "posthog_host": sim.url,
        "results_dir": str(tmp_path / "results"),
        "progress": "off",
        "report": False,
        "batch_poll_s": 0.05,
        "run_id": "b1",
        **over,
    }
    return build_config(cli, env={})


async def run(cfg) -> Any:
    return await execute_run(cfg, console=Console(file=io.StringIO()))


def calls(tmp_path: Path, run_id: str = "b1") -> pl.DataFrame:
    return RunDir.read(tmp_path / "results" / run_id).load_calls().collect()


def journal(tmp_path: Path, run_id: str = "b1") -> list[dict[str, Any]]:
    return RunDir.read(tmp_path / "results" / run_id).batch_entries()


def assert_each_call_in_one_batch(sim: SimProc, call_ids: set[str]) -> list[dict[str, Any]]:
    """Ground truth: the batches' custom_ids are disjoint, and together exactly `call_ids`."""
    truth = sim.batches(custom_ids=True)
    seen = Counter(cid for b in truth for cid in b["custom_ids"])
    assert [cid for cid, n in seen.items() if n > 1] == [], "a call was submitted in two batches"
    assert set(seen) == call_ids
    return truth


async def test_n_cases_by_m_models_give_n_m_rows_and_events_at_the_batch_price(sim, tmp_path) -> None:
    dataset = rm.write_dataset(tmp_path / "d.jsonl", 30, max_tokens=40)
    result = await run(config(sim, tmp_path, dataset))
    frame = calls(tmp_path)
    assert frame.height == 60 and frame["call_id"].n_unique() == 60
    assert set(frame["status"]) == {"ok"}
    assert frame.select(pl.col("case_id").n_unique(), pl.col("model").n_unique()).row(0) == (30, 2)
    assert result.outcome.finished == 60 and result.outcome.not_started == 0
    # The batch's own columns; the live latency columns are null, never invented.
    assert frame["batch_id"].null_count() == 0 and frame["batch_id"].n_unique() == 1
    assert (frame["batch_ended_at"] > frame["batch_created_at"]).all()
    for column in ("ttft_s", "latency_s", "latency_from_schedule_s", "limiter_wait_s", "output_tokens_per_s"):
        assert frame[column].null_count() == 60, column
    assert not frame["stream"].any() and set(frame["service_tier"]) == {"batch"}
    assert set(frame["attempts"]) == {1}
    # Prices: genai-prices' batch variant, half of the standard price.
    standard = PriceTable.resolve(MODELS.split(","))
    for row in frame.iter_rows(named=True):
        assert row["total_cost_usd"] > 0
        assert row["total_cost_usd"] == pytest.approx(genai_total_usd(row, BATCH_CONTEXT), rel=1e-9)
        full = standard.cost(row["model"], row["input_tokens"], row["output_tokens"]).total_usd
        assert row["total_cost_usd"] == pytest.approx(full / 2, rel=1e-9)
    manifest = RunDir.read(tmp_path / "results" / "b1").manifest
    assert manifest["mode"] == "batch" and manifest["status"] == "finished"
    assert manifest["prices"]["models"]["claude-haiku-4-5"]["price_context"] == dict(BATCH_CONTEXT)
    assert manifest["batches"] == {"batches": {"collected": 1}, "open": []}
    # One event per call, with the row's uuid, batch id and price.
    events = sim.events()
    assert events["duplicates"] == 0
    by_uuid = {e["uuid"]: e for e in events["events"]}
    assert set(by_uuid) == set(frame["event_uuid"])
    for row in frame.iter_rows(named=True):
        props = by_uuid[row["event_uuid"]]["properties"]
        assert props["batch_id"] == row["batch_id"] and props["status"] == "ok"
        assert props["total_cost_in_dollars"] == pytest.approx(row["total_cost_usd"])
        assert props["batch_turnaround_s"] > 0 and "response_time_in_ms" not in props
    truth = assert_each_call_in_one_batch(sim, set(frame["call_id"]))
    assert len(truth) == 1 and truth[0]["call_id"] == "b1/b00001"


async def test_an_over_limit_plan_is_split_into_several_batches(sim, tmp_path) -> None:
    dataset = rm.write_dataset(tmp_path / "d.jsonl", 60)
    await run(config(sim, tmp_path, dataset, batch_max_requests=50))
    frame = calls(tmp_path)
    assert frame.height == 120
    truth = assert_each_call_in_one_batch(sim, set(frame["call_id"]))
    assert [b["request_count"] for b in truth] == [50, 50, 20]
    assert frame["batch_id"].n_unique() == 3
    # And by bytes: no body above the limit (the journal records each body's size).
    sim.reset()
    await run(config(sim, tmp_path, dataset, batch_max_bytes=5_000, run_id="b2"))
    sizes = [e["size"] for e in journal(tmp_path, "b2") if e["op"] == "intent"]
    assert len(sizes) >= 4 and max(sizes) <= 5_000
    assert_each_call_in_one_batch(sim, set(calls(tmp_path, "b2")["call_id"]))


async def test_errored_and_expired_results_keep_their_kinds_and_are_retried(sim, tmp_path) -> None:
    dataset = rm.write_dataset(tmp_path / "d.jsonl", 50)
    sim.set_faults({"batch_errored": 0.2, "batch_expired": 0.1})
    await run(config(sim, tmp_path, dataset))
    first = calls(tmp_path)
    counts = Counter(first["status"])
    assert counts["error"] > 0 and counts["expired"] > 0 and counts["ok"] > 0
    errors = first.filter(pl.col("status") == "error")
    assert set(errors["error_kind"]) <= {"overloaded", "server_error"}
    assert errors["error_message"].str.contains("overloaded_error|api_error").all()
    assert set(first.filter(pl.col("status") == "expired")["error_kind"]) == {"expired"}
    failed = set(first.filter(pl.col("status") != "ok")["call_id"])
    # A plain resume has nothing left to do: errored and expired calls are finished.
    await run(config(sim, tmp_path, dataset, resume="b1", run_id=None))
    assert len(sim.batches()) == 1
    # --retry-errored resubmits exactly them, in a follow-up batch, as attempt 2.
    sim.set_faults({})
    await run(config(sim, tmp_path, dataset, resume="b1", run_id=None, retry_errored=True))
    final = calls(tmp_path)
    assert final.height == 100 and set(final["status"]) == {"ok"}
    retried = final.filter(pl.col("attempts") == 2)
    assert set(retried["call_id"]) == failed
    truth = sim.batches(custom_ids=True)
    assert len(truth) == 2 and set(truth[1]["custom_ids"]) == failed
    # Each outcome has its event: the retried calls' second events have uuids of their own.
    events = sim.events()
    assert events["unique"] == 100 + len(failed) and events["duplicates"] == 0


async def test_retry_errored_within_one_run_follows_up_until_they_pass(sim, tmp_path) -> None:
    dataset = rm.write_dataset(tmp_path / "d.jsonl", 40)
    sim.set_faults({"batch_errored": 0.3})
    await run(config(sim, tmp_path, dataset, retry_errored=True, max_retries=6))
    frame = calls(tmp_path)
    assert frame.height == 80
    assert frame.filter(pl.col("attempts") > 1).height > 0
    truth = sim.batches(custom_ids=True)
    assert len(truth) >= 2
    # Each follow-up batch holds only calls whose previous attempt failed.
    by_attempt = dict(zip(frame["call_id"], frame["attempts"], strict=True))
    assert sum(len(b["custom_ids"]) for b in truth) == sum(by_attempt.values())
    # One event per call, the last attempt's, as for a live call's retries.
    events = sim.events()
    assert events["unique"] == 80 and events["duplicates"] == 0
    assert sorted(e["properties"]["$ai_trace_id"] for e in events["events"]) == sorted(by_attempt)


async def test_no_wait_submits_and_exits_then_a_resume_collects(sim, tmp_path) -> None:
    dataset = rm.write_dataset(tmp_path / "d.jsonl", 20)
    result = await run(config(sim, tmp_path, dataset, batch_wait=False))
    run_dir = tmp_path / "results" / "b1"
    assert result.outcome.finished == 0 and calls(tmp_path).height == 0
    manifest = RunDir.read(run_dir).manifest
    assert manifest["status"] == "submitted" and len(manifest["batches"]["open"]) == 1
    assert not (run_dir / "report.md").exists()
    await run(config(sim, tmp_path, dataset, resume="b1", run_id=None, report=True))
    frame = calls(tmp_path)
    assert frame.height == 40 and set(frame["status"]) == {"ok"}
    assert len(sim.batches()) == 1, "the resume collected the batch, it did not submit it again"
    assert RunDir.read(run_dir).manifest["status"] == "finished"
    report = (run_dir / "report.md").read_text()
    assert "Batch turnaround" in report and "## Batches" in report and "expiry rate" in report
    assert "batch_turnaround.png" in report and "latency_cdf.png" not in report, "no empty latency charts"


async def test_max_cost_is_checked_before_submission_at_the_batch_price(sim, tmp_path) -> None:
    dataset = rm.write_dataset(tmp_path / "d.jsonl", 50, max_tokens=1000)
    prices = PriceTable.resolve(MODELS.split(","), price_context=BATCH_CONTEXT)
    worst = prices.worst_case_usd("claude-sonnet-4-6", 20, 1000)
    budget = 30 * worst
    result = await run(config(sim, tmp_path, dataset, max_cost_usd=budget))
    assert result.outcome.stopped_by == "budget"
    truth = sim.batches(custom_ids=True)
    submitted = sum(b["request_count"] for b in truth)
    assert 30 <= submitted < 100
    frame = calls(tmp_path)
    assert frame.height == submitted and frame["total_cost_usd"].sum() <= budget
    assert RunDir.read(tmp_path / "results" / "b1").manifest["budget_stopped"] is True


async def test_cancel_leaves_cancelled_rows_that_a_later_resume_submits_again(tmp_path) -> None:
    dataset = rm.write_dataset(tmp_path / "d.jsonl", 20)
    # Slow batches (~6 s), a quick cancel (0.5 s).
    with start_simulator("--time-scale", "0.05", "--seed", "3") as slow:
        await run(config(slow, tmp_path, dataset, batch_wait=False))
        lines = await cancel_batches(tmp_path / "results", "b1")
        assert len(lines) == 1 and lines[0].endswith("canceling"), lines
        await run(config(slow, tmp_path, dataset, resume="b1", run_id=None))
        frame = calls(tmp_path)
        assert frame.height == 40 and set(frame["status"]) <= {"cancelled", "ok"}
        cancelled = frame.filter(pl.col("status") == "cancelled")
        assert cancelled.height > 0 and set(cancelled["error_kind"]) == {"cancelled"}
        assert slow.events()["unique"] == 40 - cancelled.height, "no event for a cancelled call"
        await run(config(slow, tmp_path, dataset, resume="b1", run_id=None))
        assert set(calls(tmp_path)["status"]) == {"ok"}
        truth = slow.batches(custom_ids=True)
        assert len(truth) == 2 and set(truth[1]["custom_ids"]) == set(cancelled["call_id"])
        assert (await cancel_batches(tmp_path / "results", "b1")) == ["b1: no batch is open"]


async def test_judged_answers_in_batches_are_graded_by_a_live_judge(sim, tmp_path) -> None:
    dataset = tmp_path / "judged.jsonl"
    rows = [
        {
            "id": f"j{i}",
            "prompt": f"Summarise: the cat sat on the mat ({i}).",
            "max_tokens": 60,
            "expected": {"judge": {"rubric": "Says the cat sat on the mat.", "reference": "The cat sat."}},
        }
        for i in range(6)
    ] + [
        {"id": f"c{i}", "prompt": f"Capital of France? ({i})", "expected": {"contains": ["Paris"]}}
        for i in range(6)
    ]
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = config(sim, tmp_path, dataset, target="simulator", judge_model="claude-opus-4-8")
    await run(cfg)
    frame = calls(tmp_path)
    judged = frame.filter(pl.col("grader") == "judge")
    assert judged.height == 12 and judged["judge_score"].null_count() == 0
    assert (judged["judge_cost_usd"] > 0).all() and set(judged["judge_model"]) == {"claude-opus-4-8"}
    contains = frame.filter(pl.col("grader") == "contains")
    assert contains.height == 12 and contains["passed"].sum() > 0, "the quality model answers batch requests"
    judge_calls = [r for r in sim.requests() if r["model"] == "claude-opus-4-8"]
    assert len(judge_calls) >= 12, "the judge went live"


async def test_a_live_and_a_batch_run_of_the_same_plan_are_compared(sim, tmp_path) -> None:
    from harness.report import compare_runs

    dataset = tmp_path / "graded.jsonl"
    rows = [
        {
            "id": f"q{i}",
            "prompt": f"Capital of France? ({i})",
            "max_tokens": 40,
            "expected": {"contains": ["Paris"]},
        }
        for i in range(40)
    ]
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    await run(config(sim, tmp_path, dataset, target="simulator", mode="live", run_id="live", concurrency=8))
    await run(config(sim, tmp_path, dataset, target="simulator", run_id="batch"))
    result = compare_runs(tmp_path / "results" / "live", tmp_path / "results" / "batch")
    versus = result.batch_vs_live
    assert versus is not None
    table = versus.table
    assert table.height == 2 and set(table["paired_cases"]) == {40}
    for r in table.iter_rows(named=True):
        assert r["cost_ratio"] == pytest.approx(0.5, abs=0.1)
        assert r["cost_ratio_lo"] <= r["cost_ratio"] <= r["cost_ratio_hi"]
        assert r["live_latency_p50_s"] > 0 and r["batch_turnaround_p50_s"] > 0
        assert 0 < r["live_pass_rate"] <= 1 and 0 < r["batch_pass_rate"] <= 1
        assert 0 <= r["mcnemar_p"] <= 1
    assert (
        "## Batch vs live" in result.markdown
        and "Use live only if you need answers within" in result.markdown
    )
    assert (tmp_path / "results" / "batch" / "compare-batch-live.parquet").exists()
    # Either order: the live run is found by its manifest.
    again = compare_runs(
        tmp_path / "results" / "batch", tmp_path / "results" / "live", out_dir=tmp_path / "out"
    )
    assert again.batch_vs_live is not None and again.batch_vs_live.sentence == versus.sentence
