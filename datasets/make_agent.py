"""Write datasets/agent.jsonl: 40 cases that use Claude's request features (tools, thinking, web search).

Its one job: a small workload whose cost and latency depend on the features a team runs
in production, to compare configurations, not only models: tool calls the model must
choose (the prompt names the tool, so the simulator calls it as Claude would) or is
forced to make, extended thinking at three budgets and at adaptive effort levels, and
web searches (a billed server tool). It must not call any API. Run:
`python datasets/make_agent.py` (the output is committed; a test checks that re-running
gives the same bytes).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("agent.jsonl")

WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "City name"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city"],
    },
}
CONVERT = {
    "name": "convert_currency",
    "description": "Convert an amount between two currencies at today's rate.",
    "input_schema": {
        "type": "object",
        "properties": {
            "amount": {"type": "number"},
            "source": {"type": "string", "description": "ISO code, e.g. EUR"},
            "target": {"type": "string", "description": "ISO code, e.g. USD"},
        },
        "required": ["amount", "source", "target"],
    },
}
LOOKUP = {
    "name": "lookup_order",
    "description": "Find an order by its id in the shop's database.",
    "input_schema": {
        "type": "object",
        "properties": {"order_id": {"type": "string"}},
        "required": ["order_id"],
    },
}
WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}
TOOLS = [WEATHER, CONVERT, LOOKUP]

CITIES = ["Lisbon", "Oslo", "Nairobi", "Osaka", "Lima"]
CONVERSIONS = [("120", "EUR", "USD"), ("75", "GBP", "JPY"), ("990", "CHF", "EUR"), ("42", "USD", "CAD"), ("5000", "INR", "EUR")]
ORDERS = ["A-1042", "B-2231", "C-0007", "D-9912", "E-3150"]
PUZZLES = [
    ("A train leaves at 14:05 and arrives at 17:50. How many minutes is the trip?", "225"),
    ("What is 17 times 23?", "391"),
    ("A shirt costs 40 after a 20 percent discount. What was the original price?", "50"),
    ("How many ways can 4 people stand in a line?", "24"),
    ("What is the sum of the integers from 1 to 100?", "5050"),
]
PLANS = [
    "Plan a three-step migration of a monolith's user table to a separate service without downtime.",
    "Compare two caching strategies for a read-heavy API and pick one, with the reason.",
    "Outline how to find the cause of a memory leak that appears only after two days of uptime.",
    "Design a rate limiter for 10,000 tenants with different quotas; name the data structure.",
    "Explain how you would test a payment retry flow that must never charge twice.",
]
NEWS = [
    "What changed in the latest stable Python release? Search the web and summarise.",
    "Search for this week's news about battery recycling and give two headlines.",
    "Find the current population estimate of Lagos with a web search.",
    "Search the web: which company released the most recent open-weight language model?",
    "Look up, with a web search, the opening hours of the Louvre this month.",
]


def cases() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, city in enumerate(CITIES):  # the model chooses the tool the prompt names
        out.append(
            {
                "id": f"tool-weather-{i}",
                "prompt": f"Use get_weather to tell me whether I need an umbrella in {city} today.",
                "tools": TOOLS,
                "max_tokens": 400,
                "tags": ["tools", "auto"],
                "expected": {"tool_call": {"name": "get_weather"}},
            }
        )
    for i, (amount, source, target) in enumerate(CONVERSIONS):
        out.append(
            {
                "id": f"tool-convert-{i}",
                "prompt": f"Call convert_currency: how much is {amount} {source} in {target}?",
                "tools": TOOLS,
                "max_tokens": 400,
                "tags": ["tools", "auto"],
                "expected": {"tool_call": {"name": "convert_currency"}},
            }
        )
    for i, order in enumerate(ORDERS):  # a forced choice: the model must call this tool
        out.append(
            {
                "id": f"tool-forced-{i}",
                "prompt": f"Where is my order {order}? It was due last week.",
                "tools": TOOLS,
                "tool_choice": {"type": "tool", "name": "lookup_order"},
                "max_tokens": 300,
                "tags": ["tools", "forced"],
                "expected": {"tool_call": {"name": "lookup_order"}},
            }
        )
    for i, (question, answer) in enumerate(PUZZLES):  # no tool fits: a text answer
        out.append(
            {
                "id": f"tool-none-{i}",
                "prompt": question,
                "tools": TOOLS,
                "max_tokens": 300,
                "tags": ["tools", "text"],
                "expected": {"contains": answer},
            }
        )
    for budget in (1024, 2048, 4096):  # extended thinking at three budgets
        for i, (question, answer) in enumerate(PUZZLES):
            if budget == 4096 and i >= 2:
                break
            out.append(
                {
                    "id": f"think-{budget}-{i}",
                    "prompt": question + " Think it through, then give the number.",
                    "thinking": {"type": "enabled", "budget_tokens": budget},
                    "max_tokens": budget + 600,
                    "tags": ["thinking", f"budget-{budget}"],
                    "expected": {"contains": answer},
                }
            )
    for effort, plan in zip(("low", "medium", "high", "medium", "low"), PLANS, strict=True):
        out.append(
            {
                "id": f"adaptive-{effort}-{len(out)}",
                "prompt": plan,
                "thinking": {"type": "adaptive"},
                "output_config": {"effort": effort},
                "max_tokens": 3000,
                "tags": ["thinking", "adaptive", f"effort-{effort}"],
            }
        )
    for i, question in enumerate(NEWS[:3]):  # a billed server tool
        out.append(
            {
                "id": f"search-{i}",
                "prompt": question,
                "tools": [WEB_SEARCH],
                "max_tokens": 800,
                "tags": ["server-tool", "web-search"],
            }
        )
    return out


def write(path: Path) -> int:
    rows = cases()
    path.write_text("".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows))
    return len(rows)


def main() -> int:
    print(f"wrote {write(OUT)} cases to {OUT.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
