"""Where a run's calls and events go, resolved once from the config: URL, keys, hosts, local children.

Why one object: which key to send, whether to tag requests for the simulator's ground truth,
where PostHog events go offline and whether the target shares this machine's CPUs were
decided by testing the target's name in seven places. Here they are decided once, and the
rest of the harness asks the `Target`. The module stays light (no SDK import) so that the
CLI can launch the simulator through it before the heavy imports.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from harness.errors import TargetError
from harness.secrets import ANTHROPIC_KEY_ENV
from harness.simlauncher import SimulatorProcess

if TYPE_CHECKING:
    from harness.client import ClaudeClient
    from harness.config import RunConfig

__all__ = [
    "ANTHROPIC_URL",
    "POSTHOG_DEFAULT_HOST",
    "SIMULATOR_POSTHOG_KEY",
    "Target",
    "TargetKind",
    "launch_simulator",
    "needs_simulator",
    "preflight",
]

TargetKind = Literal["simulator", "anthropic", "custom"]

ANTHROPIC_URL = "https://api.anthropic.com"
POSTHOG_DEFAULT_HOST = "https://us.i.posthog.com"
# Offline stand-ins: the simulator accepts any key; these make a run without real keys explicit.
SIMULATOR_API_KEY = "sk-ant-simulator-key"
SIMULATOR_POSTHOG_KEY = "phc_simulator"


def needs_simulator(cfg: RunConfig) -> bool:
    """The run's target is the project's simulator, started for this run."""
    return cfg.target == "simulator" and not cfg.base_url


def launch_simulator(cfg: RunConfig) -> SimulatorProcess:
    """Spawn the simulator for this run without waiting: it boots while the harness imports and loads."""
    return SimulatorProcess.launch(
        time_scale=cfg.sim_time_scale, seed=cfg.sim_seed, profile=cfg.sim_profile, faults=cfg.sim_faults
    )


def is_loopback(url: str | None) -> bool:
    """A target on this machine (the simulator, a local mock) needs a core of its own."""
    host = urlsplit(url).hostname if url else None
    return host in ("127.0.0.1", "localhost", "::1")


@dataclass
class Target:
    """The resolved target. `close()` stops the capture-only simulator it may have started."""

    kind: str
    api_url: str
    api_key: str
    posthog_host: str
    posthog_key: str
    tag_requests: bool  # ask the server to record ground truth (never on the real API)
    loopback: bool  # the server shares this machine's CPUs
    base_url_host: str | None  # for the manifest: host only, never a path or query
    _capture: SimulatorProcess | None = field(default=None, repr=False)

    @classmethod
    def resolve(cls, cfg: RunConfig, simulator: SimulatorProcess | None = None) -> Target:
        """Keys and hosts for `cfg`; `simulator` is the run's own simulator, when it has one."""
        base_url = simulator.wait_ready().url if simulator is not None else cfg.base_url
        api_key = cfg.api_key.get() if cfg.target == "anthropic" or cfg.api_key else ""
        if cfg.target != "anthropic" and not api_key:
            api_key = SIMULATOR_API_KEY
        posthog_key = cfg.posthog_key.get()
        posthog_host = cfg.posthog_host
        capture = None
        if not posthog_key:
            # Offline: the events go to the simulator's capture endpoint (our own, or a capture-only one).
            posthog_key = SIMULATOR_POSTHOG_KEY
            if not posthog_host and simulator is not None:
                posthog_host = simulator.url
            elif not posthog_host and cfg.posthog_enabled:
                capture = SimulatorProcess.start(posthog_only=True)
                posthog_host = capture.url
        return cls(
            kind=cfg.target,
            api_url=base_url or ANTHROPIC_URL,
            api_key=api_key,
            posthog_host=posthog_host or POSTHOG_DEFAULT_HOST,
            posthog_key=posthog_key,
            tag_requests=cfg.target != "anthropic",
            loopback=simulator is not None or is_loopback(base_url),
            base_url_host=urlsplit(base_url).netloc or None if base_url else None,
            _capture=capture,
        )

    def client_kwargs(self, cfg: RunConfig) -> dict[str, Any]:
        """`ClaudeClient` keyword arguments (holds the API key: never logged, pickled only to workers)."""
        return {
            "api_key": self.api_key,
            "base_url": self.api_url,
            "timeout_s": cfg.timeout_s,
            "transport": cfg.transport,
            "tag_requests": self.tag_requests,
            "quality_headers": self.kind == "simulator",
            "max_connections": max(100, cfg.concurrency, cfg.max_in_flight or 0),
        }

    def close(self) -> None:
        if self._capture is not None:
            self._capture.stop()
            self._capture = None


async def preflight(client: ClaudeClient, models: tuple[str, ...], warm: int = 1) -> None:
    """Unknown model or bad key: refuse before the first call.

    The checks run `warm` at a time (free `GET /v1/models/{id}` requests), which also opens
    the keep-alive connections the first calls will use, so connection set-up is not
    measured as the first calls' latency.
    """
    checks = [models[i % len(models)] for i in range(max(warm, len(models)))]
    problems = await asyncio.gather(*(client.get_model(m) for m in checks))
    for model, problem in zip(checks, problems, strict=True):
        if problem is None:
            continue
        if problem == "not_found":
            raise TargetError(f"--models: unknown model {model!r} (the target's /v1/models does not list it)")
        if problem in ("authentication", "permission"):
            raise TargetError(f"the API refused the key ({problem}); check {ANTHROPIC_KEY_ENV}")
        if problem == "connection":
            raise TargetError("cannot reach the target; check --base-url / the network")
