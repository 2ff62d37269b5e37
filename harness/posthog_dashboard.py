"""`harness posthog dashboard`: PostHog's Claude tutorial dashboard, created (or brought up to date) in
the user's project through the insights and dashboards API, with the personal key.

Six insights over the harness's events (`--event`, default the tutorial's
`claude_message_completion`): the tutorial's three (total cost per model; average cost per user,
formula A/B of that sum over unique users; average response time per model) plus p95 time to
first token by model, error rate by model (A/B of failed over all calls, in %), and calls per
run. For `$ai_generation` they read the `$ai_*` properties (`$ai_total_cost_usd`, `$ai_model`,
`$ai_latency` and `$ai_time_to_first_token` in seconds, `$ai_is_error`, `$ai_session_id`),
which PostHog's own Anthropic wrapper sends too; for any other event the tutorial's names
(`total_cost_in_dollars`, `model`, `response_time_in_ms`, `ttft_ms`, `status`, `run_id`).

Idempotent: the dashboard is matched by its exact name (the first live one), and each insight by
its exact name among the insights already on that dashboard: a match is updated in place
(PATCH), anything missing is created on the dashboard. Running it twice gives one dashboard with
six insights; an insight of the same name elsewhere in the project is left alone.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from harness.posthog_api import PosthogApi

__all__ = ["DashboardResult", "default_name", "ensure_dashboard", "insight_specs"]
_DESCRIPTION = (
    "LLM cost, users, latency, time to first token, errors and calls per run, from the events "
    "claude-bench-harness sends (PostHog's Claude tutorial, extended). Managed by `harness posthog "
    "dashboard`: re-running it updates these insights in place."
)


@dataclass(frozen=True)
class _Names:
    cost: str
    model: str
    latency: str
    latency_unit: str
    ttft: str
    error: dict[str, Any]
    run: str


def _names(event: str) -> _Names:
    if event == "$ai_generation":
        return _Names(
            cost="$ai_total_cost_usd",
            model="$ai_model",
            latency="$ai_latency",
            latency_unit="s",
            ttft="$ai_time_to_first_token",
            error={"key": "$ai_is_error", "value": ["true"], "operator": "exact", "type": "event"},
            run="$ai_session_id",
        )
    return _Names(
        cost="total_cost_in_dollars",
        model="model",
        latency="response_time_in_ms",
        latency_unit="ms",
        ttft="ttft_ms",
        error={"key": "status", "value": ["error"], "operator": "exact", "type": "event"},
        run="run_id",
    )


def _series(
    event: str, math: str, prop: str | None = None, name: str | None = None, **extra: Any
) -> dict[str, Any]:
    node: dict[str, Any] = {"kind": "EventsNode", "event": event, "name": event, "math": math}
    if prop is not None:
        node["math_property"] = prop
    if name is not None:
        node["custom_name"] = name
    node.update(extra)
    return node


def _trends(
    series: list[dict[str, Any]],
    *,
    breakdown: str | None = None,
    formula: str | None = None,
    formula_name: str | None = None,
    display: str = "ActionsLineGraph",
) -> dict[str, Any]:
    source: dict[str, Any] = {
        "kind": "TrendsQuery",
        "series": series,
        "interval": "day",
        "dateRange": {"date_from": "-30d"},
        "trendsFilter": {"display": display},
    }
    if breakdown is not None:
        source["breakdownFilter"] = {"breakdown": breakdown, "breakdown_type": "event"}
    if formula is not None:
        node = {"formula": formula, **({"custom_name": formula_name} if formula_name else {})}
        source["trendsFilter"] |= {"formula": formula, "formulaNodes": [node]}
    return {"kind": "InsightVizNode", "source": source}


def insight_specs(event: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, description, query) of the six insights, for events named `event`."""
    n = _names(event)
    return [
        (
            "Total cost per model",
            f"Sum of {n.cost} (USD) by {n.model}.",
            _trends(
                [_series(event, "sum", n.cost, "Total cost (USD)")],
                breakdown=n.model,
                display="ActionsBarValue",
            ),
        ),
        (
            "Average cost per user",
            f"A / B: sum of {n.cost} over unique users (calls without a user: one anonymous user per run).",
            _trends(
                [
                    _series(event, "sum", n.cost, "Total cost (USD)"),
                    _series(event, "dau", None, "Unique users"),
                ],
                formula="A/B",
                formula_name="Cost per user (USD)",
            ),
        ),
        (
            "Average response time",
            f"Mean of {n.latency} ({n.latency_unit}) by {n.model}.",
            _trends(
                [_series(event, "avg", n.latency, f"Response time ({n.latency_unit})")], breakdown=n.model
            ),
        ),
        (
            "p95 time to first token by model",
            f"95th percentile of {n.ttft} ({n.latency_unit}; streamed calls) by {n.model}.",
            _trends([_series(event, "p95", n.ttft, f"TTFT p95 ({n.latency_unit})")], breakdown=n.model),
        ),
        (
            "Error rate by model",
            f"A / B × 100: calls with {n.error['key']} = {n.error['value'][0]} over all calls, by {n.model}.",
            _trends(
                [
                    _series(event, "total", None, "Failed calls", properties=[n.error]),
                    _series(event, "total", None, "All calls"),
                ],
                breakdown=n.model,
                formula="A / B * 100",
                formula_name="Error rate (%)",
            ),
        ),
        (
            "Calls per run",
            f"Count of {event} by {n.run}.",
            _trends([_series(event, "total", None, "Calls")], breakdown=n.run, display="ActionsBarValue"),
        ),
    ]


def default_name(event: str) -> str:
    """The dashboard's name unless one is given: one dashboard per event kind."""
    return f"Claude usage ({event})"


@dataclass
class DashboardResult:
    dashboard_id: int
    url: str
    created: bool
    insights: list[tuple[str, str]] = field(default_factory=list)  # (name, "created" | "updated")


def _all(api: PosthogApi, path: str, search: str) -> list[dict[str, Any]]:
    """Every item of a paginated list (`next` links followed)."""
    url: str | None = f"{api.base}/{path}/?{urllib.parse.urlencode({'search': search, 'limit': 100})}"
    items: list[dict[str, Any]] = []
    while url:
        page = api.request("GET", url)
        items += [r for r in page.get("results") or [] if isinstance(r, dict)]
        url = page.get("next") or None
    return items


def ensure_dashboard(api: PosthogApi, *, event: str, name: str | None = None) -> DashboardResult:
    """Create or update the dashboard `name` and its six insights; returns its id, URL and what changed."""
    name = name or default_name(event)
    found = [d for d in _all(api, "dashboards", name) if d.get("name") == name and not d.get("deleted")]
    created = not found
    if found:
        dashboard = min(found, key=lambda d: int(d["id"]))
        api.request("PATCH", f"{api.base}/dashboards/{dashboard['id']}/", {"description": _DESCRIPTION})
    else:
        dashboard = api.request(
            "POST", f"{api.base}/dashboards/", {"name": name, "description": _DESCRIPTION}
        )
    dash_id = int(dashboard["id"])
    detail = api.request("GET", f"{api.base}/dashboards/{dash_id}/")
    on_dashboard: dict[str, dict[str, Any]] = {}
    for tile in detail.get("tiles") or []:
        insight = tile.get("insight") if isinstance(tile, dict) else None
        if isinstance(insight, dict) and insight.get("name") and not insight.get("deleted"):
            on_dashboard.setdefault(str(insight["name"]), insight)
    result = DashboardResult(
        dashboard_id=dash_id, url=f"{api.host}/project/{api.project_id}/dashboard/{dash_id}", created=created
    )
    for title, description, query in insight_specs(event):
        body = {"name": title, "description": description, "query": query, "saved": True}
        existing = on_dashboard.get(title)
        if existing is not None:
            api.request("PATCH", f"{api.base}/insights/{existing['id']}/", body)
            result.insights.append((title, "updated"))
        else:
            api.request("POST", f"{api.base}/insights/", {**body, "dashboards": [dash_id]})
            result.insights.append((title, "created"))
    return result
