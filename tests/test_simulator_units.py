"""In-process checks of the simulator's pure parts: buckets, fault specs, answers, profiles."""

from __future__ import annotations

import pytest

from harness.simulator.faults import FAULT_NAMES, FaultSettings, parse_fault_spec
from harness.simulator.profiles import DEFAULT_PROFILE_PATH, Limits, SimulatorConfigError, load_profiles
from harness.simulator.ratelimit import RateLimiter, key_id
from harness.simulator.textgen import VOCAB, count_input_tokens, make_answer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_buckets_refuse_name_the_limit_and_refill_continuously() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    limits = Limits(rpm=60, itpm=1000, otpm=600)
    assert limiter.admit("k", "p", limits, 10, 100).ok
    assert limiter.admit("k", "p", limits, 10, 450).ok
    refused = limiter.admit("k", "p", limits, 10, 100)  # 50 output tokens left, 10/s refill
    assert not refused.ok and refused.limited == "output tokens" and refused.retry_after == 5
    limiter.settle("k", "p", limits, 400)  # the replies were shorter than max_tokens
    assert limiter.admit("k", "p", limits, 10, 100).ok
    assert limiter.admit("other", "p", limits, 1000, 1).ok  # another key, other buckets
    refused = limiter.admit("other", "p", limits, 100, 1)
    assert refused.limited == "input tokens" and refused.retry_after == 6
    clock.now += 6.0
    ok = limiter.admit("other", "p", limits, 100, 1)
    assert ok.ok and ok.headers["anthropic-ratelimit-input-tokens-remaining"] == "0"
    assert ok.headers["anthropic-ratelimit-tokens-limit"] == "1600"


def test_key_id_hides_the_key() -> None:
    assert "sk-secret" not in key_id("sk-secret") and key_id("a") != key_id("b") and len(key_id("a")) == 16


def test_fault_spec_parsing_and_pick() -> None:
    profiles = load_profiles()

    def resolve(model: str) -> str | None:
        found = profiles.resolve(model)
        return found.id if found else None

    settings = FaultSettings()
    parse_fault_spec("overloaded=0.25, claude-haiku-4-5:drop=0.5, retry_after_s=3", settings, resolve)
    assert settings.rates == {"overloaded": 0.25} and settings.retry_after_s == 3.0
    assert settings.rates_for("claude-haiku-4-5-20251001") == {"overloaded": 0.25, "drop": 0.5}
    assert (
        settings.pick("claude-opus-4-8", 0.2) == "overloaded"
        and settings.pick("claude-opus-4-8", 0.3) is None
    )
    assert settings.pick("claude-haiku-4-5-20251001", 0.6) == "drop"
    for bad in ("nonsense=0.1", "overloaded=1.5", "claude-nope:drop=0.1", "overloaded"):
        with pytest.raises(ValueError):
            parse_fault_spec(bad, FaultSettings(), resolve)
    assert set(FAULT_NAMES) == {
        "rate_limit",
        "overloaded",
        "api_error",
        "midstream_error",
        "drop",
        "truncate",
        "slow_first_byte",
    }


def test_answers_are_deterministic_prefixes_and_honour_stop_sequences() -> None:
    common = {
        "seed": 1,
        "model": "m",
        "digest": b"x" * 16,
        "verbosity": 5.0,
        "verbosity_sigma": 0.0,
        "answer_tokens_max": 10_000,
    }
    short, long = make_answer(max_tokens=20, **common), make_answer(max_tokens=200, **common)
    assert short.stop_reason == long.stop_reason == "max_tokens"
    assert long.pieces[:20] == short.pieces and len(long.pieces) == 200
    assert all(p in VOCAB for p in long.pieces)
    assert make_answer(max_tokens=200, **{**common, "seed": 2}).pieces != long.pieces
    stop = long.text[50:58]
    cut = make_answer(max_tokens=200, stop_sequences=["zzz-not-there", stop], **common)
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == stop
    assert cut.text == long.text[: long.text.index(stop)]
    natural = make_answer(max_tokens=1000, **{**common, "verbosity": 0.1})
    assert natural.stop_reason == "end_turn" and len(natural.pieces) == 100


def test_input_token_estimate() -> None:
    body = {
        "system": "abcd" * 3,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "x" * 9}]}],
    }
    assert count_input_tokens(body) == 6  # ceil((12 + 9) / 4)


def test_profiles_ship_the_required_models_and_reject_bad_keys(tmp_path) -> None:
    profiles = load_profiles()
    required = {
        "claude-haiku-5-5", "claude-sonnet-5-5", "claude-opus-5-5", "claude-haiku-4-5", "claude-sonnet-4-5",
        "claude-opus-4-5", "claude-sonnet-4-6", "claude-opus-4-6", "claude-opus-4-7", "claude-opus-4-8",
        "claude-sonnet-5", "claude-opus-5", "claude-haiku-4-5-20251001", "claude-sonnet-4-5-20250929",
        "claude-opus-4-5-20251101",
    }  # fmt: skip
    assert all(profiles.resolve(m) is not None for m in required)
    haiku, sonnet, opus = (
        profiles.resolve(m) for m in ("claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-8")
    )
    assert haiku and sonnet and opus
    assert haiku.ttft_median_s < sonnet.ttft_median_s < opus.ttft_median_s
    assert haiku.speed_median_tps > sonnet.speed_median_tps > opus.speed_median_tps
    assert haiku.limits == Limits(50_000, 20_000_000, 4_000_000)
    assert "ILLUSTRATIVE" in DEFAULT_PROFILE_PATH.read_text()
    bad = tmp_path / "p.toml"
    bad.write_text("[defaults]\nttft_median_s = 1\nturbo = true\n")
    with pytest.raises(SimulatorConfigError, match="turbo"):
        load_profiles(bad)
