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

__all__ = ["arrival_offsets", "call_id_for", "make_plan"]


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
    if rate is not None and arrival != "closed":
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
