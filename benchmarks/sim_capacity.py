"""Capacity of one simulator process, measured with the load coming from a separate process.

`python -m benchmarks.sim_capacity` starts a simulator (`perfkit.SimServer`: the perf profile, no
delays except the pacing under test) and a load process (this module with `--load`, a bare
aiohttp client), then prints three figures next to their targets:

- concurrent open streams held at once (target >= 1,000),
- non-streamed requests/s (target >= 1,500),
- streamed deltas/s with 500 streams x 40 deltas/s (target 20,000).

`run(print_fn=print) -> dict` is what `make perf` calls. Bounded: about 30 s in total.
This module must not import the simulator: the point is two separate processes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from harness import loops

__all__ = ["TARGETS", "run"]

TARGETS = {"open_streams": 1000, "requests_per_s": 1500, "deltas_per_s": 20000}
_ROOT = Path(__file__).resolve().parent.parent


_HEADERS = {"x-api-key": "sk-bench", "anthropic-version": "2023-06-01", "content-type": "application/json"}
_MARKER = b"event: content_block_delta"


def _body(model: str, max_tokens: int, stream: bool, i: int) -> bytes:
    return json.dumps(
        {
            "model": model,
            "max_tokens": max_tokens,
            "stream": stream,
            "messages": [{"role": "user", "content": f"benchmark prompt {i}"}],
        }
    ).encode()


class _Counter:
    def __init__(self) -> None:
        self.deltas = 0
        self.open = 0
        self.peak_open = 0
        self.errors = 0


async def _one_stream(
    session: aiohttp.ClientSession, url: str, body: bytes, counter: _Counter, on_first: Callable[[], None]
) -> None:
    try:
        async with session.post(url + "/v1/messages", data=body, headers=_HEADERS) as resp:
            if resp.status != 200:
                counter.errors += 1
                return
            tail = b""
            opened = False
            async for chunk in resp.content.iter_any():
                if not opened and b"message_start" in chunk:
                    opened = True
                    counter.open += 1
                    counter.peak_open = max(counter.peak_open, counter.open)
                buf = tail + chunk
                found = buf.count(_MARKER)
                if found and counter.deltas >= 0:
                    if not opened:
                        opened = True
                    counter.deltas += found
                    on_first()
                tail = buf[-(len(_MARKER) - 1) :]
            if opened:
                counter.open -= 1
    except (aiohttp.ClientError, OSError):
        counter.errors += 1


async def _hold(url: str, streams: int) -> dict[str, Any]:
    """Open `streams` slow streams at once; report the most that were open together."""
    counter = _Counter()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        tasks = [
            _one_stream(session, url, _body("bench-hold", 6, True, i), counter, lambda: None)
            for i in range(streams)
        ]
        await asyncio.gather(*tasks)
    return {"open_streams": counter.peak_open, "errors": counter.errors}


async def _nonstream(url: str, concurrency: int, seconds: float) -> dict[str, Any]:
    """Closed loop of `concurrency` workers sending non-streamed requests for `seconds`."""
    done = 0
    errors = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        # Warm the connections first so the figure is steady-state throughput.
        end = 0.0

        async def worker(w: int) -> None:
            nonlocal done, errors
            i = 0
            while time.perf_counter() < end:
                body = _body("bench-fast", 16, False, w * 1_000_000 + i)
                async with session.post(url + "/v1/messages", data=body, headers=_HEADERS) as resp:
                    await resp.read()
                    if resp.status == 200:
                        done += 1
                    else:
                        errors += 1
                i += 1

        end = time.perf_counter() + 0.5
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        done = errors = 0
        start = time.perf_counter()
        end = start + seconds
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        elapsed = time.perf_counter() - start
    return {"requests_per_s": done / elapsed, "errors": errors}


async def _deltas(url: str, streams: int, tokens: int) -> dict[str, Any]:
    """`streams` streams at 40 deltas/s; the rate is taken while all of them are running."""
    counter = _Counter()
    first_seen: set[int] = set()
    marks: dict[str, float] = {}
    samples: list[tuple[float, int]] = []

    def mark_first(i: int) -> Callable[[], None]:
        def seen() -> None:
            if i not in first_seen:
                first_seen.add(i)
                if len(first_seen) == streams:
                    marks["all_started"] = time.perf_counter()

        return seen

    async def sampler() -> None:
        while True:
            samples.append((time.perf_counter(), counter.deltas))
            await asyncio.sleep(0.05)

    async def finish_first(task: Any) -> None:
        await task
        marks.setdefault("first_finished", time.perf_counter())

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        sampling = asyncio.create_task(sampler())
        tasks = [
            finish_first(
                _one_stream(session, url, _body("bench-40tps", tokens, True, i), counter, mark_first(i))
            )
            for i in range(streams)
        ]
        started = time.perf_counter()
        await asyncio.gather(*tasks)
        total_s = time.perf_counter() - started
        sampling.cancel()
    a, b = marks.get("all_started"), marks.get("first_finished")
    rate = 0.0
    if a is not None and b is not None and b - a > 0.5:
        inside = [(t, n) for t, n in samples if a <= t <= b]
        if len(inside) >= 2:
            (t1, n1), (t2, n2) = inside[0], inside[-1]
            rate = (n2 - n1) / (t2 - t1)
    return {
        "deltas_per_s": rate,
        "deltas_total": counter.deltas,
        "expected_total": streams * tokens,
        "wall_s": total_s,
        "ideal_wall_s": 0.05 + (tokens - 1) / 40.0,
        "errors": counter.errors,
    }


def _load(url: str) -> dict[str, Any]:
    """Each phase in a fresh event loop, so one phase's leftovers never slow the next."""
    return {
        "hold": loops.run(_hold(url, 1200)),
        "nonstream": loops.run(_nonstream(url, 64, 4.0)),
        "deltas": loops.run(_deltas(url, 500, 240)),
    }


def run(print_fn: Callable[[str], Any] = print) -> dict[str, Any]:
    """Start a simulator and a load process; print and return the three figures."""
    from benchmarks.perfkit import SimServer  # the perf profile holds this section's models too

    with SimServer() as sim:
        load = subprocess.run(
            [sys.executable, "-m", "benchmarks.sim_capacity", "--load", sim.url],
            capture_output=True,
            cwd=_ROOT,
            timeout=120,
            check=False,
        )
        if load.returncode != 0:
            raise RuntimeError(f"load process failed:\n{load.stderr.decode(errors='replace')}")
        raw = json.loads(load.stdout.decode().strip().splitlines()[-1])
    figures = {
        "open_streams": raw["hold"]["open_streams"],
        "requests_per_s": round(raw["nonstream"]["requests_per_s"], 1),
        "deltas_per_s": round(raw["deltas"]["deltas_per_s"], 1),
        "detail": raw,
    }
    print_fn(f"simulator capacity (one process, load from a separate process, {os.cpu_count()} cores)")
    for name, label in (
        ("open_streams", "concurrent open streams held"),
        ("requests_per_s", "non-streamed requests/s"),
        ("deltas_per_s", "streamed deltas/s (500 streams x 40/s)"),
    ):
        value, target = figures[name], TARGETS[name]
        verdict = "ok" if value >= target * (0.95 if name == "deltas_per_s" else 1.0) else "BELOW TARGET"
        print_fn(f"  {label:<42} {value:>10,.0f}   target {target:>6,}   {verdict}")
    d = raw["deltas"]
    print_fn(
        f"  (delta stream: {d['deltas_total']:,}/{d['expected_total']:,} deltas, wall {d['wall_s']:.2f} s"
        f" vs ideal {d['ideal_wall_s']:.2f} s; errors: hold {raw['hold']['errors']},"
        f" non-stream {raw['nonstream']['errors']}, stream {d['errors']})"
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sim_capacity")
    parser.add_argument("--load", metavar="URL", help="internal: run the load side against URL")
    args = parser.parse_args(argv)
    if args.load:
        print(json.dumps(_load(args.load)), flush=True)
        return 0
    run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
