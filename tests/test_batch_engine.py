"""The batch engine without sockets: a fake batch API that can lose a create's answer, refuse a
batch or forget one, an in-memory journal, and the rules that keep every call in one batch.
Also the batch price against genai-prices' `calc_price` with the batch context, cache included."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from harness.batch import BatchEngine, BatchSettings
from harness.batchjournal import Ledger
from harness.client import BatchCall, BatchStatus
from harness.plan import make_plan
from harness.pricing import BATCH_CONTEXT, PriceTable
from harness.quality import Quality
from harness.records import Case
from tests.helpers import ListSink, genai_total_usd

MODELS = ["claude-haiku-4-5", "claude-opus-4-8"]
PRICES = PriceTable.resolve(MODELS, price_context=BATCH_CONTEXT)
CASES = [Case(id=f"c{i}", messages=({"role": "user", "content": f"q{i}"},), max_tokens=64) for i in range(30)]


class FakeBatches:
    """The batch endpoints in memory. `lose_answer`: creates whose answer is lost in transit (the
    batch exists); `fail_before`: creates that fail before reaching the server; `refuse`: 400s."""

    def __init__(self, *, lose_answer: int = 0, fail_before: int = 0, refuse: int = 0) -> None:
        self.batches: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []
        self.lose_answer, self.fail_before, self.refuse = lose_answer, fail_before, refuse
        self.creates = 0
        self._ids = itertools.count(1)

    def _status(self, batch_id: str) -> BatchStatus:
        b = self.batches[batch_id]
        n = len(b["ids"])
        return BatchStatus(
            id=batch_id,
            processing_status="ended",
            request_counts={"processing": 0, "succeeded": n, "errored": 0, "canceled": 0, "expired": 0},
            created_at=b["created"],
            ended_at=b["created"] + timedelta(seconds=30),
        )

    async def create_batch(self, body: Any, size: int, *, tag: str | None = None) -> BatchCall:
        self.creates += 1
        raw = b"".join([chunk async for chunk in body])
        assert len(raw) == size, "the body is as long as announced"
        if self.fail_before:
            self.fail_before -= 1
            return BatchCall(status=None, error_kind="connection", error_message="refused")
        if self.refuse:
            self.refuse -= 1
            return BatchCall(
                status=400, error_kind="bad_request", error_message="400 invalid_request_error: no"
            )
        ids = [item["custom_id"] for item in orjson.loads(raw)["requests"]]
        batch_id = f"msgbatch_{next(self._ids):04d}"
        self.batches[batch_id] = {"ids": ids, "created": datetime.now(UTC)}
        self.order.insert(0, batch_id)
        if self.lose_answer:
            self.lose_answer -= 1
            return BatchCall(status=500, error_kind="server_error", error_message="500 api_error")
        return BatchCall(batch=self._status(batch_id), status=200)

    async def get_batch(self, batch_id: str) -> BatchCall:
        if batch_id not in self.batches:
            return BatchCall(status=404, error_kind="not_found", error_message="404")
        return BatchCall(batch=self._status(batch_id), status=200)

    async def list_batches(self, *, after_id: str | None = None, limit: int = 100) -> BatchCall:
        ids = self.order[self.order.index(after_id) + 1 :] if after_id else self.order
        page = [self._status(i) for i in ids[:limit]]
        return BatchCall(page=page, has_more=len(ids) > limit, status=200)

    async def batch_results(self, batch_id: str) -> AsyncIterator[dict[str, Any]]:
        for cid in self.batches[batch_id]["ids"]:
            message = {
                "model": "m",
                "stop_reason": "end_turn",
                "content": [{"type": "text", "text": "ok"}],
                "usage": {"input_tokens": 10, "output_tokens": 5, "service_tier": "batch"},
            }
            yield {"custom_id": cid, "result": {"type": "succeeded", "message": message}}


class MemoryJournal:
    def __init__(self, entries: list[dict[str, Any]] | None = None) -> None:
        self.entries = list(entries or [])

    def append_batch_entry(self, entry: Mapping[str, Any]) -> None:
        self.entries.append(orjson.loads(orjson.dumps(dict(entry))))

    def batch_entries(self) -> list[dict[str, Any]]:
        return list(self.entries)


class NoJudge:
    async def verdict(self, case, ok, text, tool_calls, stop_reason, call_id) -> Quality:
        return Quality()

    def request_stop(self, reason, *, now: bool = False) -> None:
        pass


def engine(api: FakeBatches, journal: MemoryJournal, **settings: Any) -> tuple[BatchEngine, ListSink]:
    sink = ListSink()
    s = BatchSettings(**{"run_id": "r1", "target": "custom", "poll_s": 0.01, "max_requests": 10, **settings})
    return BatchEngine(s, api, journal, PRICES, [sink], grader=NoJudge()), sink


def plan():
    return make_plan(CASES, MODELS, repeats=1, seed=1, run_id="r1")


def each_call_once(api: FakeBatches, calls: set[str]) -> None:
    seen = [cid for b in api.batches.values() for cid in b["ids"]]
    assert len(seen) == len(set(seen)), "a call in two batches"
    assert set(seen) == calls


async def test_an_answer_lost_in_transit_is_found_on_the_list_not_created_again() -> None:
    api, journal = FakeBatches(lose_answer=2), MemoryJournal()
    eng, sink = engine(api, journal)
    calls = plan()
    outcome = await eng.run(calls)
    assert outcome.finished == 60 and len(sink.records) == 60
    each_call_once(api, {c.call_id for c in calls})
    assert api.creates == 6 and len(api.batches) == 6
    adopted = [e for e in journal.entries if e["op"] == "created" and e["adopted"]]
    assert len(adopted) == 2


async def test_a_create_that_never_arrived_is_sent_again() -> None:
    api, journal = FakeBatches(fail_before=2), MemoryJournal()
    eng, sink = engine(api, journal)
    calls = plan()
    await eng.run(calls)
    assert len(sink.records) == 60 and api.creates == 8 and len(api.batches) == 6
    each_call_once(api, {c.call_id for c in calls})


async def test_a_refused_batch_gives_error_rows_and_the_others_go_on() -> None:
    api, journal = FakeBatches(refuse=1), MemoryJournal()
    eng, sink = engine(api, journal)
    await eng.run(plan())
    errors = [r for r in sink.records if r.status == "error"]
    assert len(sink.records) == 60 and len(errors) == 10
    assert {r.error_kind for r in errors} == {"bad_request"} and all(r.batch_id is None for r in errors)
    assert [e["op"] for e in journal.entries].count("refused") == 1


async def test_a_resume_settles_the_journal_before_submitting() -> None:
    """An intent with no batch on the server is lost; one whose batch is listed is adopted; an open
    batch the server forgot sends its calls to a new batch."""
    calls = plan()
    ids = [c.call_id for c in calls]
    api = FakeBatches()
    api.batches["msgbatch_kept"] = {"ids": ids[10:20], "created": datetime.now(UTC)}
    api.order.insert(0, "msgbatch_kept")
    at = [(datetime.now(UTC) - timedelta(minutes=m)).isoformat() for m in (3, 2, 1)]
    journal = MemoryJournal(
        [
            {"op": "intent", "key": "b00001", "attempt": 1, "call_ids": ids[:10], "size": 1, "at": at[0]},
            {"op": "intent", "key": "b00002", "attempt": 1, "call_ids": ids[10:20], "size": 1, "at": at[1]},
            {"op": "intent", "key": "b00003", "attempt": 1, "call_ids": ids[20:30], "size": 1, "at": at[2]},
            {"op": "created", "key": "b00003", "batch_id": "msgbatch_forgotten"},
        ]
    )
    eng, sink = engine(api, journal)
    await eng.run(calls)
    ledger = Ledger.load(journal.entries)
    states = {k: b.state for k, b in ledger.batches.items()}
    assert states["b00001"] == "lost" and states["b00003"] == "lost"
    assert ledger.batches["b00002"].batch_id == "msgbatch_kept" and ledger.batches["b00002"].adopted
    assert len(sink.records) == 60
    each_call_once(api, set(ids))


@pytest.mark.parametrize("model", MODELS)
def test_the_batch_price_stacks_with_the_cache_rates_as_genai_prices_does(model: str) -> None:
    standard = PriceTable.resolve([model])
    usage = dict(
        input_tokens=1200,
        output_tokens=800,
        cache_creation_input_tokens=3000,
        cache_read_input_tokens=50_000,
        cache_write_5m_input_tokens=1000,
        cache_write_1h_input_tokens=2000,
        web_search_requests=None,
    )
    cost = PRICES.cost(model, 1200, 800, 3000, 50_000, 2000)
    assert cost.total_usd == pytest.approx(
        genai_total_usd({"model": model, **usage}, BATCH_CONTEXT), rel=1e-12
    )
    full = standard.cost(model, 1200, 800, 3000, 50_000, 2000)
    assert cost.total_usd == pytest.approx(full.total_usd / 2, rel=1e-12)
    assert cost.cache_usd == pytest.approx(full.cache_usd / 2, rel=1e-12)


def test_an_override_is_billed_at_half_in_a_batch_table() -> None:
    overrides = {"my-model": {"input": 2e-6, "output": 8e-6}}
    live = PriceTable.resolve(["my-model"], overrides)
    batch = PriceTable.resolve(["my-model"], overrides, price_context=BATCH_CONTEXT)
    assert batch.cost("my-model", 1000, 1000, 100, 100).total_usd == pytest.approx(
        live.cost("my-model", 1000, 1000, 100, 100).total_usd / 2
    )
    assert batch.source()["models"]["my-model"]["share_of_override"] == 0.5


class RateLimited(FakeBatches):
    """Polls answer 429 with retry-after twice, then tell `remaining: 0` until a reset 0.3 s away."""

    def __init__(self) -> None:
        super().__init__()
        self.polls: list[float] = []

    async def get_batch(self, batch_id: str) -> BatchCall:
        self.polls.append(time.monotonic())
        if len(self.polls) <= 2:
            return BatchCall(status=429, error_kind="rate_limit", error_message="429", retry_after_s=0.3)
        answer = await super().get_batch(batch_id)
        reset = (datetime.now(UTC) + timedelta(seconds=0.3)).isoformat()
        answer.headers = {
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": reset,
        }
        return answer

    async def batch_results(self, batch_id: str) -> AsyncIterator[dict[str, Any]]:
        self.polls.append(time.monotonic())  # the download is the next request after the last poll
        async for line in super().batch_results(batch_id):
            yield line


async def test_polls_wait_for_retry_after_and_for_the_window_to_reset() -> None:
    api, journal = RateLimited(), MemoryJournal()
    eng, sink = engine(api, journal, max_requests=60)
    await eng.run(plan())
    assert len(sink.records) == 60
    gaps = [b - a for a, b in itertools.pairwise(api.polls)]
    assert len(gaps) == 3, gaps  # two 429s, the poll that saw the end, the download
    assert gaps[0] >= 0.29 and gaps[1] >= 0.29, "retry-after honoured"
    assert gaps[2] >= 0.2, "no request while the window has none left"


def test_batch_options_from_the_profile_and_the_flags(tmp_path) -> None:
    from harness.config import build_config
    from harness.errors import ConfigError

    profile = tmp_path / "p.toml"
    profile.write_text(
        '[run]\nmodels = ["claude-haiku-4-5"]\nmode = "batch"\n'
        "[batch]\nwait = false\npoll_interval = 2\nretry_errored = true\nmax_requests = 50\nmax_bytes = 100000\n"
        '[target]\nkind = "custom"\nbase_url = "http://127.0.0.1:1"\n'
    )
    cfg = build_config({"profile": str(profile)}, env={})
    assert (cfg.mode, cfg.batch_wait, cfg.batch_poll_s, cfg.retry_errored) == ("batch", False, 2.0, True)
    assert (cfg.batch_max_requests, cfg.batch_max_bytes) == (50, 100_000)
    live = build_config({"models": "claude-haiku-4-5", "mode": False}, env={})
    assert live.mode == "live"
    bad = [
        ({"mode": "bulk"}, "--batch"),
        ({"mode": True, "rate": 5.0}, "--rate"),
        ({"mode": True, "arrival": "poisson"}, "--arrival"),
        ({"mode": True, "workers": 2}, "--workers"),
        ({"mode": True, "batch_max_requests": 100_001}, "batch.max_requests"),
        ({"mode": True, "batch_poll_s": 0}, "--poll-interval"),
        ({"retry_errored": True}, "--retry-errored"),
        ({"mode": True, "batch_wait": False}, "--wait"),  # on the simulator the run itself starts
    ]
    for given, option in bad:
        with pytest.raises(ConfigError) as caught:
            build_config({"models": "claude-haiku-4-5", **given}, env={})
        assert caught.value.option == option, (given, caught.value)
