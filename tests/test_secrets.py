"""Secrets and privacy: planted keys never leave the process; opting out of text keeps it out; the simulator is loopback-only.

The failure runs of the matrix (faults, kill -9, signals, storage, PostHog outage)
grep their own outputs for the planted keys; this file adds a normal run with the
report, a run with `--no-prompt-capture --no-store-text`, a check that the grep
would see a leak (also inside compressed parquet), and the simulator's bind address.
"""

from __future__ import annotations

import json
import subprocess
import sys

import polars as pl
import psutil
import pytest

from harness.simlauncher import SimulatorProcess
from tests import reliability_matrix as rm
from tests.simproc import start_simulator

N_CASES, REPEATS = 20, 2
PLANNED = N_CASES * 2 * REPEATS


@pytest.fixture(scope="module")
def sim():
    proc = start_simulator(
        "--time-scale", "0.002", "--seed", "31", "--faults", "overloaded=0.05,midstream_error=0.05"
    )
    yield proc
    proc.stop()


def _run(sim, tmp_path, *extra: str) -> tuple[subprocess.CompletedProcess[str], pl.DataFrame, dict, object]:
    dataset = rm.write_dataset(tmp_path / "d.jsonl", N_CASES)
    results = tmp_path / "results"
    args = [
        "run",
        "--dataset",
        str(dataset),
        "--models",
        rm.MODELS,
        "--repeats",
        str(REPEATS),
        "--concurrency",
        "16",
        "--max-retries",
        "0",  # the injected faults end as failed rows, whose error messages are checked too
        "--target",
        "custom",
        "--base-url",
        sim.url,
        "--progress",
        "plain",
        "--results-dir",
        str(results),
        "--run-id",
        "secrets",
        *extra,
    ]
    done = subprocess.run(
        rm.harness_cmd(*args),
        capture_output=True,
        text=True,
        env=rm.planted_env(POSTHOG_HOST=sim.url),
        cwd=rm.ROOT,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    run_dir = results / "secrets"
    return done, pl.read_parquet(run_dir / "calls.parquet"), sim.events(), run_dir


@pytest.fixture(scope="module")
def normal_run(sim, tmp_path_factory):
    """One run with every default (prompt capture, stored text, report) and the planted keys."""
    sim.reset()
    watch = rm.Stopwatch()
    done, calls, events, run_dir = _run(sim, tmp_path_factory.mktemp("normal"))
    return done, calls, events, run_dir, watch.seconds


def test_planted_keys_never_appear_in_a_normal_run(sim, normal_run):
    done, calls, events, run_dir, seconds = normal_run
    assert calls.height == PLANNED
    assert calls.filter(pl.col("status") == "error").height > 0, "the run should include failed calls too"
    assert (run_dir / "report.html").is_file(), "the report's files are part of what is checked"
    # The key did reach the API: the simulator saw requests (and keys them by a hash, never the key).
    assert len(sim.requests()) >= PLANNED
    manifest = (run_dir / "manifest.json").read_text()
    assert '"api_key": "[secure]"' in manifest and '"posthog_key": "[secure]"' in manifest
    checked = rm.assert_no_secrets(
        dirs=[run_dir],
        texts={"stdout": done.stdout, "stderr": done.stderr, "events": json.dumps(events)},
    )
    assert checked >= 8
    rm.record(
        "secrets-planted-keys",
        calls=PLANNED,
        **rm.observed(calls, events),
        seconds=seconds,
        note=f"{checked} files and streams grepped here; every failure case greps its own",
    )


def test_the_grep_sees_a_planted_key(tmp_path):
    """Guard on the guard: a key in a compressed parquet column, a log or an event is found."""
    pl.DataFrame({"x": [f"note {i} {rm.PLANTED_ANTHROPIC_KEY} end {i}" for i in range(2000)]}).write_parquet(
        tmp_path / "leak.parquet", compression="zstd"
    )
    assert rm.PLANTED_ANTHROPIC_KEY.encode() not in (tmp_path / "leak.parquet").read_bytes()
    with pytest.raises(AssertionError, match="leaked"):
        rm.assert_no_secrets(dirs=[tmp_path])
    with pytest.raises(AssertionError, match="leaked"):
        rm.assert_no_secrets(texts={"log": f"auth {rm.PLANTED_POSTHOG_KEY[:30]}"})


def test_no_prompt_capture_and_no_store_text(sim, normal_run, tmp_path):
    _, full_calls, full_events, _, _ = normal_run
    answers = {t for t in full_calls["response_text"].drop_nulls().to_list() if len(t) >= 12}
    assert len(answers) >= 10
    dump = json.dumps(full_events)
    assert "PROMPTMARK" in dump and any(a in dump for a in answers), "captured by default"

    sim.reset()
    watch = rm.Stopwatch()
    done, calls, events, run_dir = _run(
        sim, tmp_path, "--no-report", "--no-prompt-capture", "--no-store-text"
    )
    assert calls.height == PLANNED
    assert calls["response_text"].null_count() == PLANNED
    # The same dataset and simulator seed give the same answers: none may appear anywhere.
    dump = json.dumps(events)
    assert events["unique"] == calls.filter(pl.col("status") != "cancelled").height
    for event in events["events"]:
        assert not {"prompt", "$ai_input", "$ai_output_choices"} & set(event["properties"])
    stored = "\n".join(text for _, text in rm.files_text(run_dir))
    assert "PROMPTMARK" not in dump
    for answer in answers:
        assert answer not in dump, "response text reached an event"
        assert answer not in stored, "response text reached a file"
    rm.assert_no_secrets(dirs=[run_dir], texts={"stdout": done.stdout, "stderr": done.stderr, "events": dump})
    rm.record(
        "privacy-no-capture",
        calls=PLANNED,
        rows=calls.height,
        errors=rm.errors_by_kind(calls),
        events=f"{events['unique']} unique, no text",
        seconds=watch.seconds,
        note=f"{len(answers)} distinct answers and every prompt searched in events and files",
    )


def _listening(pid: int) -> set[str]:
    return {
        c.laddr.ip for c in psutil.Process(pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN
    }


def test_simulator_binds_loopback_only(sim):
    watch = rm.Stopwatch()
    assert _listening(sim.proc.pid) == {"127.0.0.1"}, "tests' simulator"
    assert sim.url.startswith("http://127.0.0.1:")
    launched = SimulatorProcess.start(time_scale=0.01, posthog_only=True)  # what `harness run` starts
    try:
        assert _listening(launched.proc.pid) == {"127.0.0.1"}
        assert launched.url.startswith("http://127.0.0.1:")
    finally:
        launched.stop()
    default = subprocess.run(
        [sys.executable, "-m", "harness.simulator", "--help"],
        capture_output=True,
        text=True,
        cwd=rm.ROOT,
        timeout=60,
    )
    assert "default 127.0.0.1" in default.stdout.replace("\n", " "), default.stdout
    rm.record(
        "simulator-loopback",
        calls=0,
        rows=0,
        errors="n/a",
        events="n/a",
        seconds=watch.seconds,
        note="listening sockets of the test simulator and of the one `harness run` launches: 127.0.0.1 only",
    )
