"""Configuration variants: named sets of request parameters that override every case, so a run compares arms.

An arm is a model plus a variant (`claude-sonnet-4-6 [think-4k]`, named by `records.arm_of`):
teams choose between the configurations they will run in production (thinking budget,
effort, temperature, tools on or off, a system prompt prefix, prompt caching off/5m/1h/auto:
`harness.caching`), not only between models. A
variant is applied to each case before planning and the result is checked by the same rules
as a dataset row, so a variant the API would refuse stops the run before its first call,
naming the variant and the case.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness.caching import CACHE_MODES, apply_cache
from harness.errors import ConfigError
from harness.features import FEATURE_FIELDS, check_features
from harness.records import Case, arm_of

__all__ = [
    "VARIANT_KEYS",
    "Variant",
    "apply_variant",
    "arm_of",
    "expand",
    "load_variants_file",
    "parse_variants",
]

VARIANT_KEYS = (*FEATURE_FIELDS, "temperature", "max_tokens", "system_prefix", "cache")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


@dataclass(frozen=True)
class Variant:
    """One named configuration; `overrides` holds only what it changes (`tools = false` removes tools)."""

    name: str
    overrides: Mapping[str, Any]


def parse_variants(table: Mapping[str, Any], source: str) -> tuple[Variant, ...]:
    """`{name: {key: value}}` from a profile's `[variants.NAME]` sections or a variants file."""
    out = []
    for name, overrides in table.items():
        where = f"{source} [variants.{name}]"
        if not name or not set(name) <= _NAME_CHARS:
            raise ConfigError(where, "a variant name uses letters, digits, '-', '_' and '.' only")
        if not isinstance(overrides, Mapping):
            raise ConfigError(where, "must be a table of request parameters")
        for key, value in overrides.items():
            if key not in VARIANT_KEYS:
                raise ConfigError(f"{where} {key}", f"unknown key (known: {', '.join(VARIANT_KEYS)})")
            if key == "tools" and value is not False and not isinstance(value, list):
                raise ConfigError(f"{where} tools", "must be false (no tools) or a list of tool definitions")
            if key == "system_prefix" and not (isinstance(value, str) and value.strip()):
                raise ConfigError(f"{where} system_prefix", "must be a non-empty string")
            if key == "max_tokens" and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"{where} max_tokens", "must be a positive integer")
            if key == "cache" and value not in CACHE_MODES:
                raise ConfigError(f"{where} cache", f"must be one of {', '.join(CACHE_MODES)}, got {value!r}")
        out.append(Variant(name=name, overrides=dict(overrides)))
    return tuple(out)


def load_variants_file(path: Path) -> tuple[Variant, ...]:
    """`--variants file.toml`: `[variants.NAME]` sections (or top-level `[NAME]` tables)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("--variants", f"{path}: cannot read ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--variants", f"{path}: not valid TOML ({exc})") from None
    table = data.get("variants", data)
    if not isinstance(table, Mapping) or not table:
        raise ConfigError("--variants", f"{path}: no [variants.NAME] section")
    return parse_variants(table, f"--variants {path}")


def apply_variant(case: Case, variant: Variant, source: str) -> Case:
    """`case` as the variant sends it; a combination the API would refuse is a ConfigError naming both."""
    o = variant.overrides
    params = dict(case.params or {})
    for key in FEATURE_FIELDS:
        if key in o:
            params[key] = o[key]
    if o.get("tools") is False:
        params.pop("tools", None)
        params.pop("tool_choice", None)
    system = case.system
    if "system_prefix" in o:
        prefix = o["system_prefix"]
        if system is None:
            system = prefix
        elif isinstance(system, str):
            system = f"{prefix}\n\n{system}"
        else:
            system = [{"type": "text", "text": prefix}, *system]
    changed = replace(
        case,
        params=params or None,
        system=system,
        temperature=o.get("temperature", case.temperature),
        max_tokens=o.get("max_tokens", case.max_tokens),
    )
    if "cache" in o:  # last: the breakpoints go on what the variant sends
        changed = apply_cache(changed, o["cache"])
    problems: list[str] = []
    check_features(
        params,
        lambda field, message: problems.append(f"{field}: {message}"),
        max_tokens=changed.max_tokens,
        temperature=changed.temperature,
    )
    if problems:
        line = f" (line {case.line})" if case.line else ""
        raise ConfigError(f"{source} [variants.{variant.name}]", f"on case {case.id!r}{line}: {problems[0]}")
    return changed


def expand(cases: Sequence[Case], variants: Sequence[Variant], source: str) -> dict[str | None, list[Case]]:
    """Each variant's cases (key None: the cases as written, when there are no variants)."""
    if not variants:
        return {None: list(cases)}
    return {v.name: [apply_variant(c, v, source) for c in cases] for v in variants}
