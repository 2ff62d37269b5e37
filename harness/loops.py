"""Which asyncio event loop a run uses: uvloop when installed (the default), else the standard one.

uvloop cuts the harness's CPU per streamed call by about a quarter on the same SDK
transport (`make perf`, section peers), which is headroom the time marks need. Its
`loop.time()` is cached per iteration and counted in whole milliseconds, so nothing
that measures uses it: time marks come from `time.perf_counter*` everywhere.
This module must not import the harness: the simulator and the benchmarks use it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

__all__ = ["EVENT_LOOPS", "loop_factory", "measuring", "resolve", "run"]

# Threads (the PostHog client's, the store's writers) share the GIL with the event loop: a short
# switch interval bounds how long one can hold the loop back, and so distort a time mark, to ~0.5 ms.
MEASURING_SWITCH_INTERVAL_S = 0.0005

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


@contextlib.contextmanager
def measuring() -> Iterator[None]:
    """The interpreter set up for taking time marks, for the length of a run (single process or worker).

    Everything imported so far lives for the whole run: `gc.freeze` keeps the collector from
    re-scanning it on the loop.
    """
    previous = sys.getswitchinterval()
    sys.setswitchinterval(MEASURING_SWITCH_INTERVAL_S)
    gc.freeze()
    try:
        yield
    finally:
        sys.setswitchinterval(previous)
        gc.unfreeze()
