"""Runs spread over worker processes: the same rows, events and guarantees as one process.

Each test runs the real CLI path (`execute_run` or the `harness` command) with
`--workers 2` against the simulator; the workers are real processes running the
real SDK. What differs from one process is checked: the plan split, the shared
open-loop time zero, limits and budget divided, stops propagated, records merged.
"""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from harness import loops
from harness.bench import execute_run
from harness.config import build_config
from harness.limiter import PoolLimits
from harness.runner import RunnerSettings
from harness.workers import STREAMS_PER_WORKER, auto_workers, split_job
from tests import reliability_matrix as rm
from tests.helpers import resume_args, run_args, wait_for
from tests.simproc import start_simulator


@pytest.fixture(scope="module")
def sim():
    proc = start_simulator("--time-scale", "0.01", "--seed", "11")
    yield proc
    proc.stop()


def _run(tmp_path: Path, sim, dataset: Path, **overrides):
    cli = {
        "dataset": dataset,
        "models": rm.MODELS,
        "results_dir": tmp_path / "results",
        "base_url": sim.url,
        "posthog_host": sim.url,
        "target": "simulator",
        "progress": "off",
        "report": False,
        "workers": 2,
        **overrides,
    }
    cfg = build_config(cli, env={})
    return loops.run(execute_run(cfg), cfg.event_loop)


def test_two_workers_give_every_call_one_row_one_event_and_agree_with_the_server(sim, tmp_path):
    sim.reset()
    sim.set_faults({"overloaded": 0.05, "midstream_error": 0.05})
    try:
        dataset = rm.write_dataset(tmp_path / "d.jsonl", 50)
        result = _run(tmp_path, sim, dataset, repeats=2, concurrency=16, max_retries=2)
    finally:
        sim.set_faults({})
    calls = pl.read_parquet(result.run_dir / "calls.parquet")
    rm.check_plan_complete(calls, 200, 50, 2, 2)
    counts = rm.check_rows_against_truth(calls, rm.truth_by_call(sim.requests()))
    assert counts["retried"] > 0 and counts.get("retried_after_midstream_error", 0) > 0, counts
    events = sim.events()
    assert events["duplicates"] == 0
    assert {e["uuid"] for e in events["events"]} == set(calls["event_uuid"].to_list())
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["workers"] == 2 and manifest["status"] == "finished"
    health = manifest["worker_health"]
    assert [w["planned"] for w in health] == [100, 100]
    assert all(w["loop_lag"]["samples"] > 0 for w in health)
    assert manifest["loop_lag"]["p99_ms"] == max(w["loop_lag"]["p99_ms"] for w in health)


@pytest.mark.timing
def test_open_loop_workers_share_one_schedule(sim, tmp_path):
    """Constant arrivals at 100/s split over two processes still land on one 10 ms grid."""
    sim.reset()
    dataset = rm.write_dataset(tmp_path / "d.jsonl", 100)
    result = _run(tmp_path, sim, dataset, models="claude-haiku-4-5", rate=100.0, arrival="constant")
    calls = pl.read_parquet(result.run_dir / "calls.parquet").sort("scheduled_at")
    assert calls.height == 100 and set(calls["status"]) == {"ok"}
    t0 = calls["scheduled_at"][0]
    offsets = [(t - t0).total_seconds() for t in calls["scheduled_at"]]
    # The two workers' anchors (perf_counter ↔ wall clock) differ by microseconds, not milliseconds.
    assert max(abs(o - i * 0.01) for i, o in enumerate(offsets)) < 0.002
    sent = sorted(r["received_unix"] for r in sim.requests())
    assert 0.9 < sent[-1] - sent[0] < 1.2, "released on the 1-second schedule, not in a burst"
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["release_lateness"]["samples"] == 50  # the worst worker's, each released 50
    assert isinstance(manifest["saturated"], bool)  # (its value depends on the machine's load: not asserted)


def test_budget_is_divided_between_workers(sim, tmp_path):
    sim.reset()
    dataset = rm.write_dataset(tmp_path / "d.jsonl", 200, max_tokens=200)
    result = _run(tmp_path, sim, dataset, max_cost_usd=0.02, concurrency=8)
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    calls = pl.read_parquet(result.run_dir / "calls.parquet")
    assert manifest["stopped_by"] == "budget" and manifest["budget_stopped"] is True
    assert 0 < calls["total_cost_usd"].sum() <= 0.02
    assert calls.height < 400 and manifest["not_started"] == 400 - calls.height
    sent = {r["call_id"] for r in sim.requests()}
    assert sent == set(calls["call_id"].to_list()), "every call sent has its row"


def test_sigint_with_workers_lets_in_flight_calls_finish_then_resume_completes(sim, tmp_path):
    """The parent gets the signal (workers are in their own session) and tells the workers."""
    sim.reset()
    sim.set_faults({"slow_first_byte": 1.0}, slow_first_byte_s=2.0)
    forks = rm.ForkServer()
    try:
        dataset = rm.write_dataset(tmp_path / "d.jsonl", 20)
        results, logs = tmp_path / "results", tmp_path / "logs"
        args = run_args(
            dataset, sim, results, repeats=2, concurrency=16, extra=("--run-id", "w", "--workers", "2")
        )
        pid = forks.spawn(args, rm.planted_env(POSTHOG_HOST=sim.url), logs, "interrupted")
        assert wait_for(lambda: len(sim.requests()) >= 16, 60, step=0.1), rm.read_logs(logs)
        os.kill(pid, signal.SIGINT)
        assert forks.wait(pid, 60) == 130, rm.read_logs(logs)
        calls = pl.read_parquet(results / "w" / "calls.parquet")
        sent = {r["call_id"] for r in sim.requests()}
        assert set(calls["call_id"].to_list()) == sent and len(sent) >= 16
        assert Counter(calls["status"].to_list()) == {"ok": len(sent)}, "in-flight calls finished"
        manifest = json.loads((results / "w" / "manifest.json").read_text())
        assert manifest["status"] == "interrupted" and manifest["stopped_by"] == "signal"
        sim.set_faults({})
        pid = forks.spawn(resume_args("w", results), rm.planted_env(POSTHOG_HOST=sim.url), logs, "resumed")
        assert forks.wait(pid, 120) == 0, rm.read_logs(logs)
    finally:
        sim.set_faults({})
        forks.close()
    final = pl.read_parquet(results / "w" / "calls.parquet")
    rm.check_plan_complete(final, 80, 20, 2, 2)
    assert Counter(final["status"].to_list()) == {"ok": 80}
    assert {e["uuid"] for e in sim.events()["events"]} == set(final["event_uuid"].to_list())
    rm.assert_no_secrets(dirs=[results / "w"], texts=rm.read_logs(logs))


def test_split_divides_calls_concurrency_limits_and_budget():
    settings = RunnerSettings(
        run_id="r", target="simulator", concurrency=5, max_in_flight=7, rate=30.0, max_cost_usd=3.0
    )
    plan = list(range(11))
    jobs = split_job(
        3,
        settings,
        plan,
        {"p": PoolLimits(rpm=600, itpm=None, otpm=90)},  # type: ignore[arg-type]
        model_pool={},
        prices=None,
        client={},
        warm=1,
        event_loop="auto",
    )
    assert [j.plan for j in jobs] == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]
    assert [j.settings.concurrency for j in jobs] == [2, 2, 1]
    assert [j.settings.max_in_flight for j in jobs] == [3, 2, 2]
    assert {j.settings.rate for j in jobs} == {10.0} and {j.settings.max_cost_usd for j in jobs} == {1.0}
    assert {j.pools["p"] for j in jobs} == {PoolLimits(rpm=200, itpm=None, otpm=30)}
    assert len({j.settings.seed for j in jobs}) == 3


def test_auto_workers_is_one_below_the_threshold_and_bounded_by_cpus():
    cpus = len(os.sched_getaffinity(0))
    assert (
        auto_workers(concurrency=STREAMS_PER_WORKER, rate=None, max_in_flight=None, local_simulator=True) == 1
    )
    assert auto_workers(concurrency=16, rate=100.0, max_in_flight=None, local_simulator=False) == 1
    many = auto_workers(
        concurrency=100 * STREAMS_PER_WORKER, rate=None, max_in_flight=None, local_simulator=False
    )
    assert many == min(cpus, 16)
    local = auto_workers(
        concurrency=100 * STREAMS_PER_WORKER, rate=None, max_in_flight=None, local_simulator=True
    )
    assert local == max(1, min(cpus - 1, 16))
    # An open loop capped at a few calls in flight needs no second process, whatever its rate.
    assert auto_workers(concurrency=16, rate=1000.0, max_in_flight=10, local_simulator=False) == 1


def test_workers_option_is_validated():
    from harness.errors import ConfigError

    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="--workers"):
            build_config({"models": "claude-haiku-4-5", "workers": bad}, env={})
