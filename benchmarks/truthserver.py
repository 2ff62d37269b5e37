"""A loopback Messages server with exactly known timing, independent of the simulator: `make perf`'s health figures.

`python -m benchmarks.truthserver [--ttft-ms 60] [--gap-ms 20] [--deltas 7] [--tokens 20]`
prints `listening PORT`, then answers until killed:

- `POST /v1/messages` (streamed): the response head, `message_start` and
  `content_block_start` at once; `--deltas` text deltas carrying `--tokens` tokens in all,
  the first `--ttft-ms` after the request was read, the next ones `--gap-ms` apart; the
  last one with `message_delta` (usage, `max_tokens`) and `message_stop`. Not streamed: the
  same message as one JSON body after the same total time.
- `GET /v1/models/{id}`: the model (the harness's preflight).
- anything else posted (PostHog's `/batch/`): `{"status": 1}`, so event delivery costs what it costs.
- `GET /_truth`: one JSON line per Messages request: `call_id` (`x-harness-call-id`),
  `received_ns` (the request fully read), `first_ns` and `last_ns` (the first delta, and
  the last byte, handed to the socket): `time.perf_counter_ns`, the system's monotonic
  clock, which every process on the machine shares. `POST /_reset` forgets them.

A raw asyncio protocol on uvloop (no HTTP framework): per request it parses a head and a
body and writes a few pre-built chunks, so the server spends little of the machine's CPU
and its own lateness is recorded, never assumed. This module is the benchmarks' own: the
harness does not import it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import orjson

from harness import loops

__all__ = ["TruthServer", "main"]


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class TruthServer:
    """The shared state: the stream's pre-built pieces and the ground truth of every request."""

    def __init__(self, ttft_ms: float, gap_ms: float, deltas: int, tokens: int) -> None:
        self.ttft_s = ttft_ms / 1000
        self.gap_s = gap_ms / 1000
        self.tokens = tokens
        per = [tokens // deltas + (1 if k < tokens % deltas else 0) for k in range(deltas)]
        self.pieces = [
            _chunk(
                _event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": "tok " * n},
                    },
                )
            )
            for n in per
        ]
        self.tail = (
            _chunk(
                _event("content_block_stop", {"type": "content_block_stop", "index": 0})
                + _event(
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
                        "usage": {"output_tokens": tokens},
                    },
                )
                + _event("message_stop", {"type": "message_stop"})
            )
            + b"0\r\n\r\n"
        )
        self.truth: list[bytes] = []
        self.counter = 0

    def head(self, model: str) -> bytes:
        self.counter += 1
        rid = f"req_{self.counter:012d}"
        start = _event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": f"msg_{self.counter:012d}",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 16, "output_tokens": 1},
                },
            },
        ) + _event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        )
        return (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
            b"request-id: " + rid.encode() + b"\r\n\r\n" + _chunk(start)
        )

    def message(self, model: str) -> bytes:
        self.counter += 1
        body = orjson.dumps(
            {
                "id": f"msg_{self.counter:012d}",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": "tok " * self.tokens}],
                "stop_reason": "max_tokens",
                "stop_sequence": None,
                "usage": {"input_tokens": 16, "output_tokens": self.tokens},
            }
        )
        return _response(200, body)


def _response(status: int, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return b"HTTP/1.1 %d OK\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n%s" % (
        status,
        content_type,
        len(body),
        body,
    )


class _Connection(asyncio.Protocol):
    def __init__(self, server: TruthServer) -> None:
        self.server = server
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.handles: list[asyncio.TimerHandle] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        for handle in self.handles:
            handle.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1").split("\r\n")
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            size = int(headers.get("content-length") or 0)
            if len(self.buffer) < end + 4 + size:
                return
            body = self.buffer[end + 4 : end + 4 + size]
            self.buffer = self.buffer[end + 4 + size :]
            method, path, _ = head[0].split(" ", 2)
            self.handle(method, path, headers, body)

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        server, transport = self.server, self.transport
        assert transport is not None
        if method == "POST" and path.startswith("/v1/messages"):
            received = time.perf_counter_ns()
            request = orjson.loads(body)
            model = str(request.get("model"))
            record = {"call_id": headers.get("x-harness-call-id"), "received_ns": received, "first_ns": None}
            loop = asyncio.get_running_loop()
            if not request.get("stream"):
                self.handles.append(
                    loop.call_later(
                        server.ttft_s + server.gap_s * (len(server.pieces) - 1), self._whole, model, record
                    )
                )
                return
            transport.write(server.head(model))
            for k in range(len(server.pieces)):
                delay = server.ttft_s + k * server.gap_s
                self.handles.append(loop.call_later(delay, self._delta, k, record))
        elif method == "GET" and path.startswith("/v1/models/"):
            model = path.rsplit("/", 1)[1]
            transport.write(
                _response(
                    200,
                    orjson.dumps(
                        {
                            "type": "model",
                            "id": model,
                            "display_name": model,
                            "created_at": "2025-01-01T00:00:00Z",
                        }
                    ),
                )
            )
        elif method == "GET" and path.startswith("/_truth"):
            transport.write(_response(200, b"".join(server.truth), b"application/x-ndjson"))
        elif method == "POST" and path.startswith("/_reset"):
            server.truth.clear()
            transport.write(_response(200, b"{}"))
        else:
            transport.write(_response(200, b'{"status": 1}'))

    def _delta(self, k: int, record: dict[str, Any]) -> None:
        transport, server = self.transport, self.server
        if transport is None:
            return
        last = k == len(server.pieces) - 1
        transport.write(server.pieces[k] + server.tail if last else server.pieces[k])
        now = time.perf_counter_ns()
        if k == 0:
            record["first_ns"] = now
        if last:
            record["last_ns"] = now
            server.truth.append(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
            self.handles.clear()

    def _whole(self, model: str, record: dict[str, Any]) -> None:
        if self.transport is None:
            return
        self.transport.write(self.server.message(model))
        record["first_ns"] = record["last_ns"] = time.perf_counter_ns()
        self.server.truth.append(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        self.handles.clear()


async def _serve(args: argparse.Namespace) -> None:
    server = TruthServer(args.ttft_ms, args.gap_ms, args.deltas, args.tokens)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(lambda: _Connection(server), "127.0.0.1", args.port, backlog=4096)
    port = listener.sockets[0].getsockname()[1]
    print(f"listening {port}", flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.truthserver")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ttft-ms", type=float, default=60.0)
    parser.add_argument("--gap-ms", type=float, default=20.0)
    parser.add_argument("--deltas", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=20)
    args = parser.parse_args(argv)
    try:
        loops.run(_serve(args))
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
