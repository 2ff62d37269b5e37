"""Quality checks: does an answer meet the case's `expected` (`contains`, `equals` or `regex`)?

Pure functions over text; the dataset module has already validated the shape.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

__all__ = ["check"]


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def check(expected: dict[str, Any] | None, text: str | None) -> bool | None:
    """True/False when the case has an expectation, None when it has none."""
    if not expected:
        return None
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
