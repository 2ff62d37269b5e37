"""Run the `harness` command in this process and SIGKILL it at a named step of batch mode.

    python -m tests.batchkill POINT N -- run --batch ...

The process kills itself (`kill -9`: no cleanup, no flush) the N-th time it reaches POINT:

- `start`: the batch engine begins (the run directory is open, crashed journals recovered);
- `intent`: a batch's intent line is journaled, its create not yet sent;
- `answered`: the API answered a create (the batch exists), its `created` line not yet written;
- `created`: a batch's `created` line is journaled;
- `poll`: a retrieve of an open batch returned;
- `result`: a result's row was stored (the download of a batch is under way);
- `collected`: a batch's `collected` line is journaled.

A test-only wrapper (it patches the harness from outside; the harness has no kill hook of its
own), so `tests/test_reliability_batch.py` can stop a real run between any two of its durable steps.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections import Counter
from typing import Any

POINTS = ("start", "intent", "answered", "created", "poll", "result", "collected")
_seen: Counter[str] = Counter()


def _reached(point: str, target: str, n: int) -> None:
    _seen[point] += 1
    if point == target and _seen[point] == n:
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def install(target: str, n: int) -> None:
    from harness.batch import BatchEngine
    from harness.client import ClaudeClient
    from harness.rundir import RunDir
    from harness.store import RunStore

    run = BatchEngine.run

    @functools.wraps(run)
    async def patched_run(self: Any, plan: Any) -> Any:
        _reached("start", target, n)
        return await run(self, plan)

    append = RunDir.append_batch_entry

    @functools.wraps(append)
    def patched_append(self: Any, entry: Any) -> None:
        append(self, entry)
        if entry.get("op") in ("intent", "created", "collected"):
            _reached(entry["op"], target, n)

    create = ClaudeClient.create_batch

    @functools.wraps(create)
    async def patched_create(self: Any, *args: Any, **kwargs: Any) -> Any:
        answer = await create(self, *args, **kwargs)
        if answer.ok:
            _reached("answered", target, n)
        return answer

    get = ClaudeClient.get_batch

    @functools.wraps(get)
    async def patched_get(self: Any, batch_id: str) -> Any:
        answer = await get(self, batch_id)
        _reached("poll", target, n)
        return answer

    write = RunStore.write

    @functools.wraps(write)
    def patched_write(self: Any, record: Any) -> None:
        write(self, record)
        if record.batch_id is not None:
            _reached("result", target, n)

    BatchEngine.run = patched_run  # type: ignore[method-assign]
    RunDir.append_batch_entry = patched_append  # type: ignore[method-assign]
    ClaudeClient.create_batch = patched_create  # type: ignore[method-assign]
    ClaudeClient.get_batch = patched_get  # type: ignore[method-assign]
    RunStore.write = patched_write  # type: ignore[method-assign]


def main(argv: list[str]) -> None:
    point, n, sep, *args = argv
    assert point in POINTS and sep == "--", argv
    install(point, int(n))
    sys.argv = ["harness", *args]
    from harness.cli import main as harness_main

    harness_main()


if __name__ == "__main__":
    main(sys.argv[1:])
