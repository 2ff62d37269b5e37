"""Micro-benchmarks of the per-call hot path (issue #6, target 7): record, price, event, store append.

Under `make test` pytest-benchmark is disabled, so each benchmarked function runs
once and the asserts check its result; `make perf` runs this file with
`--benchmark-enable` and sums the means (target: under 100 µs per call together).
`test_calc_price_reference` times genai-prices' own `calc_price` for comparison;
it is not part of the sum. (The fast-path-equals-calc_price hypothesis test lives
in tests/test_pricing.py.)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import genai_prices

from harness.client import Attempt
from harness.events.event import EventSettings, build_event
from harness.pricing import PriceTable
from harness.quality import NO_VERDICT
from harness.records import Case, PlannedCall
from harness.runner import Runner, RunnerSettings, _CallState
from harness.store import RunStore
from tests.helpers import make_case, make_record

MODEL = "claude-haiku-4-5"


class _Never:
    async def call(self, call: PlannedCall, *, stream: bool, attempt: int) -> Attempt:
        raise AssertionError("not called in a micro-benchmark")


class _NoLimiter:
    def pool_for(self, model: str) -> Any:
        raise AssertionError("no call is admitted in a micro-benchmark")


def _runner(prices: PriceTable) -> Runner:
    return Runner(RunnerSettings(run_id="run-micro", target="simulator"), _Never(), _NoLimiter(), prices, [])


def _finished_state() -> tuple[PlannedCall, _CallState]:
    case = Case(
        id="c1", messages=({"role": "user", "content": "What is 2 plus 2?"},), max_tokens=20, user_id="u1"
    )
    call = PlannedCall(call_id="call-1", case=case, model=MODEL, repeat=0, index=0)  # type: ignore[call-arg]
    now = time.perf_counter_ns()
    attempt = Attempt(
        sent_ns=now,
        first_token_ns=now + 50_000_000,
        last_byte_ns=now + 550_000_000,
        status=200,
        ok=True,
        model_reported=MODEL,
        stop_reason="end_turn",
        text="four " * 20,
        input_tokens=16,
        output_tokens=20,
        cache_read_input_tokens=3,
    )
    state = _CallState(
        scheduled_ns=now - 1_000_000, admitted_ns=now, attempts=1, last=attempt, first_sent_ns=now
    )
    return call, state


def test_build_record(benchmark: Any) -> None:
    runner = _runner(PriceTable.resolve([MODEL]))
    call, state = _finished_state()
    record = benchmark(runner._record, call, state, NO_VERDICT)
    assert record.status == "ok"
    assert record.output_tokens == 20
    assert abs(record.latency_s - 0.55) < 1e-6  # type: ignore[operator]
    assert record.total_cost_usd > 0


def test_price_usage(benchmark: Any) -> None:
    prices = PriceTable.resolve([MODEL])
    costs = benchmark(prices.cost, MODEL, 1200, 300, 50, 400, 0)
    assert costs.total_usd > 0
    assert abs(costs.total_usd - (costs.input_usd + costs.output_usd + costs.cache_usd)) < 1e-12


def test_build_event(benchmark: Any) -> None:
    settings = EventSettings(
        api_key="phc_micro",
        host="http://127.0.0.1:1",
        dataset="d",
        base_url="http://127.0.0.1:1",
    )
    record = make_record(7, run_id="run-micro")
    event = benchmark(build_event, record, settings, make_case(7))
    assert event["uuid"] == record.event_uuid
    assert event["properties"]["$ai_output_tokens"] == record.output_tokens


def test_store_append(benchmark: Any, tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "run-micro", {"run_id": "run-micro"})
    records = [make_record(i, run_id="run-micro") for i in range(500)]
    state = {"i": 0}

    def append() -> None:
        store.write(records[state["i"] % 500])
        state["i"] += 1

    benchmark(append)
    assert store.rows_written == state["i"] >= 1
    store.close()


def test_calc_price_reference(benchmark: Any) -> None:
    usage = genai_prices.Usage(
        input_tokens=1650, output_tokens=300, cache_read_tokens=400, cache_write_tokens=50
    )
    price = benchmark(genai_prices.calc_price, usage, MODEL, provider_id="anthropic")
    fast = PriceTable.resolve([MODEL]).cost(MODEL, 1200, 300, 50, 400, 0)
    assert abs(float(price.total_price) - fast.total_usd) < 1e-9
