"""`harness posthog dashboard` against the simulated PostHog insights and dashboards API."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.posthog_dashboard import insight_specs
from harness.secrets import POSTHOG_PERSONAL_KEY_ENV
from harness.simulator.posthog_api import DEFAULT_PERSONAL_KEY
from tests.simproc import SimProc

runner = CliRunner()
SIX = [
    "Total cost per model",
    "Average cost per user",
    "Average response time",
    "p95 time to first token by model",
    "Error rate by model",
    "Calls per run",
]


def invoke(*args: str, key: str = DEFAULT_PERSONAL_KEY) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200", POSTHOG_PERSONAL_KEY_ENV: key})
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes is not None else "")


def get(sim: SimProc, path: str) -> Any:
    request = urllib.request.Request(
        sim.url + path, headers={"Authorization": f"Bearer {DEFAULT_PERSONAL_KEY}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_twice_gives_one_dashboard_with_six_insights(simulator: SimProc) -> None:
    args = ("posthog", "dashboard", "--host", simulator.url, "--project-id", "1")
    code, first = invoke(*args)
    assert code == 0, first
    dashboards = get(simulator, "/api/projects/1/dashboards/")["results"]
    (dash,) = dashboards
    url = f"{simulator.url}/project/1/dashboard/{dash['id']}"
    assert first.strip().endswith(url) and f"dashboard {dash['id']} created: 6 insights" in first
    code, second = invoke(*args)
    assert code == 0, second
    assert f"dashboard {dash['id']} updated: 6 insights" in second and second.count("  updated: ") == 6
    assert second.strip().endswith(url)
    assert [d["id"] for d in get(simulator, "/api/projects/1/dashboards/")["results"]] == [dash["id"]]
    detail = get(simulator, f"/api/projects/1/dashboards/{dash['id']}/")
    assert detail["name"] == "Claude usage (claude_message_completion)"
    assert sorted(t["insight"]["name"] for t in detail["tiles"]) == sorted(SIX)
    assert get(simulator, "/api/projects/1/insights/")["count"] == 6, "updated in place, none duplicated"
    by_name = {t["insight"]["name"]: t["insight"]["query"]["source"] for t in detail["tiles"]}
    cost = by_name["Total cost per model"]
    assert (
        cost["series"][0]["math"] == "sum" and cost["series"][0]["math_property"] == "total_cost_in_dollars"
    )
    assert cost["breakdownFilter"]["breakdown"] == "model"
    per_user = by_name["Average cost per user"]
    assert [s["math"] for s in per_user["series"]] == ["sum", "dau"]
    assert per_user["trendsFilter"]["formulaNodes"][0]["formula"] == "A/B"
    assert by_name["Average response time"]["series"][0]["math_property"] == "response_time_in_ms"


def test_ai_generation_uses_the_ai_property_names(simulator: SimProc) -> None:
    code, output = invoke(
        "posthog", "dashboard", "--host", simulator.url, "--project-id", "1", "--event", "$ai_generation"
    )
    assert code == 0, output
    (dash,) = get(simulator, "/api/projects/1/dashboards/")["results"]
    assert dash["name"] == "Claude usage ($ai_generation)"
    detail = get(simulator, f"/api/projects/1/dashboards/{dash['id']}/")
    sources = {t["insight"]["name"]: t["insight"]["query"]["source"] for t in detail["tiles"]}
    assert sources["Total cost per model"]["series"][0]["math_property"] == "$ai_total_cost_usd"
    assert sources["Total cost per model"]["breakdownFilter"]["breakdown"] == "$ai_model"
    assert sources["p95 time to first token by model"]["series"][0] == {
        "kind": "EventsNode",
        "event": "$ai_generation",
        "name": "$ai_generation",
        "math": "p95",
        "math_property": "$ai_time_to_first_token",
        "custom_name": "TTFT p95 (s)",
    }
    errors = sources["Error rate by model"]["series"][0]["properties"][0]
    assert errors["key"] == "$ai_is_error"
    assert sources["Calls per run"]["breakdownFilter"]["breakdown"] == "$ai_session_id"
    every = json.dumps([q for _, _, q in insight_specs("$ai_generation")])
    assert "total_cost_in_dollars" not in every and "response_time_in_ms" not in every


def test_a_same_named_insight_elsewhere_is_left_alone(simulator: SimProc) -> None:
    body = json.dumps(
        {"name": "Calls per run", "query": {"kind": "InsightVizNode", "source": {"kind": "TrendsQuery"}}}
    )
    request = urllib.request.Request(
        simulator.url + "/api/projects/1/insights/",
        data=body.encode(),
        method="POST",
        headers={"Authorization": f"Bearer {DEFAULT_PERSONAL_KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        theirs = json.loads(response.read())
    code, output = invoke("posthog", "dashboard", "--host", simulator.url, "--project-id", "1")
    assert code == 0, output
    mine = get(simulator, f"/api/projects/1/insights/{theirs['id']}/")
    assert (
        mine["query"] == {"kind": "InsightVizNode", "source": {"kind": "TrendsQuery"}}
        and mine["dashboards"] == []
    )
    assert get(simulator, "/api/projects/1/insights/")["count"] == 7


@pytest.mark.parametrize("key", ["phx_not_the_right_key_0123456789"])
def test_a_bad_key_exits_2_naming_the_variable(simulator: SimProc, key: str) -> None:
    code, output = invoke("posthog", "dashboard", "--host", simulator.url, "--project-id", "1", key=key)
    assert code == 2 and POSTHOG_PERSONAL_KEY_ENV in output and key not in output
    assert get(simulator, "/api/projects/1/dashboards/")["count"] == 0
