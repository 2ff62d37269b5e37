"""Per-model profiles of the simulator: timing shape, verbosity, limits and fault rates.

Reads the TOML shipped next to this module (or one given with `--profile`) into frozen
`ModelProfile`s and resolves aliases. It must not draw random numbers or know about HTTP;
the figures it loads are illustrative, never Anthropic's.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.simulator.faults import KNOWN_FAULTS

__all__ = [
    "DEFAULT_BATCH_BASE_S",
    "DEFAULT_BATCH_LIMITS",
    "DEFAULT_BATCH_PER_REQUEST_S",
    "DEFAULT_BATCH_SIGMA",
    "DEFAULT_CACHE_MIN_TOKENS",
    "DEFAULT_LIMITS",
    "DEFAULT_PROFILE_PATH",
    "DEFAULT_TTFT_CACHE_READ_FACTOR",
    "OPTIONAL_TIMING_KEYS",
    "TIMING_KEYS",
    "BatchLimits",
    "Limits",
    "ModelProfile",
    "Profiles",
    "SimulatorConfigError",
    "load_profiles",
]

DEFAULT_PROFILE_PATH = Path(__file__).with_name("profiles.toml")
# A 1,000-request batch of one model ends after about 3 simulated minutes.
DEFAULT_BATCH_BASE_S = 120.0
DEFAULT_BATCH_PER_REQUEST_S = 0.06
DEFAULT_BATCH_SIGMA = 0.25
# Prompt caching: a model the profile gives no minimum gets 1,024 tokens (the most common
# documented minimum); a token read from the cache adds a tenth of an uncached token's TTFT.
DEFAULT_CACHE_MIN_TOKENS = 1024
DEFAULT_TTFT_CACHE_READ_FACTOR = 0.1

TIMING_KEYS: dict[str, type] = {
    "ttft_median_s": float,
    "ttft_sigma": float,
    "ttft_per_1k_input_s": float,
    "speed_median_tps": float,
    "speed_sigma": float,
    "gap_sigma": float,
    "verbosity": float,
    "verbosity_sigma": float,
    "answer_tokens_max": int,
    "max_tokens": int,
    "max_input_tokens": int,
}
# May be left out at every level (profile files written before they existed still load).
OPTIONAL_TIMING_KEYS: dict[str, type] = {
    "thinking_tokens_per_s": float,  # thinking speed; 0 or unset: the model's output speed
    "web_search_s": float,  # how long one web search takes, before its results block
    # Message Batches: a model's share of a batch is processed within
    # (batch_base_s + batch_per_request_s x its requests) x lognormal(0, batch_sigma) seconds.
    "batch_base_s": float,
    "batch_per_request_s": float,
    "batch_sigma": float,
    # Prompt caching (`promptcache.py`): the model's minimum cacheable prompt length (tokens of
    # the simulator's count), and the share of `ttft_per_1k_input_s` a token read from the cache
    # still costs (illustrative).
    "cache_min_tokens": int,
    "ttft_cache_read_factor": float,
}
_ALL_TIMING_KEYS = {**TIMING_KEYS, **OPTIONAL_TIMING_KEYS}
_MODEL_KEYS = {
    "family", "pool", "display_name", "created_at", "aliases", "lifecycle", "limits", "faults", "quality",
}  # fmt: skip
_LIMIT_KEYS = ("rpm", "itpm", "otpm")
_BATCH_LIMIT_KEYS = ("rpm", "queue")


class SimulatorConfigError(ValueError):
    """A profile or option the simulator cannot use; the message names the key."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-minute limits of one rate-limit pool (requests, input tokens, output tokens)."""

    rpm: int
    itpm: int
    otpm: int


DEFAULT_LIMITS = Limits(rpm=50_000, itpm=20_000_000, otpm=4_000_000)


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """The Message Batches API's own limits, per API key and shared by every model: requests
    per minute to all batch endpoints, and batch requests waiting in the processing queue."""

    rpm: int
    queue: int


DEFAULT_BATCH_LIMITS = BatchLimits(rpm=50_000, queue=1_000_000)


@dataclass(frozen=True, slots=True)
class ModelProfile:
    """Everything the simulator needs to imitate one model."""

    id: str
    display_name: str
    created_at: str
    lifecycle: str
    family: str
    pool: str
    limits: Limits
    ttft_median_s: float
    ttft_sigma: float
    ttft_per_1k_input_s: float
    speed_median_tps: float
    speed_sigma: float
    gap_sigma: float
    verbosity: float
    verbosity_sigma: float
    answer_tokens_max: int
    max_tokens: int
    max_input_tokens: int
    aliases: tuple[str, ...] = ()
    faults: dict[str, float] = field(default_factory=dict)
    thinking_tokens_per_s: float = 0.0
    web_search_s: float = 0.8
    batch_base_s: float = DEFAULT_BATCH_BASE_S
    batch_per_request_s: float = DEFAULT_BATCH_PER_REQUEST_S
    batch_sigma: float = DEFAULT_BATCH_SIGMA
    cache_min_tokens: int = DEFAULT_CACHE_MIN_TOKENS
    ttft_cache_read_factor: float = DEFAULT_TTFT_CACHE_READ_FACTOR
    # Pass probabilities of the quality model (`quality.py`): "pass", and per-tag overrides.
    quality: dict[str, float] = field(default_factory=dict)

    def info(self) -> dict[str, Any]:
        """The `ModelInfo` object of `GET /v1/models`."""
        return {
            "type": "model",
            "id": self.id,
            "display_name": self.display_name,
            "created_at": self.created_at,
            "lifecycle": self.lifecycle,
            "max_input_tokens": self.max_input_tokens,
            "max_tokens": self.max_tokens,
        }


@dataclass(frozen=True, slots=True)
class Profiles:
    """All models by id, with aliases, plus the global fault settings of the file."""

    models: dict[str, ModelProfile]
    aliases: dict[str, str]
    faults: dict[str, float]
    retry_after_s: float = 1.0
    slow_first_byte_s: float = 30.0
    batch_limits: BatchLimits = DEFAULT_BATCH_LIMITS

    def resolve(self, model: str) -> ModelProfile | None:
        """The profile for an id or alias, or None when the model is unknown."""
        found = self.models.get(model)
        if found is not None:
            return found
        canonical = self.aliases.get(model)
        return self.models.get(canonical) if canonical else None

    def newest_first(self) -> list[ModelProfile]:
        return sorted(self.models.values(), key=lambda p: (p.created_at, p.id), reverse=True)


def _check_keys(where: str, table: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise SimulatorConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")


def _timing(where: str, table: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, kind in _ALL_TIMING_KEYS.items():
        if key not in table:
            continue
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SimulatorConfigError(f"{where}.{key}: must be a number")
        if value < 0:
            raise SimulatorConfigError(f"{where}.{key}: must be >= 0")
        out[key] = kind(value)
    return out


def _limits(where: str, table: dict[str, Any], base: Limits | None) -> Limits:
    _check_keys(where, table, set(_LIMIT_KEYS))
    values: dict[str, int] = {}
    for key in _LIMIT_KEYS:
        value = table.get(key, getattr(base, key) if base else None)
        if value is None or isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise SimulatorConfigError(f"{where}.{key}: must be a positive integer")
        values[key] = value
    return Limits(**values)


def _batch_limits(table: Any) -> BatchLimits:
    if not isinstance(table, dict):
        raise SimulatorConfigError("batch_limits: must be a table")
    _check_keys("batch_limits", table, set(_BATCH_LIMIT_KEYS))
    values: dict[str, int] = {}
    for key in _BATCH_LIMIT_KEYS:
        value = table.get(key, getattr(DEFAULT_BATCH_LIMITS, key))
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise SimulatorConfigError(f"batch_limits.{key}: must be a positive integer")
        values[key] = value
    return BatchLimits(**values)


def _fault_rates(where: str, table: dict[str, Any]) -> dict[str, float]:
    rates: dict[str, float] = {}
    for name, value in table.items():
        if name not in KNOWN_FAULTS:
            raise SimulatorConfigError(f"{where}.{name}: unknown fault (known: {', '.join(KNOWN_FAULTS)})")
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise SimulatorConfigError(f"{where}.{name}: must be a probability between 0 and 1")
        rates[name] = float(value)
    return rates


def _quality(where: str, table: Any) -> dict[str, float]:
    """A `quality` table: `pass` and tag names, each a probability."""
    if not isinstance(table, dict):
        raise SimulatorConfigError(f"{where}: must be a table of probabilities (pass = 0.9, hard = 0.8)")
    out: dict[str, float] = {}
    for name, value in table.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise SimulatorConfigError(f"{where}.{name}: must be a probability between 0 and 1")
        out[name.strip().lower()] = float(value)
    return out


def load_profiles(path: str | Path | None = None) -> Profiles:
    """Load and validate a profile file (the shipped one when `path` is None)."""
    source = Path(path) if path is not None else DEFAULT_PROFILE_PATH
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SimulatorConfigError(f"profile {source}: cannot read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SimulatorConfigError(f"profile {source}: not valid TOML ({exc})") from None
    _check_keys("profile", data, {"defaults", "families", "pools", "models", "faults", "batch_limits"})

    defaults = dict(data.get("defaults", {}))
    limits_table = defaults.pop("limits", {})
    lifecycle_default = defaults.pop("lifecycle", "active")
    quality_default = _quality("defaults.quality", defaults.pop("quality", {}))
    _check_keys("defaults", defaults, set(_ALL_TIMING_KEYS))
    default_limits = _limits("defaults.limits", limits_table, DEFAULT_LIMITS)
    base_timing = _timing("defaults", defaults)
    missing = sorted(set(TIMING_KEYS) - set(base_timing))
    if missing:
        raise SimulatorConfigError(f"defaults: missing key(s) {', '.join(missing)}")

    families: dict[str, dict[str, Any]] = {}
    family_quality: dict[str, dict[str, float]] = {}
    for name, table in data.get("families", {}).items():
        _check_keys(f"families.{name}", table, {*_ALL_TIMING_KEYS, "quality"})
        families[name] = _timing(f"families.{name}", table)
        family_quality[name] = _quality(f"families.{name}.quality", table.get("quality", {}))
    pools = {
        name: _limits(f"pools.{name}", table, default_limits) for name, table in data.get("pools", {}).items()
    }

    global_faults = dict(data.get("faults", {}))
    retry_after_s = float(global_faults.pop("retry_after_s", 1.0))
    slow_first_byte_s = float(global_faults.pop("slow_first_byte_s", 30.0))
    faults = _fault_rates("faults", global_faults)

    models: dict[str, ModelProfile] = {}
    aliases: dict[str, str] = {}
    for model_id, table in data.get("models", {}).items():
        where = f'models."{model_id}"'
        _check_keys(where, table, _MODEL_KEYS | set(_ALL_TIMING_KEYS))
        family = table.get("family", "default")
        if family != "default" and family not in families:
            raise SimulatorConfigError(f"{where}.family: unknown family {family!r}")
        timing = {**base_timing, **families.get(family, {}), **_timing(where, table)}
        if "limits" in table:
            pool = f"model:{model_id}"
            limits = _limits(
                f"{where}.limits", table["limits"], pools.get(table.get("pool", ""), default_limits)
            )
        else:
            pool = table.get("pool", "default")
            limits = pools.get(pool, default_limits)
        model_aliases = tuple(table.get("aliases", ()))
        models[model_id] = ModelProfile(
            id=model_id,
            display_name=str(table.get("display_name", model_id)),
            created_at=str(table.get("created_at", "2025-01-01T00:00:00Z")),
            lifecycle=str(table.get("lifecycle", lifecycle_default)),
            family=family,
            pool=pool,
            limits=limits,
            aliases=model_aliases,
            faults=_fault_rates(f"{where}.faults", table.get("faults", {})),
            quality={
                **quality_default,
                **family_quality.get(family, {}),
                **_quality(f"{where}.quality", table.get("quality", {})),
            },
            **timing,
        )
        for alias in model_aliases:
            aliases[alias] = model_id
    if not models:
        raise SimulatorConfigError(f"profile {source}: defines no models")
    return Profiles(
        models=models,
        aliases=aliases,
        faults=faults,
        retry_after_s=retry_after_s,
        slow_first_byte_s=slow_first_byte_s,
        batch_limits=_batch_limits(data.get("batch_limits", {})),
    )
