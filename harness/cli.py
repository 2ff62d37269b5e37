"""The `harness` command: a translator from options to `RunConfig` and one run of the event loop (`loops.run`).

Every `HarnessError` becomes one clear line (no traceback) and its exit code:
0 ok, 1 regression (compare) or drift (history --fail-on-drift), 2 bad input or config,
3 not enough data to decide (compare; history --fail-on-drift), 130 SIGINT, 143 SIGTERM.
No logic lives here beyond that translation.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from harness.errors import HarnessError
from harness.secrets import POSTHOG_KEY_ENV, POSTHOG_PERSONAL_KEY_ENV, Secret, env_secrets, redact

app = typer.Typer(
    help="Batch replay and load-benchmark harness for Anthropic's Claude models.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals could hold a key
)
events_app = typer.Typer(help="PostHog event delivery.", no_args_is_help=True)
app.add_typer(events_app, name="events")
import_app = typer.Typer(help="Import production traffic as a dataset.", no_args_is_help=True)
app.add_typer(import_app, name="import")
posthog_app = typer.Typer(help="Set up the user's PostHog project.", no_args_is_help=True)
app.add_typer(posthog_app, name="posthog")
batches_app = typer.Typer(help="The Message Batches of a batch run.", no_args_is_help=True)
app.add_typer(batches_app, name="batches")
err = Console(stderr=True)
out = Console()


def _fail(exc: HarnessError) -> NoReturn:
    err.print(  # the message is escaped: "[variants.NAME]" in it is text, not a style
        f"[red]error:[/] {escape(redact(str(exc), env_secrets()))}",
        highlight=False,
        markup=True,
        soft_wrap=True,
    )
    raise typer.Exit(exc.exit_code)


Opt = typer.Option


@app.command()
def run(
    dataset: Annotated[Path | None, Opt("--dataset", help="Dataset file (JSONL, CSV or parquet).")] = None,
    models: Annotated[str | None, Opt("--models", help="Comma-separated model ids.")] = None,
    repeats: Annotated[int | None, Opt("--repeats", help="Times each case runs on each model.")] = None,
    concurrency: Annotated[int | None, Opt("--concurrency", help="Closed loop: calls in flight.")] = None,
    rate: Annotated[float | None, Opt("--rate", help="Open loop: calls released per second.")] = None,
    arrival: Annotated[
        str | None, Opt("--arrival", help="Open-loop arrivals: poisson, constant (with --rate) or trace.")
    ] = None,
    cache: Annotated[
        str | None,
        Opt(
            "--cache",
            help="Prompt caching: off (strip every breakpoint), 5m, 1h or auto (default: as the dataset marks it).",
        ),
    ] = None,
    cache_warmup: Annotated[
        bool | None,
        Opt(
            "--cache-warmup/--no-cache-warmup",
            help="Send each shared prefix's first call alone and the rest once its answer begins (default with a cache mode).",
        ),
    ] = None,
    trace_speed: Annotated[
        float | None,
        Opt(
            "--trace-speed",
            help="--arrival trace: replay the dataset's recorded offsets this many times faster.",
        ),
    ] = None,
    max_in_flight: Annotated[
        int | None, Opt("--max-in-flight", help="Open loop: cap on calls in flight (waiting is recorded).")
    ] = None,
    max_calls: Annotated[int | None, Opt("--max-calls", help="Run at most this many planned calls.")] = None,
    duration_s: Annotated[
        float | None, Opt("--duration", help="Stop scheduling after this many seconds.")
    ] = None,
    max_cost_usd: Annotated[
        float | None, Opt("--max-cost", help="Stop scheduling before spend could exceed this (USD).")
    ] = None,
    max_retries: Annotated[
        int | None, Opt("--max-retries", help="Retries on 429/529/5xx/connection errors.")
    ] = None,
    timeout_s: Annotated[
        float | None, Opt("--timeout", help="Seconds without an answer before an attempt fails.")
    ] = None,
    grace_s: Annotated[float | None, Opt("--grace", help="Seconds in-flight calls get after a stop.")] = None,
    target: Annotated[
        str | None, Opt("--target", help="simulator, anthropic or custom (default with --base-url).")
    ] = None,
    base_url: Annotated[str | None, Opt("--base-url", help="Any Anthropic-compatible server.")] = None,
    profile: Annotated[Path | None, Opt("--profile", help="TOML profile; flags override it.")] = None,
    variants: Annotated[
        Path | None,
        Opt(
            "--variants",
            help="TOML file of variants.NAME tables of request parameters (replaces the profile's).",
        ),
    ] = None,
    run_id: Annotated[str | None, Opt("--run-id", help="Run id (default: UTC timestamp + suffix).")] = None,
    resume: Annotated[
        str | None, Opt("--resume", help="Run id to resume: runs only calls without a row.")
    ] = None,
    results_dir: Annotated[Path | None, Opt("--results-dir", help="Where run directories go.")] = None,
    stream: Annotated[bool | None, Opt("--stream/--no-stream", help="Stream responses (default).")] = None,
    seed: Annotated[int | None, Opt("--seed", help="Seed of the plan's interleaving and arrivals.")] = None,
    skip_invalid: Annotated[
        bool | None,
        Opt("--skip-invalid/--no-skip-invalid", help="Skip invalid dataset rows (listed in the manifest)."),
    ] = None,
    event_name: Annotated[str | None, Opt("--event-name", help="PostHog event name.")] = None,
    prompt_capture: Annotated[
        bool | None,
        Opt("--prompt-capture/--no-prompt-capture", help="Prompt and response text in events (default)."),
    ] = None,
    store_text: Annotated[
        bool | None, Opt("--store-text/--no-store-text", help="Response text in parquet (default).")
    ] = None,
    posthog_enabled: Annotated[
        bool | None, Opt("--posthog/--no-posthog", help="Send one PostHog event per call (default).")
    ] = None,
    posthog_host: Annotated[
        str | None, Opt("--posthog-host", help="PostHog host (default: POSTHOG_HOST, else offline capture).")
    ] = None,
    sim_time_scale: Annotated[
        float | None, Opt("--time-scale", help="Simulator target: multiply every delay.")
    ] = None,
    sim_faults: Annotated[
        str | None, Opt("--sim-faults", help="Simulator target: fault rates, e.g. rate_limit=0.02.")
    ] = None,
    sim_profile: Annotated[
        Path | None, Opt("--sim-profile", help="Simulator target: model profile TOML.")
    ] = None,
    sim_seed: Annotated[int | None, Opt("--sim-seed", help="Simulator target: its seed.")] = None,
    transport: Annotated[
        str | None, Opt("--transport", help="SDK transport: aiohttp (default) or httpx.")
    ] = None,
    ramp_up_s: Annotated[
        float | None,
        Opt(
            "--ramp-up",
            help="Closed loop: start the concurrent calls spread over this many seconds (default 4 ms each, <= 2 s).",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        Opt(
            "--workers",
            help="Processes sharing the calls (default: 1, more above ~200 streams or ~150 calls/s).",
        ),
    ] = None,
    timing_guard: Annotated[
        bool | None,
        Opt(
            "--timing-guard/--no-timing-guard",
            help="Closed loop: admit no more streams than a process can time without delaying its own "
            "marks (default; any change is in the manifest and the report).",
        ),
    ] = None,
    event_loop: Annotated[
        str | None, Opt("--event-loop", help="auto (uvloop when installed), uvloop or asyncio.")
    ] = None,
    progress: Annotated[str | None, Opt("--progress", help="auto, bar, plain or off.")] = None,
    report: Annotated[
        bool | None, Opt("--report/--no-report", help="Write the report at the end (default).")
    ] = None,
    judge_model: Annotated[
        str | None,
        Opt("--judge-model", help="The model that grades `judge` expectations (default: a current Sonnet)."),
    ] = None,
    judge_repeats: Annotated[
        int | None,
        Opt("--judge-repeats", help="Verdicts per judged answer; their mean counts, their spread is kept."),
    ] = None,
    allow_self_judge: Annotated[
        bool | None,
        Opt("--allow-self-judge/--no-allow-self-judge", help="Let a model under test also be the judge."),
    ] = None,
    mode: Annotated[
        bool | None,
        Opt(
            "--batch/--live",
            help="Submit the plan as Message Batches (half the price, answers within 24 h) or call live (default).",
        ),
    ] = None,
    batch_wait: Annotated[
        bool | None,
        Opt(
            "--wait/--no-wait",
            help="Batch: wait for the batches and collect them (default), or submit, journal and exit.",
        ),
    ] = None,
    batch_poll_s: Annotated[
        float | None,
        Opt("--poll-interval", help="Batch: first seconds between polls; grows while nothing changes."),
    ] = None,
    retry_errored: Annotated[
        bool | None,
        Opt(
            "--retry-errored/--no-retry-errored",
            help="Batch: resubmit errored (retryable) and expired calls in follow-up batches.",
        ),
    ] = None,
) -> None:
    """Replay a dataset against Claude models; write parquet, events and a report."""
    from harness.config import build_config

    # Parameters are named after RunConfig's fields (harness.config.OPTIONS): no copying table.
    given: dict[str, Any] = {k: v for k, v in locals().items() if k not in ("build_config", "resume")}
    try:
        if resume:
            from harness.rundir import RunDir

            try:
                saved = RunDir.read(Path(results_dir or "results") / resume).manifest.get("cli")
            except HarnessError:
                raise HarnessError(f"--resume: no run {resume!r} in {results_dir or 'results'}") from None
            if not isinstance(saved, dict):
                raise HarnessError(f"--resume: run {resume!r} has no readable manifest")
            # Waiting is this invocation's choice: a run submitted with --no-wait is collected by a resume.
            saved = {k: v for k, v in saved.items() if k != "batch_wait"}
            given = {**saved, **{k: v for k, v in given.items() if v is not None}, "resume": resume}
            given["run_id"] = None
        config = build_config(given)
        cli_args = {k: (str(v) if isinstance(v, Path) else v) for k, v in given.items() if v is not None}
        # Launch the simulator before the heavy imports below so that both boot at once.
        from harness.target import launch_simulator, needs_simulator

        simulator = launch_simulator(config) if needs_simulator(config) else None
        if config.posthog_enabled:
            # The PostHog delivery child imports its SDK while this process imports the Anthropic one.
            from harness.events import pipe

            pipe.prestart()
        from harness import loops
        from harness.bench import execute_run

        result = loops.run(
            execute_run(config, console=err, cli_args=cli_args, simulator=simulator), config.event_loop
        )
    except HarnessError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None
    finally:
        if "harness.events.pipe" in sys.modules:  # a run that failed before its events sink took the child
            sys.modules["harness.events.pipe"].discard_prestarted()
    d = result.delivery
    if result.report is not None:
        out.print(result.report.recommendation_text, highlight=False, markup=False, soft_wrap=True)
        out.print(f"report: {result.report.report_html}", highlight=False)
    out.print(f"run directory: {result.run_dir}", highlight=False)
    if d.get("enabled", True) and "delivered" in d:
        out.print(
            f"posthog: {d['delivered']} of {d.get('handed', 0)} events delivered"
            f" ({d.get('failed', 0)} failed, {d.get('pending', 0)} pending; outbox: events-outbox.jsonl)",
            highlight=False,
        )


@app.command()
def report(
    run_dir: Path,
    max_p95_s: Annotated[float | None, Opt(help="Latency p95 limit (s).")] = None,
    max_ttft_p95_s: Annotated[
        float | None, Opt(help="First-token p95 limit (s), of the kind --first-token names.")
    ] = None,
    first_token: Annotated[
        str, Opt(help="What the first-token limit measures: text (first text delta, default) or any (TTFT).")
    ] = "text",
    max_error_rate: Annotated[float | None, Opt(help="Error-rate limit (0–1).")] = None,
    min_pass_rate: Annotated[float | None, Opt(help="Quality pass-rate floor (0–1).")] = None,
    min_score: Annotated[float | None, Opt(help="Mean grader score floor (0–1).")] = None,
    reprice: Annotated[
        bool,
        Opt(help="Also price the stored usage with today's price table and show both (the run's own stays)."),
    ] = False,
) -> None:
    """Write summary, comparison, recommendation and charts for a run directory."""
    from harness.report import Constraints, write_report

    try:
        constraints = Constraints.from_mapping(
            {
                "max_p95_s": max_p95_s,
                "max_ttft_p95_s": max_ttft_p95_s,
                "first_token": first_token,
                "max_error_rate": max_error_rate,
                "min_pass_rate": min_pass_rate,
                "min_score": min_score,
            },
            name=lambda key: "--" + key.replace("_", "-"),
        )
        result = write_report(run_dir, constraints=constraints, reprice=reprice)
    except HarnessError as exc:
        _fail(exc)
    out.print(result.recommendation_text, highlight=False, markup=False, soft_wrap=True)
    out.print(f"report: {result.report_html}", highlight=False)


@app.command()
def compare(
    baseline_dir: Path,
    current_dir: Path,
    latency_pct: Annotated[float, Opt(help="Latency regression threshold (%).")] = 10.0,
    error_points: Annotated[float, Opt(help="Error-rate threshold (points).")] = 2.0,
    cost_pct: Annotated[float, Opt(help="Cost regression threshold (%).")] = 5.0,
    pass_points: Annotated[float, Opt(help="Pass-rate threshold (points).")] = 3.0,
    score_points: Annotated[float, Opt(help="Mean-score threshold (points of the 0–1 scale).")] = 3.0,
    min_samples: Annotated[
        int, Opt(help="Values (or paired cases) each side needs for a check to be judged; a p95 needs ≥ 20.")
    ] = 10,
) -> None:
    """Compare two runs for nightly CI: exit 1 on a significant regression, 3 when there is too little data."""
    from harness.report import Thresholds, compare_runs

    try:
        result = compare_runs(
            baseline_dir,
            current_dir,
            thresholds=Thresholds(
                latency_pct=latency_pct,
                error_rate_points=error_points,
                cost_pct=cost_pct,
                pass_rate_points=pass_points,
                score_points=score_points,
                min_samples=min_samples,
            ),
        )
    except HarnessError as exc:
        _fail(exc)
    out.print(result.markdown, highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(result.exit_code)


@app.command()
def history(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Run directories, results directories (each run inside) and earlier histories "
            "(history.parquet or a directory holding one).",
            show_default=False,
        ),
    ],
    out_dir: Annotated[
        Path, Opt("--out", help="Where history.parquet, history.md/html and charts go.")
    ] = Path("history"),
    fail_on_drift: Annotated[
        bool, Opt(help="Exit 1 on a drift for the worse, 3 when some check had too little history.")
    ] = False,
    window: Annotated[int, Opt(help="Earlier runs of an arm's series its figure is compared with.")] = 14,
    min_history: Annotated[int, Opt(help="Earlier runs a verdict needs; fewer: insufficient history.")] = 5,
    z: Annotated[float, Opt("--z", help="Robust z-score beyond which a change can be a drift.")] = 3.5,
    median_pct: Annotated[float, Opt(help="Minimum change of a p50 (TTFT, first text, latency), %.")] = 10.0,
    tail_pct: Annotated[float, Opt(help="Minimum change of a p95, %.")] = 20.0,
    cost_pct: Annotated[float, Opt(help="Minimum change of a cost, %.")] = 5.0,
    error_points: Annotated[float, Opt(help="Minimum change of the error rate, points.")] = 2.0,
    pass_points: Annotated[float, Opt(help="Minimum change of the pass rate, points.")] = 3.0,
    nights: Annotated[int, Opt(help="Runs in the last-nights table.")] = 10,
    keep: Annotated[int, Opt(help="Newest runs kept in history.parquet.")] = 365,
    run: Annotated[str | None, Opt("--run", help="Judge this run id (default: the latest).")] = None,
) -> None:
    """Every arm's figures run after run, with drift verdicts against each arm's own history."""
    from harness.report.drift import DriftRule
    from harness.report.history import write_history

    try:
        rule = DriftRule(
            window=window,
            min_history=min_history,
            z=z,
            median_pct=median_pct,
            tail_pct=tail_pct,
            cost_pct=cost_pct,
            error_points=error_points,
            pass_points=pass_points,
        )
        result = write_history(paths, out_dir, rule=rule, nights=nights, keep=keep, run_id=run)
    except HarnessError as exc:
        _fail(exc)
    out.print(result.markdown, highlight=False, markup=False, soft_wrap=True)
    out.print(f"history: {result.history_html}", highlight=False)
    if fail_on_drift:
        raise typer.Exit(1 if result.drift else (3 if result.insufficient else 0))


@app.command()
def grade(
    run_dir: Path,
    judge_model: Annotated[
        str | None, Opt(help="The judge (default: the run's, else a current Sonnet).")
    ] = None,
    judge_repeats: Annotated[int | None, Opt(help="Verdicts per judged answer.")] = None,
    allow_self_judge: Annotated[
        bool | None, Opt("--allow-self-judge/--no-allow-self-judge", help="Let a model under test judge.")
    ] = None,
    only_missing: Annotated[
        bool, Opt(help="Grade only answers without a verdict (or with a judge error).")
    ] = False,
    concurrency: Annotated[int, Opt(help="Answers graded at once.")] = 8,
) -> None:
    """Grade (or re-grade with another judge) a finished run's answers; resumable, measured columns untouched."""
    from harness import loops
    from harness.grade import grade_run

    try:
        result = loops.run(
            grade_run(
                run_dir,
                judge_model=judge_model,
                judge_repeats=judge_repeats,
                allow_self_judge=allow_self_judge,
                only_missing=only_missing,
                concurrency=concurrency,
            ),
            "auto",
        )
    except HarnessError as exc:
        _fail(exc)
    out.print(
        f"graded {result.graded} answer(s) ({result.skipped} already graded this way), "
        f"{result.judge_errors} judge error(s), evaluation cost ${result.judge_cost_usd:.4f}; "
        f"`harness report {run_dir}` shows the new verdicts",
        highlight=False,
        markup=False,
    )


@app.command()
def validate(path: Path) -> None:
    """Check a dataset; print every problem as file:line: field: what is wrong."""
    from harness.dataset import validate as validate_dataset

    try:
        problems = validate_dataset(path)
    except HarnessError as exc:
        _fail(exc)
    for problem in problems:
        out.print(str(problem), highlight=False, markup=False, soft_wrap=True)
    if problems:
        err.print(f"{len(problems)} problem(s) in {path}")
        raise typer.Exit(2)
    out.print(f"{path}: ok", highlight=False)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def simulate(ctx: typer.Context) -> None:
    """Serve the Anthropic-compatible simulator and PostHog capture endpoint (see --help of the simulator)."""
    from harness.simulator import cli_main

    raise typer.Exit(cli_main(list(ctx.args)))


@events_app.command("resend")
def events_resend(
    run_dir: Path,
    host: Annotated[str | None, Opt(help="PostHog host (default: POSTHOG_HOST or PostHog US).")] = None,
) -> None:
    """Re-send the events in RUN_DIR/events-outbox.jsonl with their original uuids."""
    from harness.events.resend import resend_outbox

    key = os.environ.get(POSTHOG_KEY_ENV, "phc_simulator")
    target = host or os.environ.get("POSTHOG_HOST") or "https://us.i.posthog.com"
    try:
        counts = resend_outbox(run_dir, api_key=key, host=target)
    except HarnessError as exc:
        _fail(exc)
    out.print(f"resent {counts}", highlight=False)
    if counts.get("still_failed"):
        raise typer.Exit(1)


@import_app.command(
    "posthog",
    help="Turn production LLM calls captured in PostHog into a dataset "
    f"(personal API key from {POSTHOG_PERSONAL_KEY_ENV}; never printed).",
)
def import_posthog(
    output: Annotated[Path, Opt("-o", "--output", help="The dataset to write (JSONL), replayable as is.")],
    host: Annotated[
        str | None,
        Opt("--host", help="PostHog app host, e.g. https://us.posthog.com (not the ingestion host)."),
    ] = None,
    project_id: Annotated[str | None, Opt("--project-id", help="PostHog project id.")] = None,
    since: Annotated[
        str | None,
        Opt("--since", help="Window start: a date or ISO 8601 time (UTC unless it has an offset)."),
    ] = None,
    until: Annotated[str | None, Opt("--until", help="Window end, exclusive (default: now).")] = None,
    event: Annotated[
        str, Opt("--event", help="Event name: $ai_generation (default), claude_message_completion, ...")
    ] = "$ai_generation",
    limit: Annotated[
        int | None, Opt("--limit", help="Import at most this many events (oldest first).")
    ] = None,
    where: Annotated[
        str | None, Opt("--where", help="An extra HogQL condition, e.g. \"properties.$ai_model = 'x'\".")
    ] = None,
    from_csv: Annotated[
        Path | None, Opt("--from-csv", help="Read a CSV export from PostHog's UI instead of the API.")
    ] = None,
) -> None:
    from datetime import UTC, datetime

    from harness import posthog_import as ph
    from harness.errors import ConfigError

    try:
        if limit is not None and limit < 1:
            raise ConfigError("--limit", "must be at least 1")
        if from_csv is not None:
            result = ph.import_csv(from_csv, output, event=event)
        else:
            from harness.posthog_api import PosthogApi

            for flag, value in (("--host", host), ("--project-id", project_id), ("--since", since)):
                if not value:
                    raise ConfigError(flag, "required (or --from-csv FILE)")
            start = ph.parse_instant(str(since), "--since")
            end = ph.parse_instant(until, "--until") if until else datetime.now(UTC)
            api = PosthogApi(str(host), str(project_id), Secret(os.environ.get(POSTHOG_PERSONAL_KEY_ENV)))
            result = ph.import_posthog(
                api, output, event=event, since=start, until=end, where=where, limit=limit
            )
    except HarnessError as exc:
        _fail(exc)
    tables = ", ".join(f"{t} {n:,}" for t, n in result.tables.items())
    read = f"{result.events:,} events read" + (f" ({tables})" if tables else "")
    throttled = result.source.get("throttled") or {}
    if throttled.get("times"):
        read += f"; throttled {throttled['times']}× ({throttled['seconds']:.0f} s waited)"
    out.print(read, highlight=False)
    out.print(
        f"wrote {result.cases:,} cases to {output} (calls from {result.first_start} to {result.last_start})",
        highlight=False,
    )
    if result.duplicates:
        out.print(f"duplicates dropped: {result.duplicates:,}", highlight=False)
    if result.skipped:
        skipped = ", ".join(f"{reason} × {n:,}" for reason, n in result.skipped.most_common())
        out.print(f"skipped {sum(result.skipped.values()):,}: {skipped}", highlight=False)
    for note in result.notes:
        out.print(f"note: {note}", highlight=False)
    out.print(f"provenance: {output}.import.json (recorded in the manifest of a run on {output.name})")


@posthog_app.command(
    "dashboard",
    help="Create or update (matched by name) the Claude tutorial's dashboard and its six insights "
    f"(personal API key from {POSTHOG_PERSONAL_KEY_ENV}, with insight and dashboard write access).",
)
def posthog_dashboard(
    host: Annotated[str, Opt("--host", help="PostHog app host, e.g. https://us.posthog.com.")],
    project_id: Annotated[str, Opt("--project-id", help="PostHog project id.")],
    event: Annotated[
        str,
        Opt("--event", help="The events to chart: claude_message_completion (default) or $ai_generation."),
    ] = "claude_message_completion",
    name: Annotated[
        str | None, Opt("--name", help="Dashboard name (default: 'Claude usage (EVENT)').")
    ] = None,
) -> None:
    from harness.posthog_api import PosthogApi
    from harness.posthog_dashboard import ensure_dashboard

    try:
        api = PosthogApi(host, project_id, Secret(os.environ.get(POSTHOG_PERSONAL_KEY_ENV)))
        result = ensure_dashboard(api, event=event, name=name)
    except HarnessError as exc:
        _fail(exc)
    verb = "created" if result.created else "updated"
    out.print(f"dashboard {result.dashboard_id} {verb}: {len(result.insights)} insights", highlight=False)
    for title, what in result.insights:
        out.print(f"  {what}: {title}", highlight=False)
    out.print(result.url, highlight=False, soft_wrap=True)


@batches_app.command("cancel")
def batches_cancel(
    run_id: str,
    results_dir: Annotated[Path, Opt("--results-dir", help="Where run directories go.")] = Path("results"),
) -> None:
    """Cancel the run's batches still processing (their requests end `canceled`; a resume resubmits them)."""
    from harness import loops
    from harness.bench import cancel_batches

    try:
        lines = loops.run(cancel_batches(results_dir, run_id), "auto")
    except HarnessError as exc:
        _fail(exc)
    for line in lines:
        out.print(line, highlight=False, markup=False, soft_wrap=True)


@app.command()
def version() -> None:
    """Print the version."""
    from harness import __version__

    out.print(__version__)


def main() -> None:
    try:
        app()
    except BrokenPipeError:  # piping into `head` is not an error
        sys.exit(0)
