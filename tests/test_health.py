"""Measurement health (issue #16): self-delay columns, the health section and warnings, the timing guard.

Runs go through `execute_run` against the session simulator (time scale 0.02: calls of
tens of milliseconds, so 64 streams saturate one process and one stream leaves it idle).
Assertions are orderings and presence, never millisecond tolerances: the accuracy figures
are `make perf`'s (section health).
"""

from __future__ import annotations

import asyncio
import html
import io
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from rich.console import Console

from harness import loops, selfdelay
from harness.bench import RunResult, execute_run
from harness.config import build_config
from harness.guard import Gate, TimingGuard
from harness.report.health import measure_health
from tests import reliability_matrix as rm
from tests.helpers import make_record
from tests.simproc import SimProc

WARNING = "The timings include the harness's own delay"
GUARD_NOTICE = "The timing guard changed the run's concurrency"


def _run(tmp_path: Path, sim: SimProc, name: str, **overrides: Any) -> tuple[RunResult, str]:
    out = io.StringIO()
    cli = {
        "dataset": rm.write_dataset(tmp_path / f"{name}.jsonl", overrides.pop("cases", 40), max_tokens=24),
        "models": "claude-haiku-4-5",
        "results_dir": tmp_path / name,
        "base_url": sim.url,
        "posthog_host": sim.url,
        "target": "simulator",
        "progress": "off",
        **overrides,
    }
    cfg = build_config(cli, env={})
    result = loops.run(execute_run(cfg, console=Console(file=out, width=400)), cfg.event_loop)
    return result, out.getvalue()


def _self_delays(run_dir: Path) -> pl.DataFrame:
    calls = pl.read_parquet(run_dir / "calls.parquet").filter(pl.col("status") == "ok")
    return calls.select("client_delay_first_token_s", "client_delay_last_byte_s")


@pytest.fixture(scope="module")
def runs(simulator_session: SimProc, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A saturated run (128 streams, no guard) and an idle one (1 stream) against the same simulator."""
    simulator_session.reset()
    tmp = tmp_path_factory.mktemp("health")
    saturated = _run(
        tmp, simulator_session, "saturated", cases=60, repeats=10, concurrency=128, timing_guard=False
    )
    idle = _run(tmp, simulator_session, "idle", cases=30, concurrency=1)
    return {"saturated": saturated, "idle": idle}


def test_self_delay_columns_are_present_non_negative_and_larger_when_saturated(runs):
    saturated = _self_delays(runs["saturated"][0].run_dir)
    idle = _self_delays(runs["idle"][0].run_dir)
    for frame in (saturated, idle):
        assert frame.height > 0
        assert frame.null_count().row(0) == (0, 0)  # every streamed, successful call has both
        assert frame.min().row(0) >= (0.0, 0.0)
    for column in saturated.columns:
        assert saturated[column].mean() > idle[column].mean(), column


def test_a_short_saturated_run_warns_at_the_end_and_atop_its_report(runs):
    result, console = runs["saturated"]
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["loop_lag"]["samples"] < 100  # too few for the old loop-lag warning to speak
    assert "warning: " + WARNING in console
    report = (result.run_dir / "report.md").read_text()
    assert report.split("\n", 3)[2].startswith("> **Warning:** " + WARNING)  # the top line
    assert "## Measurement health" in report and "## Corrected view" in report
    assert html.escape(WARNING) in (result.run_dir / "report.html").read_text()
    figures = manifest["health"]["self_delay"]
    assert figures["distorted"] and figures["share_over_5ms"] > 0.05
    assert figures["notices"][0].startswith(WARNING)
    assert manifest["guard"]["enabled"] is False and manifest["guard"]["changed"] is False


def test_an_idle_run_has_no_warning_and_one_health_line(runs):
    result, console = runs["idle"]
    assert WARNING not in console and "warning:" not in console
    report = (result.run_dir / "report.md").read_text()
    assert "Warning" not in report and "## Measurement health" not in report
    assert "- Measurement health: " in report
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["health"]["self_delay"]["distorted"] is False
    assert manifest["guard"]["changed"] is False and manifest["workers_auto"] is True


def test_the_console_report_and_manifest_show_the_same_figures(runs):
    """One computation: the manifest's copy equals what the report recomputes from calls.parquet."""
    for result, _console in runs.values():
        manifest = json.loads((result.run_dir / "manifest.json").read_text())
        again = measure_health(pl.scan_parquet(result.run_dir / "calls.parquet"), manifest)
        assert again.figures() == manifest["health"]["self_delay"]


def test_the_guard_lowers_concurrency_on_a_saturated_loop_and_says_so(simulator, tmp_path):
    # ~1,200 short calls: the run lasts several of the guard's 0.25 s windows even on a fast machine.
    result, console = _run(tmp_path, simulator, "guarded", cases=60, repeats=20, concurrency=64)
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    guard = manifest["guard"]
    assert guard["enabled"] and guard["changed"] and guard["asked"] == 64
    assert guard["lowest"] < 64 and guard["capacity_streams"] >= 1 and guard["cpu_per_call_ms"] > 0
    first = guard["changes"][0]
    assert first["was"] == 64 and first["allowed"] < 64 and first["at_s"] >= 0 and "busy" in first["why"]
    assert GUARD_NOTICE in console
    assert GUARD_NOTICE in (result.run_dir / "report.md").read_text()
    calls = pl.read_parquet(result.run_dir / "calls.parquet")
    assert calls.height == 1200 and calls.filter(pl.col("status") == "ok").height == 1200  # nothing lost
    assert manifest["health"]["process"]["harness_cpu_s"] > 0


def test_the_guard_keeps_the_asked_concurrency_when_turned_off_and_in_open_loops():
    closed = TimingGuard(32, closed_loop=True, enabled=False)
    opened = TimingGuard(32, closed_loop=False, enabled=True)
    assert closed.gate is None and opened.gate is None
    assert closed.summary()["enabled"] is False and opened.summary()["final"] == 32


def test_gate_holds_streams_above_its_allowance_and_releases_them():
    async def scenario() -> list[str]:
        gate = Gate(1)
        seen: list[str] = []

        async def stream(k: int) -> None:
            await gate.wait(k)
            seen.append(f"s{k}")

        tasks = [asyncio.ensure_future(stream(k)) for k in range(3)]
        await asyncio.sleep(0.01)
        seen.append("raise")
        gate.set(2)
        await asyncio.sleep(0.01)
        seen.append("close")
        gate.close()
        await asyncio.gather(*tasks)
        return seen

    assert asyncio.run(scenario()) == ["s0", "raise", "s1", "close", "s2"]


def test_loop_clock_estimates_nothing_on_an_idle_loop_and_the_wait_behind_a_busy_batch():
    async def scenario() -> tuple[int, int]:
        clock = selfdelay.LoopClock()
        clock.start()
        assert selfdelay.current() is clock
        try:
            await asyncio.sleep(0.02)
            idle = clock.delay_ns(time.perf_counter_ns())
            marks: list[int] = []

            def busy() -> None:  # a 40 ms batch; the mark is taken in the batch after it
                end = time.perf_counter() + 0.04
                while time.perf_counter() < end:
                    pass
                asyncio.get_running_loop().call_soon(
                    lambda: marks.append(clock.delay_ns(time.perf_counter_ns()))
                )

            asyncio.get_running_loop().call_soon(busy)
            await asyncio.sleep(0.06)
            return idle, marks[0]
        finally:
            clock.stop()

    idle, behind = asyncio.run(scenario())
    assert selfdelay.current() is None
    assert idle == 0 and behind > idle


def test_health_of_calls_without_self_delay_columns_says_so():
    """A run from before the columns: no estimate, no warning, one line saying why."""
    rows = [make_record(i, client_delay_first_token_s=None, client_delay_last_byte_s=None) for i in range(5)]
    frame = pl.DataFrame([asdict(r) for r in rows])
    health = measure_health(frame, {"loop_lag": {"samples": 3, "p99_ms": 1.0}})
    assert health.calls == 0 and not health.distorted and health.notices == []
    assert "no self-delay estimates" in health.line()


def test_health_flags_the_share_of_delayed_calls_at_any_number_of_samples():
    rows = [
        make_record(i, client_delay_first_token_s=0.03 if i >= 7 else 0.0, client_delay_last_byte_s=0.001)
        for i in range(10)
    ]
    health = measure_health(pl.DataFrame([asdict(r) for r in rows]), {"loop_lag": {"samples": 2}})
    assert health.calls == 10
    assert health.over == health.severe == 3 and health.distorted
    assert health.notices and health.notices[0].startswith(WARNING)
    corrected = health.corrected[0]
    assert corrected["ttft_p99_corr_s"] < corrected["ttft_p99_s"]
