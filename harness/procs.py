"""Child processes: every process the harness starts (simulator, workers, PostHog delivery) starts here.

A child gets:

- an environment without secrets (`harness.secrets.child_env`), with this checkout on
  PYTHONPATH: keys reach a child only through a pipe, never its environment or argv;
- its own session, so a Ctrl-C on the terminal reaches only the harness, which then ends
  its children through their own protocols (after letting in-flight calls finish);
- die-with-parent armed *after exec*: the command is `python -m harness.procs SIGNAL MODULE
  ARGS…`, a trampoline that sets PR_SET_PDEATHSIG (Linux), exits if the harness already died
  during start-up, then runs MODULE as `__main__`. (A `preexec_fn` would run between fork and
  exec of a process that has threads, which the Python docs warn can deadlock the child.)
- a ready line: whatever a child prints first on stdout means "up"; `Child.read_line` waits
  for it with a timeout and, when the child died instead, says what its stderr said.

This module imports nothing heavy: the CLI starts children before its own big imports.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import runpy
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from harness.secrets import child_env

__all__ = ["Child", "ChildFailed", "command", "environment", "start", "start_async"]

PARENT_ENV = "HARNESS_PARENT_PID"
_PR_SET_PDEATHSIG = 1
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


class ChildFailed(RuntimeError):
    """A child did not print its ready line (it died, or said nothing in time)."""


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A child's environment: no secrets, this checkout importable (also for a harness run by a test)."""
    env = child_env(extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
    return env


def command(
    module: str, args: tuple[str, ...] | list[str] = (), *, die_signal: int = signal.SIGKILL
) -> list[str]:
    """argv that runs `python -m module args…` behind the die-with-parent trampoline."""
    return [sys.executable, "-m", "harness.procs", str(int(die_signal)), module, *args]


class Child:
    """A started child: `proc`, its stderr in a temporary file, and a bounded read of its ready line."""

    def __init__(self, proc: subprocess.Popen[bytes], stderr: IO[bytes]) -> None:
        self.proc = proc
        self._stderr = stderr

    def read_line(self, timeout_s: float) -> bytes:
        """The child's next stdout line (read byte by byte: nothing after it is consumed)."""
        stdout = self.proc.stdout
        assert stdout is not None
        fd = stdout.fileno()
        line = bytearray()
        deadline = time.monotonic() + timeout_s
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise ChildFailed(self.why(f"nothing within {timeout_s:g} s"))
            byte = os.read(fd, 1)
            if not byte:
                raise ChildFailed(self.why("it exited"))
            line += byte
        return bytes(line)

    def why(self, fallback: str) -> str:
        """The child's last stderr line (a traceback's verdict), else `fallback`."""
        with contextlib.suppress(OSError, ValueError):
            self._stderr.seek(0)
            lines = self._stderr.read()[-4000:].decode(errors="replace").strip().splitlines()
            if lines:
                return lines[-1][:300]
        return fallback

    def stderr_text(self) -> str:
        with contextlib.suppress(OSError, ValueError):
            self._stderr.seek(0)
            return self._stderr.read().decode(errors="replace")
        return ""

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 5.0) -> int:
        """Send `sig`, wait up to `timeout_s` (then SIGKILL), close the pipes; the exit code."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.close()
        return self.proc.returncode

    def close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout, self._stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def start(
    module: str,
    args: tuple[str, ...] | list[str] = (),
    *,
    stdin: int = subprocess.DEVNULL,
    die_signal: int = signal.SIGKILL,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
) -> Child:
    """Start `python -m module args…` (stdout piped, stderr to a temporary file) and return at once."""
    stderr = tempfile.TemporaryFile()  # noqa: SIM115 - the Child closes it
    proc = subprocess.Popen(
        command(module, args, die_signal=die_signal),
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=environment({**(env or {}), PARENT_ENV: str(os.getpid())}),
        cwd=cwd,
        close_fds=True,
        start_new_session=True,
    )
    return Child(proc, stderr)


async def start_async(
    module: str, args: tuple[str, ...] | list[str] = (), *, die_signal: int = signal.SIGKILL, **kwargs: Any
) -> asyncio.subprocess.Process:
    """The same child for an event loop (`asyncio.create_subprocess_exec`; stdio as given in `kwargs`)."""
    return await asyncio.create_subprocess_exec(
        *command(module, args, die_signal=die_signal),
        env=environment({PARENT_ENV: str(os.getpid())}),
        start_new_session=True,
        **kwargs,
    )


def _trampoline(argv: list[str]) -> None:
    """`python -m harness.procs SIGNAL MODULE ARGS…`: arm die-with-parent, then become MODULE."""
    sig, module, *rest = argv
    parent = os.environ.pop(PARENT_ENV, "")
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig))
    if parent.isdigit() and os.getppid() != int(parent):
        os._exit(3)  # the parent died before the signal was armed
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    _trampoline(sys.argv[1:])
