"""The client's own SSE reader: any chunking, LF or CRLF framing, error events and truncated streams."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.client import Attempt, ClaudeClient

WIRE = (
    b"event: message_start\n"
    b'data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant",'
    b'"model":"claude-haiku-4-5","content":[],"stop_reason":null,"stop_sequence":null,'
    b'"usage":{"input_tokens":12,"output_tokens":1,"cache_creation_input_tokens":3,'
    b'"cache_read_input_tokens":5}}}\n\n'
    b"event: content_block_start\n"
    b'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
    b"event: ping\n"
    b'data: {"type": "ping"}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}\n\n'
    b"event: content_block_delta\n"
    b'data:{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" there."}}\n\n'
    b"event: content_block_stop\n"
    b'data: {"type":"content_block_stop","index":0}\n\n'
    b"event: message_delta\n"
    b'data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
    b'"usage":{"output_tokens":7}}\n\n'
    b"event: message_stop\n"
    b'data: {"type":"message_stop"}\n\n'
)


class FakeResponse:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def aiter_bytes(self):
        for chunk in self.chunks:
            yield chunk


def split(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(body) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(body[last:p])
        last = p
    pieces.append(body[last:])
    return [p for p in pieces if p]


async def read(chunks: list[bytes]) -> Attempt:
    a = Attempt(sent_ns=1)
    await ClaudeClient._read_stream(FakeResponse(chunks), a)  # type: ignore[arg-type]
    return a


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(0, 10_000), max_size=12), crlf=st.booleans())
async def test_any_chunking_and_framing_reads_the_same_message(cuts, crlf):
    body = WIRE.replace(b"\n", b"\r\n") if crlf else WIRE
    a = await read(split(body, cuts))
    assert a.ok, a.error_message
    assert a.text == "Hello there."
    assert a.stop_reason == "end_turn"
    assert (a.input_tokens, a.output_tokens) == (12, 7)
    assert (a.cache_creation_input_tokens, a.cache_read_input_tokens) == (3, 5)
    assert a.model_reported == "claude-haiku-4-5"
    assert a.first_token_ns is not None


@pytest.mark.parametrize(
    ("error_type", "kind", "retryable"),
    [
        ("overloaded_error", "overloaded", True),
        ("api_error", "server_error", True),
        ("rate_limit_error", "rate_limit", True),
        ("invalid_request_error", "stream_error", False),
    ],
)
async def test_an_error_event_fails_the_call_as_the_same_error_sent_as_a_status(error_type, kind, retryable):
    body = WIRE.split(b"event: content_block_stop")[0] + (
        b'event: error\ndata: {"type":"error","error":{"type":"'
        + error_type.encode()
        + b'","message":"Overloaded"}}\n\n'
    )
    a = await read([body])
    assert not a.ok and a.error_kind == kind and a.retryable is retryable
    assert error_type in (a.error_message or "")
    assert a.text == "Hello there."


@pytest.mark.parametrize("cut_before", [b"event: message_delta", b"event: message_stop"])
async def test_a_stream_that_ends_early_is_truncated_not_ok(cut_before):
    a = await read([WIRE.split(cut_before)[0]])
    assert not a.ok and a.error_kind == "stream_truncated"
