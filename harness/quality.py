"""Quality checks: does an answer meet the case's `expected` (`contains`, `equals`, `regex` or `tool_call`)?

Pure functions over the answer's text, tool calls and stop reason; the dataset module
has already validated the shape. A refusal (`stop_reason: "refusal"`) meets no
expectation, whatever text came before it. `tool_call` passes when the model called
a tool of that name with an input that contains the expected one: every expected key
present with a matching value, objects compared the same way recursively, other
values (lists element by element) equal, JSON booleans never equal to numbers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

__all__ = ["check"]


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def check(
    expected: dict[str, Any] | None,
    text: str | None,
    *,
    tool_calls: Sequence[Mapping[str, Any]] | None = None,
    stop_reason: str | None = None,
) -> bool | None:
    """True/False when the case has an expectation, None when it has none."""
    if not expected:
        return None
    if stop_reason == "refusal":
        return False
    if "tool_call" in expected:
        wanted = expected["tool_call"]
        name, args = wanted.get("name"), wanted.get("input") or {}
        return any(c.get("name") == name and _contains(c.get("input"), args) for c in tool_calls or ())
    if text is None:
        return False
    if "contains" in expected:
        wanted = expected["contains"]
        needles = [wanted] if isinstance(wanted, str) else list(wanted)
        lowered = text.casefold()
        return all(str(n).casefold() in lowered for n in needles)
    if "equals" in expected:
        return text.strip() == str(expected["equals"]).strip()
    if "regex" in expected:
        return _compiled(str(expected["regex"])).search(text) is not None
    return None


def _contains(have: Any, want: Any) -> bool:
    """`have` matches `want`: a superset for objects, equal otherwise (see the module docstring)."""
    if isinstance(want, Mapping):
        return isinstance(have, Mapping) and all(k in have and _contains(have[k], v) for k, v in want.items())
    if isinstance(want, list):
        return (
            isinstance(have, list)
            and len(have) == len(want)
            and all(_contains(h, w) for h, w in zip(have, want, strict=True))
        )
    if isinstance(want, bool) or isinstance(have, bool):
        return have is want
    return bool(have == want)
