"""The composition root: config → dataset → prices → plan (× variants) → target → runner(sinks) → report.

It holds no logic of its own beyond wiring and the order of checks: everything
that can refuse a run (dataset, prices, config, results directory, unknown model,
bad key) is checked before the first call is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
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
from harness.batch import BatchEngine, BatchSettings, retry_candidates
from harness.batchjournal import Ledger
from harness.caching import apply_cache, cache_prefix, eligible_prefixes
from harness.client import ClaudeClient
from harness.config import ModelSpec, RunConfig
from harness.dataset import load_cases, provenance_of
from harness.errors import ConfigError, HarnessError, Interrupted, StorageError, TargetError
from harness.events.event import EventSettings
from harness.events.sink import EventSink
from harness.graders import judge_specs
from harness.health import MachineSample
from harness.judge import JUDGE_PROMPT_VERSION
from harness.limiter import Limiter, PoolLimits, default_pool_key
from harness.plan import make_plan
from harness.posthog_import import originals_of
from harness.pricing import BATCH_CONTEXT, PriceTable
from harness.progress import ProgressSink
from harness.records import Case, PlannedCall
from harness.rundir import RunDir
from harness.runfacts import run_facts
from harness.runner import Engine, Runner, RunnerSettings, RunOutcome, Sink
from harness.simlauncher import SimulatorProcess
from harness.store import RunStore
from harness.target import Target, launch_simulator, needs_simulator, preflight
from harness.variants import parse_variants
from harness.workers import WorkerPool, auto_workers

__all__ = ["RunResult", "cancel_batches", "execute_run", "new_run_id"]


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
    cases = [apply_cache(c, cfg.cache) for c in loaded.cases] if cfg.cache else loaded.cases
    if cfg.arrival == "trace" and not any(c.arrival_offset_s is not None for c in loaded.cases):
        raise HarnessError(
            f"--arrival trace: {cfg.dataset} has no arrival_offset_s (see `harness import posthog`)"
        )
    judge = _judge_of(cfg, loaded.cases)
    prices = PriceTable.resolve([*cfg.model_names, *([judge.name] if judge else [])], cfg.prices)
    # Batch mode: the arms at genai-prices' batch price; the judge (asked live) at the standard one.
    batch_prices = (
        PriceTable.resolve(cfg.model_names, cfg.prices, price_context=BATCH_CONTEXT)
        if cfg.mode == "batch"
        else None
    )

    run_id = cfg.resume or cfg.run_id or new_run_id()
    source = cfg.variants_source or "variants"
    # A variant the API would refuse on some case is a ConfigError here, before any call.
    plan = make_plan(
        cases,
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
    # The case each call sends (after its variant), for the events' $ai_input; taken before a
    # resume drops finished calls, whose rows an event recovery may still rebuild.
    sent = {(call.case.id, call.variant): call.case for call in plan}

    target = Target.resolve(cfg, sim)
    try:
        workers = (
            1
            if batch_prices is not None
            else cfg.workers
            or auto_workers(
                concurrency=cfg.concurrency,
                rate=cfg.rate,
                max_in_flight=cfg.max_in_flight,
                local_simulator=target.loopback,
            )
        )
        client = ClaudeClient(**target.client_kwargs(cfg))
        try:
            # With worker processes each worker opens its own connections; here only the checks run.
            warm = 1 if workers > 1 or batch_prices else _warm(cfg, target, 1)
            await preflight(client, (*cfg.model_names, *([judge.name] if judge else [])), warm=warm)
            plan = await _cache_plan(cfg, plan, client)
            run, plan, retries = _open_run(
                cfg, run_id, loaded, batch_prices or prices, plan, target, cli_args, judge
            )
            with run:
                engine = _engine(cfg, run_id, target, client, workers, prices, judge)
                if batch_prices is not None:
                    engine = _batch_engine(cfg, run_id, target, client, engine, batch_prices, retries)
                return await _run(cfg, run, plan, sent, engine, target, extra_sinks, console)
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
) -> tuple[RunDir, list[PlannedCall], dict[str, int]]:
    """The run directory (created or resumed), the calls still to make, and (batch mode with
    `--retry-errored`) the failed batch calls to submit again, with the attempts they made."""
    if cfg.resume:
        run = RunDir.resume(cfg.results_dir, run_id)
        was = run.manifest.get("mode") or "live"
        if was != cfg.mode:
            run.close()
            raise StorageError(f"--resume {run_id}: the run is a {was} run; resume it as one (--{was})")
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
        retries = retry_candidates(run.load_calls(), cfg.max_retries) if cfg.retry_errored else {}
        plan = [c for c in plan if c.call_id not in finished or c.call_id in retries]
        run.update_manifest(resumed_at=datetime.now(UTC).isoformat(), status="running")
        return run, plan, retries
    manifest = {
        "run_id": run_id,
        "mode": cfg.mode,
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
            # `harness import posthog`'s sidecar (query window, host, event, counts), when it is this file's
            "import": provenance_of(loaded.path, loaded.sha256),
        },
        "models": list(cfg.model_names),
        "variants": {name: dict(overrides) for name, overrides in cfg.variants.items()},  # as given
        "target": target.kind,
        "base_url_host": target.base_url_host,
        "versions": _versions(),
        "git_sha": _git_sha(),
        "prices": prices.source(),
        "methodology": run_facts(cfg, loaded.cases),  # load, client host, dataset lengths
        "planned": len(plan),
        "judge": {"model": judge.name, "repeats": cfg.judge_repeats, "prompt": JUDGE_PROMPT_VERSION}
        if judge
        else None,
    }
    run = RunDir.create(cfg.results_dir, run_id, manifest)
    originals = originals_of(loaded.cases)
    if originals is not None:  # an imported dataset: production's figures, for "original vs replayed"
        run.write_originals(originals)
    return run, plan, {}


async def _cache_plan(cfg: RunConfig, plan: list[PlannedCall], client: ClaudeClient) -> list[PlannedCall]:
    """Mark calls whose cached prefix is too short to cache, and group the rest for the warm-up.

    Each distinct (model, prefix) is counted once with the free count_tokens endpoint, before the
    first call; a call below its model's minimum is flagged, never counted as a miss.
    """
    keys = {id(c.case): cache_prefix(c.case) for c in plan}
    if not any(keys.values()):
        return plan
    overrides = {m.name: m.cache_min_tokens for m in cfg.models if m.cache_min_tokens}
    eligible = await eligible_prefixes(plan, client.count_tokens, overrides)
    variants_cache = any("cache" in v for v in cfg.variants.values())
    warm = cfg.cache_warmup if cfg.cache_warmup is not None else bool(cfg.cache or variants_cache)
    out = []
    for call in plan:
        key = keys[id(call.case)]
        if key is None:
            out.append(call)
            continue
        ok = eligible[(call.model, key)][1]
        group = hashlib.sha256(call.model.encode() + b"\0" + key).hexdigest()[:16] if warm and ok else None
        out.append(replace(call, cache_eligible=ok, cache_group=group))
    return out


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
        return _EngineParts(lambda sinks, *_: Runner(settings, client, limiter, prices, sinks), limiter, 1)

    def pool(sinks: Sequence[Sink], *_: Any) -> Engine:
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


def _batch_engine(
    cfg: RunConfig,
    run_id: str,
    target: Target,
    client: ClaudeClient,
    live: _EngineParts,
    prices: PriceTable,
    retries: dict[str, int],
) -> _EngineParts:
    """The batch engine; the judge (when a case needs one) goes live through the live runner."""
    settings = BatchSettings.from_config(cfg, run_id, quality_headers=target.kind == "simulator")

    def build(sinks: Sequence[Sink], run: RunDir, progress: ProgressSink) -> Engine:
        grader = live.build((), run, progress)
        assert isinstance(grader, Runner)
        return BatchEngine(
            settings, client, run, prices, sinks, grader=grader, view=progress, retries=retries
        )

    return _EngineParts(build, live.limiter, 1, batch=True)


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

    build: Callable[[Sequence[Sink], RunDir, ProgressSink], Engine]
    limiter: Limiter
    workers: int
    batch: bool = False


async def _run(
    cfg: RunConfig,
    run: RunDir,
    plan: list[PlannedCall],
    cases: dict[tuple[str, str | None], Case],
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
    engine = parts.build([store, *([events] if events else []), progress, *extra_sinks], run, progress)
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
    waiting = parts.batch and bool(outcome.batches.get("open"))
    if waiting and status == "finished":
        status = "submitted"  # --no-wait, or a budget stop: the batches run on; a resume collects them
    extra: dict[str, Any] = {"batches": outcome.batches} if parts.batch else {}
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
        **extra,
        health={"process": _process_health(before, after, outcome, delivery)},
    )
    if not parts.batch:  # a batch run has no time marks of its own to be distorted
        _say_health(run, console)
    result = RunResult(run_id=run.run_id, run_dir=run.path, outcome=outcome, delivery=delivery)
    if waiting:
        _say_batches_run_on(console, run, cfg, len(outcome.batches.get("open") or ()))
    if caught:
        raise Interrupted(caught[0])
    if outcome.error:
        raise outcome.error
    if waiting:
        return result  # no report before the results are in
    if cfg.report:
        result.report = _write_report(run.path, cfg, console)
    return result


def _say_batches_run_on(console: Console, run: RunDir, cfg: RunConfig, n: int) -> None:
    """The batches go on without us: how to collect them, and how to stop them."""
    where = "" if cfg.results_dir == Path("results") else f" --results-dir {cfg.results_dir}"
    console.print(
        f"{n} batch(es) keep running on the API's side; collect them with: "
        f"harness run --resume {run.run_id}{where}\n"
        f"cancel them with: harness batches cancel {run.run_id}{where}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


async def cancel_batches(results_dir: Path, run_id: str) -> list[str]:
    """`harness batches cancel RUN_ID`: cancel the run's open batches; one line per batch.

    Through the run's own target (its saved options, the key from the environment). The
    canceled requests come back `cancelled` when a resume collects the batches, and a
    resume after that submits them again, as it re-runs a live run's cancelled calls.
    """
    from harness.config import build_config

    run = RunDir.read(Path(results_dir) / run_id)
    manifest = run.manifest
    if manifest.get("mode") != "batch":
        raise ConfigError("RUN_ID", f"{run_id} is not a batch run")
    recorded = manifest.get("config")
    recorded = recorded if isinstance(recorded, dict) else {}
    given = {k: recorded.get(k) for k in ("target", "base_url", "timeout_s", "transport")}
    cfg = build_config({**given, "models": manifest.get("models") or None, "posthog_enabled": False})
    if needs_simulator(cfg):
        raise TargetError(
            f"{run_id} ran on a simulator the harness started for it; it ended with the run, and its "
            "batches with it (keep batches across runs with `harness simulate` and --base-url)"
        )
    ledger = Ledger.load(run.batch_entries())
    target = Target.resolve(cfg)
    client = ClaudeClient(**target.client_kwargs(cfg))
    lines: list[str] = []
    try:
        for b in ledger.batches.values():
            if b.state == "intent":
                lines.append(f"{b.key}: creation never acknowledged; a resume settles it")
                continue
            if b.state != "open" or b.batch_id is None:
                continue
            r = await client.cancel_batch(b.batch_id)
            if r.ok and r.batch is not None:
                lines.append(f"{b.key} {b.batch_id}: {r.batch.processing_status}")
            elif r.fatal:
                raise TargetError(f"the API refused the key ({r.error_message})")
            else:
                lines.append(f"{b.key} {b.batch_id}: not canceled ({r.error_message})")
    finally:
        await client.aclose()
        target.close()
    return lines or [f"{run_id}: no batch is open"]


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
