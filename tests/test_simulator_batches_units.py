"""In-process checks of the Message Batches' pure parts: the compact request a batch keeps, the
batch faults beside the Messages ones, the profile keys, the envelope's validation and the
processing-time model (status, counts and outcomes as functions of the clock)."""

from __future__ import annotations

from typing import Any

import pytest

from harness.simulator.batchstore import CANCELED, EXPIRED, SUCCEEDED, BatchBuilder
from harness.simulator.blocks import REFUSAL_MAGIC, reply_inputs
from harness.simulator.faults import BATCH_FAULTS, FAULT_NAMES, FaultSettings, parse_fault_spec
from harness.simulator.messages import plan_for
from harness.simulator.profiles import DEFAULT_PROFILE_PATH, SimulatorConfigError, load_profiles
from harness.simulator.textgen import content_digest
from harness.simulator.validate import check_batch_create

PROFILES = load_profiles()
MODEL = "claude-sonnet-4-6"
TOOL = {
    "name": "get_weather",
    "description": "Weather.",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
    },
}
LONG = "A long prompt about Paris and Rome. " * 200


def _body(**extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 3000,
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": LONG},
            {"role": "assistant", "content": "Sure."},
            {"role": "user", "content": [{"type": "text", "text": "Tell me about get_weather in Oslo."}]},
        ],
        **extra,
    }


BODIES = [
    _body(),
    _body(stop_sequences=[" the"]),
    _body(thinking={"type": "enabled", "budget_tokens": 1500}),
    _body(thinking={"type": "adaptive"}, output_config={"effort": "low"}),
    _body(tools=[TOOL]),
    _body(tools=[TOOL], tool_choice={"type": "any"}),
    _body(tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 1}]),
    _body(messages=[{"role": "user", "content": "Say [[refuse:3]] now"}]),
    _body(messages=[{"role": "user", "content": REFUSAL_MAGIC}], thinking={"type": "adaptive"}),
]


@pytest.mark.parametrize("body", BODIES)
def test_the_compact_inputs_plan_the_same_reply_as_the_whole_body(body: dict[str, Any]) -> None:
    profile = PROFILES.models[MODEL]
    digest = content_digest(body)
    whole = plan_for(5, profile, body, digest)
    kept = reply_inputs(body)
    compact = plan_for(5, profile, kept, digest)
    assert compact == whole
    assert LONG not in repr(kept)  # the long earlier turn is never kept


def _resolve(model: str) -> str | None:
    found = PROFILES.resolve(model)
    return found.id if found else None


def test_batch_faults_are_their_own_group_and_never_strike_messages() -> None:
    assert not set(BATCH_FAULTS) & set(FAULT_NAMES)
    settings = FaultSettings()
    parse_fault_spec(
        "overloaded=0.9, batch_errored=0.6, claude-haiku-4-5:batch_expired=0.4", settings, _resolve
    )
    assert settings.pick("claude-opus-4-8", 0.95) is None  # the batch rates do not widen Messages faults
    assert settings.pick_batch("claude-opus-4-8", 0.5) == "batch_errored"
    assert settings.pick_batch("claude-opus-4-8", 0.7) is None
    haiku = PROFILES.resolve("claude-haiku-4-5")
    assert haiku is not None and settings.pick_batch(haiku.id, 0.9) == "batch_expired"
    with pytest.raises(ValueError, match="add up to more than 1"):
        parse_fault_spec("batch_errored=0.7, batch_expired=0.4", FaultSettings(), _resolve)
    updated = FaultSettings()
    updated.apply_json({"rates": {"batch_expired": 0.25}}, _resolve)
    assert updated.rates == {"batch_expired": 0.25}


def test_profile_batch_keys_and_limits(tmp_path) -> None:
    text = DEFAULT_PROFILE_PATH.read_text(encoding="utf-8")
    assert PROFILES.batch_limits.rpm > 0 and PROFILES.models[MODEL].batch_base_s > 0
    custom = text.replace("[defaults]\n", "[defaults]\nbatch_base_s = 7.5\n", 1)
    custom = custom.replace(
        "[batch_limits]\nrpm = 50000\nqueue = 1000000", "[batch_limits]\nrpm = 3\nqueue = 10"
    )
    path = tmp_path / "p.toml"
    path.write_text(custom, encoding="utf-8")
    loaded = load_profiles(path)
    assert loaded.models[MODEL].batch_base_s == 7.5 and (
        loaded.batch_limits.rpm,
        loaded.batch_limits.queue,
    ) == (3, 10)
    for bad in ("[batch_limits]\nrpm = 0", "[batch_limits]\nburst = 4", "[faults]\nbatch_nope = 0.1"):
        path.write_text(
            text.replace("[batch_limits]\nrpm = 50000\nqueue = 1000000", "") + "\n" + bad, encoding="utf-8"
        )
        with pytest.raises(SimulatorConfigError):
            load_profiles(path)


def _requests(*ids: str) -> dict[str, Any]:
    return {"requests": [{"custom_id": i, "params": {}} for i in ids]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "body: Input should be a valid dictionary"),
        ({}, "requests: Field required"),
        ({"requests": [], "x": 1}, "x: Extra inputs are not permitted"),
        ({"requests": []}, "requests: List should have at least 1 item after validation, not 0"),
        (_requests("a" * 65), "requests.0.custom_id: String should have at most 64 characters"),
        (
            _requests("ok", "bad id"),
            "requests.1.custom_id: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'",
        ),
        (_requests(""), "requests.0.custom_id: String should have at least 1 character"),
        (_requests("a", "b", "a"), "requests.2.custom_id: 'a' is already used by requests.0"),
        ({"requests": [{"custom_id": "a"}]}, "requests.0.params: Field required"),
        (
            {"requests": [{"custom_id": "a", "params": []}]},
            "requests.0.params: Input should be a valid dictionary",
        ),
    ],
)
def test_the_batch_envelope_is_validated(body: Any, message: str) -> None:
    problem = check_batch_create(body)
    assert problem is not None and problem.startswith(message)


def test_a_valid_envelope_leaves_params_to_the_requests() -> None:
    assert check_batch_create(_requests("a", "b-1", "C_2")) is None  # params {} is judged per request


def _batch(n: int, **faults: float) -> Any:
    builder = BatchBuilder(
        number=1, seed=3, time_scale=1.0, profiles=PROFILES, faults=FaultSettings(rates=dict(faults))
    )
    for i in range(n):
        params = {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": f"q{i}"}]}
        builder.add(f"r{i}", params)
    return builder.build(batch_id="msgbatch_x", key="k", created_unix=1000.0, created_mono=0.0)


def test_status_and_counts_follow_the_clock_and_a_cancel() -> None:
    batch = _batch(50)
    end = batch.end_s()
    assert 120 * 0.5 < end < 123 * 2.5  # base 120 s + 0.06 s x 50, times a lognormal spread
    assert batch.status(0.0) == "in_progress" and batch.counts(end - 0.01)["processing"] == 50
    assert batch.queued(0.0) == 50 and batch.queued(end) == 0
    assert batch.status(end) == "ended" and batch.counts(end)[SUCCEEDED] == 50
    again = _batch(50)
    assert again.end_s() == end  # seeded: the same batch number gives the same timing
    again.cancel(end / 2, 1000.0 + end / 2)
    assert again.status(end / 2) == "canceling" and again.end_s() == end / 2 + 10.0
    counts = again.counts(again.end_s())
    assert counts[CANCELED] > 0 and counts[SUCCEEDED] > 0 and counts[CANCELED] + counts[SUCCEEDED] == 50


def test_faults_and_the_scaled_deadline_make_requests_expire() -> None:
    batch = _batch(400, batch_expired=0.25, batch_errored=0.25)
    counts = batch.counts(batch.end_s())
    assert 60 < counts[EXPIRED] < 140 and 60 < counts["errored"] < 140
    errors = {r.error for r in batch.requests if r.error}
    assert errors == {("overloaded_error", "Overloaded"), ("api_error", "Internal server error")}
    late = _batch(10)
    late.deadline_s = late.end_s() / 2  # as if processing ran past the 24 hours
    assert late.end_s() == late.deadline_s and not late.canceled_early()
    assert {late.outcome(r) for r in late.requests} <= {SUCCEEDED, EXPIRED}
    assert EXPIRED in {late.outcome(r) for r in late.requests}
