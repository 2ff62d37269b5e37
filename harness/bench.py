"""The composition root: config → dataset → prices → plan (× variants) → target → runner(sinks) → report.

It holds no logic of its own beyond wiring and the order of checks: everything
that can refuse a run (dataset, prices, config, results directory, unknown model,
bad key) is checked before the first call is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from harness import __version__, loops
from harness.client import ClaudeClient
from harness.config import ModelSpec, RunConfig
from harness.dataset import load_cases
from harness.errors import ConfigError, HarnessError, Interrupted, StorageError
from harness.events.event import EventSettings
from harness.events.sink import EventSink
from harness.graders import judge_specs
from harness.health import MachineSample
from harness.judge import JUDGE_PROMPT_VERSION
from harness.limiter import Limiter, PoolLimits, default_pool_key
from harness.plan import make_plan
from harness.pricing import PriceTable
from harness.progress import ProgressSink
from harness.records import Case, PlannedCall
from harness.rundir import RunDir
from harness.runner import Engine, Runner, RunnerSettings, RunOutcome, Sink
from harness.simlauncher import SimulatorProcess
from harness.store import RunStore
from harness.target import Target, launch_simulator, needs_simulator, preflight
from harness.variants import parse_variants
from harness.workers import WorkerPool, auto_workers

__all__ = ["RunResult", "execute_run", "new_run_id"]


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


async def execute_run(
    cfg: RunConfig,
    *,
    console: Console | None = None,
    cli_args: dict[str, Any] | None = None,
    simulator: SimulatorProcess | None = None,
    extra_sinks: Sequence[Sink] = (),
) -> RunResult:
    """Run a whole benchmark; raise HarnessError for run-level problems (after saving what finished).

    `simulator` is one already launched by the caller (see `target.launch_simulator`); it is
    stopped here. `extra_sinks` receive every record after the store, the events and the
    progress view (a benchmark's instrumentation, a test's probe).
    """
    if needs_simulator(cfg) and simulator is None:
        simulator = launch_simulator(cfg)
    try:
        return await _execute(cfg, console or Console(stderr=True), cli_args, simulator, extra_sinks)
    finally:
        if simulator is not None:
            simulator.stop()


async def _execute(
    cfg: RunConfig,
    console: Console,
    cli_args: dict[str, Any] | None,
    sim: SimulatorProcess | None,
    extra_sinks: Sequence[Sink],
) -> RunResult:
    if cfg.dataset is None:
        raise HarnessError("--dataset: a dataset is required")
    loaded = load_cases(cfg.dataset, skip_invalid=cfg.skip_invalid)
    if cfg.arrival == "trace" and not any(c.arrival_offset_s is not None for c in loaded.cases):
        raise HarnessError(
            f"--arrival trace: {cfg.dataset} has no arrival_offset_s (see `harness import posthog`)"
        )
    judge = _judge_of(cfg, loaded.cases)
    prices = PriceTable.resolve([*cfg.model_names, *([judge.name] if judge else [])], cfg.prices)

    run_id = cfg.resume or cfg.run_id or new_run_id()
    source = cfg.variants_source or "variants"
    # A variant the API would refuse on some case is a ConfigError here, before any call.
    plan = make_plan(
        loaded.cases,
        cfg.model_names,
        repeats=cfg.repeats,
        seed=cfg.seed,
        run_id=run_id,
        rate=cfg.rate,
        arrival=cfg.arrival,
        max_calls=cfg.max_calls,
        trace_speed=cfg.trace_speed,
        variants=parse_variants(cfg.variants, source),
        variants_source=source,
    )

    target = Target.resolve(cfg, sim)
    try:
        workers = cfg.workers or auto_workers(
            concurrency=cfg.concurrency,
            rate=cfg.rate,
            max_in_flight=cfg.max_in_flight,
            local_simulator=target.loopback,
        )
        client = ClaudeClient(**target.client_kwargs(cfg))
        try:
            # With worker processes each worker opens its own connections; here only the checks run.
            warm = 1 if workers > 1 else _warm(cfg, target, 1)
            await preflight(client, (*cfg.model_names, *([judge.name] if judge else [])), warm=warm)
            run, plan = _open_run(cfg, run_id, loaded, prices, plan, target, cli_args, judge)
            with run:
                engine = _engine(cfg, run_id, target, client, workers, prices, judge)
                cases = {case.id: case for case in loaded.cases}
                return await _run(cfg, run, plan, cases, engine, target, extra_sinks, console)
        finally:
            await client.aclose()
    finally:
        target.close()


def _open_run(
    cfg: RunConfig,
    run_id: str,
    loaded: Any,
    prices: PriceTable,
    plan: list[PlannedCall],
    target: Target,
    cli_args: dict[str, Any] | None,
    judge: ModelSpec | None,
) -> tuple[RunDir, list[PlannedCall]]:
    if cfg.resume:
        run = RunDir.resume(cfg.results_dir, run_id)
        recorded = run.manifest.get("dataset", {}).get("sha256")
        if recorded and recorded != loaded.sha256:
            run.close()
            raise StorageError(
                f"--resume {run_id}: the dataset changed since the run started (sha256 differs)"
            )
        if not _json_equal(run.manifest.get("variants") or {}, cfg.variants):
            run.close()
            raise StorageError(
                f"--resume {run_id}: the variants changed since the run started (see the manifest's variants)"
            )
        finished = run.finished_call_ids()
        plan = [c for c in plan if c.call_id not in finished]
        run.update_manifest(resumed_at=datetime.now(UTC).isoformat(), status="running")
        return run, plan
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
        "variants": {name: dict(overrides) for name, overrides in cfg.variants.items()},  # as given
        "target": target.kind,
        "base_url_host": target.base_url_host,
        "versions": _versions(),
        "git_sha": _git_sha(),
        "prices": prices.source(),
        "planned": len(plan),
        "judge": {"model": judge.name, "repeats": cfg.judge_repeats, "prompt": JUDGE_PROMPT_VERSION}
        if judge
        else None,
    }
    return RunDir.create(cfg.results_dir, run_id, manifest), plan


def _judge_of(cfg: RunConfig, cases: Sequence[Case]) -> ModelSpec | None:
    """The judge when some case needs one; refused when it is an arm under test (unless allowed)."""
    if not any(judge_specs(c.expected) for c in cases):
        return None
    if cfg.judge_model in cfg.model_names and not cfg.allow_self_judge:
        raise ConfigError(
            "--judge-model",
            f"{cfg.judge_model} is also a model under test: a judge grading its own answers is biased; "
            "choose another judge model or pass --allow-self-judge",
        )
    return cfg.judge or ModelSpec(name=cfg.judge_model)


def _engine(
    cfg: RunConfig,
    run_id: str,
    target: Target,
    client: ClaudeClient,
    workers: int,
    prices: PriceTable,
    judge: ModelSpec | None,
) -> _EngineParts:
    """This process's runner, or `workers` processes each with a client built from the target."""
    limited = [*cfg.models, *([judge] if judge and judge.name not in cfg.model_names else [])]
    pools = {_pool(m): PoolLimits(rpm=m.rpm, itpm=m.itpm, otpm=m.otpm) for m in limited}
    model_pool = {m.name: _pool(m) for m in limited}
    settings = replace(RunnerSettings.from_config(cfg, run_id), judge_model=judge.name if judge else None)
    limiter = Limiter(pools, model_pool)
    if workers <= 1:
        return _EngineParts(lambda sinks: Runner(settings, client, limiter, prices, sinks), limiter, 1)

    def pool(sinks: Sequence[Sink]) -> Engine:
        return WorkerPool(
            workers,
            settings,
            sinks,
            pools=pools,
            model_pool=model_pool,
            prices=prices,
            client=target.client_kwargs(cfg),
            warm=_warm(cfg, target, workers),
            event_loop=cfg.event_loop,
        )

    return _EngineParts(pool, limiter, workers)


def _warm(cfg: RunConfig, target: Target, workers: int) -> int:
    """Keep-alive connections each process opens before the clock starts.

    A call on a new connection counts the connect in its TTFT, and on a busy loop the
    iterations around it too (p99 +460 ms at concurrency 256, issue #16). On a loopback
    target every one of a process's streams gets one, up to 1,024 (they are cheap there); on
    a remote target at most 64 (the rest open during the first calls).
    """
    share = -(-(cfg.max_in_flight or cfg.concurrency) // workers)
    return min(1024 if target.loopback else 64, share)


@dataclass
class _EngineParts:
    """An engine still waiting for its sinks (they need the run directory, opened after the checks)."""

    build: Callable[[Sequence[Sink]], Engine]
    limiter: Limiter
    workers: int


async def _run(
    cfg: RunConfig,
    run: RunDir,
    plan: list[PlannedCall],
    cases: dict[str, Case],
    parts: _EngineParts,
    target: Target,
    extra_sinks: Sequence[Sink],
    console: Console,
) -> RunResult:
    store = RunStore(run, store_text=cfg.store_text)
    events: EventSink | None = None
    if cfg.posthog_enabled:
        settings = EventSettings.from_config(
            cfg, api_key=target.posthog_key, host=target.posthog_host, base_url=target.api_url
        )
        events = EventSink(settings, run, cases)
        if cfg.resume:
            events.recover()
        events.wait_ready()
    progress = ProgressSink(len(plan), mode=cfg.progress, console=console)
    # Store first: a record the store could not take reaches no event (see runner.deliver).
    engine = parts.build([store, *([events] if events else []), progress, *extra_sinks])
    caught: list[str] = []
    loop = asyncio.get_running_loop()

    def on_signal(name: str) -> None:
        engine.request_stop("signal", now=bool(caught))  # a second signal: stop waiting for in-flight calls
        caught.append(name)

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal, sig.name)
    before = MachineSample.now()
    try:
        with loops.measuring():
            outcome = await engine.run(plan)
    finally:
        after = MachineSample.now()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        await parts.limiter.aclose()
        progress.close()
        delivery: dict[str, Any] = {"enabled": False}
        if events:
            await asyncio.to_thread(events.close)
            delivery = events.stats()
        store.close()
    status = "interrupted" if caught else ("failed" if outcome.error else "finished")
    run.update_manifest(
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
        workers=parts.workers,
        workers_auto=cfg.workers is None,  # harness.workers.auto_workers chose the number
        worker_health=outcome.workers,
        saturated=outcome.saturated,
        late_admissions=outcome.late_admissions,
        released=outcome.released,
        guard=outcome.guard,
        events=delivery,
        health={"process": _process_health(before, after, outcome, delivery)},
    )
    _say_health(run, console)
    result = RunResult(run_id=run.run_id, run_dir=run.path, outcome=outcome, delivery=delivery)
    if caught:
        raise Interrupted(caught[0])
    if outcome.error:
        raise outcome.error
    if cfg.report:
        result.report = _write_report(run.path, cfg, console)
    return result


def _process_health(
    before: MachineSample, after: MachineSample, outcome: RunOutcome, delivery: dict[str, Any]
) -> dict[str, Any]:
    """The harness's CPU over the run (this process, its workers, the PostHog delivery child), per call
    and as a share of one core; its loop thread's time on and waiting for a CPU; the hypervisor's steal."""
    figures = after.since(before)
    workers = sum(w.get("cpu_s") or 0.0 for w in outcome.workers)
    cpu = figures["process_cpu_s"] + workers + float(delivery.get("cpu_s") or 0.0)
    calls = outcome.finished
    figures["harness_cpu_s"] = round(cpu, 4)
    figures["harness_cpu_share"] = round(cpu / figures["wall_s"], 4)
    figures["cpu_per_call_ms"] = round(1000 * cpu / calls, 4) if calls else None
    if outcome.workers:  # the loop that times the calls is a worker's: the busiest one's figures
        guards = [w.get("guard") or {} for w in outcome.workers]
        for key in ("loop_cpu_share", "loop_wait_share"):
            values = [g[key] for g in guards if g.get(key) is not None]
            figures[key] = max(values) if values else None
    return figures


def _say_health(run: RunDir, console: Console) -> None:
    """The end-of-run warnings (the report's top lines, from the same figures), and the manifest's copy."""
    from harness.report.health import measure_health

    try:
        health = measure_health(run.load_calls(), run.manifest)
    except StorageError:
        return
    for notice in health.notices:
        console.print(f"[yellow]warning:[/] {escape(notice)}", soft_wrap=True)
    run.update_manifest(health={**run.manifest.get("health", {}), "self_delay": health.figures()})


def _json_equal(recorded: Any, current: Any) -> bool:
    """Whether a manifest value (read back from JSON) is the value this run would record."""
    return bool(json.loads(json.dumps(current, default=str)) == recorded)


def _pool(m: Any) -> str:
    return m.pool or default_pool_key(m.name)


def _write_report(run_dir: Path, cfg: RunConfig, console: Console) -> Any:
    """The report's files, then its per-model summary on the console (the same figures)."""
    from harness.report import Constraints, write_report
    from harness.report.console import print_summary_table

    constraints = Constraints.from_mapping(dict(cfg.select)) if cfg.select else None
    report = write_report(run_dir, constraints=constraints)
    if report.summary.height:
        print_summary_table(report.summary, console)
    return report
