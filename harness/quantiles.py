"""The one percentile rule of the harness's own figures: linear interpolation (numpy's and polars' default).

The report computes its percentiles in polars with the same interpolation, so a p99
printed by the runner, the progress view or a benchmark means the same thing as the
report's.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["quantile", "summarize_ms"]


def quantile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile of `values` (any order), linearly interpolated; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize_ms(values: Sequence[float]) -> dict[str, float]:
    """Sample count and p50/p99/max of a list of seconds, in milliseconds (loop lag, release lateness)."""
    if not values:
        return {"samples": 0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    p50, p99 = quantile(values, 0.5), quantile(values, 0.99)
    assert p50 is not None and p99 is not None
    return {"samples": len(values), "p50_ms": p50 * 1000, "p99_ms": p99 * 1000, "max_ms": max(values) * 1000}
