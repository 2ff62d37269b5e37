"""A row's usage, cost and cache columns from one attempt: one builder for the live and the batch engine.

Why a module of its own: both engines write the same 21 columns from an `Attempt`, and a
column read or priced one way by one engine and another way by the other would show two
figures for one thing (the batch engine's price table carries the batch discount itself).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.caching import cache_columns

if TYPE_CHECKING:
    from harness.client import Attempt
    from harness.pricing import PriceTable
    from harness.records import PlannedCall

__all__ = ["usage_cost_columns"]

# A call that never got an answer (cancelled before its first attempt ended): no tokens, no counts.
_NO_USAGE: dict[str, Any] = {
    "input_tokens": 0,
    "output_tokens": 0,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
    "cache_write_5m_input_tokens": 0,
    "cache_write_1h_input_tokens": 0,
    "thinking_tokens": None,
    "web_search_requests": None,
    "web_fetch_requests": None,
    "service_tier": None,
    "inference_geo": None,
}


def usage_cost_columns(prices: PriceTable, call: PlannedCall, a: Attempt | None) -> dict[str, Any]:
    """The usage, cost, price-version and cache columns of `call`'s row, `a` its last attempt."""
    if a is None:
        usage = _NO_USAGE
        costs = prices.cost(call.model, 0, 0)
    else:
        usage = {
            "input_tokens": a.input_tokens,
            "output_tokens": a.output_tokens,
            "cache_creation_input_tokens": a.cache_creation_input_tokens,
            "cache_read_input_tokens": a.cache_read_input_tokens,
            # harness.usage caps the one-hour part at the total: every other write is a 5-minute one.
            "cache_write_5m_input_tokens": a.cache_creation_input_tokens - a.cache_creation_1h_input_tokens,
            "cache_write_1h_input_tokens": a.cache_creation_1h_input_tokens,
            "thinking_tokens": a.thinking_tokens,
            "web_search_requests": a.web_search_requests,
            "web_fetch_requests": a.web_fetch_requests,
            "service_tier": a.service_tier,
            "inference_geo": a.inference_geo,
        }
        costs = prices.cost(
            call.model,
            a.input_tokens,
            a.output_tokens,
            a.cache_creation_input_tokens,
            a.cache_read_input_tokens,
            a.cache_creation_1h_input_tokens,
            web_searches=a.web_search_requests or 0,
        )
    return {
        **usage,
        "input_cost_usd": costs.input_usd,
        "output_cost_usd": costs.output_usd,
        "cache_cost_usd": costs.cache_usd,
        "server_tool_cost_usd": costs.server_tool_usd,
        "total_cost_usd": costs.total_usd,
        "price_version": prices.version_label,
        **cache_columns(prices, call, a, costs.total_usd),
    }
