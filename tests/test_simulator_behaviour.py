"""Determinism, time scale, timing accuracy, the command line, and the simulator's isolation."""

from __future__ import annotations

import json
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import anthropic
import pytest

from harness.simulator import cli_main
from tests.simproc import SimProc, start_simulator

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-test-not-a-real-key"


def _ask(sim: SimProc, n: int, model: str = "claude-sonnet-4-6") -> list[tuple[str, int]]:
    with anthropic.Anthropic(api_key=KEY, base_url=sim.url, max_retries=0) as client:
        out = []
        for i in range(n):
            m = client.messages.create(
                model=model, max_tokens=60, messages=[{"role": "user", "content": f"case {i}"}]
            )
            out.append((m.content[0].text, m.usage.output_tokens))  # type: ignore[union-attr]
        return out


def _raw_ttft(sim: SimProc, model: str, prompt: str) -> float:
    """Send → first content delta, with a bare socket: what a plain client measures."""
    payload = {
        "model": model,
        "max_tokens": 4,
        "stream": True,
        "messages": [{"role": "user", "content": prompt}],
    }
    body = json.dumps(payload).encode()
    head = (
        f"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: {KEY}\r\nanthropic-version: 2023-06-01\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", sim.port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        seen = b""
        sent = time.perf_counter()
        sock.sendall(head + body)
        while b"event: content_block_delta" not in seen:
            chunk = sock.recv(65536)
            assert chunk, seen
            seen += chunk
        first = time.perf_counter()
        while sock.recv(65536):
            pass
    return first - sent


def test_same_seed_same_answers_and_time_scale_keeps_the_shape(simulator: SimProc) -> None:
    slow = start_simulator("--time-scale", "0.06", "--seed", "5")
    fast = start_simulator("--time-scale", "0.02", "--seed", "5")
    try:
        measured = {}
        for name, sim in (("slow", slow), ("fast", fast)):
            measured[name] = [_raw_ttft(sim, "claude-opus-4-8", f"p{i}") for i in range(12)]
        answers_slow, answers_fast = _ask(slow, 5), _ask(fast, 5)
        truth_slow, truth_fast = slow.requests(), fast.requests()
    finally:
        slow.stop()
        fast.stop()
    assert answers_slow == answers_fast
    assert answers_slow != _ask(simulator, 5)  # another seed, other answers
    ttft_slow = [t["intended_ttft_s"] for t in truth_slow[:12]]
    ttft_fast = [t["intended_ttft_s"] for t in truth_fast[:12]]
    assert all(abs(a / b - 3.0) < 1e-9 for a, b in zip(ttft_slow, ttft_fast, strict=True))
    ratio = statistics.median(measured["slow"]) / statistics.median(measured["fast"])
    assert 2.5 < ratio < 3.5, ratio


@pytest.mark.timing
def test_measured_ttft_within_2ms_of_intended(simulator: SimProc) -> None:
    measured = [_raw_ttft(simulator, "claude-opus-4-8", f"timing {i}") for i in range(20)]
    intended = [t["intended_ttft_s"] for t in simulator.requests()]
    errors = [m - i for m, i in zip(measured, intended, strict=True)]
    assert abs(statistics.median(errors)) < 0.002, errors
    assert min(errors) > -0.001, errors  # never early


def test_cli_stops_cleanly_on_sigterm_and_sigint() -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        sim = start_simulator("--time-scale", "0")
        sim.proc.send_signal(sig)
        assert sim.proc.wait(10) == 0
        sim.stop()


def test_cli_rejects_bad_options_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[defaults]\nttft_median_s = "fast"\n[defaults.limits]\nrpm = 1\nitpm = 1\notpm = 1\n')
    for args, words in (
        (["--profile", str(bad)], "ttft_median_s"),
        (["--faults", "overloaded=2"], "between 0 and 1"),
    ):
        run = subprocess.run(
            [sys.executable, "-m", "harness.simulator", "--port", "0", *args],
            capture_output=True, text=True, timeout=30, cwd=ROOT, check=False,
        )  # fmt: skip
        assert run.returncode == 2 and words in run.stderr and run.stdout == ""
    assert cli_main(["--time-scale", "-1"]) == 2


def test_simulator_imports_nothing_else_of_harness() -> None:
    code = (
        "import pkgutil, importlib, sys, harness.simulator as s\n"
        "for m in pkgutil.iter_modules(s.__path__):\n"
        "    if m.name != '__main__': importlib.import_module('harness.simulator.' + m.name)\n"
        "bad = sorted(n for n in sys.modules if n.startswith('harness.') and not n.startswith('harness.simulator'))\n"
        "print(len([n for n in sys.modules if n.startswith('harness.simulator.')]), bad)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT, check=True
    )
    count, bad = run.stdout.split(" ", 1)
    assert int(count) >= 10 and bad.strip() == "[]", run.stdout
