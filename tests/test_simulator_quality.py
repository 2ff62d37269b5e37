"""The simulator's quality model over real sockets, read by the unchanged SDK: answers pass the
case's grader as often as the profile says (and fail it plausibly otherwise), the judge's verdicts,
the malformed-verdict fault, determinism, and the unchanged filler answer without the headers.

The graders here are small local versions of the harness's contract, written independently of the
simulator's own (`harness/simulator/graders.py`); a judge grader asks the simulator's judge."""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from harness.simulator.profiles import DEFAULT_PROFILE_PATH, load_profiles
from harness.simulator.textgen import content_digest, make_answer
from tests.simproc import SimProc, start_simulator

KEY = "sk-test-not-a-real-key"
COIN = "claude-coin-1"  # a profile of this test's own: every answer passes with probability 1/2
JUDGE = "claude-opus-4-8"
SEED = "5"
COIN_PROFILE = f"""
[models."{COIN}"]
family = "sonnet"
pool = "sonnet-5"
display_name = "Coin"
created_at = "2026-01-01T00:00:00Z"

[models."{COIN}".quality]
pass = 0.5
"""
WEATHER = {
    "name": "get_weather",
    "description": "Current weather at a place.",
    "input_schema": {
        "type": "object",
        "properties": {
            "location": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1},
        },
        "required": ["location", "unit"],
    },
}
CLOCK = {"name": "get_time", "description": "The time.", "input_schema": {"type": "object", "properties": {}}}
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0},
        "role": {"enum": ["admin", "user"]},
        "skills": {"type": "array", "items": {"type": "string"}, "minItems": 1},
    },
    "required": ["name", "age", "role"],
    "additionalProperties": False,
}
SKY = "The sky looks blue because air molecules scatter short blue wavelengths of sunlight much more than red ones."
CASES: list[tuple[str, dict[str, Any], str, dict[str, Any]]] = [
    ("contains", {"contains": "Paris"}, "What is the capital of France?", {}),
    ("contains-all", {"contains": ["Paris", "Seine"]}, "Which French city, on which river?", {}),
    ("equals", {"equals": "positive"}, "Classify as positive, negative or neutral: I loved it.", {}),
    ("regex", {"regex": r"\b\d{3}-\d{4}\b"}, "Give me a local phone number.", {}),
    ("number", {"number": {"value": 3500, "tolerance": 0.01, "relative": True}}, "How far is it in km?", {}),
    (
        "number-pattern",
        {
            "number": {
                "value": 12.5,
                "tolerance": 0.2,
                "relative": False,
                "pattern": r"total: (\d+(?:\.\d+)?)",
            }
        },
        "What is the total weight?",
        {},
    ),
    ("json", {"json": True}, "Give Alice Smith's details as JSON.", {}),
    ("json-schema", {"json": {"schema": PERSON}}, "Extract the person as JSON: Bob Lee, 30, admin.", {}),
    (
        "tool_call",
        {"tool_call": {"name": "get_weather", "input": {"location": "Paris", "unit": "celsius"}}},
        "What's the weather like in Paris today?",
        {"tools": [WEATHER, CLOCK]},
    ),
    (
        "tool_call-forced",
        {"tool_call": {"name": "get_weather", "input": {"location": "Paris"}}},
        "What's the weather like in Paris today?",
        {"tools": [WEATHER, CLOCK], "tool_choice": {"type": "tool", "name": "get_weather"}},
    ),
    (
        "judge",
        {"judge": {"rubric": "Explains Rayleigh scattering.", "reference": SKY, "pass_score": 0.7}},
        "Why is the sky blue?",
        {},
    ),
    (
        "judge-rubric",
        {"judge": "The answer should explain that plants turn light, water and carbon dioxide into sugar."},
        "What does photosynthesis do?",
        {},
    ),
    (
        "all",
        {"all": [{"contains": "Paris"}, {"number": {"value": 2100000, "tolerance": 0.05}}]},
        "Name France's capital and its population.",
        {},
    ),
    (
        "any-nested",
        {"any": [{"equals": "yes"}, {"all": [{"regex": "^Yes"}, {"contains": "because"}]}]},
        "Answer yes or no: is water wet?",
        {},
    ),
    (
        "thinking",
        {"contains": "Canberra"},
        "What is the capital of Australia?",
        {"thinking": {"type": "enabled", "budget_tokens": 1024}, "max_tokens": 3000},
    ),
]


@pytest.fixture(scope="module")
def profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped profiles plus the coin-flip model."""
    path = tmp_path_factory.mktemp("profile") / "profiles.toml"
    path.write_text(DEFAULT_PROFILE_PATH.read_text(encoding="utf-8") + COIN_PROFILE, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def sim_module(profile: Path) -> Iterator[SimProc]:
    sim = start_simulator("--time-scale", "0", "--seed", SEED, "--profile", str(profile))
    yield sim
    sim.stop()


@pytest.fixture
def sim(sim_module: SimProc) -> SimProc:
    sim_module.reset()
    return sim_module


def _client(sim: SimProc) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=KEY, base_url=sim.url, max_retries=0)


def _b64(expected: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(expected).encode()).decode().rstrip("=")


def _headers(expected: dict[str, Any] | None, tags: tuple[str, ...] = (), **more: str) -> dict[str, str]:
    headers = dict(more)
    if expected is not None:
        headers["x-harness-expected"] = _b64(expected)
    if tags:
        headers["x-harness-tags"] = ",".join(tags)
    return headers


def _ask(
    client: anthropic.Anthropic,
    model: str,
    prompt: str,
    headers: dict[str, str],
    extra: dict[str, Any] | None = None,
    stream: bool = False,
) -> anthropic.types.Message:
    params: dict[str, Any] = {
        "model": model,
        "max_tokens": 400,
        "messages": [{"role": "user", "content": prompt}],
    }
    params.update(extra or {})
    if not stream:
        return client.messages.create(**params, extra_headers=headers)
    with client.messages.stream(**params, extra_headers=headers) as events:
        deltas = 0
        for event in events:
            if event.type == "content_block_delta":
                piece = getattr(event.delta, "text", None) or getattr(event.delta, "partial_json", None)
                deltas += bool(piece) or event.delta.type == "thinking_delta"
        final = events.get_final_message()
    assert deltas == final.usage.output_tokens  # one token per delta: usage counts the text sent
    return final


def _text(message: anthropic.types.Message) -> str:
    return "".join(b.text for b in message.content if b.type == "text")


def _calls(message: anthropic.types.Message) -> list[tuple[str, Any]]:
    return [(b.name, b.input) for b in message.content if b.type == "tool_use"]


# -- the graders, as the contract states them ----------------------------------------------------

_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d+)?|\.\d+)")
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)
_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
}


def _valid(schema: dict[str, Any], value: Any) -> bool:
    kind = schema.get("type")
    if kind is not None and (
        not isinstance(value, _TYPES[kind]) or (isinstance(value, bool) and kind != "boolean")
    ):
        return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        if any(name not in value for name in schema.get("required", ())):
            return False
        if schema.get("additionalProperties") is False and set(value) - set(properties):
            return False
        return all(_valid(properties.get(k, {}), v) for k, v in value.items())
    if isinstance(value, list):
        return len(value) >= schema.get("minItems", 0) and all(
            _valid(schema.get("items", {}), v) for v in value
        )
    if isinstance(value, int | float) and "minimum" in schema:
        return value >= schema["minimum"]
    return True


def _subset(wanted: Any, got: Any) -> bool:
    if isinstance(wanted, dict):
        return isinstance(got, dict) and all(k in got and _subset(v, got[k]) for k, v in wanted.items())
    return bool(wanted == got)


def _judge(client: anthropic.Anthropic, rubric: str, reference: str | None, answer: str) -> dict[str, Any]:
    """The harness's judge call: rubric, optional reference and answer between tags."""
    prompt = f"<rubric>{rubric}</rubric>\n"
    if reference:
        prompt += f"<reference>{reference}</reference>\n"
    prompt += f'<answer>{answer}</answer>\nReply with JSON only: {{"score": 0..1, "reason": "..."}}.'
    reply = client.messages.create(
        model=JUDGE,
        max_tokens=300,
        system="You grade answers against a rubric.",
        messages=[{"role": "user", "content": prompt}],
        extra_headers={"x-harness-judge": "1"},
    )
    return json.loads(_text(reply))


def _check(
    client: anthropic.Anthropic, expected: dict[str, Any], text: str, calls: list[tuple[str, Any]]
) -> bool:
    ((kind, arg),) = expected.items()
    if kind == "all":
        return all(_check(client, g, text, calls) for g in arg)
    if kind == "any":
        return any(_check(client, g, text, calls) for g in arg)
    if kind == "contains":
        return all(n.lower() in text.lower() for n in ([arg] if isinstance(arg, str) else arg))
    if kind == "equals":
        return text.strip() == arg.strip()
    if kind == "regex":
        return re.search(arg, text) is not None
    if kind == "number":
        if "pattern" in arg:
            found = re.search(arg["pattern"], text)
            got = found.group(1) if found else None
        else:
            first = _NUMBER.search(text)
            got = first.group() if first else None
        if got is None:
            return False
        tolerance = arg.get("tolerance", 0)
        allowed = tolerance * abs(arg["value"]) if arg.get("relative", True) else tolerance
        return abs(float(got) - arg["value"]) <= allowed + 1e-9
    if kind == "json":
        fenced = _FENCE.search(text)
        try:
            value = json.loads(fenced.group(1) if fenced else text)
        except ValueError:
            return False
        return arg is True or _valid(arg["schema"], value)
    if kind == "tool_call":
        return any(name == arg["name"] and _subset(arg.get("input", {}), got) for name, got in calls)
    assert kind == "judge"
    rubric, reference, pass_score = (
        (arg, None, 0.7)
        if isinstance(arg, str)
        else (arg["rubric"], arg.get("reference"), arg.get("pass_score", 0.7))
    )
    return _judge(client, rubric, reference, text)["score"] >= pass_score


# -- every grader kind ----------------------------------------------------------------------------


@pytest.mark.parametrize("name,expected,prompt,extra", CASES, ids=[c[0] for c in CASES])
def test_each_grader_kind_passes_exactly_when_the_simulator_says_so(
    sim: SimProc, name: str, expected: dict[str, Any], prompt: str, extra: dict[str, Any]
) -> None:
    seen: dict[bool, str] = {}
    with _client(sim) as client:
        for i in range(40):
            message = _ask(client, COIN, f"{prompt} (#{i})", _headers(expected), extra, stream=i % 2 == 1)
            truth = sim.requests()[-1]
            assert truth["expected_kind"] == next(iter(expected))
            assert truth["output_tokens"] == message.usage.output_tokens
            assert message.usage.output_tokens <= extra.get("max_tokens", 400)
            text, calls = _text(message), _calls(message)
            assert 0 < len(text) < 300 or calls
            assert _check(client, expected, text, calls) is truth["quality_pass"], (text, calls)
            seen.setdefault(truth["quality_pass"], text or json.dumps(calls))
            if len(seen) == 2 and i >= 5:
                break
    assert set(seen) == {True, False}, seen


def test_pass_rates_follow_the_profile_within_a_binomial_tolerance(sim: SimProc) -> None:
    profiles = load_profiles()
    cases = 200
    rates = {}
    with _client(sim) as client:
        for model in ("claude-haiku-4-5", "claude-opus-4-8"):
            for i in range(cases):
                prompt = f"Question {i}: which city is the capital of France?"
                _ask(client, model, prompt, _headers({"contains": "Paris"}, ("hard", "geo")))
            truth = [r for r in sim.requests() if r["model"] == model]
            assert len(truth) == cases and all(r["expected_kind"] == "contains" for r in truth)
            rates[model] = sum(r["quality_pass"] for r in truth) / cases
            profile = profiles.resolve(model)
            assert profile is not None
            p = profile.quality["hard"]
            tolerance = 4 * math.sqrt(p * (1 - p) / cases)
            assert abs(rates[model] - p) <= tolerance, (model, rates[model], p)
    assert rates["claude-opus-4-8"] > rates["claude-haiku-4-5"]


# -- determinism, retries and repeats ------------------------------------------------------------


def _sequence(sim: SimProc) -> list[tuple[str, bool | None]]:
    out = []
    with _client(sim) as client:
        for i, (_name, expected, prompt, extra) in enumerate(CASES[:10]):
            message = _ask(client, COIN, prompt, _headers(expected), extra, stream=i % 2 == 0)
            out.append((_text(message) + json.dumps(_calls(message)), sim.requests()[-1]["quality_pass"]))
    return out


def test_same_seed_same_answers_retries_agree_and_repeats_vary(sim: SimProc, profile: Path) -> None:
    first = _sequence(sim)
    sim.reset()
    assert _sequence(sim) == first  # the same requests after a reset
    with start_simulator("--time-scale", "0", "--seed", SEED, "--profile", str(profile)) as other:
        assert _sequence(other) == first  # a fresh process with the same seed
    with start_simulator("--time-scale", "0", "--seed", "6", "--profile", str(profile)) as other:
        assert _sequence(other) != first
    sim.reset()
    expected = {"contains": "Paris"}
    outcomes: dict[int, set[bool]] = {}
    with _client(sim) as client:
        for case in range(8):
            prompt = f"Case {case}: what is the capital of France?"
            for repeat in range(6):
                call = f"call-{case}-{repeat}"
                answers = set()
                for attempt in (1, 2):
                    headers = _headers(
                        expected, **{"x-harness-call-id": call, "x-harness-attempt": str(attempt)}
                    )
                    answers.add(_text(_ask(client, COIN, prompt, headers)))
                    outcomes.setdefault(case, set()).add(sim.requests()[-1]["quality_pass"])
                assert len(answers) == 1  # a retry is answered like its first attempt
    assert any(len(seen) == 2 for seen in outcomes.values())  # repeats of a case are new draws


# -- the judge -------------------------------------------------------------------------------------


def test_judge_verdicts_parse_and_score_the_reference_high_and_unrelated_answers_low(sim: SimProc) -> None:
    with _client(sim) as client:
        good = _judge(
            client,
            "Explains Rayleigh scattering.",
            SKY,
            "Air molecules scatter short blue wavelengths of sunlight more than red ones, so the sky looks blue.",
        )
        bad = _judge(
            client, "Explains Rayleigh scattering.", SKY, "It depends on details that aren't given here."
        )
        rubric_only = _judge(
            client, "Mentions chlorophyll and sunlight.", None, "Chlorophyll captures sunlight."
        )
        empty = _judge(client, "Mentions chlorophyll and sunlight.", None, "")
    for verdict in (good, bad, rubric_only, empty):
        assert set(verdict) == {"score", "reason"} and 0 <= verdict["score"] <= 1
        assert isinstance(verdict["reason"], str) and verdict["reason"].count(".") == 1
    assert good["score"] >= 0.85 and rubric_only["score"] >= 0.85
    assert bad["score"] <= 0.2 and empty["score"] <= 0.1
    truth = sim.requests()
    assert [r["judge_score"] for r in truth] == [
        good["score"],
        bad["score"],
        rubric_only["score"],
        empty["score"],
    ]
    assert all(r["expected_kind"] is None and r["quality_pass"] is None for r in truth)


def _strict(text: str) -> float | None:
    """The harness's strict verdict parser: a JSON object with a numeric score, else None."""
    try:
        verdict = json.loads(text)
    except ValueError:
        return None
    score = verdict.get("score") if isinstance(verdict, dict) else None
    return float(score) if isinstance(score, int | float) and not isinstance(score, bool) else None


def _judge_with_reask(client: anthropic.Anthropic, answer: str) -> tuple[str, str]:
    turn = {"role": "user", "content": f"<rubric>Names the capital.</rubric>\n<answer>{answer}</answer>"}
    first = _text(
        client.messages.create(
            model=JUDGE, max_tokens=200, messages=[turn], extra_headers={"x-harness-judge": "1"}
        )
    )
    again = [
        turn,
        {"role": "assistant", "content": first or "?"},
        {"role": "user", "content": 'Reply with only a JSON object {"score": number, "reason": string}.'},
    ]
    second = _text(
        client.messages.create(
            model=JUDGE, max_tokens=200, messages=again, extra_headers={"x-harness-judge": "1"}
        )
    )
    return first, second


def test_judge_malformed_fault_spoils_verdicts_and_a_reask_repairs_them_unless_the_rate_is_one(
    sim: SimProc,
) -> None:
    with _client(sim) as client:
        sim.set_faults({"judge_malformed": 1.0})
        for i in range(6):
            first, second = _judge_with_reask(client, f"The capital is Paris ({i}).")
            assert _strict(first) is None and _strict(second) is None
        assert all(r["judge_malformed"] is True and r["status"] == 200 for r in sim.requests())
        sim.set_faults({"judge_malformed": 0.5})
        firsts = []
        for i in range(30):
            first, second = _judge_with_reask(client, f"Paris, I believe ({i}).")
            firsts.append(_strict(first))
            assert _strict(second) is not None  # a re-ask gets a well-formed verdict
        assert 0 < firsts.count(None) < len(firsts)
        sim.set_faults({})
        assert _strict(_judge_with_reask(client, "Paris.")[0]) is not None


# -- without the headers, and with headers the simulator cannot use ------------------------------


def test_without_the_header_the_answer_is_todays_filler(sim: SimProc, profile: Path) -> None:
    coin = load_profiles(profile).resolve(COIN)
    assert coin is not None
    body = {
        "model": COIN,
        "max_tokens": 120,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
    }
    filler = make_answer(
        seed=int(SEED),
        model=coin.id,
        digest=content_digest(body),
        max_tokens=120,
        verbosity=coin.verbosity,
        verbosity_sigma=coin.verbosity_sigma,
        answer_tokens_max=coin.answer_tokens_max,
    )
    with _client(sim) as client:
        plain = client.messages.create(**body)
        streamed = _ask(client, COIN, "What is the capital of France?", {}, {"max_tokens": 120}, stream=True)
        unknown = client.messages.create(**body, extra_headers=_headers({"similarity": {"min": 0.8}}))
        tags_only = client.messages.create(**body, extra_headers={"x-harness-tags": "hard"})
        with pytest.raises(anthropic.BadRequestError, match="x-harness-expected"):
            client.messages.create(**body, extra_headers={"x-harness-expected": "not base64!"})
        with pytest.raises(anthropic.BadRequestError, match=r"x-harness-expected\.number"):
            client.messages.create(**body, extra_headers=_headers({"number": {"value": "3500"}}))
    for message in (plain, streamed, unknown, tags_only):
        assert _text(message) == filler.text and message.stop_reason == filler.stop_reason
    truth = sim.requests()
    assert [r["expected_kind"] for r in truth] == [None, None, "similarity", None, None, None]
    assert all(r["quality_pass"] is None and r["judge_score"] is None for r in truth)
    assert [r["status"] for r in truth][-2:] == [400, 400]


def test_a_passing_answer_cut_by_max_tokens_fails_and_says_so(sim: SimProc) -> None:
    expected = {"contains": "Paris"}
    with _client(sim) as client:
        for i in range(4):
            message = _ask(
                client, "claude-opus-4-8", f"Capital of France? ({i})", _headers(expected), {"max_tokens": 2}
            )
            truth = sim.requests()[-1]
            assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 2
            assert truth["quality_pass"] is False and "paris" not in _text(message).lower()
