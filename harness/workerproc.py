"""`python -m harness.workerproc`: one worker process of a run (see `harness.workers` for the why and the wire).

It runs its share of the plan on its own event loop with the same client, limiter and
runner as a single-process run, and sends each finished record to the parent instead of
writing it: the parent owns the store and the PostHog events. It stops when told, when
its stdin closes (the parent is gone), and dies with the parent on Linux.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import replace

from harness import loops
from harness.client import ClaudeClient
from harness.limiter import Limiter
from harness.records import CallRecord
from harness.runner import Runner, RunOutcome
from harness.target import preflight
from harness.workers import WorkerJob, read_frame, write_frame

_OUT = sys.stdout.fileno()


class _PipeSink:
    """Sends each record to the parent: one pickle frame, a blocking write (the parent always reads)."""

    def write(self, record: CallRecord) -> None:
        write_frame(_OUT, ("record", record))

    def close(self) -> None:
        pass


async def _stdin_reader() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**26)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(0, "rb", buffering=0)
    )
    return reader


async def _listen(reader: asyncio.StreamReader, runner: Runner) -> None:
    """Stop requests from the parent; end of stdin means the parent is gone: stop without grace."""
    while True:
        message = await read_frame(reader)
        if message is None or message[0] == "stop":
            runner.request_stop("signal", now=message is None or bool(message[1]))
            if message is None:
                return


async def _run(job: WorkerJob, reader: asyncio.StreamReader) -> RunOutcome:
    client = ClaudeClient(**job.client)
    limiter = Limiter(job.pools, job.model_pool)
    try:
        # Open this worker's keep-alive connections before the clock starts (as a single process does).
        models = tuple(sorted({c.model for c in job.plan}))
        if models:
            await preflight(client, models, warm=job.warm)
        write_frame(_OUT, ("ready",))
        go = await read_frame(reader)
        if go is None or go[0] != "go":
            return RunOutcome(planned=len(job.plan), stopped_by="signal")
        # Every worker's open loop counts from the parent's one time zero.
        settings = replace(job.settings, start_ns=go[1])
        runner = Runner(settings, client, limiter, job.prices, [_PipeSink()])
        runner.on_stop = lambda reason: write_frame(_OUT, ("stop", reason))
        listener = asyncio.ensure_future(_listen(reader, runner))
        try:
            with loops.measuring():
                outcome = await runner.run(job.plan)  # its cpu_s: this process's CPU while it ran
        finally:
            listener.cancel()
        return outcome
    finally:
        await limiter.aclose()
        await client.aclose()


async def _main() -> int:
    reader = await _stdin_reader()
    job = await read_frame(reader)
    if not isinstance(job, WorkerJob):
        return 2
    outcome = await _run(job, reader)
    write_frame(_OUT, ("outcome", outcome))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m harness.workerproc [EVENT_LOOP]`: the loop is chosen before the job is read."""
    args = sys.argv[1:] if argv is None else argv
    try:
        return loops.run(_main(), args[0] if args else "auto")
    except (BrokenPipeError, KeyboardInterrupt):
        return 1


if __name__ == "__main__":
    sys.exit(main())
