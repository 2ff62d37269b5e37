"""The fault matrix: each API fault (and an outage, and a mix) over a 2,000-call run, checked against ground truth.

Every case runs the engine in-process against a simulator subprocess (events to a
separate capture-only simulator) with the planted keys in the environment, and asserts:
the run finishes; every planned call is exactly one row; each row's error_kind and
http_status are those of its last attempt's fault; attempts equal the requests the
simulator received and no attempt is sent twice; no retry comes before retry-after;
no cut or truncated stream is `ok`; the events at the capture endpoint are the rows
(by uuid); and no planted key reaches a file, an event or the console.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import logging
import os
import threading
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console

import harness.bench as bench
from harness.bench import execute_run
from harness.config import build_config
from harness.progress import ProgressSink
from tests import reliability_matrix as rm
from tests.simproc import start_simulator

CASES, MODELS_N, REPEATS = 50, 2, 20
PLANNED = CASES * MODELS_N * REPEATS  # 2,000


@pytest.fixture(scope="module")
def sims():
    api = start_simulator("--time-scale", "0.002", "--seed", "5")
    capture = start_simulator("--posthog-only", "--seed", "6")
    yield api, capture
    api.stop()
    capture.stop()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return rm.write_dataset(tmp_path_factory.mktemp("faults") / "d.jsonl", CASES)


def run_case(
    tmp_path, sims, dataset, monkeypatch, caplog, *, faults, max_retries, timeout_s=10.0, on_row=None
):
    """One 2,000-call run with `faults`; returns (calls, truth, events, result, seconds, texts)."""
    api, capture = sims
    api.reset()
    capture.reset()
    api.set_faults(faults, retry_after_s=0.1, slow_first_byte_s=3.0)
    monkeypatch.setenv("ANTHROPIC_API_KEY", rm.PLANTED_ANTHROPIC_KEY)
    monkeypatch.setenv("POSTHOG_API_KEY", rm.PLANTED_POSTHOG_KEY)
    if on_row is not None:

        class Watching(ProgressSink):
            def write(self, record):
                super().write(record)
                on_row(self.done)

        monkeypatch.setattr(bench, "ProgressSink", Watching)
    cfg = build_config(
        {
            "dataset": dataset,
            "models": rm.MODELS,
            "repeats": REPEATS,
            "concurrency": 64,
            "max_retries": max_retries,
            "timeout_s": timeout_s,
            "results_dir": tmp_path / "results",
            "base_url": api.url,
            "target": "custom",
            "posthog_host": capture.url,
            "progress": "plain",
            "report": False,
        },
        env=os.environ,
    )
    console_out = io.StringIO()
    watch = rm.Stopwatch()
    with caplog.at_level(logging.INFO):
        result = asyncio.run(execute_run(cfg, console=Console(file=console_out, width=200)))
    seconds = watch.seconds
    calls = pl.read_parquet(result.run_dir / "calls.parquet")
    requests = api.requests()
    events = capture.events()
    texts = {
        "console": console_out.getvalue(),
        "log records": caplog.text,
        "capture endpoint events": json.dumps(events),
        "manifest delivery": json.dumps(result.delivery),
    }
    return calls, requests, events, result, seconds, texts


def common_checks(calls, requests, events, result, texts, *, refused_ok=False):
    """The invariants every fault case shares; returns the ground-truth counts."""
    rm.check_plan_complete(calls, PLANNED, CASES, MODELS_N, REPEATS)
    assert calls.filter(pl.col("status") == "cancelled").height == 0
    counts = rm.check_rows_against_truth(calls, rm.truth_by_call(requests), refused_ok=refused_ok)
    uuids = {e["uuid"] for e in events["events"]}
    assert uuids == set(calls["event_uuid"].to_list()), "events at the capture endpoint != rows"
    assert events["unique"] == PLANNED
    assert events["duplicates"] == 0
    assert result.delivery["delivered"] == PLANNED
    assert result.delivery["failed"] == 0
    assert (result.run_dir / "events-outbox.jsonl").read_bytes() == b""
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    assert manifest["finished"] == PLANNED
    rm.assert_no_secrets(dirs=[result.run_dir], texts=texts)
    return counts


SINGLE = [
    # case, fault, the row kind it must produce, retried?, max_retries
    ("fault-429", "rate_limit", "rate_limit", True, 1),
    ("fault-529", "overloaded", "overloaded", True, 1),
    ("fault-500", "api_error", "server_error", True, 1),
    ("fault-midstream-error", "midstream_error", "overloaded", True, 1),
    ("fault-drop", "drop", "stream_dropped", False, 2),
    ("fault-truncate", "truncate", "stream_truncated", False, 2),
    ("fault-slow-first-byte", "slow_first_byte", "timeout", True, 1),
]


@pytest.mark.parametrize(
    ("case", "fault", "kind", "retried", "max_retries"), SINGLE, ids=[c[0] for c in SINGLE]
)
def test_single_fault_at_10_percent(
    case, fault, kind, retried, max_retries, sims, dataset, tmp_path, monkeypatch, caplog
):
    calls, requests, events, result, seconds, texts = run_case(
        tmp_path,
        sims,
        dataset,
        monkeypatch,
        caplog,
        faults={fault: 0.1},
        max_retries=max_retries,
        timeout_s=1.5 if fault == "slow_first_byte" else 10.0,
    )
    counts = common_checks(calls, requests, events, result, texts)
    errors = rm.errors_by_kind(calls)
    assert set(errors) <= {kind}, errors  # the only failure this run can have
    faulted = sum(1 for r in requests if r.get("fault") == fault)
    assert faulted >= 100, "about 10% of ~2,000 requests should carry the fault"
    if retried:
        # ~10% retried once; ~1% failed twice and end as errors of the fault's kind.
        assert counts.get("retried", 0) >= 100
        assert 1 <= errors.get(kind, 0) < 100
        if fault == "rate_limit":
            assert counts.get("retry_after_checked", 0) >= 100
        if fault == "midstream_error":  # the error event came after a 200
            assert counts.get("retried_after_midstream_error", 0) >= 100
            assert (calls.filter(pl.col("error_kind") == kind)["http_status"] == 200).all()
    else:
        assert counts.get("retried", 0) == 0, "an in-stream failure must not be retried"
        assert errors[kind] == faulted
        bad = calls.filter(pl.col("error_kind") == kind)
        assert (bad["stop_reason"].is_null()).all()
        assert (bad["http_status"] == 200).all()
    rm.record(
        case,
        calls=PLANNED,
        **rm.observed(calls, events),
        seconds=seconds,
        note=f"{counts['requests']} requests, {counts.get('retried', 0)} calls retried",
    )


def test_mix_of_all_faults_at_10_percent(sims, dataset, tmp_path, monkeypatch, caplog):
    names = list(rm.FAULT_OUTCOME)[1:]
    faults = {name: 0.1 / len(names) for name in names}
    calls, requests, events, result, seconds, texts = run_case(
        tmp_path, sims, dataset, monkeypatch, caplog, faults=faults, max_retries=2, timeout_s=1.5
    )
    counts = common_checks(calls, requests, events, result, texts)
    seen = {r.get("fault") for r in requests} - {None}
    assert seen == set(names), "each fault should strike at least once in ~2,000 requests"
    errors = rm.errors_by_kind(calls)
    in_stream = {"stream_dropped", "stream_truncated"}  # (a mid-stream overload is retried, as a 529)
    assert in_stream <= set(errors), errors
    assert counts.get("retried", 0) >= 50
    rm.record(
        "fault-mix-10pct",
        calls=PLANNED,
        **rm.observed(calls, events),
        seconds=seconds,
        note=f"{counts['requests']} requests, {counts.get('retried', 0)} calls retried",
    )


@pytest.mark.slow
def test_port_refusing_connections_for_10_s_mid_run(sims, dataset, tmp_path, monkeypatch, caplog):
    api, _ = sims
    fired = threading.Event()

    def on_row(done: int) -> None:
        if done == 300 and not fired.is_set():
            fired.set()
            threading.Thread(target=api.outage, args=("anthropic", "refuse", 10.0), daemon=True).start()

    calls, requests, events, result, seconds, texts = run_case(
        tmp_path, sims, dataset, monkeypatch, caplog, faults={}, max_retries=6, on_row=on_row
    )
    assert fired.is_set()
    counts = common_checks(calls, requests, events, result, texts, refused_ok=True)
    received = sorted(r["received_unix"] for r in requests)
    gap = max(b - a for a, b in itertools.pairwise(received))
    assert 9.0 <= gap < 30.0, (
        f"the outage should show as a ~10 s silence in the ground truth, got {gap:.1f} s"
    )
    refused = int(calls["attempts"].sum()) - counts["requests"]
    assert refused > 0, "some attempts must have been refused at the socket"
    errors = rm.errors_by_kind(calls)
    assert set(errors) <= {"stream_dropped", "connection", "timeout"}, errors
    # Retries (back-off up to 8 s, 6 retries) outlast 10 s: nearly every call ends ok.
    assert counts["ok"] >= PLANNED - 64
    rm.record(
        "fault-outage-10s",
        calls=PLANNED,
        **rm.observed(calls, events),
        seconds=seconds,
        note=f"{refused} attempts refused, {counts.get('retried', 0)} calls retried, silence {gap:.1f} s",
    )


def test_doc_lists_exactly_the_registered_cases():
    """docs/reliability.md has one row per registered case, and each case is recorded by a test."""
    assert set(rm.doc_rows()) == set(rm.CASES)
    sources = "".join(
        p.read_text()
        for p in (rm.ROOT / "tests").glob("test_*.py")
        if p.name.startswith(("test_reliability_", "test_secrets", "test_budget"))
    )
    for case in rm.CASES:
        assert f'"{case}"' in sources, f"no test records case {case}"
