"""Error statuses, rate limits, faults and outages, as the unchanged SDK sees them."""

from __future__ import annotations

import itertools
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest

from harness.errors import TargetError
from tests.simproc import SimProc, start_simulator

KEY = "sk-test-not-a-real-key"
PROMPT = [{"role": "user", "content": "hello"}]


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], dict]:
    request = urllib.request.Request(url + "/v1/messages", data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


GOOD_HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01", "content-type": "application/json"}
GOOD_BODY = {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": PROMPT}


@pytest.fixture(scope="module")
def fast_sim() -> Iterator[SimProc]:
    sim = start_simulator("--time-scale", "0", "--seed", "3")
    yield sim
    sim.stop()


@pytest.fixture
def fast(fast_sim: SimProc) -> SimProc:
    fast_sim.reset()
    return fast_sim


@pytest.mark.parametrize(
    ("headers", "body", "status", "kind", "message_part"),
    [
        ({"anthropic-version": "2023-06-01"}, GOOD_BODY, 401, "authentication_error", "x-api-key"),
        ({"x-api-key": KEY}, GOOD_BODY, 400, "invalid_request_error", "anthropic-version"),
        (GOOD_HEADERS, {**GOOD_BODY, "max_tokens": "8"}, 400, "invalid_request_error", "max_tokens:"),
        (GOOD_HEADERS, {"model": "claude-haiku-4-5", "messages": PROMPT}, 400, "invalid_request_error", "max_tokens: Field required"),
        (GOOD_HEADERS, {**GOOD_BODY, "messages": [{"role": "robot", "content": "x"}]}, 400, "invalid_request_error", "messages.0.role"),
        (GOOD_HEADERS, {**GOOD_BODY, "bogus": 1}, 400, "invalid_request_error", "bogus: Extra inputs are not permitted"),
        (GOOD_HEADERS, {**GOOD_BODY, "model": "claude-imaginary-9"}, 404, "not_found_error", "model: claude-imaginary-9"),
    ],
)  # fmt: skip
def test_error_envelope_status_and_request_id(
    fast: SimProc, headers, body, status, kind, message_part
) -> None:
    code, got_headers, payload = _post(fast.url, json.dumps(body).encode(), headers)
    assert code == status
    assert payload["type"] == "error" and payload["error"]["type"] == kind
    assert message_part in payload["error"]["message"]
    assert got_headers["request-id"].startswith("req_") and payload["request_id"] == got_headers["request-id"]
    assert fast.requests()[-1]["status"] == status


def test_bearer_auth_is_accepted_and_key_never_echoed(fast: SimProc) -> None:
    headers = {"Authorization": f"Bearer {KEY}", "anthropic-version": "2023-06-01"}
    code, got_headers, payload = _post(fast.url, json.dumps(GOOD_BODY).encode(), headers)
    assert code == 200 and payload["usage"]["output_tokens"] >= 1
    assert KEY not in json.dumps(payload) + json.dumps(got_headers) + json.dumps(fast.requests())


def test_sdk_exception_classes(fast: SimProc) -> None:
    with anthropic.Anthropic(api_key=KEY, base_url=fast.url, max_retries=0) as client:
        with pytest.raises(anthropic.NotFoundError):
            client.messages.create(model="claude-nope", max_tokens=5, messages=PROMPT)
        with pytest.raises(anthropic.BadRequestError) as bad:
            client.messages.create(model="claude-haiku-4-5", max_tokens=10**6, messages=PROMPT, stream=True)
        assert "max_tokens" in str(bad.value.api_message)
        with pytest.raises(anthropic.ContentTooLargeError):
            client.messages.create(
                model="claude-haiku-4-5",
                max_tokens=5,
                messages=[{"role": "user", "content": "x" * (33 * 1024 * 1024)}],
            )
        with pytest.raises(anthropic.AuthenticationError) as auth:
            client.messages.create(
                model="claude-haiku-4-5",
                max_tokens=5,
                messages=PROMPT,
                extra_headers={"Authorization": anthropic.omit},
            )
        assert auth.value.type == "authentication_error"


@pytest.mark.parametrize(
    ("fault", "exc_type", "status"),
    [
        ("rate_limit", anthropic.RateLimitError, 429),
        ("overloaded", anthropic.OverloadedError, 529),
        ("api_error", anthropic.InternalServerError, 500),
    ],
)
def test_injected_status_faults(fast: SimProc, fault: str, exc_type: type, status: int) -> None:
    fast.set_faults({fault: 1.0}, retry_after_s=2)
    with (
        anthropic.Anthropic(api_key=KEY, base_url=fast.url, max_retries=0) as client,
        pytest.raises(exc_type) as info,
    ):
        client.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=PROMPT)
    assert info.value.status_code == status
    assert info.value.response.headers["anthropic-ratelimit-requests-limit"] == "50000"
    [truth] = fast.requests()
    assert truth["fault"] == fault and truth["status"] == status
    if fault == "rate_limit":
        assert info.value.response.headers["retry-after"] == "2" and truth["retry_after"] == 2


def test_in_stream_faults_as_the_sdk_sees_them(fast: SimProc) -> None:
    with anthropic.Anthropic(api_key=KEY, base_url=fast.url, max_retries=0) as client:
        fast.set_faults({"midstream_error": 1.0})
        with (
            pytest.raises(anthropic.APIStatusError) as info,
            client.messages.stream(model="claude-haiku-4-5", max_tokens=200, messages=PROMPT) as stream,
        ):
            stream.get_final_message()
        assert info.value.status_code == 200 and info.value.type == "overloaded_error"

        fast.set_faults({"truncate": 1.0})
        with client.messages.stream(model="claude-haiku-4-5", max_tokens=200, messages=PROMPT) as stream:
            truncated = stream.get_final_message()
        assert truncated.stop_reason is None

        fast.set_faults({"drop": 1.0})
        with (
            pytest.raises(Exception) as dropped,
            client.messages.stream(model="claude-haiku-4-5", max_tokens=200, messages=PROMPT) as stream,
        ):
            stream.get_final_message()
        assert not isinstance(dropped.value, anthropic.APIStatusError)
        assert "RemoteProtocolError" in type(dropped.value).__name__ or "closed" in str(dropped.value).lower()

        fast.set_faults({"slow_first_byte": 1.0}, slow_first_byte_s=1.5)
        started = time.perf_counter()
        with pytest.raises(anthropic.APITimeoutError):
            client.with_options(timeout=0.3).messages.create(
                model="claude-haiku-4-5", max_tokens=5, messages=PROMPT
            )
        assert time.perf_counter() - started < 1.4
    truth = fast.requests()
    assert [t["fault"] for t in truth] == ["midstream_error", "truncate", "drop", "slow_first_byte"]
    assert all(t["stop_reason"] is None for t in truth[:3])
    assert all(1 <= t["fault_after_tokens"] == t["output_tokens"] for t in truth[:3])
    assert truth[3]["intended_ttft_s"] >= 1.5


def test_faults_appear_at_their_rates(fast: SimProc) -> None:
    fast.set_faults({"overloaded": 0.2, "api_error": 0.1})
    fast.set_faults({"rate_limit": 0.3}, model="claude-sonnet-4-6")
    n = 500
    body = json.dumps(GOOD_BODY).encode()
    sonnet = json.dumps({**GOOD_BODY, "model": "claude-sonnet-4-6"}).encode()
    for _ in range(n):
        _post(fast.url, body, GOOD_HEADERS)
    for _ in range(200):
        _post(fast.url, sonnet, GOOD_HEADERS)
    truth = fast.requests()
    haiku = [t for t in truth if t["model"] == "claude-haiku-4-5"]
    son = [t for t in truth if t["model"] == "claude-sonnet-4-6"]
    # Binomial tolerance: 4 standard deviations.
    for name, rate, rows in (("overloaded", 0.2, haiku), ("api_error", 0.1, haiku), ("rate_limit", 0.3, son)):
        count = sum(t["fault"] == name for t in rows)
        sd = (len(rows) * rate * (1 - rate)) ** 0.5
        assert abs(count - len(rows) * rate) < 4 * sd, (name, count)
    assert sum(t["fault"] == "overloaded" for t in son) > 0  # the global rates still apply to sonnet
    assert all(
        t["status"] == {"overloaded": 529, "api_error": 500, "rate_limit": 429, None: 200}[t["fault"]]
        for t in truth
    )


def test_faults_from_the_command_line(tmp_path: Path) -> None:
    with start_simulator(
        "--time-scale", "0", "--faults", "claude-opus-4-8:overloaded=1,retry_after_s=3"
    ) as sim:
        body = {**GOOD_BODY, "model": "claude-opus-4-8"}
        assert _post(sim.url, json.dumps(body).encode(), GOOD_HEADERS)[0] == 529
        assert _post(sim.url, json.dumps(GOOD_BODY).encode(), GOOD_HEADERS)[0] == 200
    bad = start_simulator
    with pytest.raises(TargetError, match="unknown fault"):
        bad("--faults", "explode=0.5")


def test_rate_limit_headers_count_down_refill_and_429(tmp_path: Path) -> None:
    shipped = Path(__file__).resolve().parent.parent / "harness" / "simulator" / "profiles.toml"
    text = shipped.read_text().replace(
        '[models."claude-haiku-5-5"]',
        '[models."claude-haiku-5-5"]\nlimits = { rpm = 120, itpm = 100000, otpm = 15000 }',
    )
    profile = tmp_path / "limits.toml"
    profile.write_text(text)
    with start_simulator("--time-scale", "0", "--profile", str(profile)) as sim:
        with anthropic.Anthropic(api_key=KEY, base_url=sim.url, max_retries=0) as client:
            create = client.messages.with_raw_response.create
            remaining = []
            for _ in range(5):
                raw = create(model="claude-haiku-5-5", max_tokens=10, messages=PROMPT)
                remaining.append(int(raw.headers["anthropic-ratelimit-requests-remaining"]))
            assert raw.headers["anthropic-ratelimit-requests-limit"] == "120"
            assert raw.headers["anthropic-ratelimit-tokens-limit"] == "115000"
            assert raw.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
            assert all(b < a for a, b in itertools.pairwise(remaining)), remaining
            assert remaining[0] <= 119
            # Another key has its own buckets.
            with anthropic.Anthropic(api_key="sk-other", base_url=sim.url, max_retries=0) as other:
                fresh = other.messages.with_raw_response.create(
                    model="claude-haiku-5-5", max_tokens=10, messages=PROMPT
                )
                assert int(fresh.headers["anthropic-ratelimit-requests-remaining"]) == 119
            with pytest.raises(anthropic.RateLimitError) as info:
                for _ in range(200):
                    create(model="claude-haiku-5-5", max_tokens=10, messages=PROMPT)
            assert info.value.response.headers["retry-after"] == "1"
            assert "requests" in str(info.value.api_message)
            before = int(info.value.response.headers["anthropic-ratelimit-requests-remaining"])
            time.sleep(1.1)
            after = create(model="claude-haiku-5-5", max_tokens=10, messages=PROMPT)
            assert (
                int(after.headers["anthropic-ratelimit-requests-remaining"]) >= before
            )  # refilled ~2, took 1
            # Output tokens: max_tokens is reserved up front, so one above what is left is refused.
            with pytest.raises(anthropic.RateLimitError) as otpm:
                create(
                    model="claude-haiku-5-5", max_tokens=20000, messages=[{"role": "user", "content": "long"}]
                )
        truth = sim.requests()
    limited = [t for t in truth if t["status"] == 429]
    assert limited and all(t["fault"] is None and t["retry_after"] >= 1 for t in limited)
    assert "output tokens" in str(otpm.value.api_message)


def test_anthropic_outage_refuses_then_recovers(fast_sim: SimProc) -> None:
    with anthropic.Anthropic(api_key=KEY, base_url=fast_sim.url, max_retries=0) as client:
        client.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=PROMPT)
        fast_sim.outage("anthropic", "refuse", 1.0)
        time.sleep(0.2)
        with pytest.raises(anthropic.APIConnectionError):
            client.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=PROMPT)
        time.sleep(1.2)
        assert (
            client.messages.create(
                model="claude-haiku-4-5", max_tokens=5, messages=PROMPT
            ).usage.output_tokens
            >= 1
        )


def test_anthropic_outage_500(fast: SimProc) -> None:
    fast.outage("anthropic", "500", 0.5)
    with anthropic.Anthropic(api_key=KEY, base_url=fast.url, max_retries=0) as client:
        with pytest.raises(anthropic.InternalServerError):
            client.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=PROMPT)
        time.sleep(0.6)
        client.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=PROMPT)
    assert [t["status"] for t in fast.requests()] == [500, 200]


def test_client_hanging_up_mid_stream_is_survived(fast: SimProc) -> None:
    with start_simulator("--time-scale", "0.5") as sim:
        with anthropic.Anthropic(api_key=KEY, base_url=sim.url, max_retries=0) as client:
            for _ in range(3):
                with client.messages.stream(
                    model="claude-haiku-4-5", max_tokens=400, messages=PROMPT
                ) as stream:
                    next(iter(stream.text_stream))
            ok = client.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=PROMPT)
        assert ok.usage.output_tokens >= 1
        time.sleep(0.3)
        assert sim.proc.poll() is None
        assert sum(bool(t.get("client_closed")) for t in sim.requests()) >= 1
        assert "Traceback" not in sim.stderr_text()
