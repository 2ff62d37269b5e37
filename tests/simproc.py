"""Start and stop a simulator subprocess for tests, and talk to its `/_sim/*` control API.

    sim = start_simulator("--time-scale", "0.02", "--seed", "7")
    try:
        client = anthropic.Anthropic(api_key="sk-test", base_url=sim.url, max_retries=0)
        ...
        truth = sim.requests()          # ground truth, one dict per Messages request
        sim.set_faults({"overloaded": 0.2}, model="claude-haiku-4-5")
        sim.outage("posthog", "500", 5)  # capture endpoints answer 500 for 5 s
        sim.reset()                      # forget requests/events, restore startup faults
    finally:
        sim.stop()

`start_simulator` launches `python -m harness.simulator --port 0 ...` with this
interpreter, waits for its one `simulator listening on URL` line, and returns a
`SimProc`. It is also a context manager. The control calls use only the standard
library (blocking), so they work from sync and async tests alike (they are fast on
loopback). This helper must not import the simulator itself: the point is a real,
separate process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["SimProc", "start_simulator"]

_ROOT = Path(__file__).resolve().parent.parent
_PREFIX = "simulator listening on "


@dataclass
class SimProc:
    """A running simulator process: `url`, `port`, `proc`, and the control helpers."""

    url: str
    port: int
    proc: subprocess.Popen[bytes]
    stderr_path: str = field(repr=False)
    _stderr_final: str | None = field(default=None, repr=False)

    # -- lifecycle -----------------------------------------------------------------
    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait (SIGKILL after `timeout`), and return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            self.proc.stdout.close()
        if self._stderr_final is None:
            self._stderr_final = self.stderr_text()
            Path(self.stderr_path).unlink(missing_ok=True)
        return self.proc.returncode

    def stderr_text(self) -> str:
        """What the process wrote to stderr (kept after `stop()` for failure messages)."""
        if self._stderr_final is not None:
            return self._stderr_final
        return Path(self.stderr_path).read_text(encoding="utf-8", errors="replace")

    def __enter__(self) -> SimProc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- control API -----------------------------------------------------------------
    def _call(self, method: str, path: str, payload: Any = None, timeout: float = 30.0) -> bytes:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()

    def requests(self) -> list[dict[str, Any]]:
        """Ground truth: one record per `POST /v1/messages` received, in order of receipt."""
        lines = self._call("GET", "/_sim/requests").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def events(self, summary: bool = False) -> dict[str, Any]:
        """PostHog events: {received, unique, duplicates, events: [first copy of each]}."""
        return json.loads(self._call("GET", "/_sim/events" + ("?summary=1" if summary else "")))

    def reset(self) -> None:
        """Clear requests, events, rate-limit buckets and outages; restore startup faults."""
        self._call("POST", "/_sim/reset", {})

    def set_faults(
        self,
        rates: dict[str, float],
        model: str | None = None,
        *,
        retry_after_s: float | None = None,
        slow_first_byte_s: float | None = None,
    ) -> dict[str, Any]:
        """Replace the fault rates (for every model, or for `model`); returns the settings."""
        payload: dict[str, Any] = {"rates": rates}
        if model is not None:
            payload["model"] = model
        if retry_after_s is not None:
            payload["retry_after_s"] = retry_after_s
        if slow_first_byte_s is not None:
            payload["slow_first_byte_s"] = slow_first_byte_s
        return json.loads(self._call("POST", "/_sim/faults", payload))

    def outage(self, target: str, mode: str, seconds: float) -> None:
        """`target` "anthropic"|"posthog", `mode` "refuse"|"500", for `seconds` (real time)."""
        self._call("POST", "/_sim/outage", {"target": target, "mode": mode, "seconds": seconds})


def start_simulator(*args: str, env: dict[str, str] | None = None, timeout: float = 30.0) -> SimProc:
    """Launch `python -m harness.simulator --port 0 *args` and wait until it listens."""
    fd, stderr_path = tempfile.mkstemp(prefix="simulator-", suffix=".log")
    full_env = dict(os.environ if env is None else env)
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_ROOT), full_env.get("PYTHONPATH")]))
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.simulator", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=fd,
        env=full_env,
        cwd=_ROOT,
    )
    os.close(fd)  # the child has its own copy
    assert proc.stdout is not None
    line: list[bytes] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    first = line[0].decode().strip() if line else ""
    if not first.startswith(_PREFIX):
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        proc.stdout.close()
        log = Path(stderr_path).read_text(errors="replace")
        Path(stderr_path).unlink(missing_ok=True)
        raise RuntimeError(f"simulator did not start (first line {first!r}); stderr:\n{log}")
    url = first[len(_PREFIX) :]
    return SimProc(url=url, port=int(url.rsplit(":", 1)[1]), proc=proc, stderr_path=stderr_path)
