"""Run configuration: defaults < TOML profile < environment < command line, validated once, then frozen.

Every check names the option (flag or profile key) it refuses, so a bad value is
reported before any call is sent. Keys are held as `harness.secrets.Secret`. This module reads
no file other than the profile and, through `harness.variants` (which checks them), the
`--variants` file.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.loops import EVENT_LOOPS
from harness.secrets import ANTHROPIC_KEY_ENV, POSTHOG_KEY_ENV, Secret

__all__ = ["OPTIONS", "ModelSpec", "Option", "RunConfig", "build_config", "load_profile", "option_name"]

ARRIVALS = ("closed", "poisson", "constant", "trace")
TARGETS = ("simulator", "anthropic", "custom")
MODES = ("live", "batch")
# The Message Batches API's limits per batch (its documentation): a batch run splits by them,
# or by the smaller `[batch] max_requests` / `max_bytes` of a profile.
BATCH_MAX_REQUESTS = 100_000
BATCH_MAX_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class ModelSpec:
    """A model in the run with its client-side limits (None = unlimited) and rate-limit pool."""

    name: str
    rpm: float | None = None
    itpm: float | None = None
    otpm: float | None = None
    pool: str | None = None
    cache_min_tokens: int | None = None  # overrides harness.caching's minimum cacheable length


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; built by `build_config`, never mutated afterwards."""

    dataset: Path | None = None
    models: tuple[ModelSpec, ...] = ()
    repeats: int = 1
    concurrency: int = 16
    ramp_up_s: float | None = None  # closed loop; None: 4 ms per concurrent call, at most 2 s
    rate: float | None = None
    arrival: str = "closed"
    trace_speed: float = 1.0  # --arrival trace: replay recorded offsets this many times faster
    cache: str | None = None  # off | 5m | 1h | auto (harness.caching); None: the dataset's breakpoints
    cache_warmup: bool | None = None  # None: on when a cache mode (run or variant) is on
    max_in_flight: int | None = None
    max_calls: int | None = None
    duration_s: float | None = None
    max_cost_usd: float | None = None
    max_retries: int = 4
    timeout_s: float = 120.0
    grace_s: float = 10.0
    stream: bool = True
    seed: int = 42
    run_id: str | None = None
    resume: str | None = None
    results_dir: Path = Path("results")
    skip_invalid: bool = False
    target: str = "simulator"
    base_url: str | None = None
    api_key: Secret = field(default_factory=lambda: Secret(None))
    transport: str = "aiohttp"
    event_loop: str = "auto"  # auto (uvloop when installed) | uvloop | asyncio
    workers: int | None = None  # processes; None: 1, or more above a load threshold (harness.workers)
    timing_guard: bool = True  # closed loop: admit no more streams than a process can time (harness.guard)
    sim_time_scale: float = 1.0
    sim_profile: Path | None = None
    sim_faults: str | None = None
    sim_seed: int = 1234
    event_name: str = "claude_message_completion"
    prompt_capture: bool = True
    store_text: bool = True
    posthog_key: Secret = field(default_factory=lambda: Secret(None))
    posthog_host: str | None = None
    posthog_enabled: bool = True
    posthog_max_retries: int = 6
    posthog_flush_timeout_s: float = 10.0
    prices: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    select: Mapping[str, float] = field(default_factory=dict)
    # [variants.NAME] request parameters as given (profile, or --variants FILE which replaces them)
    variants: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    variants_source: str | None = None  # "profile P" or "--variants F": where a variant error points
    judge_model: str = "claude-sonnet-5-5"  # grades `judge` expectations; not an arm unless allowed
    judge_repeats: int = 1
    allow_self_judge: bool = False
    judge: ModelSpec | None = None  # the judge with its client-side limits (profile [models.<judge>])
    report: bool = True
    progress: str = "auto"  # auto | bar | plain | off
    mode: str = "live"  # live | batch (the same plan through the Message Batches API: harness.batch)
    batch_wait: bool = True  # batch: wait for the batches and collect them; else submit, journal, exit
    batch_poll_s: float = 10.0  # batch: the first wait between polls (it grows while nothing changes)
    retry_errored: bool = False  # batch: resubmit errored (retryable) and expired calls, in new batches
    batch_max_requests: int = BATCH_MAX_REQUESTS  # batch: split above this many requests per batch
    batch_max_bytes: int = BATCH_MAX_BYTES  # ... or this many bytes of request body per batch
    profile_path: Path | None = None

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.models)

    def redacted(self) -> dict[str, Any]:
        """A JSON-able view for the manifest: secrets shown as [secure]/[unset]."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Secret):
                value = repr(value)
            elif isinstance(value, Path):
                value = str(value)
            elif f.name == "models":
                value = [asdict(m) for m in value]
            elif isinstance(value, ModelSpec):
                value = asdict(value)
            elif isinstance(value, Mapping):
                value = {k: dict(v) if isinstance(v, Mapping) else v for k, v in value.items()}
            out[f.name] = value
        return out


def load_profile(path: Path) -> dict[str, Any]:
    """Read a TOML profile; a malformed file is a ConfigError naming it."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("--profile", f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--profile", f"{path}: malformed TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError("--profile", f"{path}: cannot read: {exc.strerror}") from None


@dataclass(frozen=True)
class Option:
    """One option, said once: its `RunConfig` field, its flag (None: profile only), its profile key."""

    field: str
    flag: str | None
    profile: str | None  # "table.key"; None: command line only


# Every option of `harness run` (the CLI's parameters carry the same field names; a test checks
# that the CLI offers exactly these flags). A flag with a `/--no-x` form is a boolean pair.
OPTIONS: tuple[Option, ...] = (
    Option("dataset", "--dataset", "run.dataset"),
    Option("models", "--models", "run.models"),
    Option("repeats", "--repeats", "run.repeats"),
    Option("concurrency", "--concurrency", "run.concurrency"),
    Option("ramp_up_s", "--ramp-up", "run.ramp_up"),
    Option("rate", "--rate", "run.rate"),
    Option("arrival", "--arrival", "run.arrival"),
    Option("trace_speed", "--trace-speed", "run.trace_speed"),
    Option("cache", "--cache", "run.cache"),
    Option("cache_warmup", "--cache-warmup/--no-cache-warmup", "run.cache_warmup"),
    Option("max_in_flight", "--max-in-flight", "run.max_in_flight"),
    Option("max_calls", "--max-calls", "run.max_calls"),
    Option("duration_s", "--duration", "run.duration"),
    Option("max_cost_usd", "--max-cost", "run.max_cost"),
    Option("max_retries", "--max-retries", "run.max_retries"),
    Option("timeout_s", "--timeout", "run.timeout"),
    Option("grace_s", "--grace", "run.grace"),
    Option("stream", "--stream/--no-stream", "run.stream"),
    Option("seed", "--seed", "run.seed"),
    Option("run_id", "--run-id", None),
    Option("resume", "--resume", None),
    Option("results_dir", "--results-dir", "run.results_dir"),
    Option("skip_invalid", "--skip-invalid/--no-skip-invalid", "run.skip_invalid"),
    Option("transport", "--transport", "run.transport"),
    Option("event_loop", "--event-loop", "run.event_loop"),
    Option("workers", "--workers", "run.workers"),
    Option("timing_guard", "--timing-guard/--no-timing-guard", "run.timing_guard"),
    Option("progress", "--progress", "run.progress"),
    Option("report", "--report/--no-report", "run.report"),
    Option("target", "--target", "target.kind"),
    Option("base_url", "--base-url", "target.base_url"),
    Option("sim_time_scale", "--time-scale", "target.time_scale"),
    Option("sim_profile", "--sim-profile", "target.profile"),
    Option("sim_faults", "--sim-faults", "target.faults"),
    Option("sim_seed", "--sim-seed", "target.seed"),
    Option("event_name", "--event-name", "posthog.event_name"),
    Option("prompt_capture", "--prompt-capture/--no-prompt-capture", "posthog.prompt_capture"),
    Option("posthog_enabled", "--posthog/--no-posthog", "posthog.enabled"),
    Option("posthog_host", "--posthog-host", "posthog.host"),
    Option("posthog_max_retries", None, "posthog.max_retries"),
    Option("posthog_flush_timeout_s", None, "posthog.flush_timeout"),
    Option("store_text", "--store-text/--no-store-text", "store.text"),
    Option("variants", "--variants", None),  # also the profile's [variants.NAME] tables
    Option("judge_model", "--judge-model", "judge.model"),
    Option("judge_repeats", "--judge-repeats", "judge.repeats"),
    Option("allow_self_judge", "--allow-self-judge/--no-allow-self-judge", "judge.allow_self"),
    Option("mode", "--batch/--live", "run.mode"),
    Option("batch_wait", "--wait/--no-wait", "batch.wait"),
    Option("batch_poll_s", "--poll-interval", "batch.poll_interval"),
    Option("retry_errored", "--retry-errored/--no-retry-errored", "batch.retry_errored"),
    Option("batch_max_requests", None, "batch.max_requests"),
    Option("batch_max_bytes", None, "batch.max_bytes"),
)
_BY_FIELD = {o.field: o for o in OPTIONS}
_FIELDS = {f.name for f in fields(RunConfig)}  # what a caller of build_config may set
_BY_PROFILE_KEY = {o.profile: o.field for o in OPTIONS if o.profile}
_OWN_TABLES = ("models", "prices", "select", "variants")  # tables of their own shape, read below
_PROFILE_TABLES = sorted({key.split(".")[0] for key in _BY_PROFILE_KEY} | set(_OWN_TABLES))
_MODEL_KEYS = {"rpm", "itpm", "otpm", "pool", "cache_min_tokens"}


def option_name(field_name: str, sources: Mapping[str, str] | None = None) -> str:
    """How the user said it: the profile key when the value came from the profile, else the flag."""
    option = _BY_FIELD.get(field_name)
    if option is None:
        return field_name
    if (sources or {}).get(field_name) == "profile" and option.profile:
        return option.profile
    return (option.flag or "").split("/")[0] or option.profile or field_name


def _profile_values(profile: Mapping[str, Any], base: Path | None) -> dict[str, Any]:
    """Flatten a profile into RunConfig field values; unknown tables and keys are refused by name."""
    values: dict[str, Any] = {}
    for table, section in profile.items():
        if table not in _PROFILE_TABLES:
            raise ConfigError(f"profile [{table}]", f"unknown table; expected one of {_PROFILE_TABLES}")
        if not isinstance(section, Mapping):
            shape = "[variants.NAME] tables of request parameters" if table == "variants" else "a table"
            raise ConfigError(f"profile [{table}]", f"must be {shape}")
        if table in _OWN_TABLES:
            continue
        for key, value in section.items():
            field_name = _BY_PROFILE_KEY.get(f"{table}.{key}")
            if field_name is None:
                known = sorted(k.split(".", 1)[1] for k in _BY_PROFILE_KEY if k.startswith(f"{table}."))
                raise ConfigError(f"{table}.{key}", f"unknown key; expected one of {known}")
            values[field_name] = value
    limits: dict[str, dict[str, Any]] = {}
    for name, spec in profile.get("models", {}).items():
        if not isinstance(spec, Mapping):
            raise ConfigError(f"models.{name}", "must be a table")
        for key in spec:
            if key not in _MODEL_KEYS:
                raise ConfigError(
                    f"models.{name}.{key}", f"unknown key; expected one of {sorted(_MODEL_KEYS)}"
                )
        limits[name] = dict(spec)
    values["_model_limits"] = limits
    if "prices" in profile:
        values["prices"] = profile["prices"]
    if "select" in profile:
        values["select"] = profile["select"]
    if "variants" in profile:
        values["variants"] = profile["variants"]
    for key in ("dataset", "results_dir", "sim_profile"):
        if key in values and base is not None and not Path(values[key]).is_absolute():
            values[key] = Path(os.path.normpath(base / values[key]))
    return values


def _number(option: str, value: Any, *, minimum: float, integer: bool = False, strict: bool = False) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(option, f"must be a number, got {value!r}")
    if integer and int(value) != value:
        raise ConfigError(option, f"must be a whole number, got {value!r}")
    if value < minimum or (strict and value == minimum):
        bound = f"greater than {minimum:g}" if strict else f"at least {minimum:g}"
        raise ConfigError(option, f"must be {bound}, got {value!r}")
    return int(value) if integer else float(value)


def build_config(cli: Mapping[str, Any], env: Mapping[str, str] | None = None) -> RunConfig:
    """Merge defaults < profile < environment < CLI (None means "not given") and validate.

    `cli` holds `RunConfig` field names (plus `profile`); every error names the option as the
    user gave it: the profile key for a value from the profile, else the flag.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    profile_path = cli.get("profile")
    if profile_path:
        profile_path = Path(profile_path)
        from_profile = _profile_values(load_profile(profile_path), profile_path.parent)
        values.update(from_profile)
        sources.update(dict.fromkeys(from_profile, "profile"))
        values["profile_path"] = profile_path
    model_limits: dict[str, dict[str, Any]] = values.pop("_model_limits", {})

    if env.get(ANTHROPIC_KEY_ENV):
        values["api_key"] = Secret(env[ANTHROPIC_KEY_ENV])
    if env.get(POSTHOG_KEY_ENV):
        values["posthog_key"] = Secret(env[POSTHOG_KEY_ENV])
    if env.get("POSTHOG_HOST"):
        values["posthog_host"] = env["POSTHOG_HOST"]
        sources["posthog_host"] = "env"
    if env.get("ANTHROPIC_BASE_URL") and "base_url" not in values:
        values["base_url"] = env["ANTHROPIC_BASE_URL"]
        sources["base_url"] = "env"

    for key, value in cli.items():
        if key == "profile" or value is None:
            continue
        if key not in _FIELDS:
            raise ConfigError(f"--{key.replace('_', '-')}", "unknown option")
        values[key] = value
        sources[key] = "cli"

    if "target" not in values:  # a key alone means the real API; a URL alone, some other server
        if values.get("base_url"):
            values["target"] = "custom"
        else:
            values["target"] = "anthropic" if values.get("api_key") else "simulator"
    models = values.pop("models", None)
    if isinstance(models, str):
        models = [m.strip() for m in models.split(",") if m.strip()]
    if models is not None:
        name = option_name("models", sources)
        if not isinstance(models, list | tuple) or not all(isinstance(m, str) for m in models):
            raise ConfigError(name, "must be a comma-separated list of model ids")
        if len(set(models)) != len(models):
            raise ConfigError(name, "lists a model twice")
        values["models"] = tuple(ModelSpec(name=m, **model_limits.get(m, {})) for m in models)
    for key in ("dataset", "results_dir", "sim_profile"):
        if key in values and values[key] is not None:
            values[key] = Path(values[key])
    if isinstance(values.get("mode"), bool):  # the --batch/--live flag pair
        values["mode"] = "batch" if values["mode"] else "live"
    judge = values.get("judge_model", RunConfig.judge_model)
    if isinstance(judge, str) and judge:
        values["judge"] = ModelSpec(name=judge, **model_limits.get(judge, {}))
    if values.get("variants"):
        where = f"profile {profile_path}" if sources.get("variants") == "profile" else "variants"
        values["variants"], values["variants_source"] = _variants(values["variants"], where)
    return validate(RunConfig(**values), sources)


def _variants(given: Any, source: str) -> tuple[dict[str, dict[str, Any]], str]:
    """The variants as given and where they came from; `harness.variants` refuses a bad one by name.

    A path is the `--variants` file (it replaces the profile's sections, it does not merge).
    Imported here only when a run has variants: it brings polars, which a plain run loads later.
    """
    from harness.variants import load_variants_file, parse_variants

    if isinstance(given, str | Path):
        path = Path(given)
        source = f"--variants {path}"
        parsed = load_variants_file(path)
    else:
        parsed = parse_variants(given, source)
    return {v.name: dict(v.overrides) for v in parsed}, source


def _batch_options(c: RunConfig, n: Callable[[str], str]) -> dict[str, Any]:
    """Batch mode's options, and the live-only options it refuses (a batch has no arrivals)."""
    if c.mode not in MODES:
        raise ConfigError(n("mode"), f"must be live or batch, got {c.mode!r}")
    updates: dict[str, Any] = {
        "batch_poll_s": _number(n("batch_poll_s"), c.batch_poll_s, minimum=0, strict=True),
        "batch_max_requests": _number(n("batch_max_requests"), c.batch_max_requests, minimum=1, integer=True),
        "batch_max_bytes": _number(n("batch_max_bytes"), c.batch_max_bytes, minimum=1024, integer=True),
    }
    if updates["batch_max_requests"] > BATCH_MAX_REQUESTS:
        raise ConfigError(n("batch_max_requests"), f"the API takes at most {BATCH_MAX_REQUESTS:,} per batch")
    if updates["batch_max_bytes"] > BATCH_MAX_BYTES:
        raise ConfigError(n("batch_max_bytes"), f"the API takes at most {BATCH_MAX_BYTES:,} bytes per batch")
    if c.mode == "live":
        if c.retry_errored:
            raise ConfigError(n("retry_errored"), "resubmits failed batch requests: only with --batch")
        return updates
    for name, given in (("rate", c.rate is not None), ("duration_s", c.duration_s is not None)):
        if given:
            raise ConfigError(n(name), "batch mode submits the whole plan at once: drop it, or run --live")
    if c.arrival != "closed":
        raise ConfigError(n("arrival"), "batch mode has no arrivals: drop it, or run --live")
    if c.workers not in (None, 1):
        raise ConfigError(n("workers"), "batch mode runs in one process: drop it, or run --live")
    if not c.batch_wait and c.target == "simulator" and not c.base_url:
        raise ConfigError(
            n("batch_wait"),
            "the simulator this run starts ends with it, and its batches with it: serve one that "
            "outlives the run (`harness simulate`) and give it with --base-url",
        )
    return updates


# Default closed-loop ramp: about two calls' worth of the harness's CPU per start (make perf, T0a).
RAMP_PER_CALL_S = 0.004
MAX_AUTO_RAMP_S = 2.0


def validate(c: RunConfig, sources: Mapping[str, str] | None = None) -> RunConfig:
    """Refuse impossible values by option name; return the config with normalised numbers."""

    def n(field_name: str) -> str:
        return option_name(field_name, sources)

    if not c.models:
        raise ConfigError(n("models"), "at least one model is required")
    for m in c.models:
        for limit in ("rpm", "itpm", "otpm"):
            value = getattr(m, limit)
            if value is not None:
                _number(f"models.{m.name}.{limit}", value, minimum=0, strict=True)
    updates: dict[str, Any] = {
        "repeats": _number(n("repeats"), c.repeats, minimum=1, integer=True),
        "concurrency": _number(n("concurrency"), c.concurrency, minimum=1, integer=True),
        "max_retries": _number(n("max_retries"), c.max_retries, minimum=0, integer=True),
        "timeout_s": _number(n("timeout_s"), c.timeout_s, minimum=0, strict=True),
        "grace_s": _number(n("grace_s"), c.grace_s, minimum=0),
        "sim_time_scale": _number(n("sim_time_scale"), c.sim_time_scale, minimum=0),
        "judge_repeats": _number(n("judge_repeats"), c.judge_repeats, minimum=1, integer=True),
    }
    if c.cache is not None and c.cache not in ("off", "5m", "1h", "auto"):
        raise ConfigError(n("cache"), f"must be one of off, 5m, 1h, auto, got {c.cache!r}")
    if not isinstance(c.judge_model, str) or not c.judge_model.strip():
        raise ConfigError(n("judge_model"), f"must be a model id, got {c.judge_model!r}")
    if c.rate is not None:
        updates["rate"] = _number(n("rate"), c.rate, minimum=0, strict=True)
    concurrency = updates["concurrency"]
    if c.ramp_up_s is None:
        updates["ramp_up_s"] = min(MAX_AUTO_RAMP_S, RAMP_PER_CALL_S * concurrency)
    else:
        updates["ramp_up_s"] = _number(n("ramp_up_s"), c.ramp_up_s, minimum=0)
    for name in ("max_in_flight", "max_calls"):
        if getattr(c, name) is not None:
            updates[name] = _number(n(name), getattr(c, name), minimum=1, integer=True)
    if c.duration_s is not None:
        updates["duration_s"] = _number(n("duration_s"), c.duration_s, minimum=0, strict=True)
    if c.max_cost_usd is not None:
        updates["max_cost_usd"] = _number(n("max_cost_usd"), c.max_cost_usd, minimum=0, strict=True)
    if c.arrival not in ARRIVALS:
        raise ConfigError(n("arrival"), f"must be one of {', '.join(ARRIVALS[1:])}, got {c.arrival!r}")
    arrival = c.arrival
    if c.rate is not None and arrival == "closed":
        arrival = "poisson"
    if arrival == "trace":
        if c.rate is not None:
            raise ConfigError(n("rate"), "trace arrivals replay the dataset's offsets: drop --rate")
        updates["trace_speed"] = _number(n("trace_speed"), c.trace_speed, minimum=0, strict=True)
    elif c.rate is None and arrival != "closed":
        raise ConfigError(n("arrival"), f"{arrival} arrivals need --rate")
    updates["arrival"] = arrival
    if c.target not in TARGETS:
        raise ConfigError(n("target"), f"must be one of {', '.join(TARGETS)}, got {c.target!r}")
    if c.target == "anthropic" and not c.api_key:
        raise ConfigError(n("target"), f"anthropic needs {ANTHROPIC_KEY_ENV} in the environment")
    if c.target == "custom" and not c.base_url:
        raise ConfigError(n("base_url"), "a custom target needs --base-url")
    if c.transport not in ("aiohttp", "httpx"):
        raise ConfigError(n("transport"), f"must be aiohttp or httpx, got {c.transport!r}")
    if c.workers is not None and (
        isinstance(c.workers, bool) or not isinstance(c.workers, int) or c.workers < 1
    ):
        raise ConfigError(n("workers"), f"must be a whole number of processes >= 1, got {c.workers!r}")
    if c.event_loop not in EVENT_LOOPS:
        raise ConfigError(n("event_loop"), f"must be one of {', '.join(EVENT_LOOPS)}, got {c.event_loop!r}")
    if c.progress not in ("auto", "bar", "plain", "off"):
        raise ConfigError(n("progress"), f"must be auto, bar, plain or off, got {c.progress!r}")
    updates.update(_batch_options(c, n))
    if not isinstance(c.prices, Mapping):
        raise ConfigError("prices", "must be a table of model → {input, output} dollars per token")
    return replace(c, **updates)
