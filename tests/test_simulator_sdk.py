"""The unchanged anthropic SDK against the simulator: sync and async, streamed or not, both transports."""

from __future__ import annotations

import anthropic
import pytest

from tests.simproc import SimProc

KEY = "sk-test-not-a-real-key"
PROMPT = [{"role": "user", "content": "Tell me about token buckets."}]


def _sync(sim: SimProc) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=KEY, base_url=sim.url, max_retries=0)


def test_sync_create_usage_matches_ground_truth(simulator: SimProc) -> None:
    with _sync(simulator) as client:
        message = client.messages.create(
            model="claude-haiku-4-5",
            max_tokens=200,
            messages=PROMPT,
            extra_headers={"x-harness-call-id": "call-1", "x-harness-attempt": "2"},
        )
    [truth] = simulator.requests()
    assert message.type == "message" and message.role == "assistant"
    assert message.model == "claude-haiku-4-5-20251001"
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message._request_id == truth["request_id"]
    assert message.usage.output_tokens == truth["output_tokens"] > 0
    assert message.usage.input_tokens == truth["input_tokens"] > 0
    assert (truth["call_id"], truth["attempt"], truth["stream"], truth["status"]) == ("call-1", 2, False, 200)
    assert message.content[0].type == "text" and message.content[0].text


def test_sync_stream_one_token_per_delta_and_same_text_as_unstreamed(simulator: SimProc) -> None:
    with _sync(simulator) as client:
        whole = client.messages.create(model="claude-sonnet-4-6", max_tokens=120, messages=PROMPT)
        deltas: list[str] = []
        with client.messages.stream(model="claude-sonnet-4-6", max_tokens=120, messages=PROMPT) as stream:
            for event in stream:
                if event.type == "content_block_delta":
                    deltas.append(event.delta.text)  # type: ignore[union-attr]
            final = stream.get_final_message()
    truth = simulator.requests()
    assert [t["stream"] for t in truth] == [False, True]
    assert final.usage.output_tokens == len(deltas) == truth[1]["output_tokens"]
    assert "".join(deltas) == final.content[0].text == whole.content[0].text  # type: ignore[union-attr]
    assert final.usage.output_tokens == whole.usage.output_tokens
    assert final.stop_reason == whole.stop_reason == truth[1]["stop_reason"]
    assert len(truth[1]["intended_gaps_s"]) == len(deltas) - 1


@pytest.mark.parametrize("transport", ["default", "aiohttp"])
async def test_async_streamed_and_not(simulator: SimProc, transport: str) -> None:
    http_client = anthropic.DefaultAioHttpClient() if transport == "aiohttp" else None
    kwargs = {"http_client": http_client} if http_client else {}
    async with anthropic.AsyncAnthropic(
        api_key=KEY, base_url=simulator.url, max_retries=0, **kwargs
    ) as client:
        whole = await client.messages.create(model="claude-opus-4-8", max_tokens=80, messages=PROMPT)
        stream = await client.messages.create(
            model="claude-opus-4-8", max_tokens=80, messages=PROMPT, stream=True
        )
        kinds: list[str] = []
        text = ""
        output_tokens = None
        async for event in stream:
            kinds.append(event.type)
            if event.type == "content_block_delta":
                text += event.delta.text  # type: ignore[union-attr]
            if event.type == "message_delta":
                output_tokens = event.usage.output_tokens
    truth = simulator.requests()
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert text == whole.content[0].text  # type: ignore[union-attr]
    assert output_tokens == kinds.count("content_block_delta") == truth[1]["output_tokens"]
    assert whole.usage.output_tokens == truth[0]["output_tokens"]


def test_stop_sequence_cuts_the_answer(simulator: SimProc) -> None:
    with _sync(simulator) as client:
        full = client.messages.create(model="claude-haiku-4-5", max_tokens=300, messages=PROMPT)
        text = full.content[0].text  # type: ignore[union-attr]
        words = text.split()
        stop = " " + words[len(words) // 2]
        cut = client.messages.create(
            model="claude-haiku-4-5", max_tokens=300, messages=PROMPT, stop_sequences=[stop]
        )
        with client.messages.stream(
            model="claude-haiku-4-5", max_tokens=300, messages=PROMPT, stop_sequences=[stop]
        ) as stream:
            streamed = stream.get_final_message()
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == stop
    assert cut.content[0].text == text[: text.index(stop)]  # type: ignore[union-attr]
    assert streamed.content[0].text == cut.content[0].text  # type: ignore[union-attr]
    assert streamed.usage.output_tokens == cut.usage.output_tokens


def test_max_tokens_caps_the_answer(simulator: SimProc) -> None:
    with _sync(simulator) as client:
        replies = [
            client.messages.create(
                model="claude-haiku-4-5", max_tokens=3, messages=[{"role": "user", "content": f"q{i}"}]
            )
            for i in range(6)
        ]
    assert all(r.usage.output_tokens <= 3 for r in replies)
    assert any(r.stop_reason == "max_tokens" and r.usage.output_tokens == 3 for r in replies)


def test_count_tokens_agrees_with_messages_usage(simulator: SimProc) -> None:
    with _sync(simulator) as client:
        counted = client.messages.count_tokens(model="claude-sonnet-4-6", messages=PROMPT, system="be brief")
        message = client.messages.create(
            model="claude-sonnet-4-6", max_tokens=10, messages=PROMPT, system="be brief"
        )
    assert counted.input_tokens == message.usage.input_tokens
    text = "be brief" + PROMPT[0]["content"]
    assert counted.input_tokens == -(-len(text) // 4)


def test_models_list_paginates_and_retrieve_resolves_alias(simulator: SimProc) -> None:
    with _sync(simulator) as client:
        ids = [m.id for m in client.models.list(limit=5)]
        first_page = client.models.list(limit=5)
        alias = client.models.retrieve("claude-haiku-4-5")
        with pytest.raises(anthropic.NotFoundError):
            client.models.retrieve("claude-nonexistent-1")
    assert len(ids) == len(set(ids)) == 12
    assert {"claude-opus-4-8", "claude-haiku-5-5", "claude-sonnet-4-5-20250929"} <= set(ids)
    assert first_page.has_more and len(first_page.data) == 5
    assert alias.id == "claude-haiku-4-5-20251001" and alias.display_name == "Claude Haiku 4.5"
