"""The comparison loads of `make perf`: a bare SDK loop, and three readers of the same SSE stream.

Each mode runs in its own process (`python -m benchmarks.baselines MODE URL ...`) and
prints one JSON line: calls, wall seconds, CPU seconds of the process, deltas read.

- `sdk-loop`: `AsyncAnthropic` on the aiohttp transport, `max_retries=0`, `messages.create`
  (not streamed) from `concurrency` workers: the floor the harness's plain calls are held to.
- `aiohttp-lines`: a bare aiohttp client reading the SSE body line by line, decoding each
  `data:` line with orjson and keeping the text: the cheapest honest reader.
- `harness-client`: `harness.client.ClaudeClient.call(stream=True)`: the harness's read path.
- `sdk-stream`: the SDK's `messages.stream()` helper, iterating `text_stream`.
- `aiohttp-timed`: the `aiohttp-lines` reader with time marks as the harness takes them
  (request sent → first `content_block_delta` line, → last byte), each request tagged
  `x-harness-call-id: bare-N`, closed loop or open loop (`--rate`): the reference that
  the harness's TTFT error is held to against `benchmarks.truthserver` (its `per_call`).

`--shape` picks the stream read by `aiohttp-lines` and `harness-client`: `text` (plain
answers), `thinking` (a thinking block of 35-85 % of the deltas, then text) or `tools` (a
forced tool call whose input streams as ~900 `input_json_delta`s; with `thinking`,
`--max-tokens` is the thinking budget and the reply may be 100 tokens longer). Deltas are counted as
output tokens by both (each token-carrying delta is one), and the line reader does what
the harness does with them: keeps the text, joins a tool's JSON and decodes it once.

This module must not judge figures; `perf.py` does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from harness import loops

__all__ = ["MODES"]

MODES = ("sdk-loop", "aiohttp-lines", "harness-client", "sdk-stream", "aiohttp-timed")
SHAPES = ("text", "thinking", "tools")
MODEL = "claude-haiku-4-5"  # replaced by --model
_KEY = "sk-ant-bench-key"
# 16 objects of 16 strings: the simulator fills every property, ~4,500 characters of JSON.
_WIDE_TOOL = {
    "name": "record",
    "description": "Record the answer.",
    "input_schema": {
        "type": "object",
        "properties": {
            f"group{g}": {
                "type": "object",
                "properties": {f"field{f}": {"type": "string"} for f in range(16)},
            }
            for g in range(16)
        },
    },
}


def _prompt(i: int) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"Question {i}: word word word word word word word word?"}]


def _features(shape: str, max_tokens: int) -> tuple[int, dict[str, Any]]:
    """max_tokens and the request features of a stream shape."""
    if shape == "thinking":
        budget = max(1024, max_tokens)
        return budget + 100, {"thinking": {"type": "enabled", "budget_tokens": budget}}
    if shape == "tools":
        return max(max_tokens, 2000), {
            "tools": [_WIDE_TOOL],
            "tool_choice": {"type": "tool", "name": "record"},
        }
    return max_tokens, {}


async def _sdk_loop(url: str, calls: int, concurrency: int, max_tokens: int) -> dict[str, Any]:
    import anthropic

    client = anthropic.AsyncAnthropic(
        api_key=_KEY, base_url=url, max_retries=0, http_client=anthropic.DefaultAioHttpClient()
    )
    counter = iter(range(calls))
    errors = 0

    async def worker() -> None:
        nonlocal errors
        for i in counter:
            try:
                await client.messages.create(model=MODEL, max_tokens=max_tokens, messages=_prompt(i))  # type: ignore[arg-type]
            except anthropic.AnthropicError:
                errors += 1

    # warm the connections as the harness's preflight does
    await asyncio.gather(*(client.models.retrieve(MODEL) for _ in range(concurrency)))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    await client.close()
    return {"calls": calls, "errors": errors, "wall_s": wall, "cpu_s": cpu, "calls_per_s": calls / wall}


async def _aiohttp_lines(
    url: str, calls: int, concurrency: int, max_tokens: int, shape: str = "text"
) -> dict[str, Any]:
    import aiohttp

    headers = {"x-api-key": _KEY, "anthropic-version": "2023-06-01", "content-type": "application/json"}
    deltas = 0
    counter = iter(range(calls))
    max_tokens, features = _features(shape, max_tokens)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker() -> None:
            nonlocal deltas
            for i in counter:
                body = orjson.dumps(
                    {
                        "model": MODEL,
                        "max_tokens": max_tokens,
                        "stream": True,
                        "messages": _prompt(i),
                        **features,
                    }
                )
                parts: list[str] = []
                pieces: list[str] = []
                async with session.post(url + "/v1/messages", data=body, headers=headers) as resp:
                    async for line in resp.content:
                        if line.startswith(b"data: "):
                            event = orjson.loads(line[6:])
                            if event.get("type") == "content_block_delta":
                                delta = event["delta"]
                                if "text" in delta:
                                    parts.append(delta["text"])
                                elif "partial_json" in delta:
                                    if not delta["partial_json"]:
                                        continue
                                    pieces.append(delta["partial_json"])
                                elif "thinking" not in delta:
                                    continue  # a signature: no token
                                deltas += 1
                "".join(parts)
                if pieces:
                    orjson.loads("".join(pieces))

        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"calls": calls, "deltas": deltas, "wall_s": wall, "cpu_s": cpu}


async def _aiohttp_timed(
    url: str, calls: int, concurrency: int, max_tokens: int, rate: float | None = None
) -> dict[str, Any]:
    """Closed loop of `concurrency` workers, or `calls` released at `rate`/s; per-call marks."""
    import aiohttp

    headers = {"x-api-key": _KEY, "anthropic-version": "2023-06-01", "content-type": "application/json"}
    marks: list[tuple[str, float, float]] = []
    lateness: list[float] = []
    counter = iter(range(calls))
    limit = concurrency if rate is None else 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit)) as session:

        async def ping() -> None:
            async with session.get(f"{url}/v1/models/{MODEL}") as resp:
                await resp.read()

        await asyncio.gather(*(ping() for _ in range(concurrency if rate is None else min(256, calls))))

        async def one(i: int) -> None:
            body = orjson.dumps(
                {"model": MODEL, "max_tokens": max_tokens, "stream": True, "messages": _prompt(i)}
            )
            tagged = {**headers, "x-harness-call-id": f"bare-{i}"}
            parts: list[str] = []
            sent = time.perf_counter_ns()
            first = 0
            async with session.post(url + "/v1/messages", data=body, headers=tagged) as resp:
                async for line in resp.content:
                    if line.startswith(b"data: "):
                        event = orjson.loads(line[6:])
                        if event.get("type") == "content_block_delta":
                            if not first:
                                first = time.perf_counter_ns()
                            parts.append(event["delta"].get("text", ""))
            last = time.perf_counter_ns()
            "".join(parts)
            marks.append((f"bare-{i}", (first - sent) * 1e-9, (last - sent) * 1e-9))

        async def worker() -> None:
            for i in counter:
                await one(i)

        cpu0, wall0 = time.process_time(), time.perf_counter()
        if rate is None:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        else:
            tasks = set()
            start = time.perf_counter()
            for i in range(calls):
                due = start + i / rate
                if (delay := due - time.perf_counter()) > 0:
                    await asyncio.sleep(delay)
                lateness.append(max(0.0, time.perf_counter() - due))
                task = asyncio.ensure_future(one(i))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            while tasks:
                await asyncio.gather(*list(tasks))
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {
        "calls": calls,
        "wall_s": wall,
        "cpu_s": cpu,
        "per_call": {
            "call_id": [m[0] for m in marks],
            "ttft_s": [m[1] for m in marks],
            "latency_s": [m[2] for m in marks],
        },
        "release_lateness_s": lateness,
    }


async def _harness_client(
    url: str, calls: int, concurrency: int, max_tokens: int, shape: str = "text"
) -> dict[str, Any]:
    from harness.client import ClaudeClient
    from harness.records import Case, PlannedCall

    client = ClaudeClient(api_key=_KEY, base_url=url, timeout_s=60.0)
    deltas = 0
    errors = 0
    counter = iter(range(calls))
    max_tokens, features = _features(shape, max_tokens)

    async def worker() -> None:
        nonlocal deltas, errors
        for i in counter:
            case = Case(
                id=f"c{i}", messages=tuple(_prompt(i)), max_tokens=max_tokens, params=features or None
            )  # type: ignore[call-arg, arg-type]
            call = PlannedCall(call_id=f"k{i}", case=case, model=MODEL, repeat=0, index=i)  # type: ignore[call-arg]
            attempt = await client.call(call, stream=True, attempt=0)
            errors += not attempt.ok
            deltas += attempt.output_tokens

    await asyncio.gather(*(client.get_model(MODEL) for _ in range(concurrency)))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    await client.aclose()
    return {"calls": calls, "deltas": deltas, "errors": errors, "wall_s": wall, "cpu_s": cpu}


async def _sdk_stream(url: str, calls: int, concurrency: int, max_tokens: int) -> dict[str, Any]:
    import anthropic

    client = anthropic.AsyncAnthropic(
        api_key=_KEY, base_url=url, max_retries=0, http_client=anthropic.DefaultAioHttpClient()
    )
    deltas = 0
    counter = iter(range(calls))

    async def worker() -> None:
        nonlocal deltas
        for i in counter:
            async with client.messages.stream(model=MODEL, max_tokens=max_tokens, messages=_prompt(i)) as s:  # type: ignore[arg-type]
                async for _ in s.text_stream:
                    deltas += 1
                await s.get_final_message()

    await asyncio.gather(*(client.models.retrieve(MODEL) for _ in range(concurrency)))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    await client.close()
    return {"calls": calls, "deltas": deltas, "wall_s": wall, "cpu_s": cpu}


def _set_model(model: str) -> None:
    global MODEL
    MODEL = model


_RUNNERS = {
    "sdk-loop": _sdk_loop,
    "aiohttp-lines": _aiohttp_lines,
    "harness-client": _harness_client,
    "sdk-stream": _sdk_stream,
    "aiohttp-timed": _aiohttp_timed,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baselines")
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("url")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--event-loop", default="auto", choices=loops.EVENT_LOOPS)
    parser.add_argument(
        "--shape", default="text", choices=SHAPES, help="aiohttp-lines and harness-client only"
    )
    parser.add_argument(
        "--rate", type=float, default=None, help="aiohttp-timed: open loop at this many calls/s"
    )
    parser.add_argument("--out", default=None, help="write the JSON result to this file instead of stdout")
    args = parser.parse_args(argv)
    _set_model(args.model)
    extra: dict[str, Any] = {"shape": args.shape} if args.mode in ("aiohttp-lines", "harness-client") else {}
    if args.mode == "aiohttp-timed":
        extra = {"rate": args.rate}
    coro = _RUNNERS[args.mode](args.url, args.calls, args.concurrency, args.max_tokens, **extra)
    result = loops.run(coro, args.event_loop)  # the same loop as the harness, for a fair ratio
    result["mode"] = args.mode
    result["shape"] = args.shape
    if args.out:  # a file: a long result (per-call marks) never meets a pipe's limits
        Path(args.out).write_text(json.dumps(result))
    else:
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
