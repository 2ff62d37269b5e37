"""Intended delays of one reply: time to first token and the gap before every later token.

Draws come from a per-request generator seeded with (seed, request counter), so a rerun of
the same request sequence gets the same delays. Every delay is multiplied by the time
scale here, once; the server then sleeps until absolute deadlines. This module must not
sleep or know about HTTP.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from harness.simulator.profiles import ModelProfile

__all__ = ["Timing", "draw_timing", "request_rng"]


def request_rng(seed: int, counter: int) -> random.Random:
    """The generator for one request's timing and fault draws."""
    return random.Random(f"sim-timing:{seed}:{counter}")


@dataclass(frozen=True, slots=True)
class Timing:
    """Offsets from receipt: `offsets[i]` is when token i is due (seconds)."""

    ttft_s: float
    gaps_s: list[float]
    offsets: list[float]

    @property
    def total_s(self) -> float:
        return self.offsets[-1] if self.offsets else self.ttft_s


def draw_timing(
    profile: ModelProfile,
    rng: random.Random,
    tokens: int,
    input_tokens: float,
    time_scale: float,
    *,
    thinking: int = 0,
    pauses: dict[int, float] | None = None,
) -> Timing:
    """Lognormal TTFT growing with input length; per-request speed; jittered gaps.

    `input_tokens` is the prompt as prefill sees it: tokens read from the prompt cache count
    only for the profile's `ttft_cache_read_factor` (the caller weighs them).

    `tokens` counts the deltas. The first `thinking` of them come at the profile's thinking
    speed (`thinking_tokens_per_s`, the output speed when unset), the rest at the output
    speed, both scaled by the same per-request draw. `pauses` adds unscaled seconds before
    delta i (a server tool's work). The random draws do not depend on either, so a plain
    reply is timed exactly as before they existed.
    """
    median = profile.ttft_median_s + profile.ttft_per_1k_input_s * input_tokens / 1000.0
    ttft = median * rng.lognormvariate(0.0, profile.ttft_sigma) * time_scale
    speed = profile.speed_median_tps * rng.lognormvariate(0.0, profile.speed_sigma)
    base = time_scale / speed if speed > 0 else 0.0
    sigma = profile.gap_sigma
    if base == 0.0:
        gaps = [0.0] * max(0, tokens - 1)
    elif sigma == 0.0:
        gaps = [base] * max(0, tokens - 1)
    else:
        draw = rng.lognormvariate
        gaps = [base * draw(0.0, sigma) for _ in range(tokens - 1)]
    if thinking > 1 and base > 0.0:
        thinking_tps = profile.thinking_tokens_per_s or profile.speed_median_tps
        factor = profile.speed_median_tps / thinking_tps if thinking_tps > 0 else 0.0
        if factor != 1.0:
            gaps[: thinking - 1] = [gap * factor for gap in gaps[: thinking - 1]]
    if pauses:
        for i, pause in pauses.items():
            if i == 0:
                ttft += pause * time_scale
            elif i < tokens:
                gaps[i - 1] += pause * time_scale
    offsets = [ttft] if tokens else []
    at = ttft
    for gap in gaps:
        at += gap
        offsets.append(at)
    return Timing(ttft, gaps, offsets)
