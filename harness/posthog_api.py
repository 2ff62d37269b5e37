"""PostHog's app API for one project, with a personal API key: what `harness import posthog` and
`harness posthog dashboard` call (never the capture API: events go out through `harness.events`).

Requests go to the app host (`https://us.posthog.com`, `https://eu.posthog.com` or a self-hosted
one; not the ingestion host) under `/api/projects/{id}/`, with `Authorization: Bearer <key>`.
The key is a `Secret`: it is never logged, and error details are redacted before they are shown.

- 401/403 → `ConfigError` naming the key's environment variable (exit 2);
- 429 `throttled_error` → waited out (the `Retry-After` header, else the seconds the detail
  names, else 5 s; at most `MAX_THROTTLE_WAIT_S` per request), counted in `throttled`;
- 502/503/504 and refused connections → retried a few times with back-off;
- anything else → `HarnessError` with the status and PostHog's detail.
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from harness.errors import ConfigError, HarnessError
from harness.secrets import POSTHOG_PERSONAL_KEY_ENV, Secret, redact_text, usable

__all__ = ["MAX_THROTTLE_WAIT_S", "PosthogApi", "retry_after"]

MAX_THROTTLE_WAIT_S = 120.0
_RETRIED_STATUSES = (502, 503, 504)
_RETRIES = 3
_DETAIL_SECONDS = re.compile(r"(\d+(?:\.\d+)?)\s*second")


def retry_after(header: str | None, detail: str) -> float:
    """Seconds to wait after a 429: the Retry-After header, else the seconds PostHog's detail names, else 5."""
    if header:
        try:
            return max(0.0, float(header))
        except ValueError:
            pass
    found = _DETAIL_SECONDS.search(detail)
    return float(found.group(1)) if found else 5.0


class PosthogApi:
    """One PostHog project's app API (`/api/projects/{id}/…`) with a personal API key."""

    def __init__(
        self,
        host: str,
        project_id: str | int,
        key: Secret,
        *,
        timeout_s: float = 120.0,
        sleep: Any = time.sleep,
    ) -> None:
        if not key:
            raise ConfigError(
                POSTHOG_PERSONAL_KEY_ENV,
                "a PostHog personal API key is required in this environment variable",
            )
        parsed = urllib.parse.urlsplit(host)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError("--host", f"{host!r} is not an http(s) URL (e.g. https://us.posthog.com)")
        self.host = host.rstrip("/")
        self.project_id = str(project_id)
        self._key = key
        self._timeout = timeout_s
        self._sleep = sleep
        self._secrets = usable([key.get()])
        self.throttled = 0
        self.throttled_s = 0.0
        self.requests = 0

    @property
    def base(self) -> str:
        """The project's API path, e.g. `/api/projects/12345`."""
        return f"/api/projects/{urllib.parse.quote(self.project_id, safe='@')}"

    def project(self) -> dict[str, Any]:
        """The project (its `timezone`, `name`, …)."""
        return self.request("GET", self.base + "/")

    def timezone(self) -> ZoneInfo:
        """The project's timezone (HogQL reads bare date strings and renders timestamps in it)."""
        name = self.project().get("timezone") or "UTC"
        try:
            return ZoneInfo(str(name))
        except (ZoneInfoNotFoundError, ValueError):
            raise HarnessError(f"PostHog project {self.project_id}: unknown timezone {name!r}") from None

    def query(self, hogql: str) -> dict[str, Any]:
        """One HogQL query: PostHog's `{columns, types, results, hasMore, …}`."""
        return self.request("POST", self.base + "/query/", {"query": {"kind": "HogQLQuery", "query": hogql}})

    def request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """One JSON request (path from the host, or an absolute URL on it); throttling waited out."""
        url = path if path.startswith(("http://", "https://")) else self.host + path
        waited = 0.0
        attempt = 0
        while True:
            self.requests += 1
            request = urllib.request.Request(
                url,
                data=orjson.dumps(body) if body is not None else None,
                method=method,
                headers={
                    "Authorization": f"Bearer {self._key.get()}",
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=self._timeout) as response:
                    data = orjson.loads(response.read() or b"{}")
                    return data if isinstance(data, dict) else {"results": data}
            except urllib.error.HTTPError as exc:
                detail = self._detail(exc)
                if exc.code == 429:
                    pause = retry_after(exc.headers.get("Retry-After"), detail)
                    if waited + pause > MAX_THROTTLE_WAIT_S:
                        raise HarnessError(f"PostHog kept throttling {path} ({detail})") from None
                    self.throttled += 1
                    self.throttled_s += pause
                    waited += pause
                    self._sleep(pause)
                    continue
                if exc.code in (401, 403):
                    raise ConfigError(
                        POSTHOG_PERSONAL_KEY_ENV,
                        f"PostHog refused the personal API key ({exc.code}: {detail}); it needs read "
                        "access to the project (query), and insight and dashboard write access for "
                        "`harness posthog dashboard`",
                    ) from None
                if exc.code in _RETRIED_STATUSES and attempt < _RETRIES:
                    attempt += 1
                    self._sleep(2.0 ** (attempt - 1))
                    continue
                raise HarnessError(f"PostHog {method} {path}: HTTP {exc.code}: {detail}") from None
            except (urllib.error.URLError, OSError) as exc:
                if attempt < _RETRIES:
                    attempt += 1
                    self._sleep(2.0 ** (attempt - 1))
                    continue
                reason = getattr(exc, "reason", exc)
                raise HarnessError(f"cannot reach PostHog at {self.host}: {reason}") from None

    def _detail(self, exc: urllib.error.HTTPError) -> str:
        try:
            body = orjson.loads(exc.read())
            text = str(body.get("detail") or body) if isinstance(body, dict) else str(body)
        except (orjson.JSONDecodeError, OSError, ValueError):
            text = exc.reason if isinstance(exc.reason, str) else str(exc.code)
        return redact_text(text[:300], self._secrets)
