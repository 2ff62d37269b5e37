"""Fault injection settings: which fault, at what rate, for which model; and the draw.

The fault names are a contract with the engine and the reliability tests. This module
parses `--faults` specs and `POST /_sim/faults` bodies and picks a fault for a request
from a uniform draw it is given; it must not touch the network or keep a random state.

Two independent groups share the settings: `FAULT_NAMES` strike a `POST /v1/messages`
(their rates add up to at most 1), `BATCH_FAULTS` strike one request inside a Message
Batch (their rates add up to at most 1 on their own). Keeping the batch faults out of
`FAULT_NAMES` keeps `pick` and its callers exactly as they were.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BATCH_FAULTS",
    "BEFORE_STREAM",
    "CONTENT_FAULTS",
    "FAULT_NAMES",
    "IN_STREAM",
    "KNOWN_FAULTS",
    "POSTHOG_FAULT_NAMES",
    "FaultSettings",
    "parse_fault_spec",
]

# Decided before the response starts (an HTTP status, or a silent wait).
BEFORE_STREAM = ("rate_limit", "overloaded", "api_error", "slow_first_byte")
# Happen inside a streamed body, after some deltas.
IN_STREAM = ("midstream_error", "drop", "truncate")
FAULT_NAMES = BEFORE_STREAM + IN_STREAM
# Per request of a Message Batch: an `errored` result (overloaded_error or api_error), or
# `expired` (as if the batch's 24 hours ran out before the request was reached).
BATCH_FAULTS = ("batch_errored", "batch_expired")
# Spoil a reply's content, not its transport: drawn on their own (see `quality.py`), only for the
# requests they concern, so they are not picked by `pick` nor counted in the sum of the rates above.
# judge_malformed: a judge call's verdict is not JSON or has no score (a re-ask gets a good one
# unless the rate is 1).
CONTENT_FAULTS = ("judge_malformed",)
KNOWN_FAULTS = FAULT_NAMES + BATCH_FAULTS + CONTENT_FAULTS
# The PostHog app API's query endpoint (posthog_api.py): never drawn for a model, not in the sum.
POSTHOG_FAULT_NAMES = ("posthog_throttle",)
_NUMERIC = ("retry_after_s", "slow_first_byte_s", "posthog_throttle_every", "posthog_retry_after_s")


def _rate(where: str, value: Any) -> float:
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {value!r} is not a number") from None
    if isinstance(value, bool) or not 0.0 <= rate <= 1.0:
        raise ValueError(f"{where}: rate must be between 0 and 1")
    return rate


def _rates(where: str, rates: dict[str, Any], *, posthog: bool = True) -> dict[str, float]:
    out = {}
    known = KNOWN_FAULTS + POSTHOG_FAULT_NAMES if posthog else KNOWN_FAULTS
    for name, value in rates.items():
        if name not in known:
            raise ValueError(f"{where}: unknown fault {name!r} (known: {', '.join(known)})")
        out[name] = _rate(f"{where}.{name}", value)
    for group in (FAULT_NAMES, BATCH_FAULTS):
        if sum(rate for name, rate in out.items() if name in group) > 1.0 + 1e-9:
            raise ValueError(f"{where}: fault rates ({', '.join(group)}) add up to more than 1")
    return out


@dataclass
class FaultSettings:
    """Fault rates for every model plus per-model replacements (by canonical id)."""

    rates: dict[str, float] = field(default_factory=dict)
    per_model: dict[str, dict[str, float]] = field(default_factory=dict)
    retry_after_s: float = 1.0
    slow_first_byte_s: float = 30.0
    posthog_throttle_every: float = 0.0  # every Nth PostHog query is throttled (0: never)
    posthog_retry_after_s: float = 3.0  # the wait a throttled PostHog query is told

    def copy(self) -> FaultSettings:
        return FaultSettings(
            dict(self.rates),
            {m: dict(r) for m, r in self.per_model.items()},
            self.retry_after_s,
            self.slow_first_byte_s,
            self.posthog_throttle_every,
            self.posthog_retry_after_s,
        )

    def rates_for(self, model: str) -> dict[str, float]:
        """A model's own rates override the global rate of the same fault."""
        own = self.per_model.get(model)
        return {**self.rates, **own} if own else self.rates

    def pick(self, model: str, u: float) -> str | None:
        """The fault for a Messages request given a uniform draw `u` in [0, 1), or None."""
        return self._pick(FAULT_NAMES, model, u)

    def pick_batch(self, model: str, u: float) -> str | None:
        """The fault for one request of a Message Batch (a `BATCH_FAULTS` name), or None."""
        return self._pick(BATCH_FAULTS, model, u)

    def _pick(self, names: tuple[str, ...], model: str, u: float) -> str | None:
        rates = self.rates_for(model)
        edge = 0.0
        for name in names:
            edge += rates.get(name, 0.0)
            if u < edge:
                return name
        return None

    def apply_json(self, body: Any, resolve: Any) -> None:
        """Apply a `POST /_sim/faults` body; `resolve` maps a model name to its id or None."""
        if not isinstance(body, dict):
            raise ValueError("body: must be a JSON object")
        unknown = set(body) - {"rates", "model", *_NUMERIC}
        if unknown:
            raise ValueError(f"body: unknown key(s) {', '.join(sorted(unknown))}")
        for key in _NUMERIC:
            if key in body:
                value = body[key]
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise ValueError(f"{key}: must be a number >= 0")
                setattr(self, key, float(value))
        if "rates" in body:
            if not isinstance(body["rates"], dict):
                raise ValueError("rates: must be an object of fault name to probability")
            rates = _rates("rates", body["rates"])
            model = body.get("model")
            if model is None:
                self.rates = rates
            else:
                canonical = resolve(model)
                if canonical is None:
                    raise ValueError(f"model: unknown model {model!r}")
                self.per_model[canonical] = _rates("rates", body["rates"], posthog=False)


def parse_fault_spec(spec: str, settings: FaultSettings, resolve: Any) -> None:
    """Apply `name=rate[,model:name=rate][,retry_after_s=S][,slow_first_byte_s=S]` to `settings`
    (also `posthog_throttle=rate`, `posthog_throttle_every=N`, `posthog_retry_after_s=S`)."""
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--faults: {item!r} is not name=rate")
        key = key.strip()
        if key in _NUMERIC:
            seconds = _rate_free(f"--faults {key}", value)
            setattr(settings, key, seconds)
            continue
        model, colon, name = key.rpartition(":")
        if not colon:
            settings.rates.update(_rates("--faults", {name: value}))
            continue
        canonical = resolve(model)
        if canonical is None:
            raise ValueError(f"--faults: unknown model {model!r}")
        settings.per_model.setdefault(canonical, {}).update(
            _rates(f"--faults {model}", {name: value}, posthog=False)
        )
    _rates("--faults", settings.rates)
    for model, rates in settings.per_model.items():
        _rates(f"--faults {model}", settings.rates_for(model) | rates)


def _rate_free(where: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{where}: {value!r} is not a number") from None
    if seconds < 0:
        raise ValueError(f"{where}: must be >= 0")
    return seconds
