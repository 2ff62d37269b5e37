"""Secrets: the one place that knows which values must never reach a file, an event, a log line or a child.

- `Secret` holds a key and prints `[secure]`;
- `ANTHROPIC_KEY_ENV`, `POSTHOG_KEY_ENV`, `POSTHOG_PERSONAL_KEY_ENV` name the environment
  variables that carry keys (`SECRET_ENV_VARS` is all of them);
- `redact` / `redact_text` / `redact_bytes` replace every known secret by `[secure]` in an
  object, a string or a serialised line (keys need no JSON escaping, so the byte rule is exact);
- `Redactor` does the same to log records before any handler sees them;
- `child_env()` is this process's environment without any secret variable: what every child
  process gets (keys reach a child only through a pipe, never argv or the environment).

Values shorter than 8 characters are never treated as secrets: they would redact ordinary words.
It imports nothing of the harness and nothing heavy, so the PostHog delivery child can use it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "ANTHROPIC_KEY_ENV",
    "POSTHOG_KEY_ENV",
    "POSTHOG_PERSONAL_KEY_ENV",
    "REDACTED",
    "SECRET_ENV_VARS",
    "Redactor",
    "Secret",
    "child_env",
    "env_secrets",
    "redact",
    "redact_bytes",
    "redact_text",
    "usable",
]

ANTHROPIC_KEY_ENV = "ANTHROPIC_API_KEY"
POSTHOG_KEY_ENV = "POSTHOG_API_KEY"
POSTHOG_PERSONAL_KEY_ENV = "POSTHOG_PERSONAL_API_KEY"  # PostHog's query/insights API
SECRET_ENV_VARS = (ANTHROPIC_KEY_ENV, POSTHOG_KEY_ENV, POSTHOG_PERSONAL_KEY_ENV)
REDACTED = "[secure]"
MIN_SECRET_LEN = 8


class Secret:
    """A secret string that never prints itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str | None) -> None:
        self._value = value or ""

    def get(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return REDACTED if self._value else "[unset]"

    __str__ = __repr__


def env_secrets(env: Mapping[str, str] | None = None) -> list[str]:
    """The keys present in the environment: values that must never reach a file."""
    env = os.environ if env is None else env
    return [v for name in SECRET_ENV_VARS if (v := env.get(name, "").strip())]


def usable(secrets: Iterable[str]) -> list[str]:
    """Distinct secrets of at least 8 characters, longest first (so a key containing another goes first)."""
    return sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LEN}, key=len, reverse=True)


def redact_text(text: str, secrets: Sequence[str]) -> str:
    """`text` with every secret of `secrets` (already `usable`) replaced by `[secure]`."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact(obj: Any, secrets: Iterable[str]) -> Any:
    """A copy of `obj` (dicts, lists, tuples, strings) with every secret substring replaced by `[secure]`."""
    keys = usable(secrets)
    return _redact(obj, keys) if keys else obj


def _redact(obj: Any, keys: list[str]) -> Any:
    if isinstance(obj, str):
        return redact_text(obj, keys)
    if isinstance(obj, dict):
        return {_redact(k, keys): _redact(v, keys) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_redact(v, keys) for v in obj]
    return obj


def redact_bytes(line: bytes, secret_bytes: Sequence[bytes]) -> bytes:
    """Byte-level redaction of a serialised line; `secret_bytes` are `usable` secrets, encoded."""
    for key in secret_bytes:
        if key in line:
            line = line.replace(key, REDACTED.encode())
    return line


class Redactor(logging.Filter):
    """Rewrites a log record that would show a secret; added to a logger, it runs before any handler."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = usable(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True
        if any(s in message for s in self.secrets):
            record.msg = redact_text(message, self.secrets)
            record.args = None
        return True


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without the secret variables, plus `extra`: what a child may see."""
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV_VARS}
    env.update(extra or {})
    return env
