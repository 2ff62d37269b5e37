"""The plan: cases × models × variants × repeats → `PlannedCall`s with stable ids, interleaved by a seeded shuffle.

Arms (model + variant) are interleaved call by call (each case's arms in a seeded random order,
the cases shuffled per repeat), so a slow minute of the service lands on every
model alike. Open-loop plans also carry each call's release offset, drawn from
a seeded generator and computed from the run start (never slept per call, so
they cannot drift). This module knows nothing about wall time.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

from harness.records import Case, PlannedCall
from harness.variants import Variant, expand

__all__ = ["arrival_offsets", "call_id_for", "make_plan", "trace_order"]


def call_id_for(run_id: str, case_id: str, model: str, repeat: int, variant: str | None = None) -> str:
    """A short, stable id for one (run, case, model, repeat[, variant]); without a variant, as before."""
    key = f"{run_id}\x1f{case_id}\x1f{model}\x1f{repeat}" + ("" if variant is None else f"\x1f{variant}")
    return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


def arrival_offsets(n: int, rate: float, arrival: str, seed: int) -> list[float]:
    """Release offsets (seconds from run start) for `n` calls at `rate` per second."""
    if arrival == "constant":
        return [i / rate for i in range(n)]
    rng = random.Random(seed)
    offsets, t = [], 0.0
    for _ in range(n):
        t += rng.expovariate(rate)
        offsets.append(t)
    return offsets


def trace_order(
    order: list[tuple[Case, str, int, str | None]], speed: float
) -> tuple[list[tuple[Case, str, int, str | None]], list[float | None]]:
    """Recorded traffic replayed at its offsets (`speed` times faster): each repeat after the last one ends.

    Every arm of a case is released at the case's offset; the order is by release time (the open
    loop releases calls in plan order).
    """
    span = max((c.arrival_offset_s or 0.0 for c, *_ in order), default=0.0)
    gap = span / max(1, len({c.id for c, *_ in order}))  # one mean inter-arrival between repeats
    timed = [
        ((case.arrival_offset_s or 0.0) + repeat * (span + gap)) / speed
        for case, _model, repeat, _variant in order
    ]
    ranked = sorted(range(len(order)), key=lambda i: timed[i])
    return [order[i] for i in ranked], [timed[i] for i in ranked]


def make_plan(
    cases: Sequence[Case],
    models: Sequence[str],
    *,
    repeats: int,
    seed: int,
    run_id: str,
    rate: float | None = None,
    arrival: str = "closed",
    max_calls: int | None = None,
    trace_speed: float = 1.0,
    variants: Sequence[Variant] = (),
    variants_source: str = "variants",
) -> list[PlannedCall]:
    """Every (case, model, variant, repeat) exactly once, in a seeded interleaved order."""
    rng = random.Random(seed)
    by_variant = expand(cases, variants, variants_source)
    arms = [(m, v) for m in models for v in by_variant]
    order: list[tuple[Case, str, int, str | None]] = []
    for repeat in range(repeats):
        index = list(range(len(cases)))
        rng.shuffle(index)
        for i in index:
            shuffled = list(arms)
            rng.shuffle(shuffled)
            order.extend((by_variant[v][i], m, repeat, v) for m, v in shuffled)
    if max_calls is not None:
        order = order[:max_calls]
    offsets: list[float | None] = [None] * len(order)
    if arrival == "trace":
        order, offsets = trace_order(order, trace_speed)
    elif rate is not None and arrival != "closed":
        offsets = list(arrival_offsets(len(order), rate, arrival, seed + 1))
    return [
        PlannedCall(
            call_id=call_id_for(run_id, case.id, model, repeat, variant),
            case=case,
            model=model,
            repeat=repeat,
            index=i,
            offset_s=offsets[i],
            variant=variant,
        )
        for i, (case, model, repeat, variant) in enumerate(order)
    ]
