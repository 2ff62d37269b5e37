"""The server: builds the aiohttp app, owns the listening socket, and runs until a signal.

Also serves the `/_sim/*` control endpoints (ground truth, batches, events, faults, outages) and
the command line (`python -m harness.simulator`, `harness simulate` via `cli_main`). The
listening socket is managed here, not by aiohttp's sites, so an outage can close it and
re-open it on the same port. This module must not import anything of the harness
outside `harness.simulator`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from harness.simulator import batches, capture, messages, posthog_api
from harness.simulator.faults import FaultSettings, parse_fault_spec
from harness.simulator.messages import STATE
from harness.simulator.posthog_api import PosthogApiConfig
from harness.simulator.profiles import Profiles, SimulatorConfigError, load_profiles
from harness.simulator.state import SimState

__all__ = ["SimConfig", "Simulator", "build_state", "cli_main", "main", "run_simulator"]

SIMULATOR: web.AppKey[Simulator] = web.AppKey("simulator")


@dataclass(frozen=True, slots=True)
class SimConfig:
    """The simulator's own settings (it has no access to the harness's config)."""

    host: str = "127.0.0.1"
    port: int = 0
    profile: str | None = None
    time_scale: float = 1.0
    seed: int = 0
    faults: str = ""
    posthog_only: bool = False
    posthog: PosthogApiConfig = field(default_factory=PosthogApiConfig)


def build_state(config: SimConfig) -> SimState:
    """Profiles + fault settings (profile file first, then `--faults`) → a fresh state."""
    if config.time_scale < 0:
        raise SimulatorConfigError("--time-scale: must be >= 0")
    profiles: Profiles = load_profiles(config.profile)
    faults = FaultSettings(
        rates=dict(profiles.faults),
        per_model={m.id: dict(m.faults) for m in profiles.models.values() if m.faults},
        retry_after_s=profiles.retry_after_s,
        slow_first_byte_s=profiles.slow_first_byte_s,
    )
    try:
        parse_fault_spec(config.faults, faults, _resolver(profiles))
    except ValueError as exc:
        raise SimulatorConfigError(str(exc)) from None
    return SimState(profiles, faults, seed=config.seed, time_scale=config.time_scale)


def _resolver(profiles: Profiles) -> Callable[[str], str | None]:
    def resolve(model: Any) -> str | None:
        found = profiles.resolve(model) if isinstance(model, str) else None
        return found.id if found else None

    return resolve


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


async def _requests(request: web.Request) -> web.Response:
    records = request.app[STATE].records
    body = b"".join(orjson.dumps(r) + b"\n" for r in records)
    return web.Response(body=body, content_type="application/x-ndjson")


async def _batches(request: web.Request) -> web.Response:
    """Ground truth of the Message Batches: one JSON line per batch created, oldest first."""
    state = request.app[STATE]
    now = time.monotonic()
    with_ids = request.query.get("custom_ids") in ("1", "true")
    body = b"".join(orjson.dumps(b.truth(now, with_ids=with_ids)) + b"\n" for b in state.batches.batches)
    return web.Response(body=body, content_type="application/x-ndjson")


async def _reset(request: web.Request) -> web.Response:
    request.app[STATE].reset()
    posthog_api.reset(request.app)
    return _json({"ok": True})


async def _events(request: web.Request) -> web.Response:
    store = request.app[STATE].events
    payload: dict[str, Any] = store.summary()
    if request.query.get("summary") not in ("1", "true"):
        payload["events"] = list(store.by_uuid.values())
    return _json(payload)


def _faults_view(faults: FaultSettings) -> dict[str, Any]:
    return {
        "rates": faults.rates,
        "per_model": faults.per_model,
        "retry_after_s": faults.retry_after_s,
        "slow_first_byte_s": faults.slow_first_byte_s,
        "posthog_throttle_every": faults.posthog_throttle_every,
        "posthog_retry_after_s": faults.posthog_retry_after_s,
    }


async def _get_faults(request: web.Request) -> web.Response:
    return _json(_faults_view(request.app[STATE].faults))


async def _set_faults(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        body = orjson.loads(await request.read())
        updated = state.faults.copy()
        updated.apply_json(body, _resolver(state.profiles))
    except ValueError as exc:
        return _json({"error": str(exc)}, status=400)
    state.faults = updated
    return _json(_faults_view(updated))


async def _outage(request: web.Request) -> web.Response:
    """`{"target": "anthropic"|"posthog", "mode": "refuse"|"500", "seconds": S}`."""
    state = request.app[STATE]
    try:
        body = orjson.loads(await request.read())
        target, mode, seconds = body["target"], body["mode"], float(body["seconds"])
    except (ValueError, KeyError, TypeError):
        return _json({"error": "expected {target, mode, seconds}"}, status=400)
    if target not in ("anthropic", "posthog") or mode not in ("refuse", "500") or seconds < 0:
        return _json({"error": "target: anthropic|posthog, mode: refuse|500, seconds >= 0"}, status=400)
    if target == "anthropic" and mode == "refuse":
        request.app[SIMULATOR].refuse_for(seconds)
    else:
        state.outages[target] = (mode, time.monotonic() + seconds)
    return _json({"ok": True, "target": target, "mode": mode, "seconds": seconds})


async def _health(request: web.Request) -> web.Response:
    return _json({"ok": True})


def build_app(
    state: SimState, *, posthog_only: bool = False, posthog: PosthogApiConfig | None = None
) -> web.Application:
    """The aiohttp application: Anthropic routes (unless posthog-only), capture, PostHog app API, control."""
    app = web.Application(client_max_size=messages.MAX_BODY_BYTES + 1024 * 1024)
    app[STATE] = state
    if not posthog_only:
        app.add_routes(messages.routes())
        app.add_routes(batches.routes())
    app.add_routes(capture.routes())
    posthog_api.install(app, posthog or PosthogApiConfig())
    app.add_routes(
        [
            web.get("/_sim/requests", _requests),
            web.get("/_sim/batches", _batches),
            web.post("/_sim/reset", _reset),
            web.get("/_sim/events", _events),
            web.get("/_sim/faults", _get_faults),
            web.post("/_sim/faults", _set_faults),
            web.post("/_sim/outage", _outage),
            web.get("/_sim/health", _health),
        ]
    )
    return app


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


class Simulator:
    """One running simulator in this event loop: `await start()`, `url`, `await stop()`."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.state = build_state(config)
        self.app = build_app(self.state, posthog_only=config.posthog_only, posthog=config.posthog)
        self.app[SIMULATOR] = self
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=0.5)
        self._server: asyncio.Server | None = None
        self._reopen: asyncio.TimerHandle | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    async def start(self) -> str:
        await self._runner.setup()
        await self._open(_listen(self.config.host, self.config.port))
        return self.url

    async def _open(self, sock: socket.socket) -> None:
        assert self._runner.server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._runner.server, sock=sock, backlog=4096)
        self.port = sock.getsockname()[1]

    def refuse_for(self, seconds: float) -> None:
        """Close the listening socket (and open connections) now; re-open after `seconds`."""
        loop = asyncio.get_running_loop()
        # Let the control response go out before the connections are cut.
        loop.call_later(0.05, self._close_all, seconds)

    def _close_all(self, seconds: float) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._runner.server is not None:
            for handler in self._runner.server.connections:
                handler.force_close()
        if self._reopen is not None:
            self._reopen.cancel()
        loop = asyncio.get_running_loop()
        self._reopen = loop.call_later(seconds, lambda: loop.create_task(self._reopen_socket()))

    async def _reopen_socket(self) -> None:
        self._reopen = None
        for _ in range(100):
            try:
                await self._open(_listen(self.config.host, self.port))
                return
            except OSError:
                await asyncio.sleep(0.05)
        print(f"simulator: could not re-open port {self.port}", file=sys.stderr, flush=True)

    async def stop(self) -> None:
        if self._reopen is not None:
            self._reopen.cancel()
        if self._server is not None:
            self._server.close()
            self._server = None
        await self._runner.cleanup()


async def run_simulator(config: SimConfig, ready: Callable[[str], None] | None = None) -> None:
    """Serve until SIGINT or SIGTERM; `ready(url)` is called once the socket listens."""
    sim = Simulator(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        url = await sim.start()
        if ready is not None:
            ready(url)
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await sim.stop()


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop (when installed, unless `asyncio` is asked for): the simulator then serves ~1.5x the streams per core."""
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise
        return None
    return uvloop.new_event_loop


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harness.simulator",
        description="Anthropic Messages API + PostHog capture simulator on 127.0.0.1.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one (default 0)")
    parser.add_argument("--profile", default=None, help="model profile TOML (default: the shipped one)")
    parser.add_argument("--time-scale", type=float, default=1.0, help="multiply every delay (0 = none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of answers and timing draws")
    parser.add_argument("--faults", default="", help="name=rate[,model:name=rate][,retry_after_s=S]")
    parser.add_argument(
        "--event-loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="auto: uvloop when installed",
    )
    parser.add_argument("--posthog-only", action="store_true", help="serve only the PostHog endpoints")
    posthog_api.add_arguments(parser)
    return parser


def _announce(url: str) -> None:
    print(f"simulator listening on {url}", flush=True)


def cli_main(argv: list[str]) -> int:
    """Parse `argv`, serve until a signal; 0 on a clean stop, 2 on a bad option or profile."""
    args = _parser().parse_args(argv)
    config = SimConfig(
        host=args.host,
        port=args.port,
        profile=args.profile,
        time_scale=args.time_scale,
        seed=args.seed,
        faults=args.faults,
        posthog_only=args.posthog_only,
        posthog=posthog_api.config_from_args(args),
    )
    try:
        with asyncio.Runner(loop_factory=_loop_factory(args.event_loop)) as runner:
            runner.run(run_simulator(config, ready=_announce))
    except SimulatorConfigError as exc:
        print(f"simulator: {exc}", file=sys.stderr, flush=True)
        return 2
    except OSError as exc:
        print(f"simulator: cannot listen on {config.host}:{config.port}: {exc.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


def main(argv: list[str] | None = None) -> None:
    """Entry point of `python -m harness.simulator`."""
    with contextlib.suppress(BrokenPipeError):
        sys.exit(cli_main(sys.argv[1:] if argv is None else argv))
