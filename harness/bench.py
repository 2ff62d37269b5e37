"""The composition root: config → dataset → prices → plan → target → runner(sinks) → report.

It holds no logic of its own beyond wiring and the order of checks: everything
that can refuse a run (dataset, prices, config, results directory, unknown model,
bad key) is checked before the first call is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from harness import __version__
from harness.client import ClaudeClient, max_tokens_of
from harness.config import RunConfig
from harness.dataset import load_cases
from harness.errors import HarnessError, Interrupted, StorageError, TargetError
from harness.events import EventSettings, EventSink
from harness.limiter import Limiter, PoolLimits, default_pool_key, estimate_call_input
from harness.plan import make_plan
from harness.pricing import PriceTable
from harness.progress import ProgressSink, print_model_table
from harness.records import PlannedCall
from harness.runner import Runner, RunnerSettings, RunOutcome
from harness.simlauncher import SimulatorProcess
from harness.store import RunStore, load_calls
from harness.workers import WorkerPool, auto_workers, split_job

__all__ = ["RunResult", "execute_run", "new_run_id"]

ANTHROPIC_URL = "https://api.anthropic.com"
POSTHOG_DEFAULT_HOST = "https://us.i.posthog.com"


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    outcome: RunOutcome
    delivery: dict[str, Any]
    report: Any = None


def new_run_id() -> str:
    """Sortable UTC timestamp plus a short random suffix."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def _git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"harness": __version__, "python": sys.version.split()[0]}
    for name in ("anthropic", "posthog", "polars", "genai-prices", "asyncio-throttle", "aiohttp"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "missing"
    return found


def needs_simulator(cfg: RunConfig) -> bool:
    return cfg.target == "simulator" and not cfg.base_url


def launch_simulator(cfg: RunConfig) -> SimulatorProcess:
    """Spawn the simulator for this run without waiting: it boots while the harness imports and loads."""
    return SimulatorProcess.launch(
        time_scale=cfg.sim_time_scale, seed=cfg.sim_seed, profile=cfg.sim_profile, faults=cfg.sim_faults
    )


async def execute_run(
    cfg: RunConfig,
    *,
    console: Console | None = None,
    cli_args: dict[str, Any] | None = None,
    simulator: SimulatorProcess | None = None,
) -> RunResult:
    """Run a whole benchmark; raise HarnessError for run-level problems (after saving what finished).

    `simulator` is one already launched by the caller (see `launch_simulator`); it is stopped here.
    """
    if needs_simulator(cfg) and simulator is None:
        simulator = launch_simulator(cfg)
    try:
        return await _execute(cfg, console or Console(stderr=True), cli_args, simulator)
    finally:
        if simulator is not None:
            simulator.stop()


async def _execute(
    cfg: RunConfig, console: Console, cli_args: dict[str, Any] | None, sim: SimulatorProcess | None
) -> RunResult:
    if cfg.dataset is None:
        raise HarnessError("--dataset: a dataset is required")
    loaded = load_cases(cfg.dataset, skip_invalid=cfg.skip_invalid)
    prices = PriceTable.resolve(cfg.model_names, cfg.prices)

    run_id = cfg.resume or cfg.run_id or new_run_id()
    plan = make_plan(
        loaded.cases,
        cfg.model_names,
        repeats=cfg.repeats,
        seed=cfg.seed,
        run_id=run_id,
        rate=cfg.rate,
        arrival=cfg.arrival,
        max_calls=cfg.max_calls,
    )

    capture: SimulatorProcess | None = None
    try:
        base_url = cfg.base_url
        if sim is not None:
            base_url = sim.wait_ready().url
        api_key = cfg.api_key.get() if cfg.target == "anthropic" or cfg.api_key else ""
        if cfg.target != "anthropic" and not api_key:
            api_key = "sk-ant-simulator-key"
        posthog_key = cfg.posthog_key.get()
        posthog_host = cfg.posthog_host
        if not posthog_key:
            # Offline: the events go to the simulator's capture endpoint (our own, or a capture-only one).
            posthog_key = "phc_simulator"
            if not posthog_host and sim is not None:
                posthog_host = sim.url
            elif not posthog_host and cfg.posthog_enabled:
                capture = SimulatorProcess.start(posthog_only=True)
                posthog_host = capture.url
        posthog_host = posthog_host or POSTHOG_DEFAULT_HOST

        client_kwargs: dict[str, Any] = {
            "api_key": api_key,
            "base_url": base_url or ANTHROPIC_URL,
            "timeout_s": cfg.timeout_s,
            "transport": cfg.transport,
            "tag_requests": cfg.target != "anthropic",
            "max_connections": max(100, cfg.concurrency, cfg.max_in_flight or 0),
        }
        workers = cfg.workers or auto_workers(
            concurrency=cfg.concurrency,
            rate=cfg.rate,
            max_in_flight=cfg.max_in_flight,
            local_simulator=sim is not None or _is_loopback(base_url),
        )
        client = ClaudeClient(**client_kwargs)
        try:
            # With worker processes each worker opens its own connections; here only the checks run.
            warm = 1 if workers > 1 else min(64, cfg.max_in_flight or cfg.concurrency)
            await _preflight(client, cfg.model_names, warm=warm)
            store, plan = _open_store(cfg, run_id, loaded, prices, plan, base_url, cli_args)
            target = _Target(client, client_kwargs, workers, base_url or ANTHROPIC_URL)
            result = await _run(cfg, store, plan, target, prices, posthog_key, posthog_host, console)
        finally:
            await client.aclose()
    finally:
        if capture:
            capture.stop()
    return result


async def _preflight(client: ClaudeClient, models: tuple[str, ...], warm: int = 1) -> None:
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
            raise TargetError(f"the API refused the key ({problem}); check ANTHROPIC_API_KEY")
        if problem == "connection":
            raise TargetError("cannot reach the target; check --base-url / the network")


def _open_store(
    cfg: RunConfig,
    run_id: str,
    loaded: Any,
    prices: PriceTable,
    plan: list[PlannedCall],
    base_url: str | None,
    cli_args: dict[str, Any] | None,
) -> tuple[RunStore, list[PlannedCall]]:
    if cfg.resume:
        store = RunStore.resume(cfg.results_dir, run_id)
        recorded = store.manifest.get("dataset", {}).get("sha256")
        if recorded and recorded != loaded.sha256:
            raise StorageError(
                f"--resume {run_id}: the dataset changed since the run started (sha256 differs)"
            )
        finished = store.finished_call_ids()
        plan = [c for c in plan if c.call_id not in finished]
        store.update_manifest(resumed_at=datetime.now(UTC).isoformat(), status="running")
        return store, plan
    manifest = {
        "run_id": run_id,
        "status": "running",
        "started_at": datetime.now(UTC).isoformat(),
        "config": cfg.redacted(),
        "cli": cli_args or {},
        "dataset": {
            "path": str(loaded.path),
            "sha256": loaded.sha256,
            "format": loaded.format,
            "cases": len(loaded.cases),
            "skipped": [str(p) for p in loaded.skipped],
        },
        "models": list(cfg.model_names),
        "target": cfg.target,
        "base_url_host": _host(base_url),
        "versions": _versions(),
        "git_sha": _git_sha(),
        "prices": prices.source(),
        "planned": len(plan),
    }
    return RunStore.create(cfg.results_dir, run_id, manifest), plan


def _is_loopback(url: str | None) -> bool:
    """A target on this machine (the simulator, a local mock) needs a core of its own."""
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname if url else None
    return host in ("127.0.0.1", "localhost", "::1")


def _host(url: str | None) -> str | None:
    if not url:
        return None
    from urllib.parse import urlsplit

    return urlsplit(url).netloc or None


@dataclass
class _Target:
    """How calls are sent: this process's client, or `workers` processes built from `client_kwargs`."""

    client: ClaudeClient
    client_kwargs: dict[str, Any]
    workers: int
    base_url: str


async def _run(
    cfg: RunConfig,
    store: RunStore,
    plan: list[PlannedCall],
    target: _Target,
    prices: PriceTable,
    posthog_key: str,
    posthog_host: str,
    console: Console,
) -> RunResult:
    run_id = store.manifest["run_id"]
    pools = {_pool(m): PoolLimits(rpm=m.rpm, itpm=m.itpm, otpm=m.otpm) for m in cfg.models}
    model_pool = {m.name: _pool(m) for m in cfg.models}
    limiter = Limiter(pools, model_pool)
    base_url = target.base_url
    events: EventSink | None = None
    if cfg.posthog_enabled:
        events = EventSink(
            EventSettings(
                api_key=posthog_key,
                host=posthog_host,
                event_name=cfg.event_name,
                prompt_capture=cfg.prompt_capture,
                run_id=run_id,
                dataset=str(cfg.dataset),
                target=cfg.target,
                base_url=base_url,
                flush_timeout_s=cfg.posthog_flush_timeout_s,
                max_retries=cfg.posthog_max_retries,
            ),
            store.run_dir,
        )
        if cfg.resume:
            events.recover(store)
        events.wait_ready()
    progress = ProgressSink(len(plan), mode=cfg.progress, console=console)
    sinks: list[Any] = [store, *([events] if events else []), progress]
    settings = RunnerSettings(
        run_id=run_id,
        target=cfg.target,
        stream=cfg.stream,
        concurrency=cfg.concurrency,
        ramp_up_s=cfg.ramp_up_s or 0.0,
        rate=cfg.rate,
        arrival=cfg.arrival,
        max_in_flight=cfg.max_in_flight,
        max_retries=cfg.max_retries,
        duration_s=cfg.duration_s,
        max_cost_usd=cfg.max_cost_usd,
        grace_s=cfg.grace_s,
        store_text=cfg.store_text,
        seed=cfg.seed,
    )
    engine: Runner | WorkerPool
    if target.workers > 1:
        jobs = split_job(
            target.workers,
            settings,
            plan,
            pools,
            model_pool=model_pool,
            prices=prices,
            client=target.client_kwargs,
            warm=min(64, -(-(cfg.max_in_flight or cfg.concurrency) // target.workers)),
            event_loop=cfg.event_loop,
        )
        engine = WorkerPool(jobs, sinks, len(plan))
    else:
        engine = Runner(
            settings,
            target.client,
            limiter.pool_for,
            estimate_call_input,
            max_tokens_of,
            prices,
            sinks,
        )
    caught: list[str] = []
    loop = asyncio.get_running_loop()
    # The PostHog client's threads share the GIL with the event loop: a short switch interval
    # bounds how long they can hold the loop back (and so distort time marks) to ~0.5 ms.
    previous_switch = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    # Everything imported so far lives for the whole run: keep the collector from re-scanning it on the loop.
    gc.freeze()

    def on_signal(name: str) -> None:
        if isinstance(engine, WorkerPool):
            engine.request_stop("signal", now=bool(caught))
        elif caught:  # a second signal: stop waiting for in-flight calls
            engine.s = replace(engine.s, grace_s=0.0)
        caught.append(name)
        if isinstance(engine, Runner):
            engine.request_stop("signal")

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal, sig.name)
    try:
        outcome = await (engine.run() if isinstance(engine, WorkerPool) else engine.run(plan))
    finally:
        sys.setswitchinterval(previous_switch)
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        await limiter.aclose()
        progress.close()
        delivery: dict[str, Any] = {"enabled": False}
        if events:
            await asyncio.to_thread(events.close)
            delivery = events.stats()
        store.close()
    if outcome.loop_lag.get("samples", 0) >= 100 and outcome.loop_lag.get("p99_ms", 0.0) > 5.0:
        console.print(
            f"[yellow]warning:[/] the harness's event loop lagged (p99 {outcome.loop_lag['p99_ms']:.1f} ms): "
            "latencies may include the harness's own delay; lower the load or use fewer streams per process"
        )
    if outcome.saturated:
        console.print(
            "[yellow]warning:[/] the run could not keep to its arrival schedule (limiter, --max-in-flight or "
            "the harness itself): latency_from_schedule_s includes that queueing"
        )
    status = "interrupted" if caught else ("failed" if outcome.error else "finished")
    store.update_manifest(
        status=status,
        ended_at=datetime.now(UTC).isoformat(),
        finished=outcome.finished,
        cancelled=outcome.cancelled,
        not_started=outcome.not_started,
        stopped_by=outcome.stopped_by,
        budget_stopped=outcome.stopped_by == "budget",
        spent_usd=outcome.spent_usd,
        loop_lag=outcome.loop_lag,
        release_lateness=outcome.release_lateness,
        workers=target.workers,
        worker_health=outcome.workers,
        saturated=outcome.saturated,
        events=delivery,
    )
    result = RunResult(run_id=run_id, run_dir=store.run_dir, outcome=outcome, delivery=delivery)
    if caught:
        raise Interrupted(caught[0])
    if outcome.error:
        raise outcome.error
    if cfg.report:
        calls = load_calls(store.run_dir)
        if calls.height:
            print_model_table(calls, console)
        result.report = _write_report(store.run_dir, cfg, console)
    return result


def _pool(m: Any) -> str:
    return m.pool or default_pool_key(m.name)


def _write_report(run_dir: Path, cfg: RunConfig, console: Console) -> Any:
    from harness.report import Constraints, write_report

    constraints = Constraints.from_mapping(dict(cfg.select)) if cfg.select else None
    return write_report(run_dir, constraints=constraints)
