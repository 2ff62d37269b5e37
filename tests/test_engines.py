"""The `Engine` interface: one process and worker processes are driven the same way by `execute_run`.

Both engines take the plan in `run(plan)`, stop on `request_stop(reason, now=...)`, and hand every
record to the same sinks, including `extra_sinks` (the seam benchmarks use instead of patching).
"""

from __future__ import annotations

import asyncio
import time

import polars as pl
import pytest

from harness import loops
from harness.bench import execute_run
from harness.config import build_config
from harness.records import CallRecord
from tests import reliability_matrix as rm
from tests.helpers import FakeClient, make_runner, plan


class _Probe:
    def __init__(self) -> None:
        self.records: list[CallRecord] = []
        self.closed = False

    def write(self, record: CallRecord) -> None:
        self.records.append(record)

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("workers", [1, 2])
def test_extra_sinks_get_every_record_the_store_got(simulator, tmp_path, workers):
    dataset = rm.write_dataset(tmp_path / "d.jsonl", 12)
    cfg = build_config(
        {
            "dataset": dataset,
            "models": rm.MODELS,
            "results_dir": tmp_path / "results",
            "base_url": simulator.url,
            "posthog_host": simulator.url,
            "target": "simulator",
            "progress": "off",
            "report": False,
            "workers": workers,
        },
        env={},
    )
    probe = _Probe()
    result = loops.run(execute_run(cfg, extra_sinks=[probe]), cfg.event_loop)
    calls = pl.read_parquet(result.run_dir / "calls.parquet")
    assert calls.height == 12 * len(rm.MODELS.split(","))
    assert sorted(r.call_id for r in probe.records) == sorted(calls["call_id"].to_list())
    assert result.outcome.finished == calls.height


async def test_a_second_stop_with_now_ends_the_grace_period_at_once():
    runner, sink, _ = make_runner(FakeClient(delay=5.0), concurrency=6, grace_s=30.0)
    loop = asyncio.get_running_loop()
    loop.call_later(0.2, runner.request_stop, "signal")
    loop.call_later(0.5, lambda: runner.request_stop("signal", now=True))
    began = time.perf_counter()
    outcome = await runner.run(plan())
    assert time.perf_counter() - began < 5.0  # not the 30 s grace, nor the 5 s calls
    assert outcome.stopped_by == "signal"
    assert outcome.cancelled == 6
    assert {r.status for r in sink.records} == {"cancelled"}
