"""Start the project's simulator as a separate process on a free loopback port, and stop it.

A separate process (not an in-process server) so the simulator's CPU never
shares the harness's event loop and cannot distort what the harness measures.
The child gets its own session (a Ctrl-C meant for the harness does not kill it
mid-grace-period) and dies with its parent so a `kill -9` of the harness leaves
no orphan behind (both through `harness.procs`).
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from harness import procs
from harness.errors import TargetError

__all__ = ["READY_PREFIX", "SimulatorProcess"]

READY_PREFIX = "simulator listening on "  # the simulator's first stdout line, then its URL


class SimulatorProcess:
    """`python -m harness.simulator --port 0 …`; `url` is known once it printed its listening line."""

    def __init__(self, child: procs.Child) -> None:
        self.child = child
        self.proc = child.proc
        self.url = ""

    @classmethod
    def launch(
        cls,
        *,
        time_scale: float = 1.0,
        seed: int = 1234,
        profile: Path | str | None = None,
        faults: str | None = None,
        posthog_only: bool = False,
        extra_args: tuple[str, ...] = (),
    ) -> SimulatorProcess:
        """Spawn the process and return at once: it boots while the harness loads its own imports."""
        args = ["--host", "127.0.0.1", "--port", "0", "--time-scale", repr(time_scale), "--seed", str(seed)]
        if profile:
            args += ["--profile", str(profile)]
        if faults:
            args += ["--faults", faults]
        if posthog_only:
            args += ["--posthog-only"]
        # SIGTERM when the harness dies: the simulator closes its sockets cleanly.
        return cls(procs.start("harness.simulator", [*args, *extra_args], die_signal=signal.SIGTERM))

    def wait_ready(self, timeout_s: float = 20.0) -> SimulatorProcess:
        """Block until the simulator printed its URL; a failure says what the simulator said."""
        if self.url:
            return self
        try:
            first = self.child.read_line(timeout_s).decode(errors="replace").strip()
        except procs.ChildFailed as exc:
            self.child.stop(signal.SIGKILL)
            raise TargetError(f"the simulator did not start: {exc}") from None
        if not first.startswith(READY_PREFIX):
            self.child.stop(signal.SIGKILL)
            raise TargetError(f"the simulator did not start: it said {first[:200]!r}")
        self.url = first[len(READY_PREFIX) :].split()[0]
        return self

    @classmethod
    def start(cls, *, startup_timeout_s: float = 20.0, **options: Any) -> SimulatorProcess:
        return cls.launch(**options).wait_ready(startup_timeout_s)

    def stop(self, timeout_s: float = 5.0) -> int:
        return self.child.stop(signal.SIGTERM, timeout_s)

    def __enter__(self) -> SimulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
