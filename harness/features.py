"""Claude's request features a case may carry, checked the way the API checks them, before any call.

`thinking`, `output_config` (effort), `tools`, `tool_choice`, `top_k`, `top_p` and
`service_tier` pass through to the Messages API unchanged. A request the API would refuse
with a 400 (a thinking budget under 1,024 tokens or not below `max_tokens`, thinking with a
forced tool choice or a changed temperature, a tool choice naming no offered tool) would
otherwise cost a failed row per call; here it is a dataset error naming the line and field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

__all__ = ["FEATURE_FIELDS", "MIN_THINKING_BUDGET", "check_features"]

FEATURE_FIELDS = ("thinking", "output_config", "tools", "tool_choice", "top_k", "top_p", "service_tier")
MIN_THINKING_BUDGET = 1024
EFFORTS = ("low", "medium", "high", "xhigh", "max")
SERVICE_TIERS = ("auto", "standard_only")
TOOL_CHOICES = ("auto", "any", "tool", "none")
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")

Bad = Callable[[str, str], None]


def check_features(
    raw: dict[str, Any], bad: Bad, *, max_tokens: int | None, temperature: float | None
) -> dict[str, Any]:
    """The request parameters of `raw` (only those present); every problem goes to `bad(field, message)`."""
    params = {k: raw[k] for k in FEATURE_FIELDS if raw.get(k) is not None}
    thinking_on = _thinking(params.get("thinking"), bad, max_tokens)
    if "output_config" in params:
        _output_config(params["output_config"], bad)
    names = _tools(params["tools"], bad) if "tools" in params else None
    if "tool_choice" in params:
        _tool_choice(params["tool_choice"], bad, names, thinking_on)
    if "top_k" in params:
        top_k = params["top_k"]
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            bad("top_k", f"must be a positive integer, got {top_k!r}")
        elif thinking_on:
            bad("top_k", "cannot be set with thinking (the API refuses it)")
    if "top_p" in params:
        top_p = params["top_p"]
        if not _number(top_p) or not 0 <= top_p <= 1:
            bad("top_p", f"must be a number from 0 to 1, got {top_p!r}")
        elif thinking_on and top_p < 0.95:
            bad("top_p", f"with thinking it must be from 0.95 to 1, got {top_p!r}")
    if "service_tier" in params and params["service_tier"] not in SERVICE_TIERS:
        bad("service_tier", f"must be one of {', '.join(SERVICE_TIERS)}, got {params['service_tier']!r}")
    if thinking_on and temperature is not None and temperature != 1:
        bad("temperature", f"cannot be changed with thinking (only 1 is allowed), got {temperature!r}")
    return params


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _thinking(value: Any, bad: Bad, max_tokens: int | None) -> bool:
    """Check `thinking`; True when it turns thinking on (enabled or adaptive)."""
    if value is None:
        return False
    if not isinstance(value, dict):
        bad("thinking", f"must be an object like {{'type': 'enabled', 'budget_tokens': 2048}}, got {value!r}")
        return False
    kind = value.get("type")
    allowed = {"type", "display"} | ({"budget_tokens"} if kind == "enabled" else set())
    for key in value:
        if key not in allowed:
            bad(f"thinking.{key}", f"unknown key for thinking type {kind!r}")
    if kind == "enabled":
        budget = value.get("budget_tokens")
        if not isinstance(budget, int) or isinstance(budget, bool):
            bad("thinking.budget_tokens", f"an integer of at least {MIN_THINKING_BUDGET} is required")
        elif budget < MIN_THINKING_BUDGET:
            bad("thinking.budget_tokens", f"must be at least {MIN_THINKING_BUDGET}, got {budget}")
        elif max_tokens is None:
            bad("max_tokens", f"required with thinking: it must be above thinking.budget_tokens ({budget})")
        elif budget >= max_tokens:
            bad("thinking.budget_tokens", f"must be below max_tokens ({max_tokens}), got {budget}")
        return True
    if kind == "adaptive":
        return True
    if kind != "disabled":
        bad("thinking.type", f"must be 'enabled', 'adaptive' or 'disabled', got {kind!r}")
    return False


def _output_config(value: Any, bad: Bad) -> None:
    if not isinstance(value, dict):
        bad("output_config", f"must be an object like {{'effort': 'low'}}, got {value!r}")
        return
    for key in value:
        if key not in ("effort", "format"):
            bad(f"output_config.{key}", "unknown key (known: effort, format)")
    effort = value.get("effort")
    if "effort" in value and effort not in EFFORTS:
        bad("output_config.effort", f"must be one of {', '.join(EFFORTS)}, got {effort!r}")


def _tools(value: Any, bad: Bad) -> set[str]:
    """Check the tool list; the names offered (client tools and server tools alike)."""
    names: set[str] = set()
    if not isinstance(value, list) or not value:
        bad("tools", "must be a non-empty list of tool definitions")
        return names
    for i, tool in enumerate(value):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            bad(where, f"must be an object, got {tool!r}")
            continue
        name = tool.get("name")
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            bad(f"{where}.name", f"must match {_TOOL_NAME.pattern}, got {name!r}")
        elif name in names:
            bad(f"{where}.name", f"{name!r} is offered twice")
        else:
            names.add(name)
        kind = tool.get("type")
        if kind is None or kind == "custom":  # a client tool: the model calls it, we run nothing
            schema = tool.get("input_schema")
            if not isinstance(schema, dict) or schema.get("type") != "object":
                bad(f"{where}.input_schema", 'a JSON Schema object with "type": "object" is required')
            description = tool.get("description")
            if description is not None and not isinstance(description, str):
                bad(f"{where}.description", "must be a string")
        elif not isinstance(kind, str):
            bad(f"{where}.type", f"must be a string such as 'web_search_20250305', got {kind!r}")
    return names


def _tool_choice(value: Any, bad: Bad, names: set[str] | None, thinking_on: bool) -> None:
    if not isinstance(value, dict):
        bad("tool_choice", f"must be an object like {{'type': 'auto'}}, got {value!r}")
        return
    kind = value.get("type")
    if kind not in TOOL_CHOICES:
        bad("tool_choice.type", f"must be one of {', '.join(TOOL_CHOICES)}, got {kind!r}")
        return
    if kind in ("any", "tool") and thinking_on:
        bad("tool_choice", f"{kind!r} forces a tool call, which the API refuses with thinking (use 'auto')")
    if kind != "none" and names is None:
        bad("tool_choice", "set without `tools`")
    if kind == "tool":
        name = value.get("name")
        if names is not None and name not in names:
            bad("tool_choice.name", f"names no offered tool: {name!r}")
    flag = value.get("disable_parallel_tool_use")
    if flag is not None and not isinstance(flag, bool):
        bad("tool_choice.disable_parallel_tool_use", "must be true or false")
