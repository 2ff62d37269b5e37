"""The plan: cases × models × repeats → `PlannedCall`s with stable ids, interleaved by a seeded shuffle.

Models are interleaved call by call (each case's models in a seeded random order,
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

__all__ = ["arrival_offsets", "call_id_for", "make_plan"]


def call_id_for(run_id: str, case_id: str, model: str, repeat: int) -> str:
    """A short, stable id for one (run, case, model, repeat)."""
    digest = hashlib.blake2b(f"{run_id}\x1f{case_id}\x1f{model}\x1f{repeat}".encode(), digest_size=8)
    return digest.hexdigest()


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
) -> list[PlannedCall]:
    """Every (case, model, repeat) exactly once, in a seeded interleaved order."""
    rng = random.Random(seed)
    order: list[tuple[Case, str, int]] = []
    for repeat in range(repeats):
        shuffled = list(cases)
        rng.shuffle(shuffled)
        for case in shuffled:
            ms = list(models)
            rng.shuffle(ms)
            order.extend((case, m, repeat) for m in ms)
    if max_calls is not None:
        order = order[:max_calls]
    offsets: list[float | None] = [None] * len(order)
    if rate is not None and arrival != "closed":
        offsets = list(arrival_offsets(len(order), rate, arrival, seed + 1))
    return [
        PlannedCall(
            call_id=call_id_for(run_id, case.id, model, repeat),
            case=case,
            model=model,
            repeat=repeat,
            index=i,
            offset_s=offsets[i],
        )
        for i, (case, model, repeat) in enumerate(order)
    ]
