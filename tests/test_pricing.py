"""pricing.py: the fast path equals genai-prices' `calc_price`, overrides, errors, and the cost function's shape."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from genai_prices import Usage, calc_price
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.errors import ConfigError, PricingError
from harness.pricing import Costs, PriceTable

AT = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
# Tiered (Sonnet 4.5 >200k, Haiku 5.5 >100k), odd cache-read ratios (Fable 5.1, Opus 5.5),
# no web-search price (Claude 3 Haiku) and no cache prices at all (Claude 2).
MODELS = [
    "claude-sonnet-4-5",
    "claude-haiku-5-5",
    "claude-sonnet-4-6",
    "claude-opus-4-7",
    "claude-haiku-4-5",
    "claude-fable-5-1",
    "claude-opus-5-5",
    "claude-3-haiku",
    "claude-2",
    "claude-sonnet-4-5-20250929",
]
FLAT = [m for m in MODELS if m not in ("claude-sonnet-4-5", "claude-haiku-5-5", "claude-sonnet-4-5-20250929")]
TABLE = PriceTable.resolve(MODELS, at=AT)


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15)


@st.composite
def usages(
    draw: st.DrawFn, models: list[str] = MODELS, big: bool = True
) -> tuple[str, int, int, int, int, int, int]:
    model = draw(st.sampled_from(models))
    top = 300_000 if big else 15_000  # small: two summed stay under 100k
    uncached = draw(st.integers(0, top))
    cache_write = draw(st.integers(0, top // 3))
    cache_1h = draw(st.integers(0, cache_write))
    cache_read = draw(st.integers(0, top))
    output = draw(st.integers(0, 64_000))
    searches = draw(st.integers(0, 5))
    return model, uncached, output, cache_write, cache_read, cache_1h, searches


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(usages())
def test_fast_path_equals_calc_price(u: tuple[str, int, int, int, int, int, int]) -> None:
    model, uncached, output, cache_write, cache_read, cache_1h, searches = u
    fast = TABLE.cost(model, uncached, output, cache_write, cache_read, cache_1h, searches)
    # genai-prices' input_tokens is the *total* input; every priced key is given explicitly.
    usage = Usage(
        input_tokens=uncached + cache_write + cache_read,
        output_tokens=output,
        cache_write_tokens=cache_write,
        cache_write_5m_tokens=cache_write - cache_1h,
        cache_write_1h_tokens=cache_1h,
        cache_read_tokens=cache_read,
        web_searches=searches,
    )
    ref = calc_price(usage, model, provider_id="anthropic", genai_request_timestamp=AT)
    assert _close(fast.input_usd + fast.cache_usd, float(ref.input_price))
    assert _close(fast.output_usd, float(ref.output_price))
    assert _close(fast.total_usd, float(ref.total_price))


@pytest.mark.parametrize(
    ("model", "usage", "input_plus_cache", "total"),
    [
        # building-blocks §1.2, Sonnet 4.6: 1,000 uncached + 2,000 5m write + 9,000 read + 500 out.
        ("claude-sonnet-4-6", (1000, 500, 2000, 9000, 0), 0.0132, 0.0207),
        # 1,000 uncached + 2,000 written with a 1 h TTL.
        ("claude-sonnet-4-6", (1000, 0, 2000, 0, 2000), 0.0150, 0.0150),
        # 1,000 written at 5 m + 2,000 at 1 h.
        ("claude-sonnet-4-6", (0, 0, 3000, 0, 2000), 0.01575, 0.01575),
        # §1.2: Opus 4.7, 10 in, 100 cache read, 20 out (the SDK-object pitfall would give $0.00055).
        ("claude-opus-4-7", (10, 20, 0, 100, 0), 0.0001, 0.0006),
        # §1.3 tiers: the cliff at 200k (Sonnet 4.5) and 100k (Haiku 5.5) counts total input.
        ("claude-sonnet-4-5", (200_000, 1000, 0, 0, 0), 0.6, 0.615),
        ("claude-sonnet-4-5", (200_001, 1000, 0, 0, 0), 1.200006, 1.222506),
        ("claude-sonnet-4-5", (50_000, 0, 0, 160_000, 0), 0.396, 0.396),
        ("claude-haiku-5-5", (100_000, 1000, 0, 0, 0), 0.01, 0.0105),
        ("claude-haiku-5-5", (100_001, 1000, 0, 0, 0), 0.0500005, 0.0525005),
    ],
)
def test_verified_figures(model: str, usage: tuple[int, ...], input_plus_cache: float, total: float) -> None:
    costs = TABLE.cost(model, *usage)
    assert _close(costs.input_usd + costs.cache_usd, input_plus_cache)
    assert _close(costs.total_usd, total)
    assert _close(costs.input_usd + costs.output_usd + costs.cache_usd, costs.total_usd)


def test_cost_columns_split_uncached_input_cache_and_output() -> None:
    c = TABLE.cost("claude-sonnet-4-6", 1000, 500, 2000, 9000)
    assert c == Costs(
        input_usd=c.input_usd, output_usd=c.output_usd, cache_usd=c.cache_usd, total_usd=c.total_usd
    )
    assert _close(c.input_usd, 0.003)  # 1,000 × $3/MTok: uncached only
    assert _close(c.cache_usd, 0.0075 + 0.0027)  # 2,000 × 3.75 + 9,000 × 0.3
    assert _close(c.output_usd, 0.0075)


def test_dated_ids_and_historic_prices() -> None:
    assert TABLE.source()["models"]["claude-sonnet-4-5-20250929"]["matched_id"] == "claude-sonnet-4-5"
    # Opus 4.6 was tiered above 200k until 2026-03-13 (§1.5): 300k input costs $3.00 then, $1.50 now.
    old = PriceTable.resolve(["claude-opus-4-6"], at=datetime(2026, 3, 1, tzinfo=UTC))
    new = PriceTable.resolve(["claude-opus-4-6"], at=AT)
    assert _close(old.cost("claude-opus-4-6", 300_000, 0).total_usd, 3.0)
    assert _close(new.cost("claude-opus-4-6", 300_000, 0).total_usd, 1.5)


def test_unknown_model_without_override_is_refused() -> None:
    with pytest.raises(PricingError) as info:
        PriceTable.resolve(["claude-sonnet-4-6", "claude-nonesuch-9"], at=AT)
    assert isinstance(info.value, ConfigError)
    assert info.value.option == "prices"
    assert (
        info.value.message == "no price for model claude-nonesuch-9; add it to the profile's [prices] table"
    )
    assert info.value.exit_code == 2


def test_override_prices_an_unknown_model_with_default_cache_rates() -> None:
    table = PriceTable.resolve(["sim-model"], {"sim-model": {"input": 2e-6, "output": 1e-5}}, at=AT)
    c = table.cost("sim-model", 1000, 100, 400, 1000, 100)
    assert _close(c.input_usd, 0.002)
    assert _close(c.output_usd, 0.001)
    # 300 × 1.25 × input + 100 × 2 × input + 1,000 × 0.1 × input.
    assert _close(c.cache_usd, 300 * 2.5e-6 + 100 * 4e-6 + 1000 * 2e-7)
    info = table.source()["models"]["sim-model"]
    assert info["source"] == "override"
    assert info["matched_id"] is None
    assert _close(info["input_mtok"], 2.0)
    assert _close(info["cache_write_mtok"], 2.5)


def test_override_beats_genai_prices_and_explicit_cache_rates_are_used() -> None:
    over = {"input": 1e-6, "output": 2e-6, "cache_write": 3e-6, "cache_write_1h": 4e-6, "cache_read": 5e-7}
    table = PriceTable.resolve(["claude-sonnet-4-6"], {"claude-sonnet-4-6": over}, at=AT)
    c = table.cost("claude-sonnet-4-6", 1_000_000, 1_000_000, 1_000_000, 1_000_000, 500_000)
    assert _close(c.input_usd, 1.0)
    assert _close(c.output_usd, 2.0)
    assert _close(c.cache_usd, 0.5 * 3 + 0.5 * 4 + 0.5)
    assert table.source()["models"]["claude-sonnet-4-6"]["source"] == "override"


@pytest.mark.parametrize(
    ("overrides", "option"),
    [
        ({"m": {"output": 1e-6}}, "prices.m.input"),
        ({"m": {"input": 1e-6}}, "prices.m.output"),
        ({"m": {"input": 1e-6, "output": "cheap"}}, "prices.m.output"),
        ({"m": {"input": -1e-6, "output": 1e-6}}, "prices.m.input"),
        ({"m": {"input": True, "output": 1e-6}}, "prices.m.input"),
        ({"m": {"input": 3.0, "output": 15.0}}, "prices.m.input"),  # per-MTok slip
        ({"m": {"input": 1e-6, "output": 1e-6, "cache_writes": 1e-6}}, "prices.m.cache_writes"),
        ({"m": 3e-6}, "prices.m"),
    ],
)
def test_bad_override_names_the_key(overrides: dict, option: str) -> None:
    with pytest.raises(PricingError) as info:
        PriceTable.resolve(["m"], overrides, at=AT)
    assert info.value.option == option


def test_batch_price_context_halves_or_refuses() -> None:
    batch = {"processing": "batch"}
    table = PriceTable.resolve(["claude-opus-4-8"], at=AT, price_context=batch)
    assert _close(table.cost("claude-opus-4-8", 1_000_000, 1_000_000).total_usd, 15.0)
    assert table.source()["models"]["claude-opus-4-8"]["price_context"] == batch
    with pytest.raises(PricingError, match="claude-sonnet-4-0"):
        PriceTable.resolve(["claude-sonnet-4-0"], at=AT, price_context=batch)


def test_source_and_worst_case() -> None:
    src = TABLE.source()
    assert src["library"] == "genai-prices"
    assert src["version"] == "0.2.3"
    assert src["auto_update_timestamp"] is None
    assert src["resolved_at"] == AT.isoformat()
    assert set(src["models"]) == set(MODELS)
    assert src["models"]["claude-sonnet-4-5"]["tiers"][0]["above_input_tokens"] == 200_000
    assert _close(TABLE.worst_case_usd("claude-sonnet-4-6", 1000, 4096), 0.003 + 4096 * 15e-6)
    with pytest.raises(PricingError):
        TABLE.cost("claude-not-resolved", 1, 1)


@settings(max_examples=300, deadline=None)
@given(usages(FLAT), usages(FLAT))
def test_cost_is_additive_on_flat_prices(a: tuple, b: tuple) -> None:
    model = a[0]
    ca, cb = TABLE.cost(model, *a[1:]), TABLE.cost(model, *b[1:])
    cab = TABLE.cost(model, *(x + y for x, y in zip(a[1:], b[1:], strict=True)))
    for field in ("input_usd", "output_usd", "cache_usd", "total_usd"):
        assert _close(getattr(cab, field), getattr(ca, field) + getattr(cb, field))


@settings(max_examples=300, deadline=None)
@given(usages(["claude-sonnet-4-5", "claude-haiku-5-5"], big=False), usages(big=False))
def test_cost_is_additive_within_a_tier(a: tuple, b: tuple) -> None:
    # Below the cliff (total input ≤ 100k for both and their sum) tiered models add up too.
    model = a[0]
    ca, cb = TABLE.cost(model, *a[1:]), TABLE.cost(model, *b[1:])
    cab = TABLE.cost(model, *(x + y for x, y in zip(a[1:], b[1:], strict=True)))
    assert _close(cab.total_usd, ca.total_usd + cb.total_usd)


@settings(max_examples=400, deadline=None)
@given(usages(), st.integers(0, 5), st.integers(1, 150_000))
def test_cost_is_monotone_in_every_usage_field(u: tuple, which: int, extra: int) -> None:
    model, uncached, output, cw, cr, c1h, searches = u
    base = TABLE.cost(model, uncached, output, cw, cr, c1h, searches)
    fields = [uncached, output, cw, cr, c1h, searches]
    fields[which] += extra
    if which == 4:  # a 1 h write is also a cache write
        fields[2] += extra
    more = TABLE.cost(model, *fields)
    assert more.total_usd >= base.total_usd
    assert min(more.input_usd, more.output_usd, more.cache_usd) >= 0
    if which != 5:
        assert more.total_usd > base.total_usd or more.total_usd == 0


def test_cost_micro_benchmark(benchmark) -> None:
    # pytest-benchmark: run with --benchmark-enable to time it (target: a few µs, vs ~60–110 µs for calc_price).
    result = benchmark(TABLE.cost, "claude-sonnet-4-5", 150_000, 800, 20_000, 40_000, 5_000)
    assert isinstance(result, Costs)
    assert result.total_usd > 1.0  # 210k total input: tier prices
