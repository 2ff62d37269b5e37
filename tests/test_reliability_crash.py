"""Crashes and interruptions of a real `python -m harness run` process, checked against the simulator's ground truth.

- kill -9 at 20+ seeded points of a 5,000-call run, `--resume` after each, until it completes;
- SIGINT (in-flight calls finish, exit 130) and SIGTERM with a short grace (in-flight
  calls recorded `cancelled`, exit 143), each followed by a resume that completes;
- an unwritable results directory and a full disk, refused before the first call,
  and a disk that fills mid-run (in-process, with the store's writes failing ENOSPC).

Every subprocess runs with the planted keys in its environment; all their output and
files are grepped for them.
"""

from __future__ import annotations

import bisect
import errno
import json
import os
import random
import signal
import time
from collections import Counter, defaultdict
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

import harness.rundir as rundir_module
import harness.store as store_module
from harness.cli import app
from harness.rundir import RunDir
from tests import reliability_matrix as rm
from tests.helpers import resume_args, run_args, wait_for
from tests.simproc import start_simulator

MIN_KILLS = 20


@pytest.fixture(scope="module")
def sim():
    proc = start_simulator("--time-scale", "0.002", "--seed", "8")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def server():
    forks = rm.ForkServer()
    yield forks
    forks.close()


def new_rows(parts: Path, before: set[str]) -> tuple[bool, int]:
    """(the new session's journal exists, rows in it so far)."""
    started, rows = False, 0
    for path in parts.glob("journal-*.jsonl"):
        if path.name in before:
            continue
        started = True
        try:
            rows += path.read_bytes().count(b"\n")
        except FileNotFoundError:  # converted to a part meanwhile
            rows += store_module.CHUNK_ROWS
    return started, rows


def finished_map(run_dir: Path) -> dict[str, str | None]:
    """call_id → request_id of every finished (not cancelled) row on disk."""
    calls = RunDir.read(run_dir).load_calls().collect().filter(pl.col("status") != "cancelled")
    return dict(zip(calls["call_id"].to_list(), calls["request_id"].to_list(), strict=True))


@pytest.mark.slow
def test_kill_9_at_20_seeded_points_then_resume(sim, server, tmp_path):
    sim.reset()
    sim.set_faults({"overloaded": 0.03})  # some calls take several attempts
    n_cases, repeats = 50, 50
    planned = n_cases * 2 * repeats  # 5,000
    dataset = rm.write_dataset(tmp_path / "d.jsonl", n_cases)
    results, logs = tmp_path / "results", tmp_path / "logs"
    run_id = "crash-kill9"
    run_dir = results / run_id
    parts = run_dir / "parts"
    env = rm.planted_env(POSTHOG_HOST=sim.url)
    rng = random.Random(20240605)
    watch = rm.Stopwatch()
    launches: list[float] = []
    snapshots: list[dict[str, str | None]] = []
    kill_kinds: Counter[str] = Counter()
    session = 0
    while True:
        args = (
            run_args(dataset, sim, results, repeats=repeats, extra=("--run-id", run_id))
            if session == 0
            else resume_args(run_id, results)
        )
        before = {p.name for p in parts.glob("journal-*.jsonl")} if parts.is_dir() else set()
        launches.append(time.time())
        pid = server.spawn(args, env, logs, f"session{session:02d}")
        if len(snapshots) >= MIN_KILLS:
            assert server.wait(pid, 180) == 0, rm.read_logs(logs)
            break
        # Seeded kill point: every fifth as soon as the new session has its journal open
        # (start-up: journals recovered, preflight done), the others after 1-250 new rows.
        at_start = session % 5 == 4
        threshold = 0 if at_start else rng.randint(1, 250)
        ended: list[int] = []

        def reached(before=before, threshold=threshold, at_start=at_start, pid=pid, ended=ended) -> bool:
            started, rows = new_rows(parts, before)
            if started and rows >= threshold and (at_start or rows > 0):
                return True
            code = server.poll(pid)
            if code is not None:
                ended.append(code)
            return bool(ended)

        assert wait_for(reached, 120), "the harness made no progress"
        if ended:
            assert ended[0] == 0, rm.read_logs(logs)
            break  # it finished before the kill point: the run is complete
        assert server.kill(pid) == -signal.SIGKILL
        kill_kinds["start-up" if at_start else "mid-run"] += 1
        time.sleep(0.3)  # requests the dead process wrote out are received before the next launch
        snapshots.append(finished_map(run_dir))
        session += 1
    seconds = watch.seconds
    kills = len(snapshots)
    assert kills >= MIN_KILLS

    # Every planned call exactly once.
    calls = pl.read_parquet(run_dir / "calls.parquet")
    rm.check_plan_complete(calls, planned, n_cases, 2, repeats)
    assert set(calls["status"].unique().to_list()) <= {"ok", "error"}
    final = dict(zip(calls["call_id"].to_list(), calls["request_id"].to_list(), strict=True))
    attempts = dict(zip(calls["call_id"].to_list(), calls["attempts"].to_list(), strict=True))

    # No finished call lost, and none re-done: its row after every later session is the same answer.
    first_seen: dict[str, int] = {}
    for i, snap in enumerate(snapshots):
        for call_id, request_id in snap.items():
            assert final[call_id] == request_id, f"finished call {call_id} was re-done or lost"
            first_seen.setdefault(call_id, i)
    finished_before_end = len(first_seen)
    assert finished_before_end > 1000, "the kills should land after a good part of the run finished"

    # Ground truth, attributed to the session that sent it (sessions never overlap):
    # a call finished in session s reached the simulator exactly `attempts` times in s, never
    # after s, and before s only as attempts in flight at a kill (which wrote no row).
    by_session: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for r in sim.requests():
        s = bisect.bisect_right(launches, r["received_unix"]) - 1
        by_session[r["call_id"]][s] += 1
    last_session = len(launches) - 1
    resent_in_flight = 0
    for call_id, request_id in final.items():
        s = first_seen.get(call_id, last_session)
        sent = by_session[call_id]
        assert sent.get(s, 0) == attempts[call_id], (call_id, s, dict(sent), attempts[call_id])
        assert all(k <= s for k in sent), f"finished call {call_id} was sent again after it finished"
        resent_in_flight += sum(v for k, v in sent.items() if k < s)
        assert request_id is not None

    # Events: one per call at the capture endpoint (journals recovered on each resume).
    events = sim.events()
    uuids = {e["uuid"] for e in events["events"]}
    assert uuids == set(calls["event_uuid"].to_list())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    # A start-up kill can land before the new session is added to the manifest (it wrote nothing).
    assert kills + 1 - kill_kinds["start-up"] <= len(manifest["sessions"]) <= kills + 1
    rm.assert_no_secrets(dirs=[run_dir], texts={**rm.read_logs(logs), "events": json.dumps(events)})
    rm.record(
        "crash-kill9",
        calls=planned,
        **rm.observed(calls, events),
        seconds=seconds,
        note=(
            f"{kills} kills ({kill_kinds['mid-run']} mid-run, {kill_kinds['start-up']} at start-up); "
            f"{finished_before_end} calls finished before the last session, none re-sent; "
            f"{resent_in_flight} in-flight attempts re-sent"
        ),
    )


def _interrupt_then_resume(
    sim, server, tmp_path, sig: signal.Signals, extra: tuple[str, ...], case: str
) -> None:
    """Run with every first byte 2 s late; signal once calls are in flight; check; resume to completion."""
    sim.reset()
    sim.set_faults({"slow_first_byte": 1.0}, slow_first_byte_s=2.0)
    n_cases, repeats, concurrency = 20, 2, 16
    planned = n_cases * 2 * repeats
    dataset = rm.write_dataset(tmp_path / "d.jsonl", n_cases)
    results, logs = tmp_path / "results", tmp_path / "logs"
    run_id = f"{case}-run"
    run_dir = results / run_id
    env = rm.planted_env(POSTHOG_HOST=sim.url)
    watch = rm.Stopwatch()
    args = run_args(
        dataset, sim, results, repeats=repeats, concurrency=concurrency, extra=("--run-id", run_id, *extra)
    )
    pid = server.spawn(args, env, logs, "interrupted")
    assert wait_for(lambda: len(sim.requests()) >= concurrency, 60, step=0.1), rm.read_logs(logs)
    in_flight = {r["call_id"] for r in sim.requests()}
    os.kill(pid, sig)
    code = server.wait(pid, 60)
    expected_code = 130 if sig == signal.SIGINT else 143
    assert code == expected_code, rm.read_logs(logs)
    err = (logs / "interrupted.err").read_text()
    assert "Traceback" not in err
    assert "interrupted by" in err and "--resume" in err
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    assert manifest["stopped_by"] == "signal"
    calls = pl.read_parquet(run_dir / "calls.parquet")  # built at the interrupt: flushed
    assert calls.height == manifest["finished"] + manifest["cancelled"]
    sent = {r["call_id"] for r in sim.requests()}
    assert set(calls["call_id"].to_list()) == sent, "every call sent has its row, no other call has one"
    assert in_flight <= sent
    statuses = Counter(calls["status"].to_list())
    if sig == signal.SIGINT:
        assert statuses == {"ok": len(sent)}, "in-flight calls finish within the grace period"
    else:
        assert statuses == {"cancelled": len(sent)}, "past the grace period in-flight calls are cancelled"
        assert calls["error_kind"].to_list() == ["cancelled"] * len(sent)
    events = sim.events()
    assert {e["uuid"] for e in events["events"]} == set(
        calls.filter(pl.col("status") != "cancelled")["event_uuid"].to_list()
    ), "events flushed: one per finished call, none for cancelled ones"
    interrupted_rows = dict(statuses)

    sim.set_faults({})
    before = sim.requests()
    pid = server.spawn(resume_args(run_id, results), env, logs, "resumed")
    assert server.wait(pid, 120) == 0, rm.read_logs(logs)
    seconds = watch.seconds
    final = pl.read_parquet(run_dir / "calls.parquet")
    rm.check_plan_complete(final, planned, n_cases, 2, repeats)
    assert Counter(final["status"].to_list()) == {"ok": planned}
    resent = Counter(r["call_id"] for r in sim.requests()[len(before) :])
    finished_first = set(calls.filter(pl.col("status") == "ok")["call_id"].to_list())
    assert not finished_first & set(resent), "a call finished before the signal was sent again"
    assert len(resent) == planned - len(finished_first)
    events = sim.events()
    assert {e["uuid"] for e in events["events"]} == set(final["event_uuid"].to_list())
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "finished"
    rm.assert_no_secrets(dirs=[run_dir], texts={**rm.read_logs(logs), "events": json.dumps(events)})
    rm.record(
        case,
        calls=planned,
        **rm.observed(final, events),
        seconds=seconds,
        note=f"at the signal: {interrupted_rows}; exit {code}; resume exit 0",
    )


def test_sigint_lets_in_flight_calls_finish_then_resume_completes(sim, server, tmp_path):
    _interrupt_then_resume(sim, server, tmp_path, signal.SIGINT, (), "crash-sigint")


def test_sigterm_cancels_in_flight_calls_after_grace_then_resume_completes(sim, server, tmp_path):
    _interrupt_then_resume(sim, server, tmp_path, signal.SIGTERM, ("--grace", "0.3"), "crash-sigterm")


# ---------------------------------------------------------------- storage


def _cli(args: list[str], monkeypatch, capture_url: str) -> tuple[int, str]:
    monkeypatch.setenv("ANTHROPIC_API_KEY", rm.PLANTED_ANTHROPIC_KEY)
    monkeypatch.setenv("POSTHOG_API_KEY", rm.PLANTED_POSTHOG_KEY)
    monkeypatch.setenv("POSTHOG_HOST", capture_url)
    monkeypatch.setenv("COLUMNS", "300")
    result = CliRunner().invoke(app, args)
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert "Traceback" not in output
    return result.exit_code, output


def test_unwritable_results_dir_fails_before_the_first_call(sim, tmp_path, monkeypatch):
    sim.reset()
    watch = rm.Stopwatch()
    dataset = rm.write_dataset(tmp_path / "d.jsonl", 5)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the results directory should be\n")
    results = blocker / "results"
    code, output = _cli(run_args(dataset, sim, results, repeats=1), monkeypatch, sim.url)
    assert code == 2, output
    assert str(results) in output.replace("\n", "")
    assert sim.requests() == [], "no call may be sent"
    assert not results.exists()
    rm.assert_no_secrets(texts={"cli output": output})
    rm.record(
        "storage-unwritable",
        calls=10,
        rows=0,
        errors="exit 2",
        events="0",
        seconds=watch.seconds,
        note="results dir under a regular file: refused, 0 requests sent",
    )


def test_full_disk_fails_before_the_first_call(sim, tmp_path, monkeypatch):
    sim.reset()
    watch = rm.Stopwatch()
    dataset = rm.write_dataset(tmp_path / "d.jsonl", 5)
    results = tmp_path / "results"
    real = rundir_module.shutil.disk_usage

    def nearly_full(path):
        usage = real(path)
        return type(usage)(usage.total, usage.total - 1024, 1024)

    monkeypatch.setattr(rundir_module.shutil, "disk_usage", nearly_full)
    code, output = _cli(run_args(dataset, sim, results, repeats=1), monkeypatch, sim.url)
    assert code == 2, output
    flat = output.replace("\n", "")
    assert str(results) in flat and "free disk space" in flat
    assert sim.requests() == []
    assert not any(results.iterdir()) if results.exists() else True
    rm.assert_no_secrets(texts={"cli output": output})
    rm.record(
        "storage-full-at-start",
        calls=10,
        rows=0,
        errors="exit 2",
        events="0",
        seconds=watch.seconds,
        note="1 KB free: refused, 0 requests sent, no run directory",
    )


class _FillingDisk:
    """The run directory's view of `os` (the calls journal is appended through it) with a disk that fills after `room` journal writes (ENOSPC)."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.writes = 0

    def __getattr__(self, name):
        return getattr(os, name)

    def write(self, fd, data):
        self.writes += 1
        if self.writes > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.write(fd, data)


def test_disk_full_mid_run_stops_scheduling_and_keeps_what_was_written(sim, tmp_path, monkeypatch):
    sim.reset()
    watch = rm.Stopwatch()
    dataset = rm.write_dataset(tmp_path / "d.jsonl", 50)
    results = tmp_path / "results"
    room, concurrency, planned = 300, 16, 50 * 2 * 10
    disk = _FillingDisk(room)
    monkeypatch.setattr(rundir_module, "os", disk)
    args = run_args(dataset, sim, results, repeats=10, concurrency=concurrency, extra=("--run-id", "full"))
    code, output = _cli(args, monkeypatch, sim.url)
    monkeypatch.setattr(rundir_module, "os", os)
    assert code == 2, output
    assert "No space left on device" in output.replace("\n", "")
    run_dir = results / "full"
    assert str(run_dir) in output.replace("\n", "")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert manifest["stopped_by"] == "storage"
    calls = RunDir.read(run_dir).load_calls().collect()
    assert calls.height == room, "every row written before the disk filled is kept, and only those"
    assert calls["call_id"].n_unique() == room
    sent = len(sim.requests())
    assert sent < planned / 2, "scheduling stopped"
    assert sent <= room + 2 * concurrency, f"{sent} requests: at most the in-flight ones after the failure"
    events = sim.events()
    assert {e["uuid"] for e in events["events"]} == set(calls["event_uuid"].to_list()), (
        "an event was sent for a call whose row could not be stored"
    )
    rm.assert_no_secrets(dirs=[run_dir], texts={"cli output": output, "events": json.dumps(events)})
    rm.record(
        "storage-full-mid-run",
        calls=planned,
        rows=calls.height,
        errors="exit 2",
        events=f"{events['unique']} unique = rows",
        seconds=watch.seconds,
        note=f"ENOSPC after {room} rows: {sent} requests sent in all, {room} rows kept",
    )
