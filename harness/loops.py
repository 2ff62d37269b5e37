"""Which asyncio event loop a run uses: uvloop when installed (the default), else the standard one.

uvloop cuts the harness's CPU per streamed call by about a quarter on the same SDK
transport (`make perf`, section peers), which is headroom the time marks need. Its
`loop.time()` is cached per iteration and counted in whole milliseconds, so nothing
that measures uses it: time marks come from `time.perf_counter*` everywhere.
This module must not import the harness: the simulator and the benchmarks use it too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["EVENT_LOOPS", "loop_factory", "resolve", "run"]

EVENT_LOOPS = ("auto", "uvloop", "asyncio")
T = TypeVar("T")


def resolve(name: str = "auto") -> str:
    """`auto` becomes `uvloop` when it can be imported; `uvloop` without it is an ImportError."""
    if name not in EVENT_LOOPS:
        raise ValueError(f"event loop must be one of {', '.join(EVENT_LOOPS)}, got {name!r}")
    if name == "asyncio":
        return name
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if name == "uvloop":
            raise
        return "asyncio"
    return "uvloop"


def loop_factory(name: str = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    if resolve(name) == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


def run(coro: Coroutine[Any, Any, T], name: str = "auto") -> T:
    """`asyncio.run(coro)` on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory(name)) as runner:
        return runner.run(coro)
