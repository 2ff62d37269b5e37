"""The Message Batches API of the simulator, driven by the unchanged SDK (sync and async) over
real sockets: the batch lifecycle and its counts, results equal to the live answers, list
pagination, cancel and delete, per-request faults, the envelope's 400s, the batch API's own
rate limits, the ground truth of every batch created, and results streamed without the
simulator holding them."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import psutil
import pytest
from anthropic.types.messages import MessageBatch

from harness.simulator.profiles import DEFAULT_PROFILE_PATH
from tests.simproc import SimProc, start_simulator

KEY = "sk-test-not-a-real-key"
TOOL = {
    "name": "get_weather",
    "description": "Current weather at a place.",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
    },
}
DEFAULT_LIMITS = "[batch_limits]\nrpm = 50000\nqueue = 1000000"


def _profile(tmp: Path, name: str, *, defaults: str = "", limits: str = DEFAULT_LIMITS) -> Path:
    """The shipped profile with batch timing (and limits) changed for a test."""
    text = DEFAULT_PROFILE_PATH.read_text(encoding="utf-8")
    assert DEFAULT_LIMITS in text
    text = text.replace("[defaults]\n", "[defaults]\n" + defaults, 1).replace(DEFAULT_LIMITS, limits)
    path = tmp / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def sim_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProc]:
    # A batch of a few requests ends after 60 simulated s x 0.01 = ~0.6 s (0.35-1 s with the
    # spread); 20,000 requests add only 0.1 s.
    profile = _profile(
        tmp_path_factory.mktemp("batches"),
        "p.toml",
        defaults="batch_base_s = 60.0\nbatch_per_request_s = 0.0005\n",
    )
    sim = start_simulator("--time-scale", "0.01", "--seed", "5", "--profile", str(profile))
    yield sim
    sim.stop()


@pytest.fixture
def sim(sim_module: SimProc) -> SimProc:
    sim_module.reset()
    return sim_module


def _client(sim: SimProc, key: str = KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=key, base_url=sim.url, max_retries=0, timeout=60)


def _ask(i: int, model: str = "claude-haiku-4-5", max_tokens: int = 40, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": f"Question {i}?"}],
        **extra,
    }


def _requests(n: int, prefix: str = "req", **extra: Any) -> list[dict[str, Any]]:
    return [{"custom_id": f"{prefix}-{i}", "params": _ask(i, **extra)} for i in range(n)]


def _wait_ended(client: anthropic.Anthropic, batch_id: str, timeout: float = 20.0) -> MessageBatch:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        assert time.monotonic() < deadline, batch
        time.sleep(0.05)


def _truth(sim: SimProc, with_ids: bool = True) -> list[dict[str, Any]]:
    url = sim.url + "/_sim/batches" + ("?custom_ids=1" if with_ids else "")
    with urllib.request.urlopen(url, timeout=30) as response:
        return [json.loads(line) for line in response.read().splitlines() if line.strip()]


def _counts(batch: MessageBatch) -> dict[str, int]:
    return batch.request_counts.to_dict()


# The batch mixes models and features: each result must equal the live, non-streamed answer.
FEATURES: dict[str, dict[str, Any]] = {
    "plain-haiku": _ask(1),
    "plain-sonnet": _ask(2, model="claude-sonnet-4-6", max_tokens=60),
    "stop": _ask(3, model="claude-opus-4-8", stop_sequences=[" the"]),
    "thinking": _ask(
        4, model="claude-sonnet-4-6", max_tokens=1400, thinking={"type": "enabled", "budget_tokens": 1024}
    ),
    "adaptive": _ask(
        5,
        model="claude-sonnet-4-6",
        max_tokens=600,
        thinking={"type": "adaptive"},
        output_config={"effort": "low"},
    ),
    "tool": {
        "model": "claude-haiku-4-5",
        "max_tokens": 200,
        "tools": [TOOL],
        "messages": [{"role": "user", "content": "Use get_weather for Oslo."}],
    },
    "search": {
        "model": "claude-sonnet-4-6",
        "max_tokens": 300,
        "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}],
        "messages": [{"role": "user", "content": "Please search the web for token buckets."}],
    },
    "refused": {
        "model": "claude-haiku-4-5",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "Something [[refuse:3]] here"}],
    },
}


def _comparable(message: Any) -> dict[str, Any]:
    data = message.to_dict() if hasattr(message, "to_dict") else dict(message)
    data.pop("id")
    usage = dict(data.pop("usage"))
    return {**data, "usage": {k: v for k, v in usage.items() if k != "service_tier"}}


def test_lifecycle_counts_results_and_ground_truth(sim: SimProc) -> None:
    requests = [{"custom_id": cid, "params": params} for cid, params in FEATURES.items()]
    requests += _requests(6)
    with _client(sim) as client:
        created = client.messages.batches.create(
            requests=requests, extra_headers={"x-harness-call-id": "call-7", "x-harness-attempt": "1"}
        )
        assert created.id.startswith("msgbatch_") and created.type == "message_batch"
        assert created.processing_status == "in_progress" and created.results_url is None
        assert _counts(created) == {
            "processing": 14,
            "succeeded": 0,
            "errored": 0,
            "canceled": 0,
            "expired": 0,
        }
        assert (
            created.ended_at is None and created.cancel_initiated_at is None and created.archived_at is None
        )
        assert (created.expires_at - created.created_at).total_seconds() == 24 * 3600
        polled = client.messages.batches.retrieve(created.id)
        assert polled.processing_status in ("in_progress", "ended")
        ended = _wait_ended(client, created.id)
        assert _counts(ended) == {"processing": 0, "succeeded": 14, "errored": 0, "canceled": 0, "expired": 0}
        assert ended.ended_at is not None and ended.ended_at > ended.created_at
        assert ended.results_url == f"{sim.url}/v1/messages/batches/{created.id}/results"

        results = list(client.messages.batches.results(created.id))
        again = list(client.messages.batches.results(created.id))
        ids = [r.custom_id for r in results]
        assert sorted(ids) == sorted(r["custom_id"] for r in requests) and len(set(ids)) == 14
        assert ids != [r["custom_id"] for r in requests]  # shuffled, by the seed
        assert [r.to_dict() for r in again] == [r.to_dict() for r in results]  # the same every read
        by_id = {r.custom_id: r.result for r in results}
        for cid, params in FEATURES.items():
            result = by_id[cid]
            assert result.type == "succeeded"
            assert result.message.usage.service_tier == "batch"
            live = client.messages.create(**params)
            assert live.usage.service_tier == "standard"
            assert _comparable(result.message) == _comparable(live), cid
        assert by_id["thinking"].message.content[0].type == "thinking"
        assert by_id["tool"].message.stop_reason == "tool_use"
        assert by_id["refused"].message.stop_reason == "refusal"
        assert by_id["search"].message.usage.server_tool_use is not None
    [truth] = _truth(sim)
    assert truth["id"] == created.id and (truth["call_id"], truth["attempt"]) == ("call-7", 1)
    assert truth["custom_ids"] == [r["custom_id"] for r in requests] and truth["request_count"] == 14
    assert truth["processing_status"] == "ended" and truth["request_counts"]["succeeded"] == 14
    assert truth["models"] == {"claude-haiku-4-5-20251001": 9, "claude-sonnet-4-6": 4, "claude-opus-4-8": 1}
    assert len(sim.requests()) == len(FEATURES)  # only the live calls: a batch is no Messages request


async def test_async_client_creates_polls_and_reads_results(sim: SimProc) -> None:
    async with anthropic.AsyncAnthropic(api_key=KEY, base_url=sim.url, max_retries=0) as client:
        created = await client.messages.batches.create(requests=_requests(5, prefix="a"))
        deadline = time.monotonic() + 20
        while (batch := await client.messages.batches.retrieve(created.id)).processing_status != "ended":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert batch.request_counts.succeeded == 5
        ids = [r.custom_id async for r in await client.messages.batches.results(created.id)]
    assert sorted(ids) == [f"a-{i}" for i in range(5)]


def test_list_is_newest_first_paginated_and_per_key(sim: SimProc) -> None:
    with _client(sim) as client:
        made = [client.messages.batches.create(requests=_requests(1, prefix=f"l{i}")).id for i in range(5)]
        newest_first = made[::-1]
        first = client.messages.batches.list(limit=2)
        assert [b.id for b in first.data] == newest_first[:2] and first.has_more
        assert (first.first_id, first.last_id) == (newest_first[0], newest_first[1])
        assert [
            b.id for b in client.messages.batches.list(limit=2)
        ] == newest_first  # the SDK follows after_id
        last = client.messages.batches.list(limit=10, after_id=newest_first[3])
        assert [b.id for b in last.data] == newest_first[4:] and not last.has_more
        before = client.messages.batches.list(limit=2, before_id=newest_first[3])
        assert [b.id for b in before.data] == newest_first[1:3] and before.has_more
        with pytest.raises(anthropic.BadRequestError):
            client.messages.batches.list(limit=0)
    with _client(sim, key="sk-test-another-workspace") as other:
        assert list(other.messages.batches.list()) == []
        with pytest.raises(anthropic.NotFoundError):
            other.messages.batches.retrieve(made[0])


def test_cancel_goes_through_canceling_to_ended_with_canceled_results(sim: SimProc) -> None:
    with _client(sim) as client:
        created = client.messages.batches.create(requests=_requests(40, prefix="c"))
        canceling = client.messages.batches.cancel(created.id)
        assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at is not None
        assert canceling.request_counts.processing == 40 and canceling.results_url is None
        assert client.messages.batches.cancel(created.id).processing_status in ("canceling", "ended")
        ended = _wait_ended(client, created.id)
        counts = _counts(ended)
        assert counts["canceled"] > 0 and counts["succeeded"] + counts["canceled"] == 40, counts
        results = {r.custom_id: r.result for r in client.messages.batches.results(created.id)}
        assert sum(r.type == "canceled" for r in results.values()) == counts["canceled"]
        assert all(r.type in ("succeeded", "canceled") for r in results.values())
        with pytest.raises(anthropic.BadRequestError):
            client.messages.batches.cancel(created.id)  # it has ended
    [truth] = _truth(sim, with_ids=False)
    assert truth["cancel_initiated_unix"] is not None and truth["request_counts"] == counts


def test_delete_only_once_ended(sim: SimProc) -> None:
    with _client(sim) as client:
        created = client.messages.batches.create(requests=_requests(3, prefix="d"))
        with pytest.raises(anthropic.BadRequestError, match="cancel"):
            client.messages.batches.delete(created.id)
        with pytest.raises(anthropic.AnthropicError, match="finished processing"):
            list(client.messages.batches.results(created.id))  # the SDK checks results_url first
        client.messages.batches.cancel(created.id)
        _wait_ended(client, created.id)
        deleted = client.messages.batches.delete(created.id)
        assert (deleted.id, deleted.type) == (created.id, "message_batch_deleted")
        with pytest.raises(anthropic.NotFoundError):
            client.messages.batches.retrieve(created.id)
        assert list(client.messages.batches.list()) == []
    [truth] = _truth(sim, with_ids=False)
    assert truth["id"] == created.id and truth["deleted_unix"] is not None


def test_faults_and_bad_params_become_errored_and_expired_results(sim: SimProc) -> None:
    sim.set_faults({"batch_errored": 0.2, "batch_expired": 0.1})
    requests = _requests(200, prefix="f", max_tokens=8)
    bad = {
        "no-max-tokens": {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "x"}]},
        "unknown-model": _ask(0, model="claude-nope-9"),
        "streamed": _ask(0, stream=True),
    }
    requests += [{"custom_id": cid, "params": params} for cid, params in bad.items()]
    with _client(sim) as client:
        live = client.messages.create(**_ask(9))  # the batch faults never strike Messages
        assert live.stop_reason in ("end_turn", "max_tokens")
        created = client.messages.batches.create(requests=requests)
        counts = _counts(_wait_ended(client, created.id))
        results = {r.custom_id: r.result for r in client.messages.batches.results(created.id)}
    assert sum(counts.values()) == 203 and counts["processing"] == 0
    assert 20 <= counts["errored"] - 3 <= 65 and 5 <= counts["expired"] <= 40, counts
    assert counts["succeeded"] == 203 - counts["errored"] - counts["expired"]
    kinds = {r.error.error.type for r in results.values() if r.type == "errored"}
    assert kinds == {"overloaded_error", "api_error", "invalid_request_error", "not_found_error"}
    assert results["no-max-tokens"].error.error.message == "max_tokens: Field required"
    assert results["unknown-model"].error.error.message == "model: claude-nope-9"
    assert results["streamed"].error.error.type == "invalid_request_error"
    assert results["streamed"].error.type == "error"
    assert sum(r.type == "expired" for r in results.values()) == counts["expired"]


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        (
            [{"custom_id": "same", "params": _ask(1)}, {"custom_id": "same", "params": _ask(2)}],
            "requests.1.custom_id",
        ),
        ([{"custom_id": "no spaces", "params": _ask(1)}], "String should match pattern"),
        ([{"custom_id": "x" * 65, "params": _ask(1)}], "String should have at most 64 characters"),
        ([], "List should have at least 1 item"),
        ([{"custom_id": f"r{i}", "params": {}} for i in range(100_001)], "at most 100000 items"),
    ],
    ids=["duplicate", "pattern", "too-long", "empty", "too-many"],
)
def test_envelope_errors_are_400s_and_create_nothing(sim: SimProc, requests: list[Any], message: str) -> None:
    with _client(sim) as client, pytest.raises(anthropic.BadRequestError, match=message) as raised:
        client.messages.batches.create(requests=requests)
    assert raised.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert _truth(sim) == []


def test_auth_hooks_apply_to_the_batch_endpoints(sim: SimProc) -> None:
    with _client(sim, key="sk-ant-revoked-1") as client, pytest.raises(anthropic.AuthenticationError):
        client.messages.batches.list()
    with _client(sim, key="sk-ant-noperm-1") as client, pytest.raises(anthropic.PermissionDeniedError):
        client.messages.batches.create(requests=_requests(1))
    assert _truth(sim) == []


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProc]:
    profile = _profile(
        tmp_path_factory.mktemp("limited"), "p.toml", limits="[batch_limits]\nrpm = 4\nqueue = 50"
    )
    sim = start_simulator("--time-scale", "0.01", "--seed", "5", "--profile", str(profile))
    yield sim
    sim.stop()


def test_batch_rate_limits_answer_429_with_retry_after(limited: SimProc) -> None:
    with _client(limited) as client:
        raw = client.messages.batches.with_raw_response.create(requests=_requests(40))
        assert raw.headers["anthropic-ratelimit-requests-limit"] == "4"
        assert raw.headers["anthropic-ratelimit-requests-remaining"] == "3"
        with pytest.raises(anthropic.RateLimitError, match="processing queue") as queue_full:
            client.messages.batches.create(requests=_requests(20, prefix="more"))  # 40 + 20 > 50 queued
        assert int(queue_full.value.response.headers["retry-after"]) >= 1
        client.messages.batches.list()
        client.messages.batches.list()
        with pytest.raises(anthropic.RateLimitError, match="requests per minute") as too_many:
            client.messages.batches.list()  # the fifth call within the minute
        headers = too_many.value.response.headers
        assert int(headers["retry-after"]) >= 1 and headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert len(_truth(limited)) == 1


def test_a_20000_request_batch_streams_its_results(sim: SimProc) -> None:
    n = 20_000
    process = psutil.Process(sim.proc.pid)
    with _client(sim) as client:
        created = client.messages.batches.create(requests=_requests(n, prefix="big", max_tokens=64))
        _wait_ended(client, created.id)
        before = process.memory_info().rss
        peak = before
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, process.memory_info().rss)
                time.sleep(0.005)

        sampler = threading.Thread(target=sample)
        sampler.start()
        seen: set[str] = set()
        size = 0
        try:
            decoder = client.messages.batches.results(created.id)
            assert decoder.http_response.headers.get("content-length") is None  # chunked: streamed
            assert decoder.http_response.headers["content-type"] == "application/x-jsonl"
            for line in decoder:
                seen.add(line.custom_id)
                size += 1
        finally:
            done.set()
            sampler.join()
    assert size == n and len(seen) == n
    # The results are ~13 MB of JSON (~30 MB more as objects); rendered line by line and written
    # in 256 KB chunks they grow the simulator by well under 1 MB: the bound fails a simulator
    # that builds the whole body, even as bytes.
    assert peak - before < 6 * 1024 * 1024, (before, peak)
    [truth] = _truth(sim, with_ids=False)
    assert truth["request_count"] == n and truth["request_counts"]["succeeded"] == n
