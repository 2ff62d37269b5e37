"""Property tests: any valid Messages body gets a well-formed reply; any malformed one a 400 envelope."""

from __future__ import annotations

import http.client
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.simproc import SimProc

HEADERS = {"x-api-key": "sk-test", "anthropic-version": "2023-06-01", "content-type": "application/json"}
MODELS = [
    "claude-haiku-4-5",
    "claude-sonnet-4-6",
    "claude-opus-4-8",
    "claude-haiku-5-5",
    "claude-opus-4-5-20251101",
]
SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

text = st.text(min_size=0, max_size=40)
content = st.one_of(
    text, st.lists(st.builds(lambda t: {"type": "text", "text": t}, text), min_size=1, max_size=3)
)


@st.composite
def valid_bodies(draw: st.DrawFn) -> dict[str, Any]:
    turns = draw(st.integers(1, 4))
    messages = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": draw(content)} for i in range(turns)
    ]
    body: dict[str, Any] = {
        "model": draw(st.sampled_from(MODELS)),
        "max_tokens": draw(st.integers(0, 48)),
        "messages": messages,
    }
    optional = {
        "system": st.one_of(
            text, st.lists(st.builds(lambda t: {"type": "text", "text": t}, text), max_size=2)
        ),
        "stop_sequences": st.lists(st.text(min_size=1, max_size=6), max_size=3),
        "stream": st.booleans(),
        "metadata": st.builds(lambda u: {"user_id": u}, st.one_of(st.none(), text)),
        "temperature": st.floats(0, 1),
        "top_k": st.integers(0, 500),
        "service_tier": st.sampled_from(["auto", "standard_only"]),
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            body[name] = draw(strategy)
    return body


def _send(sim: SimProc, raw: bytes) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=20)
    try:
        conn.request("POST", "/v1/messages", body=raw, headers=HEADERS)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        name_line, data_line = block.split("\n")
        name, data = name_line.removeprefix("event: "), json.loads(data_line.removeprefix("data: "))
        assert data["type"] == name
        out.append((name, data))
    return out


@SETTINGS
@given(body=valid_bodies())
def test_any_valid_request_gets_a_well_formed_reply(simulator_session: SimProc, body: dict[str, Any]) -> None:
    status, raw = _send(simulator_session, json.dumps(body).encode())
    assert status == 200, raw
    if body.get("stream"):
        events = _events(raw)
        names = [n for n, _ in events]
        assert names[:3] == ["message_start", "content_block_start", "ping"]
        assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
        deltas = [d["delta"]["text"] for n, d in events if n == "content_block_delta"]
        final = events[-2][1]
        assert final["usage"]["output_tokens"] == len(deltas) <= body["max_tokens"]
        stop_reason, text = final["delta"]["stop_reason"], "".join(deltas)
    else:
        message = json.loads(raw)
        assert message["type"] == "message" and message["role"] == "assistant"
        assert message["usage"]["output_tokens"] <= body["max_tokens"]
        stop_reason, text = message["stop_reason"], message["content"][0]["text"]
    assert stop_reason in ("end_turn", "max_tokens", "stop_sequence")
    if stop_reason != "stop_sequence":
        assert not any(s in text for s in body.get("stop_sequences", []))


def _mutations() -> st.SearchStrategy[dict[str, Any]]:
    base = {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    wrong = st.one_of(
        st.none(),
        st.booleans(),
        st.floats(allow_nan=False),
        st.lists(st.integers(), max_size=2),
        st.dictionaries(text, st.integers(), max_size=2),
    )
    replace = st.tuples(
        st.sampled_from(
            ["model", "max_tokens", "messages", "stream", "stop_sequences", "metadata", "system"]
        ),
        wrong,
    )
    return st.one_of(
        st.sampled_from(["model", "max_tokens", "messages"]).map(
            lambda k: {n: v for n, v in base.items() if n != k}
        ),
        replace.filter(
            lambda kv: (
                not (kv[0] == "system" and kv[1] in ([], ""))
                and not (kv[0] == "stream" and isinstance(kv[1], bool))
                # valid values the generator can draw: no stop sequences, empty metadata
                and not (kv[0] == "stop_sequences" and kv[1] == [])
                and not (kv[0] == "metadata" and kv[1] == {})
            )
        ).map(lambda kv: {**base, kv[0]: kv[1]}),
        st.text(min_size=1, max_size=10).filter(lambda k: k not in base).map(lambda k: {**base, k: 1}),
        st.integers(-1000, -1).map(lambda n: {**base, "max_tokens": n}),
        st.lists(st.integers(), max_size=3).map(lambda m: {**base, "messages": m}),
    )


@SETTINGS
@given(body=_mutations())
def test_any_malformed_body_gets_a_400_envelope(simulator_session: SimProc, body: dict[str, Any]) -> None:
    status, raw = _send(simulator_session, json.dumps(body).encode())
    payload = json.loads(raw)
    assert status == 400, (body, payload)
    assert payload["type"] == "error" and payload["error"]["type"] == "invalid_request_error"
    assert payload["request_id"].startswith("req_") and ": " in payload["error"]["message"]


@SETTINGS
@given(raw=st.one_of(st.binary(max_size=64), st.text(max_size=40).map(str.encode)))
def test_garbage_bytes_get_a_400_never_a_500(simulator_session: SimProc, raw: bytes) -> None:
    status, reply = _send(simulator_session, raw)
    assert status == 400
    assert json.loads(reply)["error"]["type"] == "invalid_request_error"
