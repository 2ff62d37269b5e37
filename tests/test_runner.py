"""The runner alone, driven by a fake client and a list sink: scheduling, retries, budget, stops, bugs."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.limiter import estimate_call_input
from harness.plan import make_plan
from tests.helpers import CASES, PRICES, FakeClient, make_runner, plan


async def test_closed_loop_runs_every_call_once():
    runner, sink, _ = make_runner(FakeClient(), concurrency=5)
    outcome = await runner.run(plan())
    assert outcome.finished == 40 and outcome.not_started == 0
    assert sorted(r.call_id for r in sink.records) == sorted(c.call_id for c in plan())
    assert all(r.status == "ok" and r.attempts == 1 for r in sink.records)
    assert all(r.total_cost_usd > 0 for r in sink.records)


async def test_retries_count_attempts_and_honour_retry_after():
    client = FakeClient(fail_first=2, kind="rate_limit", retry_after=0.05)
    runner, sink, limiter = make_runner(client, concurrency=4, max_retries=3)
    await runner.run(plan(1))
    assert all(r.status == "ok" and r.attempts == 3 for r in sink.records)
    assert all(r.retry_wait_s >= 0.1 for r in sink.records)
    assert len(limiter.rate_limited) == 40
    by_call: dict[str, list[float]] = {}
    for call_id, _, at in client.sent:
        by_call.setdefault(call_id, []).append(at)
    for times in by_call.values():
        assert all(b - a >= 0.05 for a, b in itertools.pairwise(times))


async def test_retries_exhausted_is_an_error_row():
    runner, sink, _ = make_runner(FakeClient(fail_first=9), concurrency=4, max_retries=1)
    await runner.run(plan(1))
    assert {r.status for r in sink.records} == {"error"}
    assert {r.error_kind for r in sink.records} == {"overloaded"}
    assert {r.attempts for r in sink.records} == {2}


async def test_a_bug_in_one_call_costs_one_row_not_the_run():
    runner, sink, _ = make_runner(FakeClient(explode={"c3"}), concurrency=4)
    outcome = await runner.run(plan())
    assert outcome.finished == 40
    broken = [r for r in sink.records if r.case_id == "c3"]
    assert len(broken) == 2 and {r.error_kind for r in broken} == {"harness_error"}


async def test_budget_stops_scheduling_before_it_can_be_exceeded():
    worst = PRICES.worst_case_usd("claude-opus-4-8", max(estimate_call_input(c) for c in plan(2)), 64)
    budget = worst * 7.5
    runner, _sink, _ = make_runner(FakeClient(delay=0.01), concurrency=16, max_cost_usd=budget)
    outcome = await runner.run(plan(2))
    assert outcome.stopped_by == "budget"
    assert outcome.spent_usd <= budget
    assert 0 < outcome.finished < 40


async def test_stop_with_no_grace_records_in_flight_calls_as_cancelled():
    runner, sink, _ = make_runner(FakeClient(delay=5.0), concurrency=6, grace_s=0.0)
    asyncio.get_running_loop().call_later(0.2, runner.request_stop, "signal")
    outcome = await runner.run(plan())
    assert outcome.cancelled == 6
    assert [r.status for r in sink.records] == ["cancelled"] * 6
    assert outcome.not_started == 34


@pytest.mark.timing
async def test_open_loop_releases_on_schedule_not_on_completion():
    runner, _sink, _ = make_runner(FakeClient(delay=0.3), rate=100.0, arrival="constant")
    calls = plan(1, rate=100.0, arrival="constant")
    started = time.monotonic()
    await runner.run(calls)
    elapsed = time.monotonic() - started
    # 20 calls at 100/s are all released within ~0.2 s although each takes 0.3 s.
    assert elapsed < 1.5
    assert runner.outcome.release_lateness["p99_ms"] < 50


@settings(max_examples=30, deadline=None)
@given(n_cases=st.integers(1, 15), repeats=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_plan_has_each_case_model_repeat_once_and_is_seeded(n_cases, repeats, seed):
    cases = CASES[:n_cases]
    models = ["claude-haiku-4-5", "claude-opus-4-8", "claude-sonnet-4-6"]
    a = make_plan(cases, models, repeats=repeats, seed=seed, run_id="x")
    b = make_plan(cases, models, repeats=repeats, seed=seed, run_id="x")
    keys = [(c.case.id, c.model, c.repeat) for c in a]
    assert len(keys) == len(set(keys)) == n_cases * 3 * repeats
    assert [c.call_id for c in a] == [c.call_id for c in b]
    assert len({c.call_id for c in a}) == len(a)


@pytest.mark.parametrize("arrival", ["poisson", "constant"])
def test_arrival_offsets_match_the_rate(arrival):
    calls = make_plan(
        CASES * 50, ["claude-haiku-4-5"], repeats=1, seed=3, run_id="x", rate=50.0, arrival=arrival
    )
    offsets = [c.offset_s for c in calls]
    assert offsets == sorted(offsets)
    assert len(calls) / offsets[-1] == pytest.approx(50.0, rel=0.1)


async def test_a_401_mid_run_aborts_at_once():
    runner, sink, _ = make_runner(
        FakeClient(fail_first=1, kind="authentication"), concurrency=2, max_retries=5
    )
    outcome = await runner.run(plan())
    assert outcome.stopped_by == "abort"
    assert "refused the key" in str(outcome.error)
    assert outcome.finished + outcome.cancelled <= 4
    assert all(r.attempts == 1 for r in sink.records)


async def test_open_loop_marks_a_run_saturated_when_the_cap_holds_calls_back():
    runner, _sink, _ = make_runner(FakeClient(delay=0.2), rate=200.0, arrival="constant", max_in_flight=2)
    await runner.run(plan(1, rate=200.0, arrival="constant"))
    assert runner.outcome.saturated
    runner, _sink, _ = make_runner(FakeClient(delay=0.001), rate=50.0, arrival="constant")
    await runner.run(plan(1, rate=50.0, arrival="constant"))
    assert not runner.outcome.saturated


@pytest.mark.parametrize("ramp_up_s", [0.0, 0.4])
@pytest.mark.timing
async def test_closed_loop_ramp_up_spreads_the_first_calls(ramp_up_s):
    """Without a ramp the workers' first calls leave together; with one, evenly spread over it."""
    client = FakeClient(delay=1.0)
    runner, _sink, _ = make_runner(client, concurrency=8, ramp_up_s=ramp_up_s)
    outcome = await runner.run(plan()[:8])
    assert outcome.finished == 8
    starts = sorted(t for _, _, t in client.sent)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    if ramp_up_s:
        assert all(0.04 <= g <= 0.1 for g in gaps), gaps  # 0.4 s / 8 = 50 ms apart
    else:
        assert starts[-1] - starts[0] < 0.03, gaps


async def test_a_stop_during_the_ramp_starts_no_more_workers():
    client = FakeClient(delay=0.01)
    runner, sink, _ = make_runner(client, concurrency=4, ramp_up_s=20.0)
    asyncio.get_running_loop().call_later(0.2, runner.request_stop, "signal")
    outcome = await runner.run(plan())
    assert outcome.stopped_by == "signal"
    assert {cid for cid, _, _ in client.sent} == {r.call_id for r in sink.records}
    assert len(sink.records) >= 1 and outcome.not_started == 40 - len(sink.records)
