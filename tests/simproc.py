"""Start and stop a simulator subprocess for tests, and talk to its `/_sim/*` control API.

    sim = start_simulator("--time-scale", "0.02", "--seed", "7")
    try:
        client = anthropic.Anthropic(api_key="sk-test", base_url=sim.url, max_retries=0)
        ...
        truth = sim.requests()          # ground truth, one dict per Messages request
        batches = sim.batches(True)     # ground truth, one dict per Message Batch (with custom_ids)
        sim.set_faults({"overloaded": 0.2}, model="claude-haiku-4-5")
        sim.outage("posthog", "500", 5)  # capture endpoints answer 500 for 5 s
        sim.reset()                      # forget requests/events, restore startup faults
    finally:
        sim.stop()

`start_simulator` launches `python -m harness.simulator --port 0 ...` through
`harness.simlauncher` (the harness's own launcher: no secrets in its environment, dies
with this process), waits for its listening line, and returns a `SimProc`. It is also a context manager. The control calls use only the standard
library (blocking), so they work from sync and async tests alike (they are fast on
loopback). This helper must not import the simulator itself: the point is a real,
separate process.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from harness.simlauncher import SimulatorProcess

__all__ = ["SimProc", "start_simulator"]


@dataclass
class SimProc:
    """A running simulator process: `url`, `port`, `proc`, and the control helpers."""

    url: str
    port: int
    launched: SimulatorProcess = field(repr=False)
    _stderr_final: str | None = field(default=None, repr=False)

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        return self.launched.proc

    # -- lifecycle -----------------------------------------------------------------
    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait (SIGKILL after `timeout`), and return the exit code."""
        if self._stderr_final is None:
            self._stderr_final = self.launched.child.stderr_text()
        return self.launched.stop(timeout)

    def stderr_text(self) -> str:
        """What the process wrote to stderr (kept after `stop()` for failure messages)."""
        if self._stderr_final is not None:
            return self._stderr_final
        return self.launched.child.stderr_text()

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

    def batches(self, custom_ids: bool = False) -> list[dict[str, Any]]:
        """Ground truth: one record per Message Batch created, in order (with its custom_ids if asked)."""
        lines = self._call("GET", "/_sim/batches" + ("?custom_ids=1" if custom_ids else "")).splitlines()
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


def start_simulator(*args: str, timeout: float = 30.0) -> SimProc:
    """Launch `python -m harness.simulator --port 0 *args` (through the harness's launcher) and wait until it listens."""
    launched = SimulatorProcess.launch(extra_args=args).wait_ready(timeout)
    return SimProc(url=launched.url, port=int(launched.url.rsplit(":", 1)[1]), launched=launched)
