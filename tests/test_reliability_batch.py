"""Batch mode killed and interrupted: real `harness run --batch` processes against the simulator.

- `kill -9` at a dozen named steps (before a create is sent, after the server answered it but
  before the journal said so, after a batch was journaled, at start-up, while polling, in the
  middle of a download, after a batch was collected), `--resume` after each: every call ends
  with exactly one row and one event, and the simulator's ground truth shows no call in two
  batches (an unacknowledged batch is adopted, not created again);
- SIGINT / SIGTERM while waiting: exit 130 / 143, the batch still running on the server, the
  resume and cancel commands printed; the resume collects it without creating another.

The kills come from `tests/batchkill.py`, which runs the harness and SIGKILLs it at a step.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from harness import procs
from harness.rundir import RunDir
from tests import reliability_matrix as rm
from tests.helpers import resume_args, run_args, wait_for
from tests.simproc import start_simulator

# (step, n): the session is killed the n-th time it reaches the step (see tests/batchkill.py).
KILLS = [
    ("intent", 1),  # journaled, never sent: the resume finds nothing and submits its calls again
    ("answered", 1),  # created on the server, not journaled: the resume adopts it from the list
    ("intent", 2),
    ("answered", 2),
    ("created", 3),
    ("start", 1),
    ("poll", 1),
    ("poll", 2),
    ("result", 1),  # a download under way: its rows so far stand, the rest come with the resume
    ("result", 30),
    ("collected", 1),
    ("result", 10),
]


@pytest.fixture(scope="module")
def sim():
    proc = start_simulator("--time-scale", "0.01", "--seed", "21")
    yield proc
    proc.stop()


def _profile(tmp_path: Path, max_requests: int) -> Path:
    path = tmp_path / "batch.toml"
    path.write_text(f"[batch]\nmax_requests = {max_requests}\n")
    return path


def _spawn(args: list[str], env: dict[str, str], logs: Path, tag: str, kill: tuple[str, int] | None):
    logs.mkdir(parents=True, exist_ok=True)
    module, extra = ("tests.batchkill", [kill[0], str(kill[1]), "--"]) if kill else ("harness", [])
    with open(logs / f"{tag}.out", "wb") as out, open(logs / f"{tag}.err", "wb") as err:
        return subprocess.Popen(
            procs.command(module, [*extra, *args]), env=env, stdout=out, stderr=err, cwd=rm.ROOT
        )


def _assert_no_call_in_two_batches(sim, journal: list[dict]) -> list[dict]:
    truth = sim.batches(custom_ids=True)
    seen = Counter(cid for b in truth for cid in b["custom_ids"])
    assert [c for c, n in seen.items() if n > 1] == [], "a call was submitted in two batches"
    journaled = {e["batch_id"] for e in journal if e["op"] == "created"}
    assert {b["id"] for b in truth} <= journaled, "a batch the journal does not know"
    return truth


@pytest.mark.slow
def test_batch_kill_9_at_a_dozen_steps_then_resume(sim, tmp_path):
    sim.reset()
    n_cases = 150  # × 2 models: 300 calls in batches of 25
    dataset = rm.write_dataset(tmp_path / "d.jsonl", n_cases)
    results, logs = tmp_path / "results", tmp_path / "logs"
    run_id = "batch-kill9"
    run_dir = results / run_id
    env = rm.planted_env(POSTHOG_HOST=sim.url)
    extra = (
        "--run-id",
        run_id,
        "--batch",
        "--poll-interval",
        "0.05",
        "--profile",
        str(_profile(tmp_path, 25)),
    )
    watch = rm.Stopwatch()
    killed: list[str] = []
    for session, kill in enumerate([*KILLS, None]):
        args = (
            run_args(dataset, sim, results, repeats=1, extra=extra)
            if session == 0
            else resume_args(run_id, results)
        )
        proc = _spawn(args, env, logs, f"session{session:02d}", kill)
        code = proc.wait(120)
        if kill is None:
            assert code == 0, rm.read_logs(logs)
            break
        if code == -signal.SIGKILL:
            killed.append(f"{kill[0]}:{kill[1]}")
        else:
            assert code == 0, rm.read_logs(logs)  # it finished before reaching the step
    seconds = watch.seconds
    assert len(killed) >= 10, killed

    calls = pl.read_parquet(run_dir / "calls.parquet")
    planned = n_cases * 2
    rm.check_plan_complete(calls, planned, n_cases, 2, 1)
    assert set(calls["status"]) == {"ok"}
    assert calls["batch_id"].null_count() == 0
    journal = RunDir.read(run_dir).batch_entries()
    truth = _assert_no_call_in_two_batches(sim, journal)
    assert {cid for b in truth for cid in b["custom_ids"]} == set(calls["call_id"])
    ops = Counter(e["op"] for e in journal)
    adopted = sum(1 for e in journal if e["op"] == "created" and e.get("adopted"))
    assert adopted >= 1, "a batch created but never acknowledged is adopted by the resume"
    assert ops["lost"] >= 1, "an intent that never reached the server is declared lost"
    assert len(truth) == ops["created"], "every batch on the server is journaled once"
    # Each row comes from the batch that answered it, and one event per call reached PostHog.
    where = {cid: b["id"] for b in truth for cid in b["custom_ids"]}
    assert all(where[r["call_id"]] == r["batch_id"] for r in calls.iter_rows(named=True))
    events = sim.events()
    assert {e["uuid"] for e in events["events"]} == set(calls["event_uuid"])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["batches"]["open"] == []
    rm.assert_no_secrets(dirs=[run_dir], texts={**rm.read_logs(logs), "events": json.dumps(events)})
    rm.record(
        "crash-batch-kill9",
        calls=planned,
        **rm.observed(calls, events),
        seconds=seconds,
        note=(
            f"{len(killed)} kills ({', '.join(killed)}); {len(truth)} batches on the server, "
            f"{adopted} adopted after an unacknowledged create, {ops['lost']} intents lost and resubmitted"
        ),
    )


def test_kill_9_while_errored_calls_wait_for_their_follow_up_then_resume(sim, tmp_path):
    """`--retry-errored`: a failed result is not the call's row; killed after the batch was
    collected and before the follow-up was journaled, the resume submits those calls as attempt 2,
    and each call ends with one row and one event."""
    sim.reset()
    sim.set_faults({"batch_errored": 0.3})
    n_cases = 30  # × 2 models: 60 calls in batches of 25
    dataset = rm.write_dataset(tmp_path / "d.jsonl", n_cases)
    results, logs = tmp_path / "results", tmp_path / "logs"
    run_id = "batch-retry-kill9"
    env = rm.planted_env(POSTHOG_HOST=sim.url)
    extra = ("--run-id", run_id, "--batch", "--retry-errored", "--poll-interval", "0.05")
    extra += ("--profile", str(_profile(tmp_path, 25)))
    args = run_args(dataset, sim, results, repeats=1, extra=extra)
    proc = _spawn(args, env, logs, "killed", ("collected", 1))
    assert proc.wait(120) == -signal.SIGKILL, rm.read_logs(logs)
    run_dir = results / run_id
    first = RunDir.read(run_dir).load_calls().collect()
    collected = next(e for e in RunDir.read(run_dir).batch_entries() if e["op"] == "collected")
    in_first = next(e for e in RunDir.read(run_dir).batch_entries() if e.get("key") == collected["key"])
    rowless = set(in_first["call_ids"]) - set(first["call_id"])
    assert rowless, "the first batch had errored results waiting for a follow-up"
    assert not first.filter(pl.col("call_id").is_in(sorted(rowless))).height

    sim.set_faults({})
    proc = _spawn(resume_args(run_id, results, "--retry-errored"), env, logs, "resumed", None)
    assert proc.wait(120) == 0, rm.read_logs(logs)
    calls = pl.read_parquet(run_dir / "calls.parquet")
    rm.check_plan_complete(calls, n_cases * 2, n_cases, 2, 1)
    assert set(calls["status"]) == {"ok"}
    attempts = dict(zip(calls["call_id"], calls["attempts"], strict=True))
    assert {cid for cid in rowless if attempts[cid] == 2} == rowless, "the resume went on with attempt 2"
    truth = sim.batches(custom_ids=True)
    submitted = Counter(cid for b in truth for cid in b["custom_ids"])
    assert submitted == Counter(attempts), "each call was submitted once per attempt, no more"
    events = sim.events()
    assert events["duplicates"] == 0 and {e["uuid"] for e in events["events"]} == set(calls["event_uuid"])
    traces = Counter(e["properties"]["$ai_trace_id"] for e in events["events"])
    assert set(traces) == set(attempts) and set(traces.values()) == {1}, "one event per call"


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_waiting_leaves_the_batch_running_and_says_how_to_resume(tmp_path, sig, code):
    # Slow batches (~6 s) so the signal comes while the harness waits.
    with start_simulator("--time-scale", "0.05", "--seed", "4") as slow:
        dataset = rm.write_dataset(tmp_path / "d.jsonl", 20)
        results, logs = tmp_path / "results", tmp_path / "logs"
        run_id = "batch-signal"
        env = rm.planted_env(POSTHOG_HOST=slow.url)
        watch = rm.Stopwatch()
        extra = ("--run-id", run_id, "--batch", "--poll-interval", "0.05")
        proc = _spawn(run_args(dataset, slow, results, repeats=1, extra=extra), env, logs, "signalled", None)
        run = results / run_id
        assert wait_for(lambda: b'"op":"created"' in _journal_bytes(run), 60, step=0.05), rm.read_logs(logs)
        os.kill(proc.pid, sig)
        assert proc.wait(60) == code, rm.read_logs(logs)
        err = (logs / "signalled.err").read_text()
        assert "Traceback" not in err
        assert f"harness run --resume {run_id} --results-dir {results}" in err.replace("\n", " ")
        assert f"harness batches cancel {run_id}" in err.replace("\n", "")
        truth = slow.batches()
        assert len(truth) == 1 and truth[0]["processing_status"] == "in_progress", "the batch runs on"
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["status"] == "interrupted" and len(manifest["batches"]["open"]) == 1
        proc = _spawn(resume_args(run_id, results), env, logs, "resumed", None)
        assert proc.wait(120) == 0, rm.read_logs(logs)
        calls = pl.read_parquet(run / "calls.parquet")
        assert calls.height == 40 and set(calls["status"]) == {"ok"}
        assert len(slow.batches()) == 1, "the resume collected the batch: none created again"
        events = slow.events()
        assert {e["uuid"] for e in events["events"]} == set(calls["event_uuid"])
        rm.assert_no_secrets(dirs=[run], texts=rm.read_logs(logs))
        rm.record(
            "crash-batch-sigint" if sig == signal.SIGINT else "crash-batch-sigterm",
            calls=40,
            **rm.observed(calls, events),
            seconds=watch.seconds,
            note=f"signal while waiting: exit {code}, the batch still in_progress on the server; resume exit 0",
        )


def _journal_bytes(run: Path) -> bytes:
    try:
        return (run / "batches.jsonl").read_bytes()
    except FileNotFoundError:
        return b""
