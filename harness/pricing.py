"""Usage → dollars: resolve every model's prices once per run, then price each call with plain arithmetic.

genai-prices is the source (its bundled snapshot, never a network refresh); a
profile's `[prices]` table overrides it per model, in dollars per token. The
table is built before the first call, so a model with no price stops the run
there. `cost()` is on the engine's hot path: a few float multiplications from
pre-resolved per-token rates, because `genai_prices.calc_price` costs ~60–110 µs
a call (building-blocks §1.8). A test keeps the two equal.

Anthropic's `input_tokens` excludes cache tokens; genai-prices' includes them.
Cache writes are priced by TTL at genai-prices' own rates (`cache_write_mtok` for
five-minute writes, 1.25× input; `cache_write_1h_mtok` for one-hour writes, 2× input);
billed server-tool counts (web searches, `harness.usage.SERVER_TOOL_COUNTS`) at its
per-request price.
Here every argument uses Anthropic's meaning, and long-context tiers are a cliff
on the *total* input (uncached + cache write + cache read): above a tier's start,
every unit of the call is billed at the tier's price.

Batch mode resolves a second table with genai-prices' batch variant (`price_context`
`{"processing": "batch"}`): every token at its batch price, cache writes and reads at their
own batch rates, so the batch discount stacks with the cache multipliers as Anthropic bills
them. A `[prices]` override is a standard price; in a batch table it is billed at
Anthropic's documented batch share of it (`BATCH_SHARE`, the one place that is assumed).

This module must not guess a price, call the network, or call `calc_price` per call.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from harness.errors import PricingError

__all__ = ["BATCH_CONTEXT", "BATCH_SHARE", "Costs", "PriceTable"]

# genai-prices' price context of the Message Batches API, and its documented share of a standard
# price (50 % of every unit), used only for a model whose price is a profile override.
BATCH_CONTEXT: Mapping[str, str] = {"processing": "batch"}
BATCH_SHARE = 0.5

# Rate slots of one price band, dollars per token (web search: per search).
_IN, _CW5M, _CW1H, _CR, _OUT, _WEB = range(6)
_GENAI_KEYS = (
    "input_mtok",
    "cache_write_mtok",
    "cache_write_1h_mtok",
    "cache_read_mtok",
    "output_mtok",
    "web_searches_kcount",
)
_GENAI_PER = (1e6, 1e6, 1e6, 1e6, 1e6, 1e3)

# `[prices]` keys, dollars per token. The cache defaults are Anthropic's documented multiples of
# the input price (5-minute writes 1.25×, 1-hour writes 2×, reads 0.1×): the one place they are
# assumed; genai-prices' own cache rates are used for every model it prices.
_OVERRIDE_REQUIRED = ("input", "output")
_OVERRIDE_DEFAULTS = {"cache_write": 1.25, "cache_write_1h": 2.0, "cache_read": 0.1}
_OVERRIDE_KEYS = (*_OVERRIDE_REQUIRED, *_OVERRIDE_DEFAULTS, "web_search")
# $1,000 per million tokens: far above any model's price, so a larger number is a per-MTok slip.
_MAX_PER_TOKEN = 1e-3


@dataclass(frozen=True, slots=True)
class Costs:
    """One call's cost; `input_usd` is uncached input only, `cache_usd` cache writes + reads,
    `server_tool_usd` billed server-tool requests (web searches); `total_usd` is their sum."""

    input_usd: float
    output_usd: float
    cache_usd: float
    total_usd: float
    server_tool_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class _Rates:
    """A model's per-token rates: `bands[i]` applies when total input exceeds `starts[i-1]`."""

    starts: tuple[int, ...]
    bands: tuple[tuple[float, ...], ...]
    info: dict[str, Any]


class PriceTable:
    """Per-model prices resolved once; `cost()` is pure float arithmetic."""

    def __init__(
        self,
        rates: Mapping[str, _Rates],
        resolved_at: datetime,
        version: str,
        auto_update: Any,
        data_timestamp: datetime | None = None,
        context: Mapping[str, str] | None = None,
    ) -> None:
        self._rates = dict(rates)
        self._context = dict(context or {})
        self._resolved_at = resolved_at
        self._version = version
        self._auto_update = auto_update
        self._data_timestamp = data_timestamp
        self.version_label = self._label()  # one constant string per run: every row carries it

    @classmethod
    def resolve(
        cls,
        models: Iterable[str],
        overrides: Mapping[str, Mapping[str, float]] | None = None,
        at: datetime | None = None,
        *,
        price_context: Mapping[str, str] | None = None,
    ) -> PriceTable:
        """Resolve each model once: an override if the profile has one, else genai-prices at `at`.

        `price_context` (e.g. ``{"processing": "batch"}``) selects a genai-prices variant;
        a model without that variant is an error rather than a silent standard price.
        """
        import genai_prices  # deferred: ~0.25 s to import, not needed by `--help`
        from genai_prices import data_snapshot

        at = datetime.now(UTC) if at is None else at
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        checked = _check_overrides(overrides or {})
        snapshot = data_snapshot.get_snapshot()
        rates: dict[str, _Rates] = {}
        for model in models:
            if model in rates:
                continue
            if model in checked:
                rates[model] = checked[model]
                if price_context and dict(price_context) == dict(BATCH_CONTEXT):
                    rates[model] = _scaled(checked[model], BATCH_SHARE, price_context)
                continue
            rates[model] = _from_genai(snapshot, model, at, price_context)
        auto = snapshot.timestamp.isoformat() if snapshot.from_auto_update else None
        fetched = snapshot.timestamp if snapshot.from_auto_update else None  # else: the package's own data
        return cls(rates, at, genai_prices.__version__, auto, fetched, price_context)

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self._rates)

    def cache_break_even(self, model: str) -> dict[str, int | None]:
        """Reuses within the TTL a cached prefix needs to pay for its write, per TTL ("5m", "1h").

        A write costs (write − input) more per token than sending the prefix plainly; each read then
        saves (input − read). None when reads save nothing at this model's prices.
        """
        band = self._rates[model].bands[0]
        saving = band[_IN] - band[_CR]
        out: dict[str, int | None] = {}
        for ttl, slot in (("5m", _CW5M), ("1h", _CW1H)):
            extra = band[slot] - band[_IN]
            out[ttl] = None if saving <= 0 else max(0, math.ceil(extra / saving - 1e-12))
        return out

    def cost(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cache_creation_input_tokens: int = 0,
        cache_read_input_tokens: int = 0,
        cache_creation_1h_input_tokens: int = 0,
        web_searches: int = 0,
    ) -> Costs:
        """Price one call from Anthropic's usage fields (`input_tokens` excludes cache tokens).

        `cache_creation_input_tokens` counts writes of every TTL; `cache_creation_1h_input_tokens`
        is the part written with a one-hour TTL (the rest is priced as five-minute writes).
        """
        try:
            rates = self._rates[model]
        except KeyError:
            raise PricingError("prices", f"no price resolved for model {model}") from None
        band = rates.bands[0]
        if rates.starts:
            total_input = input_tokens + cache_creation_input_tokens + cache_read_input_tokens
            i = 0
            for start in rates.starts:
                if total_input > start:
                    i += 1
                else:
                    break
            band = rates.bands[i]
        input_usd = input_tokens * band[_IN]
        cache_usd = (
            (cache_creation_input_tokens - cache_creation_1h_input_tokens) * band[_CW5M]
            + cache_creation_1h_input_tokens * band[_CW1H]
            + cache_read_input_tokens * band[_CR]
        )
        output_usd = output_tokens * band[_OUT]
        tools_usd = web_searches * band[_WEB] if web_searches else 0.0
        return Costs(
            input_usd, output_usd, cache_usd, input_usd + cache_usd + output_usd + tools_usd, tools_usd
        )

    def worst_case_usd(self, model: str, input_tokens: int, max_tokens: int) -> float:
        """What a call may cost at most if it writes `max_tokens`: the budget guard's reservation."""
        return self.cost(model, input_tokens, max_tokens).total_usd

    def _label(self) -> str:
        """`genai-prices V (bundled data; effective E)`, plus `+ [prices] overrides` when the profile set some.

        The price data is the one bundled with genai-prices version V (so V names it), or, when
        genai-prices fetched newer data, `data fetched D`; E is the date the prices were looked
        up for (a price that changes over time is taken as it was on E).
        """
        when = self._resolved_at.date().isoformat()
        data = (
            f"data fetched {self._data_timestamp.date().isoformat()}"
            if self._data_timestamp
            else "bundled data"
        )
        label = f"genai-prices {self._version} ({data}; effective {when})"
        if self._context:  # e.g. the batch price: the same data, another price
            label += " " + ", ".join(f"{k}={v}" for k, v in sorted(self._context.items()))
        if any(r.info.get("source") == "override" for r in self._rates.values()):
            label += " + [prices] overrides"
        return label

    def source(self) -> dict[str, Any]:
        """The manifest's price source: library, version, date of the prices, and every model's rates."""
        return {
            "library": "genai-prices",
            "version": self._version,
            "label": self.version_label,
            "data_timestamp": self._data_timestamp.isoformat() if self._data_timestamp else None,
            "auto_update_timestamp": self._auto_update,
            "resolved_at": self._resolved_at.isoformat(),
            "models": {model: dict(r.info) for model, r in self._rates.items()},
        }


def _check_overrides(overrides: Mapping[str, Mapping[str, float]]) -> dict[str, _Rates]:
    """Validate the whole `[prices]` table (typos in unused models too) and turn it into rates."""
    out: dict[str, _Rates] = {}
    if not isinstance(overrides, Mapping):
        raise PricingError("prices", "must be a table of model → {input, output} dollars per token")
    for model, entry in overrides.items():
        where = f"prices.{model}"
        if not isinstance(entry, Mapping):
            raise PricingError(where, "must be a table with `input` and `output` in dollars per token")
        for key in entry:
            if key not in _OVERRIDE_KEYS:
                raise PricingError(
                    f"{where}.{key}", f"unknown key; expected one of {', '.join(_OVERRIDE_KEYS)}"
                )
        for key in _OVERRIDE_REQUIRED:
            if key not in entry:
                raise PricingError(f"{where}.{key}", "missing (dollars per token)")
        values = {key: _per_token(f"{where}.{key}", value) for key, value in entry.items()}
        inp, out_rate = values["input"], values["output"]
        cw5 = values.get("cache_write", inp * _OVERRIDE_DEFAULTS["cache_write"])
        cw1h = values.get("cache_write_1h", inp * _OVERRIDE_DEFAULTS["cache_write_1h"])
        cr = values.get("cache_read", inp * _OVERRIDE_DEFAULTS["cache_read"])
        web = values.get("web_search", 0.0)
        band = (inp, cw5, cw1h, cr, out_rate, web)
        info: dict[str, Any] = {"source": "override", "matched_id": None, **_band_info(band)}
        out[model] = _Rates((), (band,), info)
    return out


def _scaled(rates: _Rates, share: float, context: Mapping[str, str]) -> _Rates:
    """An override's rates times `share` (its batch price), said so in the manifest's price source."""
    bands = tuple(tuple(rate * share for rate in band) for band in rates.bands)
    info = {**rates.info, **_band_info(bands[0]), "price_context": dict(context), "share_of_override": share}
    return _Rates(rates.starts, bands, info)


def _per_token(option: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise PricingError(option, f"must be a number of dollars per token, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise PricingError(
            option, f"must be a finite, non-negative number of dollars per token, got {value!r}"
        )
    if number > _MAX_PER_TOKEN:
        raise PricingError(
            option,
            f"{value!r} dollars per token looks like a price per million tokens; divide it by 1,000,000",
        )
    return number


def _from_genai(snapshot: Any, model: str, at: datetime, price_context: Mapping[str, str] | None) -> _Rates:
    """Look `model` up in genai-prices' snapshot and flatten its prices into per-token float bands."""
    from genai_prices.types import TieredPrices

    try:
        _provider, info = snapshot.find_provider_model(model, None, "anthropic", None)
    except LookupError:
        raise PricingError(
            "prices", f"no price for model {model}; add it to the profile's [prices] table"
        ) from None
    ctx = dict(price_context) if price_context else None
    if ctx:
        variants = [
            v
            for v in info.price_variants or ()
            if all(ctx.get(k) == val for k, val in v.when.items())
            and (v.constraint is None or v.constraint.active(at))
        ]
        if not variants:
            raise PricingError(
                "prices",
                f"genai-prices has no {ctx} price for model {model} on {at.date()}; add it to the profile's [prices] table",
            )
    price = info.get_prices(at, ctx)
    raw = [getattr(price, key, None) for key in _GENAI_KEYS]
    if raw[_IN] is None or raw[_OUT] is None:
        raise PricingError("prices", f"no price for model {model}; add it to the profile's [prices] table")
    starts = sorted({t.start for p in raw if isinstance(p, TieredPrices) for t in p.tiers})

    def at_total(p: Any, total_input: int) -> Decimal | None:
        """The unit price in force for a call with `total_input` tokens (genai-prices' cliff rule)."""
        if p is None or not isinstance(p, TieredPrices):
            return p
        chosen = p.base
        for tier in p.tiers:
            if total_input > tier.start:
                chosen = tier.price
        return chosen

    bands: list[tuple[float, ...]] = []
    for total in [0, *(s + 1 for s in starts)]:
        d = [at_total(p, total) for p in raw]
        per = [None if v is None else float(v) / div for v, div in zip(d, _GENAI_PER, strict=True)]
        # A missing unit price is billed as its parent unit, as genai-prices' hierarchy does.
        p_in, p_cw5, p_cw1h, p_cr, p_out, p_web = per
        inp = p_in or 0.0
        cw5 = inp if p_cw5 is None else p_cw5
        cw1h = cw5 if p_cw1h is None else p_cw1h
        cr = inp if p_cr is None else p_cr
        bands.append((inp, cw5, cw1h, cr, p_out or 0.0, p_web or 0.0))
    info_out: dict[str, Any] = {
        "source": "genai-prices",
        "matched_id": info.id,
        "name": info.name,
        **_band_info(bands[0]),
    }
    if price_context:
        info_out["price_context"] = dict(price_context)
    if starts:
        info_out["tiers"] = [
            {"above_input_tokens": s, **_band_info(b)} for s, b in zip(starts, bands[1:], strict=True)
        ]
    return _Rates(tuple(starts), tuple(bands), info_out)


def _band_info(band: tuple[float, ...]) -> dict[str, float]:
    """Rates per million tokens (web search: per thousand), as the manifest shows them."""
    return {
        "input_mtok": round(band[_IN] * 1e6, 9),
        "output_mtok": round(band[_OUT] * 1e6, 9),
        "cache_write_mtok": round(band[_CW5M] * 1e6, 9),
        "cache_write_1h_mtok": round(band[_CW1H] * 1e6, 9),
        "cache_read_mtok": round(band[_CR] * 1e6, 9),
        "web_searches_kcount": round(band[_WEB] * 1e3, 9),
    }
