"""The simulator's quality model inside Message Batches: a request carrying the harness's headers in
the envelope's `x-harness-headers` gets the answer the same call gets live, and a bad one is the
create's 400 naming the request (the real API has no such key; the harness sends it to the
simulator only)."""

from __future__ import annotations

import base64
import time

import anthropic
import orjson
import pytest

from tests.simproc import start_simulator

KEY = "sk-test-not-a-real-key"


def _headers(expected: dict, tags: str = "") -> dict[str, str]:
    raw = orjson.dumps(expected, option=orjson.OPT_SORT_KEYS)
    out = {"x-harness-expected": base64.urlsafe_b64encode(raw).rstrip(b"=").decode()}
    if tags:
        out["x-harness-tags"] = tags
    return out


@pytest.fixture(scope="module")
def sim():
    proc = start_simulator("--time-scale", "0.001", "--seed", "5")
    yield proc
    proc.stop()


def test_batch_answers_equal_live_answers_with_the_same_expectation(sim) -> None:
    client = anthropic.Anthropic(api_key=KEY, base_url=sim.url, max_retries=0, timeout=30)
    expected = {"contains": ["Paris"]}
    hard = _headers(expected, "hard")
    params = [
        {
            "model": "claude-haiku-4-5",
            "max_tokens": 60,
            "messages": [{"role": "user", "content": f"What is the capital of France? ({i})"}],
        }
        for i in range(30)
    ]
    sim.reset()
    live = [
        client.messages.create(**p, extra_headers={**hard, "x-harness-call-id": f"c{i}"})
        for i, p in enumerate(params)
    ]
    sim.reset()  # a fresh memo: the batch's draws start where the live ones did
    items = [{"custom_id": f"c{i}", "params": p, "x-harness-headers": hard} for i, p in enumerate(params)]
    items.append({"custom_id": "plain", "params": params[0]})
    batch = client.messages.batches.create(requests=items)  # type: ignore[arg-type]
    deadline = time.monotonic() + 30
    while client.messages.batches.retrieve(batch.id).processing_status != "ended":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    texts = {cid: r.message.content[0].text for cid, r in results.items() if r.type == "succeeded"}  # type: ignore[union-attr]
    assert [texts[f"c{i}"] for i in range(30)] == [m.content[0].text for m in live]  # type: ignore[union-attr]
    passes = sum("Paris" in texts[f"c{i}"] for i in range(30))
    assert 0 < passes < 30, "hard cases fail sometimes, as live"
    again = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    assert again == results, "a second download repeats the answers"
    assert "Paris" not in texts["plain"], "without the headers: the filler answer"


def test_unreadable_batch_headers_are_the_creates_400(sim) -> None:
    client = anthropic.Anthropic(api_key=KEY, base_url=sim.url, max_retries=0, timeout=30)
    params = {"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(anthropic.BadRequestError, match=r"requests\.1\.x-harness-expected"):
        client.messages.batches.create(
            requests=[
                {"custom_id": "a", "params": params},
                {"custom_id": "b", "params": params, "x-harness-headers": {"x-harness-expected": "!!"}},  # type: ignore[typeddict-unknown-key]
            ]
        )
    with pytest.raises(anthropic.BadRequestError, match="dictionary of strings"):
        client.messages.batches.create(
            requests=[{"custom_id": "a", "params": params, "x-harness-headers": {"x-harness-tags": 3}}]  # type: ignore[typeddict-unknown-key]
        )
