"""The budget guard: `--max-cost` with a tight budget and 64 calls in flight never spends more than the budget.

The runner reserves each call's worst-case cost (estimated input, all of
`max_tokens`) before sending it and stops scheduling when the next reservation
would not fit, so spend cannot pass the budget at all. The test also checks the
other side: the guard stops no earlier than the in-flight reservations explain.
"""

from __future__ import annotations

import asyncio
import json
import os

import polars as pl
import pytest

from harness.bench import execute_run
from harness.client import request_params
from harness.config import build_config
from harness.dataset import load_cases
from harness.limiter import estimate_input_tokens
from harness.plan import make_plan
from harness.pricing import PriceTable
from tests import reliability_matrix as rm
from tests.simproc import start_simulator

N_CASES, REPEATS, CONCURRENCY = 50, 20, 64


@pytest.fixture(scope="module")
def sim():
    proc = start_simulator("--time-scale", "0.002", "--seed", "41", "--faults", "midstream_error=0.05")
    yield proc
    proc.stop()


def test_max_cost_is_never_exceeded_at_high_concurrency(sim, tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", rm.PLANTED_ANTHROPIC_KEY)
    monkeypatch.setenv("POSTHOG_API_KEY", rm.PLANTED_POSTHOG_KEY)
    dataset = rm.write_dataset(tmp_path / "d.jsonl", N_CASES, max_tokens=16)
    models = tuple(rm.MODELS.split(","))
    prices = PriceTable.resolve(models, {})
    plan = make_plan(load_cases(dataset).cases, models, repeats=REPEATS, seed=42, run_id="x")
    worst = [
        prices.worst_case_usd(
            c.model,
            estimate_input_tokens(c.case.messages, c.case.system),
            int(request_params(c, False)["max_tokens"]),
        )
        for c in plan
    ]
    budget = round(sum(worst) * 0.25, 8)  # room for roughly a third of the plan
    watch = rm.Stopwatch()
    cfg = build_config(
        {
            "dataset": dataset,
            "models": rm.MODELS,
            "repeats": REPEATS,
            "concurrency": CONCURRENCY,
            "max_cost_usd": budget,
            "results_dir": tmp_path / "results",
            "base_url": sim.url,
            "target": "custom",
            "posthog_host": sim.url,
            "progress": "off",
            "report": False,
        },
        env=os.environ,
    )
    result = asyncio.run(execute_run(cfg))
    seconds = watch.seconds
    calls = pl.read_parquet(result.run_dir / "calls.parquet")
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    spent = float(calls["total_cost_usd"].sum())
    assert manifest["budget_stopped"] is True
    assert manifest["stopped_by"] == "budget"
    assert spent <= budget, f"spent {spent} over the budget {budget}"
    assert manifest["spent_usd"] == pytest.approx(spent, rel=1e-9)
    assert 0 < calls.height < len(plan)
    assert manifest["not_started"] == len(plan) - calls.height
    # Not stopped early: what is left is less than what 64 in-flight reservations could have held.
    assert spent > budget - CONCURRENCY * max(worst)
    # Every call sent is a row (nothing sent and then dropped when the budget stopped the run).
    sent = {r["call_id"] for r in sim.requests()}
    assert sent == set(calls["call_id"].to_list())
    assert calls.filter(pl.col("status") == "cancelled").height == 0
    events = sim.events()
    assert {e["uuid"] for e in events["events"]} == set(calls["event_uuid"].to_list())
    rm.assert_no_secrets(dirs=[result.run_dir], texts={"events": json.dumps(events)})
    rm.record(
        "budget-max-cost",
        calls=len(plan),
        **rm.observed(calls, events),
        seconds=seconds,
        note=f"budget ${budget:.6f}, spent ${spent:.6f} ({spent / budget:.1%}); {manifest['not_started']} not started",
    )
