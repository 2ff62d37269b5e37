"""Start the project's simulator as a separate process on a free loopback port, and stop it.

A separate process (not an in-process server) so the simulator's CPU never
shares the harness's event loop and cannot distort what the harness measures.
The child gets its own session (a Ctrl-C meant for the harness does not kill it
mid-grace-period) and dies with its parent (PR_SET_PDEATHSIG) so a `kill -9` of
the harness leaves no orphan behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from harness.errors import TargetError

__all__ = ["SimulatorProcess", "die_with_parent"]

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` that has the child sent `sig` when this process dies (Linux); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None

    def arm() -> None:  # runs in the child between fork and exec
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)

    return arm


class SimulatorProcess:
    """`python -m harness.simulator --port 0 …`; `url` is known once it printed its listening line."""

    def __init__(self, proc: subprocess.Popen[str], stderr: IO[bytes]) -> None:
        self.proc = proc
        self.url = ""
        self._stderr = stderr

    @classmethod
    def launch(
        cls,
        *,
        time_scale: float = 1.0,
        seed: int = 1234,
        profile: Path | None = None,
        faults: str | None = None,
        posthog_only: bool = False,
    ) -> SimulatorProcess:
        """Spawn the process and return at once: it boots while the harness loads its own imports."""
        args = [sys.executable, "-m", "harness.simulator", "--host", "127.0.0.1", "--port", "0"]
        args += ["--time-scale", repr(time_scale), "--seed", str(seed)]
        if profile:
            args += ["--profile", str(profile)]
        if faults:
            args += ["--faults", faults]
        if posthog_only:
            args += ["--posthog-only"]
        env = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "POSTHOG_API_KEY")}
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process; closed in stop()
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
        return cls(proc, stderr)

    def wait_ready(self, timeout_s: float = 20.0) -> SimulatorProcess:
        """Block until the simulator printed its URL; a failure says what the simulator said."""
        if self.url:
            return self
        line: list[str] = []
        stdout = self.proc.stdout
        reader = threading.Thread(target=lambda: line.append(stdout.readline() if stdout else ""))
        reader.daemon = True
        reader.start()
        reader.join(timeout_s)
        first = line[0].strip() if line else ""
        if "http://" not in first:
            self.proc.kill()
            self.proc.wait()
            self._stderr.seek(0)
            said = self._stderr.read().decode(errors="replace").strip().splitlines()
            reason = said[-1] if said else first or f"nothing within {timeout_s:.0f} s"
            raise TargetError(f"the simulator did not start: {reason}")
        self.url = first[first.index("http://") :].split()[0]
        return self

    @classmethod
    def start(cls, *, startup_timeout_s: float = 20.0, **options: Any) -> SimulatorProcess:
        return cls.launch(**options).wait_ready(startup_timeout_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self._stderr.close()

    def __enter__(self) -> SimulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
