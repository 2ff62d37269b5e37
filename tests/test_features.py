"""Claude request features in a dataset: passed through when the API would take them, refused as it would.

Every refusal names the file, line and field, in JSONL, CSV and parquet alike, before any call.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import polars as pl
import pytest

from harness.client import request_params
from harness.dataset import load_cases, validate
from harness.records import PlannedCall

WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
GOOD = [
    {
        "id": "t1",
        "prompt": "Think first.",
        "max_tokens": 4096,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
    },
    {
        "id": "t2",
        "prompt": "Adaptive.",
        "max_tokens": 2048,
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "low"},
    },
    {
        "id": "t3",
        "prompt": "Weather in Paris?",
        "max_tokens": 512,
        "tools": [WEATHER],
        "tool_choice": {"type": "tool", "name": "get_weather"},
        "expected": {"tool_call": {"name": "get_weather", "input": {"city": "Paris"}}},
    },
    {
        "id": "t4",
        "prompt": "Search.",
        "max_tokens": 512,
        "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}],
    },
    {
        "id": "t5",
        "prompt": "Sample.",
        "max_tokens": 64,
        "top_k": 5,
        "top_p": 0.9,
        "service_tier": "standard_only",
    },
]

# (row overrides, field named, words in the message)
BAD = [
    (
        {"max_tokens": 4096, "thinking": {"type": "enabled", "budget_tokens": 512}},
        "thinking.budget_tokens",
        "at least 1024",
    ),
    (
        {"max_tokens": 2048, "thinking": {"type": "enabled", "budget_tokens": 2048}},
        "thinking.budget_tokens",
        "below max_tokens",
    ),
    ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, "max_tokens", "required with thinking"),
    ({"max_tokens": 4096, "thinking": {"type": "sometimes"}}, "thinking.type", "'enabled', 'adaptive'"),
    (
        {"max_tokens": 4096, "thinking": {"type": "adaptive", "budget_tokens": 2048}},
        "thinking.budget_tokens",
        "unknown key",
    ),
    (
        {
            "max_tokens": 4096,
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "tools": [WEATHER],
            "tool_choice": {"type": "any"},
        },
        "tool_choice",
        "refuses with thinking",
    ),
    (
        {"max_tokens": 4096, "thinking": {"type": "adaptive"}, "temperature": 0.2},
        "temperature",
        "cannot be changed with thinking",
    ),
    ({"max_tokens": 4096, "thinking": {"type": "adaptive"}, "top_k": 3}, "top_k", "with thinking"),
    ({"max_tokens": 4096, "thinking": {"type": "adaptive"}, "top_p": 0.5}, "top_p", "0.95"),
    ({"output_config": {"effort": "extreme"}}, "output_config.effort", "low, medium"),
    ({"tools": [{"name": "x"}]}, "tools[0].input_schema", "JSON Schema"),
    ({"tools": [WEATHER, WEATHER]}, "tools[1].name", "offered twice"),
    (
        {"tools": [WEATHER], "tool_choice": {"type": "tool", "name": "nope"}},
        "tool_choice.name",
        "no offered tool",
    ),
    ({"tool_choice": {"type": "auto"}}, "tool_choice", "without `tools`"),
    ({"top_k": 0}, "top_k", "positive integer"),
    ({"service_tier": "priority"}, "service_tier", "auto, standard_only"),
    ({"expected": {"tool_call": {"input": {}}}}, "expected.tool_call", "tool `name`"),
]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _csv(path: Path, rows: list[dict]) -> Path:
    columns = sorted({k for r in rows for k in r})
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, columns)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in r.items()})
    return path


def _parquet(path: Path, rows: list[dict]) -> Path:
    columns = sorted({k for r in rows for k in r})
    table = {
        c: [json.dumps(r[c]) if isinstance(r.get(c), dict | list) else r.get(c) for r in rows]
        for c in columns
    }
    pl.DataFrame(table, strict=False).write_parquet(path)
    return path


WRITERS = {"jsonl": _jsonl, "csv": _csv, "parquet": _parquet}


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_valid_features_load_and_reach_the_request(tmp_path, fmt):
    path = WRITERS[fmt](tmp_path / f"good.{fmt}", GOOD)
    cases = {c.id: c for c in load_cases(path).cases}
    assert cases["t1"].params == {"thinking": {"type": "enabled", "budget_tokens": 2048}}
    assert cases["t3"].expected == {"tool_call": {"name": "get_weather", "input": {"city": "Paris"}}}
    sent = request_params(PlannedCall("c", cases["t3"], "claude-sonnet-4-6", 0, 0), stream=True)
    assert sent["tools"] == [WEATHER]
    assert sent["tool_choice"] == {"type": "tool", "name": "get_weather"}
    sampled = request_params(PlannedCall("c", cases["t5"], "claude-sonnet-4-6", 0, 0), stream=False)
    assert sampled["extra_body"] == {"top_k": 5, "top_p": 0.9}  # not keywords of the SDK's create()
    assert sampled["service_tier"] == "standard_only"


@pytest.mark.parametrize("fmt", sorted(WRITERS))
@pytest.mark.parametrize(("override", "field", "words"), BAD, ids=[b[1] + ":" + b[2][:12] for b in BAD])
def test_each_invalid_feature_names_line_and_field(tmp_path, fmt, override, field, words):
    row = {"id": "bad", "prompt": "hello", **override}
    path = WRITERS[fmt](tmp_path / f"bad.{fmt}", [GOOD[4], row])
    problems = validate(path)
    assert [(p.field) for p in problems] == [field], [str(p) for p in problems]
    problem = problems[0]
    assert problem.path == str(path)
    assert problem.line == (3 if fmt == "csv" else 2)  # the CSV header is line 1
    assert words in problem.message
