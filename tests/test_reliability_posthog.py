"""PostHog outages during a run: 500 for 30 s, refused for 30 s, then gone; the outbox and `harness events resend`.

A ~75 s open-loop run (20 calls/s) sends its events to a capture-only simulator
that answers 500, then refuses, then is stopped for good. The run's numbers must
not notice (every call ok, measured latencies agree with the API simulator's
ground truth in every phase); every event the capture endpoint does not have is
in `events-outbox.jsonl`; `harness events resend` then delivers them to a capture
endpoint brought back on the same port, with their original uuids, and the two
capture endpoints together hold exactly one event per call (duplicates counted).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import statistics
import subprocess
import threading
import time

import polars as pl
import pytest
from rich.console import Console

from harness.bench import execute_run
from harness.config import build_config
from harness.events.journal import read_events
from harness.rundir import RunDir
from tests import reliability_matrix as rm
from tests.simproc import start_simulator

N_CASES, REPEATS, RATE = 50, 15, 20.0
PLANNED = N_CASES * 2 * REPEATS  # 1,500 calls over ~75 s
WINDOWS = (("500", 8.0, 30.0), ("refuse", 38.0, 30.0))  # (mode, start after run start, seconds)
GONE_AT = 66.0  # stopped while still refusing: it never accepts again during the run


@pytest.mark.slow
@pytest.mark.timing
def test_posthog_500_then_refused_then_gone(tmp_path, monkeypatch, caplog):
    api = start_simulator("--time-scale", "0.05", "--seed", "12")
    capture = start_simulator("--posthog-only", "--seed", "13")
    revived = None
    try:
        monkeypatch.setenv("ANTHROPIC_API_KEY", rm.PLANTED_ANTHROPIC_KEY)
        monkeypatch.setenv("POSTHOG_API_KEY", rm.PLANTED_POSTHOG_KEY)
        dataset = rm.write_dataset(tmp_path / "d.jsonl", N_CASES)
        cfg = build_config(
            {
                "dataset": dataset,
                "models": rm.MODELS,
                "repeats": REPEATS,
                "rate": RATE,
                "arrival": "constant",
                "results_dir": tmp_path / "results",
                "base_url": api.url,
                "target": "custom",
                "posthog_host": capture.url,
                "posthog_max_retries": 2,
                "posthog_flush_timeout_s": 5.0,
                "progress": "plain",
                "report": False,
            },
            env=os.environ,
        )
        marks: dict[str, float] = {}
        snapshot: dict = {}

        def timeline(t0: float) -> None:
            for mode, start, seconds in WINDOWS:
                time.sleep(max(0.0, t0 + start - time.time()))
                marks[mode] = time.time()
                capture.outage("posthog", mode, seconds)
            time.sleep(max(0.0, t0 + GONE_AT - 4.0 - time.time()))
            snapshot.update(capture.events())  # frozen: it has refused everything since 38 s
            time.sleep(max(0.0, t0 + GONE_AT - time.time()))
            marks["gone"] = time.time()
            capture.stop()

        console_out = io.StringIO()
        watch = rm.Stopwatch()
        driver = threading.Thread(target=timeline, args=(time.time(),), daemon=True)
        driver.start()
        with caplog.at_level(logging.DEBUG):
            result = asyncio.run(execute_run(cfg, console=Console(file=console_out, width=200)))
        run_seconds = watch.seconds
        driver.join(30)
        assert set(marks) == {"500", "refuse", "gone"}

        calls = pl.read_parquet(result.run_dir / "calls.parquet")
        manifest = json.loads((result.run_dir / "manifest.json").read_text())
        truth = {r["call_id"]: r for r in api.requests()}

        # The run's numbers are unaffected.
        rm.check_plan_complete(calls, PLANNED, N_CASES, 2, REPEATS)
        assert manifest["status"] == "finished"
        assert calls["status"].to_list() == ["ok"] * PLANNED
        assert calls["attempts"].to_list() == [1] * PLANNED
        assert calls["started_at"].max().timestamp() > marks["gone"] + 3, (
            "the run must still be sending after the capture endpoint is gone"
        )
        phases: dict[str, list[float]] = {"before": [], "500": [], "refuse": [], "gone": []}
        for row in calls.iter_rows(named=True):
            t = truth[row["call_id"]]
            assert row["output_tokens"] == t["output_tokens"]
            started = row["started_at"].timestamp()
            phase = (
                "gone"
                if started >= marks["gone"]
                else "refuse"
                if started >= marks["refuse"]
                else "500"
                if started >= marks["500"]
                else "before"
            )
            phases[phase].append(row["latency_s"] - t["intended_total_s"])
        medians = {k: statistics.median(v) for k, v in phases.items()}
        assert min(len(v) for v in phases.values()) >= 50, {k: len(v) for k, v in phases.items()}
        # Measured minus intended latency: the harness's overhead, the same with or without PostHog.
        assert all(0 <= m < 0.02 for m in medians.values()), medians
        assert max(medians.values()) - min(medians.values()) < 0.01, medians

        # What the capture endpoint did not acknowledge is in the outbox.
        rows = set(calls["event_uuid"].to_list())
        first = {e["uuid"] for e in snapshot["events"]}
        outbox = {e["uuid"]: e for e in read_events(RunDir.read(result.run_dir).events_outbox)}
        assert first | set(outbox) == rows, "an event is neither at the capture endpoint nor in the outbox"
        assert len(outbox) >= PLANNED // 2, "most events fell in the outage"
        assert manifest["events"]["outboxed"] == len(outbox)
        assert manifest["events"]["delivered"] + len(outbox) >= PLANNED

        # Later: the endpoint is back (same port when free) and `harness events resend` delivers the rest.
        port = capture.port
        try:
            revived = start_simulator("--posthog-only", "--port", str(port))
        except RuntimeError:
            revived = start_simulator("--posthog-only")
        env = rm.planted_env()
        env.pop("POSTHOG_HOST", None)
        resend = subprocess.run(
            rm.harness_cmd("events", "resend", str(result.run_dir), "--host", revived.url),
            capture_output=True,
            text=True,
            env=env,
            cwd=rm.ROOT,
            timeout=120,
        )
        assert resend.returncode == 0, resend.stderr
        assert "Traceback" not in resend.stderr
        second = revived.events()
        assert {e["uuid"] for e in second["events"]} == set(outbox), "resend delivers exactly the outbox"
        assert first | {e["uuid"] for e in second["events"]} == rows, "one event per call in the end"
        by_uuid = {r["event_uuid"]: r for r in calls.iter_rows(named=True)}
        for event in second["events"]:
            row = by_uuid[event["uuid"]]
            assert event["properties"]["call_id"] == row["call_id"]
            assert event["properties"]["total_cost_in_dollars"] == pytest.approx(
                row["total_cost_usd"], rel=1e-12
            )
        assert (RunDir.read(result.run_dir).events_outbox).read_bytes() == b"", (
            "the outbox keeps only what still failed"
        )
        received = snapshot["received"] + second["received"]
        unique = len(first | {e["uuid"] for e in second["events"]})
        duplicates = received - unique
        seconds = watch.seconds

        rm.assert_no_secrets(
            dirs=[result.run_dir],
            texts={
                "console": console_out.getvalue(),
                "log records": caplog.text,
                "capture endpoint (run)": json.dumps(snapshot),
                "capture endpoint (resend)": json.dumps(second),
                "resend stdout": resend.stdout,
                "resend stderr": resend.stderr,
            },
        )
        rm.record(
            "posthog-outage",
            calls=PLANNED,
            rows=calls.height,
            errors=rm.errors_by_kind(calls),
            events=f"{len(first)} during the run + {len(outbox)} resent = {unique} unique, {duplicates} dup",
            seconds=seconds,
            note=(
                f"run {run_seconds:.0f} s; latency - intended, median by phase (ms): "
                + ", ".join(f"{k} {v * 1000:.1f}" for k, v in medians.items())
            ),
        )
    finally:
        api.stop()
        capture.stop()
        if revived is not None:
            revived.stop()
