"""What a run's figures depend on besides the models, recorded in the manifest when the run starts.

`run_facts(cfg, cases)` is the manifest's `methodology` block: the load (mode, concurrency or
rate and arrival, repeats, limits), the client host (the CPUs this process may use, Python, the
SDK and harness versions, the event loop the run uses, operating system and architecture) and
the dataset's length distributions (characters of each case's prompt, its `max_tokens`). The
methodology card (`harness.report.methodology`) reads it back beside the manifest's other keys
(dataset, target, versions, prices, loop lag). It measures nothing while the run is going and
never reads a host name or a user name.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from harness import __version__, loops
from harness.quantiles import quantile
from harness.records import Case

__all__ = ["client_facts", "distribution", "load_facts", "prompt_chars", "run_facts"]


def distribution(values: Sequence[float]) -> dict[str, float | int] | None:
    """n, p50, p95 and max of `values` (the harness's one percentile rule), or None when empty."""
    if not values:
        return None
    p50, p95 = quantile(values, 0.5), quantile(values, 0.95)
    assert p50 is not None and p95 is not None
    return {"n": len(values), "p50": round(p50, 3), "p95": round(p95, 3), "max": max(values)}


def _text(value: Any) -> int:
    """Characters of text in a content value: a string, or the `text` of its blocks."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, Mapping):
        text = value.get("text")
        return len(text) if isinstance(text, str) else 0
    if isinstance(value, list | tuple):
        return sum(_text(v) for v in value)
    return 0


def prompt_chars(case: Case) -> int:
    """Characters of a case's prompt: its system prompt and the text of every message."""
    return _text(case.system) + sum(_text(m.get("content")) for m in case.messages)


def load_facts(cfg: Any) -> dict[str, Any]:
    """How the calls were released: closed loop at a concurrency, or open loop at a rate."""
    open_loop = cfg.rate is not None
    return {
        "mode": "open loop" if open_loop else "closed loop",
        "concurrency": None if open_loop else cfg.concurrency,
        "rate_per_s": cfg.rate,
        "arrival": cfg.arrival,
        "max_in_flight": cfg.max_in_flight,
        "repeats": cfg.repeats,
        "duration_limit_s": cfg.duration_s,
        "max_calls": cfg.max_calls,
        "stream": cfg.stream,
    }


def _package(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "missing"


def client_facts(event_loop: str = "auto") -> dict[str, Any]:
    """The machine and software that took the time marks."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        loop = loops.resolve(event_loop)
    except (ImportError, ValueError):
        loop = event_loop
    return {
        "cpus": usable,
        "cpus_machine": os.cpu_count(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "sdk": f"anthropic {_package('anthropic')}",
        "harness": __version__,
        "event_loop": loop,
        "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
    }


def run_facts(cfg: Any, cases: Iterable[Case]) -> dict[str, Any]:
    """The manifest's `methodology` block (see the module docstring)."""
    cases = list(cases)
    caps = [float(c.max_tokens) for c in cases if c.max_tokens is not None]
    return {
        "load": load_facts(cfg),
        "client": client_facts(cfg.event_loop),
        "dataset": {
            "cases": len(cases),
            "prompt_chars": distribution([float(prompt_chars(c)) for c in cases]),
            "max_tokens": distribution(caps),
        },
    }
